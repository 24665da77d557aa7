"""Errors raised by the provider. Messages name the problem and the fix, and never a secret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_wdata._compat import AirflowException, AirflowFailException, AirflowSensorTimeout


class WdataError(AirflowException):
    """Base class of every error raised by this provider."""

    #: True when trying the same call again later may succeed (network trouble, 429, 5xx).
    retryable: bool = False
    #: Seconds the service asked us to wait (``Retry-After``), when it said so.
    retry_after: float | None = None


class WdataConfigError(WdataError, ValueError):
    """The Airflow connection or an argument is wrong; the message names the field to fix."""


class WdataTransportError(WdataError):
    """The request did not get an HTTP response: connection refused or dropped, timeout, TLS failure."""

    def __init__(self, message: str, *, request_sent: bool, retryable: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.retryable = retryable


class WdataApiError(WdataError):
    """The Wdata service answered with an error (or with a body that cannot be read)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str,
        path: str,
        service_code: int | None = None,
        messages: Sequence[str] = (),
        details: Sequence[dict[str, Any]] = (),
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.path = path
        self.service_code = service_code
        self.messages = tuple(messages)
        self.details = tuple(details)
        self.retry_after = retry_after
        self.retryable = retryable


class WdataAuthError(WdataApiError):
    """The client id and secret were refused, or a fresh token was refused too."""

    def __init__(self, message: str, *, oauth_error: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.oauth_error = oauth_error


class WdataRefreshMayHaveStartedError(WdataError, AirflowFailException):
    """A request that starts a refresh failed in a way that leaves it unknown whether it started.

    It is never sent again automatically, not even by the task's own retries (it is an
    ``AirflowFailException``): starting a refresh twice is worse than asking a person.
    """


class WdataRefreshNotRecordedError(WdataRefreshMayHaveStartedError):
    """A refresh started, but the task state store did not record it, and the try did not succeed.

    A retry could not know the refresh and would start it again, so this is an ``AirflowFailException``:
    Airflow does not retry it. The message names the batch id or job id to check in Wdata.
    """


class WdataRefreshFailedError(WdataError):
    """A refresh ended badly: the message lists each failed connection refresh with its error."""

    def __init__(self, message: str, *, failed: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.failed = tuple(failed)


class WdataNothingToRerunError(WdataRefreshFailedError, AirflowFailException):
    """A retry found the refresh an earlier try started failed, yet each of its connections completed.

    Starting any of them again would refresh it twice, and every later retry would find the same, so this is an
    ``AirflowFailException``: Airflow does not retry it. Clearing the task starts every connection again.
    """


class WdataRefreshTimeoutError(WdataError):
    """A refresh did not end before the deadline; the message carries the last statuses seen.

    An operator's timeout is retried like any other error (with ``durable``, the retry follows the same refresh).
    """


class WdataSensorTimeoutError(WdataRefreshTimeoutError, AirflowSensorTimeout):
    """A sensor's ``timeout`` ended its wait, in any mode; the message carries the last statuses seen.

    It is an ``AirflowSensorTimeout``, which Airflow does not retry (a retry would wait the whole timeout again).
    With ``soft_fail`` the task is skipped instead.
    """


# An error that ends a deferred wait travels to the worker inside the trigger's JSON event: these two carry its
# type and facts across, so that the task raises the same exception in every mode.
_EVENT_ERROR_TYPES: dict[str, type[WdataError]] = {
    cls.__name__: cls for cls in (WdataError, WdataConfigError, WdataTransportError, WdataApiError, WdataAuthError)
}


def error_to_event(error: WdataError) -> dict[str, Any]:
    """The JSON-able facts of an error (never a secret: messages and service texts only)."""
    facts: dict[str, Any] = {
        "type": type(error).__name__ if type(error).__name__ in _EVENT_ERROR_TYPES else "WdataError"
    }
    for name in ("status", "method", "path", "service_code", "oauth_error", "request_sent", "retry_after"):
        if hasattr(error, name):
            facts[name] = getattr(error, name)
    for name in ("messages", "details"):
        if hasattr(error, name):
            facts[name] = [dict(d) if isinstance(d, dict) else d for d in getattr(error, name)]
    return facts


def error_from_event(message: str, facts: Any) -> WdataError:
    """The exception :func:`error_to_event` described, with ``message``; a plain WdataError when unknown."""
    facts = facts if isinstance(facts, dict) else {}
    cls = _EVENT_ERROR_TYPES.get(str(facts.get("type")), WdataError)
    if issubclass(cls, WdataApiError):
        kwargs = {
            name: facts[name]
            for name in ("service_code", "messages", "details", "retry_after", "oauth_error")
            if name in facts and (name != "oauth_error" or cls is WdataAuthError)
        }
        status = facts.get("status")
        return cls(
            message,
            status=int(status) if isinstance(status, int) or str(status).isdecimal() else 0,
            method=str(facts.get("method") or ""),
            path=str(facts.get("path") or ""),
            **kwargs,
        )
    if cls is WdataTransportError:
        return WdataTransportError(message, request_sent=bool(facts.get("request_sent")), retryable=False)
    return cls(message)
