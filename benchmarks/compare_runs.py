"""Spread of the headline figures over several runs' JSON files (not part of ``make bench``).

    .venv/bin/python benchmarks/compare_runs.py base-1.json base-2.json ... -- patch-1.json patch-2.json ...

Groups are separated by ``--``; prints, per scenario and figure, min / median / max of each group.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

FIGURES = [
    ("cpu µs/poll", lambda s: s["cpu_us_per_poll"]),
    ("ref cpu µs/poll", lambda s: s["ref_cpu_us_per_poll"]),
    ("cpu ratio", lambda s: s["cpu_ratio"]),
    ("lag p99 ms", lambda s: s["lag"]["p99_ms"]),
    ("ref lag p99 ms", lambda s: s["ref_lag"]["p99_ms"]),
    ("lag max ms", lambda s: s["lag"]["max_ms"]),
    ("GC longest pause ms", lambda s: s["gc"]["max_ms"]),
    ("cyclic garbage/poll", lambda s: s["gc"]["collected"] / max(s["polls_steady"], 1)),
    ("RSS KB/trigger", lambda s: s["rss_kb_per_trigger"]),
    ("connections", lambda s: s["connections_opened"]),
    ("tokens", lambda s: s["token_requests"]),
    ("event delay p99 ms", lambda s: s["event_delay_ms"]["p99"]),
    ("load 1 min", lambda s: float(s["load_after"].split()[0])),
]


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}"


def main(argv: list[str]) -> int:
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--":
            groups.append([])
        else:
            groups[-1].append(arg)
    reports: list[list[dict[str, Any]]] = [[json.load(open(path)) for path in group] for group in groups]
    ns = [s["n"] for s in reports[0][0]["scenarios"]]
    print(f"groups: {[len(g) for g in reports]} runs; columns per group: min median max")
    for n in ns:
        print(f"\nN={n}")
        for label, get in FIGURES:
            cells = []
            for group in reports:
                values = []
                for report in group:
                    for s in report["scenarios"]:
                        if s["n"] == n:
                            try:
                                values.append(float(get(s)))
                            except (KeyError, TypeError):
                                pass
                cells.append(fmt(values))
            print(f"  {label:<22}" + " | ".join(cells))

    def poke_ratio(r: dict[str, Any]) -> float:
        median = r["poke"].get("median_block_ratio", {}).get("poke")
        return median or r["poke"]["per_call"]["poke"]["cpu_us"] / r["poke"]["per_call"]["bare"]["cpu_us"]

    for key, get in (("poke ratio", poke_ratio),):
        cells = []
        for group in reports:
            values = [get(r) for r in group if r.get("poke")]
            cells.append(fmt(values))
        print(f"\n  {key:<22}" + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
