"""What the simulator received: :class:`RecordedRequest` and the log that keeps them."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDictProxy

__all__ = ["API_PREFIX", "TOKEN_PATHS", "RecordedRequest", "RequestLog"]

API_PREFIX = "/s/wdata/prep"
TOKEN_PATHS = ("/iam/v1/oauth2/token", "/oauth2/token")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received (recorded before faults, authentication and rate limiting)."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]  # case-insensitive, read-only mapping
    body: bytes
    at: float  # time.monotonic() when the request was received

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    @property
    def is_token_request(self) -> bool:
        return self.path in TOKEN_PATHS


class RequestLog:
    """Every recorded request, oldest first. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
