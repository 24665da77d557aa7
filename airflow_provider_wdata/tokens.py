"""OAuth2 access tokens, cached per process and shared by every hook and trigger in it.

Keyed by credential (token URL, client id, scope and a digest of the secret), renewed ``renew_margin``
seconds before they expire, and fetched once however many threads or coroutines ask at the same time. In an
event loop a failed fetch answers every coroutine that waited on it, and those of the same connection that ask for
:data:`FAILED_FETCH_HOLD` seconds after it, each with its own copy of the error: against a failing token endpoint
a triggerer sends about one token request a second per connection, however many waits it runs.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from airflow_provider_wdata.exceptions import WdataError

#: Renew a token this many seconds before it expires (at most half its lifetime).
DEFAULT_RENEW_MARGIN = 60.0
#: A failed async fetch answers the coroutines of its event loop and connection that ask for this many seconds
#: after it, instead of each sending a token request (the hook's default first backoff, so a call's own next try
#: asks again); longer when the token endpoint's answer said ``Retry-After``, up to :data:`FAILED_FETCH_HOLD_MAX`.
FAILED_FETCH_HOLD = 1.0
FAILED_FETCH_HOLD_MAX = 30.0


class AccessToken:
    """A bearer token that never shows itself in a repr or a log line."""

    __slots__ = ("expires_at", "value")

    def __init__(self, value: str, expires_in: float, renew_margin: float) -> None:
        self.value = value
        margin = min(renew_margin, max(expires_in, 0.0) / 2)
        self.expires_at = time.monotonic() + max(expires_in, 0.0) - margin

    @property
    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at

    def __repr__(self) -> str:
        return "AccessToken(***)"

    __str__ = __repr__


Fetch = Callable[[], tuple[str, float]]
AsyncFetch = Callable[[], Awaitable[tuple[str, float]]]


class TokenCache:
    def __init__(self) -> None:
        self._tokens: dict[Hashable, AccessToken] = {}
        self._guard = threading.Lock()
        self._thread_locks: dict[Hashable, threading.Lock] = {}
        self._loop_fetches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Fetch]] = (
            weakref.WeakKeyDictionary()
        )

    def fresh(self, key: Hashable) -> AccessToken | None:
        """The cached token for ``key`` while it is fresh, else None."""
        token = self._tokens.get(key)
        return token if token is not None and token.fresh else None

    def get(self, key: Hashable, fetch: Fetch, renew_margin: float = DEFAULT_RENEW_MARGIN) -> AccessToken:
        token = self.fresh(key)
        if token is not None:
            return token
        with self._guard:
            lock = self._thread_locks.setdefault(key, threading.Lock())
        with lock:
            token = self.fresh(key)
            if token is None:
                token = AccessToken(*fetch(), renew_margin)
                self._tokens[key] = token
            return token

    async def aget(
        self,
        key: Hashable,
        fetch: AsyncFetch,
        renew_margin: float = DEFAULT_RENEW_MARGIN,
        *,
        fetch_key: Hashable | None = None,
    ) -> AccessToken:
        """The token for ``key``; callers with the same ``fetch_key`` (default: ``key``) share one fetch of it,
        and its failure."""
        token = self.fresh(key)
        if token is not None:
            return token
        loop = asyncio.get_running_loop()
        fetches = self._loop_fetches.setdefault(loop, {})
        fetch_key = key if fetch_key is None else fetch_key
        current = fetches.get(fetch_key)
        if current is not None and current.failure is not None and time.monotonic() < current.answers_until:
            raise current.held_copy(current.failure)
        task = current.task if current is not None else None
        if task is None:
            # A task of its own, not the first caller's: a caller cancelled (its trigger taken over, its task
            # cleared) must not cancel the fetch the others wait on.
            task = loop.create_task(self._afetch(key, fetch, renew_margin))
            current = fetches[fetch_key] = _Fetch(task)
            task.add_done_callback(functools.partial(_landed, fetches, fetch_key, current))
        try:
            return await asyncio.shield(task)
        except Exception as error:
            # One exception object raised in every waiter would collect each waiter's frames in its traceback.
            failure = _own_copy(error)
        del task, current  # the copy's traceback keeps this frame: not the fetch, nor the task's own traceback
        raise failure  # out of the except block: nothing chained (the fetch's frames hold the client secret)

    async def _afetch(self, key: Hashable, fetch: AsyncFetch, renew_margin: float) -> AccessToken:
        token = AccessToken(*(await fetch()), renew_margin)
        self._tokens[key] = token
        return token

    def invalidate(self, key: Hashable, token: AccessToken) -> None:
        """Drop ``token`` after the API refused it, unless another caller already replaced it."""
        with self._guard:
            if self._tokens.get(key) is token:
                del self._tokens[key]

    def clear(self) -> None:
        """Drop every token, and every failed fetch still answering."""
        with self._guard:
            self._tokens.clear()
            for fetches in list(self._loop_fetches.values()):
                for key in [key for key, fetch in fetches.items() if fetch.task is None]:
                    del fetches[key]


@dataclass(slots=True)
class _Fetch:
    """An event loop's fetch of a connection's token: under way, or failed and still answering."""

    task: asyncio.Task[AccessToken] | None  # None once failed: the task would keep its event loop alive
    failure: Exception | None = None
    failed_at: float = 0.0  # monotonic seconds
    answers_until: float = math.inf

    def held_copy(self, failure: Exception) -> Exception:
        """A copy of ``failure`` for a later caller, its ``Retry-After`` counted down to now."""
        copy = _own_copy(failure)
        if isinstance(copy, WdataError) and copy.retry_after:
            copy.retry_after = max(copy.retry_after - (time.monotonic() - self.failed_at), 0.0) or None
        return copy


def _landed(fetches: dict[Hashable, _Fetch], key: Hashable, fetch: _Fetch, task: asyncio.Task[AccessToken]) -> None:
    error = None if task.cancelled() else task.exception()  # retrieved: every waiter got it already
    if not isinstance(error, Exception):  # a token, or the loop shutting down: nothing to hold
        if fetches.get(key) is fetch:
            del fetches[key]
        return
    retry_after = getattr(error, "retry_after", None) or 0.0
    fetch.task, fetch.failure, fetch.failed_at = None, _own_copy(error), time.monotonic()
    fetch.answers_until = fetch.failed_at + min(max(FAILED_FETCH_HOLD, retry_after), FAILED_FETCH_HOLD_MAX)


def _own_copy(error: Exception) -> Exception:
    """A new exception of the same type, message and attributes, without the traceback of the first raise. Any
    error but the provider's own (whose attributes all live in ``__dict__``) becomes a WdataError naming it."""
    if not isinstance(error, WdataError):
        return WdataError(f"{type(error).__name__}: {error}")
    copy = type(error).__new__(type(error), *error.args)
    copy.__dict__.update(error.__dict__)
    return copy


#: The process-wide cache.
TOKENS = TokenCache()
