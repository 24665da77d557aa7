"""Serve the Wdata Prep API simulator until SIGINT/SIGTERM.

``python -m airflow_provider_wdata.testing [--port N] [--outcome conn-1=error ...]`` prints
``AIRFLOW_CONN_WDATA_DEFAULT='<json>'`` and ``WDATA_BASE_URL=...`` / ``WDATA_TOKEN_URL=...`` lines
(``eval``-able in a POSIX shell), then serves until interrupted and exits 0.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_wdata.testing.simulator import OUTCOMES, WdataSimulator


def _outcome(value: str) -> tuple[str, str]:
    connection_id, sep, outcome = value.partition("=")
    if not sep or not connection_id or outcome not in OUTCOMES:
        raise argparse.ArgumentTypeError(f"expected CONN=OUTCOME with OUTCOME one of {', '.join(OUTCOMES)}")
    return connection_id, outcome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_wdata.testing",
        description="Serve a local simulator of the Workiva Wdata Prep API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--client-id", default="sim-client")
    parser.add_argument("--client-secret", default="sim-secret")
    parser.add_argument("--polls-to-finish", type=int, default=2, help="status GETs until a refresh finishes")
    parser.add_argument(
        "--seconds-to-finish", type=float, default=None, help="or seconds after its start (default: off)"
    )
    parser.add_argument("--token-lifetime", type=float, default=599)
    parser.add_argument("--batch-status", choices=("derived", "complete"), default="derived")
    parser.add_argument("--conn-id", default="wdata_default", help="Airflow connection id for the printed line")
    parser.add_argument(
        "--outcome",
        type=_outcome,
        action="append",
        default=[],
        metavar="CONN=OUTCOME",
        help="script (or add) a connection; OUTCOME: " + ", ".join(OUTCOMES),
    )
    return parser


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
    )
    for connection_id, outcome in args.outcome:
        if connection_id in sim.connections:
            sim.script_connection(connection_id, outcome=outcome)
        else:
            sim.add_connection(connection_id, outcome=outcome)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with sim:
        name, value = sim.airflow_conn_uri_env(args.conn_id)
        print(f"{name}={shlex.quote(value)}")
        print(f"WDATA_BASE_URL={shlex.quote(sim.base_url)}")
        print(f"WDATA_TOKEN_URL={shlex.quote(sim.token_url)}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
