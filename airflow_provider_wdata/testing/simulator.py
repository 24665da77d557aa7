"""A local, scriptable simulator of the Workiva Wdata Prep API (see ``/work/shared/wdata-api.md``).

The simulator is a real HTTP(S) server (``aiohttp.web``) on ``127.0.0.1``. It runs in its own daemon thread
with its own event loop, so it can be driven from synchronous tests, from async tests running in another
loop, and from other processes (Airflow's scheduler and triggerer reach it over HTTP).

Decisions taken where the public API description is silent (all of them are scriptable):

* Progress is poll-based and/or time-based. A refresh starts ``not_started`` (the POST response), reads
  ``running`` on every status GET before it is finished, and reaches its terminal state on the
  ``polls_to_finish``-th status GET or once ``seconds_to_finish`` have passed since it started, whichever
  comes first. With both set to ``None`` a refresh finishes on its first status GET; with
  ``polls_to_finish=0`` it is already terminal in the POST response.
* Each GET of a batch advances every child by one poll. With ``batch_status="derived"`` each batch-level
  status (source and destination separately) stays ``running`` until every child is terminal, then reads
  ``error`` if any child has ``error`` on that side, else ``cancelled`` if every child was cancelled,
  else ``complete`` (a cancelled child does not cancel its batch). With ``batch_status="complete"`` both
  batch statuses read ``complete`` once the children are terminal, whatever the children say. The batch
  ``error`` text is always ``null``.
* ``workspaceId`` given on a status call is echoed in the returned runs; otherwise the value given when
  the refresh started (else the connection's workspace) is returned.
* Faults (:class:`Fault`) are answered before authentication and before any state changes, except the
  ``slow`` and ``huge`` kinds, which serve the normal response (late, or padded).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hmac
import json
import logging
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "API_PREFIX",
    "FAULT_KINDS",
    "OUTCOMES",
    "STATUSES",
    "TOKEN_PATHS",
    "BatchState",
    "ConnectionState",
    "Fault",
    "RecordedRequest",
    "RunState",
    "WdataSimulator",
]

API_PREFIX = "/s/wdata/prep"
TOKEN_PATHS = ("/iam/v1/oauth2/token", "/oauth2/token")
STATUSES = ("not_started", "running", "complete", "error", "cancelled")
TERMINAL_STATUSES = frozenset({"complete", "error", "cancelled"})

# outcome -> (sourceStatus, destinationStatus, default error text) once the refresh is finished.
_TERMINAL_OUTCOMES: dict[str, tuple[str, str, str | None]] = {
    "complete": ("complete", "complete", None),
    "error": ("error", "error", "Simulated refresh failure"),
    "cancelled": ("cancelled", "cancelled", None),
    "source_error": ("error", "cancelled", "Simulated source failure"),
    "destination_error": ("complete", "error", "Simulated destination failure"),
    "complete_with_error": ("complete", "complete", "Simulated warning: the refresh completed with errors"),
}
# "stuck": running forever; "queued": not_started forever; "unwritable": the destination cannot be
# written: the child is cancelled when the batch was started with cancelUnwritables=true, else it errors.
OUTCOMES = (*_TERMINAL_OUTCOMES, "stuck", "queued", "unwritable")
_UNWRITABLE_ERROR = "Simulated failure: the destination cannot be written"
_UNWRITABLE_CANCELLED = "Simulated: the destination cannot be written; refresh cancelled (cancelUnwritables)"

FAULT_KINDS = ("status", "slow", "drop", "malformed", "html", "empty", "huge", "no_body_key")
DEFAULT_HUGE_SIZE = 5 * 1024 * 1024
MAX_BATCH = 100
MAX_WORKSPACE_ID = 40
_CURSOR_PREFIX = "simcur1."

_log = logging.getLogger(__name__)

Clock = Callable[[], float]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode("utf-8"),
        status=status,
        content_type="application/json",
        headers=dict(headers or {}),
    )


def _error(
    status: int,
    message: str | list[str],
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    payload: dict[str, Any] = {"body": message, "code": status}
    if details is not None:
        payload["details"] = details
    return _json_response(payload, status, headers)


def _detail(code: str, message: str, target: str) -> dict[str, Any]:
    return {"code": code, "message": message, "target": target}


# --------------------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour. Faults are matched first-match in the order added and consumed.

    ``method`` (``None`` = any) and ``path_contains`` (``None`` = any; matched against the path, and the
    path with its query string) select requests, token paths included. The first ``skip`` matching
    requests are let through; then the fault fires ``times`` times (``None`` = until
    :meth:`WdataSimulator.clear_faults`). Every kind first sleeps ``delay`` seconds.

    Kinds: ``status`` (answer ``status``, default 500, with ``headers`` and ``body``: dict/list as JSON,
    str/bytes raw, ``None`` the documented error envelope), ``slow`` (then answer normally), ``drop``
    (read the request, close the TCP connection without a response), ``malformed`` (200, truncated JSON;
    ``body`` overrides the text), ``html`` (``status``, default 502, an HTML page), ``empty`` (200, empty
    body), ``huge`` (the normal response with its envelope padded to about ``size`` bytes by an extra
    ``"_padding"`` key), ``no_body_key`` (200 ``{"code": 200}``).
    """

    method: str | None = None
    path_contains: str | None = None
    times: int | None = 1
    kind: str = "status"
    status: int | None = None
    headers: dict[str, str] | None = None
    body: Any = None
    delay: float = 0.0
    size: int = DEFAULT_HUGE_SIZE
    skip: int = 0
    #: How many times this fault has fired so far (updated by the simulator).
    fired: int = field(default=0, init=False, compare=False)
    _seen: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")

    def matches(self, method: str, path: str, path_qs: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path or self.path_contains in path_qs

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received (recorded before faults and authentication)."""

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


@dataclass
class ConnectionState:
    """A simulated Wdata connection and the outcome its future refreshes will have."""

    connection_id: str
    name: str
    description: str
    source_type: str
    source_id: str
    destination_type: str
    destination_id: str
    workspace_id: str
    outcome: str = "complete"
    error: str | None = None
    polls_to_finish: int | None = None  # None: the simulator's default
    seconds_to_finish: float | None = None  # None: the simulator's default
    created: str = field(default_factory=_now_iso)
    updated: str = field(default_factory=_now_iso)


@dataclass
class RunState:
    """One connection refresh (a job); the children of a batch are runs too."""

    connection_id: str
    job_id: str
    outcome: str
    error_text: str | None
    polls_to_finish: int | None
    seconds_to_finish: float | None
    started_at: float  # the simulator clock
    created: str
    updated: str
    created_by: str
    workspace_id: str | None
    source_workspace_id: str | None
    destination_workspace_id: str | None
    source_parameters: dict[str, Any]
    destination_parameters: dict[str, Any]
    batch_id: str | None = None
    polls: int = 0
    source_status: str = "not_started"
    destination_status: str = "not_started"
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.source_status in TERMINAL_STATUSES and self.destination_status in TERMINAL_STATUSES


@dataclass
class BatchState:
    """One batch refresh."""

    batch_id: str
    children: list[RunState]
    cancel_unwritables: bool
    created: str
    updated: str
    created_by: str
    workspace_id: str | None
    polls: int = 0
    source_status: str = "not_started"
    destination_status: str = "not_started"
    error: str | None = None


class _BadRequest(Exception):
    def __init__(self, message: str, details: list[dict[str, Any]]):
        super().__init__(message)
        self.message = message
        self.details = details


# --------------------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------------------


class WdataSimulator:
    """A scriptable Wdata Prep API served over HTTP(S) from a background thread. See the module docstring."""

    def __init__(
        self,
        client_id: str = "sim-client",
        client_secret: str = "sim-secret",
        host: str = "127.0.0.1",
        port: int = 0,
        token_lifetime: float = 599,
        polls_to_finish: int | None = 2,
        seconds_to_finish: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connections: Iterable[str | Mapping[str, Any]] | None = None,
        batch_status: str = "derived",
        *,
        clock: Clock = time.monotonic,
        start_status: int = 200,
        created_by: str = "sim-user@example.com",
        record_requests: bool = True,
        token_prefix: str = "",
        backlog: int = 4096,
        shutdown_timeout: float = 1.0,
    ) -> None:
        if batch_status not in ("derived", "complete"):
            raise ValueError("batch_status must be 'derived' or 'complete'")
        self.client_id = client_id
        self.client_secret = client_secret
        self.host = host
        self.token_lifetime = token_lifetime
        self.polls_to_finish = polls_to_finish
        self.seconds_to_finish = seconds_to_finish
        self.ssl_context = ssl_context
        self.batch_status = batch_status
        self.clock = clock
        self.start_status = start_status
        self.created_by = created_by
        self.record_requests = record_requests
        #: Put in front of every issued token, so that a test can look for tokens in any output.
        self.token_prefix = token_prefix
        self._backlog = backlog
        self._shutdown_timeout = shutdown_timeout
        self._requested_port = port
        self._port: int | None = None

        self._lock = threading.Lock()  # guards all mutable state; never held across an await
        self._connections: dict[str, ConnectionState] = {}
        self._runs: dict[tuple[str, str], RunState] = {}
        self._latest_runs: dict[str, RunState] = {}
        self._batches: dict[str, BatchState] = {}
        self._raw_batches: dict[str, Any] = {}
        self._raw_runs: dict[tuple[str, str], Any] = {}
        self._faults: list[Fault] = []
        self._tokens: dict[str, float] = {}  # token -> expiry on self.clock
        self._issued: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._connections_opened = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._busy: dict[object, int] = {}  # connection (protocol) -> requests in flight; loop thread only

        if connections is None:
            connections = [
                {"connection_id": "conn-1", "source_type": "wdata_table", "destination_type": "spreadsheet"},
                {"connection_id": "conn-2", "source_type": "wdata_table", "destination_type": "spreadsheet"},
                {"connection_id": "conn-3", "source_type": "spreadsheet", "destination_type": "wdata_table"},
            ]
        for conn in connections:
            if isinstance(conn, str):
                self.add_connection(conn)
            else:
                self.add_connection(**dict(conn))

    # ---------------------------------------------------------------------------------------------- life

    def __enter__(self) -> WdataSimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> WdataSimulator:
        """Start serving; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name="wdata-simulator", daemon=True)
        self._thread.start()
        try:
            self._call(self._astart(), timeout=30)
        except BaseException:
            self._stop_thread()
            raise
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, stop the loop and join the thread."""
        if self._thread is None:
            return
        try:
            self._call(self._astop(), timeout=self._shutdown_timeout + 30)
        finally:
            self._stop_thread()

    def stop_listening(self, close_connections: bool = True) -> None:
        """Close the listening socket: new connections are refused. Idle keep-alive connections are
        closed too unless ``close_connections`` is false (requests in flight finish)."""
        self._call(self._astop_listening(close_connections))

    def start_listening(self) -> None:
        """Listen again on the same port after :meth:`stop_listening`."""
        self._call(self._alisten())

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def root_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}{API_PREFIX}"

    @property
    def token_url(self) -> str:
        return f"{self.root_url}{TOKEN_PATHS[0]}"

    @property
    def platform_token_url(self) -> str:
        """The newer ``/oauth2/token`` endpoint (served with the same behaviour)."""
        return f"{self.root_url}{TOKEN_PATHS[1]}"

    def url(self, path: str) -> str:
        """``base_url`` + ``path`` (e.g. ``sim.url("/api/v1/connections")``)."""
        return self.base_url + path

    def airflow_connection(self) -> dict[str, Any]:
        return {
            "conn_type": "wdata",
            "login": self.client_id,
            "password": self.client_secret,
            "host": self.base_url,
            "extra": {"token_url": self.token_url},
        }

    def airflow_conn_uri_env(self, conn_id: str = "wdata_default") -> tuple[str, str]:
        return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(self.airflow_connection())

    # ------------------------------------------------------------------------------------------- script

    def add_connection(
        self,
        connection_id: str,
        name: str | None = None,
        outcome: str = "complete",
        error: str | None = None,
        polls_to_finish: int | None = None,
        source_type: str = "wdata_table",
        destination_type: str = "spreadsheet",
        *,
        seconds_to_finish: float | None = None,
        description: str | None = None,
        source_id: str | None = None,
        destination_id: str | None = None,
        workspace_id: str = "sim-workspace",
    ) -> ConnectionState:
        _check_outcome(outcome)
        conn = ConnectionState(
            connection_id=connection_id,
            name=name if name is not None else f"Simulated connection {connection_id}",
            description=description if description is not None else f"Simulator connection {connection_id}",
            source_type=source_type,
            source_id=source_id if source_id is not None else f"src-{connection_id}",
            destination_type=destination_type,
            destination_id=destination_id if destination_id is not None else f"dst-{connection_id}",
            workspace_id=workspace_id,
            outcome=outcome,
            error=error,
            polls_to_finish=polls_to_finish,
            seconds_to_finish=seconds_to_finish,
        )
        with self._lock:
            if connection_id in self._connections:
                raise ValueError(f"connection {connection_id!r} already exists; use script_connection()")
            self._connections[connection_id] = conn
        return conn

    def script_connection(
        self,
        connection_id: str,
        outcome: str = "complete",
        error: str | None = None,
        polls_to_finish: int | None = None,
        *,
        seconds_to_finish: float | None = None,
    ) -> None:
        """Set the outcome of FUTURE refreshes of an existing connection (running ones are unaffected)."""
        _check_outcome(outcome)
        with self._lock:
            conn = self._connections.get(connection_id)
            if conn is None:
                raise KeyError(connection_id)
            conn.outcome = outcome
            conn.error = error
            conn.polls_to_finish = polls_to_finish
            conn.seconds_to_finish = seconds_to_finish
            conn.updated = _now_iso()

    def remove_connection(self, connection_id: str) -> None:
        with self._lock:
            del self._connections[connection_id]

    def put_raw_batch(self, batch_id: str, body: Any) -> None:
        """Serve exactly ``{"body": body, "code": 200}`` for GET .../batch/refresh/{batch_id} (``None``
        removes the override)."""
        with self._lock:
            if body is None:
                self._raw_batches.pop(batch_id, None)
            else:
                self._raw_batches[batch_id] = copy.deepcopy(body)

    def put_raw_run(self, connection_id: str, job_id: str, body: Any) -> None:
        """Serve exactly ``{"body": body, "code": 200}`` for GET .../{connection_id}/status?jobId={job_id}
        (``None`` removes the override)."""
        with self._lock:
            if body is None:
                self._raw_runs.pop((connection_id, job_id), None)
            else:
                self._raw_runs[(connection_id, job_id)] = copy.deepcopy(body)

    @property
    def connections(self) -> dict[str, ConnectionState]:
        with self._lock:
            return dict(self._connections)

    @property
    def batches(self) -> dict[str, BatchState]:
        with self._lock:
            return dict(self._batches)

    @property
    def runs(self) -> dict[tuple[str, str], RunState]:
        """(connection_id, job_id) -> run, batch children included."""
        with self._lock:
            return dict(self._runs)

    def batch_body(self, batch_id: str) -> dict[str, Any]:
        """The RefreshBatch as the API would show it now, without advancing it."""
        with self._lock:
            batch = self._batches[batch_id]
            self._derive_batch(batch)
            return self._batch_body(batch, None)

    # ------------------------------------------------------------------------------------------- tokens

    def expire_tokens(self) -> None:
        """Every token issued so far becomes invalid (the API answers 401)."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = float("-inf")

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    # ------------------------------------------------------------------------------------------- faults

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    # ---------------------------------------------------------------------------------------- recording

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (token calls included), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def token_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.is_token_request]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start."""
        return self._connections_opened

    def reset(self) -> None:
        """Forget batches, runs, raw overrides, faults, tokens and recorded requests (keep connections)."""
        with self._lock:
            self._runs.clear()
            self._latest_runs.clear()
            self._batches.clear()
            self._raw_batches.clear()
            self._raw_runs.clear()
            self._faults.clear()
            self._tokens.clear()
            self._issued.clear()
            self._requests.clear()

    # ---------------------------------------------------------------------------------- thread and loop

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=30)
        self._thread = None
        self._loop = None
        self._runner = None
        self._server = None

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the simulator is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def _astart(self) -> None:
        @web.middleware
        async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware], client_max_size=64 * 1024 * 1024)
        api = API_PREFIX + "/api/v1/connections"
        for path in TOKEN_PATHS:
            app.router.add_post(path, self._token)
        app.router.add_post(api + "/batch/refresh", self._start_batch)
        app.router.add_get(api + "/batch/refresh/{batch_id}", self._get_batch)
        app.router.add_get(api, self._list_connections)
        app.router.add_get(api + "/{connection_id}", self._get_connection)
        app.router.add_post(api + "/{connection_id}/refresh", self._start_run)
        app.router.add_get(api + "/{connection_id}/status", self._run_status)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        self._runner = runner
        self._port = self._requested_port
        await self._alisten()

    async def _alisten(self) -> None:
        if self._server is not None:
            return
        runner = self._runner
        assert runner is not None and runner.server is not None
        web_server = runner.server

        def protocol_factory() -> asyncio.Protocol:
            self._connections_opened += 1
            return web_server()

        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            protocol_factory,
            host=self.host,
            port=self._port or 0,
            ssl=self.ssl_context,
            backlog=self._backlog,
            reuse_address=True,
        )
        if not self._port:
            sock: socket.socket = server.sockets[0]
            self._port = sock.getsockname()[1]
        self._server = server

    async def _astop_listening(self, close_connections: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if close_connections and self._runner is not None and self._runner.server is not None:
            for handler in self._runner.server.connections:
                if self._busy.get(handler):
                    handler.close()  # closes once its response is written
                else:
                    handler.force_close()  # an idle keep-alive connection: close it now

    async def _astop(self) -> None:
        await self._astop_listening(close_connections=False)
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------------------ request pipeline

    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            return await self._handle(request, handler)
        finally:
            left = self._busy.pop(protocol) - 1
            if left:
                self._busy[protocol] = left

    async def _handle(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        body = await request.read()
        if self.record_requests:
            recorded = RecordedRequest(
                method=request.method,
                path=request.path,
                query={k: request.query[k] for k in request.query},
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                at=time.monotonic(),
            )
            with self._lock:
                self._requests.append(recorded)
        fault = self._take_fault(request) if self._faults else None
        if fault is not None:
            return await self._apply_fault(fault, request, handler)
        return await self._dispatch(request, handler)

    async def _dispatch(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX + "/"):
            denied = self._check_bearer(request)
            if denied is not None:
                return denied
        try:
            return await handler(request)
        except web.HTTPException as exc:  # the router's 404 / 405
            message = f"{exc.reason}: {request.method} {request.path}"
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error(exc.status, message, headers=headers)
        except _BadRequest as exc:
            return _error(400, exc.message, exc.details)
        except Exception as exc:  # a simulator bug: still answer with the documented envelope
            _log.exception("simulator error on %s %s", request.method, request.path)
            return _error(500, f"Internal simulator error: {exc!r}")

    def _take_fault(self, request: web.Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(request.method, request.path, request.path_qs):
                    continue
                fault._seen += 1
                if fault._seen <= fault.skip:
                    continue
                fault.fired += 1
                if fault.exhausted:
                    self._faults.remove(fault)
                return fault
        return None

    async def _apply_fault(self, fault: Fault, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        kind = fault.kind
        if kind == "slow":
            return await self._dispatch(request, handler)
        if kind == "huge":
            return self._pad(await self._dispatch(request, handler), fault.size)
        if kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # never written: aiohttp sees the closed transport
        if kind == "malformed":
            text = fault.body if fault.body is not None else '{"body": {"batchRefreshId": "3f2a'
            return web.Response(body=_as_bytes(text), status=200, content_type="application/json")
        if kind == "html":
            status = fault.status or 502
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            page = (
                f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}"
                "</h1></center><hr><center>simulated gateway</center></body></html>\n"
            )
            return web.Response(text=page, status=status, content_type="text/html", headers=dict(fault.headers or {}))
        if kind == "empty":
            return web.Response(body=b"", status=200, content_type="application/json")
        if kind == "no_body_key":
            return _json_response({"code": 200})
        # kind == "status"
        status = fault.status or 500
        headers = dict(fault.headers or {})
        if fault.body is None:
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            return _error(status, f"{phrase} (simulated fault)", headers=headers)
        if isinstance(fault.body, (dict, list)):
            return _json_response(fault.body, status, headers)
        content_type = "application/json"
        for key in [k for k in headers if k.lower() == "content-type"]:
            content_type = headers.pop(key)
        return web.Response(body=_as_bytes(fault.body), status=status, headers=headers, content_type=content_type)

    @staticmethod
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
        return _json_response(payload, response.status)

    def _check_bearer(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="wdata-simulator"'}
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "Unauthorized: a bearer token is required", headers=challenge)
        with self._lock:
            expiry = self._tokens.get(token.strip())
        if expiry is None or self.clock() >= expiry:
            challenge["WWW-Authenticate"] += ', error="invalid_token"'
            return _error(401, "Unauthorized: the access token is invalid or expired", headers=challenge)
        return None

    # ---------------------------------------------------------------------------------------- handlers

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = dict(parse_qsl((await request.read()).decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            client_id, client_secret = unquote(user), unquote(password)
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if not (
            client_id is not None
            and client_secret is not None
            and hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        ):
            return _json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                401,
                {**no_store, "WWW-Authenticate": 'Basic realm="wdata-simulator"'},
            )
        grant_type = form.get("grant_type")
        if not grant_type:
            return _json_response(
                {"error": "invalid_request", "error_description": "Missing grant_type"}, 400, no_store
            )
        if grant_type != "client_credentials":
            return _json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Unsupported grant_type {grant_type!r}; use client_credentials",
                },
                400,
                no_store,
            )
        token = self.token_prefix + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.clock() + self.token_lifetime
            self._issued.append(token)
        lifetime = self.token_lifetime
        expires_in: float = int(lifetime) if float(lifetime).is_integer() else lifetime
        return _json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": form.get("scope", ""),
            },
            200,
            no_store,
        )

    async def _start_batch(self, request: web.Request) -> web.StreamResponse:
        cancel_unwritables = _parse_bool(request.query.get("cancelUnwritables"), "cancelUnwritables")
        items = _parse_json_body(await request.read())
        if not isinstance(items, list):
            raise _BadRequest(
                "The request body must be a JSON array of RefreshConnection objects",
                [_detail("invalid_type", "expected an array", "body")],
            )
        if not 1 <= len(items) <= MAX_BATCH:
            raise _BadRequest(
                f"A batch refresh takes 1 to {MAX_BATCH} connections, got {len(items)}",
                [_detail("invalid_size", f"expected 1..{MAX_BATCH} items, got {len(items)}", "body")],
            )
        details: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            details.extend(_validate_refresh_connection(item, f"[{index}]", require_id=True))
        if details:
            raise _BadRequest("Invalid RefreshConnection in the request body", details)
        with self._lock:
            missing = [item["connectionId"] for item in items if item["connectionId"] not in self._connections]
            if missing:
                messages = [f"Connection {cid} not found" for cid in missing]
                return _error(404, messages[0] if len(messages) == 1 else messages)
            now = _now_iso()
            batch_id = str(uuid.uuid4())
            children = [self._new_run(item, batch_id, cancel_unwritables, now) for item in items]
            workspace_id = next((i.get("workspaceId") for i in items if i.get("workspaceId")), None)
            batch = BatchState(
                batch_id=batch_id,
                children=children,
                cancel_unwritables=cancel_unwritables,
                created=now,
                updated=now,
                created_by=self.created_by,
                workspace_id=workspace_id,
            )
            self._batches[batch_id] = batch
            self._derive_batch(batch)
            body = self._batch_body(batch, None)
        return _json_response({"body": body, "code": self.start_status}, self.start_status)

    async def _get_batch(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["batch_id"]
        workspace_id = _workspace_query(request)
        with self._lock:
            if batch_id in self._raw_batches:
                return _json_response({"body": self._raw_batches[batch_id], "code": 200})
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, f"Batch refresh {batch_id} not found")
            batch.polls += 1
            for child in batch.children:
                self._advance(child, poll=True)
            self._derive_batch(batch)
            body = self._batch_body(batch, workspace_id)
        return _json_response({"body": body, "code": 200})

    async def _start_run(self, request: web.Request) -> web.StreamResponse:
        connection_id = request.match_info["connection_id"]
        raw = await request.read()
        if not raw.strip():
            raise _BadRequest(
                "The request body is required: a RefreshConnection object (it may be {})",
                [_detail("required", "missing request body", "body")],
            )
        item = _parse_json_body(raw)
        details = _validate_refresh_connection(item, "body", require_id=False)
        if not details and item.get("connectionId") not in (None, connection_id):
            details.append(_detail("mismatch", "connectionId differs from the connection in the path", "connectionId"))
        if details:
            raise _BadRequest("Invalid RefreshConnection in the request body", details)
        with self._lock:
            if connection_id not in self._connections:
                return _error(404, f"Connection {connection_id} not found")
            run = self._new_run({**item, "connectionId": connection_id}, None, False, _now_iso())
            body = self._run_body(run, None)
        return _json_response({"body": body, "code": self.start_status}, self.start_status)

    async def _run_status(self, request: web.Request) -> web.StreamResponse:
        connection_id = request.match_info["connection_id"]
        job_id = request.query.get("jobId")
        if not job_id:
            raise _BadRequest("The jobId query parameter is required", [_detail("required", "missing", "jobId")])
        workspace_id = _workspace_query(request)
        with self._lock:
            if (connection_id, job_id) in self._raw_runs:
                return _json_response({"body": self._raw_runs[(connection_id, job_id)], "code": 200})
            if connection_id not in self._connections:
                return _error(404, f"Connection {connection_id} not found")
            run = self._runs.get((connection_id, job_id))
            if run is None:
                return _error(404, f"Job {job_id} not found for connection {connection_id}")
            self._advance(run, poll=True)
            body = self._run_body(run, workspace_id)
        return _json_response({"body": body, "code": 200})

    async def _get_connection(self, request: web.Request) -> web.StreamResponse:
        connection_id = request.match_info["connection_id"]
        workspace_id = _workspace_query(request)
        with self._lock:
            conn = self._connections.get(connection_id)
            if conn is None:
                return _error(404, f"Connection {connection_id} not found")
            body = self._connection_body(conn, workspace_id)
        return _json_response({"body": body, "code": 200})

    async def _list_connections(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit = _parse_int(query.get("limit"), "limit", default=100, low=1, high=1000)
        offset = _parse_int(query.get("offset"), "offset", default=0, low=0, high=None)
        cursor = query.get("cursor")
        if cursor:
            offset = _decode_cursor(cursor)
        filters = {
            "source_type": query.get("sourceType"),
            "source_id": query.get("sourceId"),
            "destination_type": query.get("destinationType"),
            "destination_id": query.get("destinationId"),
        }
        with self._lock:
            selected = [
                c
                for c in self._connections.values()
                if all(v in (None, "") or getattr(c, k) == v for k, v in filters.items())
            ]
            page = [self._connection_body(c, None) for c in selected[offset : offset + limit]]
        next_cursor = _encode_cursor(offset + limit) if offset + limit < len(selected) else None
        return _json_response({"body": page, "code": 200, "cursor": next_cursor})

    # ------------------------------------------------------------------------- state (hold self._lock)

    def _new_run(self, item: Mapping[str, Any], batch_id: str | None, cancel_unwritables: bool, now: str) -> RunState:
        conn = self._connections[item["connectionId"]]
        previous = self._last_run(conn.connection_id)
        source_parameters = dict(item.get("sourceParameters") or {})
        destination_parameters = dict(item.get("destinationParameters") or {})
        if item.get("usePreviousSourceParameters") and previous is not None:
            source_parameters = dict(previous.source_parameters)
        if item.get("usePreviousDestinationParameters") and previous is not None:
            destination_parameters = dict(previous.destination_parameters)
        outcome, error_text = conn.outcome, conn.error
        if outcome == "unwritable":
            if cancel_unwritables:
                outcome, error_text = "cancelled", error_text or _UNWRITABLE_CANCELLED
            else:
                outcome, error_text = "error", error_text or _UNWRITABLE_ERROR
        run = RunState(
            connection_id=conn.connection_id,
            job_id=str(uuid.uuid4()),
            outcome=outcome,
            error_text=error_text,
            polls_to_finish=conn.polls_to_finish if conn.polls_to_finish is not None else self.polls_to_finish,
            seconds_to_finish=(
                conn.seconds_to_finish if conn.seconds_to_finish is not None else self.seconds_to_finish
            ),
            started_at=self.clock(),
            created=now,
            updated=now,
            created_by=self.created_by,
            workspace_id=item.get("workspaceId") or conn.workspace_id,
            source_workspace_id=conn.workspace_id,
            destination_workspace_id=conn.workspace_id,
            source_parameters=source_parameters,
            destination_parameters=destination_parameters,
            batch_id=batch_id,
        )
        self._runs[(run.connection_id, run.job_id)] = run
        self._latest_runs[run.connection_id] = run
        self._advance(run, poll=False)
        return run

    def _last_run(self, connection_id: str) -> RunState | None:
        return self._latest_runs.get(connection_id)

    def _advance(self, run: RunState, poll: bool) -> None:
        if run.terminal:
            return
        if poll:
            run.polls += 1
        state: tuple[str, str, str | None] | None
        if run.outcome == "stuck":
            state = ("running", "running", None) if run.polls else None
        elif run.outcome == "queued":
            state = None
        else:
            ptf, stf = run.polls_to_finish, run.seconds_to_finish
            if ptf is None and stf is None:
                done = run.polls >= 1
            else:
                done = (ptf is not None and run.polls >= ptf) or (
                    stf is not None and self.clock() - run.started_at >= stf
                )
            if done:
                source, destination, default_error = _TERMINAL_OUTCOMES[run.outcome]
                state = (source, destination, run.error_text if run.error_text is not None else default_error)
            else:
                state = ("running", "running", None) if run.polls else None
        if state is not None and (run.source_status, run.destination_status, run.error) != state:
            run.source_status, run.destination_status, run.error = state
            run.updated = _now_iso()

    def _derive_batch(self, batch: BatchState) -> None:
        children = batch.children
        if all(c.terminal for c in children):
            if self.batch_status == "complete":
                state = ("complete", "complete")
            else:
                state = (
                    _worst(c.source_status for c in children),
                    _worst(c.destination_status for c in children),
                )
        elif all(c.source_status == c.destination_status == "not_started" for c in children):
            state = ("not_started", "not_started")
        else:
            state = ("running", "running")
        if (batch.source_status, batch.destination_status) != state:
            batch.source_status, batch.destination_status = state
            batch.updated = _now_iso()
        latest_child = max((c.updated for c in children), default=batch.updated)
        batch.updated = max(batch.updated, latest_child)

    def _run_body(self, run: RunState, workspace_id: str | None) -> dict[str, Any]:
        return {
            "connectionId": run.connection_id,
            "jobId": run.job_id,
            "sourceStatus": run.source_status,
            "destinationStatus": run.destination_status,
            "error": run.error,
            "created": run.created,
            "createdBy": run.created_by,
            "updated": run.updated,
            "sourceParameters": dict(run.source_parameters),
            "destinationParameters": dict(run.destination_parameters),
            "sourceMetadata": {},
            "destinationMetadata": {},
            "workspaceId": workspace_id or run.workspace_id,
            "sourceWorkspaceId": run.source_workspace_id,
            "destinationWorkspaceId": run.destination_workspace_id,
        }

    def _batch_body(self, batch: BatchState, workspace_id: str | None) -> dict[str, Any]:
        return {
            "batchRefreshId": batch.batch_id,
            "childRefreshes": [self._run_body(c, workspace_id) for c in batch.children],
            "sourceStatus": batch.source_status,
            "destinationStatus": batch.destination_status,
            "error": batch.error,
            "created": batch.created,
            "createdBy": batch.created_by,
            "updated": batch.updated,
        }

    def _connection_body(self, conn: ConnectionState, workspace_id: str | None) -> dict[str, Any]:
        last = self._last_run(conn.connection_id)
        if last is not None:
            self._advance(last, poll=False)  # time-based progress shows without polling
        return {
            "id": conn.connection_id,
            "name": conn.name,
            "description": conn.description,
            "sourceType": conn.source_type,
            "sourceId": conn.source_id,
            "destinationType": conn.destination_type,
            "destinationId": conn.destination_id,
            "workspaceId": workspace_id or conn.workspace_id,
            "created": conn.created,
            "updated": conn.updated,
            "lastRun": self._run_body(last, workspace_id) if last is not None else None,
        }


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")


def _worst(statuses: Iterable[str]) -> str:
    # A cancelled child does not cancel its batch (that is what cancelUnwritables is for): only an error
    # does, or every child being cancelled.
    values = set(statuses)
    if "error" in values:
        return "error"
    if values == {"cancelled"}:
        return "cancelled"
    return "complete"


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


def _parse_json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _BadRequest("The request body is not valid JSON", [_detail("invalid_json", str(exc), "body")]) from None


def _parse_bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _BadRequest(f"Invalid {name}: {value!r}", [_detail("invalid_value", "expected true or false", name)])


def _parse_int(value: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise _BadRequest(
            f"Invalid {name}: {value!r} (expected an integer {bound})",
            [_detail("invalid_value", f"expected an integer {bound}", name)],
        )
    return number


def _encode_cursor(offset: int) -> str:
    raw = json.dumps({"offset": offset}).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        if not cursor.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        data = cursor[len(_CURSOR_PREFIX) :]
        offset = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
        return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _BadRequest(
            "Invalid cursor", [_detail("invalid_value", "unknown or malformed cursor", "cursor")]
        ) from None


def _workspace_query(request: web.Request) -> str | None:
    workspace_id = request.query.get("workspaceId") or None
    if workspace_id is not None and len(workspace_id) > MAX_WORKSPACE_ID:
        raise _BadRequest(
            "Invalid workspaceId",
            [_detail("invalid_size", f"at most {MAX_WORKSPACE_ID} characters", "workspaceId")],
        )
    return workspace_id


def _validate_refresh_connection(item: Any, target: str, require_id: bool) -> list[dict[str, Any]]:
    if not isinstance(item, dict):
        return [_detail("invalid_type", "expected a RefreshConnection object", target)]
    details = []
    prefix = "" if target == "body" else f"{target}."
    connection_id = item.get("connectionId")
    if connection_id is None:
        if require_id:
            details.append(_detail("required", "connectionId is required", prefix + "connectionId"))
    elif not isinstance(connection_id, str) or not connection_id:
        details.append(_detail("invalid_type", "expected a non-empty string", prefix + "connectionId"))
    for key in ("sourceParameters", "destinationParameters"):
        if item.get(key) is not None and not isinstance(item[key], dict):
            details.append(_detail("invalid_type", "expected an object", prefix + key))
    for key in ("usePreviousSourceParameters", "usePreviousDestinationParameters"):
        if item.get(key) is not None and not isinstance(item[key], bool):
            details.append(_detail("invalid_type", "expected a boolean", prefix + key))
    workspace_id = item.get("workspaceId")
    if workspace_id is not None and (not isinstance(workspace_id, str) or len(workspace_id) > MAX_WORKSPACE_ID):
        details.append(
            _detail(
                "invalid_value", f"expected a string of at most {MAX_WORKSPACE_ID} characters", prefix + "workspaceId"
            )
        )
    return details
