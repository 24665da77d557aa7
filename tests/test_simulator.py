"""Tests of the Wdata Prep API simulator, driven with plain ``requests`` (not the provider's hook)."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_wdata.testing import Fault, ManualClock, RecordedRequest, WdataSimulator
from airflow_provider_wdata.testing.__main__ import build_parser

STATUSES = {"not_started", "running", "complete", "error", "cancelled"}
RUN_KEYS = {
    "connectionId",
    "jobId",
    "sourceStatus",
    "destinationStatus",
    "error",
    "created",
    "createdBy",
    "updated",
    "sourceParameters",
    "destinationParameters",
    "sourceMetadata",
    "destinationMetadata",
    "workspaceId",
    "sourceWorkspaceId",
    "destinationWorkspaceId",
}
BATCH_KEYS = {
    "batchRefreshId",
    "childRefreshes",
    "sourceStatus",
    "destinationStatus",
    "error",
    "created",
    "createdBy",
    "updated",
}
CONNECTION_KEYS = {
    "id",
    "name",
    "description",
    "sourceType",
    "sourceId",
    "destinationType",
    "destinationId",
    "workspaceId",
    "created",
    "updated",
    "lastRun",
}
BATCH = "/api/v1/connections/batch/refresh"


@pytest.fixture
def sim() -> Iterator[WdataSimulator]:
    with WdataSimulator() as simulator:
        yield simulator


def get_token(sim: WdataSimulator) -> str:
    response = requests.post(
        sim.token_url,
        data={"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def api(sim: WdataSimulator) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {get_token(sim)}"
    return session


def start_batch(session: requests.Session, sim: WdataSimulator, *ids: str, query: str = "") -> dict[str, Any]:
    response = session.post(sim.url(BATCH + query), json=[{"connectionId": i} for i in ids], timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["body"]


def poll_batch(session: requests.Session, sim: WdataSimulator, batch_id: str) -> dict[str, Any]:
    response = session.get(sim.url(f"{BATCH}/{batch_id}"), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["body"]


def statuses(body: dict[str, Any]) -> tuple[str, str]:
    return body["sourceStatus"], body["destinationStatus"]


def assert_timestamp(value: Any) -> None:
    assert isinstance(value, str)
    datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_run_shape(run: dict[str, Any]) -> None:
    assert set(run) == RUN_KEYS
    assert run["sourceStatus"] in STATUSES and run["destinationStatus"] in STATUSES
    for key in ("connectionId", "jobId", "createdBy", "workspaceId", "sourceWorkspaceId", "destinationWorkspaceId"):
        assert isinstance(run[key], str) and run[key], key
    for key in ("sourceParameters", "destinationParameters", "sourceMetadata", "destinationMetadata"):
        assert isinstance(run[key], dict), key
    assert run["error"] is None or isinstance(run["error"], str)
    assert_timestamp(run["created"])
    assert_timestamp(run["updated"])


# ------------------------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("path", ["/iam/v1/oauth2/token", "/oauth2/token"])
def test_token_form_on_both_paths(sim: WdataSimulator, path: str) -> None:
    response = requests.post(
        sim.root_url + path,
        data={
            "grant_type": "client_credentials",
            "client_id": "sim-client",
            "client_secret": "sim-secret",
            "scope": "wdata",
        },
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 599 and body["scope"] == "wdata"
    assert sim.issued_tokens == [body["access_token"]]
    listed = requests.get(
        sim.url("/api/v1/connections"), headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=5
    )
    assert listed.status_code == 200


def test_token_basic_auth(sim: WdataSimulator) -> None:
    response = requests.post(
        sim.token_url, auth=("sim-client", "sim-secret"), data={"grant_type": "client_credentials"}, timeout=5
    )
    assert response.status_code == 200 and response.json()["access_token"] in sim.issued_tokens
    wrong = requests.post(
        sim.token_url, auth=("sim-client", "nope"), data={"grant_type": "client_credentials"}, timeout=5
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "wrong"},
        {"grant_type": "client_credentials", "client_id": "other", "client_secret": "sim-secret"},
        {"grant_type": "client_credentials"},
    ],
)
def test_token_bad_credentials(sim: WdataSimulator, form: dict[str, str]) -> None:
    response = requests.post(sim.token_url, data=form, timeout=5)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client" and isinstance(body["error_description"], str)
    assert sim.issued_tokens == []


def test_token_bad_grant_type(sim: WdataSimulator) -> None:
    creds = {"client_id": "sim-client", "client_secret": "sim-secret"}
    response = requests.post(sim.token_url, data={**creds, "grant_type": "password"}, timeout=5)
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"
    missing = requests.post(sim.token_url, data=creds, timeout=5)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_api_requires_a_valid_bearer_token(sim: WdataSimulator) -> None:
    url = sim.url("/api/v1/connections/conn-1")
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["code"] == 401 and isinstance(missing.json()["body"], str)
    assert "Bearer" in missing.headers["WWW-Authenticate"]
    assert requests.get(url, headers={"Authorization": "Bearer forged"}, timeout=5).status_code == 401
    session = api(sim)
    assert session.get(url, timeout=5).status_code == 200
    sim.expire_tokens()
    expired = session.get(url, timeout=5)
    assert expired.status_code == 401 and expired.json()["code"] == 401
    session.headers["Authorization"] = f"Bearer {get_token(sim)}"
    assert session.get(url, timeout=5).status_code == 200
    assert len(sim.issued_tokens) == 2


def test_tokens_really_expire_after_their_lifetime() -> None:
    clock = ManualClock()
    with WdataSimulator(token_lifetime=1, clock=clock) as sim:
        session = api(sim)
        url = sim.url("/api/v1/connections")
        clock.advance(0.9)
        assert session.get(url, timeout=5).status_code == 200
        clock.advance(0.1)
        assert session.get(url, timeout=5).status_code == 401


# ------------------------------------------------------------------------------------------ response shapes


def test_every_response_shape_matches_the_documented_api(sim: WdataSimulator) -> None:
    session = api(sim)
    started = session.post(
        sim.url(BATCH + "?cancelUnwritables=false"),
        json=[{"connectionId": "conn-1", "sourceParameters": {"p": 1}}, {"connectionId": "conn-2"}],
        timeout=5,
    ).json()
    assert set(started) == {"body", "code"} and started["code"] == 200
    for body in (started["body"], poll_batch(session, sim, started["body"]["batchRefreshId"])):
        assert set(body) == BATCH_KEYS
        assert isinstance(body["batchRefreshId"], str) and body["batchRefreshId"]
        assert body["sourceStatus"] in STATUSES and body["destinationStatus"] in STATUSES
        assert body["error"] is None and isinstance(body["createdBy"], str)
        assert_timestamp(body["created"])
        assert_timestamp(body["updated"])
        assert [c["connectionId"] for c in body["childRefreshes"]] == ["conn-1", "conn-2"]
        for child in body["childRefreshes"]:
            assert_run_shape(child)
        assert body["childRefreshes"][0]["sourceParameters"] == {"p": 1}
    job_ids = {c["jobId"] for c in started["body"]["childRefreshes"]}
    assert len(job_ids) == 2

    run_env = session.post(sim.url("/api/v1/connections/conn-3/refresh"), json={}, timeout=5).json()
    assert set(run_env) == {"body", "code"}
    assert_run_shape(run_env["body"])
    status_env = session.get(
        sim.url("/api/v1/connections/conn-3/status"), params={"jobId": run_env["body"]["jobId"]}, timeout=5
    ).json()
    assert set(status_env) == {"body", "code"}
    assert_run_shape(status_env["body"])

    conn_env = session.get(sim.url("/api/v1/connections/conn-3"), timeout=5).json()
    assert set(conn_env) == {"body", "code"}
    conn = conn_env["body"]
    assert set(conn) == CONNECTION_KEYS
    for key in CONNECTION_KEYS - {"lastRun", "created", "updated"}:
        assert isinstance(conn[key], str), key
    assert_timestamp(conn["created"])
    assert conn["lastRun"]["jobId"] == run_env["body"]["jobId"]
    assert_run_shape(conn["lastRun"])

    listed = session.get(sim.url("/api/v1/connections"), timeout=5).json()
    assert set(listed) == {"body", "code", "cursor"} and listed["cursor"] is None
    assert [c["id"] for c in listed["body"]] == ["conn-1", "conn-2", "conn-3"]
    assert all(set(c) == CONNECTION_KEYS for c in listed["body"])
    assert listed["body"][2]["lastRun"] is not None and listed["body"][0]["lastRun"] is not None

    error = session.get(sim.url(f"{BATCH}/nope"), timeout=5).json()
    assert set(error) >= {"body", "code"} and error["code"] == 404


def test_workspace_id_is_echoed(sim: WdataSimulator) -> None:
    session = api(sim)
    batch = session.post(sim.url(BATCH), json=[{"connectionId": "conn-1", "workspaceId": "ws-7"}], timeout=5)
    assert batch.json()["body"]["childRefreshes"][0]["workspaceId"] == "ws-7"
    batch_id = batch.json()["body"]["batchRefreshId"]
    polled = session.get(sim.url(f"{BATCH}/{batch_id}"), params={"workspaceId": "ws-8"}, timeout=5)
    assert polled.json()["body"]["childRefreshes"][0]["workspaceId"] == "ws-8"
    too_long = session.get(sim.url(f"{BATCH}/{batch_id}"), params={"workspaceId": "w" * 41}, timeout=5)
    assert too_long.status_code == 400


# --------------------------------------------------------------------------------------- batch progression


@pytest.mark.parametrize(
    ("outcome", "final", "error"),
    [
        ("complete", ("complete", "complete"), None),
        ("error", ("error", "error"), "boom"),
        ("cancelled", ("cancelled", "cancelled"), None),
        ("source_error", ("error", "cancelled"), "boom"),
    ],
)
def test_batch_progresses_to_the_scripted_outcome(
    sim: WdataSimulator, outcome: str, final: tuple[str, str], error: str | None
) -> None:
    sim.script_connection("conn-1", outcome=outcome, error=error)
    session = api(sim)
    started = start_batch(session, sim, "conn-1")
    assert statuses(started) == ("not_started", "not_started")
    assert statuses(started["childRefreshes"][0]) == ("not_started", "not_started")
    first = poll_batch(session, sim, started["batchRefreshId"])
    assert statuses(first) == ("running", "running")
    assert statuses(first["childRefreshes"][0]) == ("running", "running")
    second = poll_batch(session, sim, started["batchRefreshId"])
    child = second["childRefreshes"][0]
    assert statuses(child) == final
    assert child["error"] == error
    assert statuses(second) == final  # derived, one child
    assert second["error"] is None
    assert statuses(poll_batch(session, sim, started["batchRefreshId"])) == final  # terminal is sticky


def test_stuck_batch_stays_running(sim: WdataSimulator) -> None:
    sim.script_connection("conn-2", outcome="stuck")
    session = api(sim)
    batch_id = start_batch(session, sim, "conn-1", "conn-2")["batchRefreshId"]
    for _ in range(6):
        body = poll_batch(session, sim, batch_id)
    assert statuses(body) == ("running", "running")
    assert statuses(body["childRefreshes"][0]) == ("complete", "complete")
    assert statuses(body["childRefreshes"][1]) == ("running", "running")
    assert sim.batches[batch_id].polls == 6


def test_per_connection_polls_to_finish() -> None:
    with WdataSimulator(polls_to_finish=1, connections=[]) as sim:
        sim.add_connection("fast")
        sim.add_connection("slow", polls_to_finish=3)
        session = api(sim)
        batch_id = start_batch(session, sim, "fast", "slow")["batchRefreshId"]
        seen = [statuses(poll_batch(session, sim, batch_id)) for _ in range(3)]
    assert seen == [("running", "running"), ("running", "running"), ("complete", "complete")]


def test_time_based_progress() -> None:
    clock = ManualClock()
    with WdataSimulator(polls_to_finish=None, seconds_to_finish=5, clock=clock) as sim:
        session = api(sim)
        batch_id = start_batch(session, sim, "conn-1")["batchRefreshId"]
        assert statuses(poll_batch(session, sim, batch_id)) == ("running", "running")
        assert statuses(poll_batch(session, sim, batch_id)) == ("running", "running")
        clock.advance(5)
        assert statuses(poll_batch(session, sim, batch_id)) == ("complete", "complete")


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (("complete", "error", "cancelled"), ("error", "error")),
        (("complete", "cancelled", "complete"), ("complete", "complete")),
        (("cancelled", "cancelled", "cancelled"), ("cancelled", "cancelled")),
        (("complete", "destination_error", "complete"), ("complete", "error")),
        (("complete", "complete", "complete"), ("complete", "complete")),
    ],
)
def test_derived_batch_status(sim: WdataSimulator, outcomes: tuple[str, ...], expected: tuple[str, str]) -> None:
    for index, outcome in enumerate(outcomes, start=1):
        sim.script_connection(f"conn-{index}", outcome=outcome)
    session = api(sim)
    batch_id = start_batch(session, sim, "conn-1", "conn-2", "conn-3")["batchRefreshId"]
    poll_batch(session, sim, batch_id)
    assert statuses(poll_batch(session, sim, batch_id)) == expected


def test_batch_status_complete_mode_hides_failed_children() -> None:
    with WdataSimulator(batch_status="complete") as sim:
        sim.script_connection("conn-2", outcome="error", error="child failed")
        session = api(sim)
        batch_id = start_batch(session, sim, "conn-1", "conn-2")["batchRefreshId"]
        assert statuses(poll_batch(session, sim, batch_id)) == ("running", "running")
        body = poll_batch(session, sim, batch_id)
    assert statuses(body) == ("complete", "complete") and body["error"] is None
    assert statuses(body["childRefreshes"][1]) == ("error", "error")
    assert body["childRefreshes"][1]["error"] == "child failed"


def test_script_connection_only_affects_future_refreshes(sim: WdataSimulator) -> None:
    session = api(sim)
    before = start_batch(session, sim, "conn-1")["batchRefreshId"]
    sim.script_connection("conn-1", outcome="error")
    after = start_batch(session, sim, "conn-1")["batchRefreshId"]
    for _ in range(2):
        old, new = poll_batch(session, sim, before), poll_batch(session, sim, after)
    assert statuses(old) == ("complete", "complete")
    assert statuses(new) == ("error", "error")


def test_outcomes_per_refresh_over_http(sim: WdataSimulator) -> None:
    sim.script_connection("conn-2", outcomes=["error", "complete"], error="Source file missing", polls_to_finish=1)
    session = api(sim)
    first = start_batch(session, sim, "conn-1", "conn-2")["batchRefreshId"]
    second = start_batch(session, sim, "conn-2")["batchRefreshId"]
    alone = session.post(sim.url("/api/v1/connections/conn-2/refresh"), json={"sourceParameters": {"y": 1}}, timeout=5)
    failed = poll_batch(session, sim, first)["childRefreshes"][1]
    assert statuses(failed) == ("error", "error") and failed["error"] == "Source file missing"
    assert statuses(poll_batch(session, sim, second)["childRefreshes"][0]) == ("complete", "complete")
    status = session.get(
        sim.url("/api/v1/connections/conn-2/status"), params={"jobId": alone.json()["body"]["jobId"]}, timeout=5
    )
    assert statuses(status.json()["body"]) == ("complete", "complete")  # the last outcome repeats
    # Counting refresh starts: the runs the service accepted, and the requests sent.
    conn_2_runs = [run for run in sim.runs.values() if run.connection_id == "conn-2"]
    assert [(run.attempt, run.outcome, run.batch_id) for run in conn_2_runs] == [
        (1, "error", first),
        (2, "complete", second),
        (3, "complete", None),
    ]
    assert conn_2_runs[2].request == {"sourceParameters": {"y": 1}}
    assert sim.connections["conn-2"].refreshes == 3
    starts = [r for r in sim.requests if r.method == "POST" and r.path.endswith("/refresh")]
    assert [r.json() for r in starts] == [
        [{"connectionId": "conn-1"}, {"connectionId": "conn-2"}],
        [{"connectionId": "conn-2"}],
        {"sourceParameters": {"y": 1}},
    ]


def test_cancel_unwritables(sim: WdataSimulator) -> None:
    sim.script_connection("conn-2", outcome="unwritable", polls_to_finish=1)
    session = api(sim)
    cancelled = start_batch(session, sim, "conn-2", query="?cancelUnwritables=true")["batchRefreshId"]
    errored = start_batch(session, sim, "conn-2", query="?cancelUnwritables=false")["batchRefreshId"]
    assert statuses(poll_batch(session, sim, cancelled)["childRefreshes"][0]) == ("cancelled", "cancelled")
    assert statuses(poll_batch(session, sim, errored)["childRefreshes"][0]) == ("error", "error")
    assert (
        session.post(sim.url(BATCH + "?cancelUnwritables=maybe"), json=[{"connectionId": "conn-1"}]).status_code == 400
    )


def test_unknown_batch_is_404(sim: WdataSimulator) -> None:
    response = api(sim).get(sim.url(f"{BATCH}/does-not-exist"), timeout=5)
    assert response.status_code == 404
    assert response.json() == {"body": "Batch refresh does-not-exist not found", "code": 404}


@pytest.mark.parametrize(
    ("payload", "target"),
    [
        ([], "body"),
        ([{"connectionId": "conn-1"}] * 101, "body"),
        ({"connectionId": "conn-1"}, "body"),
        ([{"sourceParameters": {}}], "[0].connectionId"),
        ([{"connectionId": "conn-1", "sourceParameters": "x"}], "[0].sourceParameters"),
        ([{"connectionId": "conn-1", "usePreviousSourceParameters": "yes"}], "[0].usePreviousSourceParameters"),
    ],
)
def test_bad_batch_bodies_are_400(sim: WdataSimulator, payload: Any, target: str) -> None:
    response = api(sim).post(sim.url(BATCH), json=payload, timeout=5)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400 and isinstance(body["body"], str)
    assert target in [d["target"] for d in body["details"]]
    assert all(set(d) == {"code", "message", "target"} for d in body["details"])
    assert sim.batches == {}


def test_batch_of_100_is_accepted_and_non_json_rejected(sim: WdataSimulator) -> None:
    session = api(sim)
    assert len(start_batch(session, sim, *["conn-1"] * 100)["childRefreshes"]) == 100
    bad = session.post(sim.url(BATCH), data=b"[{", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["details"][0]["code"] == "invalid_json"


def test_unknown_connection_in_batch_is_404(sim: WdataSimulator) -> None:
    session = api(sim)
    one = session.post(sim.url(BATCH), json=[{"connectionId": "conn-1"}, {"connectionId": "ghost"}], timeout=5)
    assert one.status_code == 404 and one.json() == {"body": "Connection ghost not found", "code": 404}
    two = session.post(sim.url(BATCH), json=[{"connectionId": "a"}, {"connectionId": "b"}], timeout=5)
    assert two.json()["body"] == ["Connection a not found", "Connection b not found"]
    assert sim.batches == {}


# ------------------------------------------------------------------------------------------ single refresh


def test_single_connection_refresh(sim: WdataSimulator) -> None:
    sim.script_connection("conn-2", outcome="cancelled")
    session = api(sim)
    run = session.post(sim.url("/api/v1/connections/conn-2/refresh"), json={}, timeout=5).json()["body"]
    assert statuses(run) == ("not_started", "not_started") and run["connectionId"] == "conn-2"
    url = sim.url("/api/v1/connections/conn-2/status")
    seen = [statuses(session.get(url, params={"jobId": run["jobId"]}, timeout=5).json()["body"]) for _ in range(2)]
    assert seen == [("running", "running"), ("cancelled", "cancelled")]
    last_run = session.get(sim.url("/api/v1/connections/conn-2"), timeout=5).json()["body"]["lastRun"]
    assert last_run["jobId"] == run["jobId"] and statuses(last_run) == ("cancelled", "cancelled")


def test_single_refresh_errors(sim: WdataSimulator) -> None:
    session = api(sim)
    conn = sim.url("/api/v1/connections")
    assert session.post(f"{conn}/ghost/refresh", json={}, timeout=5).status_code == 404
    assert session.post(f"{conn}/conn-1/refresh", data=b"", timeout=5).status_code == 400
    assert session.post(f"{conn}/conn-1/refresh", json=[], timeout=5).status_code == 400
    assert session.post(f"{conn}/conn-1/refresh", json={"connectionId": "conn-2"}, timeout=5).status_code == 400
    assert session.get(f"{conn}/conn-1/status", timeout=5).status_code == 400
    unknown_job = session.get(f"{conn}/conn-1/status", params={"jobId": "nope"}, timeout=5)
    assert unknown_job.status_code == 404 and "nope" in unknown_job.json()["body"]
    assert session.get(f"{conn}/ghost/status", params={"jobId": "x"}, timeout=5).status_code == 404
    assert session.get(f"{conn}/ghost", timeout=5).json() == {"body": "Connection ghost not found", "code": 404}
    assert session.get(sim.url("/api/v1/nowhere"), timeout=5).json()["code"] == 404
    assert session.delete(f"{conn}/conn-1", timeout=5).status_code == 405


def test_use_previous_parameters(sim: WdataSimulator) -> None:
    session = api(sim)
    url = sim.url("/api/v1/connections/conn-1/refresh")
    session.post(url, json={"sourceParameters": {"year": 2024}}, timeout=5)
    again = session.post(url, json={"usePreviousSourceParameters": True}, timeout=5).json()["body"]
    assert again["sourceParameters"] == {"year": 2024}


def test_raw_bodies_are_served_verbatim(sim: WdataSimulator) -> None:
    weird = {"batchRefreshId": "raw-1", "sourceStatus": "paused", "destinationStatus": None, "newField": [1]}
    sim.put_raw_batch("raw-1", weird)
    run = {"jobId": "j-1", "sourceStatus": "complete"}
    sim.put_raw_run("conn-9", "j-1", run)
    session = api(sim)
    assert session.get(sim.url(f"{BATCH}/raw-1"), timeout=5).json() == {"body": weird, "code": 200}
    status = session.get(sim.url("/api/v1/connections/conn-9/status"), params={"jobId": "j-1"}, timeout=5)
    assert status.json() == {"body": run, "code": 200}
    sim.put_raw_batch("raw-1", None)
    assert session.get(sim.url(f"{BATCH}/raw-1"), timeout=5).status_code == 404


# ----------------------------------------------------------------------------------------- list connections


def test_list_connections_paging_and_filters(sim: WdataSimulator) -> None:
    session = api(sim)
    url = sim.url("/api/v1/connections")
    ids, cursor, pages = [], None, 0
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = session.get(url, params=params, timeout=5).json()
        pages += 1
        ids += [c["id"] for c in page["body"]]
        cursor = page["cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert ids == ["conn-1", "conn-2", "conn-3"] and pages == 3
    offset = session.get(url, params={"limit": 2, "offset": 1}, timeout=5).json()
    assert [c["id"] for c in offset["body"]] == ["conn-2", "conn-3"] and offset["cursor"] is None
    filtered = session.get(url, params={"sourceType": "spreadsheet"}, timeout=5).json()["body"]
    assert [c["id"] for c in filtered] == ["conn-3"]
    by_dest = session.get(url, params={"destinationId": "dst-conn-2"}, timeout=5).json()["body"]
    assert [c["id"] for c in by_dest] == ["conn-2"]
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"cursor": "garbage"}, {"offset": "-1"}):
        response = session.get(url, params=bad, timeout=5)
        assert response.status_code == 400, bad
        assert response.json()["code"] == 400
    assert len(session.get(url, params={"limit": "1000"}, timeout=5).json()["body"]) == 3


# ------------------------------------------------------------------------------------------------- faults


def test_status_fault_is_consumed_in_order(sim: WdataSimulator) -> None:
    session = api(sim)
    batch_id = start_batch(session, sim, "conn-1")["batchRefreshId"]
    first = sim.add_fault(
        Fault(method="GET", path_contains="/batch/refresh/", times=2, status=429, headers={"Retry-After": "1"})
    )
    sim.add_fault(Fault(method="GET", path_contains="/batch/refresh/", times=1, status=503))
    url = sim.url(f"{BATCH}/{batch_id}")
    codes = [session.get(url, timeout=5) for _ in range(4)]
    assert [r.status_code for r in codes] == [429, 429, 503, 200]
    assert codes[0].headers["Retry-After"] == "1"
    assert codes[0].json() == {"body": "Too Many Requests (simulated fault)", "code": 429}
    assert first.fired == 2 and sim.faults == []
    assert statuses(codes[3].json()["body"]) == ("running", "running")  # faults did not advance the batch


def test_status_fault_bodies_and_skip(sim: WdataSimulator) -> None:
    session = api(sim)
    url = sim.url("/api/v1/connections")
    sim.add_fault(Fault(path_contains="/connections", status=409, body={"custom": True}))
    sim.add_fault(Fault(path_contains="/connections", status=500, body="plain", headers={"Content-Type": "text/plain"}))
    sim.add_fault(Fault(path_contains="/connections", status=423, skip=1))
    assert session.get(url, timeout=5).json() == {"custom": True}
    plain = session.get(url, timeout=5)
    assert plain.status_code == 500 and plain.text == "plain" and plain.headers["Content-Type"].startswith("text/plain")
    assert [session.get(url, timeout=5).status_code for _ in range(2)] == [200, 423]


def test_forever_fault_until_cleared(sim: WdataSimulator) -> None:
    sim.add_fault(Fault(path_contains="/oauth2/token", times=None, status=500))
    data = {"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"}
    assert [requests.post(sim.token_url, data=data, timeout=5).status_code for _ in range(3)] == [500] * 3
    sim.clear_faults()
    assert requests.post(sim.token_url, data=data, timeout=5).status_code == 200


def test_slow_fault_answers_normally_and_stop_does_not_wait_for_it() -> None:
    with WdataSimulator(shutdown_timeout=0.1) as sim:
        session = api(sim)
        quick = sim.add_fault(Fault(kind="slow", delay=0.01, path_contains="/connections/conn-1"))
        response = session.get(sim.url("/api/v1/connections/conn-1"), timeout=5)
        assert response.status_code == 200 and response.json()["body"]["id"] == "conn-1"
        assert quick.fired == 1 and sim.faults == []
        sim.add_fault(Fault(kind="slow", delay=600, method="POST"))
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.post(sim.url(BATCH), json=[{"connectionId": "conn-1"}], timeout=0.2)
        thread = sim._thread
    # Had stop() waited for the delay, the held-back request would have started a batch.
    assert thread is not None and not thread.is_alive()
    assert sim.batches == {}


def test_drop_fault(sim: WdataSimulator) -> None:
    session = api(sim)
    sim.add_fault(Fault(kind="drop", method="POST"))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(sim.url(BATCH), json=[{"connectionId": "conn-1"}], timeout=5)
    assert sim.batches == {}
    assert sim.requests[-1].json() == [{"connectionId": "conn-1"}]  # the request was read
    assert session.get(sim.url("/api/v1/connections"), timeout=5).status_code == 200


def test_malformed_html_empty_and_no_body_key_faults(sim: WdataSimulator) -> None:
    session = api(sim)
    url = sim.url("/api/v1/connections")
    for kind in ("malformed", "html", "empty", "no_body_key"):
        sim.add_fault(Fault(kind=kind))
    malformed = session.get(url, timeout=5)
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    html = session.get(url, timeout=5)
    assert html.status_code == 502 and html.headers["Content-Type"].startswith("text/html")
    assert "<html>" in html.text
    empty = session.get(url, timeout=5)
    assert empty.status_code == 200 and empty.content == b""
    no_body = session.get(url, timeout=5)
    assert no_body.status_code == 200 and no_body.json() == {"code": 200}


def test_huge_fault(sim: WdataSimulator) -> None:
    session = api(sim)
    sim.add_fault(Fault(kind="huge", path_contains="/connections/conn-1"))
    response = session.get(sim.url("/api/v1/connections/conn-1"), timeout=10)
    assert response.status_code == 200 and len(response.content) >= 5 * 1024 * 1024
    payload = response.json()
    assert payload["code"] == 200 and payload["body"]["id"] == "conn-1"
    sim.add_fault(Fault(kind="huge", size=1_000_000))
    assert 1_000_000 <= len(session.get(sim.url("/api/v1/connections"), timeout=5).content) < 1_100_000


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(kind="explode")
    with pytest.raises(ValueError):
        WdataSimulator(batch_status="sometimes")
    sim = WdataSimulator()
    with pytest.raises(ValueError):
        sim.add_connection("conn-1")
    with pytest.raises(ValueError):
        sim.script_connection("conn-1", outcome="maybe")


# --------------------------------------------------------------------------------------------- rate limit


def test_rate_limit_answers_429_with_retry_after_per_client() -> None:
    clock = ManualClock()
    with WdataSimulator(rate_limit=1, rate_limit_window=3600, token_lifetime=10**6, clock=clock) as sim:
        session = api(sim)
        url = sim.url("/api/v1/connections")
        assert session.get(url, timeout=5).status_code == 200
        refused = [session.get(url, timeout=5) for _ in range(2)]
        assert [r.status_code for r in refused] == [429, 429]
        assert refused[0].headers["Retry-After"] == "3600" and refused[0].json()["code"] == 429
        assert sim.rate_limited == 2
        assert get_token(sim)  # the token endpoint is not limited
        other_token = api(sim)  # a new token of the same client shares its limit
        assert other_token.get(url, timeout=5).status_code == 429
        clock.advance(3599)
        assert session.get(url, timeout=5).headers["Retry-After"] == "1"
        clock.advance(1)
        assert session.get(url, timeout=5).status_code == 200
        assert sim.rate_limited == 4


def test_rate_limit_can_change_and_faults_are_not_counted(sim: WdataSimulator) -> None:
    session = api(sim)
    url = sim.url("/api/v1/connections")
    assert [session.get(url, timeout=5).status_code for _ in range(3)] == [200] * 3
    sim.set_rate_limit(2, window=3600)
    sim.add_fault(Fault(status=429))
    assert [session.get(url, timeout=5).status_code for _ in range(4)] == [429, 200, 200, 429]
    assert sim.rate_limited == 1
    assert session.get(sim.url("/api/v1/connections/ghost"), headers={"Authorization": ""}).status_code == 401
    assert sim.rate_limited == 1  # unauthenticated requests are refused before the limit
    sim.set_rate_limit(None)
    assert session.get(url, timeout=5).status_code == 200
    with pytest.raises(ValueError):
        sim.set_rate_limit(0)


# ---------------------------------------------------------------------------------------- socket control


def test_stop_and_start_listening_on_the_same_port(sim: WdataSimulator) -> None:
    session = api(sim)
    url = sim.url("/api/v1/connections")
    assert session.get(url, timeout=5).status_code == 200
    port = sim.port
    sim.stop_listening()
    assert not sim.listening
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url, timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=5)
    sim.start_listening()
    assert sim.port == port and sim.listening
    assert session.get(url, timeout=5).status_code == 200


def test_stop_joins_the_thread_and_closes_the_port() -> None:
    sim = WdataSimulator().start()
    url = sim.url("/api/v1/connections")
    thread = sim._thread
    assert thread is not None and thread.is_alive()
    sim.stop()
    assert not thread.is_alive()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=5)
    sim.stop()  # idempotent


# -------------------------------------------------------------------------------------------- recording


def test_requests_are_recorded(sim: WdataSimulator) -> None:
    token = get_token(sim)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.post(sim.url(BATCH + "?cancelUnwritables=true"), json=[{"connectionId": "conn-1"}], timeout=5)
    session.get(sim.url("/api/v1/connections"), params={"limit": "5"}, timeout=5)
    recorded = sim.requests
    assert [(r.method, r.path) for r in recorded] == [
        ("POST", "/iam/v1/oauth2/token"),
        ("POST", "/s/wdata/prep" + BATCH),
        ("GET", "/s/wdata/prep/api/v1/connections"),
    ]
    assert all(isinstance(r, RecordedRequest) for r in recorded)
    assert recorded[0].form()["client_secret"] == "sim-secret"
    assert recorded[1].query == {"cancelUnwritables": "true"}
    assert recorded[1].headers["authorization"] == f"Bearer {token}"
    assert recorded[1].json() == [{"connectionId": "conn-1"}]
    assert recorded[2].query == {"limit": "5"} and recorded[2].body == b""
    assert recorded[0].at <= recorded[1].at <= recorded[2].at <= time.monotonic()
    assert [r.path for r in sim.token_requests] == ["/iam/v1/oauth2/token"]
    assert sim.connections_opened == 2  # the token call, then one keep-alive session connection
    sim.clear_requests()
    assert sim.requests == []


def test_airflow_connection_helpers(sim: WdataSimulator) -> None:
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/s/wdata/prep"
    assert sim.token_url == f"http://127.0.0.1:{sim.port}/iam/v1/oauth2/token"
    assert sim.airflow_connection() == {
        "conn_type": "wdata",
        "login": "sim-client",
        "password": "sim-secret",
        "host": sim.base_url,
        "extra": {"token_url": sim.token_url},
    }
    name, value = sim.airflow_conn_env("my_wdata")
    assert name == "AIRFLOW_CONN_MY_WDATA" and json.loads(value) == sim.airflow_connection()


def test_airflow_conn_uri_env_is_a_deprecated_alias(sim: WdataSimulator) -> None:
    with pytest.warns(DeprecationWarning, match="airflow_conn_env"):
        old = sim.airflow_conn_uri_env("my_wdata")
    assert old == sim.airflow_conn_env("my_wdata")


def test_https(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with WdataSimulator(ssl_context=context) as sim:
        assert sim.base_url.startswith("https://") and sim.token_url.startswith("https://")
        response = requests.post(
            sim.token_url,
            auth=("sim-client", "sim-secret"),
            data={"grant_type": "client_credentials"},
            verify=str(ca_file),
            timeout=5,
        )
    assert response.status_code == 200 and response.json()["token_type"] == "Bearer"


async def test_usable_from_another_event_loop() -> None:
    import aiohttp

    with WdataSimulator() as sim:
        basic = base64.b64encode(b"sim-client:sim-secret").decode()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                sim.token_url, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
            ) as response:
                token = (await response.json())["access_token"]
            async with session.get(
                sim.url("/api/v1/connections/conn-2"), headers={"Authorization": f"Bearer {token}"}
            ) as response:
                body = await response.json()
    assert body["body"]["id"] == "conn-2"


# ------------------------------------------------------------------------------------------------- CLI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_prints_exports_and_connection_ids_then_serves_until_sigterm() -> None:
    port = free_port()
    command = [sys.executable, "-m", "airflow_provider_wdata.testing", "--port", str(port)]
    command += ["--client-id", "cli-id", "--client-secret", "cli secret's", "--outcome", "conn-9=error,complete"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert process.stdout is not None
        lines = []
        while not lines or not lines[-1].startswith("# Serving"):
            line = process.stdout.readline()
            assert line, f"the simulator exited early: {process.stderr.read() if process.stderr else ''}"
            lines.append(line.rstrip("\n"))
        assert lines[0].startswith("export AIRFLOW_CONN_WDATA_DEFAULT=")
        exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines[:3])
        conn = json.loads(exported["AIRFLOW_CONN_WDATA_DEFAULT"])
        assert conn["login"] == "cli-id" and conn["password"] == "cli secret's" and conn["conn_type"] == "wdata"
        assert exported["WDATA_BASE_URL"] == conn["host"] == f"http://127.0.0.1:{port}/s/wdata/prep"
        assert exported["WDATA_TOKEN_URL"] == conn["extra"]["token_url"]
        assert lines[3] == (
            "# Wdata connection ids served: conn-1 (complete), conn-2 (complete), conn-3 (complete), "
            "conn-9 (error/complete)"
        )
        token = requests.post(
            conn["extra"]["token_url"],
            data={"grant_type": "client_credentials", "client_id": "cli-id", "client_secret": "cli secret's"},
            timeout=5,
        )
        assert token.status_code == 200
        added = requests.get(
            conn["host"] + "/api/v1/connections/conn-9",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=5,
        )
        assert added.json()["body"]["id"] == "conn-9"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_help_describes_every_flag() -> None:
    parser = build_parser()
    flags = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert {a.dest for a in flags} >= {"port", "outcome", "rate_limit", "conn_id", "polls_to_finish"}
    assert all(action.help for action in flags), [a.dest for a in flags if not a.help]
    help_text = subprocess.run(
        [sys.executable, "-m", "airflow_provider_wdata.testing", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert all(flag in help_text for action in flags for flag in action.option_strings)


@pytest.mark.parametrize("value", ["conn-1", "=error", "conn-1=maybe", "conn-1=error,"])
def test_cli_rejects_bad_outcomes(value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--outcome", value])
