"""``WdataSimulator`` over HTTPS in a process of its own, driven over stdin/stdout by ``bench_triggers.py``.

Why a process of its own: the simulator would otherwise share the measured client's CPU time, RSS and GIL.

- Writes a throwaway trustme CA bundle to ``--ca`` and serves with a certificate for 127.0.0.1 issued by it.
- Prints one JSON line: the Airflow connection (``airflow_connection()`` plus the CA as the ``verify`` extra).
- Then answers one JSON line per command read on stdin:
  ``requests`` (every request recorded since the last ``clear``, as ``[at, kind, batch id]`` with ``at`` on
  ``time.monotonic()``, the same clock as the clients' event loops), ``clear``, ``quit``.
  Every answer also carries ``connections_opened`` (since start) and the simulator's own CPU seconds.

Only the simulator's public API is used.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

import trustme

from airflow_provider_wdata.testing import WdataSimulator


def classify(batch_path: str, method: str, path: str, is_token: bool) -> tuple[str, str | None]:
    """("token" | "read" | "other", the batch id of a read)."""
    if is_token:
        return "token", None
    if method == "GET" and path.startswith(batch_path):
        return "read", path[len(batch_path) :]
    return "other", None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True, help="where to write the throwaway CA bundle (PEM)")
    parser.add_argument("--reads", type=int, nargs="+", default=[3], help="connections c-pK: done on the K-th read")
    args = parser.parse_args()

    ca = trustme.CA()
    ca.cert_pem.write_to_path(args.ca)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    connections = [{"connection_id": f"c-p{k}", "polls_to_finish": k} for k in args.reads]
    with WdataSimulator(ssl_context=server_ctx, connections=connections) as sim:
        batch_path = urlsplit(sim.url("/api/v1/connections/batch/refresh/")).path
        conn = sim.airflow_connection()
        conn["extra"]["verify"] = args.ca
        print(json.dumps(conn), flush=True)
        for line in sys.stdin:
            command = line.strip()
            reply: dict[str, Any] = {}
            if command == "requests":
                reply["requests"] = [
                    [r.at, *classify(batch_path, r.method, r.path, r.is_token_request)] for r in sim.requests
                ]
            elif command == "clear":
                sim.clear_requests()
            elif command != "quit":
                reply["error"] = f"unknown command {command!r}"
            times = os.times()
            reply.update(connections_opened=sim.connections_opened, cpu_s=times.user + times.system)
            print(json.dumps(reply), flush=True)
            if command == "quit":
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
