"""WdataHook against the simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from types import MappingProxyType

import pytest

from airflow_provider_wdata import tokens, transport
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataAuthError,
    WdataConfigError,
    WdataRefreshMayHaveStartedError,
    WdataTransportError,
)
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.models import RefreshBatch
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.tokens import TOKENS
from tests.conftest import CANARY_SECRET

FAST = {"backoff_initial": 0.01, "backoff_max": 0.02}
BATCH_PATH = "/s/wdata/prep/api/v1/connections/batch/refresh"


def api_requests(sim, method=None, contains=""):
    return [
        r
        for r in sim.requests
        if not r.is_token_request and (method is None or r.method == method) and contains in r.path
    ]


def test_start_and_poll_a_batch_to_the_end(wdata_conn):
    hook = WdataHook()
    batch = hook.start_batch_refresh(["conn-1", {"connection_id": "conn-2", "source_parameters": {"year": 2026}}])
    assert isinstance(batch, RefreshBatch)
    assert batch.batch_refresh_id
    assert [c.connection_id for c in batch.child_refreshes] == ["conn-1", "conn-2"]
    post = api_requests(wdata_conn, "POST")[0]
    assert post.query == {"cancelUnwritables": "false"}
    assert post.json() == [{"connectionId": "conn-1"}, {"connectionId": "conn-2", "sourceParameters": {"year": 2026}}]
    statuses = []
    for _ in range(5):
        batch = hook.get_batch_refresh(batch.batch_refresh_id)
        statuses.append(batch.source_status)
        if batch.source_status == "complete":
            break
    assert statuses[-1] == "complete"
    assert all(c.destination_status == "complete" for c in batch.child_refreshes)
    assert json.loads(json.dumps(batch.to_dict()))["batch_refresh_id"] == batch.batch_refresh_id


def test_connection_calls_and_paging(wdata_conn):
    for i in range(23):
        wdata_conn.add_connection(f"extra-{i:02d}", destination_type="dataset")
    hook = WdataHook()
    everything = hook.list_connections(page_size=10)
    assert len(everything) == 26
    assert len(api_requests(wdata_conn, "GET", "/api/v1/connections")) == 3
    datasets = hook.list_connections(destination_type="dataset")
    assert {c.id for c in datasets} == {f"extra-{i:02d}" for i in range(23)}
    run = hook.refresh_connection("conn-1", use_previous_source_parameters=True)
    assert run.job_id and run.connection_id == "conn-1"
    status = hook.get_connection_refresh("conn-1", run.job_id)
    assert status.job_id == run.job_id
    connection = hook.get_wdata_connection("conn-1")
    assert connection.id == "conn-1" and connection.last_run is not None


def test_a_refresh_takes_the_parameters_of_an_earlier_run_as_they_were_read(wdata_conn):
    hook = WdataHook()
    first = hook.refresh_connection("conn-1", source_parameters={"year": 2026, "parts": {"q": [1, 2]}})
    read = hook.get_connection_refresh("conn-1", first.job_id)
    assert isinstance(read.source_parameters, MappingProxyType), "models hand out read-only mappings"
    again = hook.refresh_connection("conn-1", source_parameters=read.source_parameters)
    sent = api_requests(wdata_conn, "POST", "/api/v1/connections/conn-1/refresh")[-1]
    assert sent.json()["sourceParameters"] == {"year": 2026, "parts": {"q": [1, 2]}}
    assert again.job_id and again.job_id != first.job_id


def test_async_twins_share_one_session_per_loop(wdata_conn):
    async def main():
        first, second = WdataHook(), WdataHook()
        batch = await first.astart_batch_refresh(["conn-1"])
        again = await second.aget_batch_refresh(batch.batch_refresh_id)
        run = await first.arefresh_connection("conn-2")
        await second.aget_connection_refresh("conn-2", run.job_id)
        await first.aget_wdata_connection("conn-3")
        listed = await second.alist_connections(page_size=1)
        session = await transport.shared_session()
        assert session is await transport.shared_session()
        return again, listed, session

    again, listed, session = asyncio.run(main())
    assert again.child_refreshes[0].connection_id == "conn-1"
    assert len(listed) == 3
    assert session.closed, "the shared session closes when its event loop ends"
    assert len(wdata_conn.token_requests) == 1


def test_token_is_cached_and_fetched_once_by_many_threads(wdata_conn):
    errors, barrier = [], threading.Barrier(16)

    def call():
        try:
            barrier.wait()
            WdataHook().get_wdata_connection("conn-1")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(wdata_conn.token_requests) == 1
    assert len(api_requests(wdata_conn)) == 16


def test_token_is_fetched_once_by_many_coroutines(wdata_conn):
    async def main():
        hooks = [WdataHook() for _ in range(50)]
        return await asyncio.gather(*(h.aget_wdata_connection("conn-2") for h in hooks))

    results = asyncio.run(main())
    assert {r.id for r in results} == {"conn-2"}
    assert len(wdata_conn.token_requests) == 1


def test_a_failing_token_endpoint_is_asked_once_by_many_coroutines_and_their_tries(wdata_conn, sleeps, monkeypatch):
    monkeypatch.setattr(tokens, "FAILED_FETCH_HOLD", 60.0)  # however slow the machine, every try is within it
    wdata_conn.add_fault(Fault(method="POST", path_contains="oauth2/token", status=503, times=None))

    async def main():
        hooks = [WdataHook(max_attempts=3, **FAST) for _ in range(50)]
        return await asyncio.gather(*(h.aget_wdata_connection("conn-2") for h in hooks), return_exceptions=True)

    errors = asyncio.run(main())
    # One token request for all fifty calls and their tries (here without backoff, so within the failure's hold);
    # before, each call queued for a fetch of its own at each try: 150 requests.
    assert len(wdata_conn.token_requests) == 1, len(wdata_conn.token_requests)
    assert all(isinstance(e, WdataApiError) and e.status == 503 and e.retryable for e in errors), errors
    assert api_requests(wdata_conn) == []


def test_connections_sharing_a_credential_do_not_share_a_failed_fetch(wdata_conn, monkeypatch):
    name, value = wdata_conn.airflow_conn_env("wdata_other")  # the same client id and secret
    monkeypatch.setenv(name, value)
    wdata_conn.add_fault(Fault(method="POST", path_contains="oauth2/token", status=503))  # the first request only

    async def main():
        with pytest.raises(WdataApiError) as first:
            await WdataHook(max_attempts=1).aget_wdata_connection("conn-1")
        return first.value, await WdataHook("wdata_other", max_attempts=1).aget_wdata_connection("conn-1")

    failure, other = asyncio.run(main())  # the second call comes within the first one's hold
    assert "'wdata_default'" in str(failure) and other.id == "conn-1"
    assert len(wdata_conn.token_requests) == 2


def test_token_is_renewed_before_it_expires(wdata_conn, monkeypatch):
    import airflow_provider_wdata.tokens as tokens

    now = [1000.0]
    monkeypatch.setattr(tokens.time, "monotonic", lambda: now[0])
    hook = WdataHook(token_renew_margin=60)
    hook.get_wdata_connection("conn-1")
    now[0] += 599 - 61  # still outside the renewal margin
    hook.get_wdata_connection("conn-1")
    assert len(wdata_conn.token_requests) == 1
    now[0] += 2  # inside the margin: renewed before the service would refuse it
    hook.get_wdata_connection("conn-1")
    assert len(wdata_conn.token_requests) == 2
    assert not any(r.headers.get("Authorization") is None for r in api_requests(wdata_conn))


def test_401_drops_the_token_fetches_one_new_and_retries_once(wdata_conn):
    hook = WdataHook()
    hook.get_wdata_connection("conn-1")
    wdata_conn.expire_tokens()
    assert hook.get_wdata_connection("conn-1").id == "conn-1"
    assert len(wdata_conn.token_requests) == 2
    gets = api_requests(wdata_conn, "GET")
    assert len(gets) == 3
    assert gets[1].headers["Authorization"] != gets[2].headers["Authorization"]


def test_401_after_a_fresh_token_is_an_auth_error(wdata_conn):
    wdata_conn.add_fault(Fault(method="GET", path_contains="/connections/conn-1", status=401, times=2))
    with pytest.raises(WdataAuthError, match="wdata_default") as info:
        WdataHook(**FAST).get_wdata_connection("conn-1")
    assert "freshly issued token" in str(info.value)
    assert len(wdata_conn.token_requests) == 2
    assert len(api_requests(wdata_conn)) == 2


def test_wrong_secret_is_an_auth_error_that_names_connection_and_oauth_code(simulator, monkeypatch):
    conn = simulator.airflow_connection() | {"password": "wrong-secret-value"}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_WRONG", json.dumps(conn))
    with pytest.raises(WdataAuthError) as info:
        WdataHook("wdata_wrong", **FAST).get_batch_refresh("whatever")
    message = str(info.value)
    assert "'wdata_wrong'" in message and "invalid_client" in message
    assert info.value.oauth_error == "invalid_client"
    assert "wrong-secret-value" not in message
    assert len(simulator.token_requests) == 1, "a refused secret is not tried again"


@pytest.mark.parametrize("retry_after", ["3", "HTTP-DATE"])
def test_429_waits_as_long_as_retry_after_says(wdata_conn, sleeps, retry_after):
    import email.utils
    import time

    if retry_after == "HTTP-DATE":
        retry_after = email.utils.formatdate(time.time() + 10, usegmt=True)
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", status=429, headers={"Retry-After": retry_after}))
    assert WdataHook(**FAST).get_wdata_connection("conn-1").id == "conn-1"
    assert len(sleeps) == 1
    expected = 3 if retry_after == "3" else 10
    assert expected - 2 <= sleeps[0] <= expected
    assert len(api_requests(wdata_conn)) == 2


def test_retry_after_is_capped(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", status=429, headers={"Retry-After": "86400"}))
    WdataHook(retry_after_max=7, **FAST).get_wdata_connection("conn-1")
    assert sleeps == [7]


def test_503_burst_is_retried_with_growing_backoff(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", status=503, times=3))
    hook = WdataHook(backoff_initial=1, backoff_max=30)
    assert hook.get_wdata_connection("conn-1").id == "conn-1"
    assert len(sleeps) == 3 and len(api_requests(wdata_conn)) == 4
    assert sleeps[0] < sleeps[2], "backoff grows"
    assert all(s <= 30 + 1 for s in sleeps)


def test_retries_stop_at_max_attempts(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", status=502, times=None))
    with pytest.raises(WdataApiError) as info:
        WdataHook(max_attempts=3, **FAST).get_wdata_connection("conn-1")
    assert info.value.status == 502 and info.value.retryable
    assert len(api_requests(wdata_conn)) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 409, 423])
def test_client_errors_are_not_retried_and_carry_the_service_message(wdata_conn, status):
    wdata_conn.add_fault(
        Fault(method="GET", path_contains="conn-1", status=status, body={"body": ["Nope", "Really"], "code": status})
    )
    with pytest.raises(WdataApiError) as info:
        WdataHook(**FAST).get_wdata_connection("conn-1")
    error = info.value
    assert (error.status, error.messages, error.path) == (status, ("Nope", "Really"), "/api/v1/connections/conn-1")
    assert "Nope; Really" in str(error) and "GET /api/v1/connections/conn-1" in str(error)
    assert len(api_requests(wdata_conn)) == 1


def test_unknown_batch_is_a_404_naming_it(wdata_conn):
    with pytest.raises(WdataApiError, match="HTTP 404") as info:
        WdataHook().get_batch_refresh("no-such-batch")
    assert "no-such-batch" in str(info.value)
    assert "check the id" in str(info.value)


@pytest.mark.parametrize("status", [429, 503])
def test_start_is_sent_again_only_when_certainly_not_accepted(wdata_conn, sleeps, status):
    refused = {"Retry-After": "1"} if status == 503 else {}  # a 429 without it is a refusal too
    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", status=status, headers=refused))
    batch = WdataHook(**FAST).start_batch_refresh(["conn-1"])
    assert batch.batch_refresh_id
    assert len(api_requests(wdata_conn, "POST")) == 2
    assert len(wdata_conn.batches) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(method="POST", path_contains="batch/refresh", status=500),
        Fault(method="POST", path_contains="batch/refresh", status=502),
        Fault(method="POST", path_contains="batch/refresh", status=504),
        Fault(method="POST", path_contains="batch/refresh", status=503),
        Fault(method="POST", path_contains="batch/refresh", kind="drop"),
        Fault(method="POST", path_contains="batch/refresh", kind="slow", delay=2.0),
    ],
    ids=["500", "502", "504", "503 without Retry-After", "dropped", "timeout"],
)
def test_ambiguous_start_failure_is_never_sent_twice(wdata_conn, sleeps, fault):
    # A token in the cache first: the short timeout below must hit the start alone, never a token request that a
    # loaded machine answers late (that one would be retried, and show in ``sleeps``).
    WdataHook().get_wdata_connection("conn-1")
    wdata_conn.add_fault(fault)
    with pytest.raises(WdataRefreshMayHaveStartedError, match="may have started"):
        WdataHook(timeout=0.5, **FAST).start_batch_refresh(["conn-1"])
    assert len(api_requests(wdata_conn, "POST")) == 1
    assert sleeps == []


def test_async_start_answered_after_the_timeout_is_never_sent_twice(wdata_conn, sleeps):
    WdataHook().get_wdata_connection("conn-1")  # the token first (see above): the short timeout is the start's
    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", kind="slow", delay=2.0))
    with pytest.raises(WdataRefreshMayHaveStartedError, match="may have started"):
        asyncio.run(WdataHook(timeout=0.25, **FAST).astart_batch_refresh(["conn-1"]))
    assert len(api_requests(wdata_conn, "POST")) == 1
    assert sleeps == []


def test_ambiguous_single_refresh_is_never_sent_twice(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="POST", path_contains="/refresh", status=500))
    with pytest.raises(WdataRefreshMayHaveStartedError):
        WdataHook(**FAST).refresh_connection("conn-1")
    assert len(api_requests(wdata_conn, "POST")) == 1


@pytest.mark.parametrize(
    "bad_id", ["", "   ", "../other", "a/b", "%2Fx", "a?b=1", "a#frag", "a b", "..", ".", "a\\b", "a\nb", None, 42]
)
def test_ids_can_never_change_the_path(wdata_conn, bad_id):
    hook = WdataHook()
    with pytest.raises(WdataConfigError):
        hook.get_batch_refresh(bad_id)
    with pytest.raises(WdataConfigError):
        hook.get_connection_refresh("conn-1", bad_id)
    with pytest.raises(WdataConfigError):
        hook.start_batch_refresh([bad_id])
    assert wdata_conn.requests == [], "refused before any request"


def test_odd_but_harmless_ids_are_percent_encoded(wdata_conn):
    with pytest.raises(WdataApiError) as info:
        WdataHook().get_batch_refresh("name:with;odd&chars")
    assert info.value.status == 404
    assert api_requests(wdata_conn)[0].path.endswith("/batch/refresh/name:with;odd&chars")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("malformed", "is not JSON"), ("empty", "is empty"), ("no_body_key", "has no 'body' field")],
)
def test_unreadable_success_bodies_are_clear_errors(wdata_conn, kind, expected):
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", kind=kind))
    with pytest.raises(WdataApiError, match=expected) as info:
        WdataHook(**FAST).get_wdata_connection("conn-1")
    assert len(str(info.value)) < 500
    assert CANARY_SECRET not in str(info.value)


def test_html_error_page_quotes_a_short_excerpt(wdata_conn, sleeps):
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", kind="html", times=None))
    with pytest.raises(WdataApiError) as info:
        WdataHook(max_attempts=2, **FAST).get_wdata_connection("conn-1")
    assert info.value.status == 502
    assert "unreadable body: <" in str(info.value)
    assert len(str(info.value)) < 600


def test_huge_bodies_are_read_up_to_the_limit(wdata_conn):
    wdata_conn.add_fault(Fault(method="GET", path_contains="conn-1", kind="huge", size=3_000_000, times=2))
    assert WdataHook().get_wdata_connection("conn-1").id == "conn-1"
    with pytest.raises(WdataApiError, match="more than 1000000 bytes"):
        WdataHook(max_response_bytes=1_000_000).get_wdata_connection("conn-1")


def test_connection_refused_names_the_host_and_is_retried(wdata_conn, sleeps):
    hook = WdataHook(max_attempts=3, **FAST)
    wdata_conn.stop_listening()
    with pytest.raises(WdataTransportError, match=f"127.0.0.1:{wdata_conn.port}") as info:
        hook.get_batch_refresh("b1")
    assert info.value.retryable and not info.value.request_sent
    assert len(sleeps) == 2


def test_connection_refused_on_start_is_retried_because_nothing_was_sent(wdata_conn, sleeps):
    WdataHook().get_wdata_connection("conn-1")  # a token in the cache, so the POST is the first request
    wdata_conn.stop_listening()
    with pytest.raises(WdataTransportError) as info:
        WdataHook(max_attempts=2, timeout=5, **FAST).start_batch_refresh(["conn-1"])
    assert not isinstance(info.value, WdataRefreshMayHaveStartedError)
    assert len(sleeps) == 1


def test_every_request_has_a_user_agent_and_workspace_from_the_connection(simulator, monkeypatch):
    conn = simulator.airflow_connection()
    conn["extra"] |= {"workspace_id": "ws-42"}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_DEFAULT", json.dumps(conn))
    hook = WdataHook()
    batch = hook.start_batch_refresh(["conn-1"])
    hook.get_batch_refresh(batch.batch_refresh_id)
    hook.get_batch_refresh(batch.batch_refresh_id, workspace_id="ws-override")
    post, get, override = api_requests(simulator)
    assert post.json() == [{"connectionId": "conn-1", "workspaceId": "ws-42"}]
    assert get.query == {"workspaceId": "ws-42"}
    assert override.query == {"workspaceId": "ws-override"}
    for request in simulator.requests:
        assert request.headers["User-Agent"].startswith("airflow-provider-wdata/")
        assert "apache-airflow/" in request.headers["User-Agent"]


def test_test_connection_reports_success_and_a_wrong_secret(simulator, monkeypatch):
    name, value = simulator.airflow_conn_uri_env("wdata_default")
    monkeypatch.setenv(name, value)
    ok, message = WdataHook().test_connection()
    assert ok, message
    assert "Connected to Wdata" in message
    conn = simulator.airflow_connection() | {"password": "not-the-secret"}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_WRONG", json.dumps(conn))
    ok, message = WdataHook("wdata_wrong").test_connection()
    assert not ok
    assert "invalid_client" in message and "client secret" in message
    assert "wdata_wrong" not in message, "the UI tests a copy saved under a random id: naming it would confuse"
    assert "not-the-secret" not in message and CANARY_SECRET not in message


def test_a_changed_secret_does_not_reuse_the_old_token(simulator, monkeypatch):
    name, value = simulator.airflow_conn_uri_env("wdata_default")
    monkeypatch.setenv(name, value)
    assert WdataHook().test_connection()[0]
    conn = simulator.airflow_connection() | {"password": "rotated-wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_DEFAULT", json.dumps(conn))
    assert not WdataHook().test_connection()[0]


def test_nothing_secret_in_logs_exceptions_or_reprs(wdata_conn, all_logs, sleeps):
    hook = WdataHook(**FAST)
    hook.start_batch_refresh(["conn-1"])
    wdata_conn.expire_tokens()
    wdata_conn.add_fault(Fault(method="GET", status=503))
    hook.get_wdata_connection("conn-1")
    texts = [all_logs.text, repr(hook), repr(hook.config), str(TOKENS._tokens)]
    wdata_conn.add_fault(Fault(method="GET", status=403, times=1))
    with pytest.raises(WdataApiError) as info:
        hook.get_wdata_connection("conn-1")
    texts.append(str(info.value))
    assert "Trying again in" in texts[0], "the retry was logged, so the scan below saw the logs"
    tokens = wdata_conn.issued_tokens
    assert len(tokens) == 2
    for text in texts:
        assert CANARY_SECRET not in text
        assert not any(token in text for token in tokens)


def test_redirects_are_not_followed_with_the_token(wdata_conn):
    wdata_conn.add_fault(
        Fault(method="GET", path_contains="conn-1", status=302, headers={"Location": "https://elsewhere.test/steal"})
    )
    with pytest.raises(WdataApiError, match=re.escape("redirected to https://elsewhere.test/steal")) as info:
        WdataHook().get_wdata_connection("conn-1")
    assert "not followed" in str(info.value)
    assert len(api_requests(wdata_conn)) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(method="POST", path_contains="oauth2/token", status=500),
        Fault(method="POST", path_contains="oauth2/token", kind="drop"),
    ],
    ids=["token-500", "token-dropped"],
)
def test_a_token_failure_before_a_start_is_not_mistaken_for_a_started_refresh(wdata_conn, sleeps, fault):
    wdata_conn.add_fault(fault)
    batch = WdataHook(**FAST).start_batch_refresh(["conn-1"])
    assert batch.batch_refresh_id
    assert len(api_requests(wdata_conn, "POST")) == 1
    assert len(wdata_conn.token_requests) == 2 and len(sleeps) == 1


def test_may_have_started_says_what_the_service_answered_and_chains_nothing(wdata_conn):
    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", status=502))
    with pytest.raises(WdataRefreshMayHaveStartedError) as info:
        WdataHook(**FAST).start_batch_refresh(["conn-1"])
    assert "answered HTTP 502" in str(info.value) and "may have started" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize(
    "fault",
    [
        Fault(method="POST", path_contains="batch/refresh", kind="huge", size=2_000_000),
        Fault(method="POST", path_contains="batch/refresh", kind="malformed"),
        Fault(method="POST", path_contains="batch/refresh", status=520),
    ],
    ids=["2xx-too-large", "2xx-unreadable", "520"],
)
def test_a_start_answered_unreadably_may_have_started(wdata_conn, sleeps, fault):
    wdata_conn.add_fault(fault)
    with pytest.raises(WdataRefreshMayHaveStartedError):
        WdataHook(max_response_bytes=1_000_000, **FAST).start_batch_refresh(["conn-1"])
    assert len(api_requests(wdata_conn, "POST")) == 1 and sleeps == []


def test_hook_limits_are_checked():
    with pytest.raises(WdataConfigError, match="max_attempts"):
        WdataHook(max_attempts=0)
    with pytest.raises(WdataConfigError, match="backoff_max"):
        WdataHook(backoff_max=-1)


def test_a_cursor_that_comes_back_stops_the_listing():
    from airflow_provider_wdata.protocol import ConnectionPages, Envelope

    pages = ConnectionPages()
    pages.add(Envelope([{"id": "a"}], 200, "c1"))
    assert not pages.done and pages.cursor == "c1"
    with pytest.raises(WdataApiError, match="cursor 'c1' twice"):
        pages.add(Envelope([{"id": "b"}], 200, "c1"))


@pytest.mark.parametrize(
    ("body", "cursor", "says"),
    [
        ({"id": "a"}, None, "a 'body' that is an object, not a list of connections"),
        (None, None, "a 'body' that is null, not a list"),
        ([{"id": "a"}, "b"], None, "an entry 1 that is a string, not a connection object"),
        ([{"id": "a"}], ["c2"], "a 'cursor' that is a list, not a string or null"),
        ([{"id": "a"}], {"next": "c2"}, "a 'cursor' that is an object, not a string or null"),
    ],
)
def test_a_page_that_is_no_list_of_connections_stops_the_listing(body, cursor, says):
    from airflow_provider_wdata.protocol import ConnectionPages, Envelope

    with pytest.raises(WdataApiError, match=re.escape(says)):
        ConnectionPages().add(Envelope(body, 200, cursor))


def test_token_answers_without_expiry_are_kept_for_a_default_lifetime():
    from airflow_provider_wdata.config import build_config
    from airflow_provider_wdata.protocol import DEFAULT_TOKEN_LIFETIME, RawResponse, read_token

    config = build_config("c", login="id", password="pw", host=None, port=None, extras={})
    assert read_token(config, RawResponse(200, {}, b'{"access_token": "t"}')) == ("t", DEFAULT_TOKEN_LIFETIME)
    assert read_token(config, RawResponse(200, {}, b'{"access_token": "t", "expires_in": 60}')) == ("t", 60.0)


def test_excerpts_blank_out_encoded_secrets_too():
    from airflow_provider_wdata.protocol import excerpt

    body = b"grant_type=client_credentials&client_secret=a%2Bb%2Fc%3D&x=a+b/c="
    assert "a%2Bb" not in excerpt(body, hide=("a+b/c=",)) and "a+b/c=" not in excerpt(body, hide=("a+b/c=",))


def test_an_undefined_airflow_connection_is_a_config_error_naming_it_in_every_mode():
    message = r"Airflow connection 'wdata_nowhere' is not defined: add a connection of type 'wdata'.*AIRFLOW_CONN_WDATA"
    with pytest.raises(WdataConfigError, match=message) as sync_error:
        WdataHook("wdata_nowhere").get_batch_refresh("b-1")
    with pytest.raises(WdataConfigError, match=message) as async_error:
        asyncio.run(WdataHook("wdata_nowhere").aget_batch_refresh("b-1"))
    for error in (sync_error.value, async_error.value):
        assert error.__context__ is None and error.__cause__ is None, "no Airflow lookup error chained"
        assert not error.retryable


def test_an_api_error_from_an_event_keeps_a_status_written_as_digits():
    from airflow_provider_wdata.exceptions import error_from_event

    assert error_from_event("m", {"type": "WdataApiError", "status": "404"}).status == 404
    assert error_from_event("m", {"type": "WdataApiError", "status": "x"}).status == 0
