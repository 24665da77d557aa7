"""Read ticks: an event loop's async reads leave on shared ticks, a bounded number per tick.

Reads due within the same tick of :data:`READ_TICK` seconds go out together, in one event-loop turn, on one timer
for all of them, so that a triggerer with thousands of waits wakes at most 20 times a second rather than once
per read. At most :data:`READS_PER_TICK` leave on one tick: the rest of a burst (hundreds of waits deferred
together, or due together) take the following ticks, so a burst is spread over time instead of holding hundreds
of requests in flight at once, and the waits stay spread over those ticks from then on.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref

#: Async reads due within the same tick of this many seconds go out together (at most a tenth of the poll
#: interval; a read moves by at most half a tick when its tick has room). Longer ticks save a little more CPU
#: but send bigger bursts: more connections, more memory, and more 429s before the first one comes back.
READ_TICK = 0.05
#: Most reads that leave on one tick of an event loop (320 a second with :data:`READ_TICK`); more due on the
#: same tick leave on the following ones. A read in flight holds about 41 objects for the garbage collector, which
#: runs a young collection once 700 more objects are alive than at its last run: 16 reads in flight stay under
#: that, 20 crossed it on every tick, and the collections promoted the reads' objects while they were in use
#: (``benchmarks/README.md``, "Reads per tick"). Smaller ticks lose the shared wake-ups.
READS_PER_TICK = 16


class _Ticks:
    """The ticks of one event loop: for each tick with a read due, the futures of those reads, and one timer."""

    def __init__(self) -> None:
        self._due: dict[tuple[float, int], list[asyncio.Future[None]]] = {}
        # For each full tick not fired yet, a later tick at or before the first with room (a union-find "next
        # free" pointer, shortened as it is followed): a burst of N reads finds room in near-constant time per read
        # instead of walking the N/16 full ticks before it (5,000 at once took 87 ms of one loop turn, 20,000 1.4 s).
        self._full: dict[tuple[float, int], int] = {}

    def after(self, loop: asyncio.AbstractEventLoop, delay: float, tick: float) -> asyncio.Future[None]:
        """A future done about ``delay`` seconds from now, on the nearest multiple of ``tick`` with room."""
        index = self._with_room(tick, round((loop.time() + delay) / tick))
        woken = loop.create_future()
        waiting = self._due.get((tick, index))
        if waiting is None:
            waiting = self._due[tick, index] = []
            loop.call_at(index * tick, self._fire, (tick, index), context=_NO_CONTEXT)
        waiting.append(woken)
        if len(waiting) >= READS_PER_TICK:
            self._full[tick, index] = index + 1
        return woken

    def _with_room(self, tick: float, index: int) -> int:
        """The first tick at or after ``index`` with room. Ticks fire in order, so the full ones a pointer passes
        over have not fired while the tick it starts from has not."""
        found = index
        while (tick, found) in self._full:
            found = self._full[tick, found]
        while index != found:  # every full tick passed now points at the one found
            passed, index = index, self._full[tick, index]
            self._full[tick, passed] = found
        return found

    def _fire(self, key: tuple[float, int]) -> None:
        self._full.pop(key, None)
        for woken in self._due.pop(key):
            if not woken.done():  # its waiter may have been cancelled
                woken.set_result(None)


#: Each loop's ticks, held weakly: its pending tick timers keep them alive, and they hold futures that hold the loop,
#: so a strong reference here would keep every loop that ever waited (``asyncio.run()`` calls, tests) alive.
_TICKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[_Ticks]] = weakref.WeakKeyDictionary()
#: The tick timers read no context variable: they share this context instead of each copying the caller's.
_NO_CONTEXT = contextvars.Context()


def tick_after(delay: float, tick: float) -> asyncio.Future[None]:
    """A future done about ``delay`` seconds from now, on the running loop's next tick with room (a plain
    function, not a coroutine: one object fewer per waiting trigger)."""
    loop = asyncio.get_running_loop()
    held = _TICKS.get(loop)
    ticks = held() if held is not None else None
    if ticks is None:
        ticks = _Ticks()
        _TICKS[loop] = weakref.ref(ticks)
    return ticks.after(loop, delay, tick)
