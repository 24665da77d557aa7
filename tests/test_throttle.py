"""Many waits in one event loop: one 429 pauses the credential, and the Airflow connection is read once."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from airflow_provider_wdata import shared_config, throttle
from airflow_provider_wdata.exceptions import WdataAuthError
from airflow_provider_wdata.hooks import wdata as hook_module
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.throttle import Gate
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from tests.conftest import CANARY_SECRET

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 8, "timeout": 5}


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(throttle.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(throttle.asyncio, "sleep", clock.sleep)
    return clock


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """The Airflow connection lookups the hooks make."""
    seen: list[str] = []
    original = hook_module.aget_connection

    async def counting(conn_id):
        seen.append(conn_id)
        return await original(conn_id)

    monkeypatch.setattr(hook_module, "aget_connection", counting)
    return seen


def paced_gate(clock: FakeTime, sends: int, retry_after: float | None = None) -> Gate:
    """A gate whose credential "key" sent ``sends`` requests over the last second, the last one refused."""
    gate = Gate()
    for _ in range(sends):
        sent_at = gate.sent("key")
        clock.now += 1 / sends
    gate.throttled("key", retry_after, sent_at)
    return gate


async def turns(gate: Gate, clock: FakeTime, calls: int) -> list[float]:
    """When each of ``calls`` calls, asking one after another, gets its turn."""
    out = []
    for _ in range(calls):
        await gate.wait_turn("key")
        out.append(clock.now)
    return out


async def test_an_open_gate_holds_nothing(fake_time):
    gate = Gate()
    for _ in range(500):
        gate.sent("key")
    assert not gate.holds("key") and gate.pace("key") is None
    await gate.wait_turn("key")
    assert gate.closed_for("key") == 0 and fake_time.sleeps == []


async def test_a_429_with_retry_after_holds_the_credential_then_paces_it_under_the_rate_it_met(fake_time):
    gate = paced_gate(fake_time, 100, retry_after=4)
    start = fake_time.now
    assert gate.holds("key") and gate.closed_for("key") == 4
    assert gate.pace("key") == pytest.approx(100 * throttle.PACE_BACKOFF)
    released = await turns(gate, fake_time, 10)
    assert released[0] == pytest.approx(start + 4), "held until the pause ends"
    gaps = [b - a for a, b in itertools.pairwise(released)]
    # one at a time at 75 per second (rising by 5 per second as time passes), never all at once
    assert all(1 / 76 <= gap <= 1 / 75 for gap in gaps), gaps
    assert not gate.holds("other") and gate.pace("other") is None, "another credential is not held"


async def test_a_429_without_retry_after_paces_without_a_pause(fake_time):
    gate = paced_gate(fake_time, 40)
    assert gate.closed_for("key") == 0 and gate.pace("key") == pytest.approx(30)
    released = await turns(gate, fake_time, 3)
    assert released[1] - released[0] == pytest.approx(1 / 30, rel=0.01)


async def test_429s_for_requests_sent_before_the_slowdown_slow_nothing_more(fake_time):
    gate = Gate()
    in_flight = [gate.sent("key") for _ in range(20)]  # all sent before the first 429 came back
    fake_time.now += 0.5
    for sent_at in in_flight:
        gate.throttled("key", 1, sent_at)
    assert gate.pace("key") == pytest.approx(20 * throttle.PACE_BACKOFF), "one slowdown, not twenty"
    fake_time.now += 1.5  # half a second after the pause ended, the pace has risen a little
    risen = 20 * throttle.PACE_BACKOFF + 0.5 * throttle.PACE_GROWTH * 20
    gate.throttled("key", 1, gate.sent("key"))  # sent after the slowdown: the pace is still too fast
    assert gate.pace("key") == pytest.approx(risen * throttle.PACE_BACKOFF)


async def test_the_pace_rises_while_no_429_comes_then_pacing_ends(fake_time):
    gate = paced_gate(fake_time, 100)
    fake_time.now += 4
    assert gate.pace("key") == pytest.approx(75 + 4 * throttle.PACE_GROWTH * 100)
    fake_time.now += (throttle.PACE_END * 100 - 95) / (throttle.PACE_GROWTH * 100)
    assert gate.pace("key") is None and not gate.holds("key"), "the limit is gone: calls go out unpaced"
    gate.throttled("key", None, gate.sent("key"))
    assert gate.pace("key") == pytest.approx(throttle.PACE_MIN_RATE), "a new 429 measures the rate afresh"


async def test_turns_given_at_an_old_pace_are_taken_again_after_a_slowdown(fake_time, monkeypatch):
    gate = paced_gate(fake_time, 100)
    await turns(gate, fake_time, 2)
    slept = fake_time.sleep

    async def sleep_through_a_429(seconds: float) -> None:
        monkeypatch.setattr(throttle.asyncio, "sleep", slept)
        gate.throttled("key", 2, gate.sent("key"))  # a 429 with Retry-After comes while this call waits
        await slept(seconds)

    monkeypatch.setattr(throttle.asyncio, "sleep", sleep_through_a_429)
    slowed = fake_time.now
    await gate.wait_turn("key")
    assert fake_time.now == pytest.approx(slowed + 2), "its turn came after the new pause, not at the old pace"


async def test_a_429_pauses_every_wait_of_the_loop_for_that_credential(wdata_conn):
    """Against the simulator's rate limit: the gate keeps the 429s to about one per window."""
    batch_id = await asyncio.to_thread(lambda: WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id)
    wdata_conn.set_rate_limit(10, window=1.0)

    async def read(i: int) -> None:
        await asyncio.sleep(i * 0.01)  # 30 waits reading over 0.3 s: 20 more than the limit allows
        await WdataHook(**FAST_HOOK).aget_batch_refresh(batch_id)

    await asyncio.gather(*(read(i) for i in range(30)))
    reads = [r for r in wdata_conn.requests if r.method == "GET" and batch_id in r.path]
    assert len(reads) - wdata_conn.rate_limited == 30, "every wait read its batch in the end"
    # Without the gate each of the 20 over the limit finds its own 429 (and again when they retry together).
    assert wdata_conn.rate_limited <= 3, f"{wdata_conn.rate_limited} 429s for 30 reads"


async def test_many_triggers_due_at_once_against_a_rate_limit_get_a_few_429s_not_one_each(wdata_conn):
    """60 triggers whose first reads are all due, against a service that takes 20 requests a second."""
    ids = await asyncio.to_thread(
        lambda: [WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id for _ in range(60)]
    )
    wdata_conn.set_rate_limit(20, window=1.0)
    deadline = time.time() + 120

    async def wait(batch_id: str) -> str:
        trigger = BatchRefreshTrigger(batch_id=batch_id, poll_interval=1, deadline=deadline, hook_params=FAST_HOOK)
        async for event in trigger.run():
            return event.payload["status"]
        raise AssertionError("no event")

    statuses = await asyncio.gather(*(wait(batch_id) for batch_id in ids))
    assert statuses == ["success"] * 60
    reads = sum(1 for r in wdata_conn.requests if r.method == "GET" and "/batch/refresh/" in r.path)
    # Their first reads come at 60 a second; each wait reads twice. Without the pacer every read past the limit
    # finds its own 429, and again when the held reads all go out once the pause ends.
    assert wdata_conn.rate_limited <= 10, f"{wdata_conn.rate_limited} 429s for {reads} reads"


async def test_hooks_in_one_loop_read_the_airflow_connection_once(wdata_conn, lookups):
    batch_id = await asyncio.to_thread(lambda: WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id)
    for _ in range(5):
        await WdataHook().aget_batch_refresh(batch_id)
    assert lookups == ["wdata_default"]
    await WdataHook(timeout=7).aget_batch_refresh(batch_id)
    assert len(lookups) == 2, "a hook with other arguments checks its own"


async def test_hooks_that_ask_at_the_same_moment_share_one_lookup(wdata_conn, lookups):
    batch_id = await asyncio.to_thread(lambda: WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id)
    reads = await asyncio.gather(*(WdataHook().aget_batch_refresh(batch_id) for _ in range(50)))
    assert {read.batch_refresh_id for read in reads} == {batch_id}
    assert lookups == ["wdata_default"], "50 triggers starting together looked the connection up once"


async def test_a_failed_lookup_is_not_shared(wdata_conn, lookups):
    errors = await asyncio.gather(
        *(WdataHook("wdata_missing").aget_batch_refresh("b-1") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(error, Exception) and "wdata_missing" in str(error) for error in errors), errors
    assert len({id(error) for error in errors}) == 3, "each hook raises its own error"
    assert lookups == ["wdata_missing"] * 3, "a failed lookup is made again by each hook that waited for it"


async def test_refused_credentials_drop_the_reused_connection(wdata_conn, lookups, monkeypatch):
    from airflow_provider_wdata.tokens import TOKENS

    batch_id = await asyncio.to_thread(lambda: WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id)
    await WdataHook().aget_batch_refresh(batch_id)
    # The secret is rotated: in Wdata, and in the Airflow connection.
    name, value = wdata_conn.airflow_conn_env("wdata_default")
    wdata_conn.client_secret = "rotated-secret"
    monkeypatch.setenv(name, value.replace(CANARY_SECRET, "rotated-secret"))
    TOKENS.clear()
    with pytest.raises(WdataAuthError):  # the reused connection still holds the old secret
        await WdataHook(max_attempts=1).aget_batch_refresh(batch_id)
    await WdataHook().aget_batch_refresh(batch_id)
    assert len(lookups) == 2, "read again at once after the refusal"


class BlockedLookup:
    """A connection lookup that ends when the test lets it."""

    def __init__(self) -> None:
        self.released, self.calls, self.config = asyncio.Event(), 0, object()

    async def __call__(self) -> object:
        self.calls += 1
        await self.released.wait()
        return self.config

    def ask(self, key: str) -> asyncio.Task:
        return asyncio.create_task(shared_config.shared_config(key, self, 30.0))  # type: ignore[arg-type]


async def test_a_hook_cancelled_while_it_waits_for_a_shared_lookup_leaves_the_lookup_to_the_others():
    lookup = BlockedLookup()
    first, waiting, cancelled = (lookup.ask("cancelled-waiter") for _ in range(3))
    await asyncio.sleep(0)  # one loop turn: the three are waiting, the first on its own lookup
    cancelled.cancel()
    await asyncio.sleep(0)
    lookup.released.set()
    assert await first is lookup.config and await waiting is lookup.config
    assert cancelled.cancelled()
    assert await lookup.ask("cancelled-waiter") is lookup.config, "the lookup is still reused afterwards"
    assert lookup.calls == 1


async def test_a_lookup_whose_own_hook_is_cancelled_is_made_again_by_the_hooks_waiting_for_it():
    lookup = BlockedLookup()
    first, waiting = lookup.ask("cancelled-owner"), lookup.ask("cancelled-owner")
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    lookup.released.set()
    assert await waiting is lookup.config
    assert first.cancelled() and lookup.calls == 2


def test_each_event_loop_has_its_own_reused_connections(wdata_conn, lookups):
    batch_id = WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id
    for _ in range(2):
        asyncio.run(WdataHook().aget_batch_refresh(batch_id))
    assert len(lookups) == 2
