"""WdataHook: typed sync and async calls to the Wdata Prep API, with tokens and retries handled."""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar

import tenacity

from airflow_provider_wdata import protocol
from airflow_provider_wdata._compat import BaseHook, aget_connection
from airflow_provider_wdata.config import WdataConfig, build_config
from airflow_provider_wdata.exceptions import WdataApiError, WdataAuthError, WdataConfigError, WdataError
from airflow_provider_wdata.models import ConnectionRun, RefreshBatch, WdataConnection
from airflow_provider_wdata.protocol import ApiRequest, Envelope, RawResponse
from airflow_provider_wdata.tokens import DEFAULT_RENEW_MARGIN, TOKENS, AccessToken
from airflow_provider_wdata.transport import DEFAULT_MAX_RESPONSE_BYTES, AsyncTransport, SyncTransport

T = TypeVar("T")

#: Defaults of the hook's retry policy (each is a WdataHook argument).
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_RETRY_AFTER_MAX = 120.0


class _NeedToken(NamedTuple):
    config: WdataConfig


class _Send(NamedTuple):
    request: ApiRequest
    config: WdataConfig
    token: AccessToken


_Step = _NeedToken | _Send
_Exchange = Generator[_Step, Any, Envelope]


class _WaitRetryAfterOr(tenacity.wait.wait_base):
    """Wait as long as the service asked (``Retry-After``, capped), else fall back to backoff."""

    def __init__(self, backoff: tenacity.wait.wait_base, cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.cap)
        return float(self.backoff(retry_state))


def _send_step(request: ApiRequest, config: WdataConfig, token: AccessToken) -> Generator[_Step, Any, RawResponse]:
    """Send one request; a failure after which a start may have happened says so (token errors never do)."""
    try:
        raw: RawResponse = yield _Send(request, config, token)
    except WdataError as error:
        _raise_refined(request, error)
    return raw


def _raise_refined(request: ApiRequest, error: WdataError) -> NoReturn:
    refined = protocol.refine_error(request, error)
    if refined is error:
        raise error
    raise refined from error


def _build(config: WdataConfig, build: Callable[..., ApiRequest], *args: Any, **kw: Any) -> ApiRequest:
    """Build a request, with the connection's workspace where the caller gave none."""
    if "workspace_id" in kw and kw["workspace_id"] is None:
        kw["workspace_id"] = config.workspace_id
    return build(*args, **kw)


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, WdataError) and error.retryable


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
        self._transport = SyncTransport(max_response_bytes)
        self._atransport = AsyncTransport(max_response_bytes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(wdata_conn_id={self.wdata_conn_id!r})"

    # ------------------------------------------------------------------------------------ connection

    def _build_config(self, conn: Any) -> WdataConfig:
        config = self._checked_config(conn)
        if config.verify is False:
            self.log.warning(
                "TLS certificate verification is OFF for connection %r (extra 'verify' is false): "
                "anyone on the network path could read the client secret. Use it only for a trusted test setup.",
                config.conn_id,
            )
        return config

    def _checked_config(self, conn: Any) -> WdataConfig:
        return build_config(
            self.wdata_conn_id,
            login=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            extras=conn.extra_dejson,
            timeout=self.timeout,
        )

    @property
    def config(self) -> WdataConfig:
        """The checked connection, read once per hook."""
        if self._config is None:
            self._config = self._build_config(self.get_connection(self.wdata_conn_id))
        return self._config

    async def aget_config(self) -> WdataConfig:
        """:attr:`config`, read without blocking the event loop."""
        if self._config is None:
            self._config = self._build_config(await aget_connection(self.wdata_conn_id))
        return self._config

    # ------------------------------------------------------------------------------------ one exchange

    def _exchange(self, request: ApiRequest, config: WdataConfig) -> _Exchange:
        """One try of one call, as steps the sync and async drivers carry out: token, send, read."""
        token = yield _NeedToken(config)
        raw = yield from _send_step(request, config, token)
        if raw.status == 401:
            TOKENS.invalidate(config.token_key, token)
            token = yield _NeedToken(config)
            raw = yield from _send_step(request, config, token)
            if raw.status == 401:
                error = protocol.api_error(request, raw)
                raise WdataAuthError(
                    f"Connection {config.conn_id!r}: the API refused a freshly issued token for "
                    f"{request} ({'; '.join(error.messages) or 'HTTP 401'}). Check that the API grant "
                    "of this client id may use Wdata.",
                    status=401,
                    method=request.method,
                    path=request.path,
                )
        try:
            return protocol.read_envelope(request, raw, self.max_response_bytes)
        except WdataError as error:
            _raise_refined(request, error)

    def _retrying_args(self, request: ApiRequest) -> dict[str, Any]:
        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0
            self.log.warning(
                "Wdata %s failed (try %d of %d): %s Trying again in %.1f s.",
                request,
                state.attempt_number,
                self.max_attempts,
                error,
                wait,
            )

        backoff = tenacity.wait_exponential_jitter(
            initial=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
        )
        return {
            "stop": tenacity.stop_after_attempt(self.max_attempts),
            "wait": _WaitRetryAfterOr(backoff, self.retry_after_max),
            "retry": tenacity.retry_if_exception(_is_retryable),
            "before_sleep": log_retry,
            "reraise": True,
        }

    # ------------------------------------------------------------------------------------ sync driver

    def _fetch_token(self, config: WdataConfig) -> tuple[str, float]:
        self.log.debug("Fetching a Wdata access token for connection %r", config.conn_id)
        return protocol.read_token(config, self._transport.post_token(config))

    def _perform(self, step: _Step) -> Any:
        if isinstance(step, _NeedToken):
            fetch = functools.partial(self._fetch_token, step.config)
            return TOKENS.get(step.config.token_key, fetch, self.token_renew_margin)
        return self._transport.send(step.request, step.config, step.token)

    def _try_once(self, request: ApiRequest, config: WdataConfig) -> Envelope:
        exchange, result, error = self._exchange(request, config), None, None
        while True:
            try:
                step = exchange.throw(error) if error else exchange.send(result)
            except StopIteration as done:
                return done.value
            try:
                result, error = self._perform(step), None
            except WdataError as failure:
                result, error = None, failure

    def _send(self, request: ApiRequest, config: WdataConfig) -> Envelope:
        # The first try runs outside tenacity, whose bookkeeping costs more than a poll; only a retryable
        # failure hands over to it, as its attempt 1.
        try:
            return self._try_once(request, config)
        except WdataError as error:
            if not error.retryable:
                raise
            first: WdataError | None = error
        for attempt in tenacity.Retrying(**self._retrying_args(request)):
            with attempt:
                if first is not None:
                    failure, first = first, None
                    raise failure
                return self._try_once(request, config)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _call(self, parse: Callable[[Any], T], build: Callable[..., ApiRequest], *args: Any, **kw: Any) -> T:
        config = self.config
        return parse(self._send(_build(config, build, *args, **kw), config).body)

    # ----------------------------------------------------------------------------------- async driver

    async def _afetch_token(self, config: WdataConfig) -> tuple[str, float]:
        self.log.debug("Fetching a Wdata access token for connection %r", config.conn_id)
        return protocol.read_token(config, await self._atransport.post_token(config))

    async def _aperform(self, step: _Step) -> Any:
        if isinstance(step, _NeedToken):
            # Every poll of every trigger asks: a cached token costs no callback and no coroutine.
            token = TOKENS.fresh(step.config.token_key)
            if token is not None:
                return token
            fetch = functools.partial(self._afetch_token, step.config)
            return await TOKENS.aget(step.config.token_key, fetch, self.token_renew_margin)
        return await self._atransport.send(step.request, step.config, step.token)

    async def _atry_once(self, request: ApiRequest, config: WdataConfig) -> Envelope:
        exchange, result, error = self._exchange(request, config), None, None
        while True:
            try:
                step = exchange.throw(error) if error else exchange.send(result)
            except StopIteration as done:
                return done.value
            try:
                result, error = await self._aperform(step), None
            except WdataError as failure:
                result, error = None, failure

    async def _asend(self, request: ApiRequest, config: WdataConfig) -> Envelope:
        """Async :meth:`_send`."""
        try:
            return await self._atry_once(request, config)
        except WdataError as error:
            if not error.retryable:
                raise
            first: WdataError | None = error
        async for attempt in tenacity.AsyncRetrying(**self._retrying_args(request)):
            with attempt:
                if first is not None:
                    failure, first = first, None
                    raise failure
                return await self._atry_once(request, config)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _acall(self, parse: Callable[[Any], T], build: Callable[..., ApiRequest], *args: Any, **kw: Any) -> T:
        config = self._config or await self.aget_config()
        return parse((await self._asend(_build(config, build, *args, **kw), config)).body)

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
        return self._call(
            RefreshBatch.from_api,
            protocol.start_batch_refresh,
            connections,
            cancel_unwritables,
            workspace_id=workspace_id,
        )

    async def astart_batch_refresh(
        self, connections: Sequence[Any], cancel_unwritables: bool = False, workspace_id: str | None = None
    ) -> RefreshBatch:
        """Async :meth:`start_batch_refresh`."""
        return await self._acall(
            RefreshBatch.from_api,
            protocol.start_batch_refresh,
            connections,
            cancel_unwritables,
            workspace_id=workspace_id,
        )

    def refresh_connection(self, connection_id: str, workspace_id: str | None = None, **fields: Any) -> ConnectionRun:
        """Start refreshing one connection; poll the result's ``job_id``.

        ``fields``: ``source_parameters``, ``destination_parameters``, ``use_previous_source_parameters``,
        ``use_previous_destination_parameters``. Never sent twice (see :meth:`start_batch_refresh`).
        """
        return self._call(
            ConnectionRun.from_api,
            protocol.refresh_connection,
            connection_id,
            workspace_id=workspace_id,
            **fields,
        )

    async def arefresh_connection(
        self, connection_id: str, workspace_id: str | None = None, **fields: Any
    ) -> ConnectionRun:
        """Async :meth:`refresh_connection`."""
        return await self._acall(
            ConnectionRun.from_api,
            protocol.refresh_connection,
            connection_id,
            workspace_id=workspace_id,
            **fields,
        )

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
        filters = _filters(source_type, source_id, destination_type, destination_id, page_size)
        config, pages = self.config, _Pages()
        while not pages.done:
            pages.add(self._send(protocol.list_connections(cursor=pages.cursor, **filters), config))
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
        filters = _filters(source_type, source_id, destination_type, destination_id, page_size)
        config, pages = await self.aget_config(), _Pages()
        while not pages.done:
            pages.add(await self._asend(protocol.list_connections(cursor=pages.cursor, **filters), config))
        return pages.found

    # ------------------------------------------------------------------------------------ Airflow UI

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token and read one page of connections: what the UI's "Test" button runs."""
        try:
            config = self.config
            envelope = self._send(protocol.list_connections(limit=1), config)
        except WdataError as error:
            return False, _without_conn_id(str(error), self.wdata_conn_id)
        seen = "at least one connection" if _connections(envelope) else "no connections yet"
        return True, f"Connected to Wdata at {config.base_url} as client {config.client_id}: {seen} visible."

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow before 3.2 (3.2+ reads it from the provider info)."""
        from airflow_provider_wdata.connection_form import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form on Airflow before 3.2."""
        from airflow_provider_wdata.connection_form import legacy_widgets

        return legacy_widgets()


def _without_conn_id(message: str, conn_id: str) -> str:
    """The UI's "Test" button checks a copy of the connection saved under a random id: leave that id out."""
    named = f"Connection {conn_id!r}"
    if message.startswith(f"{named}: "):
        rest = message[len(named) + 2 :]
        return rest[:1].upper() + rest[1:]
    return message.replace(named, "The connection", 1)


def _filters(
    source_type: str | None, source_id: str | None, destination_type: str | None, destination_id: str | None, limit: int
) -> dict[str, Any]:
    return {
        "source_type": source_type,
        "source_id": source_id,
        "destination_type": destination_type,
        "destination_id": destination_id,
        "limit": limit,
    }


class _Pages:
    """Collects the pages of a list call; refuses a cursor that comes back (it would loop forever)."""

    def __init__(self) -> None:
        self.found: list[WdataConnection] = []
        self.cursor: str | None = None
        self.done = False
        self._seen: set[str] = set()

    def add(self, envelope: Envelope) -> None:
        self.found += _connections(envelope)
        self.cursor = envelope.cursor
        self.done = not self.cursor
        if self.cursor in self._seen:
            raise WdataApiError(
                f"Wdata returned the cursor {self.cursor!r} twice while listing connections; stopping.",
                status=200,
                method="GET",
                path="/api/v1/connections",
            )
        if self.cursor:
            self._seen.add(self.cursor)


def _connections(envelope: Envelope) -> list[WdataConnection]:
    items = envelope.body if isinstance(envelope.body, list) else []
    return [WdataConnection.from_api(item) for item in items]
