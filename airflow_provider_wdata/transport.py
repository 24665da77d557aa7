"""The only code that touches the network: requests for sync calls, aiohttp for async ones.

Both send what :mod:`airflow_provider_wdata.protocol` built, return a :class:`RawResponse` without
interpreting it, never follow redirects (so an Authorization header never travels to another host), read
at most ``max_bytes`` of a body, and turn network failures into :class:`WdataTransportError` saying
whether the request may have reached the service. They return that error rather than raise it: raised in
here, inside an ``except`` block, it would carry the requests/aiohttp exception as ``__context__`` (``from None``
only hides it from printed tracebacks), whose request and frames hold the token form or the Authorization
header, and its traceback would hold ``_exchange``'s frame, whose locals hold the same. The hook raises it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import requests
import urllib3
from aiohttp.helpers import get_env_proxy_for_url
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from yarl import URL

from airflow_provider_wdata import protocol
from airflow_provider_wdata.config import WdataConfig
from airflow_provider_wdata.exceptions import WdataConfigError, WdataError, WdataTransportError
from airflow_provider_wdata.protocol import ApiRequest, RawResponse
from airflow_provider_wdata.tokens import AccessToken

#: Most connections one event loop keeps open to the service, shared by every trigger in it.
ASYNC_POOL_SIZE = 100
#: Bodies larger than this are refused unread (bytes).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024
#: ssl error reasons a failed TLS handshake gives (a plain-HTTP server answers WRONG_VERSION_NUMBER), besides
#: any reason naming the handshake: the request never went out. Any other TLS failure may come after it went,
#: and a POST that starts a refresh must then not be sent again: only add reasons that prove it did not leave.
_HANDSHAKE_ONLY_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"})
#: OpenSSL libraries whose errors come from loading the CA bundle, before connecting.
_CA_BUNDLE_LIBRARIES = frozenset({"X509", "PEM"})


def _tls_hint(url: str, verify: bool | str) -> str:
    host = urlsplit(url).hostname
    fix = (
        "check the CA bundle named in extra 'verify'"
        if isinstance(verify, str)
        else "if the service uses a private CA, set extra 'verify' to the path of its CA bundle"
    )
    return (
        f"TLS handshake with {host} failed; {fix}. If the server speaks plain HTTP (a local test server such "
        "as the Wdata simulator), write http:// at the start of the connection's host."
    )


def _bad_ca_bundle(config: WdataConfig) -> WdataConfigError:
    return WdataConfigError(
        f"Connection {config.conn_id!r}: extra 'verify' names {config.verify!r}, which is not a readable CA "
        "bundle; fix the path, or set verify to true to use the system's certificates."
    )


def _failure(what: str, url: str, exc: BaseException, *, sent: bool) -> WdataTransportError:
    state = "after the request was sent" if sent else "before the request was sent"
    reason = str(exc) or type(exc).__name__
    return WdataTransportError(
        f"{what} {urlsplit(url).netloc} failed {state}: {reason}. "
        "Check the host and region of the connection and that the service is reachable.",
        request_sent=sent,
    )


def _ssl_error_under(exc: BaseException) -> ssl.SSLError | None:
    """The ssl module's error that requests and urllib3 wrapped (found in args, ``reason``, cause or context)."""
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if isinstance(current, ssl.SSLError):
            return current
        if isinstance(current, BaseException) and id(current) not in seen:
            seen.add(id(current))
            pending += [*current.args, getattr(current, "reason", None), current.__cause__, current.__context__]
    return None


def _handshake_failed(exc: BaseException) -> bool:
    """Whether a TLS error from sending a request proves that the handshake failed, so the request never left."""
    error = _ssl_error_under(exc)
    if error is None:
        return False
    reason = str(getattr(error, "reason", None) or "")
    return (
        isinstance(error, ssl.SSLCertVerificationError)
        or getattr(error, "library", None) in _CA_BUNDLE_LIBRARIES
        or reason in _HANDSHAKE_ONLY_REASONS
        or "HANDSHAKE" in reason
    )


def _api_call(
    request: ApiRequest, config: WdataConfig, token: AccessToken
) -> tuple[str, str, WdataConfig, dict[str, str], str]:
    """What one API call sends but its body: method, URL, config, headers, and what to call it in an error."""
    return (
        request.method,
        request.url(config.base_url),
        config,
        protocol.request_headers(token.value),
        f"{request.method} to",
    )


def _token_call(config: WdataConfig) -> tuple[str, str, WdataConfig, dict[str, str], str]:
    return "POST", config.token_url, config, protocol.TOKEN_HEADERS, "Token request to"


# ---------------------------------------------------------------------------------------------- sync


def _body_pieces(response: requests.Response) -> Iterator[bytes]:
    """The decoded body as it arrives, a socket read at a time: requests' ``iter_content`` waits for a full chunk,
    so a body trickled in byte by byte, each byte within the read timeout, would never be cut off."""
    read1 = getattr(response.raw, "read1", None)  # urllib3 2.3+
    if read1 is None:
        yield from response.iter_content(_CHUNK)
        return
    while piece := read1(_CHUNK, decode_content=True):
        yield piece


def _late(timeout: float) -> TimeoutError:
    return TimeoutError(f"the answer did not arrive in full within {2 * timeout:g} s (twice the timeout)")


class SyncTransport:
    """One ``requests.Session`` (and so one connection pool) per hook."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        # Made on first use: a hook that only makes async calls (in a trigger) never needs one.
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def send(self, request: ApiRequest, config: WdataConfig, token: AccessToken) -> RawResponse | WdataError:
        """The response to an API call, or the error for the caller to raise."""
        return self._exchange(*_api_call(request, config, token), params=request.params, json=request.json_body)

    def post_token(self, config: WdataConfig) -> RawResponse | WdataError:
        """The token endpoint's response, or the error for the caller to raise."""
        return self._exchange(*_token_call(config), data=protocol.token_request_form(config))

    def _exchange(
        self, method: str, url: str, config: WdataConfig, headers: dict[str, str], what: str, **body: Any
    ) -> RawResponse | WdataError:
        failure: WdataError
        response: requests.Response | None = None
        deadline = time.monotonic() + 2 * config.timeout
        try:
            response = self.session.request(
                method,
                url,
                headers=headers,
                timeout=config.timeout,
                verify=config.verify,
                allow_redirects=False,
                stream=True,
                **body,
            )
            with response:
                chunks, size = [], 0
                for chunk in _body_pieces(response):
                    size += len(chunk)
                    if size > self.max_bytes:
                        return RawResponse(response.status_code, response.headers, b"", too_large=True)
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        return _failure(what, url, _late(config.timeout), sent=True)
                return RawResponse(response.status_code, response.headers, b"".join(chunks))
        except requests.exceptions.SSLError as exc:
            # With a response, the status line came: the request went out whatever the error says.
            if response is None and _handshake_failed(exc):
                failure = WdataTransportError(_tls_hint(url, config.verify), request_sent=False, retryable=False)
            else:
                failure = _failure(what, url, _ssl_error_under(exc) or exc, sent=True)
        except requests.exceptions.ConnectTimeout as exc:
            failure = _failure(what, url, exc, sent=False)
        except requests.exceptions.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            sent = not isinstance(reason, (NewConnectionError, ConnectTimeoutError))
            failure = _failure(what, url, reason or exc, sent=sent)
        except requests.exceptions.RequestException as exc:
            failure = _failure(what, url, exc, sent=True)
        except urllib3.exceptions.HTTPError as exc:  # from reading the body, which requests does not wrap here
            failure = _failure(what, url, _ssl_error_under(exc) or exc, sent=True)
        except OSError:  # after RequestException, which is an OSError too: an unreadable CA bundle
            failure = _bad_ca_bundle(config)
        return failure


# --------------------------------------------------------------------------------------------- async


@functools.lru_cache(maxsize=16)
def _ssl_for(verify: bool | str) -> ssl.SSLContext | bool:
    if verify is True:
        return True
    if verify is False:
        return False
    return ssl.create_default_context(cafile=verify)


@functools.lru_cache(maxsize=16)
def _timeout_for(seconds: float) -> aiohttp.ClientTimeout:
    """``seconds`` to connect (a connect that times out certainly sent nothing), the whole exchange within
    twice that: what requests allows for a one-read answer, with one timer per request instead of one per read.
    """
    return aiohttp.ClientTimeout(total=2 * seconds, sock_connect=seconds)


@functools.lru_cache(maxsize=64)
def _env_proxy(origin: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for an origin (``*_proxy``, ``no_proxy``), as requests finds it."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(origin))
    except LookupError:
        return None, None
    return str(proxy), auth


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, Any]] = (
    weakref.WeakKeyDictionary()
)


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    # An async generator left suspended here is closed by the loop's shutdown_asyncgens(), which
    # asyncio.run() and the triggerer call as the loop ends: the session closes with its loop, and its
    # entry goes (the session holds the loop: left in _SESSIONS, it would keep the loop alive).
    try:
        yield
    finally:
        _SESSIONS.pop(asyncio.get_running_loop(), None)
        await session.close()


def _open_session() -> aiohttp.ClientSession | None:
    """The running event loop's session, if it has one still open (no coroutine: called on every request)."""
    entry = _SESSIONS.get(asyncio.get_running_loop())
    return entry[0] if entry is not None and not entry[0].closed else None


async def shared_session() -> aiohttp.ClientSession:
    """The aiohttp session of the running event loop, created on first use."""
    session = _open_session()
    if session is not None:
        return session
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=ASYNC_POOL_SIZE, ttl_dns_cache=300),
        headers={"User-Agent": protocol.USER_AGENT},
        # Shared by every credential in the loop: keep no cookies.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Proxies come from _env_proxy, once per origin: trust_env would read ~/.netrc and the
        # environment in a thread on every request.
        trust_env=False,
    )
    keeper = _close_with_loop(session)
    await keeper.__anext__()
    _SESSIONS[asyncio.get_running_loop()] = (session, keeper)
    return session


class AsyncTransport:
    """Stateless: every call uses the event loop's shared session."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_bytes = max_bytes

    # Plain functions handing back _exchange's coroutine: one coroutine fewer alive per request in flight.
    def send(self, request: ApiRequest, config: WdataConfig, token: AccessToken) -> Awaitable[RawResponse | WdataError]:
        """The response to an API call, or the error for the caller to raise."""
        return self._exchange(*_api_call(request, config, token), params=request.params, json=request.json_body)

    def post_token(self, config: WdataConfig) -> Awaitable[RawResponse | WdataError]:
        """The token endpoint's response, or the error for the caller to raise."""
        return self._exchange(*_token_call(config), data=protocol.token_request_form(config))

    async def _exchange(
        self,
        method: str,
        url: str,
        config: WdataConfig,
        headers: dict[str, str],
        what: str,
        params: tuple[tuple[str, str], ...] = (),
        json: Any = None,
        data: Any = None,
    ) -> RawResponse | WdataError:
        # The body's parts are parameters, not a dict: one object fewer per request in flight.
        session = _open_session() or await shared_session()
        proxy, proxy_auth = _env_proxy("/".join(url.split("/", 3)[:3]))
        failure: WdataError
        try:
            ssl_context = _ssl_for(config.verify)
        except OSError:
            return _bad_ca_bundle(config)
        try:
            async with session.request(
                method,
                url,
                params=params,
                data=data,
                json=json,
                headers=headers,
                proxy=proxy,
                proxy_auth=proxy_auth,
                timeout=_timeout_for(config.timeout),
                ssl=ssl_context,
                allow_redirects=False,
            ) as response:
                # Content-Length counts the bytes on the wire, and aiohttp decompresses gzip and deflate: only an
                # unencoded body is known to fit before it is read.
                unencoded = response.headers.get("Content-Encoding", "identity").strip().lower() == "identity"
                length = response.content_length
                if unencoded and length is not None and length <= self.max_bytes:
                    return RawResponse(response.status, response.headers, await response.read())
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        return RawResponse(response.status, response.headers, b"", too_large=True)
                    chunks.append(chunk)
                return RawResponse(response.status, response.headers, b"".join(chunks))
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError):
            failure = WdataTransportError(_tls_hint(url, config.verify), request_sent=False, retryable=False)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            failure = _failure(what, url, exc, sent=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failure = _failure(what, url, exc, sent=True)
        return failure


@functools.lru_cache(maxsize=8)
def shared_async_transport(max_bytes: int) -> AsyncTransport:
    """Async transports are stateless: every hook with the same limit shares one."""
    return AsyncTransport(max_bytes)
