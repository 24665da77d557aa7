"""What the provider's own Python costs per status read and per wait, with the network taken out.

``make bench`` runs it after ``bench_triggers.py`` (about 20 s). The hook's transport is replaced by one that
answers from memory (the one private seam this script uses: ``WdataHook._atransport``), so the figures hold
only what the provider adds between a response and the wait's decision: the pacer and token checks, building
the request, reading the envelope, the models, the decision, its log line and the final event. aiohttp, TLS,
sockets and the simulator are left out: both sides of ``bench_triggers.py`` pay those alike. The figures are
CPU µs (``time.process_time``), each the median of nine rounds; unlike the CPU ratios of ``bench_triggers.py``
they hardly move between runs on a busy machine, so a change in the provider's own cost shows here first.

- *read*: ``await hook.aget_batch_refresh(id)`` then ``wait.check(refresh)``, statuses unchanged, for a batch of
  1 and of 100 connections; the *same answer* as the read before (held, not decoded again), or a *new* one (its
  ``updated`` time moved: decoded and built); *bare read*: the bare loop's ``json.loads`` and its two status
  checks.
- *whole wait*: N ``BatchRefreshTrigger``s in one loop, each run to its event as the triggerer drives it
  (``async for event in trigger.run()``), the batch ending on its 4th read; *bare wait*: N coroutines sleeping
  the same interval and doing the bare read 4 times. Their difference is the provider's own cost per wait
  (trigger, wait, hook and connection reuse, ticks, deadline, the "still running" log line, the final event).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault(
    "AIRFLOW_CONN_WDATA_DEFAULT",
    json.dumps({"conn_type": "wdata", "login": "id", "password": "pw", "host": "https://wdata.invalid"}),
)

from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.protocol import RawResponse
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from airflow_provider_wdata.wait import BatchWait

ROUNDS = 9
TERMINAL = frozenset({"complete", "error", "cancelled"})


def batch_answer(children: int, status: str, updated: str = "2026-12-03T10:00:01Z") -> bytes:
    child = {
        "connectionId": "conn-1",
        "jobId": "5e0c8a64-5a4b-4a39-9d5b-6f1f0f7f3c11",
        "sourceStatus": status,
        "destinationStatus": status,
        "error": None,
        "created": "2026-12-03T10:00:00Z",
        "createdBy": "client",
        "updated": "2026-12-03T10:00:01Z",
        "sourceParameters": {},
        "destinationParameters": {},
        "sourceMetadata": {},
        "destinationMetadata": {},
        "workspaceId": None,
        "sourceWorkspaceId": None,
        "destinationWorkspaceId": None,
    }
    body = {
        "batchRefreshId": "8f2d3c1a-0b7e-4c55-a1de-2d6a4e9b7c20",
        "childRefreshes": [child] * children,
        "sourceStatus": status,
        "destinationStatus": status,
        "error": None,
        "created": "2026-12-03T10:00:00Z",
        "createdBy": "client",
        "updated": updated,
    }
    return json.dumps({"body": body, "code": 200}).encode()


TOKEN = RawResponse(200, {}, json.dumps({"access_token": "t" * 40, "expires_in": 3600}).encode())


class MemoryTransport:
    """Answers every status read from memory: ``running`` until a batch's ``finish_on``-th read, then ``complete``.

    ``changing``: every ``running`` answer differs from the one before (its ``updated`` time), statuses unchanged.
    """

    def __init__(self, children: int, finish_on: int | None = None, changing: bool = False) -> None:
        self.running = RawResponse(200, {}, batch_answer(children, "running"))
        self.running_later = RawResponse(200, {}, batch_answer(children, "running", "2026-12-03T10:00:02Z"))
        self.complete = RawResponse(200, {}, batch_answer(children, "complete"))
        self.finish_on = finish_on
        self.changing = changing
        self.reads: dict[str, int] = {}

    async def send(self, request: Any, config: Any, token: Any) -> RawResponse:
        if self.finish_on is None:
            if self.changing:
                self.running, self.running_later = self.running_later, self.running
            return self.running
        seen = self.reads[request.path] = self.reads.get(request.path, 0) + 1
        return self.complete if seen >= self.finish_on else self.running

    async def post_token(self, config: Any) -> RawResponse:
        return TOKEN


def answered_from(transport: MemoryTransport) -> None:
    WdataHook._atransport = property(lambda hook: transport)  # type: ignore[method-assign,assignment]


def cpu_us(run: Callable[[], Awaitable[Any]], per: int) -> float:
    """Median CPU µs per unit of ``per`` over ``ROUNDS`` runs of ``run``."""

    async def measured() -> float:
        gc.collect()  # each round starts from the same heap
        start = time.process_time()
        await run()
        return time.process_time() - start

    return statistics.median(asyncio.run(measured()) for _ in range(ROUNDS)) * 1e6 / per


def read_costs(children: int, reads: int, changing: bool) -> tuple[float, float]:
    answered_from(MemoryTransport(children, changing=changing))
    log = logging.getLogger("bench")
    batch_id = "8f2d3c1a-0b7e-4c55-a1de-2d6a4e9b7c20"

    async def provider() -> None:
        hook, wait = WdataHook(), BatchWait(batch_id=batch_id)
        wait.check(await hook.aget_batch_refresh(batch_id), log)  # the first read: it logs and is decided
        for _ in range(reads):
            wait.check(await hook.aget_batch_refresh(batch_id), log)

    answer = MemoryTransport(children).running.body

    async def bare() -> None:
        for _ in range(reads):
            body = json.loads(answer)["body"]
            _ = body["sourceStatus"] in TERMINAL and body["destinationStatus"] in TERMINAL

    return cpu_us(provider, reads), cpu_us(bare, reads)


def wait_costs(n: int = 1_000, reads: int = 4, interval: float = 0.02) -> tuple[float, float]:
    async def provider() -> None:
        answered_from(MemoryTransport(1, finish_on=reads))
        deadline = time.time() + 600

        async def one(i: int) -> None:
            trigger = BatchRefreshTrigger(
                batch_id=f"batch-{i}", poll_interval=interval, deadline=deadline, last_read_at=time.time()
            )
            async with contextlib.aclosing(trigger.run()) as events:
                async for _ in events:
                    break

        await asyncio.gather(*(one(i) for i in range(n)))

    running, complete = MemoryTransport(1).running.body, MemoryTransport(1).complete.body

    async def bare() -> None:
        async def one() -> None:
            for read in range(1, reads + 1):
                await asyncio.sleep(interval)
                body = json.loads(complete if read == reads else running)["body"]
                if body["sourceStatus"] in TERMINAL and body["destinationStatus"] in TERMINAL:
                    return

        await asyncio.gather(*(one() for _ in range(n)))

    return cpu_us(provider, n), cpu_us(bare, n)


def main() -> int:
    # The waits' log lines are built and written as Airflow writes them (structlog, to standard output), but to
    # /dev/null: the figures keep the original standard output.
    out = os.fdopen(os.dup(1), "w")
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    say = functools.partial(print, file=out, flush=True)
    say(f"The provider's own CPU, network left out (median of {ROUNDS} rounds; µs):")
    for changing in (False, True):
        for children in (1, 100):
            ours, bare = read_costs(children, 20_000 if children == 1 else 500, changing)
            what = f"status read, {'new' if changing else 'same'} answer, {children:>3} connection(s)"
            say(f"  {what:<44} provider {ours:8.1f}   bare read {bare:8.1f}")
    ours, bare = wait_costs()
    say(f"  {'whole wait, 4 reads, 1 connection':<44} provider {ours:8.1f}   bare wait {bare:8.1f}")
    say(f"  the provider's own cost per wait: {ours - bare:.0f} µs ({(ours - bare) / 4:.0f} µs per read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
