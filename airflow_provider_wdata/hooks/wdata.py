"""WdataHook: typed sync and async calls to the Wdata Prep API, with tokens and retries handled."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import tenacity

from airflow_provider_wdata import protocol, shared_config
from airflow_provider_wdata._compat import AirflowNotFoundException, BaseHook, aget_connection
from airflow_provider_wdata.assets import report_hook_lineage
from airflow_provider_wdata.config import WdataConfig, build_config, undefined_connection
from airflow_provider_wdata.connection_form import legacy_field_behaviour, legacy_widgets, without_conn_id
from airflow_provider_wdata.exceptions import WdataAuthError, WdataConfigError, WdataError
from airflow_provider_wdata.models import ConnectionRun, RefreshBatch, WdataConnection
from airflow_provider_wdata.protocol import ApiRequest, Envelope, RawResponse
from airflow_provider_wdata.retries import (
    DEFAULT_BACKOFF_INITIAL,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_AFTER_MAX,
    retry_policy,
)
from airflow_provider_wdata.throttle import loop_gate
from airflow_provider_wdata.tokens import DEFAULT_RENEW_MARGIN, TOKENS, AccessToken
from airflow_provider_wdata.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AsyncTransport,
    SyncTransport,
    shared_async_transport,
)

T = TypeVar("T")
#: Reads the body of an answer into what a call returns (a model's ``from_api``).
Parse = Callable[[Any], Any]


def _response(outcome: RawResponse | WdataError, request: ApiRequest | None = None) -> RawResponse:
    """The transport's response, or raise its error (refined for the API call ``request``).

    Raised here, with no exception being handled and from a frame that holds no credential: nothing that held
    the token form or the Authorization header is chained to it or in its traceback (see :mod:`.transport`).
    """
    if isinstance(outcome, WdataError):
        raise outcome if request is None else protocol.refine_error(request, outcome)
    return outcome


def _build(config: WdataConfig, build: Callable[..., ApiRequest], *args: Any, **kw: Any) -> ApiRequest:
    """Build a request, with the connection's workspace where the caller gave none."""
    if "workspace_id" in kw and kw["workspace_id"] is None:
        kw["workspace_id"] = config.workspace_id
    return build(*args, **kw)


class WdataHook(BaseHook):
    """Talk to the Workiva Wdata Prep API through an Airflow connection of type ``wdata``.

    :param wdata_conn_id: the Airflow connection: login = client id, password = client secret, extras
        ``region`` (us, eu, apac), ``workspace_id``, ``token_url``, ``timeout``, ``verify``; host, when set,
        is the API base URL.
    :param timeout: seconds to connect and to wait for an answer; overrides the connection's ``timeout`` extra
        (default 30). Async calls connect within ``timeout`` and finish the whole exchange within twice it.
    :param max_attempts: tries per call, counting the first, on network errors, timeouts, 429 and 5xx
        (a start is only tried again when the service certainly did not take it).
    :param backoff_initial: first wait between tries, doubled each time, with jitter (seconds).
    :param backoff_max: longest wait between tries (seconds).
    :param retry_after_max: longest wait honoured from a ``Retry-After`` header (seconds).
    :param token_renew_margin: renew a cached token this many seconds before it expires.
    :param max_response_bytes: refuse response bodies larger than this.
    """

    conn_name_attr = "wdata_conn_id"
    default_conn_name = "wdata_default"
    conn_type = "wdata"
    hook_name = "Workiva Wdata"

    def __init__(
        self,
        wdata_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
        token_renew_margin: float = DEFAULT_RENEW_MARGIN,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__()
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise WdataConfigError(f"max_attempts must be a whole number of at least 1, not {max_attempts!r}.")
        limits = {
            "backoff_initial": backoff_initial,
            "backoff_max": backoff_max,
            "retry_after_max": retry_after_max,
            "token_renew_margin": token_renew_margin,
            "max_response_bytes": max_response_bytes,
        }
        for name, value in limits.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise WdataConfigError(f"{name} must be a number of at least 0, not {value!r}.")
        self.wdata_conn_id = wdata_conn_id
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.token_renew_margin = token_renew_margin
        self.max_response_bytes = max_response_bytes
        self._config: WdataConfig | None = None
        self._held: tuple[Any, ...] | None = None  # request, parse, status, digest, model: see _answer

    @functools.cached_property
    def _transport(self) -> SyncTransport:
        # Made on first sync call: a trigger's hook never needs one.
        return SyncTransport(self.max_response_bytes)

    @property
    def _atransport(self) -> AsyncTransport:
        return shared_async_transport(self.max_response_bytes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(wdata_conn_id={self.wdata_conn_id!r})"

    # ------------------------------------------------------------------------------------ connection

    def _build_config(self, conn: Any | None) -> WdataConfig:
        if conn is None:  # Airflow has no such connection: raised here, outside the lookup's except, with no chain
            raise undefined_connection(self.wdata_conn_id)
        config = build_config(
            self.wdata_conn_id,
            login=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            extras=conn.extra_dejson,
            timeout=self.timeout,
        )
        if config.verify is False:
            self.log.warning(
                "TLS certificate verification is OFF for connection %r (extra 'verify' is false): "
                "anyone on the network path could read the client secret. Use it only for a trusted test setup.",
                config.conn_id,
            )
        return config

    @property
    def config(self) -> WdataConfig:
        """The checked connection, read once per hook."""
        if self._config is None:
            try:
                connection = self.get_connection(self.wdata_conn_id)
            except AirflowNotFoundException:
                connection = None
            self._config = self._build_config(connection)
        return self._config

    async def aget_config(self) -> WdataConfig:
        """:attr:`config`, read without blocking the event loop.

        Hooks in one event loop (a triggerer's waits) reuse a checked connection for
        :data:`CONNECTION_REUSE_SECONDS`: Airflow's lookup costs more than a status read. Refused credentials
        or a configuration error drop it at once, so a fixed connection is read again.
        """
        if self._config is None:
            key = (self.wdata_conn_id, self.timeout)
            self._config = await shared_config.shared_config(key, self._alook_up_config, CONNECTION_REUSE_SECONDS)
        return self._config

    async def _alook_up_config(self) -> WdataConfig:
        try:
            connection = await aget_connection(self.wdata_conn_id)
        except AirflowNotFoundException:
            connection = None
        return self._build_config(connection)

    def _forget_config(self) -> None:
        """Read the Airflow connection again on the next call (its credentials or fields were refused)."""
        self._config = None
        shared_config.forget((self.wdata_conn_id, self.timeout))

    # ------------------------------------------------------------------------------------ retries

    def _retry_policy(self, request: ApiRequest) -> dict[str, Any]:
        """tenacity's arguments for one call (see :mod:`airflow_provider_wdata.retries`)."""
        return retry_policy(
            request,
            max_attempts=self.max_attempts,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            retry_after_max=self.retry_after_max,
            log=self.log,
        )

    # ------------------------------------------------------------------------------------ sync calls

    def _token(self, config: WdataConfig) -> AccessToken:
        return TOKENS.get(config.token_key, functools.partial(self._fetch_token, config), self.token_renew_margin)

    def _fetch_token(self, config: WdataConfig) -> tuple[str, float]:
        self.log.debug("Fetching a Wdata access token for connection %r", config.conn_id)
        return protocol.read_token(config, _response(self._transport.post_token(config)))

    def _answer(
        self, request: ApiRequest, raw: RawResponse, config: WdataConfig, parse: Parse | None, token: str
    ) -> Any:
        """The envelope, or ``parse`` of its body. A status read answered with the very bytes of the last one (same
        request, parser, HTTP status; the hook holds the bytes' BLAKE2 digest) is the model read then, not rebuilt."""
        if parse is None:
            return protocol.read_response(request, raw, config, self.max_response_bytes, token)
        if not request.polled:
            return parse(self._object(request, raw, config, token))
        answer = (request, parse, raw.status, hashlib.blake2b(raw.body, digest_size=16).digest())
        if self._held is not None and self._held[:4] == answer:
            return self._held[4]
        value = parse(self._object(request, raw, config, token))
        self._held = (*answer, value)
        return value

    def _object(self, request: ApiRequest, raw: RawResponse, config: WdataConfig, token: str) -> Any:
        envelope = protocol.read_response(request, raw, config, self.max_response_bytes, token)
        return protocol.read_object(request, raw, envelope.body)

    def _try_once(self, request: ApiRequest, config: WdataConfig, parse: Parse | None = None) -> Any:
        """Token, send, and on a 401 one more send with a fresh token; the answer (see :meth:`_answer`)."""
        token = self._token(config)
        raw = _response(self._transport.send(request, config, token), request)
        if raw.status == 401:
            TOKENS.invalidate(config.token_key, token)
            token = self._token(config)
            raw = _response(self._transport.send(request, config, token), request)
        return self._answer(request, raw, config, parse, token.value)

    def _request(self, request: ApiRequest, config: WdataConfig, parse: Parse | None = None) -> Any:
        """:meth:`_try_once` under the retry policy.

        The first try runs outside tenacity, whose bookkeeping costs more than a status read; a retryable failure
        hands over to it as its attempt 1.
        """
        try:
            return self._try_once(request, config, parse)
        except WdataError as error:
            if not error.retryable:
                raise
            first_failure = error
        return self._retry(request, config, parse, first_failure)

    def _retry(self, request: ApiRequest, config: WdataConfig, parse: Parse | None, first_failure: WdataError) -> Any:
        # Apart from _request, whose every call would otherwise pay for the closure's cells.
        failures = [first_failure]

        def again() -> Any:
            if failures:
                raise failures.pop()
            return self._try_once(request, config, parse)

        return tenacity.Retrying(**self._retry_policy(request))(again)

    def _call(self, parse: Callable[[Any], T], build: Callable[..., ApiRequest], *args: Any, **kw: Any) -> T:
        config = self.config
        return self._request(_build(config, build, *args, **kw), config, parse)

    # ----------------------------------------------------------------------------------- async calls

    async def _atoken(self, config: WdataConfig) -> AccessToken:
        # Callers look in TOKENS first (a cached token then costs no coroutine); this covers a fresh fetch.
        token = TOKENS.fresh(config.token_key)
        if token is not None:
            return token
        fetch = functools.partial(self._afetch_token, config)
        return await TOKENS.aget(config.token_key, fetch, self.token_renew_margin, fetch_key=config.fetch_key)

    async def _afetch_token(self, config: WdataConfig) -> tuple[str, float]:
        self.log.debug("Fetching a Wdata access token for connection %r", config.conn_id)
        return protocol.read_token(config, _response(await self._atransport.post_token(config)))

    async def _atry_once(self, request: ApiRequest, config: WdataConfig, parse: Parse | None = None) -> Any:
        """Async :meth:`_try_once`, held for its turn while the credential is paused or paced (see :mod:`.throttle`)."""
        gate, key = loop_gate(), config.throttle_key
        if gate.holds(key):
            await gate.wait_turn(key)
        token = TOKENS.fresh(config.token_key) or await self._atoken(config)
        sent_at = gate.sent(key)
        raw = _response(await self._atransport.send(request, config, token), request)
        if raw.status == 401:
            TOKENS.invalidate(config.token_key, token)
            token = await self._atoken(config)
            raw = _response(await self._atransport.send(request, config, token), request)
        if raw.status == 429:
            pause = protocol.retry_after_seconds(raw.headers.get("Retry-After"))
            gate.throttled(key, min(pause, self.retry_after_max) if pause else None, sent_at)
        return self._answer(request, raw, config, parse, token.value)

    async def _arequest(self, request: ApiRequest, config: WdataConfig) -> Envelope:
        """Async :meth:`_request`, for the envelope."""
        try:
            return await self._atry_once(request, config)
        except WdataError as error:
            first_failure = error
        return await self._aafter_failure(request, config, None, first_failure)

    async def _aafter_failure(
        self, request: ApiRequest, config: WdataConfig, parse: Parse | None, first_failure: WdataError
    ) -> Any:
        """After a failed first try: the retry policy's tries, when another may help.

        Refused credentials or a configuration error drop the checked connection (see :meth:`aget_config`).
        """
        try:
            if not first_failure.retryable:
                raise first_failure
            return await self._aretry(request, config, parse, first_failure)
        except (WdataAuthError, WdataConfigError):
            self._forget_config()
            raise

    async def _aretry(
        self, request: ApiRequest, config: WdataConfig, parse: Parse | None, first_failure: WdataError
    ) -> Any:
        """Async :meth:`_retry`."""
        failures = [first_failure]

        async def again() -> Any:
            if failures:
                raise failures.pop()
            return await self._atry_once(request, config, parse)

        return await tenacity.AsyncRetrying(**self._retry_policy(request))(again)

    def _acall(
        self, parse: Callable[[Any], T], build: Callable[..., ApiRequest], *args: Any, **kw: Any
    ) -> Awaitable[T]:
        # A plain function handing back a coroutine: the build's arguments are let go before the request is sent,
        # not held by a frame while it is in flight (thousands are, in a triggerer).
        config = self._config
        if config is None:
            return self._acall_after_lookup(parse, build, args, kw)
        return self._asend(parse, _build(config, build, *args, **kw), config)

    async def _acall_after_lookup(
        self, parse: Callable[[Any], T], build: Callable[..., ApiRequest], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> T:
        config = await self.aget_config()
        return await self._asend(parse, _build(config, build, *args, **kw), config)

    async def _asend(self, parse: Callable[[Any], T], request: ApiRequest, config: WdataConfig) -> T:
        """:meth:`_arequest`, parsed, with the first try's failure handed to :meth:`_aafter_failure` from here."""
        try:
            return await self._atry_once(request, config, parse)
        except WdataError as error:
            first_failure = error
        return await self._aafter_failure(request, config, parse, first_failure)

    # ---------------------------------------------------------------------------------------- calls

    def get_batch_refresh(self, batch_id: str, workspace_id: str | None = None) -> RefreshBatch:
        """Status of a batch refresh and of each of its connection refreshes."""
        return self._call(RefreshBatch.from_api, protocol.get_batch_refresh, batch_id, workspace_id=workspace_id)

    async def aget_batch_refresh(self, batch_id: str, workspace_id: str | None = None) -> RefreshBatch:
        """Async :meth:`get_batch_refresh`."""
        return await self._acall(RefreshBatch.from_api, protocol.get_batch_refresh, batch_id, workspace_id=workspace_id)

    def start_batch_refresh(
        self, connections: Sequence[Any], cancel_unwritables: bool = False, workspace_id: str | None = None
    ) -> RefreshBatch:
        """Start refreshing 1 to 100 connections together; poll the result's ``batch_refresh_id``.

        ``connections`` holds connection ids, or dicts with the RefreshConnection fields in snake_case
        (``connection_id``, ``source_parameters``, ``destination_parameters``,
        ``use_previous_source_parameters``, ``use_previous_destination_parameters``, ``workspace_id``).
        Never sent twice: a failure after which the batch may have started raises
        :class:`~airflow_provider_wdata.exceptions.WdataRefreshMayHaveStartedError`.
        """
        batch = self._call(
            RefreshBatch.from_api,
            protocol.start_batch_refresh,
            connections,
            cancel_unwritables,
            workspace_id=workspace_id,
        )
        report_hook_lineage(self, connections, workspace_id)
        return batch

    async def astart_batch_refresh(
        self, connections: Sequence[Any], cancel_unwritables: bool = False, workspace_id: str | None = None
    ) -> RefreshBatch:
        """Async :meth:`start_batch_refresh`."""
        batch = await self._acall(
            RefreshBatch.from_api,
            protocol.start_batch_refresh,
            connections,
            cancel_unwritables,
            workspace_id=workspace_id,
        )
        report_hook_lineage(self, connections, workspace_id)
        return batch

    def refresh_connection(self, connection_id: str, workspace_id: str | None = None, **fields: Any) -> ConnectionRun:
        """Start refreshing one connection; poll the result's ``job_id``.

        ``fields``: ``source_parameters``, ``destination_parameters``, ``use_previous_source_parameters``,
        ``use_previous_destination_parameters``. Never sent twice (see :meth:`start_batch_refresh`).
        """
        run = self._call(
            ConnectionRun.from_api,
            protocol.refresh_connection,
            connection_id,
            workspace_id=workspace_id,
            **fields,
        )
        report_hook_lineage(self, [connection_id], workspace_id)
        return run

    async def arefresh_connection(
        self, connection_id: str, workspace_id: str | None = None, **fields: Any
    ) -> ConnectionRun:
        """Async :meth:`refresh_connection`."""
        run = await self._acall(
            ConnectionRun.from_api,
            protocol.refresh_connection,
            connection_id,
            workspace_id=workspace_id,
            **fields,
        )
        report_hook_lineage(self, [connection_id], workspace_id)
        return run

    def get_connection_refresh(self, connection_id: str, job_id: str, workspace_id: str | None = None) -> ConnectionRun:
        """Status of one connection refresh."""
        return self._call(
            ConnectionRun.from_api,
            protocol.get_connection_refresh,
            connection_id,
            job_id,
            workspace_id=workspace_id,
        )

    async def aget_connection_refresh(
        self, connection_id: str, job_id: str, workspace_id: str | None = None
    ) -> ConnectionRun:
        """Async :meth:`get_connection_refresh`."""
        return await self._acall(
            ConnectionRun.from_api,
            protocol.get_connection_refresh,
            connection_id,
            job_id,
            workspace_id=workspace_id,
        )

    def get_wdata_connection(self, connection_id: str, workspace_id: str | None = None) -> WdataConnection:
        """One Wdata connection, with its last run.

        (Named ``get_wdata_connection`` because ``BaseHook.get_connection`` reads Airflow connections.)
        """
        return self._call(WdataConnection.from_api, protocol.get_connection, connection_id, workspace_id=workspace_id)

    async def aget_wdata_connection(self, connection_id: str, workspace_id: str | None = None) -> WdataConnection:
        """Async :meth:`get_wdata_connection`."""
        return await self._acall(
            WdataConnection.from_api, protocol.get_connection, connection_id, workspace_id=workspace_id
        )

    def list_connections(
        self,
        *,
        source_type: str | None = None,
        source_id: str | None = None,
        destination_type: str | None = None,
        destination_id: str | None = None,
        page_size: int = protocol.MAX_PAGE_SIZE,
    ) -> list[WdataConnection]:
        """Every Wdata connection matching the filters, following the cursor through all pages."""
        config = self.config
        pages = protocol.ConnectionPages(source_type, source_id, destination_type, destination_id, page_size)
        while not pages.done:
            pages.add(self._request(pages.next_request(), config))
        return pages.found

    async def alist_connections(
        self,
        *,
        source_type: str | None = None,
        source_id: str | None = None,
        destination_type: str | None = None,
        destination_id: str | None = None,
        page_size: int = protocol.MAX_PAGE_SIZE,
    ) -> list[WdataConnection]:
        """Async :meth:`list_connections`."""
        config = await self.aget_config()
        pages = protocol.ConnectionPages(source_type, source_id, destination_type, destination_id, page_size)
        while not pages.done:
            pages.add(await self._arequest(pages.next_request(), config))
        return pages.found

    # ------------------------------------------------------------------------------------ Airflow UI

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token and read one page of connections: what the UI's "Test" button runs."""
        try:
            config = self.config
            envelope = self._request(protocol.list_connections(limit=1), config)
        except WdataError as error:
            return False, without_conn_id(str(error), self.wdata_conn_id)
        seen = "at least one connection" if protocol.connections_in(envelope) else "no connections yet"
        return True, f"Connected to Wdata at {config.base_url} as client {config.client_id}: {seen} visible."

    # The connection form on Airflow before 3.2 (3.2+ reads it from the provider info). Airflow looks for these in
    # the class's own __dict__: they cannot come from a base class.
    get_ui_field_behaviour: classmethod[Any, [], dict[str, Any]] = classmethod(legacy_field_behaviour)
    get_connection_form_widgets: classmethod[Any, [], dict[str, Any]] = classmethod(legacy_widgets)


#: How long hooks in one event loop reuse a checked Airflow connection (seconds); see :meth:`WdataHook.aget_config`.
CONNECTION_REUSE_SECONDS = 30.0
