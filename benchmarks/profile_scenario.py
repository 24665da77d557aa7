"""Profile one trigger (or reference, or poke) scenario: the same setup as ``bench_triggers.py``, one client.

Not part of ``make bench``. Needs pyinstrument in ``.venv-bench`` (same Python as ``.venv``)::

    python3.11 -m venv .venv-bench && .venv-bench/bin/pip install pyinstrument py-spy
    .venv/bin/python benchmarks/profile_scenario.py --n 1000 --interval 5 --polls 3 --profiler pyinstrument
    .venv/bin/python benchmarks/profile_scenario.py --n 1000 --profiler cprofile --patch my_prototype

Writes the profile(s) under ``benchmarks/profiles/`` and prints the scenario's headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_triggers import HERE, PYTHON, ROOT, SimProcess, client_cmd, client_env, run_clients, start_batches

BENCH_SITE = ROOT / ".venv-bench" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="trigger", choices=("trigger", "ref", "poke"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--polls", type=int, default=3)
    parser.add_argument("--profiler", default="pyinstrument", choices=("pyinstrument", "cprofile", "py-spy", "none"))
    parser.add_argument("--patch", default=None)
    parser.add_argument("--tag", default="")
    parser.add_argument("--interval-us", type=int, default=1000, help="pyinstrument sampling interval")
    args = parser.parse_args()

    out_dir = HERE / "profiles"
    out_dir.mkdir(exist_ok=True)
    name = f"{args.mode}-{args.n}{'-' + args.patch if args.patch else ''}{args.tag}"
    workdir = Path(tempfile.mkdtemp(prefix="wdata-prof-"))
    (workdir / "airflow_home").mkdir()
    sim = SimProcess("ours", workdir)
    try:
        connection = "c-stuck" if args.mode == "poke" else f"c-p{args.polls}"
        ids = start_batches(sim, connection, max(args.n, 1), workdir / "ids.txt")
        sim.command("reset")
        out = workdir / "result.json"
        extra = ["--n", str(args.n), "--interval", str(args.interval), "--polls", str(args.polls)]
        if args.patch:
            extra += ["--patch", args.patch]
        cmd = client_cmd(args.mode, sim, ids, out, extra)
        env = client_env(workdir, sim)
        if args.profiler == "pyinstrument":
            env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{BENCH_SITE}"
            prof = out_dir / f"{name}.pyinstrument.txt"
            cmd = [
                PYTHON, "-m", "pyinstrument", "-i", str(args.interval_us / 1e6), "-r", "text", "--show-all",
                "-o", str(prof), *cmd[1:],
            ]  # fmt: skip
        elif args.profiler == "py-spy":
            # Samples only threads that are running (not waiting in epoll): where the CPU goes.
            prof = out_dir / f"{name}.py-spy.txt"
            pyspy = str(ROOT / ".venv-bench" / "bin" / "py-spy")
            cmd = [pyspy, "record", "-r", "500", "-f", "raw", "-o", str(prof), "--", *cmd]
        elif args.profiler == "cprofile":
            prof = out_dir / f"{name}.cprofile"
            cmd = [PYTHON, "-m", "cProfile", "-o", str(prof), *cmd[1:]]
        run_clients(
            [(cmd, env, workdir / "client.log")], timeout=args.interval * (args.polls + 2) + 300, together=False
        )
        result = json.loads(out.read_text())
        stats = sim.command("stats")
        result.pop("events", None)
        print(
            json.dumps(
                {k: v for k, v in result.items() if k != "per_call"} if args.mode != "poke" else result, indent=1
            )
        )
        print("sim:", json.dumps({k: v for k, v in stats.items() if k != "completed_at"}))
        if args.profiler != "none":
            print("profile:", prof)
    finally:
        sim.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
