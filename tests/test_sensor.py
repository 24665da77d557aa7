"""BatchRefreshSensor and ConnectionRefreshSensor: poke, deferral and completion, against the simulator."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_wdata._compat import AirflowSensorTimeout, AirflowSkipException, PokeReturnValue
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataConfigError,
    WdataError,
    WdataRefreshFailedError,
    WdataRefreshTimeoutError,
    WdataSensorTimeoutError,
)
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.sensors.wdata import DEFERRAL_TIMEOUT_GRACE, BatchRefreshSensor, ConnectionRefreshSensor
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger, ConnectionRefreshTrigger

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2}


def sensor(batch_id: str, **kwargs) -> BatchRefreshSensor:
    kwargs.setdefault("deferrable", False)
    return BatchRefreshSensor(task_id="wait", batch_id=batch_id, poke_interval=0.05, hook_params=FAST_HOOK, **kwargs)


def start(*connections: str) -> str:
    return WdataHook().start_batch_refresh(list(connections or ("conn-1", "conn-2"))).batch_refresh_id


def test_templated_fields():
    assert set(BatchRefreshSensor.template_fields) == {"batch_id", "workspace_id"}
    assert set(ConnectionRefreshSensor.template_fields) == {"connection_id", "job_id", "workspace_id"}


def test_poke_waits_then_returns_the_batch_summary(wdata_conn):
    batch_id = start()
    wait = sensor(batch_id)
    assert wait.poke({}) is False
    done = wait.poke({})
    assert isinstance(done, PokeReturnValue) and done.is_done
    assert done.xcom_value["batch_refresh_id"] == batch_id
    assert {c["connection_id"] for c in done.xcom_value["child_refreshes"]} == {"conn-1", "conn-2"}


def test_poke_mode_execute_runs_to_the_end(wdata_conn):
    batch_id = start()
    assert sensor(batch_id, mode="poke").execute({})["batch_refresh_id"] == batch_id


def test_failed_child_fails_the_task_naming_it(wdata_conn, all_logs):
    wdata_conn.script_connection("conn-1", outcome="error", error="Column 'Revenue' not found")
    batch_id = start()
    wait = sensor(batch_id)
    wait.poke({})
    with pytest.raises(WdataRefreshFailedError) as info:
        wait.poke({})
    assert "conn-1" in str(info.value) and "Column 'Revenue' not found" in str(info.value)
    assert [f["connection_id"] for f in info.value.failed] == ["conn-1"]
    assert "Column 'Revenue' not found" in all_logs.text, "the error is in the task log too"


def test_transient_errors_keep_poking(wdata_conn, all_logs):
    batch_id = start()
    fault = wdata_conn.add_fault(Fault(method="GET", path_contains="/batch/refresh/", status=503, times=2))
    wait = sensor(batch_id)
    assert wait.poke({}) is False
    assert fault.fired == 2, "both 503s were served: the hook's two tries"
    assert len([r for r in wdata_conn.requests if r.method == "GET"]) == 2
    assert "HTTP 503" in str(wait._poke_wait.last_error)
    assert "Could not read the refresh status" in all_logs.text and "will try again" in all_logs.text
    assert wait.poke({}) is False, "the next poke reads the batch again: still running"
    assert wait.poke({}).is_done


def test_wrong_batch_id_fails_with_the_service_message(wdata_conn):
    with pytest.raises(WdataError, match="not found"):
        sensor("deadbeef").poke({})


@pytest.mark.parametrize("bad", ["../../admin", "a/b", ""])
def test_bad_batch_id_is_refused_before_any_request(wdata_conn, bad):
    with pytest.raises(WdataError, match="batch_id"):
        sensor(bad).poke({})
    assert wdata_conn.requests == []


def test_soft_fail_skips_a_failed_batch_in_poke_mode(wdata_conn):
    wdata_conn.script_connection("conn-2", outcome="cancelled")
    batch_id = start()
    wait = sensor(batch_id, soft_fail=True)
    wait.poke({})
    with pytest.raises(AirflowSkipException, match="conn-2"):
        wait.poke({})


def reads(sim) -> int:
    return sum(1 for r in sim.requests if r.method == "GET" and "/batch/refresh/" in r.path)


def test_silent_fail_does_not_turn_a_failed_refresh_into_a_timeout(wdata_conn):
    # silent_fail swallows what poke raises and pokes again: a failed batch would be read until the timeout.
    wdata_conn.script_connection("conn-1", outcome="error", error="Column 'Revenue' not found")
    batch_id = start()
    with pytest.raises(WdataRefreshFailedError, match="Column 'Revenue' not found"):
        sensor(batch_id, mode="poke", silent_fail=True, timeout=5).execute({})
    assert reads(wdata_conn) == 2, "running, then failed: no read after the end"


def test_silent_fail_does_not_keep_reading_a_wrong_batch_id(wdata_conn):
    with pytest.raises(WdataError, match="not found"):
        sensor("deadbeef", mode="poke", silent_fail=True, timeout=5).execute({})
    assert reads(wdata_conn) == 1


def test_silent_fail_with_never_fail_still_skips_a_failed_refresh(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="error", error="Column 'Revenue' not found")
    batch_id = start()
    with pytest.raises(AirflowSkipException, match="Column 'Revenue' not found"):
        sensor(batch_id, mode="poke", silent_fail=True, never_fail=True, timeout=5).execute({})
    assert reads(wdata_conn) == 2


def test_silent_fail_still_pokes_while_the_refresh_runs(wdata_conn):
    batch_id = start()
    assert sensor(batch_id, mode="poke", silent_fail=True).execute({})["batch_refresh_id"] == batch_id


def test_tolerate_cancelled(wdata_conn):
    wdata_conn.batch_status = "complete"  # a cancelled child does not cancel the batch (cancelUnwritables)
    wdata_conn.script_connection("conn-2", outcome="cancelled")
    batch_id = start()
    wait = sensor(batch_id, tolerate_cancelled=True)
    wait.poke({})
    assert wait.poke({}).is_done


def test_deferrable_checks_once_then_defers_with_the_deadline(wdata_conn):
    batch_id = start()
    wait = sensor(batch_id, deferrable=True, timeout=300)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        wait.execute({})
    trigger = info.value.trigger
    assert isinstance(trigger, BatchRefreshTrigger)
    kwargs = trigger.serialize()[1]
    assert kwargs["batch_id"] == batch_id and kwargs["poll_interval"] == 0.05
    assert before + 300 <= kwargs["deadline"] <= time.time() + 300
    assert info.value.timeout.total_seconds() == 300 + DEFERRAL_TIMEOUT_GRACE
    assert info.value.method_name == "execute_complete"
    gets = [r for r in wdata_conn.requests if r.method == "GET"]
    assert len(gets) == 1, "exactly one check before deferring"


def test_deferrable_returns_at_once_when_the_batch_already_ended(wdata_conn):
    batch_id = start()
    WdataHook().get_batch_refresh(batch_id)
    WdataHook().get_batch_refresh(batch_id)
    assert sensor(batch_id, deferrable=True).execute({})["batch_refresh_id"] == batch_id


def test_deferrable_fails_at_once_on_a_wrong_batch_id(wdata_conn):
    with pytest.raises(WdataError, match="HTTP 404"):
        sensor("nope", deferrable=True).execute({})


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"status": "weird"},
        "success",
        {"message": "x"},
        {"status": "success"},
        {"status": "success", "summary": None},
        {"status": "success", "summary": []},
    ],
)
def test_execute_complete_refuses_malformed_events(event):
    with pytest.raises(WdataError, match="Unexpected event"):
        sensor("b").execute_complete({}, event)


def test_execute_complete_reads_what_a_custom_trigger_may_send_without_crashing():
    # Custom triggers may send events built by hand: odd parts are left out, not turned into a TypeError.
    with pytest.raises(WdataRefreshFailedError, match="ended: failed, with no message") as failed:
        sensor("b").execute_complete({}, {"status": "failed", "failed": [None, {"connection_id": "c1"}]})
    assert failed.value.failed == ({"connection_id": "c1"},)
    with pytest.raises(WdataApiError) as api:
        sensor("b").execute_complete(
            {}, {"status": "error", "message": "m", "error": {"type": "WdataApiError", "status": "x"}}
        )
    assert api.value.status == 0
    assert sensor("b").execute_complete({}, {"status": "success", "summary": {"child_refreshes": [None]}}) == {
        "child_refreshes": [None]
    }


def test_execute_complete_outcomes():
    wait = sensor("b")
    summary = {"batch_refresh_id": "b", "child_refreshes": []}
    assert wait.execute_complete({}, {"status": "success", "message": "ok", "summary": summary}) == summary
    with pytest.raises(WdataRefreshTimeoutError, match="last seen: running"):
        wait.execute_complete({}, {"status": "timeout", "message": "Timed out; last seen: running"})
    with pytest.raises(WdataRefreshFailedError):
        wait.execute_complete({}, {"status": "failed", "message": "c1 failed", "failed": [{"connection_id": "c1"}]})
    with pytest.raises(WdataError, match="HTTP 403"):
        wait.execute_complete({}, {"status": "error", "message": "HTTP 403"})


def connection_sensor(**kwargs) -> ConnectionRefreshSensor:
    return ConnectionRefreshSensor(
        task_id="w", connection_id="conn-1", job_id="j-1", poke_interval=0.05, hook_params=FAST_HOOK, **kwargs
    )


@pytest.mark.parametrize("make_sensor", [lambda: sensor("b"), connection_sensor], ids=["batch", "connection"])
def test_a_timeout_from_the_trigger_is_a_sensor_timeout_that_airflow_does_not_retry(make_sensor):
    timeout_event = {"status": "timeout", "message": "Timed out: ... Last seen: running. Still running: conn-1"}
    with pytest.raises(WdataSensorTimeoutError, match="Still running: conn-1") as info:
        make_sensor().execute_complete({}, timeout_event)
    assert isinstance(info.value, AirflowSensorTimeout), "Airflow fails a sensor timeout without retrying"
    assert isinstance(info.value, WdataRefreshTimeoutError)


def test_a_timeout_in_poke_mode_raises_the_same_error_with_the_last_statuses(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    batch_id = start("conn-1")
    # Airflow's own timeout check comes after the first poke: a microsecond is over by then, with no sleep.
    with pytest.raises(WdataSensorTimeoutError) as info:
        sensor(batch_id, mode="poke", timeout=1e-6).execute({})
    assert isinstance(info.value, AirflowSensorTimeout)
    assert type(info.value) is WdataSensorTimeoutError, "the type a deferred sensor's timeout raises"
    assert "Timed out: the refresh did not end" in str(info.value)
    assert "Still running: conn-1 (source=" in str(info.value)
    assert "exceeds the specified timeout" in str(info.value), "Airflow's own words come last"


def test_soft_fail_skips_a_timeout_in_poke_mode(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    with pytest.raises(AirflowSkipException):
        sensor(start("conn-1"), mode="poke", timeout=1e-6, soft_fail=True).execute({})


@pytest.mark.parametrize("status", ["timeout", "failed"])
def test_soft_fail_skips_timeouts_and_failures_from_the_trigger(status):
    with pytest.raises(AirflowSkipException):
        sensor("b", soft_fail=True).execute_complete({}, {"status": status, "message": "m"})


def test_connection_refresh_sensor(wdata_conn):
    run = WdataHook().refresh_connection("conn-1")
    wait = ConnectionRefreshSensor(
        task_id="w", connection_id="conn-1", job_id=run.job_id, poke_interval=0.05, deferrable=True
    )
    with pytest.raises(TaskDeferred) as info:
        wait.execute({})
    assert isinstance(info.value.trigger, ConnectionRefreshTrigger)
    wait.deferrable = False
    assert wait.execute({})["job_id"] == run.job_id


async def test_an_undefined_airflow_connection_fails_with_the_same_error_poked_or_deferred():
    poked = sensor("b-1", wdata_conn_id="wdata_nowhere")
    with pytest.raises(WdataConfigError, match="'wdata_nowhere' is not defined") as in_poke:
        await asyncio.to_thread(poked.poke, {})
    trigger = BatchRefreshTrigger(
        batch_id="b-1", wdata_conn_id="wdata_nowhere", poll_interval=0.05, deadline=time.time() + 60
    )
    event = await anext(aiter(trigger.run()))
    assert event.payload["status"] == "error" and event.payload["error"]["type"] == "WdataConfigError"
    with pytest.raises(WdataConfigError) as deferred:
        sensor("b-1", wdata_conn_id="wdata_nowhere", deferrable=True).execute_complete({}, event.payload)
    assert str(deferred.value) == str(in_poke.value)
