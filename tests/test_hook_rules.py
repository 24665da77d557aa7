"""The hook's documented rules, each checked against its default value AND its behaviour.

README "Hook parameters": 5 attempts, backoff 1 s doubling up to 30 s, Retry-After honoured up to 120 s, 16 MiB
largest response, async exchanges bounded by twice the timeout; and a token endpoint that refuses connections.
Waits are recorded by the ``sleeps`` fixture, not slept; nothing here measures elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from airflow_provider_wdata import transport
from airflow_provider_wdata.config import DEFAULT_TIMEOUT
from airflow_provider_wdata.exceptions import WdataApiError, WdataTransportError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.testing import Fault

MiB = 1024 * 1024
CONN = "/api/v1/connections/conn-1"


def api_requests(sim) -> list:
    return [r for r in sim.requests if not r.is_token_request]


def test_the_documented_defaults_are_the_hooks_defaults(wdata_conn):
    hook = WdataHook()
    assert hook.max_attempts == 5
    assert (hook.backoff_initial, hook.backoff_max) == (1.0, 30.0)
    assert hook.retry_after_max == 120.0
    assert hook.max_response_bytes == 16 * MiB
    assert hook.token_renew_margin == 60.0
    assert DEFAULT_TIMEOUT == 30.0 and hook.config.timeout == 30.0


def test_five_attempts_by_default(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, status=503, times=None))
    with pytest.raises(WdataApiError, match="HTTP 503"):
        WdataHook().get_wdata_connection("conn-1")
    assert len(api_requests(wdata_conn)) == 5
    assert len(sleeps) == 4


def test_backoff_starts_at_one_second_doubles_and_is_capped_at_thirty(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, status=503, times=6))
    # Only max_attempts differs from the defaults: enough tries to reach the cap.
    assert WdataHook(max_attempts=7).get_wdata_connection("conn-1").id == "conn-1"
    floors = [1, 2, 4, 8, 16]
    assert len(sleeps) == 6, sleeps
    for floor, slept in zip(floors, sleeps, strict=False):
        assert floor <= slept <= floor + 1, f"{sleeps}: jitter adds at most backoff_initial (1 s)"
    assert sleeps[5] == 30, "2**5 = 32 s, capped at 30 s"


def test_retry_after_is_honoured_up_to_120_seconds_by_default(wdata_conn, sleeps):
    for asked in ("86400", "119"):
        wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, status=429, headers={"Retry-After": asked}))
    assert WdataHook().get_wdata_connection("conn-1").id == "conn-1"
    assert sleeps == [120, 119]


def test_a_retry_after_of_zero_or_in_the_past_backs_off_instead_of_trying_again_at_once(wdata_conn, sleeps):
    for asked in ("0", "Wed, 21 Oct 2015 07:28:00 GMT"):
        wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, status=429, headers={"Retry-After": asked}))
    assert WdataHook().get_wdata_connection("conn-1").id == "conn-1"
    assert len(sleeps) == 2 and 1 <= sleeps[0] <= 2 and 2 <= sleeps[1] <= 3, f"the backoff's waits: {sleeps}"


def test_responses_up_to_16_mib_are_read_larger_ones_refused_unread(wdata_conn):
    hook = WdataHook()
    wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, kind="huge", size=16 * MiB - 256 * 1024))
    assert hook.get_wdata_connection("conn-1").id == "conn-1"
    wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, kind="huge", size=16 * MiB + 256 * 1024))
    with pytest.raises(WdataApiError, match=f"more than {16 * MiB} bytes"):
        hook.get_wdata_connection("conn-1")

    async def read():
        wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, kind="huge", size=16 * MiB + 256 * 1024))
        return await WdataHook().aget_wdata_connection("conn-1")

    with pytest.raises(WdataApiError, match=f"more than {16 * MiB} bytes"):
        asyncio.run(read())


@pytest.fixture
def client_timeouts(monkeypatch) -> list[aiohttp.ClientTimeout]:
    """The ``timeout`` of every request the shared aiohttp session makes."""
    seen: list[aiohttp.ClientTimeout] = []
    original = aiohttp.ClientSession._request

    def recording(self, *args, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", recording)
    return seen


def test_async_calls_connect_within_the_timeout_and_finish_within_twice_it(wdata_conn, client_timeouts):
    async def calls():
        await WdataHook(timeout=2.5).aget_wdata_connection("conn-1")
        await WdataHook().aget_wdata_connection("conn-2")

    asyncio.run(calls())
    token, first, second = client_timeouts
    assert (token.total, token.sock_connect) == (5.0, 2.5), "the token request has the same bound"
    assert (first.total, first.sock_connect) == (5.0, 2.5)
    assert (second.total, second.sock_connect) == (2 * DEFAULT_TIMEOUT, DEFAULT_TIMEOUT)
    assert first.sock_read is None and first.connect is None, "no other timer"


def test_an_async_answer_later_than_twice_the_timeout_is_cut_off(wdata_conn, sleeps):
    async def call():
        await WdataHook().aget_wdata_connection("conn-1")  # a token in the cache: the slow GET is all that is timed
        wdata_conn.add_fault(Fault(method="GET", path_contains=CONN, kind="slow", delay=5, times=1))
        return await WdataHook(timeout=0.5, max_attempts=2).aget_wdata_connection("conn-1")

    # The first try is cut off (1 s < 5 s), the second is answered at once.
    assert asyncio.run(call()).id == "conn-1"
    assert len(sleeps) == 1
    assert len(api_requests(wdata_conn)) == 3


@pytest.fixture
def refused_token_url(simulator, monkeypatch) -> str:
    """The connection's token_url: the simulator's token path on a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/iam/v1/oauth2/token"
    conn = simulator.airflow_connection()
    conn["extra"] |= {"token_url": url}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_DEFAULT", json.dumps(conn))
    return url


def test_a_token_endpoint_refusing_connections_is_a_transport_error_retried_per_policy(
    simulator, refused_token_url, sleeps
):
    port = refused_token_url.split(":")[2].split("/")[0]
    with pytest.raises(
        WdataTransportError, match=f"Token request to 127.0.0.1:{port} failed before the request was sent"
    ):
        WdataHook(max_attempts=3).get_wdata_connection("conn-1")
    assert len(sleeps) == 2, "retried like any refused connection"
    assert simulator.requests == [], "nothing reached the API without a token"


def test_a_token_endpoint_refusing_connections_async(simulator, refused_token_url, sleeps):
    async def call():
        return await WdataHook(max_attempts=4).aget_wdata_connection("conn-1")

    with pytest.raises(WdataTransportError, match="failed before the request was sent") as info:
        asyncio.run(call())
    assert info.value.retryable and not info.value.request_sent
    assert len(sleeps) == 3
    assert simulator.requests == []


def test_the_transport_bound_is_twice_the_timeout():
    assert transport._timeout_for(7.0) == aiohttp.ClientTimeout(total=14.0, sock_connect=7.0)
