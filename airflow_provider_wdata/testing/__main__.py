"""Serve the Wdata Prep API simulator until SIGINT/SIGTERM.

``python -m airflow_provider_wdata.testing [--port N] [--outcome conn-1=error ...]`` prints, for a POSIX shell,
``export AIRFLOW_CONN_WDATA_DEFAULT='<json>'``, ``export WDATA_BASE_URL=...`` and ``export WDATA_TOKEN_URL=...``,
then comment lines naming the Wdata connection ids it serves, then serves until interrupted and exits 0.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_wdata.testing.refresh_state import OUTCOMES
from airflow_provider_wdata.testing.simulator import WdataSimulator


def _outcome(value: str) -> tuple[str, list[str]]:
    connection_id, sep, outcomes = value.partition("=")
    steps = outcomes.split(",")
    if not sep or not connection_id or not all(step in OUTCOMES for step in steps):
        raise argparse.ArgumentTypeError(
            f"expected CONN=OUTCOME[,OUTCOME...] with each OUTCOME one of {', '.join(OUTCOMES)}"
        )
    return connection_id, steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_wdata.testing",
        description=(
            "Serve a local simulator of the Workiva Wdata Prep API. Prints shell `export` lines for the Airflow "
            "connection (eval them, or paste them in another shell), then the Wdata connection ids it serves."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 (default) picks a free port")
    parser.add_argument("--client-id", default="sim-client", help="OAuth client id it accepts (default: %(default)s)")
    parser.add_argument(
        "--client-secret", default="sim-secret", help="OAuth client secret it accepts (default: %(default)s)"
    )
    parser.add_argument(
        "--polls-to-finish",
        type=int,
        default=2,
        help="status reads until a refresh finishes; 0: finished when started (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds-to-finish",
        type=float,
        default=None,
        help="or seconds after its start, whichever comes first (default: off)",
    )
    parser.add_argument(
        "--token-lifetime", type=float, default=599, help="seconds an access token is valid (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-status",
        choices=("derived", "complete"),
        default="derived",
        help="batch statuses derived from the children's, or always complete once they finish (default: derived)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        metavar="N",
        help="answer 429 with Retry-After past N API requests per window per client (default: no limit)",
    )
    parser.add_argument(
        "--rate-limit-window", type=float, default=1.0, help="the rate limit's window in seconds (default: 1)"
    )
    parser.add_argument(
        "--conn-id", default="wdata_default", help="Airflow connection id of the printed line (default: %(default)s)"
    )
    parser.add_argument(
        "--outcome",
        type=_outcome,
        action="append",
        default=[],
        metavar="CONN=OUTCOME[,OUTCOME...]",
        help=(
            "script (or add) a Wdata connection; several outcomes are taken one per refresh, the last repeats "
            "(e.g. conn-2=error,complete); repeatable. OUTCOME: " + ", ".join(OUTCOMES)
        ),
    )
    return parser


def shell_lines(sim: WdataSimulator, conn_id: str) -> list[str]:
    """What the command prints once the simulator listens: ``export`` lines, then ``#`` comments."""
    name, value = sim.airflow_conn_env(conn_id)
    served = ", ".join(f"{cid} ({'/'.join(conn.outcomes)})" for cid, conn in sim.connections.items())
    return [
        f"export {name}={shlex.quote(value)}",
        f"export WDATA_BASE_URL={shlex.quote(sim.base_url)}",
        f"export WDATA_TOKEN_URL={shlex.quote(sim.token_url)}",
        f"# Wdata connection ids served: {served}",
        "# Serving until Ctrl-C.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sim = WdataSimulator(
        client_id=args.client_id,
        client_secret=args.client_secret,
        host=args.host,
        port=args.port,
        token_lifetime=args.token_lifetime,
        polls_to_finish=args.polls_to_finish,
        seconds_to_finish=args.seconds_to_finish,
        batch_status=args.batch_status,
        rate_limit=args.rate_limit,
        rate_limit_window=args.rate_limit_window,
    )
    for connection_id, outcomes in args.outcome:
        if connection_id in sim.connections:
            sim.script_connection(connection_id, outcomes=outcomes)
        else:
            sim.add_connection(connection_id, outcomes=outcomes)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with sim:
        print("\n".join(shell_lines(sim, args.conn_id)), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
