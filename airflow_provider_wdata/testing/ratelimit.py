"""A per-client request rate limit for the simulator (answered with 429 and ``Retry-After``). No I/O."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per client, over a sliding window; ``limit=None``: off.

    A refused request does not count against the window. Thread-safe.
    """

    def __init__(
        self, limit: int | None = None, window: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: dict[str, deque[float]] = {}  # client -> clock times of its admitted requests
        #: Requests refused so far (429s served).
        self.refused = 0
        self.limit: int | None = None
        self.window = 1.0
        self.configure(limit, window)

    def configure(self, limit: int | None, window: float = 1.0) -> None:
        """Set the limit (``None``: off) and forget the requests admitted so far."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("the rate limit must be a whole number of requests >= 1, or None")
        if not window > 0:
            raise ValueError("the rate limit window must be > 0 seconds")
        with self._lock:
            self.limit, self.window = limit, window
            self._admitted.clear()

    def admit(self, client: str) -> int | None:
        """``None`` if ``client`` may make this request now (it is counted), else the whole seconds to wait."""
        now = self._clock()
        with self._lock:
            if self.limit is None:
                return None
            admitted = self._admitted.setdefault(client, deque())
            while admitted and admitted[0] <= now - self.window:
                admitted.popleft()
            if len(admitted) < self.limit:
                admitted.append(now)
                return None
            self.refused += 1
            return max(1, math.ceil(admitted[0] + self.window - now))

    def reset(self) -> None:
        with self._lock:
            self._admitted.clear()
            self.refused = 0
