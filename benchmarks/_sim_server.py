"""The Wdata simulator in its own process, over HTTPS, with a line-based control channel on stdin/stdout.

Started by ``bench_triggers.py`` (never by hand): ``python benchmarks/_sim_server.py --ca CA_PEM``.

- Writes a throwaway trustme CA to ``--ca`` and serves with a certificate for 127.0.0.1 issued by it.
- Prints one JSON line ``{"port", "base_url", "token_url", "client_id", "client_secret"}``, then answers
  one JSON line per command read on stdin: ``stats`` (counters since the last ``reset``), ``reset``,
  ``quit``.
- Counts, in the simulator's own event loop (so nothing is shared with the measured client): requests by
  kind and by User-Agent family, token requests, TCP/TLS connections accepted (the simulator's own
  ``connections_opened``), the handling time of each request (middleware to response), its own event-loop
  lag (a 10 ms sampler), its own CPU time, and the wall-clock time (``time.time()``) at which each batch
  turned terminal, so the client can measure "batch completed -> event".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading
import time
from typing import Any

import trustme
from aiohttp import web

from airflow_provider_wdata.testing.simulator import API_PREFIX, TOKEN_PATHS, WdataSimulator

BATCH_GET_PREFIX = API_PREFIX + "/api/v1/connections/batch/refresh/"
BATCH_POST_PATH = API_PREFIX + "/api/v1/connections/batch/refresh"
#: Connections the benchmark's batches refresh: ``c-p<K>`` finishes on its K-th status read; ``c-stuck``
#: never finishes (poke mode).
POLL_CONNECTIONS = {f"c-p{k}": k for k in range(1, 9)}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class InstrumentedSimulator(WdataSimulator):
    """The provider's simulator plus counters. Only wraps ``_middleware`` (the request pipeline's entry)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reset_stats()

    def reset_stats(self) -> None:
        # Read and written only on the simulator's loop thread, except the swap in reset (GIL-atomic
        # rebinding; a request in flight during a reset may land in either window).
        self.kinds: dict[str, int] = {}
        self.agents: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.handling: list[float] = []
        self.completed_at: dict[str, float] = {}
        self.lag: list[float] = []
        self.conn_seen: set[int] = set()
        self.conn_base = self.connections_opened
        self.cpu_base = os.times()
        self.wall_base = time.monotonic()

    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.perf_counter()
        status = 0
        try:
            response = await super()._middleware(request, handler)
            status = response.status
            return response
        finally:
            self.handling.append(time.perf_counter() - start)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            path = request.path
            if path.startswith(BATCH_GET_PREFIX) and request.method == "GET":
                kind = "batch_get"
                batch_id = path[len(BATCH_GET_PREFIX) :]
                batch = self._batches.get(batch_id)
                if (
                    batch is not None
                    and batch_id not in self.completed_at
                    and all(child.terminal for child in batch.children)
                ):
                    self.completed_at[batch_id] = time.time()
            elif path == BATCH_POST_PATH:
                kind = "batch_post"
            elif path in TOKEN_PATHS:
                kind = "token"
            else:
                kind = f"other {request.method} {path}"
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            agent = request.headers.get("User-Agent", "").split("/", 1)[0] or "(none)"
            self.agents[agent] = self.agents.get(agent, 0) + 1
            self.conn_seen.add(id(request.protocol))

    def stats(self) -> dict[str, Any]:
        cpu = os.times()
        handling, lag = list(self.handling), list(self.lag)
        return {
            "kinds": dict(self.kinds),
            "agents": dict(self.agents),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "requests": len(handling),
            "connections_opened": self.connections_opened - self.conn_base,
            "connections_used": len(self.conn_seen),
            "handling_ms": {
                "p50": _ms(_pct(handling, 0.50)),
                "p99": _ms(_pct(handling, 0.99)),
                "max": _ms(max(handling, default=None)),
            },
            "loop_lag_ms": {
                "p50": _ms(_pct(lag, 0.50)),
                "p99": _ms(_pct(lag, 0.99)),
                "max": _ms(max(lag, default=None)),
            },
            "cpu_s": (cpu.user + cpu.system) - (self.cpu_base.user + self.cpu_base.system),
            "wall_s": time.monotonic() - self.wall_base,
            "completed_at": dict(self.completed_at),
        }

    async def sample_lag(self) -> None:
        period = 0.010
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(period)
            self.lag.append(max(0.0, loop.time() - start - period))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True, help="where to write the throwaway CA bundle (PEM)")
    parser.add_argument("--token-lifetime", type=float, default=599)
    args = parser.parse_args()

    ca = trustme.CA()
    ca.cert_pem.write_to_path(args.ca)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)

    connections: list[dict[str, Any]] = [
        {"connection_id": name, "polls_to_finish": k} for name, k in POLL_CONNECTIONS.items()
    ]
    connections.append({"connection_id": "c-stuck", "outcome": "stuck"})
    sim = InstrumentedSimulator(
        ssl_context=server_ctx,
        record_requests=False,
        token_lifetime=args.token_lifetime,
        polls_to_finish=2,
        connections=connections,
    )
    sim.start()
    assert sim._loop is not None
    asyncio.run_coroutine_threadsafe(sim.sample_lag(), sim._loop)

    def call(fn: Any) -> Any:
        # Run on the simulator's loop thread, so counters are never read while a handler writes them.
        async def run() -> Any:
            return fn()

        assert sim._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), sim._loop).result(30)

    out = sys.stdout
    out.write(
        json.dumps(
            {
                "port": sim.port,
                "base_url": sim.base_url,
                "token_url": sim.token_url,
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
                "pid": os.getpid(),
            }
        )
        + "\n"
    )
    out.flush()
    stop = threading.Event()
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                reply: Any = call(sim.stats)
            elif command == "reset":
                call(sim.reset_stats)
                reply = {"ok": True}
            elif command == "quit":
                stop.set()
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown command {command!r}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            if stop.is_set():
                break
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
