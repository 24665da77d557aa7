"""Errors raised by the provider. Messages name the problem and the fix, and never a secret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_wdata._compat import AirflowException, AirflowFailException


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


class WdataRefreshFailedError(WdataError):
    """A refresh ended badly: the message lists each failed connection refresh with its error."""

    def __init__(self, message: str, *, failed: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.failed = tuple(failed)


class WdataRefreshTimeoutError(WdataError):
    """A refresh did not end before the deadline; the message carries the last statuses seen."""
