"""Checks of task arguments made when a DAG is parsed, before any request: they name the argument as written."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any


def is_templated(value: Any) -> bool:
    """True when ``value`` (or anything inside it) holds a Jinja template still to be rendered."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_templated(k) or is_templated(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return False


def positive_seconds(value: Any, name: str) -> float:
    """Seconds from a number or a timedelta; anything but a finite positive duration is refused."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds (or a timedelta), not {value!r}.")
    return float(seconds)
