"""Immutable views of the Wdata objects the provider reads: a refresh run, a batch, a connection.

Built from the service's camelCase JSON with ``from_api``; tolerant of missing, null, mistyped and unknown
fields (a new field from the service is ignored, a missing one reads as None). ``to_dict`` gives back a
plain JSON-able dict with snake_case keys, fit for XCom. Shallowly immutable: the mappings are read-only views,
but what is nested in them is the decoded JSON's own; unchanged status reads hand back the same object.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CAMEL_BOUNDARY = re.compile(r"_([a-z])")

M = TypeVar("M", bound="_Model")


def _camel(name: str) -> str:
    return _CAMEL_BOUNDARY.sub(lambda m: m.group(1).upper(), name)


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)  # JSON gives dicts: no ABC check for them


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return None if isinstance(value, (dict, list)) else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    if not value or not _is_mapping(value):
        return _EMPTY
    return MappingProxyType(dict(value))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _Model):
        return value.to_dict()
    if _is_mapping(value):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class _Model:
    @classmethod
    def from_api(cls: type[M], data: Any) -> M:
        """Read one object from the service's JSON (anything that is not an object reads as empty)."""
        source: Mapping[str, Any] = data if _is_mapping(data) else _EMPTY
        return cls(**{name: convert(source.get(key)) for name, key, convert in _read_plan(cls)})  # type: ignore[arg-type]

    @classmethod
    def _converter(cls, name: str) -> Callable[[Any], Any]:
        """How the field ``name`` is read from JSON; subclasses name their nested objects."""
        return _mapping if name.endswith(("_parameters", "_metadata")) else _text

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict with snake_case keys."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class ConnectionRun(_Model):
    """One connection refresh (a ``ConnectionRun``): on its own, or a child of a batch."""

    connection_id: str | None = None
    job_id: str | None = None
    source_status: str | None = None
    destination_status: str | None = None
    error: str | None = None
    created: str | None = None
    created_by: str | None = None
    updated: str | None = None
    workspace_id: str | None = None
    source_workspace_id: str | None = None
    destination_workspace_id: str | None = None
    source_parameters: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    destination_parameters: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    source_metadata: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    destination_metadata: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)


@dataclasses.dataclass(frozen=True)
class RefreshBatch(_Model):
    """A batch refresh (a ``RefreshBatch``) and its child runs."""

    batch_refresh_id: str | None = None
    source_status: str | None = None
    destination_status: str | None = None
    error: str | None = None
    created: str | None = None
    created_by: str | None = None
    updated: str | None = None
    child_refreshes: tuple[ConnectionRun, ...] = ()

    @classmethod
    def _converter(cls, name: str) -> Callable[[Any], Any]:
        return _children if name == "child_refreshes" else super()._converter(name)


@dataclasses.dataclass(frozen=True)
class WdataConnection(_Model):
    """A Wdata connection (not to be confused with an Airflow connection)."""

    id: str | None = None
    name: str | None = None
    description: str | None = None
    source_type: str | None = None
    source_id: str | None = None
    destination_type: str | None = None
    destination_id: str | None = None
    workspace_id: str | None = None
    created: str | None = None
    updated: str | None = None
    last_run: ConnectionRun | None = None

    @classmethod
    def _converter(cls, name: str) -> Callable[[Any], Any]:
        return _last_run if name == "last_run" else super()._converter(name)


@functools.cache
def _read_plan(cls: type[_Model]) -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    """(field, JSON key, converter) for each field of a model, worked out once per class."""
    return tuple((f.name, _camel(f.name), cls._converter(f.name)) for f in dataclasses.fields(cls))


def _children(raw: Any) -> tuple[ConnectionRun, ...]:
    return tuple(ConnectionRun.from_api(child) for child in raw) if isinstance(raw, list) else ()


def _last_run(raw: Any) -> ConnectionRun | None:
    return ConnectionRun.from_api(raw) if _is_mapping(raw) else None
