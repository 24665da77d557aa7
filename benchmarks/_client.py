"""One measured client process, started by ``bench_triggers.py`` (a fresh process: its CPU time and RSS are its own).

- ``--mode trigger``: N ``BatchRefreshTrigger``s in one event loop, each on its own batch, each driven as the
  triggerer drives it (``async for event in trigger.run()``). They read the Airflow connection
  ``wdata_default`` from ``AIRFLOW_CONN_WDATA_DEFAULT`` (looked up once before measuring, as a running
  triggerer has set Airflow's secrets backends up already; each trigger still looks it up itself).
  ``--last-read now`` gives each trigger ``last_read_at=time.time()`` (a task that deferred right after its own
  read); ``--reuse-seconds`` sets ``airflow_provider_wdata.hooks.wdata.CONNECTION_REUSE_SECONDS`` (0: every
  trigger looks the connection up); ``--init-secret-cache`` calls ``airflow.sdk.SecretCache.init()`` as
  Airflow's DAG processor does (``[secrets] use_cache`` comes from the environment); ``--burst`` sets
  ``airflow_provider_wdata.wait.FIRST_READ_SPREAD_MAX`` to 0 and ``airflow_provider_wdata.ticks.READS_PER_TICK``
  out of reach, so that due reads leave together as the bare loop sends them.
- ``--mode bare``: the reference, a bare polling loop: one shared ``aiohttp.ClientSession`` with a pool of 100
  connections (the provider's), one token, and N coroutines doing the same GETs on the same schedule, each
  parsing the JSON and checking the two statuses; on a 429 it sleeps ``Retry-After`` and tries again. With
  ``--spread`` each coroutine delays its first read as the provider does (uniform over up to one interval, at
  most ``FIRST_READ_SPREAD_MAX``). It reads the same connection JSON, without Airflow.
- ``--own-batches CONNECTION``: instead of ``--ids``, each wait starts its batch itself
  (``WdataHook.astart_batch_refresh``) and reads it once (``aget_batch_refresh``, a sensor's check before it
  defers) right before its trigger, so that a refresh that ends after some seconds is timed from its wait.

The waits start evenly over one poll interval (``--start stagger``, as a triggerer picks deferred tasks up
over time) or all at the same moment (``--start once``). A sampler wakes every 50 ms and records the event
loop's lag (its oversleep), the process's CPU time and RSS, on ``time.monotonic()``, the clock the
simulator stamps requests with; ``bench_triggers.py`` cuts the windows afterwards. Writes one JSON document
to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import random
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Imported in both modes: a triggerer always has Airflow and the provider loaded, and a full garbage
# collection walks the whole heap, so both processes start from the same heap.
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from airflow_provider_wdata.wait import FIRST_READ_SPREAD_MAX

SAMPLE_PERIOD = 0.050
TERMINAL = frozenset({"complete", "error", "cancelled"})
POOL_SIZE = 100  # the provider's pool of async connections


def status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS


async def sample(timeline: list[list[float]]) -> None:
    """Every 50 ms: [monotonic time at wake-up, lag (oversleep) s, process CPU s, RSS KB]."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(SAMPLE_PERIOD)
        now = time.monotonic()
        timeline.append([now, max(0.0, now - start - SAMPLE_PERIOD), time.process_time(), status_kb("VmRSS:")])


class GcTimer:
    """Wall time spent in the garbage collector, per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.seconds[info["generation"]] += spent
        self.counts[info["generation"]] += 1
        self.longest = max(self.longest, spent)


async def start_waits(n: int, stagger: float, wait: Callable[[int], Awaitable[None]]) -> None:
    """Start the ``n`` waits evenly over ``stagger`` seconds (all at once for 0), and wait for all of them."""
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        delay = t0 + i * stagger / n - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(wait(i)))
    await asyncio.gather(*tasks)


def trigger_wait(
    ids: list[str], interval: float, events: list[list[Any]], last_read: str
) -> Callable[[int], Awaitable[None]]:
    deadline = time.time() + 3600

    async def wait(i: int) -> None:
        trigger = BatchRefreshTrigger(
            batch_id=ids[i],
            wdata_conn_id="wdata_default",
            poll_interval=interval,
            deadline=deadline,
            last_read_at=time.time() if last_read == "now" else None,
        )
        async with contextlib.aclosing(trigger.run()) as run:
            async for event in run:
                events.append([time.monotonic(), event.payload["status"]])
                break

    return wait


def bare_wait(
    ids: list[str], interval: float, events: list[list[Any]], session: Any, spread: bool
) -> Callable[[int], Awaitable[None]]:
    conn = json.loads(os.environ["AIRFLOW_CONN_WDATA_DEFAULT"])
    ssl_ctx = ssl.create_default_context(cafile=conn["extra"]["verify"])
    prefix = conn["host"].rstrip("/") + "/api/v1/connections/batch/refresh/"
    lock = asyncio.Lock()
    token: list[str] = []

    async def headers() -> dict[str, str]:
        if not token:
            async with lock:
                if not token:
                    form = {
                        "grant_type": "client_credentials",
                        "client_id": conn["login"],
                        "client_secret": conn["password"],
                    }
                    async with session.post(conn["extra"]["token_url"], data=form, ssl=ssl_ctx) as resp:
                        token.append((await resp.json())["access_token"])
        return {"Authorization": f"Bearer {token[0]}", "Accept": "application/json"}

    async def wait(i: int) -> None:
        url = prefix + ids[i]
        if spread:
            await asyncio.sleep(random.uniform(0, min(interval, FIRST_READ_SPREAD_MAX)))
        while True:
            async with session.get(url, headers=await headers(), ssl=ssl_ctx) as resp:
                if resp.status == 429:
                    retry_after = float(resp.headers.get("Retry-After") or 1)
                    body = None
                else:
                    body = (await resp.json())["body"]
            if body is None:
                await asyncio.sleep(retry_after)
                continue
            if body["sourceStatus"] in TERMINAL and body["destinationStatus"] in TERMINAL:
                events.append([time.monotonic(), "success"])
                return
            await asyncio.sleep(interval)

    return wait


def own_batches(
    n: int, connection_id: str, ids: list[str], wait: Callable[[int], Awaitable[None]]
) -> Callable[[int], Awaitable[None]]:
    """Each wait first starts its batch and reads it once, as an operator then a sensor would, then defers."""
    from airflow_provider_wdata.hooks.wdata import WdataHook

    hook = WdataHook("wdata_default")
    limit = asyncio.Semaphore(50)
    ids.extend([""] * n)

    async def chained(i: int) -> None:
        async with limit:
            ids[i] = (await hook.astart_batch_refresh([connection_id])).batch_refresh_id
            await hook.aget_batch_refresh(ids[i])
        await wait(i)

    return chained


async def measure(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    import aiohttp

    timeline: list[list[float]] = []
    sampler = asyncio.create_task(sample(timeline))
    if args.mode == "trigger":
        # What a running triggerer has done already, once per process: set up Airflow's secrets backends and
        # the thread the lookup runs in. Each wait still looks its connection up itself.
        from airflow.sdk import BaseHook, SecretCache

        import airflow_provider_wdata.hooks.wdata as hooks

        if args.reuse_seconds is not None:
            hooks.CONNECTION_REUSE_SECONDS = args.reuse_seconds
        if args.init_secret_cache:
            SecretCache.init()
        if args.burst:
            import airflow_provider_wdata.ticks as ticks
            import airflow_provider_wdata.wait as waits

            waits.FIRST_READ_SPREAD_MAX = 0.0
            ticks.READS_PER_TICK = 1_000_000
        await BaseHook.aget_connection("wdata_default")
    events: list[list[Any]] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL_SIZE)) if args.mode == "bare" else None
    if session is not None:
        wait = bare_wait(ids, args.interval, events, session, args.spread)
    else:
        wait = trigger_wait(ids, args.interval, events, args.last_read)
    if args.own_batches:
        wait = own_batches(args.n, args.own_batches, ids, wait)
    profiler = cProfile.Profile() if args.profile else None
    # The idle rate (the sampler alone), taken off every CPU figure.
    gc.collect()
    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.sleep(args.idle)
    idle_cpu_per_s = (time.process_time() - cpu0) / (time.monotonic() - t0)
    rss0 = status_kb("VmRSS:")
    reset_peak_rss()
    gc_timer = GcTimer()
    gc.callbacks.append(gc_timer)
    begin, cpu_begin, sys_begin = time.monotonic(), time.process_time(), os.times().system
    if profiler is not None:
        profiler.enable()
    try:
        await start_waits(len(ids), args.interval if args.start == "stagger" else 0.0, wait)
    finally:
        end, cpu_end, sys_end = time.monotonic(), time.process_time(), os.times().system
        gc.callbacks.remove(gc_timer)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if session is not None:
            await session.close()
    sampler.cancel()
    return {
        "mode": args.mode,
        "idle_cpu_per_s": idle_cpu_per_s,
        "begin": begin,
        "cpu_begin": cpu_begin,
        "end": end,
        "cpu_end": cpu_end,
        "system_cpu_s": sys_end - sys_begin,
        "rss0_kb": rss0,
        "rss_peak_kb": max([status_kb("VmHWM:")] + [row[3] for row in timeline if row[0] >= begin]),
        "timeline": timeline,
        "events": events,
        "gc": {"seconds": gc_timer.seconds, "counts": gc_timer.counts, "longest_s": gc_timer.longest},
        # Requests made before the waits proper (each batch's start and the sensor's read), not theirs.
        "setup_requests": {"other": args.n, "read": args.n} if args.own_batches else {},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("trigger", "bare"), required=True)
    parser.add_argument("--ids", help="file with one batch id per line")
    parser.add_argument("--own-batches", metavar="CONNECTION", help="start --n batches of this connection")
    parser.add_argument("--n", type=int, default=0, help="with --own-batches: how many")
    parser.add_argument("--last-read", choices=("now", "none"), default="none", help="trigger: last_read_at")
    parser.add_argument("--reuse-seconds", type=float, default=None, help="trigger: CONNECTION_REUSE_SECONDS")
    parser.add_argument("--init-secret-cache", action="store_true", help="trigger: SecretCache.init()")
    parser.add_argument("--spread", action="store_true", help="bare: spread the first reads like the provider")
    parser.add_argument("--burst", action="store_true", help="trigger: no first-read spread, no cap per tick")
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--start", choices=("stagger", "once"), default="stagger")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds of idle baseline")
    parser.add_argument("--profile", default=None, help="write a cProfile of the waits here")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ids: list[str] = []
    if args.ids:
        with open(args.ids) as f:
            ids = [line.strip() for line in f if line.strip()]
    result = asyncio.run(measure(args, ids))
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
