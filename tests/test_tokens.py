"""TokenCache and AccessToken without a server: single flight, renewal, invalidation, no token in a repr.

Time is a fake clock (the tokens module's ``time``), and concurrency is staged with events: no sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import types
import weakref
from collections.abc import Awaitable, Callable

import pytest

from airflow_provider_wdata import tokens
from airflow_provider_wdata.exceptions import WdataApiError, WdataError
from airflow_provider_wdata.tokens import DEFAULT_RENEW_MARGIN, AccessToken, TokenCache

KEY = ("https://token.test", "client", "", "digest")


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The tokens module's monotonic clock, set by the test."""
    now = [1000.0]
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


class Fetches:
    """A token endpoint: counts calls and hands out tok-1, tok-2..."""

    def __init__(self, expires_in: float = 600.0) -> None:
        self.calls = 0
        self.expires_in = expires_in

    def __call__(self) -> tuple[str, float]:
        self.calls += 1
        return f"tok-{self.calls}", self.expires_in


# ------------------------------------------------------------------------------------------ AccessToken


def test_the_value_never_shows_in_a_repr_or_str():
    token = AccessToken("very-secret-token-value", 600, 60)
    for text in (repr(token), str(token), f"{token}", repr([token]), repr({"t": token})):
        assert "very-secret-token-value" not in text
    assert repr(token) == str(token) == "AccessToken(***)"
    assert token.value == "very-secret-token-value"


def test_a_token_is_renewed_the_margin_before_it_expires(clock):
    token = AccessToken("t", expires_in=600, renew_margin=60)
    assert token.expires_at == 1000 + 600 - 60
    clock[0] = 1539.9
    assert token.fresh
    clock[0] = 1540.0
    assert not token.fresh


def test_the_margin_is_capped_at_half_the_lifetime(clock):
    # A 100 s token with a 60 s margin: without the cap it would be stale after 40 s, and a token shorter than
    # the margin would never be fresh at all (each call would fetch a new one).
    token = AccessToken("t", expires_in=100, renew_margin=60)
    clock[0] = 1049.9
    assert token.fresh, "renewed at half its lifetime, not after 40 s"
    clock[0] = 1050.0
    assert not token.fresh
    clock[0] = 1000.0
    short = AccessToken("t", expires_in=30, renew_margin=60)
    assert short.fresh, "a token shorter than the margin is still used for half its lifetime"
    clock[0] = 1015.0
    assert not short.fresh


@pytest.mark.parametrize("expires_in", [0, -5])
def test_an_already_expired_token_is_never_fresh(clock, expires_in):
    token = AccessToken("t", expires_in=expires_in, renew_margin=60)
    assert token.expires_at == 1000.0
    assert not token.fresh


def test_no_margin_means_the_whole_lifetime(clock):
    token = AccessToken("t", expires_in=10, renew_margin=0)
    clock[0] = 1009.9
    assert token.fresh
    clock[0] = 1010.0
    assert not token.fresh


# ------------------------------------------------------------------------------------------ TokenCache


def test_a_fresh_token_is_reused_and_a_stale_one_renewed(clock):
    cache, fetch = TokenCache(), Fetches(expires_in=100)
    first = cache.get(KEY, fetch, renew_margin=60)
    clock[0] = 1049.0
    assert cache.get(KEY, fetch, renew_margin=60) is first and fetch.calls == 1
    assert cache.fresh(KEY) is first
    clock[0] = 1050.0
    assert cache.fresh(KEY) is None
    second = cache.get(KEY, fetch, renew_margin=60)
    assert (second.value, fetch.calls) == ("tok-2", 2)
    assert DEFAULT_RENEW_MARGIN == 60.0


def test_the_default_margin_is_sixty_seconds(clock):
    cache, fetch = TokenCache(), Fetches(expires_in=600)
    cache.get(KEY, fetch)
    clock[0] = 1539.0
    cache.get(KEY, fetch)
    assert fetch.calls == 1
    clock[0] = 1540.0
    cache.get(KEY, fetch)
    assert fetch.calls == 2


def test_each_credential_has_its_own_token(clock):
    cache, fetch = TokenCache(), Fetches()
    a = cache.get(KEY, fetch)
    b = cache.get((*KEY[:3], "other-digest"), fetch)
    assert (a.value, b.value, fetch.calls) == ("tok-1", "tok-2", 2)
    assert cache.get(KEY, fetch) is a


def test_a_failed_fetch_caches_nothing(clock):
    cache = TokenCache()

    def refused() -> tuple[str, float]:
        raise RuntimeError("token endpoint down")

    with pytest.raises(RuntimeError, match="down"):
        cache.get(KEY, refused)
    assert cache.fresh(KEY) is None
    assert cache.get(KEY, Fetches()).value == "tok-1"


def test_invalidation_drops_only_the_refused_token(clock):
    cache, fetch = TokenCache(), Fetches()
    old = cache.get(KEY, fetch)
    other_key = ("elsewhere", "c", "", "d")
    other = cache.get(other_key, fetch)
    # Two callers sent ``old`` and both got a 401: the first drops it and fetches a new one ...
    cache.invalidate(KEY, old)
    assert cache.fresh(KEY) is None
    new = cache.get(KEY, fetch)
    assert new.value == "tok-3"
    # ... the second, late, must not drop the new one (that would cost a token request per refused caller).
    cache.invalidate(KEY, old)
    assert cache.fresh(KEY) is new
    assert cache.get(KEY, fetch) is new and fetch.calls == 3
    assert cache.fresh(other_key) is other, "another credential's token is untouched"
    cache.invalidate(("never", "cached", "", ""), old)  # nothing to drop: no error


def test_clear_drops_every_token(clock):
    cache, fetch = TokenCache(), Fetches()
    cache.get(KEY, fetch)
    cache.clear()
    assert cache.fresh(KEY) is None
    cache.get(KEY, fetch)
    assert fetch.calls == 2


class CountingCache(TokenCache):
    """A TokenCache that reports each miss (a ``fresh()`` finding no token), so a test can tell when every
    caller has looked and found nothing: from then on, only the lock stands between them and a fetch each."""

    def __init__(self, on_miss) -> None:
        super().__init__()
        self.misses = 0
        self._on_miss = on_miss
        self._count_lock = threading.Lock()

    def fresh(self, key):
        token = super().fresh(key)
        if token is None:
            with self._count_lock:
                self.misses += 1
                misses = self.misses
            self._on_miss(misses)
        return token


def test_many_threads_asking_at_once_fetch_one_token():
    callers = 16
    all_missed = threading.Event()
    release = threading.Event()
    guard = threading.Lock()

    def on_miss(misses: int) -> None:
        # Each caller misses once before the lock, the one that fetches once more inside it.
        if misses >= callers + 1:
            all_missed.set()

    cache = CountingCache(on_miss)
    fetches = []

    def fetch() -> tuple[str, float]:
        with guard:
            fetches.append(threading.current_thread().name)
        assert release.wait(30), "the test never released the fetch"
        return f"tok-{len(fetches)}", 600.0

    got: list[AccessToken] = []

    def call() -> None:
        got.append(cache.get(KEY, fetch))

    threads = [threading.Thread(target=call, name=f"caller-{i}") for i in range(callers)]
    for thread in threads:
        thread.start()
    assert all_missed.wait(30), f"only {cache.misses} misses: not every caller got to ask"
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(fetches) == 1, f"{len(fetches)} fetches for {callers} concurrent callers"
    assert len(got) == callers and {token.value for token in got} == {"tok-1"}
    assert len({id(token) for token in got}) == 1


def test_many_coroutines_asking_at_once_fetch_one_token():
    callers = 50

    async def main():
        all_missed = asyncio.Event()
        release = asyncio.Event()

        def on_miss(misses: int) -> None:
            if misses >= callers:  # each caller looks once, then waits on the one fetch
                all_missed.set()

        cache = CountingCache(on_miss)
        fetches = 0

        async def fetch() -> tuple[str, float]:
            nonlocal fetches
            fetches += 1
            await release.wait()
            return f"tok-{fetches}", 600.0

        calls = asyncio.gather(*(cache.aget(KEY, fetch) for _ in range(callers)))
        await asyncio.wait_for(all_missed.wait(), 30)
        release.set()
        got = await calls
        return fetches, got, cache

    fetches, got, cache = asyncio.run(main())
    assert fetches == 1, f"{fetches} fetches for {callers} concurrent coroutines"
    assert {token.value for token in got} == {"tok-1"}
    assert cache.fresh(KEY) is got[0]


def test_a_slow_token_endpoint_holds_up_only_its_own_credential():
    cache = TokenCache()
    fetching, release = threading.Event(), threading.Event()

    def slow() -> tuple[str, float]:
        fetching.set()
        assert release.wait(30), "never released"
        return "slow", 600.0

    blocked = threading.Thread(target=cache.get, args=(KEY, slow))
    blocked.start()
    assert fetching.wait(30)
    other = threading.Thread(target=lambda: cache.get(("other",), lambda: ("quick", 600.0)))
    other.start()
    other.join(30)  # with one lock for every credential this would wait for the slow fetch: 30 s, then fail
    finished = not other.is_alive()
    release.set()
    blocked.join(30)
    assert finished and cache.fresh(("other",)).value == "quick"
    assert cache.fresh(KEY).value == "slow"


def test_a_slow_token_endpoint_holds_up_only_its_own_credential_async():
    async def main():
        cache = TokenCache()
        fetching, release = asyncio.Event(), asyncio.Event()

        async def slow() -> tuple[str, float]:
            fetching.set()
            await release.wait()
            return "slow", 600.0

        async def quick() -> tuple[str, float]:
            return "quick", 600.0

        blocked = asyncio.ensure_future(cache.aget(KEY, slow))
        await fetching.wait()
        other = await asyncio.wait_for(cache.aget(("other",), quick), 30)
        release.set()
        return other, await blocked

    other, slow = asyncio.run(main())
    assert (other.value, slow.value) == ("quick", "slow")


def test_coroutines_of_two_event_loops_each_fetch_in_their_own_loop(clock):
    cache, calls = TokenCache(), []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        return f"tok-{len(calls)}", 600.0

    first = asyncio.run(cache.aget(KEY, fetch))
    cache.invalidate(KEY, first)
    second = asyncio.run(cache.aget(KEY, fetch))  # a fetch pending in the first loop would fail here
    assert (first.value, second.value) == ("tok-1", "tok-2")
    assert asyncio.run(cache.aget(KEY, fetch)) is second and len(calls) == 2


def test_a_failed_fetch_fails_every_coroutine_waiting_on_it_each_with_its_own_error():
    callers = 50

    async def main():
        cache = CountingCache(lambda misses: all_missed.set() if misses >= callers else None)
        all_missed, release = asyncio.Event(), asyncio.Event()
        fetches = 0

        async def failing() -> tuple[str, float]:
            nonlocal fetches
            fetches += 1
            await release.wait()
            raise WdataApiError(
                "token endpoint: 503", status=503, method="POST", path="/oauth2/token", retry_after=5.0, retryable=True
            )

        calls = asyncio.gather(*(cache.aget(KEY, failing) for _ in range(callers)), return_exceptions=True)
        await asyncio.wait_for(all_missed.wait(), 30)
        release.set()
        return fetches, await calls

    fetches, errors = asyncio.run(main())
    assert fetches == 1, f"{fetches} token requests for {callers} coroutines waiting on one"
    assert all(type(e) is WdataApiError for e in errors), errors
    assert {(str(e), e.status, e.retry_after, e.retryable) for e in errors} == {("token endpoint: 503", 503, 5.0, True)}
    assert len({id(e) for e in errors}) == callers, "one exception object shared would gather every waiter's frames"
    assert all(e.__cause__ is None and e.__context__ is None for e in errors), "nothing chained to a copy"


def refused_with(retry_after: float | None = None) -> tuple[list[int], Callable[[], Awaitable[tuple[str, float]]]]:
    """A failing token endpoint: the list counts its calls."""
    calls: list[int] = []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        raise WdataApiError("503", status=503, method="POST", path="/t", retry_after=retry_after, retryable=True)

    return calls, fetch


async def failures_at(cache: TokenCache, fetch, clock: list[float], times: list[float]) -> list[BaseException]:
    """Ask at each of ``times`` (the fake clock), in one event loop; what each ask raised."""
    raised = []
    for at in times:
        clock[0] = at
        with pytest.raises(WdataApiError) as info:
            await cache.aget(KEY, fetch)
        raised.append(info.value)
    return raised


def test_a_failed_fetch_answers_the_callers_of_the_next_second_then_is_tried_again(clock):
    calls, fetch = refused_with()
    start = clock[0]
    hold = tokens.FAILED_FETCH_HOLD
    raised = asyncio.run(failures_at(TokenCache(), fetch, clock, [start, start + hold / 2, start + hold]))
    assert len(calls) == 2, "the ask within the hold got the failure; the one after it asked the endpoint"
    assert len({id(e) for e in raised}) == 3 and all(e.__context__ is None for e in raised)


@pytest.mark.parametrize(
    ("retry_after", "held_for"), [(5.0, 5.0), (10_000.0, tokens.FAILED_FETCH_HOLD_MAX), (0.2, tokens.FAILED_FETCH_HOLD)]
)
def test_the_token_endpoints_retry_after_sets_the_hold_within_bounds(clock, retry_after, held_for):
    calls, fetch = refused_with(retry_after)
    start = clock[0]
    asyncio.run(failures_at(TokenCache(), fetch, clock, [start, start + held_for - 0.01]))
    assert len(calls) == 1
    asyncio.run(failures_at(TokenCache(), fetch, clock, [start, start + held_for]))
    assert len(calls) == 3


def test_clear_drops_a_failure_still_answering(clock):
    calls, fetch = refused_with()
    cache = TokenCache()

    async def main() -> None:
        await failures_at(cache, fetch, clock, [clock[0]])
        cache.clear()
        await failures_at(cache, fetch, clock, [clock[0]])

    asyncio.run(main())
    assert len(calls) == 2


def test_a_failure_still_answering_does_not_keep_its_event_loop_alive(clock):
    calls, fetch = refused_with()
    cache, loops = TokenCache(), []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await failures_at(cache, fetch, clock, [clock[0]])

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None, "the loop of a finished asyncio.run() is still referenced"
    assert len(calls) == 1


def test_a_held_failure_counts_its_retry_after_down(clock):
    calls, fetch = refused_with(retry_after=10.0)
    start = clock[0]
    first, later, last = asyncio.run(failures_at(TokenCache(), fetch, clock, [start, start + 4, start + 9.999]))
    assert (first.retry_after, later.retry_after) == (10.0, pytest.approx(6.0)), (
        "wait until the endpoint said, no later"
    )
    assert last.retry_after == pytest.approx(0.001) and len(calls) == 1


class KeywordOnlyError(Exception):
    def __init__(self, *, detail: str) -> None:
        super().__init__(f"broken: {detail}")


def test_an_error_of_another_kind_is_handed_on_as_a_wdata_error_naming_it(clock):
    cache, calls = TokenCache(), []

    async def broken() -> tuple[str, float]:
        calls.append(1)
        raise KeywordOnlyError(detail="x")

    async def main() -> list[BaseException]:
        raised = await asyncio.gather(*(cache.aget(KEY, broken) for _ in range(3)), return_exceptions=True)
        return [*raised, *(await asyncio.gather(cache.aget(KEY, broken), return_exceptions=True))]

    raised = asyncio.run(main())
    assert {(type(e), str(e)) for e in raised} == {(WdataError, "KeywordOnlyError: broken: x")}
    assert len({id(e) for e in raised}) == 4 and len(calls) == 1


def test_a_fetch_that_succeeded_holds_nothing(clock):
    cache, got = TokenCache(), []

    async def fetch() -> tuple[str, float]:
        got.append(1)
        return f"tok-{len(got)}", 600.0

    async def main() -> None:
        first = await cache.aget(KEY, fetch)
        cache.invalidate(KEY, first)  # the API refused it: the next ask fetches at once
        assert (await cache.aget(KEY, fetch)).value == "tok-2"

    asyncio.run(main())


def test_a_cancelled_caller_does_not_cancel_the_fetch_the_others_wait_on():
    async def main():
        cache = TokenCache()
        fetching, release = asyncio.Event(), asyncio.Event()
        fetches = 0

        async def fetch() -> tuple[str, float]:
            nonlocal fetches
            fetches += 1
            fetching.set()
            await release.wait()
            return "tok", 600.0

        first = asyncio.ensure_future(cache.aget(KEY, fetch))
        await fetching.wait()
        second = asyncio.ensure_future(cache.aget(KEY, fetch))
        await asyncio.sleep(0)  # the second caller is waiting on the fetch
        first.cancel()
        release.set()
        token = await asyncio.wait_for(second, 30)
        return first, token, fetches, cache

    first, token, fetches, cache = asyncio.run(main())
    assert first.cancelled() and token.value == "tok" and fetches == 1
    assert cache.fresh(KEY) is token


def test_aget_renews_with_the_margin_given(clock):
    cache, calls = TokenCache(), []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        return "t", 100.0

    asyncio.run(cache.aget(KEY, fetch, renew_margin=10))
    clock[0] = 1089.0
    asyncio.run(cache.aget(KEY, fetch, renew_margin=10))
    assert len(calls) == 1
    clock[0] = 1090.0
    asyncio.run(cache.aget(KEY, fetch, renew_margin=10))
    assert len(calls) == 2


def test_the_process_wide_cache_is_a_token_cache():
    assert isinstance(tokens.TOKENS, TokenCache)
