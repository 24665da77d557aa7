"""Scripted misbehaviours of the simulator (:class:`Fault`) and the ordered book that hands them out."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_HUGE_SIZE", "FAULT_KINDS", "Fault", "FaultBook"]

FAULT_KINDS = ("status", "slow", "drop", "malformed", "html", "empty", "huge", "no_body_key")
DEFAULT_HUGE_SIZE = 5 * 1024 * 1024


@dataclass
class Fault:
    """One scripted misbehaviour. Faults are matched first-match in the order added and consumed.

    ``method`` (``None`` = any) and ``path_contains`` (``None`` = any; matched against the path, and the
    path with its query string) select requests, token paths included. The first ``skip`` matching
    requests are let through; then the fault fires ``times`` times (``None`` = until
    :meth:`WdataSimulator.clear_faults`). Every kind first sleeps ``delay`` seconds.

    Kinds: ``status`` (answer ``status``, default 500, with ``headers`` and ``body``: dict/list as JSON,
    str/bytes raw, ``None`` the documented error envelope), ``slow`` (then answer normally), ``drop``
    (read the request, close the TCP connection without a response), ``malformed`` (200, truncated JSON;
    ``body`` overrides the text), ``html`` (``status``, default 502, an HTML page), ``empty`` (200, empty
    body), ``huge`` (the normal response with its envelope padded to about ``size`` bytes by an extra
    ``"_padding"`` key), ``no_body_key`` (200 ``{"code": 200}``).

    Faults are answered before authentication, rate limiting and any state change, except the ``slow`` and
    ``huge`` kinds, which serve the normal response (late, or padded).
    """

    method: str | None = None
    path_contains: str | None = None
    times: int | None = 1
    kind: str = "status"
    status: int | None = None
    headers: dict[str, str] | None = None
    body: Any = None
    delay: float = 0.0
    size: int = DEFAULT_HUGE_SIZE
    skip: int = 0
    #: How many times this fault has fired so far (updated by the simulator).
    fired: int = field(default=0, init=False, compare=False)
    _seen: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")

    def matches(self, method: str, path: str, path_qs: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path or self.path_contains in path_qs

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultBook:
    """The faults still to fire, in the order added. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def __bool__(self) -> bool:
        return bool(self._faults)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, method: str, path: str, path_qs: str) -> Fault | None:
        """The fault that fires for this request, if any; an exhausted fault leaves the book."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path, path_qs):
                    continue
                fault._seen += 1
                if fault._seen <= fault.skip:
                    continue
                fault.fired += 1
                if fault.exhausted:
                    self._faults.remove(fault)
                return fault
        return None
