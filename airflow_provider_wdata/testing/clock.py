"""A clock a test moves by hand, for the simulator's time-based behaviour (``WdataSimulator(clock=...)``)."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """Returns ``now`` (seconds) until a test changes it or calls :meth:`advance`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
