"""Checks of task arguments made when a DAG is parsed, before any request: they name the argument as written."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow_provider_wdata._compat import ResolveMixin


def is_templated(value: Any) -> bool:
    """True when ``value`` (or anything inside it) is only known once Airflow renders the task: a Jinja template,
    or a value Airflow resolves then (see :func:`is_resolved_by_airflow`). Such values are checked when the task
    runs."""
    return _holds(value, lambda item: _is_jinja(item) or isinstance(item, ResolveMixin))


def is_resolved_by_airflow(value: Any) -> bool:
    """True when ``value`` (or anything inside it) is an object Airflow resolves when it renders the task: an
    XComArg (a TaskFlow task's result, ``task.output``), a mapped task group's MappedArgument, a DagParam..."""
    return _holds(value, lambda item: isinstance(item, ResolveMixin))


def _is_jinja(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _holds(value: Any, matches: Callable[[Any], bool]) -> bool:
    """``matches`` holds for ``value`` or for an item of it, through the containers Airflow renders the items of."""
    if matches(value):
        return True
    if isinstance(value, dict):
        return any(_holds(k, matches) or _holds(v, matches) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds(v, matches) for v in value)
    return False


def positive_seconds(value: Any, name: str) -> float:
    """Seconds from a number or a timedelta; anything but a finite positive duration is refused."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds (or a timedelta), not {value!r}.")
    return float(seconds)
