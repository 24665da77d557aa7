"""CPU per GET of the aiohttp session/request options the provider uses (not part of ``make bench``).

One client process, one HTTPS simulator process; C concurrent coroutines doing GETs back to back, for each
variant in turn (interleaved over several rounds). Shows what ``trust_env=True`` (two thread-pool hops per
request: netrc and proxy lookup), the per-request ``ClientTimeout`` with ``sock_read``, and
``asyncio.wait_for`` around each read (a new Task per read on Python < 3.12) cost per poll.

    .venv/bin/python benchmarks/aiohttp_options.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_triggers import SimProcess, start_batches


async def run_variant(name: str, sim: SimProcess, batch_id: str, token: str, n: int, concurrency: int) -> float:
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(sim.ca))
    kwargs: dict[str, Any] = {}
    if "trust_env" in name:
        kwargs["trust_env"] = True
    if "dummy_jar" in name:
        kwargs["cookie_jar"] = aiohttp.DummyCookieJar()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), **kwargs)
    url = sim.info["base_url"] + "/api/v1/connections/batch/refresh/" + batch_id
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    request_kwargs: dict[str, Any] = {"headers": headers, "ssl": ctx}
    if "sock_read" in name:
        request_kwargs["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=30)
    if "total30" in name:
        request_kwargs["timeout"] = aiohttp.ClientTimeout(total=30)

    async def get() -> None:
        async with session.get(url, **request_kwargs) as resp:
            await resp.read()

    async def worker(count: int) -> None:
        for _ in range(count):
            if "wait_for" in name:
                await asyncio.wait_for(get(), 60)
            else:
                await get()

    await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # warm: connections, caches
    start = time.process_time()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    cpu = time.process_time() - start
    await session.close()
    return cpu / (n // concurrency * concurrency) * 1e6


VARIANTS = [
    "default",
    "total30",
    "sock_read",
    "wait_for",
    "dummy_jar",
    "trust_env",
    "trust_env+dummy_jar+sock_read+wait_for",
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wdata-aiohttp-"))
    sim = SimProcess("opts", workdir)
    try:
        batch_id = start_batches(sim, "c-stuck", 1, workdir / "ids.txt").read_text().split()[0]
        import requests

        token = requests.post(
            sim.info["token_url"],
            data={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"},
            verify=str(sim.ca),
            timeout=30,
        ).json()["access_token"]
        results: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                results[variant].append(
                    asyncio.run(run_variant(variant, sim, batch_id, token, args.requests, args.concurrency))
                )
        base = statistics.median(results["default"])
        for variant, values in results.items():
            median = statistics.median(values)
            print(
                f"{variant:<40} {median:7.0f} µs CPU per GET (+{median - base:5.0f})  runs {[round(v) for v in values]}"
            )
    finally:
        sim.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
