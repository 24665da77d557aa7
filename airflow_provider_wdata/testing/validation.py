"""Checks of what a client sends the simulated Wdata service, and the errors they raise."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = [
    "MAX_BATCH",
    "MAX_WORKSPACE_ID",
    "ServiceError",
    "check_workspace_id",
    "decode_cursor",
    "detail",
    "encode_cursor",
    "parse_bool",
    "parse_int",
    "parse_json",
    "validate_batch_items",
    "validate_refresh_connection",
]

MAX_BATCH = 100
MAX_WORKSPACE_ID = 40
_CURSOR_PREFIX = "simcur1."


class ServiceError(Exception):
    """An error the API answers with its documented envelope: ``{"body": message, "code": status, ...}``."""

    def __init__(self, status: int, message: str | list[str], details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def bad_request(message: str, details: list[dict[str, Any]]) -> ServiceError:
    return ServiceError(400, message, details)


def detail(code: str, message: str, target: str) -> dict[str, Any]:
    return {"code": code, "message": message, "target": target}


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request("The request body is not valid JSON", [detail("invalid_json", str(exc), "body")]) from None


def parse_bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_request(f"Invalid {name}: {value!r}", [detail("invalid_value", "expected true or false", name)])


def parse_int(value: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise bad_request(
            f"Invalid {name}: {value!r} (expected an integer {bound})",
            [detail("invalid_value", f"expected an integer {bound}", name)],
        )
    return number


def encode_cursor(offset: int) -> str:
    raw = json.dumps({"offset": offset}).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        if not cursor.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        data = cursor[len(_CURSOR_PREFIX) :]
        offset = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
        return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request(
            "Invalid cursor", [detail("invalid_value", "unknown or malformed cursor", "cursor")]
        ) from None


def check_workspace_id(workspace_id: str | None) -> str | None:
    """The ``workspaceId`` query parameter: ``None`` when absent or empty."""
    workspace_id = workspace_id or None
    if workspace_id is not None and len(workspace_id) > MAX_WORKSPACE_ID:
        raise bad_request(
            "Invalid workspaceId", [detail("invalid_size", f"at most {MAX_WORKSPACE_ID} characters", "workspaceId")]
        )
    return workspace_id


def validate_batch_items(items: Any) -> list[dict[str, Any]]:
    """The body of a batch refresh start: 1 to ``MAX_BATCH`` RefreshConnection objects with a connectionId."""
    if not isinstance(items, list):
        raise bad_request(
            "The request body must be a JSON array of RefreshConnection objects",
            [detail("invalid_type", "expected an array", "body")],
        )
    if not 1 <= len(items) <= MAX_BATCH:
        raise bad_request(
            f"A batch refresh takes 1 to {MAX_BATCH} connections, got {len(items)}",
            [detail("invalid_size", f"expected 1..{MAX_BATCH} items, got {len(items)}", "body")],
        )
    details: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        details.extend(validate_refresh_connection(item, f"[{index}]", require_id=True))
    if details:
        raise bad_request("Invalid RefreshConnection in the request body", details)
    return items


def validate_refresh_connection(item: Any, target: str, require_id: bool) -> list[dict[str, Any]]:
    """The problems of one RefreshConnection object, as error details (empty when it is valid)."""
    if not isinstance(item, dict):
        return [detail("invalid_type", "expected a RefreshConnection object", target)]
    details = []
    prefix = "" if target == "body" else f"{target}."
    connection_id = item.get("connectionId")
    if connection_id is None:
        if require_id:
            details.append(detail("required", "connectionId is required", prefix + "connectionId"))
    elif not isinstance(connection_id, str) or not connection_id:
        details.append(detail("invalid_type", "expected a non-empty string", prefix + "connectionId"))
    for key in ("sourceParameters", "destinationParameters"):
        if item.get(key) is not None and not isinstance(item[key], dict):
            details.append(detail("invalid_type", "expected an object", prefix + key))
    for key in ("usePreviousSourceParameters", "usePreviousDestinationParameters"):
        if item.get(key) is not None and not isinstance(item[key], bool):
            details.append(detail("invalid_type", "expected a boolean", prefix + key))
    workspace_id = item.get("workspaceId")
    if workspace_id is not None and (not isinstance(workspace_id, str) or len(workspace_id) > MAX_WORKSPACE_ID):
        details.append(
            detail(
                "invalid_value", f"expected a string of at most {MAX_WORKSPACE_ID} characters", prefix + "workspaceId"
            )
        )
    return details
