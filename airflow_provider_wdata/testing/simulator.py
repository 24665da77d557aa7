"""A local, scriptable simulator of the Workiva Wdata Prep API, served over HTTP(S).

The simulator is a real HTTP(S) server (``aiohttp.web``) on ``127.0.0.1``. It runs in its own daemon thread
with its own event loop, so it can be driven from synchronous tests, from async tests running in another
loop, and from other processes (Airflow's scheduler and triggerer reach it over HTTP).

Its parts: the in-memory service (:mod:`~airflow_provider_wdata.testing.service`, which documents the
decisions taken where the API description is silent), faults (:mod:`~airflow_provider_wdata.testing.faults`),
the OAuth token endpoint (:mod:`~airflow_provider_wdata.testing.oauth`), the rate limit
(:mod:`~airflow_provider_wdata.testing.ratelimit`) and the handlers over them
(:mod:`~airflow_provider_wdata.testing.http_api`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from aiohttp import web

from airflow_provider_wdata.testing.faults import FAULT_KINDS, Fault
from airflow_provider_wdata.testing.http_api import Handler, WdataHttpApi
from airflow_provider_wdata.testing.recording import API_PREFIX, TOKEN_PATHS, RecordedRequest
from airflow_provider_wdata.testing.refresh_state import (
    OUTCOMES,
    STATUSES,
    SimulatedBatch,
    SimulatedConnection,
    SimulatedRun,
)
from airflow_provider_wdata.testing.service import Clock

__all__ = [
    "API_PREFIX",
    "FAULT_KINDS",
    "OUTCOMES",
    "STATUSES",
    "TOKEN_PATHS",
    "Fault",
    "RecordedRequest",
    "SimulatedBatch",
    "SimulatedConnection",
    "SimulatedRun",
    "WdataSimulator",
]


class WdataSimulator(WdataHttpApi):
    """A scriptable Wdata Prep API served over HTTP(S) from a background thread. See the module docstring.

    ``rate_limit`` (``None``: off) allows that many API requests per ``rate_limit_window`` seconds per client
    (the OAuth client a bearer token was issued to); past it the API answers 429 with ``Retry-After``.
    """

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
        rate_limit: int | None = None,
        rate_limit_window: float = 1.0,
    ) -> None:
        super().__init__(
            client_id,
            client_secret,
            token_lifetime,
            polls_to_finish,
            seconds_to_finish,
            connections,
            batch_status,
            clock=clock,
            start_status=start_status,
            created_by=created_by,
            record_requests=record_requests,
            token_prefix=token_prefix,
            rate_limit=rate_limit,
            rate_limit_window=rate_limit_window,
        )
        self.host = host
        self.ssl_context = ssl_context
        self._backlog = backlog
        self._shutdown_timeout = shutdown_timeout
        self._requested_port = port
        self._port: int | None = None
        self._connections_opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._busy: dict[object, int] = {}  # connection (protocol) -> requests in flight; loop thread only

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

    def airflow_conn_env(self, conn_id: str = "wdata_default") -> tuple[str, str]:
        """``("AIRFLOW_CONN_<CONN_ID>", <the connection as JSON>)``: the environment variable Airflow reads."""
        return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(self.airflow_connection())

    def airflow_conn_uri_env(self, conn_id: str = "wdata_default") -> tuple[str, str]:
        """Deprecated: the value is JSON, not a URI; use :meth:`airflow_conn_env`."""
        warnings.warn(
            "WdataSimulator.airflow_conn_uri_env() is deprecated (its value is JSON, not a URI): "
            "use airflow_conn_env()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.airflow_conn_env(conn_id)

    # ------------------------------------------------------------------------ tokens, faults, rate limit

    def expire_tokens(self) -> None:
        """Every token issued so far becomes invalid (the API answers 401)."""
        self._oauth.expire_all()

    @property
    def issued_tokens(self) -> list[str]:
        return self._oauth.issued

    def add_fault(self, fault: Fault) -> Fault:
        return self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        return self._faults.snapshot()

    def set_rate_limit(self, limit: int | None, window: float = 1.0) -> None:
        """Allow ``limit`` API requests per ``window`` seconds per client from now on (``None``: no limit)."""
        self._rate_limiter.configure(limit, window)

    @property
    def rate_limited(self) -> int:
        """How many 429s the rate limit has served (faults that answer 429 are not counted)."""
        return self._rate_limiter.refused

    # --------------------------------------------------------------------------------------- recording

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (token calls included), oldest first.

        Refresh starts sent, accepted or not: ``[r.json() for r in sim.requests if r.method == "POST" and
        r.path.endswith("/refresh")]``; the refreshes the service accepted are in :attr:`runs`.
        """
        return self._request_log.snapshot()

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self._request_log.snapshot() if r.is_token_request]

    def clear_requests(self) -> None:
        self._request_log.clear()

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start."""
        return self._connections_opened

    def reset(self) -> None:
        """Forget batches, runs, raw overrides, faults, tokens, rate-limit counts and recorded requests (keep
        connections)."""
        super().reset()
        self._faults.clear()
        self._oauth.reset()
        self._rate_limiter.reset()
        self._request_log.clear()

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
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
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

    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Counting requests in flight per connection lets stop_listening() close only idle connections.
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            return await self._handle(request, handler)
        finally:
            left = self._busy.pop(protocol) - 1
            if left:
                self._busy[protocol] = left
