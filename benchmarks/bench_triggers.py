"""Benchmark of the deferred wait (``BatchRefreshTrigger``) against a bare polling loop.

``make bench`` runs ``.venv/bin/python benchmarks/bench_triggers.py``: about three minutes, all on 127.0.0.1.
It prints the figures and writes them to ``benchmarks/last-run.json`` (not committed). See
``benchmarks/README.md`` for the method and what each figure includes.

Options: ``--only KEY`` (run only these scenarios: 100, 1000, 5000, a, b), ``--scale F`` (multiply every N
by F: quick runs while developing), ``--profile KEY`` (run one scenario with the triggers under cProfile,
print the top functions and write ``benchmarks/profile.prof``; its CPU figures are inflated by the profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
#: The steady window opens this long after the last wait's first read reached the simulator.
SETTLE = 0.5
#: Targets of the scale issue, printed beside the figures (no pass/fail yet).
LAG_MAX_MS = 200.0
CPU_RATIO = 1.3
RSS_KB_PER_WAIT = 30.0


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    n: int
    interval: float  # poll interval, s
    reads: int  # each batch ends on its reads-th status read
    start: str  # "stagger": the waits start evenly over one interval; "once": all at the same moment


SCENARIOS = [
    Scenario("100", "N=100", 100, 5.0, 3, "stagger"),
    Scenario("1000", "N=1,000", 1000, 5.0, 3, "stagger"),
    Scenario("5000", "(c) N=5,000", 5000, 20.0, 2, "stagger"),
    Scenario("a", "(a) 1,000 due at once", 1000, 5.0, 4, "once"),
    Scenario("b", "(b) 500 deferred at once", 500, 2.0, 8, "once"),
]


# ----------------------------------------------------------------------------------------------- processes


class Simulator:
    """``_sim_server.py``: one ``WdataSimulator`` over HTTPS in its own process."""

    def __init__(self, name: str, workdir: Path) -> None:
        reads = sorted({s.reads for s in SCENARIOS})
        self.proc = subprocess.Popen(
            [
                PYTHON,
                str(HERE / "_sim_server.py"),
                "--ca",
                str(workdir / f"ca-{name}.pem"),
                "--reads",
                *map(str, reads),
            ],
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


def run_clients(jobs: list[tuple[list[str], dict[str, str], Path]], timeout: float) -> None:
    """Run the client processes side by side, over the same wall-clock window (so both see the same noise)."""
    procs = []
    for cmd, env, log in jobs:
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


def figures(n: int, client: dict[str, Any], sim: dict[str, Any], connections_opened: int) -> dict[str, Any]:
    """One client's figures. ``sim`` holds the requests the simulator recorded for this client alone."""
    requests = sim["requests"]
    idle = client["idle_cpu_per_s"]
    begin, end = client["begin"], client["end"]
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
    if opening is not None and opening[0] < end:
        steady_requests = sum(1 for at, _, _ in requests if opening[0] <= at <= end)
        steady_cpu = client["cpu_end"] - opening[2] - idle * (end - opening[0])
        steady = {"requests": steady_requests, "cpu_us_per_request": steady_cpu / max(steady_requests, 1) * 1e6}

    def lag(start: float) -> dict[str, float]:
        lags = [row[1] * 1000 for row in timeline if start <= row[0] <= end]
        return {"p99_ms": pct(lags, 0.99), "max_ms": max(lags, default=float("nan"))}

    return {
        "events": len(client["events"]),
        "failed": sum(1 for _, status in client["events"] if status != "success"),
        "wall_s": end - begin,
        "requests": len(requests),
        "requests_per_wait": len(requests) / max(len(client["events"]), 1),
        "token_requests": sum(1 for _, kind, _ in requests if kind == "token"),
        "connections_opened": connections_opened,
        "cpu_us_per_request": whole_cpu / max(len(requests), 1) * 1e6,
        "cpu_ms_per_wait": whole_cpu / n * 1e3,
        "steady": steady,
        "lag": lag(begin),
        "steady_lag": lag(opening[0] if opening else end),
        "rss_kb_per_wait": (client["rss_peak_kb"] - client["rss0_kb"]) / n,
    }


def run_scenario(
    scenario: Scenario, sims: dict[str, Simulator], workdir: Path, profile: Path | None = None
) -> dict[str, Any]:
    ids = asyncio.run(start_batches([f"wdata_{name}" for name in sims], f"c-p{scenario.reads}", scenario.n))
    before = {}
    for name, sim in sims.items():
        before[name] = sim.command("clear")
    jobs = []
    for (name, sim), batch_ids in zip(sims.items(), ids, strict=True):
        (workdir / f"ids-{name}.txt").write_text("\n".join(batch_ids) + "\n")
        cmd = [PYTHON, str(HERE / "_client.py"), "--mode", "trigger" if name == "ours" else "bare"]
        cmd += ["--ids", str(workdir / f"ids-{name}.txt"), "--out", str(workdir / f"{name}.json")]
        cmd += ["--interval", str(scenario.interval), "--start", scenario.start]
        if profile is not None and name == "ours":
            cmd += ["--profile", str(profile)]
        env = dict(os.environ, AIRFLOW_CONN_WDATA_DEFAULT=json.dumps(sim.connection))
        jobs.append((cmd, env, workdir / f"{name}.log"))
    load = os.getloadavg()[0]
    run_clients(jobs, timeout=scenario.interval * (scenario.reads + 2) + 180)
    result: dict[str, Any] = {"scenario": scenario.__dict__, "load_1min": [load, os.getloadavg()[0]]}
    for name, sim in sims.items():
        after = sim.command("requests")
        client = json.loads((workdir / f"{name}.json").read_text())
        opened = after["connections_opened"] - before[name]["connections_opened"]
        result[name] = figures(scenario.n, client, after, opened)
        result[name]["sim_cpu_s"] = after["cpu_s"] - before[name]["cpu_s"]
    return result


# ---------------------------------------------------------------------------------------------------- report


def ratio(r: dict[str, Any], *path: str) -> float:
    ours, bare = r["ours"], r["bare"]
    for key in path:
        ours, bare = ours[key], bare[key]
    return float(ours / bare)


ROWS: list[tuple[str, Any]] = [
    ("completed waits (failed)", lambda f: f"{f['events']:,} ({f['failed']})"),
    ("whole waits: CPU µs per request", lambda f: f"{f['cpu_us_per_request']:,.0f}"),
    ("whole waits: CPU ms per wait", lambda f: f"{f['cpu_ms_per_wait']:.2f}"),
    ("steady polls: CPU µs per request", lambda f: f"{f['steady']['cpu_us_per_request']:,.0f}"),
    ("requests per completed wait", lambda f: f"{f['requests_per_wait']:.3f}"),
    ("token requests", lambda f: f"{f['token_requests']}"),
    ("connections opened", lambda f: f"{f['connections_opened']}"),
    ("event-loop lag p99 ms, whole waits", lambda f: f"{f['lag']['p99_ms']:.1f}"),
    ("event-loop lag max ms, whole waits", lambda f: f"{f['lag']['max_ms']:.1f}"),
    ("event-loop lag p99 ms, steady polls", lambda f: f"{f['steady_lag']['p99_ms']:.1f}"),
    ("event-loop lag max ms, steady polls", lambda f: f"{f['steady_lag']['max_ms']:.1f}"),
    ("peak RSS KB per wait", lambda f: f"{f['rss_kb_per_wait']:.1f}"),
    ("wall s, first start to last event", lambda f: f"{f['wall_s']:.1f}"),
]


def table(results: list[dict[str, Any]]) -> str:
    head = ["figure: provider / bare loop"] + [r["title"] for r in results]
    rows = [head]
    rows.append(
        ["scenario"]
        + [
            f"every {r['scenario']['interval']:g} s, {r['scenario']['reads']} reads, {r['scenario']['start']}"
            for r in results
        ]
    )
    for label, cell in ROWS:
        rows.append([label] + [f"{cell(r['ours'])} / {cell(r['bare'])}" for r in results])
        if label.startswith("steady polls: CPU"):
            for what, path in (
                ("whole waits", ("cpu_us_per_request",)),
                ("steady polls", ("steady", "cpu_us_per_request")),
            ):
                rows.append([f"  CPU per request vs bare, {what}"] + [f"{ratio(r, *path):.2f}x" for r in results])
    rows.append(
        ["load average (1 min) before / after"]
        + [f"{r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f}" for r in results]
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The figures the scale issue sets targets on (scenarios a, b and c), each with its target."""
    lines = []
    for r in results:
        ours, key = r["ours"], r["scenario"]["key"]
        checks = []
        if key in ("a", "5000"):
            checks.append(f"lag max {ours['lag']['max_ms']:.0f} ms (target < {LAG_MAX_MS:.0f} ms)")
        if key in ("a", "b"):
            checks.append(
                f"CPU per request vs bare {ratio(r, 'cpu_us_per_request'):.2f}x whole waits, "
                f"{ratio(r, 'steady', 'cpu_us_per_request'):.2f}x steady polls (target <= {CPU_RATIO}x)"
            )
        if key == "5000":
            checks.append(f"RSS {ours['rss_kb_per_wait']:.1f} KB per wait (target < {RSS_KB_PER_WAIT:.0f} KB)")
        if checks:
            lines.append(f"{r['title']}: {'; '.join(checks)}")
    return lines


def print_profile(path: Path) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


# ------------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = [s.key for s in SCENARIOS]
    parser.add_argument("--only", action="append", choices=keys, help="run only this scenario (repeatable)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N by this (quick runs)")
    parser.add_argument("--profile", choices=keys, help="run this scenario only, the triggers under cProfile")
    parser.add_argument("--out", default=str(HERE / "last-run.json"))
    args = parser.parse_args()
    chosen = [args.profile] if args.profile else args.only or keys
    scenarios = [
        Scenario(s.key, s.title, max(1, round(s.n * args.scale)), s.interval, s.reads, s.start)
        for s in SCENARIOS
        if s.key in chosen
    ]

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wdata-bench-") as tmp:
        workdir = Path(tmp)
        # Airflow, imported by the hook that starts the batches, reads these once.
        os.environ["AIRFLOW_HOME"] = str(workdir)
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        sims: dict[str, Simulator] = {}
        results = []
        try:
            for name in ("ours", "bare"):
                sims[name] = Simulator(name, workdir)
                os.environ[f"AIRFLOW_CONN_WDATA_{name.upper()}"] = json.dumps(sims[name].connection)
            for scenario in scenarios:
                print(
                    f"{scenario.title}: {scenario.n:,} waits, every {scenario.interval:g} s, "
                    f"{scenario.reads} reads ...",
                    flush=True,
                )
                profile = HERE / "profile.prof" if args.profile else None
                result = run_scenario(scenario, sims, workdir, profile)
                result["title"] = scenario.title + ("" if args.scale == 1 else f" (N={scenario.n:,})")
                results.append(result)
        finally:
            for sim in sims.values():
                sim.close()

    print()
    print(table(results))
    print()
    print("Targets of the scale issue (printed, not enforced):")
    for line in targets(results):
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
