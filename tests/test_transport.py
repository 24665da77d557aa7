"""The transports' TLS and proxy handling, through WdataHook against the simulator on loopback."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from airflow_provider_wdata.exceptions import WdataConfigError, WdataTransportError
from airflow_provider_wdata.hooks.wdata import WdataHook
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
