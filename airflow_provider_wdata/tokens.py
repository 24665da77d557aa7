"""OAuth2 access tokens, cached per process and shared by every hook and trigger in it.

Keyed by credential (token URL, client id, scope and a digest of the secret), renewed ``renew_margin``
seconds before they expire, and fetched once however many threads or coroutines ask at the same time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable

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
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, asyncio.Lock]] = (
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

    async def aget(self, key: Hashable, fetch: AsyncFetch, renew_margin: float = DEFAULT_RENEW_MARGIN) -> AccessToken:
        token = self.fresh(key)
        if token is not None:
            return token
        locks = self._loop_locks.setdefault(asyncio.get_running_loop(), {})
        lock = locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self.fresh(key)
            if token is None:
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


#: The process-wide cache.
TOKENS = TokenCache()
