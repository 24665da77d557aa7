"""The report of ``bench_triggers.py``: the table of figures, each target of the scale issue with PASS or MISS,
and a profile's top functions. It only prints: nothing fails on a target.
"""

from __future__ import annotations

import math
import pstats
import statistics
from pathlib import Path
from typing import Any

#: Targets of the scale issue, printed beside the figures with PASS or MISS (nothing fails on them).
LAG_MAX_MS = 200.0
CPU_RATIO = 1.3
RSS_KB_PER_WAIT = 30.0
#: "At most a few 429s per Retry-After window": the most 429s in any one window (the simulator's limit
#: window, 1 s, which is also the shortest Retry-After it sends; see bench_triggers.RATE_WINDOW).
THROTTLED_PER_WINDOW = 5
#: "The first read costs little more than a steady one": at most this many steady reads on top of one.
FIRST_READ_EXTRA = 1.0


def ratio(r: dict[str, Any], *path: str) -> float:
    left, right = r["left"], r["right"]
    for key in path:
        left, right = left[key], right[key]
    return float(left / right)


def _num(value: float, fmt: str) -> str:
    return "n/a" if math.isnan(value) else format(value, fmt)


ROWS: list[tuple[str, Any]] = [
    ("completed waits (failed)", lambda f: f"{f['events']:,} ({f['failed']})"),
    ("whole waits: CPU µs per request", lambda f: f"{f['cpu_us_per_request']:,.0f}"),
    ("  of which in the kernel (system time)", lambda f: f"{f['system_cpu_us_per_request']:,.0f}"),
    ("whole waits: CPU ms per wait", lambda f: f"{f['cpu_ms_per_wait']:.2f}"),
    ("steady polls: CPU µs per request", lambda f: _num(f["steady"]["cpu_us_per_request"], ",.0f")),
    ("first read: extra CPU µs per wait", lambda f: _num(f["first_read_extra_us"], ",.0f")),
    ("requests per completed wait", lambda f: f"{f['requests_per_wait']:.3f}"),
    ("status reads per completed wait", lambda f: f"{f['reads_per_wait']:.3f}"),
    ("token requests", lambda f: f"{f['token_requests']}"),
    ("connections opened", lambda f: f"{f['connections_opened']}"),
    ("429s served (max per 1 s window)", lambda f: f"{f['throttled']['total']} ({f['throttled']['max_per_window']})"),
    ("event-loop lag p99 ms, whole waits", lambda f: f"{f['lag']['p99_ms']:.1f}"),
    ("event-loop lag max ms, whole waits", lambda f: f"{f['lag']['max_ms']:.1f}"),
    ("event-loop lag p99 ms, steady polls", lambda f: _num(f["steady_lag"]["p99_ms"], ".1f")),
    ("event-loop lag max ms, steady polls", lambda f: _num(f["steady_lag"]["max_ms"], ".1f")),
    ("peak RSS KB per wait", lambda f: f"{f['rss_kb_per_wait']:.1f}"),
    ("garbage collection ms (longest)", lambda f: f"{f['gc_ms']:,.0f} ({f['gc_longest_ms']:.0f})"),
    ("  collections: young, middle, full", lambda f: ", ".join(str(count) for count in f["gc_counts"])),
    ("wall s, first start to last event", lambda f: f"{f['wall_s']:.1f}"),
]


def table(results: list[dict[str, Any]]) -> str:
    head = ["figure: left / right"] + [r["title"] for r in results]
    rows = [head]
    rows.append(["sides"] + [" / ".join(side["label"] for side in r["scenario"]["sides"]) for r in results])
    rows.append(
        ["scenario"]
        + [
            f"every {r['scenario']['interval']:g} s, {r['scenario']['connection']}, {r['scenario']['start']}"
            + (f", {r['scenario']['rate_limit']} req/s" if r["scenario"]["rate_limit"] else "")
            for r in results
        ]
    )
    for label, cell in ROWS:
        rows.append([label] + [f"{cell(r['left'])} / {cell(r['right'])}" for r in results])
        if label.startswith("steady polls: CPU"):
            for what, path in (
                ("whole waits", ("cpu_us_per_request",)),
                ("steady polls", ("steady", "cpu_us_per_request")),
            ):
                rows.append([f"  CPU per request left/right, {what}"] + [f"{ratio(r, *path):.2f}x" for r in results])
    rows.append(
        ["load average (1 min) before / after"]
        + [f"{r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f}" for r in results]
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def right_side(r: dict[str, Any]) -> str:
    return str(r["scenario"]["sides"][1]["label"])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(results: list[dict[str, Any]]) -> list[str]:
    """Each target of the scale issue next to its figure, with PASS or MISS."""
    lines = []
    for r in results:
        left, right, key, title = r["left"], r["right"], r["scenario"]["key"], r["title"]
        if key in ("a", "5000"):
            lag = left["lag"]["max_ms"]
            lines.append(
                f"{verdict(lag < LAG_MAX_MS)}  {title}: event-loop lag max {lag:.0f} ms "
                f"(bare loop {right['lag']['max_ms']:.0f} ms); target < {LAG_MAX_MS:.0f} ms"
            )
        if key in ("a", "b", "a-spread", "a-burst"):
            whole, steady = ratio(r, "cpu_us_per_request"), ratio(r, "steady", "cpu_us_per_request")
            target = key in ("a", "b")
            lines.append(
                f"{verdict(whole <= CPU_RATIO) if target else 'info'}  {title}: CPU per request vs {right_side(r)} "
                f"{whole:.2f}x whole waits ({steady:.2f}x steady polls); "
                + (f"target <= {CPU_RATIO}x" if target else "not a target")
            )
        if key == "5000":
            rss = left["rss_kb_per_wait"]
            lines.append(f"{verdict(rss < RSS_KB_PER_WAIT)}  {title}: RSS {rss:.1f} KB per wait; target < 30 KB")
        if key == "d":
            floor = r["scenario"]["reads"]
            with_, without = left["reads_per_wait"], right["reads_per_wait"]
            ok = with_ <= floor + 0.005 and left["requests_per_wait"] <= floor + 0.01
            lines.append(
                f"{verdict(ok)}  {title}: status reads per wait with last_read_at=now {with_:.3f}, without "
                f"{without:.3f} (an immediate re-read: {floor + 1}); requests per wait {left['requests_per_wait']:.3f}"
                f"; target: reads only, {floor} (one fewer than an immediate re-read)"
            )
        if key == "e":
            ours, bare = left["throttled"], right["throttled"]
            lines.append(
                f"{verdict(ours['max_per_window'] <= THROTTLED_PER_WINDOW)}  {title}: 429s per 1 s window "
                f"max {ours['max_per_window']} ({ours['total']} in {ours['windows']} windows), bare loop max "
                f"{bare['max_per_window']} ({bare['total']} in {bare['windows']} windows); "
                f"target <= {THROTTLED_PER_WINDOW} per window"
            )
        if key in ("f", "g", "h"):
            for side, figure in zip(r["scenario"]["sides"], (left, right), strict=True):
                extra, steady = figure["first_read_extra_us"], figure["steady"]["cpu_us_per_request"]
                times = extra / steady if steady else float("nan")
                ok = times <= FIRST_READ_EXTRA
                note = "" if side.get("reuse_seconds") is None else " (not a target)"
                lines.append(
                    f"{verdict(ok) if not note else 'info'}  {title}, {side['label']}: first read costs "
                    f"{_num(extra, ',.0f')} µs more than a steady read of {_num(steady, ',.0f')} µs "
                    f"({_num(times, '.2f')} steady reads){note or f'; target <= {FIRST_READ_EXTRA:g}'}"
                )
    return lines


#: The figures that have a target, by scenario: what ``--repeat`` sums up over its runs.
REPEATED: dict[str, list[tuple[str, Any, Any, str]]] = {
    "a": [
        ("event-loop lag max", lambda r: r["left"]["lag"]["max_ms"], lambda v: v < LAG_MAX_MS, "{:.0f} ms"),
        ("CPU per request vs bare loop", lambda r: ratio(r, "cpu_us_per_request"), lambda v: v <= CPU_RATIO, "{:.2f}x"),
    ],
    "a-spread": [
        ("CPU per request vs spreading bare loop", lambda r: ratio(r, "cpu_us_per_request"), None, "{:.2f}x"),
    ],
    "a-burst": [
        ("CPU per request, provider bursting vs bare loop", lambda r: ratio(r, "cpu_us_per_request"), None, "{:.2f}x"),
    ],
    "b": [
        ("CPU per request vs bare loop", lambda r: ratio(r, "cpu_us_per_request"), lambda v: v <= CPU_RATIO, "{:.2f}x"),
    ],
    "5000": [
        ("event-loop lag max", lambda r: r["left"]["lag"]["max_ms"], lambda v: v < LAG_MAX_MS, "{:.0f} ms"),
        ("RSS per wait", lambda r: r["left"]["rss_kb_per_wait"], lambda v: v < RSS_KB_PER_WAIT, "{:.1f} KB"),
    ],
    "e": [
        (
            "429s in the worst 1 s window",
            lambda r: r["left"]["throttled"]["max_per_window"],
            lambda v: v <= THROTTLED_PER_WINDOW,
            "{:.0f}",
        )
    ],
}


def repeated(results: list[dict[str, Any]]) -> list[str]:
    """For ``--repeat``: each target's figure over the runs, its median and range, and how many runs met it."""
    lines = []
    for key, figures in REPEATED.items():
        runs = [r for r in results if r["scenario"]["key"] == key]
        if len(runs) < 2:
            continue
        title = runs[0]["scenario"]["title"]
        for name, value, ok, fmt in figures:
            values = sorted(value(r) for r in runs)
            met = f"within target in {sum(1 for v in values if ok(v))} of" if ok is not None else "not a target;"
            lines.append(
                f"{title}, {name}: median {fmt.format(statistics.median(values))}, {fmt.format(values[0])} to "
                f"{fmt.format(values[-1])}; {met} {len(values)} runs "
                f"({', '.join(fmt.format(value(r)) for r in runs)} in run order)"
            )
    return lines


def print_profile(path: Path) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
