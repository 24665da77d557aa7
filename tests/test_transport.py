"""The transports' TLS, proxy and body-size handling, against servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable

import pytest

from airflow_provider_wdata import protocol
from airflow_provider_wdata.config import WdataConfig
from airflow_provider_wdata.exceptions import WdataConfigError, WdataRefreshMayHaveStartedError, WdataTransportError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.protocol import RawResponse
from airflow_provider_wdata.tokens import AccessToken
from airflow_provider_wdata.transport import AsyncTransport, SyncTransport
from tests.conftest import CANARY_SECRET, CANARY_TOKEN_PREFIX


@pytest.fixture
def tls_simulator(tmp_path, monkeypatch):
    import ssl

    import trustme

    from airflow_provider_wdata.testing import WdataSimulator

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with WdataSimulator(
        client_id="tls-client",
        client_secret=CANARY_SECRET,
        ssl_context=server_context,
        token_prefix=CANARY_TOKEN_PREFIX,
    ) as sim:
        yield sim, str(ca_path)


def set_conn(monkeypatch, sim, **extra):
    conn = sim.airflow_connection()
    conn["extra"] |= extra
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_DEFAULT", json.dumps(conn))


def test_tls_is_verified_against_the_ca_named_in_verify(tls_simulator, monkeypatch):
    sim, ca_path = tls_simulator
    assert sim.base_url.startswith("https://")
    set_conn(monkeypatch, sim, verify=ca_path)
    assert WdataHook().get_wdata_connection("conn-1").id == "conn-1"

    async def main():
        return await WdataHook().aget_wdata_connection("conn-2")

    assert asyncio.run(main()).id == "conn-2"


def test_an_untrusted_certificate_is_refused_with_a_hint(tls_simulator, monkeypatch, sleeps):
    sim, _ = tls_simulator
    set_conn(monkeypatch, sim)
    with pytest.raises(WdataTransportError, match=re.escape("TLS handshake with 127.0.0.1 failed")) as info:
        WdataHook().get_wdata_connection("conn-1")
    assert "extra 'verify'" in str(info.value)
    assert not info.value.retryable and sleeps == []

    async def main():
        return await WdataHook().aget_wdata_connection("conn-2")

    with pytest.raises(WdataTransportError, match="TLS handshake with"):
        asyncio.run(main())
    assert sim.token_requests == [], "the secret never went to an unverified host"


def test_verification_off_works_but_warns(tls_simulator, monkeypatch, all_logs):
    sim, _ = tls_simulator
    set_conn(monkeypatch, sim, verify=False)
    assert WdataHook().get_wdata_connection("conn-1").id == "conn-1"
    assert "TLS certificate verification is OFF" in all_logs.text


def test_an_unreadable_ca_bundle_is_a_config_error(tls_simulator, monkeypatch, tmp_path):
    sim, _ = tls_simulator
    set_conn(monkeypatch, sim, verify=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(WdataConfigError, match="not a readable CA bundle"):
        WdataHook().get_wdata_connection("conn-1")

    async def main():
        return await WdataHook().aget_wdata_connection("conn-1")

    with pytest.raises(WdataConfigError, match="not a readable CA bundle"):
        asyncio.run(main())
    ok, message = WdataHook().test_connection()
    assert not ok and "not a readable CA bundle" in message


def test_the_proxy_for_an_origin_comes_from_the_environment(monkeypatch):
    from airflow_provider_wdata.transport import _env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example.test")
    _env_proxy.cache_clear()
    try:
        assert _env_proxy("https://h.app.wdesk.com")[0] == "http://proxy.example.test:3128"
        assert _env_proxy("https://internal.example.test") == (None, None)
    finally:
        _env_proxy.cache_clear()


class LoopbackProxy:
    """A plain-HTTP forward proxy on loopback, one request per client connection: it records each request line
    (absolute-form, as clients send them to a proxy), forwards the request to its origin and relays the answer."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> LoopbackProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, client_reader, client_writer) -> None:
        from urllib.parse import urlsplit

        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            self.request_lines.append(f"{method} {target}")
            headers = [line for line in lines[1:] if line and not line.lower().startswith(("connection:", "proxy-"))]
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
            body = await client_reader.readexactly(length)
            origin = urlsplit(target)
            path = origin.path + (f"?{origin.query}" if origin.query else "")
            up_reader, up_writer = await asyncio.open_connection(origin.hostname, origin.port)
            up_writer.write(
                "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""]).encode("latin-1")
                + body
            )
            await up_writer.drain()
            answer = await up_reader.read()  # to the end: the origin closes after its answer
            up_writer.close()
            # Tell the client this connection ends here, so that its next request opens a new one.
            answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
            kept = [h for h in answer_head.split(b"\r\n") if not h.lower().startswith(b"connection:")]
            client_writer.write(b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n" + answer_body)
            await client_writer.drain()
        finally:
            client_writer.close()


def test_async_calls_go_through_the_proxy_the_environment_names(wdata_conn, monkeypatch):
    from airflow_provider_wdata.transport import _env_proxy

    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    origin = f"http://127.0.0.1:{wdata_conn.port}"

    async def main():
        async with LoopbackProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            _env_proxy.cache_clear()
            connection = await WdataHook().aget_wdata_connection("conn-1")
            return connection, proxy.request_lines

    try:
        connection, through_proxy = asyncio.run(main())
    finally:
        _env_proxy.cache_clear()
    assert connection.id == "conn-1"
    assert through_proxy == [
        f"POST {origin}/iam/v1/oauth2/token",
        f"GET {origin}/s/wdata/prep/api/v1/connections/conn-1",
    ], "the token request and the API call both went through the proxy"
    assert len(wdata_conn.requests) == 2, "and reached the service from there"


# ----------------------------------------------------------------------- TLS failures: sent or not

#: TLS application-data records of 32 zero bytes, written under the TLS layer: the client fails where it reads
#: one, after the handshake and after its request went out. No key decrypts the first (bad record MAC); the
#: second has a bad version, the error a plain-HTTP server gives at the handshake.
UNDECRYPTABLE_RECORD = b"\x17\x03\x03\x00\x20" + bytes(32)
WRONG_VERSION_RECORD = b"\x17\x03\x09\x00\x20" + bytes(32)
BROKEN_BODY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"


class CannedTlsServer:
    """A TLS server on loopback, in a thread: it reads each request, writes ``answer``, then ``forged_record`` if
    any: a TLS failure after the request was sent. It records each request line."""

    def __init__(
        self, certificate, answer: bytes, forged_record: bytes = b"", trickle: bytes = b"", gap: float = 0.0
    ) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(self.context)
        self.answer, self.forged_record = answer, forged_record
        # After answer: these bytes one at a time, gap seconds apart, while the client keeps the connection open.
        self.trickle, self.gap = trickle, gap
        self.trickled = 0
        self.request_lines: list[str] = []
        self._closing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CannedTlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing = True
        socket.create_connection(self._listener.getsockname()).close()  # wakes accept()
        self._thread.join()
        self._listener.close()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if self._closing:
                client.close()
                return
            client.settimeout(5)
            with contextlib.suppress(OSError), self.context.wrap_socket(client, server_side=True) as tls:
                self._answer(tls)

    def _answer(self, tls) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            received += tls.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length[1]):
            body += tls.recv(65536)
        self.request_lines.append(head.split(b"\r\n", 1)[0].decode())
        tls.sendall(self.answer)
        os.write(tls.fileno(), self.forged_record)
        for byte in self.trickle:
            if self._closing:
                break
            time.sleep(self.gap)  # the fault under test: a server that is slow on purpose
            tls.sendall(bytes([byte]))
            self.trickled += 1
        # Until the client closes (or alerts): closing first, with its bytes unread, would reset the connection.
        while tls.recv(65536):
            pass


@pytest.fixture
def tls_ca(tmp_path):
    import trustme

    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return ca, str(ca_path)


def direct_config(base_url: str, verify: bool | str = True) -> WdataConfig:
    return WdataConfig(
        conn_id="wdata_default",
        client_id="tls-client",
        client_secret=CANARY_SECRET,
        base_url=base_url,
        token_url=f"{base_url}/iam/v1/oauth2/token",
        timeout=5,
        verify=verify,
    )


def settled(result):
    """An async transport's answer, awaited in a new event loop; a sync transport's as it is."""
    return asyncio.run(result) if isinstance(result, Awaitable) else result


def start_refresh(transport, config: WdataConfig):
    """What the transport returns for a POST that starts a refresh, as the hook would raise it."""
    result = settled(transport.send(protocol.refresh_connection("conn-1"), config, AccessToken("test-token", 3600, 60)))
    assert isinstance(result, WdataTransportError), result
    assert result.__context__ is None, "returned, not raised: it carries no requests/aiohttp exception"
    return result


@pytest.mark.parametrize("case", ["untrusted certificate", "plain http server", "unparsable CA bundle"])
def test_a_failed_handshake_is_not_sent_and_gives_the_hint(case, tls_simulator, simulator, tmp_path):
    tls_sim, _ = tls_simulator
    if case == "untrusted certificate":
        sim, config = tls_sim, direct_config(tls_sim.root_url)
    elif case == "plain http server":
        sim, config = simulator, direct_config(simulator.root_url.replace("http://", "https://"))
    else:
        bundle = tmp_path / "not-a-bundle.pem"
        bundle.write_text("not a certificate\n")
        sim, config = tls_sim, direct_config(tls_sim.root_url, verify=str(bundle))
    error = SyncTransport().post_token(config)
    assert isinstance(error, WdataTransportError)
    assert str(error).startswith("TLS handshake with 127.0.0.1 failed")
    assert not error.request_sent and not error.retryable and error.__context__ is None
    assert sim.token_requests == []


AFTER_SENDING = pytest.mark.parametrize(
    ("answer", "forged_record"),
    [(b"", UNDECRYPTABLE_RECORD), (BROKEN_BODY, UNDECRYPTABLE_RECORD), (BROKEN_BODY, WRONG_VERSION_RECORD)],
    ids=["before the status line", "while reading the body", "while reading the body, with a handshake's error"],
)


@AFTER_SENDING
def test_a_tls_failure_after_sending_is_sent_and_retryable(answer, forged_record, tls_ca):
    ca, ca_path = tls_ca
    with CannedTlsServer(ca.issue_cert("127.0.0.1"), answer, forged_record) as server:
        netloc = server.base_url.removeprefix("https://")
        error = start_refresh(SyncTransport(), direct_config(server.base_url, verify=ca_path))
    assert server.request_lines == ["POST /api/v1/connections/conn-1/refresh HTTP/1.1"]
    assert error.request_sent and error.retryable
    message = str(error)
    assert message.startswith(f"POST to {netloc} failed after the request was sent: [SSL")
    assert "TLS handshake" not in message and "test-token" not in message
    refined = protocol.refine_error(protocol.refresh_connection("conn-1"), error)
    assert isinstance(refined, WdataRefreshMayHaveStartedError), "so the task's retry does not start it twice"


@AFTER_SENDING
def test_async_tls_failures_after_sending_are_sent_too(answer, forged_record, tls_ca):
    # aiohttp tells a failed handshake (ClientConnectorSSLError) from a later TLS failure (ClientOSError).
    ca, ca_path = tls_ca
    with CannedTlsServer(ca.issue_cert("127.0.0.1"), answer, forged_record) as server:
        error = start_refresh(AsyncTransport(), direct_config(server.base_url, verify=ca_path))
    assert server.request_lines == ["POST /api/v1/connections/conn-1/refresh HTTP/1.1"]
    assert error.request_sent and error.retryable and "TLS handshake" not in str(error)


# ------------------------------------------------------------------------------ compressed answers


@pytest.mark.parametrize("transport_type", [SyncTransport, AsyncTransport])
@pytest.mark.parametrize(
    ("body", "too_large"),
    [(b'{"ok": true}', False), (b"0" * 100_000, True)],
    ids=["small once decompressed", "too large once decompressed"],
)
def test_a_gzip_answer_is_limited_by_its_decompressed_size(transport_type, body, too_large, tls_ca):
    ca, ca_path = tls_ca
    max_bytes = 10_000
    compressed = gzip.compress(body)
    assert len(compressed) <= max_bytes, "its Content-Length alone would let it through"
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(compressed), compressed)
    )
    with CannedTlsServer(ca.issue_cert("127.0.0.1"), answer) as server:
        result = settled(transport_type(max_bytes).post_token(direct_config(server.base_url, verify=ca_path)))
    assert isinstance(result, RawResponse) and result.status == 200
    assert result.too_large is too_large
    assert result.body == (b"" if too_large else body)


# ------------------------------------------------------------------------------ a trickled answer


@pytest.mark.parametrize("transport_type", [SyncTransport, AsyncTransport])
def test_an_answer_trickled_past_twice_the_timeout_is_cut_off(transport_type, tls_ca):
    # Each byte comes well within the read timeout, so only a deadline on the whole exchange ends it; before the
    # sync one, a worker read such an answer for as long as the server cared to send it.
    ca, ca_path = tls_ca
    body = b'{"access_token": "t", "expires_in": 600}' + b" " * 40
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    config = dataclasses.replace(direct_config("https://127.0.0.1", verify=ca_path), timeout=0.5)
    with CannedTlsServer(ca.issue_cert("127.0.0.1"), head + body[:1], trickle=body[1:], gap=0.1) as server:
        config = dataclasses.replace(config, token_url=f"{server.base_url}/iam/v1/oauth2/token")
        result = settled(transport_type().post_token(config))
        trickled = server.trickled
    assert isinstance(result, WdataTransportError), result
    assert result.request_sent and result.retryable
    assert trickled < len(body) - 1, "the client gave up before the server was done"
    if transport_type is SyncTransport:
        assert "did not arrive in full within 1 s (twice the timeout)" in str(result)


def test_sync_calls_keep_their_connection_alive(wdata_conn):
    hook = WdataHook()
    for _ in range(3):
        hook.get_batch_refresh(hook.start_batch_refresh(["conn-1"]).batch_refresh_id)
    assert wdata_conn.connections_opened == 1, "one keep-alive connection for the token and every API call"
