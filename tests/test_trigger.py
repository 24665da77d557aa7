"""BatchRefreshTrigger and ConnectionRefreshTrigger against the simulator, in a real event loop."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pendulum
import pytest

from airflow_provider_wdata import wait as wait_module
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger, ConnectionRefreshTrigger
from tests.conftest import CANARY_SECRET, ending_after

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2, "timeout": 2}


def batch_trigger(batch_id: str, *, seconds: float = 20, poll: float = 0.05, **kwargs) -> BatchRefreshTrigger:
    return BatchRefreshTrigger(
        batch_id=batch_id, poll_interval=poll, deadline=time.time() + seconds, hook_params=FAST_HOOK, **kwargs
    )


async def events_of(trigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def start_batch(*connections: str) -> str:
    return WdataHook().start_batch_refresh(list(connections or ("conn-1", "conn-2"))).batch_refresh_id


def status_gets(sim) -> int:
    return sum(1 for r in sim.requests if r.method == "GET" and "/batch/refresh/" in r.path)


def test_serialize_round_trips_and_holds_no_secret():
    trigger = BatchRefreshTrigger(
        batch_id="b-1",
        wdata_conn_id="wdata_x",
        workspace_id="ws",
        poll_interval=7,
        deadline=1_900_000_000.5,
        fail_fast=True,
        tolerate_cancelled=True,
        hook_params={"timeout": 5},
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_wdata.triggers.wdata.BatchRefreshTrigger"
    assert kwargs == {
        "batch_id": "b-1",
        "wdata_conn_id": "wdata_x",
        "workspace_id": "ws",
        "poll_interval": 7.0,
        "deadline": 1_900_000_000.5,
        "fail_fast": True,
        "tolerate_cancelled": True,
        "hook_params": {"timeout": 5},
        "last_read_at": None,
    }
    assert BatchRefreshTrigger(**kwargs).serialize() == (path, kwargs)
    json.dumps(kwargs)
    connection = ConnectionRefreshTrigger(connection_id="c", job_id="j", deadline=1.0)
    assert ConnectionRefreshTrigger(**connection.serialize()[1]).serialize() == connection.serialize()


async def test_success_event_carries_batch_id_and_summary(wdata_conn):
    batch_id = await asyncio.to_thread(start_batch)
    events = await events_of(batch_trigger(batch_id))
    assert len(events) == 1
    event = events[0]
    assert (event["status"], event["batch_id"], event["failed"]) == ("success", batch_id, [])
    assert "succeeded" in event["message"]
    assert [c["destination_status"] for c in event["summary"]["child_refreshes"]] == ["complete", "complete"]
    json.dumps(event)


async def test_failed_children_are_in_the_event(wdata_conn):
    wdata_conn.script_connection("conn-2", outcome="error", error="Sheet is locked by another user")
    batch_id = await asyncio.to_thread(start_batch)
    [event] = await events_of(batch_trigger(batch_id))
    assert event["status"] == "failed"
    assert "conn-2" in event["message"] and "Sheet is locked by another user" in event["message"]
    assert [f["connection_id"] for f in event["failed"]] == ["conn-2"]


async def test_fail_fast_does_not_wait_for_the_other_children(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    wdata_conn.script_connection("conn-2", outcome="error", error="bad source")
    batch_id = await asyncio.to_thread(start_batch)
    [event] = await events_of(batch_trigger(batch_id, fail_fast=True))
    assert event["status"] == "failed"
    [slow] = await events_of(batch_trigger(batch_id, seconds=0.3))
    assert slow["status"] == "timeout", "without fail_fast the batch is still running"


async def test_timeout_carries_the_last_statuses_and_keeps_the_deadline(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    batch_id = await asyncio.to_thread(start_batch, "conn-1")
    trigger = ending_after(batch_trigger(batch_id, seconds=600, poll=0.05), reads=2)
    deadline = trigger.deadline
    [event] = await events_of(trigger)
    assert event["status"] == "timeout"
    assert "still running" in event["message"] and "source=running" in event["message"]
    assert event["summary"]["batch_refresh_id"] == batch_id
    ended_at = pendulum.from_timestamp(trigger.wait.deadline).to_iso8601_string()
    assert f"deadline {ended_at}" in event["message"], "the message names the deadline the wait ended at"
    assert status_gets(wdata_conn) == 2, "no read after the deadline"
    assert trigger.serialize()[1]["deadline"] == deadline, "running never rewrites the serialized deadline"


async def test_a_read_still_running_past_the_last_reads_grace_is_cut_off(wdata_conn, monkeypatch):
    monkeypatch.setattr(wait_module, "LAST_READ_GRACE", 0.5)
    batch_id = await asyncio.to_thread(start_batch)
    # Answered after 30 s: well past the deadline, yet within the hook's timeout (FAST_HOOK's 2 s bounds the
    # exchange at 4 s, hence the larger timeout here), so only the deadline can end it. The token is cached (the
    # start fetched it): the 2 s go to the first read alone.
    wdata_conn.add_fault(Fault(method="GET", path_contains="/batch/refresh/", kind="slow", delay=30, times=None))
    trigger = BatchRefreshTrigger(
        batch_id=batch_id, poll_interval=0.05, deadline=time.time() + 2, hook_params=FAST_HOOK | {"timeout": 60}
    )
    [event] = await events_of(trigger)
    assert event["status"] == "timeout"
    assert event["summary"] is None and "no status could be read" in event["message"], "the slow read never ended"
    why = "Last error: the read made at the deadline was still waiting on the service 0.5 s after it"
    assert why in event["message"], "the message says why nothing was read"
    assert event["error"]["type"] == "WdataError"
    assert status_gets(wdata_conn) == 1


async def test_a_restarted_trigger_resumes_against_the_same_deadline(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    batch_id = await asyncio.to_thread(start_batch, "conn-1")
    first = batch_trigger(batch_id, seconds=0.6, poll=0.1)
    task = asyncio.ensure_future(events_of(first))
    await asyncio.sleep(0.2)  # let it poll a little, then "kill the triggerer"
    task.cancel()
    _, kwargs = first.serialize()
    revived = BatchRefreshTrigger(**kwargs)
    assert revived.deadline == first.deadline
    [event] = await events_of(revived)
    assert event["status"] == "timeout"
    original = pendulum.from_timestamp(first.deadline).to_iso8601_string()
    assert f"deadline {original}" in event["message"], "the revived trigger kept the original deadline"


@pytest.mark.parametrize("status", [403, 404])
async def test_forbidden_and_missing_end_the_wait_at_once(wdata_conn, status):
    batch_id = await asyncio.to_thread(start_batch)
    wdata_conn.add_fault(Fault(method="GET", path_contains="/batch/refresh/", status=status, times=None))
    [event] = await events_of(batch_trigger(batch_id))
    assert event["status"] == "error"
    assert f"HTTP {status}" in event["message"] and event["batch_id"] == batch_id
    assert status_gets(wdata_conn) == 1


async def test_unknown_batch_is_an_error_event_naming_it(wdata_conn):
    [event] = await events_of(batch_trigger("no-such-batch"))
    assert event["status"] == "error" and "no-such-batch" in event["message"]


async def test_transient_failures_longer_than_several_polls_do_not_end_the_wait(wdata_conn):
    batch_id = await asyncio.to_thread(start_batch)
    wdata_conn.add_fault(Fault(method="GET", path_contains="/batch/refresh/", status=503, times=8))
    [event] = await events_of(batch_trigger(batch_id))
    assert event["status"] == "success"
    assert status_gets(wdata_conn) >= 9


async def test_wrong_secret_is_an_error_event_not_a_timeout(simulator, monkeypatch):
    conn = simulator.airflow_connection() | {"password": "not-it"}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_DEFAULT", json.dumps(conn))
    [event] = await events_of(batch_trigger("b-1", seconds=30))
    assert event["status"] == "error" and "invalid_client" in event["message"]
    assert len(simulator.token_requests) == 1, "refused credentials end the wait: no second try"
    assert "not-it" not in json.dumps(event) and CANARY_SECRET not in json.dumps(event)


async def test_an_unknown_status_is_waited_on_until_the_deadline(wdata_conn):
    body = {
        "batchRefreshId": "raw-1",
        "sourceStatus": "complete",
        "destinationStatus": "complete",
        "childRefreshes": [{"connectionId": "conn-1", "sourceStatus": "queued_v2", "destinationStatus": "complete"}],
        "someNewField": {"x": 1},
    }
    wdata_conn.put_raw_batch("raw-1", body)
    # Warned once: tests/test_wait.py. Three reads, then the deadline, however slow the machine.
    [event] = await events_of(ending_after(batch_trigger("raw-1", seconds=600, poll=0.05), reads=3))
    assert event["status"] == "timeout", "an unknown status is still in progress"
    assert "conn-1 (source=queued_v2, destination=complete)" in event["message"]


async def test_connection_refresh_trigger(wdata_conn):
    run = await asyncio.to_thread(lambda: WdataHook().refresh_connection("conn-3"))
    trigger = ConnectionRefreshTrigger(
        connection_id="conn-3", job_id=run.job_id, poll_interval=0.05, deadline=time.time() + 20
    )
    [event] = await events_of(trigger)
    assert (event["status"], event["connection_id"], event["job_id"]) == ("success", "conn-3", run.job_id)
    assert event["summary"]["job_id"] == run.job_id
    wdata_conn.script_connection("conn-3", outcome="error", error="Destination missing")
    run = await asyncio.to_thread(lambda: WdataHook().refresh_connection("conn-3"))
    trigger = ConnectionRefreshTrigger(
        connection_id="conn-3", job_id=run.job_id, poll_interval=0.05, deadline=time.time() + 20
    )
    [event] = await events_of(trigger)
    assert event["status"] == "failed" and "Destination missing" in event["message"]


async def test_many_triggers_in_one_loop_share_keep_alive_connections(wdata_conn):
    wdata_conn.polls_to_finish = 4
    batch_ids = [await asyncio.to_thread(start_batch, "conn-1") for _ in range(10)]
    opened_before = wdata_conn.connections_opened
    triggers = [batch_trigger(batch_id, poll=0.05) for batch_id in batch_ids]
    results = await asyncio.gather(*(events_of(t) for t in triggers))
    assert [events[0]["status"] for events in results] == ["success"] * 10
    polls = status_gets(wdata_conn)
    assert polls >= 40
    opened = wdata_conn.connections_opened - opened_before
    assert opened <= 10 + 1, f"{opened} connections for {polls} polls: one per concurrent request at most"
    assert len(wdata_conn.token_requests) == 1


async def test_a_read_never_outlasts_the_deadline(wdata_conn):
    batch_id = await asyncio.to_thread(start_batch)
    wdata_conn.add_fault(
        Fault(method="GET", path_contains="/batch/refresh/", status=429, headers={"Retry-After": "3600"}, times=None)
    )
    trigger = BatchRefreshTrigger(
        batch_id=batch_id, poll_interval=0.05, deadline=time.time() + 0.5, hook_params={"retry_after_max": 3600}
    )
    # Without the bound, the hook would sleep the service's hour inside one read.
    [event] = await asyncio.wait_for(events_of(trigger), timeout=60)
    assert event["status"] == "timeout"


def test_a_timedelta_poll_interval_is_taken_as_its_seconds():
    trigger = BatchRefreshTrigger(batch_id="b-1", poll_interval=timedelta(seconds=5), timeout=timedelta(minutes=1))
    kwargs = trigger.serialize()[1]
    assert kwargs["poll_interval"] == 5.0 and kwargs["timeout"] == 60.0
    json.dumps(kwargs)  # stored by Airflow as JSON
    assert BatchRefreshTrigger(**kwargs).make_wait().poll_interval == 5.0
