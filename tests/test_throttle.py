"""Many waits in one event loop: one 429 pauses the credential, and the Airflow connection is read once."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_wdata import throttle
from airflow_provider_wdata.exceptions import WdataAuthError
from airflow_provider_wdata.hooks import wdata as hook_module
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.throttle import REOPEN_SPREAD_MAX, Gate
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


async def test_an_open_gate_holds_nothing(fake_time):
    gate = Gate()
    await gate.wait_open("key")
    assert gate.closed_for("key") == 0 and fake_time.sleeps == []


async def test_a_closed_gate_holds_every_call_until_it_opens_then_spreads_them(fake_time):
    released = []
    for _ in range(200):  # one waiter at a time, each finding the gate just closed for 4 s
        gate = Gate()
        gate.close("key", 4)
        start = fake_time.now
        await gate.wait_open("key")
        released.append(fake_time.now - start)
    assert all(4 <= held <= 8 for held in released), "held until it opens, then within one window as long"
    assert max(released) - min(released) > 2, "spread, not all in one instant"
    assert gate.closed_for("other") == 0, "another credential is not held"


async def test_a_longer_pause_is_kept_and_the_spread_is_capped(fake_time):
    gate = Gate()
    gate.close("key", 100)
    gate.close("key", 1)
    assert gate.closed_for("key") == 100
    await gate.wait_open("key")
    assert 100 <= sum(fake_time.sleeps) <= 100 + REOPEN_SPREAD_MAX


async def test_a_429_while_held_calls_are_let_through_widens_the_next_window(fake_time):
    widened, fresh = [], []
    for _ in range(100):
        gate = Gate()
        gate.close("key", 1)
        fake_time.now += 1.5  # reopened half a second ago: held calls are still trickling out
        gate.close("key", 1)
        fake_time.sleeps.clear()
        await gate.wait_open("key")
        widened.append(sum(fake_time.sleeps))
        fake_time.now += 10  # long after: a new 429 starts from a one-pause window again
        gate.close("key", 1)
        fake_time.sleeps.clear()
        await gate.wait_open("key")
        fresh.append(sum(fake_time.sleeps))
    assert all(1 <= held <= 3 for held in widened) and max(widened) > 2.5, "the second window is twice the first"
    assert all(1 <= held <= 2 for held in fresh)


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
    assert wdata_conn.rate_limited <= 6, f"{wdata_conn.rate_limited} 429s for 30 reads"


async def test_hooks_in_one_loop_read_the_airflow_connection_once(wdata_conn, lookups):
    batch_id = await asyncio.to_thread(lambda: WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id)
    for _ in range(5):
        await WdataHook().aget_batch_refresh(batch_id)
    assert lookups == ["wdata_default"]
    await WdataHook(timeout=7).aget_batch_refresh(batch_id)
    assert len(lookups) == 2, "a hook with other arguments checks its own"


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


def test_each_event_loop_has_its_own_reused_connections(wdata_conn, lookups):
    batch_id = WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id
    for _ in range(2):
        asyncio.run(WdataHook().aget_batch_refresh(batch_id))
    assert len(lookups) == 2
