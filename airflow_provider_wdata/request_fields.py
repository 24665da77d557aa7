"""What goes into a Wdata request, checked before it is built: ids in paths, workspace ids, RefreshConnection bodies.

Pure code, run when a DAG is parsed (for arguments that are not templated) and again before each request; every
refusal names the argument, what is wrong with it and what to write instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from airflow_provider_wdata.constants import MAX_BATCH_SIZE, MAX_WORKSPACE_ID_LENGTH
from airflow_provider_wdata.exceptions import WdataConfigError

_FORBIDDEN_IN_ID = re.compile(r"[/\\?#%\s\x00-\x1f\x7f]")
#: Ids made only of these (UUIDs, for one) go into a path as they are.
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")

REFRESH_CONNECTION_FIELDS = {
    "connection_id": "connectionId",
    "source_parameters": "sourceParameters",
    "destination_parameters": "destinationParameters",
    "use_previous_source_parameters": "usePreviousSourceParameters",
    "use_previous_destination_parameters": "usePreviousDestinationParameters",
    "workspace_id": "workspaceId",
}


def path_param(name: str, value: Any) -> str:
    """Check one id that goes into a path and percent-encode it, so it can never change the path."""
    if not isinstance(value, str) or not value.strip():
        raise WdataConfigError(f"{name} must be a non-empty string, not {value!r}.")
    if _FORBIDDEN_IN_ID.search(value) or value in (".", ".."):
        raise WdataConfigError(
            f"{name} {value!r} is not a valid Wdata id: ids hold no '/', '\\', '?', '#', '%', whitespace "
            "or control characters and are not '.' or '..'. Check where the id comes from "
            "(a template or an XCom value may hold something else)."
        )
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="")


def validate_workspace_id(workspace_id: Any) -> None:
    if not isinstance(workspace_id, str) or not workspace_id or len(workspace_id) > MAX_WORKSPACE_ID_LENGTH:
        raise WdataConfigError(
            f"workspace_id must be a string of 1 to {MAX_WORKSPACE_ID_LENGTH} characters, not {workspace_id!r}."
        )


def _not_json(value: Any, where: str) -> str | None:
    """Where in ``value`` something sits that the JSON body cannot carry, and what it is; None if nothing."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r}, not a string"
            found = _not_json(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next(filter(None, (_not_json(item, f"{where}[{i}]") for i, item in enumerate(value))), None)
    return f"{where} is a {type(value).__name__}"


def _plain_json(value: Any) -> Any:
    """``value`` with every mapping a dict and every tuple a list: the JSON encoder takes no other kind (a model's
    ``source_parameters`` is a read-only mapping)."""
    if isinstance(value, Mapping):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(item) for item in value]
    return value


def refresh_connection_item(item: Any, *, workspace_id: str | None = None, where: str = "") -> dict[str, Any]:
    """One RefreshConnection: a connection id, or a dict of its snake_case fields."""
    if isinstance(item, str):
        item = {"connection_id": item}
    if not isinstance(item, Mapping):
        raise WdataConfigError(
            f"{where}must be a connection id or a dict of RefreshConnection fields, not {type(item).__name__}."
        )
    unknown = sorted(set(item) - set(REFRESH_CONNECTION_FIELDS))
    if unknown:
        raise WdataConfigError(
            f"{where}has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(REFRESH_CONNECTION_FIELDS)}."
        )
    path_param(f"{where}connection_id", item.get("connection_id"))
    for key in ("source_parameters", "destination_parameters"):
        if item.get(key) is not None and not isinstance(item[key], Mapping):
            raise WdataConfigError(f"{where}{key} must be a dict, not {type(item[key]).__name__}.")
        problem = _not_json(item.get(key), f"{where}{key}")
        if problem:
            raise WdataConfigError(
                f"{problem}, which a JSON request cannot carry; pass text, numbers, true/false, lists or dicts "
                "(a date as a string, e.g. '{{ ds }}' or value.isoformat())."
            )
    for key in ("use_previous_source_parameters", "use_previous_destination_parameters"):
        if item.get(key) is not None and not isinstance(item[key], bool):
            raise WdataConfigError(f"{where}{key} must be true or false, not {item[key]!r}.")
    body = {REFRESH_CONNECTION_FIELDS[k]: _plain_json(v) for k, v in item.items() if v is not None}
    if workspace_id is not None and "workspaceId" not in body:
        body["workspaceId"] = workspace_id
    if body.get("workspaceId") is not None:
        validate_workspace_id(body["workspaceId"])
    return body


def validate_batch_connections(connections: Any, workspace_id: str | None = None) -> list[dict[str, Any]]:
    """Check the connections of a batch refresh: the RefreshConnection bodies, or an error naming the problem."""
    if isinstance(connections, (str, Mapping)) or not isinstance(connections, Sequence):
        raise WdataConfigError(
            "connections must be a list of connection ids or RefreshConnection dicts, "
            f"not {type(connections).__name__} (a template renders to a string unless the DAG sets "
            "render_template_as_native_obj=True)."
        )
    if not 1 <= len(connections) <= MAX_BATCH_SIZE:
        raise WdataConfigError(
            f"A batch refresh takes 1 to {MAX_BATCH_SIZE} connections; got {len(connections)}. "
            "Split larger sets into several batches."
        )
    items = [
        refresh_connection_item(item, workspace_id=workspace_id, where=f"connections[{i}] ")
        for i, item in enumerate(connections)
    ]
    seen: set[str] = set()
    for item in items:
        if item["connectionId"] in seen:
            raise WdataConfigError(
                f"connection {item['connectionId']!r} appears more than once; list each connection once."
            )
        seen.add(item["connectionId"])
    return items


def validate_refresh_fields(connection_id: Any, workspace_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Check the fields of a single connection refresh: its RefreshConnection body, or an error naming the problem."""
    body = refresh_connection_item({"connection_id": connection_id, **fields}, workspace_id=workspace_id)
    body.pop("connectionId")
    return body
