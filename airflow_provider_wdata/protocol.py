"""The Wdata Prep API as pure code: build requests, read responses, name errors. No I/O here.

The hook's two transports (requests for sync calls, aiohttp for async ones) only move bytes; everything
they send is built here and everything they receive is read here, so sync and async behave the same.
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import pendulum

from airflow_provider_wdata import __version__
from airflow_provider_wdata._compat import AIRFLOW_VERSION
from airflow_provider_wdata.config import WdataConfig
from airflow_provider_wdata.constants import MAX_PAGE_SIZE
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataAuthError,
    WdataConfigError,
    WdataError,
    WdataRefreshMayHaveStartedError,
    WdataTransportError,
)
from airflow_provider_wdata.models import WdataConnection
from airflow_provider_wdata.redaction import excerpt, scrub, scrub_value
from airflow_provider_wdata.request_fields import (
    path_param,
    validate_batch_connections,
    validate_refresh_fields,
    validate_workspace_id,
)

USER_AGENT = f"airflow-provider-wdata/{__version__} apache-airflow/{AIRFLOW_VERSION} python/{platform.python_version()}"
#: Lifetime assumed for a token whose answer gives no usable ``expires_in`` (seconds).
DEFAULT_TOKEN_LIFETIME = 300.0
#: What an access token may hold: the visible ASCII an Authorization header carries.
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")

#: Statuses worth trying again for a read: the service or the network may recover.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses after which the service certainly did not start anything: safe to send a start again. A 503 counts
#: only with ``Retry-After`` (the service refusing on purpose): proxies also answer a bare 503 when the service
#: dropped the connection after it received the start.
NOT_ACCEPTED_STATUSES = frozenset({429, 503})


def _not_accepted(status: int, retry_after: float | None) -> bool:
    return status in NOT_ACCEPTED_STATUSES and (status != 503 or retry_after is not None)


class ApiRequest(NamedTuple):
    """One call to the API, relative to the base URL. ``path`` is already validated and encoded."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json_body: Any = None
    #: A POST that starts a refresh: sent again only when the service certainly did not accept it.
    starts_refresh: bool = False
    #: A status read, sent again and again while a refresh runs: an answer with the very bytes of the last one is
    #: the same refresh, and is not decoded again.
    polled: bool = False

    def url(self, base_url: str) -> str:
        return base_url + self.path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


class RawResponse(NamedTuple):
    """What a transport got back. ``body`` holds at most the allowed number of bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    too_large: bool = False


class Envelope(NamedTuple):
    body: Any
    code: int | None
    cursor: str | None


# ---------------------------------------------------------------------------------------------- requests


def _workspace(workspace_id: str | None) -> tuple[tuple[str, str], ...]:
    if workspace_id is None:
        return ()
    validate_workspace_id(workspace_id)
    return (("workspaceId", workspace_id),)


def get_batch_refresh(batch_id: str, workspace_id: str | None = None) -> ApiRequest:
    path = f"/api/v1/connections/batch/refresh/{path_param('batch_id', batch_id)}"
    return ApiRequest("GET", path, _workspace(workspace_id), polled=True)


def start_batch_refresh(
    connections: Sequence[Any], cancel_unwritables: bool = False, workspace_id: str | None = None
) -> ApiRequest:
    items = validate_batch_connections(connections, workspace_id)
    params = (("cancelUnwritables", "true" if cancel_unwritables else "false"),)
    return ApiRequest("POST", "/api/v1/connections/batch/refresh", params, items, starts_refresh=True)


def refresh_connection(connection_id: str, workspace_id: str | None = None, **fields: Any) -> ApiRequest:
    body = validate_refresh_fields(connection_id, workspace_id, **fields)
    path = f"/api/v1/connections/{path_param('connection_id', connection_id)}/refresh"
    return ApiRequest("POST", path, (), body, starts_refresh=True)


def get_connection_refresh(connection_id: str, job_id: str, workspace_id: str | None = None) -> ApiRequest:
    path = f"/api/v1/connections/{path_param('connection_id', connection_id)}/status"
    path_param("job_id", job_id)
    return ApiRequest("GET", path, (("jobId", job_id), *_workspace(workspace_id)), polled=True)


def get_connection(connection_id: str, workspace_id: str | None = None) -> ApiRequest:
    path = f"/api/v1/connections/{path_param('connection_id', connection_id)}"
    return ApiRequest("GET", path, _workspace(workspace_id))


def list_connections(
    *,
    source_type: str | None = None,
    source_id: str | None = None,
    destination_type: str | None = None,
    destination_id: str | None = None,
    cursor: str | None = None,
    limit: int = MAX_PAGE_SIZE,
) -> ApiRequest:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise WdataConfigError(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}, not {limit!r}.")
    filters = {
        "sourceType": source_type,
        "sourceId": source_id,
        "destinationType": destination_type,
        "destinationId": destination_id,
        "cursor": cursor,
    }
    params = (*((k, str(v)) for k, v in filters.items() if v is not None), ("limit", str(limit)))
    return ApiRequest("GET", "/api/v1/connections", params)


def request_headers(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}", "Accept": "application/json", "User-Agent": USER_AGENT}


def token_request_form(config: WdataConfig) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
    }
    if config.scope:
        form["scope"] = config.scope
    return form


TOKEN_HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}


# --------------------------------------------------------------------------------------------- responses


def retry_after_seconds(value: str | None, now: pendulum.DateTime | None = None) -> float | None:
    """Read ``Retry-After``: a number of seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = now or pendulum.now("UTC")
    return max(0.0, (pendulum.instance(when) - now).total_seconds())


def _decode_json(body: bytes) -> Any:
    """The JSON in ``body``; None for an empty body, ``_UNREADABLE`` for anything else that is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _UNREADABLE if body.strip() else None


_UNREADABLE = object()

_HINTS = {
    400: "The service rejected the request as invalid; check the arguments named above.",
    401: "The access token was refused.",
    403: "The API grant behind this connection is not allowed to do this; ask a workspace owner to grant access.",
    404: "Nothing with this id exists, or it is not visible to this API grant; check the id.",
    409: "The request conflicts with the current state (a refresh may already be running).",
    423: "The resource is locked; try again once it is released.",
    429: "The service is rate limiting this client.",
}


def _error_messages(payload: Any, hide: Iterable[str] = ()) -> tuple[list[str], list[dict[str, Any]], int | None]:
    if not isinstance(payload, Mapping):
        return [], [], None
    body = payload.get("body")
    messages = [str(m) for m in body] if isinstance(body, list) else [str(body)] if body else []
    listed = payload.get("details")
    details = [scrub_value(d, hide) for d in (listed if isinstance(listed, list) else ()) if isinstance(d, Mapping)]
    code = payload.get("code") if isinstance(payload.get("code"), int) else None
    return [scrub(m, hide) for m in messages], details, code


def api_error(request: ApiRequest, raw: RawResponse, payload: Any = None, hide: Iterable[str] = ()) -> WdataApiError:
    """The one exception for an error response, with what a person needs to act on it (nothing of ``hide`` nor
    any bearer credential quoted)."""
    payload = _decode_json(raw.body) if payload is None else payload
    messages, details, code = _error_messages(payload, hide)
    said = "; ".join(messages) if messages else f"unreadable body: {excerpt(raw.body, hide)}"
    for detail in details:
        target = f" ({detail['target']})" if detail.get("target") else ""
        said += f"; {detail.get('message') or detail.get('code')}{target}"
    hint = _HINTS.get(raw.status, "The service failed; it may recover." if raw.status >= 500 else "")
    if 300 <= raw.status < 400:
        said = f"redirected to {scrub(raw.headers.get('Location') or 'an unnamed location', hide)}"
        hint = "Redirects are not followed (they could carry the token elsewhere); set host to the final URL."
    retry_after = retry_after_seconds(raw.headers.get("Retry-After"))
    retryable = _not_accepted(raw.status, retry_after) if request.starts_refresh else raw.status in RETRYABLE_STATUSES
    message = f"Wdata API {request} answered HTTP {raw.status}: {said}. {hint}".rstrip()
    return WdataApiError(
        message,
        status=raw.status,
        method=request.method,
        path=request.path,
        service_code=code,
        messages=messages,
        details=details,
        retry_after=retry_after,
        retryable=retryable,
    )


def read_envelope(request: ApiRequest, raw: RawResponse, max_bytes: int, hide: Iterable[str] = ()) -> Envelope:
    """Unwrap a ``{"body", "code"}`` answer, or raise the error it stands for (refined for a start), quoting
    nothing of ``hide``."""
    if raw.too_large:
        raise refine_error(
            request,
            WdataApiError(
                f"Wdata API {request} answered with more than {max_bytes} bytes; refusing to read it. "
                "Raise the hook's max_response_bytes if such answers are expected.",
                status=raw.status,
                method=request.method,
                path=request.path,
            ),
        )
    payload = _decode_json(raw.body)
    if not 200 <= raw.status < 300:
        raise refine_error(request, api_error(request, raw, payload, hide))
    if not isinstance(payload, dict) or "body" not in payload:
        if not raw.body.strip():
            what = "is empty"
        else:
            what = "is not JSON" if payload is _UNREADABLE else "has no 'body' field"
        unreadable = WdataApiError(
            f"Wdata API {request} answered HTTP {raw.status} with a body that {what}: {excerpt(raw.body, hide)}",
            status=raw.status,
            method=request.method,
            path=request.path,
        )
        raise refine_error(request, unreadable)
    cursor = payload.get("cursor")
    code = payload.get("code")
    return Envelope(payload["body"], code if isinstance(code, int) else None, cursor if cursor else None)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", str: "a string", list: "a list", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def read_object(request: ApiRequest, raw: RawResponse, body: Any) -> Mapping[str, Any]:
    """The ``body`` of an answer that must be one object (a batch, a run, a connection), or raise.

    Fields may be missing or null (the models read them as None), but a body of another kind, or a batch child that
    is not an object, has no statuses at all: read leniently, it would stand for a refresh that never ends.
    """
    problem = None
    if not isinstance(body, Mapping):
        problem = f"a 'body' that is {_json_kind(body)}, not an object"
    elif isinstance(children := body.get("childRefreshes"), list):
        index = next((i for i, child in enumerate(children) if not isinstance(child, Mapping)), None)
        if index is not None:
            kind = _json_kind(children[index])
            problem = f"a childRefreshes[{index}] that is {kind}, not a connection refresh object"
    if problem is None:
        return body
    malformed = WdataApiError(
        f"Wdata API {request} answered HTTP {raw.status} with {problem}: {excerpt(raw.body)}. This is not a "
        "Wdata answer: check that the connection's host is the Wdata API base URL, or report it to Workiva.",
        status=raw.status,
        method=request.method,
        path=request.path,
    )
    raise refine_error(request, malformed)


def read_response(
    request: ApiRequest, raw: RawResponse, config: WdataConfig, max_bytes: int, token: str = ""
) -> Envelope:
    """Read an API answer once the hook has tried a fresh token: a 401 now means the grant itself is refused.
    An error quotes neither the client secret nor ``token``, the access token the request carried."""
    hide = (config.client_secret, token)
    if raw.status == 401:
        error = api_error(request, raw, hide=hide)
        raise WdataAuthError(
            f"Connection {config.conn_id!r}: the API refused a freshly issued token for "
            f"{request} ({'; '.join(error.messages) or 'HTTP 401'}). Check that the API grant "
            "of this client id may use Wdata.",
            status=401,
            method=request.method,
            path=request.path,
        )
    return read_envelope(request, raw, max_bytes, hide)


def read_token(config: WdataConfig, raw: RawResponse) -> tuple[str, float]:
    """Read an OAuth2 token answer: ``(access_token, expires_in)``, or raise naming the OAuth error."""
    payload = _decode_json(raw.body)
    where = f"token endpoint {config.token_url}"
    if raw.status in (400, 401) and isinstance(payload, Mapping) and payload.get("error"):
        error = scrub(str(payload["error"]), (config.client_secret,))
        description = scrub(str(payload.get("error_description") or ""), (config.client_secret,))
        raise WdataAuthError(
            f"Connection {config.conn_id!r}: the {where} refused the client credentials "
            f"({error}{': ' + description if description else ''}). "
            "Check the client id (login) and client secret (password) of the connection.",
            oauth_error=error,
            status=raw.status,
            method="POST",
            path=config.token_url,
        )
    if not 200 <= raw.status < 300:
        retryable = raw.status in RETRYABLE_STATUSES
        raise WdataAuthError(
            f"Connection {config.conn_id!r}: the {where} answered HTTP {raw.status}: "
            f"{excerpt(raw.body, hide=(config.client_secret,))}."
            + (" It may recover." if retryable else " Check extra token_url and the region."),
            status=raw.status,
            method="POST",
            path=config.token_url,
            retry_after=retry_after_seconds(raw.headers.get("Retry-After")),
            retryable=retryable,
        )
    token = payload.get("access_token") if isinstance(payload, Mapping) else None
    # Never quote a 2xx token body, nor the token: it may be a real one. A token with a space, a control or a
    # non-ASCII character cannot be sent: the HTTP libraries would refuse it quoting it.
    if not isinstance(token, str) or not _TOKEN_TEXT.fullmatch(token):
        problem = (
            "with an access_token that an Authorization header cannot carry (not plain visible ASCII)"
            if isinstance(token, str) and token
            else "without an access_token"
        )
        raise WdataAuthError(
            f"Connection {config.conn_id!r}: the {where} answered HTTP {raw.status} {problem}; check extra token_url.",
            status=raw.status,
            method="POST",
            path=config.token_url,
        )
    try:
        expires_in = float(payload["expires_in"])
    except (KeyError, TypeError, ValueError, OverflowError):
        expires_in = DEFAULT_TOKEN_LIFETIME
    if not (math.isfinite(expires_in) and expires_in > 0):
        expires_in = DEFAULT_TOKEN_LIFETIME
    return token, expires_in


def refine_error(request: ApiRequest, error: WdataError) -> WdataError:
    """A start that failed after the service may have taken it must never be sent again: say so."""
    if not request.starts_refresh:
        return error
    sent = isinstance(error, WdataTransportError) and error.request_sent
    # A 2xx we could not read, or a 5xx but a 503 with Retry-After, may stand for a batch that started.
    ambiguous = isinstance(error, WdataApiError) and (
        200 <= error.status < 300 or (error.status >= 500 and not _not_accepted(error.status, error.retry_after))
    )
    if not (sent or ambiguous):
        return error
    return WdataRefreshMayHaveStartedError(
        f"{error} The refresh may have started: it is not sent again automatically. "
        "Check it in Wdata before starting it again."
    )


class ConnectionPages:
    """A list call's pages: the request for the next one, and what they held; refuses a cursor that comes back (it
    would loop forever)."""

    def __init__(
        self,
        source_type: str | None = None,
        source_id: str | None = None,
        destination_type: str | None = None,
        destination_id: str | None = None,
        limit: int = MAX_PAGE_SIZE,
    ) -> None:
        self.filters: dict[str, Any] = {
            "source_type": source_type,
            "source_id": source_id,
            "destination_type": destination_type,
            "destination_id": destination_id,
            "limit": limit,
        }
        self.found: list[WdataConnection] = []
        self.cursor: str | None = None
        self.done = False
        self._seen: set[str] = set()

    def next_request(self) -> ApiRequest:
        return list_connections(cursor=self.cursor, **self.filters)

    def add(self, envelope: Envelope) -> None:
        self.found += connections_in(envelope)
        if envelope.cursor is not None and not isinstance(envelope.cursor, str):
            raise _bad_page(f"a 'cursor' that is {_json_kind(envelope.cursor)}, not a string or null")
        self.cursor = envelope.cursor
        self.done = not self.cursor
        if self.cursor in self._seen:
            raise _bad_page(f"the cursor {self.cursor!r} twice")
        if self.cursor:
            self._seen.add(self.cursor)


def _bad_page(what: str) -> WdataApiError:
    return WdataApiError(
        f"Wdata answered a page of GET /api/v1/connections with {what}; stopping the listing.",
        status=200,
        method="GET",
        path="/api/v1/connections",
    )


def connections_in(envelope: Envelope) -> list[WdataConnection]:
    """The connections of one page; raises on a page that is not a list of objects (read leniently, it would list
    none, or blank ones)."""
    items = envelope.body
    if not isinstance(items, list):
        raise _bad_page(f"a 'body' that is {_json_kind(items)}, not a list of connections")
    index = next((i for i, item in enumerate(items) if not isinstance(item, Mapping)), None)
    if index is not None:
        raise _bad_page(f"an entry {index} that is {_json_kind(items[index])}, not a connection object")
    return [WdataConnection.from_api(item) for item in items]
