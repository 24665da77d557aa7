"""RefreshWait, finish() and the read ticks: the wait that serves triggers, poke mode and operators. No server."""

from __future__ import annotations

import asyncio
import collections
import gc
import math
import random
import time
import types
import weakref

import pytest

from airflow_provider_wdata import ticks, transport
from airflow_provider_wdata._compat import AirflowSkipException
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataAuthError,
    WdataConfigError,
    WdataError,
    WdataRefreshFailedError,
    WdataRefreshTimeoutError,
    WdataTransportError,
)
from airflow_provider_wdata.models import RefreshBatch
from airflow_provider_wdata.ticks import READ_TICK, READS_PER_TICK
from airflow_provider_wdata.wait import (
    FIRST_READ_SPREAD_MAX,
    LAST_READ_GRACE,
    MAX_LISTED_UNFINISHED,
    BatchWait,
    finish,
)

NOW = 1_900_000_000.0


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str, message: str, *args) -> None:
        self.lines.append((level, message % args))

    def warning(self, message, *args) -> None:
        self._record("warning", message, *args)

    def info(self, message, *args) -> None:
        self._record("info", message, *args)

    def error(self, message, *args) -> None:
        self._record("error", message, *args)

    def of(self, level: str) -> list[str]:
        return [text for lvl, text in self.lines if lvl == level]


def batch(source: str, destination: str, *children: tuple[str, str, str], batch_id: str = "b-1") -> RefreshBatch:
    return RefreshBatch.from_api(
        {
            "batchRefreshId": batch_id,
            "sourceStatus": source,
            "destinationStatus": destination,
            "childRefreshes": [
                {"connectionId": conn, "jobId": f"job-{conn}", "sourceStatus": s, "destinationStatus": d}
                for conn, s, d in children
            ],
        }
    )


def test_retry_after_between_reads_is_capped_like_the_hooks():
    wait = BatchWait(batch_id="b", poll_interval=1, deadline=NOW + 10_000)
    wait.last_error = WdataApiError("slow down", status=429, method="GET", path="/x", retry_after=86_400)
    assert wait.next_delay(now=NOW) == wait.retry_after_max == 120
    wait.last_error = None
    assert wait.next_delay(now=NOW) == 1
    assert wait.next_delay(now=NOW + 9_999.5) == 0.5, "never past the deadline"
    assert wait.next_delay(now=NOW + 10_000) is None


def test_unchanged_statuses_are_not_decided_again():
    wait, log = BatchWait(batch_id="b-1"), RecordingLog()
    calls = []
    decide = wait.decide
    wait.decide = lambda refresh: calls.append(refresh) or decide(refresh)
    running = batch("running", "running")
    assert wait.check(running, log) is None and wait.check(running, log) is None
    assert len(calls) == 1 and len(log.of("info")) == 1
    assert wait.check(batch("complete", "complete"), log)["status"] == "success"
    assert len(calls) == 2


def test_an_equal_read_keeps_the_refresh_already_held_and_a_changed_one_replaces_it():
    # Thousands of waits keep their last read between reads: an equal one is dropped young, not promoted again.
    wait, log = BatchWait(batch_id="b-1"), RecordingLog()
    first = batch("running", "running", ("conn-1", "running", "not_started"))
    wait.check(first, log)
    wait.check(batch("running", "running", ("conn-1", "running", "not_started")), log)
    assert wait.last is first
    changed = batch("running", "running", ("conn-1", "complete", "running"))
    wait.check(changed, log)
    assert wait.last is changed


def test_an_unknown_status_is_warned_once_across_changing_readings():
    wait, log = BatchWait(batch_id="b-1"), RecordingLog()
    readings = [
        batch("running", "running", ("conn-1", "queued_v2", "not_started")),
        batch("running", "running", ("conn-1", "queued_v2", "running")),
        batch("running", "running", ("conn-1", "complete", "queued_v2"), ("conn-2", "paused_v3", "running")),
        batch("running", "running", ("conn-1", "queued_v2", "complete"), ("conn-2", "paused_v3", "complete")),
    ]
    for reading in readings:
        assert wait.check(reading, log) is None
    warnings = log.of("warning")
    assert len(warnings) == 2, warnings
    assert "'queued_v2'" in warnings[0] and "'paused_v3'" in warnings[1]


def test_first_read_comes_one_interval_after_the_last_one():
    wait = BatchWait(batch_id="b", poll_interval=10, deadline=NOW + 1_000, last_read_at=NOW - 3)
    assert wait.first_delay(now=NOW) == pytest.approx(7)
    short = BatchWait(batch_id="b", poll_interval=10, deadline=NOW + 2, last_read_at=NOW)
    assert short.first_delay(now=NOW) == 2, "never past the deadline"
    assert short.first_delay(now=NOW + 5) == 0, "a wait started past its deadline reads once, at once"


@pytest.mark.parametrize("last_read_at", [None, NOW - 600, NOW - 86_400])
@pytest.mark.parametrize("poll_interval", [5, 600])
def test_a_first_read_already_due_is_spread_over_at_most_one_capped_interval(last_read_at, poll_interval):
    wait = BatchWait(batch_id="b", poll_interval=poll_interval, deadline=NOW + 100_000, last_read_at=last_read_at)
    delays = [wait.first_delay(now=NOW) for _ in range(2_000)]
    cap = min(poll_interval, FIRST_READ_SPREAD_MAX)
    assert all(0 <= d <= cap for d in delays)
    # Spread, not bunched: each quarter of the window gets a share of 2,000 draws.
    quarters = [sum(1 for d in delays if q * cap / 4 <= d < (q + 1) * cap / 4) for q in range(4)]
    assert min(quarters) > 300, quarters


def test_timeout_names_the_unfinished_connections_and_that_the_refresh_goes_on():
    children = [(f"conn-{i}", "running", "not_started") for i in range(MAX_LISTED_UNFINISHED + 3)]
    wait = BatchWait(batch_id="b-1", deadline=NOW)
    wait.check(batch("running", "running", ("conn-done", "complete", "complete"), *children), RecordingLog())
    message = wait.timeout_event()["message"]
    assert "conn-0 (source=running, destination=not_started)" in message
    assert f"conn-{MAX_LISTED_UNFINISHED - 1} " in message and f"conn-{MAX_LISTED_UNFINISHED} " not in message
    assert "and 3 more" in message
    assert "conn-done" not in message
    assert "keeps running" in message


def test_timeout_names_the_last_read_error():
    wait = BatchWait(batch_id="b-1", deadline=NOW)
    wait.on_read_error(WdataTransportError("GET to host failed: refused.", request_sent=False), RecordingLog())
    event = wait.timeout_event()
    assert "no status could be read" in event["message"] and "refused" in event["message"]
    with pytest.raises(WdataRefreshTimeoutError, match="refused"):
        finish(event, log=RecordingLog())


@pytest.mark.parametrize(
    "error",
    [
        WdataApiError(
            "Wdata API GET /x answered HTTP 404: no such batch.",
            status=404,
            method="GET",
            path="/x",
            service_code=404,
            messages=["no such batch"],
            details=[{"code": "not_found", "message": "no such batch", "target": "batchId"}],
        ),
        WdataAuthError("refused", status=401, method="POST", path="/token", oauth_error="invalid_client"),
        WdataConfigError("batch_id 'a/b' is not a valid Wdata id"),
        WdataError("something else"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_event_raises_the_same_type_as_the_error_that_ended_the_wait(error):
    wait = BatchWait(batch_id="b-1")
    event = wait.on_read_error(error, RecordingLog())
    assert event is not None and event["status"] == "error"
    with pytest.raises(WdataError) as raised:
        finish(event, log=RecordingLog())
    assert type(raised.value) is type(error)
    assert str(raised.value) == str(error)
    for name in ("status", "method", "path", "service_code", "messages", "details", "oauth_error"):
        if hasattr(error, name):
            assert getattr(raised.value, name) == getattr(error, name), name


def test_finish_outcomes():
    log = RecordingLog()
    summary = {"batch_refresh_id": "b", "child_refreshes": [{"connection_id": "c1", "job_id": "j1"}]}
    assert finish({"status": "success", "message": "ok", "summary": summary}, log=log) == summary
    assert any("c1" in line for line in log.of("info"))
    with pytest.raises(WdataRefreshFailedError) as failed:
        finish({"status": "failed", "message": "bad", "failed": [{"connection_id": "c2"}]}, log=log)
    assert failed.value.failed == ({"connection_id": "c2"},)
    with pytest.raises(AirflowSkipException):
        finish({"status": "timeout", "message": "late"}, log=log, soft_fail=True)
    with pytest.raises(WdataError, match="Unexpected event"):
        finish({"status": "weird"}, log=log)


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, "30", True])
def test_a_wait_refuses_a_poll_interval_that_is_not_a_positive_number(value):
    with pytest.raises(ValueError, match="poll_interval must be a positive number"):
        BatchWait(batch_id="b", poll_interval=value)


class TurnCounter:
    """A fake hook that counts the event-loop turns its reads happen in."""

    def __init__(self, finished: RefreshBatch) -> None:
        self.finished = finished
        self.turns = 0
        self.turn_of: list[int] = []  # the turn of each read, counted from 1
        self._in_turn = False

    def _end_turn(self) -> None:
        self._in_turn = False

    async def aget_batch_refresh(self, batch_id, workspace_id=None) -> RefreshBatch:
        loop = asyncio.get_running_loop()
        if not self._in_turn:  # a callback scheduled now runs once every read of this turn has been made
            self.turns, self._in_turn = self.turns + 1, True
            loop.call_soon(self._end_turn)
        self.turn_of.append(self.turns)
        return self.finished


async def test_async_reads_due_within_one_tick_go_out_in_one_loop_turn():
    hook = TurnCounter(batch("complete", "complete"))
    # As many waits as a tick takes (interval 10 s: a tick of READ_TICK), first reads due over 0.4 tick, 1 s on.
    n = READS_PER_TICK
    step = 0.4 * READ_TICK / n
    start = time.time()
    waits = [
        BatchWait(batch_id=f"b-{i}", poll_interval=10, deadline=start + 60, last_read_at=start - 9 + i * step)
        for i in range(n)
    ]
    events = await asyncio.gather(*(wait.arun(hook, RecordingLog()) for wait in waits))
    assert all(event["status"] == "success" for event in events)
    assert hook.turns <= 2, f"{hook.turns} loop turns for {n} reads due within 0.4 tick (on at most 2 ticks)"


class StoppedClock:
    """The loop methods the ticks use, on a clock that does not move: which tick a read is put on, exactly."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.timers: list[float] = []

    def time(self) -> float:
        return self.now

    def create_future(self) -> object:
        return object()  # a stand-in: nothing waits on it

    def call_at(self, when: float, callback, *args, context=None) -> None:
        self.timers.append(when)


@pytest.mark.parametrize("now", [1000.0, 1000.013, 1000.025, 1000.049])
def test_a_read_whose_tick_has_room_moves_by_at_most_half_a_tick(now):
    clock, due = StoppedClock(now), ticks._Ticks()
    tick = 0.05
    delays = [i * 0.0071 for i in range(60)]  # about 7 a tick: every tick has room
    put_on = {}
    for delay in delays:
        woken = due.after(clock, delay, tick)  # type: ignore[arg-type]
        put_on[delay] = next(key[1] * tick for key, futures in due._due.items() if woken in futures)
    moved = [put_on[delay] - (now + delay) for delay in delays]
    assert all(abs(m) <= tick / 2 + 1e-9 for m in moved), max(moved, key=abs)
    assert sorted(clock.timers) == sorted({key[1] * tick for key in due._due}), "one timer per tick"


class SteppedClock(StoppedClock):
    """A :class:`StoppedClock` moved by hand, firing the tick timers that came due, in order."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.calls: list[tuple[float, int, object, tuple]] = []

    def create_future(self) -> object:
        return types.SimpleNamespace(done=lambda: False, set_result=lambda result: None)

    def call_at(self, when: float, callback, *args, context=None) -> None:
        self.calls.append((when, len(self.calls), callback, args))

    def move_to(self, now: float) -> None:
        self.now = now
        for call in sorted(c for c in self.calls if c[0] <= now):
            self.calls.remove(call)
            call[2](*call[3])


def test_reads_go_on_the_first_tick_with_room_as_a_walk_over_every_tick_would_put_them():
    # The reference: from the nearest tick, one tick at a time to the first with room; a fired tick is empty again.
    rng = random.Random(15)
    tick, clock, due = 0.05, SteppedClock(1000.0), ticks._Ticks()
    taken: dict[int, int] = {}
    for step in range(3000):
        if step % 250 == 249:  # time moves on: the ticks passed fire
            clock.move_to(clock.now + rng.uniform(0, 1.5))
            taken = {index: count for index, count in taken.items() if index * tick > clock.now}
        delay = rng.choice([0.0, 1.0, rng.uniform(0, 3)])  # bursts due at the same instant, and spread reads
        expected = round((clock.now + delay) / tick)
        while taken.get(expected, 0) >= READS_PER_TICK:
            expected += 1
        taken[expected] = taken.get(expected, 0) + 1
        woken = due.after(clock, delay, tick)  # type: ignore[arg-type]
        assert woken in due._due[tick, expected], f"read {step} put on another tick than {expected}"
    clock.move_to(clock.now + 10)
    assert not due._due and not due._full, "nothing is kept once every tick fired"


def test_a_burst_of_thousands_finds_room_in_a_few_lookups_per_read():
    class Counted(dict):
        lookups = 0

        def __contains__(self, key) -> bool:
            Counted.lookups += 1
            return super().__contains__(key)

        def __getitem__(self, key):
            Counted.lookups += 1
            return super().__getitem__(key)

        def get(self, key, default=None):
            Counted.lookups += 1
            return super().get(key, default)

    clock, due = StoppedClock(1000.0), ticks._Ticks()
    due._due, due._full = Counted(), Counted()  # every look at the ticks is counted
    n = 20_000  # 1,250 full ticks: walking them one by one from the first takes 12.5 million lookups (626 a read)
    for _ in range(n):
        due.after(clock, 5.0, 0.05)  # type: ignore[arg-type]
    assert len(due._due) == n // READS_PER_TICK and all(len(f) == READS_PER_TICK for f in due._due.values())
    assert Counted.lookups <= 8 * n, f"{Counted.lookups / n:.1f} lookups per read"


async def test_a_burst_of_reads_due_at_once_leaves_over_the_following_ticks(monkeypatch):
    # Waits deferred together right after their task's read: every first read is due at the same instant. A
    # long tick, so that a stalled test loop cannot run two ticks in one turn.
    monkeypatch.setattr(ticks, "READ_TICK", 0.25)
    hook = TurnCounter(batch("complete", "complete"))
    n = 3 * READS_PER_TICK + 1
    start = time.time()
    waits = [
        BatchWait(batch_id=f"b-{i}", poll_interval=10, deadline=start + 60, last_read_at=start - 9.8) for i in range(n)
    ]
    events = await asyncio.gather(*(wait.arun(hook, RecordingLog()) for wait in waits))
    assert all(event["status"] == "success" for event in events)
    per_turn = list(collections.Counter(hook.turn_of).values())
    # [16, 16, 16, 1]; or, if the instant they are due sits on the edge of two ticks, one more turn
    assert max(per_turn) == READS_PER_TICK and len(per_turn) in (4, 5), f"at most {READS_PER_TICK} a tick: {per_turn}"


async def test_the_ticks_of_a_burst_share_one_timer_each_on_consecutive_ticks():
    loop = asyncio.get_running_loop()
    before = loop.time()
    futures = [ticks.tick_after(0.2, 0.05) for _ in range(2 * READS_PER_TICK + 1)]
    after = loop.time()
    whens = sorted(handle.when() for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]
    indices = [round(when / 0.05) for when in whens]
    assert indices == list(range(indices[0], indices[0] + len(indices))), "one timer per tick, on consecutive ticks"
    first, last = round((before + 0.2) / 0.05), round((after + 0.2) / 0.05)
    assert first <= indices[0] <= last, "the first on the tick nearest 0.2 s from when it was asked"
    # 41 reads take three ticks, four if the clock crossed a tick's edge while they were asked
    assert len(indices) == 3 if first == last else len(indices) in (3, 4)
    futures[0].cancel()  # a cancelled wait's place is skipped when its tick comes
    await asyncio.wait(futures, timeout=10)
    assert all(future.done() for future in futures) and futures[0].cancelled()
    assert not [handle for handle in loop._scheduled if not handle.cancelled()], "no timer left once they fired"  # type: ignore[attr-defined]


def test_the_tick_is_at_most_a_tenth_of_the_poll_interval():
    assert BatchWait(batch_id="b", poll_interval=600).read_tick == READ_TICK
    assert BatchWait(batch_id="b", poll_interval=READ_TICK).read_tick == pytest.approx(READ_TICK / 10)


class Running:
    """A hook whose batch is always still running; ``read`` is set at each read."""

    def __init__(self) -> None:
        self.read = asyncio.Event()

    async def aget_batch_refresh(self, batch_id, workspace_id=None) -> RefreshBatch:
        self.read.set()
        return batch("running", "running")


async def test_a_wait_keeps_one_deadline_timer_for_all_its_reads_and_no_timer_per_read():
    # Thousands of waits read in one triggerer. A deadline timer per read left its cancelled timer in the loop's
    # heap, with its context, until asyncio purged it: young objects per read, promoted by the garbage collector.
    hook, log = Running(), RecordingLog()
    wait = BatchWait(batch_id="b-1", poll_interval=0.05, deadline=time.time() + 600, last_read_at=time.time())
    task = asyncio.create_task(wait.arun(hook, log))
    for _ in range(3):
        hook.read.clear()
        await hook.read.wait()
    await asyncio.sleep(0)  # the read's answer is decided and the next wait on a tick begins
    loop = asyncio.get_running_loop()
    scheduled = list(loop._scheduled)  # type: ignore[attr-defined]
    assert not [handle for handle in scheduled if handle.cancelled()], "three reads left no cancelled timer behind"
    until = sorted(handle.when() - loop.time() for handle in scheduled)
    assert len(until) == 2, f"two timers: the next read's tick and the deadline, not {scheduled}"
    assert until[0] <= 0.05 + wait.read_tick / 2, "the next read's tick: one interval on, moved by at most half a tick"
    assert until[1] == pytest.approx(600 + LAST_READ_GRACE, abs=5), "the deadline's, with the last read's grace"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_resting_wait_still_ends_at_its_deadline():
    hook, log = Running(), RecordingLog()
    # Read 0.1 s from now, then rest: the next read (30 s on) is past the deadline (0.5 s on).
    wait = BatchWait(batch_id="b-1", poll_interval=30, deadline=time.time() + 0.5, last_read_at=time.time() - 29.9)
    event = await asyncio.wait_for(wait.arun(hook, log), timeout=10)
    assert hook.read.is_set()
    assert event["status"] == "timeout" and "source=running" in event["message"], "timed out with the last statuses"


class Scripted:
    """A hook answering its batch's reads from a script (the last answer repeats), sync and async; counts reads."""

    def __init__(self, *statuses: str) -> None:
        self.statuses, self.reads = statuses, 0

    def get_batch_refresh(self, batch_id, workspace_id=None) -> RefreshBatch:
        status = self.statuses[min(self.reads, len(self.statuses) - 1)]
        self.reads += 1
        return batch(status, status)

    async def aget_batch_refresh(self, batch_id, workspace_id=None) -> RefreshBatch:
        return self.get_batch_refresh(batch_id, workspace_id)


async def ended(wait: BatchWait, hook: Scripted, mode: str) -> dict:
    if mode == "deferred":
        return await asyncio.wait_for(wait.arun(hook, RecordingLog()), timeout=10)  # type: ignore[arg-type]
    return await asyncio.to_thread(wait.run, hook, RecordingLog())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["deferred", "in the worker"])
async def test_the_last_read_is_made_at_the_deadline_in_every_mode(mode):
    # First read 0.1 s from now; the next one, 30 s on, would be past the deadline (2 s on: room for a slow first
    # read on a loaded machine): it is made there.
    hook = Scripted("running", "complete")
    now = time.time()
    wait = BatchWait(batch_id="b-1", poll_interval=30, deadline=now + 2, last_read_at=now - 29.9)
    event = await ended(wait, hook, mode)
    assert event["status"] == "success", "the refresh ended before the deadline: found by the read made at it"
    assert hook.reads == 2


@pytest.mark.parametrize("mode", ["deferred", "in the worker"])
@pytest.mark.parametrize(("status", "outcome"), [("complete", "success"), ("running", "timeout")])
async def test_a_wait_that_starts_past_its_deadline_reads_once(mode, status, outcome):
    # A triggerer back from an outage longer than the wait: the refresh may have ended in time.
    hook = Scripted(status)
    event = await ended(BatchWait(batch_id="b-1", poll_interval=30, deadline=time.time() - 60), hook, mode)
    assert event["status"] == outcome and hook.reads == 1
    assert f"source={status}" in event["message"], "what the one read found"


def test_an_ended_event_loop_is_not_kept_alive_by_its_session_or_its_read_ticks():
    # A worker that calls the async hook through asyncio.run() once per task must not keep every loop it ran.
    async def main():
        await transport.shared_session()
        ticks.tick_after(600, 0.05)  # a read still waiting on its tick when the loop ends
        return weakref.ref(asyncio.get_running_loop())

    ended = [asyncio.run(main()) for _ in range(3)]
    gc.collect()
    assert all(loop() is None for loop in ended), "an ended loop is still referenced"
