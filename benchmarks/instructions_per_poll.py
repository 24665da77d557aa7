"""Instructions per poll under callgrind, network stubbed (not part of ``make bench``).

CPU time on this shared VM moves by ±15% between runs; instruction counts do not. This runs N triggers (or N
bare-loop waits) with canned answers, lets every one make its first read, then counts the instructions of
the whole process over the next round of reads only (``callgrind_control -i on/off``): either the *final*
read of each wait (decide, event, ``TriggerEvent``, the end of the wait: the steady window of the N=5,000
scenario, whose batches end on their second read) or a *running* read (the steady poll of a long wait).
It does not see cache misses, so a cold path costs more than its count suggests, but a change that removes
instructions shows here reliably.

    .venv/bin/python benchmarks/instructions_per_poll.py [--n 400] [--phase final|running] [--patch MODULE]

Needs valgrind. Each measurement takes about 30 s (most of it the poll interval).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TERMINAL = frozenset({"complete", "error", "cancelled"})


def _toggle(on: bool) -> None:
    # Not waited for: callgrind picks the command up while this process keeps running.
    subprocess.Popen(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _measured(mode: str, n: int, phase: str, interval: float) -> None:
    sys.path.insert(0, HERE)
    from micro_overhead import BODY  # sets AIRFLOW_HOME and the wdata_default connection
    from multidict import CIMultiDict

    from airflow_provider_wdata import protocol, transport
    from airflow_provider_wdata.protocol import RawResponse
    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    done = copy.deepcopy(json.loads(BODY))
    for run in [done["body"], *done["body"]["childRefreshes"]]:
        run["sourceStatus"] = run["destinationStatus"] = "complete"
    answers = {"first": BODY, "second": json.dumps(done).encode() if phase == "final" else BODY}
    state = {"round": "first", "reads": 0}
    second_round_read = asyncio.Event()
    headers = CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(BODY))})

    def _count_read() -> None:
        state["reads"] += 1
        if state["reads"] == 2 * n:
            second_round_read.set()

    async def canned_send(self: Any, request: Any, config: Any, token: Any) -> RawResponse:
        protocol.request_headers(token.value)  # what the real send builds before the network
        request.url(config.base_url)
        _count_read()
        await asyncio.sleep(0)
        return RawResponse(200, headers, answers[state["round"]])

    async def canned_token(self: Any, config: Any) -> RawResponse:
        return RawResponse(200, headers, json.dumps({"access_token": "t" * 40, "expires_in": 3600}).encode())

    transport.AsyncTransport.send = canned_send  # type: ignore[method-assign]
    transport.AsyncTransport.post_token = canned_token  # type: ignore[method-assign]

    async def trigger_wait(i: int) -> None:
        trigger = BatchRefreshTrigger(batch_id=f"b-{i}", poll_interval=interval, deadline=time.time() + 3600)
        async with contextlib.aclosing(trigger.run()) as events:
            async for _ in events:
                break

    async def bare_wait(i: int) -> None:
        while True:
            _count_read()
            await asyncio.sleep(0)
            body = json.loads(answers[state["round"]])["body"]
            if body["sourceStatus"] in TERMINAL and body["destinationStatus"] in TERMINAL:
                return
            await asyncio.sleep(interval)

    wait = trigger_wait if mode == "trigger" else bare_wait
    tasks = [asyncio.ensure_future(wait(i)) for i in range(n)]
    while state["reads"] < n:
        await asyncio.sleep(0.05)
    state["round"] = "second"
    # A full collection walks the whole Airflow heap: when one happens to fall in the window, it swamps the
    # count (the benchmark reports GC on its own).
    gc.collect()
    gc.disable()
    _toggle(True)
    await asyncio.sleep(2)  # ends well before the second reads start
    if phase == "final":
        await asyncio.gather(*tasks)
    else:
        await second_round_read.wait()
    _toggle(False)
    await asyncio.sleep(2)
    gc.enable()
    for task in tasks:
        task.cancel()


def _count(mode: str, n: int, phase: str, interval: float, patch: str | None) -> int:
    out = tempfile.mkdtemp(prefix="wdata-callgrind-")
    try:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            os.path.abspath(__file__),
            "--inner",
            mode,
            "--n",
            str(n),
            "--phase",
            phase,
            "--interval",
            str(interval),
            *(["--patch", patch] if patch else []),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        found = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or not found:
            raise SystemExit(f"callgrind run failed:\n{result.stderr[-3000:]}")
        return int(found.group(1))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--phase", choices=("final", "running"), default="final")
    parser.add_argument("--interval", type=float, default=15.0, help="s between reads (room for valgrind)")
    parser.add_argument("--patch", default=None, help="module in benchmarks/ imported first (the trigger side)")
    parser.add_argument("--inner", choices=("trigger", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        if args.patch and args.inner == "trigger":
            sys.path.insert(0, HERE)
            __import__(args.patch)
        asyncio.run(_measured(args.inner, args.n, args.phase, args.interval))
        return 0
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (Debian package valgrind)")
    counts = {
        mode: _count(mode, args.n, args.phase, args.interval, args.patch) / args.n for mode in ("trigger", "bare")
    }
    print(f"instructions per {args.phase} read, N={args.n}, network stubbed:")
    print(f"  triggers:  {counts['trigger']:>9,.0f}")
    print(f"  bare loop: {counts['bare']:>9,.0f}")
    print(f"  ratio:     {counts['trigger'] / counts['bare']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
