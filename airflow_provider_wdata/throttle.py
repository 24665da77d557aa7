"""One 429 slows the credential, not one wait: a pacer per event loop and per API origin and client id.

Every async call of a loop for the same origin and client id goes through the same :class:`Gate` entry:

- A 429 with ``Retry-After`` closes the credential until then: every call holds its next request.
- Any 429 also paces the credential: from then on calls go out one at a time, in the order they asked, at
  :data:`PACE_BACKOFF` of the rate the service took in the second before the 429 (of the pace itself, once
  paced). Each second without a 429 the pace rises by :data:`PACE_GROWTH` of that first rate, so it follows a
  limit that changes or that other processes share (additive increase, multiplicative decrease, as TCP does),
  and pacing ends once the pace reaches :data:`PACE_END` times it.
- A 429 for a request sent before the last slowdown is the overload already answered: it slows nothing more.

Held calls therefore leave a pause at a rate the service takes, not all at once. A call's turn is a slot on the
pace's timeline: a loop that stalls sends the turns the stall delayed together, but no more of them than the
pace allowed over that time, so a service that counts requests per window still sees the pace. Before the
first 429, a call costs a dictionary lookup and a counter.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Hashable
from dataclasses import dataclass

#: Seconds over which a credential's sends are counted, to know the rate the service took before a 429.
RATE_WINDOW = 1.0
#: After a 429, the pace is this share of the rate that met it.
PACE_BACKOFF = 0.75
#: Each second without a 429, the pace rises by this share of the rate the first 429 met.
PACE_GROWTH = 0.05
#: Pacing ends once the pace reaches this multiple of the rate the first 429 met.
PACE_END = 2.0
#: The slowest pace, in requests per second.
PACE_MIN_RATE = 1.0


@dataclass(slots=True)
class _Credential:
    """What one loop knows of one credential: its recent sends, its pause and its pace."""

    window_start: float  # sends are counted in windows of RATE_WINDOW from here
    sent_now: int = 0  # sends since window_start
    sent_before: int = 0  # sends in the window before it
    closed_until: float = 0.0
    rate: float | None = None  # paced: requests per second at paced_at; None: not paced
    ceiling: float = 0.0  # the rate the first 429 of this pacing met
    paced_at: float = 0.0
    next_slot: float = 0.0
    slowed_at: float = -math.inf
    epoch: int = 0  # moves on at each slowdown: turns given before it no longer count

    def _roll(self, now: float) -> None:
        elapsed = now - self.window_start
        if elapsed >= RATE_WINDOW:
            self.sent_before = self.sent_now if elapsed < 2 * RATE_WINDOW else 0
            self.sent_now = 0
            self.window_start = now - elapsed % RATE_WINDOW

    def count_send(self, now: float) -> None:
        self._roll(now)
        self.sent_now += 1

    def recent_rate(self, now: float) -> float:
        """Sends per second over the last :data:`RATE_WINDOW` (the sliding-window counter estimate)."""
        self._roll(now)
        share = 1 - (now - self.window_start) / RATE_WINDOW
        return (self.sent_now + self.sent_before * share) / RATE_WINDOW

    def pace(self, now: float) -> float | None:
        """The pace now, in requests per second; None once pacing ended (or never began)."""
        if self.rate is None:
            return None
        rate = self.rate + PACE_GROWTH * self.ceiling * max(now - self.paced_at, 0.0)
        if rate >= PACE_END * self.ceiling:
            self.rate = None
            return None
        return rate

    def holds(self, now: float) -> bool:
        return self.rate is not None or now < self.closed_until


class Gate:
    """The pauses and paces of one event loop, by credential key. Times are ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self._credentials: dict[Hashable, _Credential] = {}

    def _credential(self, key: Hashable, now: float) -> _Credential:
        credential = self._credentials.get(key)
        if credential is None:
            credential = self._credentials[key] = _Credential(window_start=now)
        return credential

    def holds(self, key: Hashable) -> bool:
        """Whether a call for ``key`` must wait for its turn (:meth:`wait_turn`) before it sends."""
        credential = self._credentials.get(key)
        return credential is not None and credential.holds(time.monotonic())

    def closed_for(self, key: Hashable) -> float:
        """Seconds until a ``Retry-After`` pause of ``key`` ends (0 when there is none)."""
        credential = self._credentials.get(key)
        return max(credential.closed_until - time.monotonic(), 0.0) if credential is not None else 0.0

    def pace(self, key: Hashable) -> float | None:
        """The pace of ``key`` in requests per second, or None when its calls are not paced."""
        credential = self._credentials.get(key)
        return credential.pace(time.monotonic()) if credential is not None else None

    async def wait_turn(self, key: Hashable) -> None:
        """Return at this call's turn: after any pause, and one pace slot after the call before it."""
        credential = self._credential(key, time.monotonic())
        while True:
            now = time.monotonic()
            epoch = credential.epoch
            turn = max(now, credential.closed_until)
            rate = credential.pace(turn)
            if rate is not None:
                turn = max(turn, credential.next_slot)
                credential.next_slot = turn + 1 / rate
            if turn <= now:
                return
            await asyncio.sleep(turn - now)
            if credential.epoch == epoch and time.monotonic() >= credential.closed_until:
                return

    def sent(self, key: Hashable) -> float:
        """Count a request about to go out for ``key``; returns the time to give :meth:`throttled` if it gets a 429."""
        now = time.monotonic()
        self._credential(key, now).count_send(now)
        return now

    def throttled(self, key: Hashable, retry_after: float | None, sent_at: float) -> None:
        """The request sent at ``sent_at`` got a 429, with ``Retry-After`` seconds (or None)."""
        now = time.monotonic()
        credential = self._credential(key, now)
        if retry_after:
            credential.closed_until = max(credential.closed_until, now + retry_after)
        if sent_at < credential.slowed_at:
            return  # sent before the last slowdown: that overload is already answered
        rate = credential.pace(now)
        if rate is None:
            credential.ceiling = max(credential.recent_rate(now), PACE_MIN_RATE)
            rate = credential.ceiling
        credential.rate = max(rate * PACE_BACKOFF, PACE_MIN_RATE)
        credential.paced_at = max(now, credential.closed_until)
        credential.next_slot = credential.paced_at
        credential.slowed_at = now
        credential.epoch += 1


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


def loop_gate() -> Gate:
    """The gate of the running event loop."""
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = Gate()
    return gate
