"""One 429 pauses the credential, not one wait: a gate per event loop and per API origin and client id.

When the service answers 429 with ``Retry-After``, every async call of the loop for the same origin and client
id holds its next request until then, instead of each of a triggerer's waits finding the 429 for itself. Held
calls are let through spread over a window as long as the pause (at most :data:`REOPEN_SPREAD_MAX`), and check
the gate again just before sending, so a 429 that comes back while they trickle through closes it for the rest.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Hashable

#: Longest window over which held calls are let through once a pause ends (seconds).
REOPEN_SPREAD_MAX = 10.0


class Gate:
    """The pauses of one event loop, by credential key. Times are ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self._closed_until: dict[Hashable, float] = {}
        self._spread: dict[Hashable, float] = {}

    def close(self, key: Hashable, seconds: float) -> None:
        """Hold every call for ``key`` for ``seconds`` from now (a later pause already set is kept).

        A 429 that comes while held calls are being let through after a pause means they went out faster than
        the service takes them: the next reopening window is twice as long (up to :data:`REOPEN_SPREAD_MAX`).
        """
        now = time.monotonic()
        until = now + max(seconds, 0.0)
        previous = self._closed_until.get(key)
        if previous is not None and until <= previous:
            return
        spread = min(max(seconds, 0.1), REOPEN_SPREAD_MAX)
        if previous is not None and previous <= now < previous + self._spread.get(key, 0.0):
            spread = min(max(spread, 2 * self._spread[key]), REOPEN_SPREAD_MAX)
        self._closed_until[key] = until
        self._spread[key] = spread

    def closed_for(self, key: Hashable) -> float:
        """Seconds until the gate for ``key`` opens (0 when open)."""
        until = self._closed_until.get(key)
        return max(until - time.monotonic(), 0.0) if until is not None else 0.0

    async def wait_open(self, key: Hashable) -> None:
        """Return once the gate for ``key`` is open, at a random point of its reopening window."""
        while (remaining := self.closed_for(key)) > 0:
            await asyncio.sleep(remaining + random.uniform(0, self._spread.get(key, 0.0)))


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


def loop_gate() -> Gate:
    """The gate of the running event loop."""
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = Gate()
    return gate
