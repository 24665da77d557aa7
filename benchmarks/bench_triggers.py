"""Performance benchmark of the deferred wait (``BatchRefreshTrigger``) and of poke mode.

``make bench`` runs ``.venv/bin/python benchmarks/bench_triggers.py``: about two minutes, everything on
127.0.0.1, and it writes ``benchmarks/results.md`` (and ``results.json`` with every raw figure).

How it measures (see ``benchmarks/README.md``):

- Two Wdata simulators, each in its own process, over HTTPS with a throwaway trustme CA that the clients
  trust through the connection's ``verify`` extra (the CA bundle path): one serves the provider, the
  other the reference, so every counter (requests, tokens, connections, server-side time) is exact.
- Per scenario (N triggers polling every I seconds, each batch ending on its P-th status read), two
  fresh client processes run side by side over the same wall-clock window, so both see the same machine
  noise: N ``BatchRefreshTrigger``s in one event loop, and the reference, a bare loop with one shared
  ``aiohttp.ClientSession`` doing the same GETs at the same rate and parsing the JSON.
- Poke mode, afterwards: ``BatchRefreshSensor.poke()`` and the trigger's sync ``read()`` against one bare
  ``requests.Session`` GET.

Options: ``--only 1000`` (one scenario), ``--sequential`` (reference after, not beside, the triggers),
``--patch MODULE`` (import ``benchmarks/MODULE.py`` in the provider's processes first: prototype fixes),
``--out PATH`` (markdown; JSON beside it), ``--no-poke``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable

#: (N triggers, poll interval s, polls until each batch ends)
SCENARIOS = [(100, 5.0, 3), (1000, 5.0, 3), (5000, 25.0, 2)]

#: The token-renewal check: N triggers polling every `interval` s, `polls` polls, tokens living `lifetime` s.
TOKEN_CHECK = {"n": 500, "interval": 2.0, "polls": 6, "lifetime": 3.0}

TARGETS = {
    "cpu_ratio": 1.3,
    "requests_per_poll": 1.0,
    "pool_size": 100,  # transport.ASYNC_POOL_SIZE
    "lag_p99_ms_at_1000": 50.0,
    "rss_kb_per_trigger_at_5000": 30.0,
    "poke_ratio": 1.2,
}


# ------------------------------------------------------------------------------------------- simulators

#: ``--pin``: the clients on one CPU, the simulators on the others (set by main()).
CLIENT_CPUS: set[int] | None = None
SIM_CPUS: set[int] | None = None


def _pinned(cpus: set[int] | None) -> Any:
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class SimProcess:
    """A simulator in its own process (``_sim_server.py``), driven over its stdin/stdout."""

    def __init__(self, name: str, workdir: Path, token_lifetime: float = 599) -> None:
        self.name = name
        self.ca = workdir / f"ca-{name}.pem"
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "_sim_server.py"), "--ca", str(self.ca), "--token-lifetime", str(token_lifetime)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(workdir / f"sim-{name}.log", "w"),
            text=True,
            cwd=ROOT,
            preexec_fn=_pinned(SIM_CPUS),
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"simulator {name} did not start; see {workdir}/sim-{name}.log")
        self.info = json.loads(line)

    def command(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=15)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def airflow_conn(self) -> str:
        return json.dumps(
            {
                "conn_type": "wdata",
                "login": self.info["client_id"],
                "password": self.info["client_secret"],
                "host": self.info["base_url"],
                "extra": {"token_url": self.info["token_url"], "verify": str(self.ca)},
            }
        )


async def _start_batches(sim: SimProcess, connection_id: str, n: int) -> list[str]:
    """Start n one-connection batches on a simulator (through HTTP, as a client would)."""
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(sim.ca))
    info = sim.info
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        form = {
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        }
        async with session.post(info["token_url"], data=form, ssl=ctx) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        url = info["base_url"] + "/api/v1/connections/batch/refresh"
        semaphore = asyncio.Semaphore(32)

        async def one() -> str:
            async with semaphore:
                async with session.post(url, json=[{"connectionId": connection_id}], headers=headers, ssl=ctx) as resp:
                    resp.raise_for_status()
                    return str((await resp.json())["body"]["batchRefreshId"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


def start_batches(sim: SimProcess, connection_id: str, n: int, path: Path) -> Path:
    ids = asyncio.run(_start_batches(sim, connection_id, n))
    path.write_text("\n".join(ids) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ clients


def client_cmd(mode: str, sim: SimProcess, ids: Path, out: Path, extra: list[str]) -> list[str]:
    return [
        PYTHON,
        str(HERE / "_scenario.py"),
        "--mode",
        mode,
        "--ids",
        str(ids),
        "--out",
        str(out),
        "--ca",
        str(sim.ca),
        "--base-url",
        sim.info["base_url"],
        "--token-url",
        sim.info["token_url"],
        "--client-id",
        sim.info["client_id"],
        "--secret",
        sim.info["client_secret"],
        *extra,
    ]


def client_env(workdir: Path, sim: SimProcess) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow_home"),
            "AIRFLOW_CONN_WDATA_DEFAULT": sim.airflow_conn(),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def run_clients(jobs: list[tuple[list[str], dict[str, str], Path]], timeout: float, together: bool) -> None:
    """Run client processes (side by side or one after the other); their stdout/stderr go to log files."""

    def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = open(log, "w")
        return subprocess.Popen(
            cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_pinned(CLIENT_CPUS)
        )

    def finish(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"client timed out; see {log}") from None
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"client failed ({proc.returncode}); {log}:\n{tail}")

    deadline = time.monotonic() + timeout
    if together:
        procs = [(spawn(cmd, env, log), log) for cmd, env, log in jobs]
        try:
            for proc, log in procs:
                finish(proc, log, deadline)
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    else:
        for cmd, env, log in jobs:
            finish(spawn(cmd, env, log), log, deadline)


# ------------------------------------------------------------------------------------------------ figures


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def event_delays_ms(client: dict[str, Any], completed_at: dict[str, float]) -> dict[str, Any]:
    delays = [
        (at - completed_at[batch_id]) * 1000
        for batch_id, (at, _status) in client["events"].items()
        if batch_id in completed_at
    ]
    return {
        "n": len(delays),
        "p50": pct(delays, 0.5),
        "p99": pct(delays, 0.99),
        "max": max(delays, default=None),
    }


def rss_increase_kb(client: dict[str, Any]) -> float:
    peak = max(client["rss_max_sampled_kb"], client["rss_hwm_kb"] or 0, client["rss_all_alive_kb"])
    return float(peak - client["rss_base_kb"])


def _first_poll_extra(client: dict[str, Any]) -> float:
    """CPU µs a wait costs on its first poll beyond a steady poll (hook, connection, token, TLS handshakes)."""
    steady = client["cpu_per_poll_steady_us"]
    return (client["first_phase_cpu_net_s"] * 1e6 - steady * client["first_phase_polls"]) / client["n"]


def summarize(
    n: int, trig: dict[str, Any], ref: dict[str, Any], sim_t: dict[str, Any], sim_r: dict[str, Any]
) -> dict[str, Any]:
    polls = trig["polls_all"]
    return {
        "n": n,
        "interval": trig["interval"],
        "polls_to_finish": trig["polls_to_finish"],
        "events": len(trig["events"]),
        "ref_events": len(ref["events"]),
        "errors": trig["errors"] + ref["errors"],
        "cpu_us_per_poll": trig["cpu_per_poll_steady_us"],
        "ref_cpu_us_per_poll": ref["cpu_per_poll_steady_us"],
        "cpu_ratio": trig["cpu_per_poll_steady_us"] / ref["cpu_per_poll_steady_us"],
        "user_us_per_poll": trig.get("user_per_poll_steady_us"),
        "sys_us_per_poll": trig.get("sys_per_poll_steady_us"),
        "ref_user_us_per_poll": ref.get("user_per_poll_steady_us"),
        "ref_sys_us_per_poll": ref.get("sys_per_poll_steady_us"),
        "cpu_us_per_poll_all": trig["cpu_per_poll_all_us"],
        "ref_cpu_us_per_poll_all": ref["cpu_per_poll_all_us"],
        "cpu_ratio_all": trig["cpu_per_poll_all_us"] / ref["cpu_per_poll_all_us"],
        "polls": polls,
        "polls_steady": trig["polls_steady"],
        "requests_per_poll": sim_t["kinds"].get("batch_get", 0) / max(polls, 1),
        "all_requests_per_poll": sim_t["requests"] / max(polls, 1),
        "ref_requests_per_poll": sim_r["kinds"].get("batch_get", 0) / max(ref["polls_all"], 1),
        "connections_opened": sim_t["connections_opened"],
        "ref_connections_opened": sim_r["connections_opened"],
        "token_requests": sim_t["kinds"].get("token", 0),
        "ref_token_requests": sim_r["kinds"].get("token", 0),
        "lag": trig["lag_steady"],
        "ref_lag": ref["lag_steady"],
        "lag_all": trig["lag_all"],
        "ref_lag_all": ref["lag_all"],
        "rss_kb_per_trigger": rss_increase_kb(trig) / n,
        "ref_rss_kb_per_wait": rss_increase_kb(ref) / n,
        "rss_increase_kb": rss_increase_kb(trig),
        "ref_rss_increase_kb": rss_increase_kb(ref),
        "event_delay_ms": event_delays_ms(trig, sim_t["completed_at"]),
        "ref_event_delay_ms": event_delays_ms(ref, sim_r["completed_at"]),
        "ref_latency_ms": ref["latency_ms"],
        "sim": {k: v for k, v in sim_t.items() if k != "completed_at"},
        "ref_sim": {k: v for k, v in sim_r.items() if k != "completed_at"},
        "gc": trig["gc_steady"],
        "ref_gc": ref["gc_steady"],
        "gc_all": trig["gc_all"],
        "ref_gc_all": ref["gc_all"],
        "first_poll_extra_us": _first_poll_extra(trig),
        "ref_first_poll_extra_us": _first_poll_extra(ref),
        "sim_cpu_util": sim_t["cpu_s"] / max(sim_t["wall_s"], 1e-9),
        "ref_sim_cpu_util": sim_r["cpu_s"] / max(sim_r["wall_s"], 1e-9),
    }


# ---------------------------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    import aiohttp
    import requests

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        airflow_version = version("apache-airflow")
    except Exception:
        airflow_version = "?"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "requests": requests.__version__,
        "airflow": airflow_version,
        "openssl": ssl.OPENSSL_VERSION,
        "kernel": platform.release(),
    }


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "airflow_provider_wdata"], cwd=ROOT, capture_output=True, text=True
        ).stdout.split("\n")
        changed = sorted(line[3:] for line in dirty if line.strip())
        return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------------------- report


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _ok(flag: bool) -> str:
    return "met" if flag else "**MISSED**"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Trigger and poke benchmark",
        "",
        f"Measured {report['date']} by `make bench` (`benchmarks/bench_triggers.py`"
        + (f", patch `{report['patch']}`" if report["patch"] else "")
        + f"), in {report['duration_s']:.0f} s, on provider commit {report['git']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"requests {m['requests']}, Airflow {m['airflow']}, {m['openssl']}, Linux {m['kernel']}. "
        f"Load average at start {report['load_start']}, at end {report['load_end']} "
        "(other work on this machine perturbs timings: see the noise note in benchmarks/README.md).",
        "",
        "Each scenario: N triggers in one event loop, started evenly over one poll interval, each on its own "
        "batch that ends on its P-th status read, against a simulator in its own process over HTTPS (trusted "
        'through extra `verify` = CA bundle path). The reference ("ref") is a bare loop with one shared '
        "`aiohttp.ClientSession` doing the same GETs at the same rate and parsing the JSON, run "
        + ("after" if report["sequential"] else "beside")
        + " the triggers against its own identical simulator. CPU is the client process's CPU time "
        "per poll in the steady window (after every trigger's first poll), minus its idle baseline; the "
        "simulators run in other processes and do not count.",
        "",
    ]
    header = (
        "| figure | "
        + " | ".join(f"N={s['n']:,} every {s['interval']:g} s (P={s['polls_to_finish']})" for s in report["scenarios"])
        + " | target |"
    )
    lines += [header, "|---|" + "---|" * len(report["scenarios"]) + "---|"]

    def row(name: str, cells: list[str], target: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    S = report["scenarios"]
    row("polls done (events / N)", [f"{s['polls']:,} ({s['events']:,} / {s['n']:,})" for s in S])
    row(
        "client CPU per poll, steady (µs): ours / ref = ratio",
        [f"{_f(s['cpu_us_per_poll'])} / {_f(s['ref_cpu_us_per_poll'])} = **{s['cpu_ratio']:.2f}x**" for s in S],
        f"≤ {TARGETS['cpu_ratio']}x",
    )
    row(
        "client CPU per poll, whole run incl. first polls (µs): ours / ref = ratio",
        [f"{_f(s['cpu_us_per_poll_all'])} / {_f(s['ref_cpu_us_per_poll_all'])} = {s['cpu_ratio_all']:.2f}x" for s in S],
    )
    row(
        "HTTP requests per poll (status GETs; all requests incl. token)",
        [
            f"**{s['requests_per_poll']:.3f}** ({s['all_requests_per_poll']:.3f}); ref {s['ref_requests_per_poll']:.3f}"
            for s in S
        ],
        "1.0",
    )
    row(
        "TCP/TLS connections opened: ours (ref)",
        [f"**{s['connections_opened']}** ({s['ref_connections_opened']})" for s in S],
        f"≤ {TARGETS['pool_size']} (pool size)",
    )
    row(
        "token requests: ours (ref)",
        [f"**{s['token_requests']}** ({s['ref_token_requests']})" for s in S],
        "1 per credential per token lifetime",
    )
    row(
        "event-loop lag p50 / p99 / max (ms), steady: ours",
        [f"{_f(s['lag']['p50_ms'], 1)} / **{_f(s['lag']['p99_ms'], 1)}** / {_f(s['lag']['max_ms'], 1)}" for s in S],
        f"p99 < {TARGETS['lag_p99_ms_at_1000']:g} ms at N=1,000",
    )
    row(
        "event-loop lag p50 / p99 / max (ms), steady: ref",
        [
            f"{_f(s['ref_lag']['p50_ms'], 1)} / {_f(s['ref_lag']['p99_ms'], 1)} / {_f(s['ref_lag']['max_ms'], 1)}"
            for s in S
        ],
    )
    row(
        "event-loop lag p99 / max (ms), whole run incl. start-up: ours (ref)",
        [
            f"{_f(s['lag_all']['p99_ms'], 1)} / {_f(s['lag_all']['max_ms'], 1)} "
            f"({_f(s['ref_lag_all']['p99_ms'], 1)} / {_f(s['ref_lag_all']['max_ms'], 1)})"
            for s in S
        ],
    )
    row(
        "GC in the steady window: collections gen0/1/2, cyclic garbage objects per poll, longest pause (ms): ours",
        [
            f"{'/'.join(map(str, s['gc']['collections']))}, {s['gc']['collected'] / max(s['polls_steady'], 1):.1f}, "
            f"{_f(s['gc']['max_ms'], 1)}"
            for s in S
        ],
    )
    row(
        "same, ref",
        [
            f"{'/'.join(map(str, s['ref_gc']['collections']))}, {s['ref_gc']['collected'] / max(s['polls_steady'], 1):.1f}, "
            f"{_f(s['ref_gc']['max_ms'], 1)}"
            for s in S
        ],
    )
    row(
        "first poll's extra CPU per wait (µs; connection, hook, token, TLS handshakes): ours (ref)",
        [f"{_f(s['first_poll_extra_us'])} ({_f(s['ref_first_poll_extra_us'])})" for s in S],
    )
    row(
        "peak RSS increase per trigger (KB): ours (ref per bare wait)",
        [f"**{s['rss_kb_per_trigger']:.1f}** ({s['ref_rss_kb_per_wait']:.1f})" for s in S],
        f"< {TARGETS['rss_kb_per_trigger_at_5000']:g} KB at N=5,000",
    )
    row(
        "batch completed → event, p50 / p99 / max (ms): ours",
        [
            f"{_f(s['event_delay_ms']['p50'], 1)} / {_f(s['event_delay_ms']['p99'], 1)} / {_f(s['event_delay_ms']['max'], 1)}"
            for s in S
        ],
    )
    row(
        "batch completed → event, p50 / p99 / max (ms): ref",
        [
            f"{_f(s['ref_event_delay_ms']['p50'], 1)} / {_f(s['ref_event_delay_ms']['p99'], 1)} / {_f(s['ref_event_delay_ms']['max'], 1)}"
            for s in S
        ],
    )
    row("load average (1 min) after the scenario", [s["load_after"].split()[0] for s in S])
    row(
        "simulator check: CPU use, handling p50 / p99 (ms), own loop lag p99 (ms): ours' sim",
        [
            f"{s['sim_cpu_util'] * 100:.0f}%, {_f(s['sim']['handling_ms']['p50'], 2)} / {_f(s['sim']['handling_ms']['p99'], 2)}, "
            f"{_f(s['sim']['loop_lag_ms']['p99'], 1)}"
            for s in S
        ],
        "flat, far from saturated",
    )
    row(
        "simulator check: same, ref's sim; ref GET latency p50 / p99 (ms)",
        [
            f"{s['ref_sim_cpu_util'] * 100:.0f}%, {_f(s['ref_sim']['handling_ms']['p50'], 2)} / {_f(s['ref_sim']['handling_ms']['p99'], 2)}, "
            f"{_f(s['ref_sim']['loop_lag_ms']['p99'], 1)}; {_f(s['ref_latency_ms']['p50'], 1)} / {_f(s['ref_latency_ms']['p99'], 1)}"
            for s in S
        ],
    )
    lines.append("")

    by_n = {s["n"]: s for s in S}
    verdicts = []
    worst_cpu = max(s["cpu_ratio"] for s in S)
    verdicts.append(
        f"- CPU per poll ≤ {TARGETS['cpu_ratio']}x the bare loop: {_ok(worst_cpu <= TARGETS['cpu_ratio'])} "
        f"(worst {worst_cpu:.2f}x)"
    )
    worst_rpp = max(s["requests_per_poll"] for s in S)
    verdicts.append(f"- requests per poll 1.0: {_ok(abs(worst_rpp - 1.0) < 0.005)} (worst {worst_rpp:.3f})")
    worst_conn = max(s["connections_opened"] for s in S)
    verdicts.append(
        f"- connections opened ≤ pool size {TARGETS['pool_size']}: {_ok(worst_conn <= TARGETS['pool_size'])} (most {worst_conn})"
    )
    worst_tok = max(s["token_requests"] for s in S)
    verdicts.append(
        f"- 1 token request per credential per token lifetime: {_ok(worst_tok == 1)} (most {worst_tok} per run)"
    )
    if 1000 in by_n:
        lag = by_n[1000]["lag"]["p99_ms"]
        verdicts.append(
            f"- event-loop lag p99 < {TARGETS['lag_p99_ms_at_1000']:g} ms at N=1,000: {_ok(lag is not None and lag < TARGETS['lag_p99_ms_at_1000'])} ({_f(lag, 1)} ms)"
        )
    if 5000 in by_n:
        rss = by_n[5000]["rss_kb_per_trigger"]
        limit = TARGETS["rss_kb_per_trigger_at_5000"]
        text = f"{rss:.1f} KB per trigger"
        worst = rss
        if 1000 in by_n:
            marginal = (by_n[5000]["rss_increase_kb"] - by_n[1000]["rss_increase_kb"]) / 4000
            ref_marginal = (by_n[5000]["ref_rss_increase_kb"] - by_n[1000]["ref_rss_increase_kb"]) / 4000
            text += f"; {marginal:.1f} KB per additional trigger from N=1,000 to 5,000 (ref {ref_marginal:.1f} KB)"
            worst = max(rss, marginal)
            lines.append(
                f"Marginal RSS per additional trigger between N=1,000 and N=5,000: {marginal:.1f} KB "
                f"(ref: {ref_marginal:.1f} KB per bare wait)."
            )
            lines.append("")
        verdicts.append(f"- RSS < {limit:g} KB per additional trigger at N=5,000: {_ok(worst < limit)} ({text})")
    poke = report.get("poke")
    if poke:
        pc = poke["per_call"]
        lines += [
            "Poke mode (one status read, same simulator over HTTPS, client CPU time and wall time per call, "
            f"{pc['bare']['n']} calls each, interleaved in blocks of 25):",
            "",
            "| call | CPU µs | wall µs | CPU ratio to bare GET (median of per-round ratios) | wall ratio |",
            "|---|---|---|---|---|",
        ]
        for name, label in (
            ("poke", "`BatchRefreshSensor.poke()`"),
            ("read", "`BatchRefreshTrigger.read()` via `WdataHook`"),
            ("bare", "bare `requests.Session` GET + `.json()`"),
        ):
            c = pc[name]
            median = poke.get("median_block_ratio", {}).get(name)
            lines.append(
                f"| {label} | {c['cpu_us']:,.0f} | {c['wall_us']:,.0f} | "
                f"{c['cpu_us'] / pc['bare']['cpu_us']:.2f}x"
                + (f" ({median:.2f}x)" if median else "")
                + f" | {c['wall_us'] / pc['bare']['wall_us']:.2f}x |"
            )
        lines.append("")
        ratio = poke.get("median_block_ratio", {}).get("poke") or pc["poke"]["cpu_us"] / pc["bare"]["cpu_us"]
        verdicts.append(
            f"- poke overhead ≤ {TARGETS['poke_ratio']}x a bare GET: {_ok(ratio <= TARGETS['poke_ratio'])} ({ratio:.2f}x CPU)"
        )
    tokens = report.get("tokens")
    if tokens:
        lines += [
            f"Token renewal: {tokens['n']} triggers polling every {TOKEN_CHECK['interval']:g} s for "
            f"{tokens['wall_s']:.1f} s ({tokens['polls']:,} polls, {tokens['events']} events) against a simulator "
            f"whose tokens live {tokens['lifetime']:g} s (renewed with half their life left): "
            f"{tokens['token_requests']} token requests (at most {tokens['expected_max']} renewal windows elapsed); "
            f"response statuses {tokens['statuses']}.",
            "",
        ]
        unauthorized = int(tokens["statuses"].get("401", 0))
        verdicts[3] += (
            f"; with {tokens['lifetime']:g} s tokens: {tokens['token_requests']} for {tokens['n']} triggers over "
            f"{tokens['wall_s']:.0f} s (≤ {tokens['expected_max']} windows), {unauthorized} × 401"
        )
        if not (1 <= tokens["token_requests"] <= tokens["expected_max"] and unauthorized == 0):
            verdicts[3] = verdicts[3].replace(": met", ": **MISSED**", 1)
    lines += ["Targets:", "", *verdicts, ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, action="append", help="run only the scenario(s) with this N")
    parser.add_argument("--sequential", action="store_true", help="run the reference after the triggers")
    parser.add_argument("--patch", default=None, help="module in benchmarks/ imported first by the provider's clients")
    parser.add_argument("--out", default=str(HERE / "results.md"))
    parser.add_argument("--no-poke", action="store_true")
    parser.add_argument("--polls", type=int, default=None, help="polls per batch, instead of each scenario's own P")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the clients on the first CPU and the simulators on the others (no preemption by a simulator)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()
    if args.pin:
        global CLIENT_CPUS, SIM_CPUS
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs at least two CPUs")
        CLIENT_CPUS, SIM_CPUS = {cpus[0]}, set(cpus[1:])

    started = time.monotonic()
    load_start = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="wdata-bench-"))
    (workdir / "airflow_home").mkdir()
    sims: list[SimProcess] = []
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "git": git_state(),
        "load_start": load_start,
        "sequential": args.sequential,
        "patch": args.patch,
        "scenarios": [],
        "raw": [],
    }
    patch = ["--patch", args.patch] if args.patch else []
    try:
        sim_t = SimProcess("ours", workdir)
        sims.append(sim_t)
        sim_r = SimProcess("ref", workdir)
        sims.append(sim_r)
        for n, interval, polls in SCENARIOS:
            if args.only and n not in args.only:
                continue
            polls = args.polls or polls
            print(f"N={n}: starting {n} + {n} batches ...", flush=True)
            ids_t = start_batches(sim_t, f"c-p{polls}", n, workdir / f"ids-ours-{n}.txt")
            ids_r = start_batches(sim_r, f"c-p{polls}", n, workdir / f"ids-ref-{n}.txt")
            sim_t.command("reset")
            sim_r.command("reset")
            out_t, out_r = workdir / f"ours-{n}.json", workdir / f"ref-{n}.json"
            common = ["--n", str(n), "--interval", str(interval), "--polls", str(polls)]
            jobs = [
                (
                    client_cmd("trigger", sim_t, ids_t, out_t, common + patch),
                    client_env(workdir, sim_t),
                    workdir / f"ours-{n}.log",
                ),
                (client_cmd("ref", sim_r, ids_r, out_r, common), client_env(workdir, sim_r), workdir / f"ref-{n}.log"),
            ]
            print(
                f"N={n}: polling every {interval:g} s, {polls} polls each (~{interval * polls:.0f} s) ...", flush=True
            )
            run_clients(jobs, timeout=interval * (polls + 2) + 120, together=not args.sequential)
            stats_t, stats_r = sim_t.command("stats"), sim_r.command("stats")
            trig, ref = json.loads(out_t.read_text()), json.loads(out_r.read_text())
            summary = summarize(n, trig, ref, stats_t, stats_r)
            summary["load_after"] = loadavg()
            report["scenarios"].append(summary)
            report["raw"].append(
                {
                    "n": n,
                    "ours": {k: v for k, v in trig.items() if k != "events"},
                    "ref": {k: v for k, v in ref.items() if k != "events"},
                }
            )
            print(
                f"N={n}: cpu/poll {summary['cpu_us_per_poll']:.0f} us vs ref {summary['ref_cpu_us_per_poll']:.0f} us "
                f"({summary['cpu_ratio']:.2f}x), lag p99 {summary['lag']['p99_ms']} ms, "
                f"rss {summary['rss_kb_per_trigger']:.1f} KB/trigger, conns {summary['connections_opened']}, "
                f"tokens {summary['token_requests']}, req/poll {summary['requests_per_poll']:.3f}",
                flush=True,
            )
        if not args.no_poke:
            # Poke mode, and beside it (other process, other simulator) the token-renewal check: N triggers
            # against a simulator whose tokens live a few seconds, so each is renewed several times.
            print(f"poke mode, and token renewal with {TOKEN_CHECK['n']} triggers ...", flush=True)
            sim_k = SimProcess("tokens", workdir, token_lifetime=TOKEN_CHECK["lifetime"])
            sims.append(sim_k)
            ids_p = start_batches(sim_t, "c-stuck", 1, workdir / "ids-poke.txt")
            ids_k = start_batches(sim_k, f"c-p{TOKEN_CHECK['polls']}", TOKEN_CHECK["n"], workdir / "ids-tokens.txt")
            sim_k.command("reset")
            out_p, out_k = workdir / "poke.json", workdir / "tokens.json"
            token_args = [
                "--n",
                str(TOKEN_CHECK["n"]),
                "--interval",
                str(TOKEN_CHECK["interval"]),
                "--polls",
                str(TOKEN_CHECK["polls"]),
            ]
            run_clients(
                [
                    (client_cmd("poke", sim_t, ids_p, out_p, patch), client_env(workdir, sim_t), workdir / "poke.log"),
                    (
                        client_cmd("trigger", sim_k, ids_k, out_k, token_args + patch),
                        client_env(workdir, sim_k),
                        workdir / "tokens.log",
                    ),
                ],
                timeout=120,
                together=True,
            )
            report["poke"] = json.loads(out_p.read_text())
            tok = json.loads(out_k.read_text())
            stats_k = sim_k.command("stats")
            report["tokens"] = {
                "n": TOKEN_CHECK["n"],
                "lifetime": TOKEN_CHECK["lifetime"],
                "wall_s": tok["wall_all_s"],
                "events": len(tok["events"]),
                "polls": tok["polls_all"],
                "token_requests": stats_k["kinds"].get("token", 0),
                "statuses": stats_k["statuses"],
                # renewed when at most half its lifetime is left (the renew margin is capped at half)
                "expected_max": int(tok["wall_all_s"] // (TOKEN_CHECK["lifetime"] / 2)) + 1,
            }
            pc = report["poke"]["per_call"]
            print(
                f"poke: {pc['poke']['cpu_us']:.0f} us CPU vs bare {pc['bare']['cpu_us']:.0f} us "
                f"({report['poke']['median_block_ratio']['poke']:.2f}x median per round)",
                flush=True,
            )
    finally:
        for sim in sims:
            sim.close()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["load_end"] = loadavg()
    report["duration_s"] = time.monotonic() - started
    out = Path(args.out)
    out.write_text(render(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out} ({report['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
