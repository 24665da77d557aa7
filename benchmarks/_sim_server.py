"""``WdataSimulator`` over HTTPS in a process of its own, driven over stdin/stdout by ``bench_triggers.py``.

Why a process of its own: the simulator would otherwise share the measured client's CPU time, RSS and GIL.

- Writes a throwaway trustme CA bundle to ``--ca`` and serves with a certificate for 127.0.0.1 issued by it.
- Serves connections ``c-pK`` (a refresh ends on its K-th status read, ``--reads``) and ``c-tS`` (a refresh ends
  S seconds after it started, ``--seconds``).
- Prints one JSON line: the Airflow connection (``airflow_connection()`` plus the CA as the ``verify`` extra).
- Then answers one JSON line per command read on stdin:
  ``requests`` (every request recorded since the last ``clear``, as ``[at, kind, batch id]`` with ``at`` on
  ``time.monotonic()``, the same clock as the clients' event loops, and ``throttled``: the 429s served since
  the last ``clear``, as ``[at, count so far]`` sampled every 10 ms), ``clear``, ``limit R`` (at most R API
  requests per second per client, answered 429 with ``Retry-After`` past it), ``limit none``, ``quit``.
  Every answer also carries ``connections_opened`` (since start) and the simulator's own CPU seconds.

Only the simulator's public API is used.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import trustme

from airflow_provider_wdata.testing import WdataSimulator

THROTTLE_SAMPLE = 0.010
NEVER = 10**9  # polls_to_finish of the time-based connections


def classify(batch_path: str, method: str, path: str, is_token: bool) -> tuple[str, str | None]:
    """("token" | "read" | "other", the batch id of a read)."""
    if is_token:
        return "token", None
    if method == "GET" and path.startswith(batch_path):
        return "read", path[len(batch_path) :]
    return "other", None


class ThrottleWatch:
    """Samples ``sim.rate_limited`` (a running count of 429s) every 10 ms, keeping each change."""

    def __init__(self, sim: WdataSimulator) -> None:
        self.sim = sim
        self.lock = threading.Lock()
        self.base = sim.rate_limited
        self.samples: list[list[float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        last = self.base
        while not self.stop.wait(THROTTLE_SAMPLE):
            count = self.sim.rate_limited
            if count != last:
                with self.lock:
                    self.samples.append([time.monotonic(), count - self.base])
                last = count

    def clear(self) -> None:
        with self.lock:
            self.base = self.sim.rate_limited
            self.samples = []

    def snapshot(self) -> list[list[float]]:
        with self.lock:
            return list(self.samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True, help="where to write the throwaway CA bundle (PEM)")
    parser.add_argument("--reads", type=int, nargs="*", default=[3], help="connections c-pK: done on the K-th read")
    parser.add_argument("--seconds", type=int, nargs="*", default=[], help="connections c-tS: done after S s")
    args = parser.parse_args()

    ca = trustme.CA()
    ca.cert_pem.write_to_path(args.ca)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    connections: list[dict[str, Any]] = [{"connection_id": f"c-p{k}", "polls_to_finish": k} for k in args.reads]
    connections += [
        {"connection_id": f"c-t{s}", "polls_to_finish": NEVER, "seconds_to_finish": float(s)} for s in args.seconds
    ]
    with WdataSimulator(ssl_context=server_ctx, connections=connections) as sim:
        batch_path = urlsplit(sim.url("/api/v1/connections/batch/refresh/")).path
        conn = sim.airflow_connection()
        conn["extra"]["verify"] = args.ca
        print(json.dumps(conn), flush=True)
        watch = ThrottleWatch(sim)
        for line in sys.stdin:
            command, *rest = line.split()
            reply: dict[str, Any] = {}
            if command == "requests":
                time.sleep(2 * THROTTLE_SAMPLE)  # the last 429s reach the samples
                reply["requests"] = [
                    [r.at, *classify(batch_path, r.method, r.path, r.is_token_request)] for r in sim.requests
                ]
                reply["throttled"] = watch.snapshot()
            elif command == "clear":
                sim.clear_requests()
                watch.clear()
            elif command == "limit":
                sim.set_rate_limit(None if rest == ["none"] else int(rest[0]), 1.0)
            elif command != "quit":
                reply["error"] = f"unknown command {command!r}"
            times = os.times()
            reply.update(connections_opened=sim.connections_opened, cpu_s=times.user + times.system)
            print(json.dumps(reply), flush=True)
            if command == "quit":
                break
        watch.stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
