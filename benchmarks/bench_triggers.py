"""Benchmark of the deferred wait (``BatchRefreshTrigger``) against a bare polling loop, and of the scale features.

``make bench`` runs ``.venv/bin/python benchmarks/bench_triggers.py``: about six minutes, all on 127.0.0.1.
It prints the figures, each target of the scale issue next to its figure with PASS or MISS (printing only: it
exits 0 either way), and writes them to ``benchmarks/last-run.json`` (not committed). See
``benchmarks/README.md`` for the method and what each figure includes.

Options: ``--only KEY`` (run only these scenarios: 100, 1000, 5000, a, a-spread, a-burst, b, d, e, f, g, h; the
default is every one but 100, a-spread, a-burst and h), ``--scale F`` (multiply every N by F: quick runs while
developing), ``--profile KEY`` (run one scenario with the left client under cProfile, print the top functions and
write ``benchmarks/profile.prof``; its CPU figures are inflated by the profiler), ``--together`` (run the two
clients of a scenario side by side instead of one after the other, as runs before 2026-12-02 did), ``--repeat N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _report import print_profile, repeated, table, targets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
#: The steady window opens this long after the last wait's first read reached the simulator.
SETTLE = 0.5
#: The 429s of (e) are counted per window of this many seconds (the simulator's limit window, 1 s, which is
#: also the shortest Retry-After it sends).
RATE_WINDOW = 1.0


@dataclass(frozen=True)
class Side:
    """One of the two clients of a scenario."""

    label: str
    mode: str  # "trigger": BatchRefreshTrigger.run(); "bare": the bare shared-session loop
    last_read: str = "none"  # trigger: "now" gives last_read_at=time.time() (deferred right after a read)
    reuse_seconds: float | None = None  # trigger: CONNECTION_REUSE_SECONDS (None: the package's default)
    use_cache: bool = False  # AIRFLOW__SECRETS__USE_CACHE=True in the client's environment
    init_cache: bool = False  # trigger: airflow.sdk.SecretCache.init(), as Airflow's DAG processor does
    spread: bool = False  # bare: spread the first reads as the provider does
    burst: bool = False  # trigger: no first-read spread and no cap per tick, as the bare loop sends its reads

    def args(self) -> list[str]:
        out = ["--mode", self.mode]
        if self.mode == "trigger":
            out += ["--last-read", self.last_read]
            if self.reuse_seconds is not None:
                out += ["--reuse-seconds", str(self.reuse_seconds)]
            if self.init_cache:
                out += ["--init-secret-cache"]
            if self.burst:
                out += ["--burst"]
        elif self.spread:
            out += ["--spread"]
        return out


PROVIDER = Side("provider", "trigger", last_read="now")
PROVIDER_DUE = Side("provider", "trigger")
BARE = Side("bare loop", "bare")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    n: int
    interval: float  # poll interval, s
    connection: str  # c-pK: each batch ends on its K-th status read; c-tS: S seconds after it started
    start: str  # "stagger": the waits start evenly over one interval; "once": all at the same moment
    sides: tuple[Side, Side] = (PROVIDER, BARE)
    rate_limit: int | None = None  # the simulators answer 429 past this many API requests per second
    own_batches: bool = False  # each client starts its batches and reads each once just before its waits

    @property
    def reads(self) -> int:
        """Status reads a wait takes (for a time-based refresh: polling from its start)."""
        kind, number = self.connection[2], int(self.connection[3:])
        return number if kind == "p" else math.ceil(number / self.interval)


REUSE_OFF = Side("reuse off", "trigger", last_read="now", reuse_seconds=0.0)
SCENARIOS = [
    Scenario("100", "N=100", 100, 5.0, "c-p3", "stagger"),
    Scenario("1000", "N=1,000", 1000, 5.0, "c-p3", "stagger"),
    Scenario("5000", "(c) N=5,000", 5000, 20.0, "c-p2", "stagger"),
    # A triggerer restarted or taking over: every first read is due; the bare loop fires them in one turn.
    Scenario("a", "(a) 1,000 due at once", 1000, 5.0, "c-p4", "once", (PROVIDER_DUE, BARE)),
    # (a) against a bare loop that spreads its first reads as the provider does: the provider's own overhead,
    # without the difference in when the reads are sent (not run by default; not a target).
    Scenario(
        "a-spread",
        "(a) against a spreading bare loop",
        1000,
        5.0,
        "c-p4",
        "once",
        (PROVIDER_DUE, Side("bare loop, spread", "bare", spread=True)),
    ),
    # (a) with the provider sending as the bursting bare loop does (its first-read spread and its cap per tick
    # off): the provider's own overhead on the same schedule (not run by default; not a target).
    Scenario(
        "a-burst",
        "(a) with the provider bursting",
        1000,
        5.0,
        "c-p4",
        "once",
        (Side("provider, bursting", "trigger", burst=True), BARE),
    ),
    Scenario("b", "(b) 500 deferred at once", 500, 2.0, "c-p8", "once"),
    # A sensor read, then deferred; the refresh ends 10 s after it started: polling every 4 s from the
    # sensor's read ends on the third read; an immediate re-read would make it four.
    Scenario(
        "d",
        "(d) reads per wait",
        300,
        4.0,
        "c-t10",
        "once",
        (Side("last_read_at=now", "trigger", last_read="now"), Side("without", "trigger")),
        own_batches=True,
    ),
    # The credential limited to 150 requests per second; both spread their first reads over one interval.
    Scenario(
        "e",
        "(e) 1,000 against 150 req/s",
        1000,
        5.0,
        "c-p2",
        "once",
        (PROVIDER_DUE, Side("bare loop, retries on 429", "bare", spread=True)),
        rate_limit=150,
    ),
    Scenario(
        "f", "(f) first read: reuse", 500, 2.0, "c-p4", "stagger", (Side("reuse on", "trigger", "now"), REUSE_OFF)
    ),
    Scenario(
        "g",
        "(g) first read: use_cache",
        500,
        2.0,
        "c-p4",
        "stagger",
        (
            Side("use_cache, reuse on", "trigger", "now", use_cache=True),
            replace(REUSE_OFF, label="use_cache, reuse off", use_cache=True),
        ),
    ),
    # What use_cache would do if the triggerer initialised the cache (it does not; the DAG processor does).
    Scenario(
        "h",
        "(h) first read: SecretCache.init()",
        500,
        2.0,
        "c-p4",
        "stagger",
        (replace(REUSE_OFF, label="cache initialised, reuse off", use_cache=True, init_cache=True), REUSE_OFF),
    ),
]


# ----------------------------------------------------------------------------------------------- processes


class Simulator:
    """``_sim_server.py``: one ``WdataSimulator`` over HTTPS in its own process."""

    def __init__(self, name: str, workdir: Path) -> None:
        reads = sorted({int(s.connection[3:]) for s in SCENARIOS if s.connection.startswith("c-p")})
        seconds = sorted({int(s.connection[3:]) for s in SCENARIOS if s.connection.startswith("c-t")})
        command = [PYTHON, str(HERE / "_sim_server.py"), "--ca", str(workdir / f"ca-{name}.pem")]
        command += ["--reads", *map(str, reads), "--seconds", *map(str, seconds)]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.connection = json.loads(self.proc.stdout.readline())

    def command(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.command("quit")
            self.proc.wait(timeout=30)


async def start_batches(conn_ids: list[str], connection_id: str, n: int) -> list[list[str]]:
    """Start ``n`` one-connection batches through each Airflow connection (``WdataHook``, as an operator does)."""
    from airflow_provider_wdata.hooks.wdata import WdataHook

    async def on(conn_id: str) -> list[str]:
        hook = WdataHook(conn_id)
        limit = asyncio.Semaphore(50)

        async def one() -> str:
            async with limit:
                return (await hook.astart_batch_refresh([connection_id])).batch_refresh_id

        return list(await asyncio.gather(*(one() for _ in range(n))))

    return list(await asyncio.gather(*(on(conn_id) for conn_id in conn_ids)))


def run_clients(jobs: list[tuple[list[str], dict[str, str], Path]], timeout: float, together: bool) -> None:
    """Run the client processes one after the other (each alone on the machine), or side by side (``together``).

    One after the other is the default: on a 2-core machine two clients and their two simulators side by side
    make each side's bursts the other's noise, which is not the same noise for both (see benchmarks/README.md).
    """
    batches = [jobs] if together else [[job] for job in jobs]
    for batch in batches:
        procs = []
        for cmd, env, log in batch:
            with open(log, "w") as out:
                procs.append((subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT), log))
        deadline = time.monotonic() + timeout
        try:
            for proc, log in procs:
                if proc.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                    raise RuntimeError(f"client failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


# --------------------------------------------------------------------------------------------------- figures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def throttling(samples: list[list[float]]) -> dict[str, Any]:
    """429s per Retry-After window: consecutive 1 s windows from the first 429."""
    if not samples:
        return {"total": 0, "windows": 0, "max_per_window": 0, "per_window": []}
    first, counts, previous = samples[0][0], {}, 0.0
    for at, total in samples:
        index = int((at - first) // RATE_WINDOW)
        counts[index] = counts.get(index, 0) + int(total - previous)
        previous = total
    per_window = [counts.get(i, 0) for i in range(max(counts) + 1)]
    return {
        "total": int(previous),
        "windows": sum(1 for c in per_window if c),
        "max_per_window": max(per_window),
        "per_window": per_window,
    }


def figures(n: int, client: dict[str, Any], sim: dict[str, Any], connections_opened: int) -> dict[str, Any]:
    """One client's figures. ``sim`` holds the requests the simulator recorded for this client alone."""
    idle = client["idle_cpu_per_s"]
    begin, end = client["begin"], client["end"]
    # What the client did before its waits (starting its own batches and a sensor's read) is not counted.
    requests = [r for r in sim["requests"] if r[0] >= begin]
    timeline = client["timeline"]
    # Whole waits: from the moment the waits start to the last event.
    whole_cpu = client["cpu_end"] - client["cpu_begin"] - idle * (end - begin)
    # Steady polls: from SETTLE after the last wait's first read reached the simulator, to the last event.
    first_read: dict[str, float] = {}
    for at, kind, batch_id in requests:
        if kind == "read" and batch_id not in first_read:
            first_read[batch_id] = at
    steady_from = max(first_read.values()) + SETTLE
    opening = next((row for row in timeline if row[0] >= steady_from), None)
    steady: dict[str, Any] = {"requests": 0, "cpu_us_per_request": float("nan")}
    first_extra_us = float("nan")
    if opening is not None and opening[0] < end:
        steady_requests = sum(1 for at, _, _ in requests if opening[0] <= at <= end)
        steady_cpu = client["cpu_end"] - opening[2] - idle * (end - opening[0])
        per_request = steady_cpu / max(steady_requests, 1)
        steady = {"requests": steady_requests, "cpu_us_per_request": per_request * 1e6}
        # The first reads' window (the waits' start to the steady window) holds the N first reads and some
        # later ones: take the later ones off at the steady cost, then one steady read per wait.
        first_cpu = opening[2] - client["cpu_begin"] - idle * (opening[0] - begin)
        later = sum(1 for at, _, _ in requests if at < opening[0]) - len(first_read)
        first_extra_us = ((first_cpu - later * per_request) / max(len(first_read), 1) - per_request) * 1e6

    def lag(start: float) -> dict[str, float]:
        lags = [row[1] * 1000 for row in timeline if start <= row[0] <= end]
        return {"p99_ms": pct(lags, 0.99), "max_ms": max(lags, default=float("nan"))}

    events = max(len(client["events"]), 1)
    setup = client.get("setup_requests", {})
    reads = sum(1 for _, kind, _ in requests if kind == "read") - setup.get("read", 0)
    return {
        "events": len(client["events"]),
        "failed": sum(1 for _, status in client["events"] if status != "success"),
        "wall_s": end - begin,
        "requests": len(requests),
        "requests_per_wait": (len(requests) - sum(setup.values())) / events,
        "reads_per_wait": reads / events,
        "token_requests": sum(1 for _, kind, _ in requests if kind == "token"),
        "connections_opened": connections_opened,
        "cpu_us_per_request": whole_cpu / max(len(requests), 1) * 1e6,
        "cpu_ms_per_wait": whole_cpu / n * 1e3,
        "system_cpu_us_per_request": client["system_cpu_s"] / max(len(requests), 1) * 1e6,
        "steady": steady,
        "first_read_extra_us": first_extra_us,
        "lag": lag(begin),
        "steady_lag": lag(opening[0] if opening else end),
        "rss_kb_per_wait": (client["rss_peak_kb"] - client["rss0_kb"]) / n,
        "gc_ms": sum(client["gc"]["seconds"]) * 1e3,
        "gc_longest_ms": client["gc"]["longest_s"] * 1e3,
        "gc_counts": client["gc"]["counts"],
        "throttled": throttling(sim.get("throttled", [])),
        # Requests per 100 ms and the event-loop lag (ms) per sample, from the waits' start: where a burst was.
        "request_rate_100ms": histogram([at - begin for at, _, _ in requests], 0.1),
        "lag_ms_timeline": [[round(row[0] - begin, 3), round(row[1] * 1000, 1)] for row in timeline if row[0] >= begin],
        "throttled_timeline": [[round(at - begin, 3), total] for at, total in sim.get("throttled", [])],
    }


def histogram(times: list[float], width: float) -> list[int]:
    counts = [0] * (int(max(times, default=0) // width) + 1)
    for at in times:
        counts[int(at // width)] += 1
    return counts


def run_scenario(
    scenario: Scenario, sims: dict[str, Simulator], workdir: Path, profile: Path | None = None, together: bool = False
) -> dict[str, Any]:
    ids: list[list[str]] = [[] for _ in sims]
    if not scenario.own_batches:
        ids = asyncio.run(start_batches([f"wdata_{name}" for name in sims], scenario.connection, scenario.n))
    before = {}
    for name, sim in sims.items():
        before[name] = sim.command("clear")
        if scenario.rate_limit is not None:
            sim.command(f"limit {scenario.rate_limit}")
    jobs = []
    for (name, sim), side, batch_ids in zip(sims.items(), scenario.sides, ids, strict=True):
        cmd = [PYTHON, str(HERE / "_client.py"), *side.args(), "--out", str(workdir / f"{name}.json")]
        if scenario.own_batches:
            cmd += ["--own-batches", scenario.connection, "--n", str(scenario.n)]
        else:
            (workdir / f"ids-{name}.txt").write_text("\n".join(batch_ids) + "\n")
            cmd += ["--ids", str(workdir / f"ids-{name}.txt")]
        cmd += ["--interval", str(scenario.interval), "--start", scenario.start]
        if profile is not None and name == "left" and side.mode == "trigger":
            cmd += ["--profile", str(profile)]
        env = dict(os.environ, AIRFLOW_CONN_WDATA_DEFAULT=json.dumps(sim.connection))
        if side.use_cache:
            env["AIRFLOW__SECRETS__USE_CACHE"] = "True"
        jobs.append((cmd, env, workdir / f"{name}.log"))
    load = os.getloadavg()[0]
    try:
        run_clients(jobs, timeout=scenario.interval * (scenario.reads + 3) + 180, together=together)
    finally:
        if scenario.rate_limit is not None:
            for sim in sims.values():
                sim.command("limit none")
    result: dict[str, Any] = {
        "scenario": {
            **scenario.__dict__,
            "reads": scenario.reads,
            "sides": [side.__dict__ for side in scenario.sides],
        },
        "load_1min": [load, os.getloadavg()[0]],
        "together": together,
    }
    for name, sim in sims.items():
        after = sim.command("requests")
        client = json.loads((workdir / f"{name}.json").read_text())
        opened = after["connections_opened"] - before[name]["connections_opened"]
        result[name] = figures(scenario.n, client, after, opened)
        result[name]["sim_cpu_s"] = after["cpu_s"] - before[name]["cpu_s"]
    return result


# ------------------------------------------------------------------------------------------------------- main

DEFAULT_KEYS = ["1000", "5000", "a", "b", "d", "e", "f", "g"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = [s.key for s in SCENARIOS]
    parser.add_argument("--only", action="append", choices=keys, help="run only this scenario (repeatable)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N by this (quick runs)")
    parser.add_argument("--profile", choices=keys, help="run this scenario only, the triggers under cProfile")
    parser.add_argument("--together", action="store_true", help="run the two clients of a scenario side by side")
    parser.add_argument("--repeat", type=int, default=1, help="run the chosen scenarios this many times, in turn")
    parser.add_argument("--out", default=str(HERE / "last-run.json"))
    args = parser.parse_args()
    chosen = [args.profile] if args.profile else args.only or DEFAULT_KEYS
    scenarios = [replace(s, n=max(1, round(s.n * args.scale))) for s in SCENARIOS if s.key in chosen]

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wdata-bench-") as tmp:
        workdir = Path(tmp)
        # Airflow, imported by the hook that starts the batches, reads these once.
        os.environ["AIRFLOW_HOME"] = str(workdir)
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        sims: dict[str, Simulator] = {}
        results = []
        try:
            for name in ("left", "right"):
                sims[name] = Simulator(name, workdir)
                os.environ[f"AIRFLOW_CONN_WDATA_{name.upper()}"] = json.dumps(sims[name].connection)
            for run, scenario in [(run, s) for run in range(1, args.repeat + 1) for s in scenarios]:
                sides = " / ".join(side.label for side in scenario.sides)
                print(
                    f"{scenario.title}: {scenario.n:,} waits, every {scenario.interval:g} s, "
                    f"{scenario.connection}, {sides} ...",
                    flush=True,
                )
                profile = HERE / "profile.prof" if args.profile else None
                result = run_scenario(scenario, sims, workdir, profile, args.together)
                result["title"] = scenario.title + ("" if args.scale == 1 else f" (N={scenario.n:,})")
                result["title"] += f", run {run}" if args.repeat > 1 else ""
                results.append(result)
        finally:
            for sim in sims.values():
                sim.close()

    print()
    print(table(results))
    print()
    print("Targets of the scale issue (printed only: the benchmark exits 0 either way):")
    for line in targets(results):
        print("  " + line)
    if args.repeat > 1:
        print(f"\nOver the {args.repeat} runs:")
        for line in repeated(results):
            print("  " + line)
    duration = time.monotonic() - started
    machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}, Linux {platform.release()}"
    print(f"\n{duration:.0f} s; {machine}")
    Path(args.out).write_text(json.dumps({"machine": machine, "duration_s": duration, "results": results}, indent=1))
    if args.profile:
        print_profile(HERE / "profile.prof")
        print("The CPU figures above are inflated by the profiler. Profile: benchmarks/profile.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
