"""OAuth2 access tokens, cached per process and shared by every hook and trigger in it.

Keyed by credential (token URL, client id, scope and a digest of the secret), renewed ``renew_margin``
seconds before they expire, and fetched once however many threads or coroutines ask at the same time. In an
event loop a fetch that fails fails for every coroutine that was waiting on it (each gets its own copy of the
error): a triggerer with thousands of waits sends one token request per round against a failing token
endpoint, not one per wait, queued one after the other.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

#: Renew a token this many seconds before it expires (at most half its lifetime).
DEFAULT_RENEW_MARGIN = 60.0


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
        self._loop_fetches: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[AccessToken]]
        ] = weakref.WeakKeyDictionary()

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

    async def aget(self, key: Hashable, fetch: AsyncFetch, renew_margin: float = DEFAULT_RENEW_MARGIN) -> AccessToken:
        token = self.fresh(key)
        if token is not None:
            return token
        loop = asyncio.get_running_loop()
        fetches = self._loop_fetches.setdefault(loop, {})
        pending = fetches.get(key)
        if pending is None:
            # A task of its own, not the first caller's: a caller cancelled (its trigger taken over, its task
            # cleared) must not cancel the fetch the others wait on.
            pending = fetches[key] = loop.create_task(self._afetch(key, fetch, renew_margin))
            pending.add_done_callback(functools.partial(_forget, fetches, key))
        try:
            return await asyncio.shield(pending)
        except Exception as error:
            # One exception object raised in every waiter would collect each waiter's frames in its traceback.
            failure = _own_copy(error)
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
        with self._guard:
            self._tokens.clear()


def _forget(fetches: dict[Hashable, asyncio.Future[AccessToken]], key: Hashable, done: asyncio.Future[Any]) -> None:
    if fetches.get(key) is done:
        del fetches[key]
    if not done.cancelled():
        done.exception()  # retrieved: a failure every waiter already got is not "never retrieved"


def _own_copy(error: Exception) -> Exception:
    """A new exception of the same type, message and attributes, without the traceback of the first raise (the
    error itself for a type that cannot be made so)."""
    try:
        copy = type(error).__new__(type(error), *error.args)
        copy.__dict__.update(error.__dict__)
    except Exception:
        return error
    return copy


#: The process-wide cache.
TOKENS = TokenCache()
