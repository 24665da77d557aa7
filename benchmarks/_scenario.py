"""One measured scenario, in a fresh process (so its CPU time and peak RSS are its own).

Started by ``bench_triggers.py`` with the environment it needs (AIRFLOW_HOME, AIRFLOW_CONN_WDATA_DEFAULT):

- ``--mode trigger``: N ``BatchRefreshTrigger``s in one event loop, each waiting on its own batch, started
  evenly over one poll interval (as a triggerer that picks deferred tasks up over time), each driven as
  the triggerer does (``async for event in trigger.run()``).
- ``--mode ref``: the reference, a bare loop: one shared ``aiohttp.ClientSession`` (pool of the same size
  as the provider's), N coroutines doing the same GETs at the same rate, parsing the JSON and checking
  the two statuses.
- ``--mode poke``: the cost of one ``BatchRefreshSensor.poke()`` and one ``trigger.read()`` through
  ``WdataHook`` against one bare ``requests.Session`` GET (+ JSON), interleaved in blocks.

Writes one JSON document to ``--out``. Everything it prints (the provider's logs) goes to the log file the
parent gave it as stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import ssl
import sys
import time
from typing import Any

TERMINAL = frozenset({"complete", "error", "cancelled"})
LAG_PERIOD = 0.050


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lag_stats(samples: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    lags = [lag for at, lag in samples if start <= at <= end]
    return {
        "n": len(lags),
        "p50_ms": None if not lags else round(pct(lags, 0.50) * 1000, 3),  # type: ignore[operator]
        "p99_ms": None if not lags else round(pct(lags, 0.99) * 1000, 3),  # type: ignore[operator]
        "max_ms": None if not lags else round(max(lags) * 1000, 3),
    }


class Probe:
    """The event-loop lag sampler (sleeps 50 ms, records the oversleep) that also samples RSS."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (loop time at wake-up, lag s)
        self.rss_max = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PERIOD)
            now = loop.time()
            self.samples.append((now, max(0.0, now - start - LAG_PERIOD)))
            self.rss_max = max(self.rss_max, rss_kb())

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())


class GcWatch:
    """Times every garbage collection (gc.callbacks): the pauses the event loop cannot avoid."""

    def __init__(self) -> None:
        # (perf_counter at end, generation, wall seconds, CPU seconds, objects collected)
        self.pauses: list[tuple[float, int, float, float, int]] = []
        self._start = (0.0, 0.0)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = (time.perf_counter(), time.thread_time())
        else:
            now, cpu = time.perf_counter(), time.thread_time()
            self.pauses.append(
                (now, info["generation"], now - self._start[0], cpu - self._start[1], info.get("collected", 0))
            )

    def install(self) -> None:
        gc.callbacks.append(self)

    def stats(self, start: float, end: float) -> dict[str, Any]:
        inside = [p for p in self.pauses if start <= p[0] <= end]
        gen2 = [p for p in inside if p[1] == 2]
        return {
            "collections": [sum(1 for p in inside if p[1] == gen) for gen in (0, 1, 2)],
            "total_ms": round(sum(p[2] for p in inside) * 1000, 1),
            "total_cpu_ms": round(sum(p[3] for p in inside) * 1000, 1),
            "max_ms": round(max((p[2] for p in inside), default=0.0) * 1000, 1),
            "gen2_ms": [round(p[2] * 1000, 1) for p in gen2],
            "gen2_cpu_ms": [round(p[3] * 1000, 1) for p in gen2],
            "collected": sum(p[4] for p in inside),
        }


class Clock:
    """CPU and wall snapshots."""

    @staticmethod
    def snap(loop: asyncio.AbstractEventLoop) -> dict[str, float]:
        times = os.times()
        return {
            "cpu": time.process_time(),
            "user": times.user,
            "sys": times.system,
            "loop": loop.time(),
            "wall": time.time(),
            "perf": time.perf_counter(),
        }


async def idle_baseline(loop: asyncio.AbstractEventLoop, seconds: float) -> dict[str, float]:
    """CPU seconds (all, user, system) per second of this process while idle (the lag sampler only)."""
    gc.collect()
    a = Clock.snap(loop)
    await asyncio.sleep(seconds)
    b = Clock.snap(loop)
    return {k: (b[k] - a[k]) / (b["loop"] - a["loop"]) for k in ("cpu", "user", "sys")}


async def launch(n: int, stagger: float, start_one: Any) -> list[asyncio.Task[Any]]:
    """Start ``n`` waits evenly over ``stagger`` seconds."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i in range(n):
        delay = t0 + i * stagger / n - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(start_one(i)))
    return tasks


async def measured_run(args: argparse.Namespace, ids: list[str], start_one: Any, counter: Any) -> dict[str, Any]:
    """Common frame of the trigger and reference runs: idle baseline, launch, steady window, summary."""
    loop = asyncio.get_running_loop()
    probe = Probe()
    probe.start()
    gcwatch = GcWatch()
    gcwatch.install()
    idle_rates = await idle_baseline(loop, args.idle)
    idle = idle_rates["cpu"]
    gc.collect()
    heap_objects = len(gc.get_objects())
    rss0 = rss_kb()
    hwm_reset = reset_hwm()
    probe.rss_max = rss0

    begin = Clock.snap(loop)
    steady_at = begin["loop"] + args.interval + args.settle
    launcher = loop.create_task(launch(args.n, args.interval, start_one))

    steady: dict[str, float] = {}
    polls_at_steady = 0
    rss_all_alive = 0

    async def mark_steady() -> None:
        nonlocal polls_at_steady, rss_all_alive, steady
        await asyncio.sleep(max(0.0, steady_at - loop.time()))
        steady = Clock.snap(loop)
        polls_at_steady = counter["polls"]
        rss_all_alive = rss_kb()

    marker = loop.create_task(mark_steady())
    tasks = await launcher
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.interval * (args.polls + 2) + 60)
    finally:
        end = Clock.snap(loop)
    await marker
    rss_end = rss_kb()
    hwm = hwm_kb()
    heap_objects_end = len(gc.get_objects())
    probe.task.cancel()  # type: ignore[union-attr]
    with contextlib.suppress(asyncio.CancelledError):
        await probe.task  # type: ignore[misc]

    cpu_all = end["cpu"] - begin["cpu"]
    wall_all = end["loop"] - begin["loop"]
    cpu_steady = end["cpu"] - steady["cpu"]
    wall_steady = end["loop"] - steady["loop"]
    polls_steady = counter["polls"] - polls_at_steady
    return {
        "mode": args.mode,
        "n": args.n,
        "interval": args.interval,
        "polls_to_finish": args.polls,
        "idle_cpu_per_s": idle,
        "wall_all_s": wall_all,
        "cpu_all_s": cpu_all,
        "polls_all": counter["polls"],
        "wall_steady_s": wall_steady,
        "cpu_steady_s": cpu_steady,
        "cpu_steady_net_s": cpu_steady - idle * wall_steady,
        "polls_steady": polls_steady,
        "cpu_per_poll_steady_us": (cpu_steady - idle * wall_steady) / max(polls_steady, 1) * 1e6,
        "cpu_per_poll_all_us": (cpu_all - idle * wall_all) / max(counter["polls"], 1) * 1e6,
        # The same steady figure split into user and system (kernel) time: the kernel's share of each request
        # (TCP over loopback, waking the simulator) shows as system time.
        **{
            f"{kind}_per_poll_steady_us": (end[kind] - steady[kind] - idle_rates[kind] * wall_steady)
            / max(polls_steady, 1)
            * 1e6
            for kind in ("user", "sys")
        },
        "first_phase_cpu_net_s": (steady["cpu"] - begin["cpu"]) - idle * (steady["loop"] - begin["loop"]),
        "first_phase_polls": polls_at_steady,
        "lag_steady": lag_stats(probe.samples, steady["loop"], end["loop"]),
        "gc_steady": gcwatch.stats(steady["perf"], end["perf"]),
        "gc_all": gcwatch.stats(begin["perf"], end["perf"]),
        "heap_objects_base": heap_objects,
        "heap_objects_end": heap_objects_end,
        "lag_all": lag_stats(probe.samples, begin["loop"], end["loop"]),
        "rss_base_kb": rss0,
        "rss_all_alive_kb": rss_all_alive,
        "rss_max_sampled_kb": probe.rss_max,
        "rss_hwm_kb": hwm if hwm_reset else None,
        "rss_end_kb": rss_end,
        "events": counter["events"],
        "errors": counter["errors"],
        "begin_wall": begin["wall"],
        "end_wall": end["wall"],
        "steady_wall": steady["wall"],
        "latency_ms": counter.get("latency_ms"),
    }


# ------------------------------------------------------------------------------------------------ trigger


async def run_triggers(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    counter: dict[str, Any] = {"polls": 0, "events": {}, "errors": 0}

    class CountedTrigger(BatchRefreshTrigger):
        async def afetch(self, hook: Any) -> Any:
            counter["polls"] += 1
            return await super().afetch(hook)

    deadline = time.time() + 3600

    async def start_one(i: int) -> None:
        trigger = CountedTrigger(
            batch_id=ids[i], wdata_conn_id="wdata_default", poll_interval=args.interval, deadline=deadline
        )
        async with contextlib.aclosing(trigger.run()) as events:
            async for event in events:
                counter["events"][ids[i]] = [time.time(), event.payload["status"]]
                if event.payload["status"] != "success":
                    counter["errors"] += 1
                    print("unexpected event", event.payload, file=sys.stderr)
                break

    return await measured_run(args, ids, start_one, counter)


# -------------------------------------------------------------------------------------------- reference


async def run_reference(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    import aiohttp

    # Unused here, but imported so that both processes start from the same heap (as in a triggerer, where
    # Airflow is always loaded): the garbage collector's full passes walk the whole heap.
    import airflow_provider_wdata.triggers.wdata  # noqa: F401

    counter: dict[str, Any] = {"polls": 0, "events": {}, "errors": 0}
    ssl_ctx = ssl.create_default_context(cafile=args.ca)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.pool_size))
    lock = asyncio.Lock()
    token: list[str] = []
    latencies: list[float] = []

    async def auth() -> dict[str, str]:
        if not token:
            async with lock:
                if not token:
                    form = {
                        "grant_type": "client_credentials",
                        "client_id": args.client_id,
                        "client_secret": args.secret,
                    }
                    async with session.post(args.token_url, data=form, ssl=ssl_ctx) as resp:
                        token.append((await resp.json())["access_token"])
        return {"Authorization": f"Bearer {token[0]}", "Accept": "application/json"}

    prefix = args.base_url + "/api/v1/connections/batch/refresh/"

    async def read_status(url: str) -> tuple[str, str]:
        # The response and the parsed JSON live only here: a waiting coroutine keeps nothing of them.
        headers = await auth()
        async with session.get(url, headers=headers, ssl=ssl_ctx) as resp:
            body = (await resp.json())["body"]
        return body["sourceStatus"], body["destinationStatus"]

    async def start_one(i: int) -> None:
        loop = asyncio.get_running_loop()
        url = prefix + ids[i]
        for _ in range(args.polls + 10):
            t = loop.time()
            source, destination = await read_status(url)
            latencies.append(loop.time() - t)
            counter["polls"] += 1
            if source in TERMINAL and destination in TERMINAL:
                counter["events"][ids[i]] = [time.time(), "success"]
                return
            await asyncio.sleep(args.interval)
        counter["errors"] += 1

    try:
        result = await measured_run(args, ids, start_one, counter)
    finally:
        await session.close()
    result["latency_ms"] = {
        "p50": round(pct(latencies, 0.5) * 1000, 3) if latencies else None,  # type: ignore[operator]
        "p99": round(pct(latencies, 0.99) * 1000, 3) if latencies else None,  # type: ignore[operator]
    }
    return result


# ------------------------------------------------------------------------------------------------ poke


def run_poke(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    import logging

    import requests

    from airflow_provider_wdata.hooks.wdata import WdataHook
    from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor
    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    batch_id = ids[0]  # a batch that never ends ("c-stuck"): every poke reads "running"
    sensor = BatchRefreshSensor(task_id="bench_poke", batch_id=batch_id, poke_interval=5, deferrable=False)
    trigger = BatchRefreshTrigger(batch_id=batch_id, poll_interval=5, deadline=float("inf"))
    hook = WdataHook("wdata_default")
    read_log = logging.getLogger("bench.read")

    bare = requests.Session()
    form = {"grant_type": "client_credentials", "client_id": args.client_id, "client_secret": args.secret}
    bare_token = bare.post(args.token_url, data=form, verify=args.ca, timeout=30).json()["access_token"]
    bare_headers = {"Authorization": f"Bearer {bare_token}", "Accept": "application/json"}
    url = args.base_url + "/api/v1/connections/batch/refresh/" + batch_id

    def do_poke() -> None:
        assert sensor.poke({}) is False  # type: ignore[arg-type]

    def do_read() -> None:
        assert trigger.read(hook, read_log) is None

    def do_bare() -> None:
        body = bare.get(url, headers=bare_headers, verify=args.ca, timeout=30).json()["body"]
        assert not (body["sourceStatus"] in TERMINAL and body["destinationStatus"] in TERMINAL)

    calls = {"poke": do_poke, "read": do_read, "bare": do_bare}
    totals = {name: {"cpu": 0.0, "wall": 0.0, "n": 0} for name in calls}
    per_block: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():  # warm-up: tokens, TLS connections, caches
        for _ in range(20):
            fn()
    block = 25
    for _ in range(args.rounds):
        for name, fn in calls.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(block):
                fn()
            c1, w1 = time.process_time(), time.perf_counter()
            totals[name]["cpu"] += c1 - c0
            totals[name]["wall"] += w1 - w0
            totals[name]["n"] += block
            per_block[name].append((c1 - c0) / block * 1e6)
    # Each round runs the three variants back to back: the ratio of neighbouring blocks is robust to drift
    # in machine load; its median over the rounds is the figure reported.
    ratios = {name: sorted(a / b for a, b in zip(per_block[name], per_block["bare"])) for name in ("poke", "read")}
    return {
        "mode": "poke",
        "median_block_ratio": {name: values[len(values) // 2] for name, values in ratios.items()},
        "per_call": {
            name: {
                "cpu_us": t["cpu"] / t["n"] * 1e6,
                "wall_us": t["wall"] / t["n"] * 1e6,
                "n": t["n"],
                "cpu_us_blocks": [round(x, 1) for x in per_block[name]],
            }
            for name, t in totals.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("trigger", "ref", "poke"), required=True)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--polls", type=int, default=3, help="polls until each batch ends")
    parser.add_argument("--settle", type=float, default=0.5, help="s after one interval when the steady window opens")
    parser.add_argument("--idle", type=float, default=1.5, help="s of idle baseline")
    parser.add_argument("--ids", required=True, help="file with one batch id per line")
    parser.add_argument("--out", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--client-id", default="sim-client")
    parser.add_argument("--secret", default="sim-secret")
    parser.add_argument("--pool-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=16, help="poke mode: blocks of 25 calls per variant")
    parser.add_argument("--patch", default=None, help="import this module first (prototype fixes)")
    args = parser.parse_args()
    if args.patch:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        for name in args.patch.split(","):
            __import__(name)
    with open(args.ids) as f:
        ids = [line.strip() for line in f if line.strip()]
    if args.mode == "poke":
        result = run_poke(args, ids)
    elif args.mode == "trigger":
        result = asyncio.run(run_triggers(args, ids))
    else:
        result = asyncio.run(run_reference(args, ids))
    result["patch"] = args.patch
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
