"""The simulated service as aiohttp handlers: the Wdata Prep API routes and the OAuth token endpoint.

Every request goes through :meth:`WdataHttpApi._handle`: it is recorded, then answered by the first matching
:class:`~airflow_provider_wdata.testing.faults.Fault` if any, else (API paths) its bearer token is checked and
the rate limit applied, then the route's handler runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from airflow_provider_wdata.testing.faults import Fault, FaultBook
from airflow_provider_wdata.testing.oauth import OAuthServer
from airflow_provider_wdata.testing.ratelimit import RateLimiter
from airflow_provider_wdata.testing.recording import API_PREFIX, TOKEN_PATHS, RecordedRequest, RequestLog
from airflow_provider_wdata.testing.service import Clock, SimulatedWdataService
from airflow_provider_wdata.testing.validation import ServiceError, parse_bool, parse_json

__all__ = ["WdataHttpApi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = logging.getLogger(__name__)
_CONNECTIONS = API_PREFIX + "/api/v1/connections"


class _OAuthSetting:
    """An attribute of the simulator kept on its OAuth server, so that both always agree."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: WdataHttpApi | None, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj._oauth, self._name)

    def __set__(self, obj: WdataHttpApi, value: Any) -> None:
        setattr(obj._oauth, self._name, value)


class WdataHttpApi(SimulatedWdataService):
    """The simulated service, its faults, tokens, rate limit and request log, with aiohttp handlers over them."""

    client_id = _OAuthSetting()
    client_secret = _OAuthSetting()
    token_lifetime = _OAuthSetting()
    #: Put in front of every issued token, so that a test can look for tokens in any output.
    token_prefix = _OAuthSetting()

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_lifetime: float,
        polls_to_finish: int | None,
        seconds_to_finish: float | None,
        connections: Iterable[str | Mapping[str, Any]] | None,
        batch_status: str,
        *,
        clock: Clock,
        start_status: int,
        created_by: str,
        record_requests: bool,
        token_prefix: str,
        rate_limit: int | None,
        rate_limit_window: float,
    ) -> None:
        super().__init__(
            polls_to_finish, seconds_to_finish, connections, batch_status, clock=clock, created_by=created_by
        )
        self.start_status = start_status
        self.record_requests = record_requests
        self._oauth = OAuthServer(client_id, client_secret, token_lifetime, token_prefix, clock=self._now)
        self._faults = FaultBook()
        self._rate_limiter = RateLimiter(rate_limit, rate_limit_window, clock=self._now)
        self._request_log = RequestLog()

    def _now(self) -> float:
        return self.clock()  # read at each call: a test may swap the clock

    def _add_routes(self, app: web.Application) -> None:
        for path in TOKEN_PATHS:
            app.router.add_post(path, self._serve_token)
        app.router.add_post(_CONNECTIONS + "/batch/refresh", self._serve_start_batch)
        app.router.add_get(_CONNECTIONS + "/batch/refresh/{batch_id}", self._serve_get_batch)
        app.router.add_get(_CONNECTIONS, self._serve_list_connections)
        app.router.add_get(_CONNECTIONS + "/{connection_id}", self._serve_get_connection)
        app.router.add_post(_CONNECTIONS + "/{connection_id}/refresh", self._serve_start_run)
        app.router.add_get(_CONNECTIONS + "/{connection_id}/status", self._serve_run_status)

    # ------------------------------------------------------------------------------------------ pipeline

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        if self.record_requests:
            self._request_log.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query={k: request.query[k] for k in request.query},
                    headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                    body=body,
                    at=time.monotonic(),
                )
            )
        fault = self._faults.take(request.method, request.path, request.path_qs) if self._faults else None
        if fault is not None:
            return await self._apply_fault(fault, request, handler)
        return await self._dispatch(request, handler)

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX + "/"):
            refused = self._authenticate_and_limit(request)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except web.HTTPException as exc:  # the router's 404 / 405
            message = f"{exc.reason}: {request.method} {request.path}"
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return error_response(exc.status, message, headers=headers)
        except ServiceError as exc:
            return error_response(exc.status, exc.message, exc.details)
        except Exception as exc:  # a simulator bug: still answer with the documented envelope
            _log.exception("simulator error on %s %s", request.method, request.path)
            return error_response(500, f"Internal simulator error: {exc!r}")

    def _authenticate_and_limit(self, request: web.Request) -> web.Response | None:
        authorization = request.headers.get("Authorization", "")
        denied = self._oauth.check_bearer(authorization)
        if denied is not None:
            message, challenge = denied
            return error_response(401, message, headers={"WWW-Authenticate": challenge})
        client = self._oauth.client_of(authorization) or request.remote or "unknown"
        retry_after = self._rate_limiter.admit(client)
        if retry_after is not None:
            message = f"Too Many Requests: rate limit of {self._rate_limiter.limit} per {self._rate_limiter.window:g} s"
            return error_response(429, message, headers={"Retry-After": str(retry_after)})
        return None

    async def _apply_fault(self, fault: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        kind = fault.kind
        if kind == "slow":
            return await self._dispatch(request, handler)
        if kind == "huge":
            return _pad(await self._dispatch(request, handler), fault.size)
        if kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # never written: aiohttp sees the closed transport
        if kind == "malformed":
            text = fault.body if fault.body is not None else '{"body": {"batchRefreshId": "3f2a'
            return web.Response(body=_as_bytes(text), status=200, content_type="application/json")
        if kind == "html":
            status = fault.status or 502
            reason = _phrase(status)
            page = (
                f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}"
                "</h1></center><hr><center>simulated gateway</center></body></html>\n"
            )
            return web.Response(text=page, status=status, content_type="text/html", headers=dict(fault.headers or {}))
        if kind == "empty":
            return web.Response(body=b"", status=200, content_type="application/json")
        if kind == "no_body_key":
            return json_response({"code": 200})
        # kind == "status"
        status = fault.status or 500
        headers = dict(fault.headers or {})
        if fault.body is None:
            return error_response(status, f"{_phrase(status)} (simulated fault)", headers=headers)
        if isinstance(fault.body, (dict, list)):
            return json_response(fault.body, status, headers)
        content_type = "application/json"
        for key in [k for k in headers if k.lower() == "content-type"]:
            content_type = headers.pop(key)
        return web.Response(body=_as_bytes(fault.body), status=status, headers=headers, content_type=content_type)

    # ------------------------------------------------------------------------------------------ handlers

    async def _serve_token(self, request: web.Request) -> web.StreamResponse:
        form = dict(parse_qsl((await request.read()).decode("utf-8", "replace"), keep_blank_values=True))
        status, payload, headers = self._oauth.token_endpoint(form, request.headers.get("Authorization", ""))
        return json_response(payload, status, headers)

    async def _serve_start_batch(self, request: web.Request) -> web.StreamResponse:
        cancel_unwritables = parse_bool(request.query.get("cancelUnwritables"), "cancelUnwritables")
        body = self.start_batch(parse_json(await request.read()), cancel_unwritables)
        return json_response({"body": body, "code": self.start_status}, self.start_status)

    async def _serve_get_batch(self, request: web.Request) -> web.StreamResponse:
        body = self.batch_status_body(request.match_info["batch_id"], request.query.get("workspaceId"))
        return json_response({"body": body, "code": 200})

    async def _serve_start_run(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = self.start_refresh(request.match_info["connection_id"], parse_json(raw) if raw.strip() else None)
        return json_response({"body": body, "code": self.start_status}, self.start_status)

    async def _serve_run_status(self, request: web.Request) -> web.StreamResponse:
        connection_id, query = request.match_info["connection_id"], request.query
        body = self.refresh_status_body(connection_id, query.get("jobId"), query.get("workspaceId"))
        return json_response({"body": body, "code": 200})

    async def _serve_get_connection(self, request: web.Request) -> web.StreamResponse:
        body = self.connection_body(request.match_info["connection_id"], request.query.get("workspaceId"))
        return json_response({"body": body, "code": 200})

    async def _serve_list_connections(self, request: web.Request) -> web.StreamResponse:
        page, cursor = self.list_connections(request.query)
        return json_response({"body": page, "code": 200, "cursor": cursor})


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode("utf-8"),
        status=status,
        content_type="application/json",
        headers=dict(headers or {}),
    )


def error_response(
    status: int,
    message: str | list[str],
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The documented error envelope: ``{"body": message, "code": status[, "details": [...]]}``."""
    payload: dict[str, Any] = {"body": message, "code": status}
    if details is not None:
        payload["details"] = details
    return json_response(payload, status, headers)


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


def _pad(response: web.StreamResponse, size: int) -> web.StreamResponse:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return response
    try:
        payload = json.loads(response.body)
    except ValueError:
        return response
    if not isinstance(payload, dict):
        payload = {"body": payload, "code": response.status}
    payload["_padding"] = "x" * max(0, size - len(response.body))
    return json_response(payload, response.status)
