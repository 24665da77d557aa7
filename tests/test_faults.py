"""The fault matrix: each fault the service or the network can throw at a wait, and what we do about it.

Rows follow README "Failure behaviour". Each drives the deferrable path (the trigger's run loop), and where it
applies poke mode and the start operators, against the simulator over real HTTP, and asserts the outcome and
the requests made. Row 12 (a killed triggerer) is in tests/e2e, with a real triggerer.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import re
import sys
import time
import types

import pytest

from airflow_provider_wdata import wait as wait_module
from airflow_provider_wdata._compat import AirflowSkipException, BaseSensorOperator
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataAuthError,
    WdataError,
    WdataRefreshMayHaveStartedError,
    WdataRefreshTimeoutError,
)
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from tests.conftest import ending_after

STATUS_PATH = "/batch/refresh/"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.02, "timeout": 2}


def trigger_for(batch_id: str, *, seconds: float = 30, poll: float = 0.05, **hook_params) -> BatchRefreshTrigger:
    return BatchRefreshTrigger(
        batch_id=batch_id, poll_interval=poll, deadline=time.time() + seconds, hook_params=FAST | hook_params
    )


async def final_event(trigger: BatchRefreshTrigger) -> dict:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, "a trigger yields exactly one event"
    return events[0]


def wait_deferred(batch_id: str, **kwargs) -> dict:
    return asyncio.run(final_event(trigger_for(batch_id, **kwargs)))


def poke_until_done(batch_id: str, max_pokes: int = 50, **hook_params):
    sensor = BatchRefreshSensor(
        task_id="wait", batch_id=batch_id, deferrable=False, hook_params=FAST | hook_params, poke_interval=0.05
    )
    for _ in range(max_pokes):
        result = sensor.poke({})
        if result:
            return result.xcom_value
    raise AssertionError(f"still waiting after {max_pokes} pokes")


def start(*connections: str) -> str:
    return WdataHook().start_batch_refresh(list(connections or ("conn-1", "conn-2"))).batch_refresh_id


def status_requests(sim) -> list:
    return [r for r in sim.requests if r.method == "GET" and STATUS_PATH in r.path]


def starts(sim) -> list:
    return [r for r in sim.requests if r.method == "POST" and not r.is_token_request]


MODES = ["deferred", "poke"]


def wait_in(mode: str, batch_id: str, **kwargs):
    if mode == "deferred":
        event = wait_deferred(batch_id, **kwargs)
        assert event["status"] == "success", event["message"]
        return event["summary"]
    return poke_until_done(batch_id, **kwargs)


# 1. 429 with Retry-After (seconds, and HTTP date): waits as told, then succeeds.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_01_429_with_retry_after_waits_as_told(wdata_conn, sleeps, mode, form):
    batch_id = start()
    value = "4" if form == "seconds" else email.utils.formatdate(time.time() + 4, usegmt=True)
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, status=429, headers={"Retry-After": value}))
    summary = wait_in(mode, batch_id)
    assert summary["batch_refresh_id"] == batch_id
    assert len(sleeps) == 1 and 2 <= sleeps[0] <= 4, sleeps
    assert len(wdata_conn.token_requests) == 1


# 2. 429 with no Retry-After: backs off exponentially with jitter, capped.
@pytest.mark.parametrize("mode", MODES)
def test_02_429_without_retry_after_backs_off_exponentially_capped(wdata_conn, sleeps, mode):
    batch_id = start()
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, status=429, times=4))
    wait_in(mode, batch_id, backoff_initial=1, backoff_max=5, max_attempts=5)
    assert len(sleeps) == 4
    floors = [1, 2, 4, 5]
    assert all(floor <= s <= 5 for floor, s in zip(floors, sleeps, strict=True)), sleeps
    assert sleeps[-1] == 5, "capped at backoff_max"


# 3. A burst of 500/502/503/504 lasting longer than several poll intervals: the wait survives.
@pytest.mark.parametrize("mode", MODES)
def test_03_5xx_burst_longer_than_several_polls(wdata_conn, sleeps, mode, all_logs):
    batch_id = start()
    for status in (500, 502, 503, 504):
        wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, status=status, times=3))
    wait_in(mode, batch_id, max_attempts=2)
    failed_polls = 12
    assert len(status_requests(wdata_conn)) >= failed_polls + 2, "polled through the burst, then to the end"
    logs = all_logs.text
    for status in (500, 502, 503, 504):
        assert "Could not read the refresh status (Wdata API GET" in logs and f"answered HTTP {status}" in logs
    assert all_logs.count("will try again.") == failed_polls // 2, "one warning per poll whose tries were spent"


# 4. Connection refused, and connections dropped mid-response, for a while: survives.
def test_04_connection_refused_for_a_while(wdata_conn):
    batch_id = start()

    async def scenario():
        trigger = trigger_for(batch_id, max_attempts=1)
        wait = trigger.make_wait()  # what trigger.run() runs, here with its state in view
        wdata_conn.stop_listening()
        waiting = asyncio.ensure_future(wait.arun(WdataHook(**trigger.hook_params), trigger.log))
        for _ in range(400):  # until the wait has seen the refusal (an event, not a fixed sleep)
            if wait.last_error is not None:
                break
            await asyncio.sleep(0.01)
        assert "failed before the request was sent" in str(wait.last_error)
        wdata_conn.start_listening()
        return await waiting

    assert asyncio.run(scenario())["status"] == "success"


def test_04_connection_refused_for_a_while_in_poke_mode(wdata_conn, sleeps):
    batch_id = start()
    sensor = BatchRefreshSensor(
        task_id="wait", batch_id=batch_id, deferrable=False, hook_params=FAST | {"max_attempts": 2}
    )
    wdata_conn.stop_listening()
    assert sensor.poke({}) is False, "a refused connection does not end the wait"
    assert "failed before the request was sent" in str(sensor._poke_wait.last_error)
    assert len(sleeps) == 1, "the hook tried twice"
    wdata_conn.start_listening()
    for _ in range(10):
        done = sensor.poke({})
        if done:
            break
    assert done and done.xcom_value["batch_refresh_id"] == batch_id


@pytest.mark.parametrize("mode", MODES)
def test_04_dropped_mid_response(wdata_conn, sleeps, mode):
    batch_id = start()
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, kind="drop", times=4))
    wait_in(mode, batch_id, max_attempts=2)
    assert len(status_requests(wdata_conn)) >= 6


# 5. Responses slower than the timeout: each attempt times out, the wait goes on, nothing hangs.
@pytest.mark.parametrize("mode", MODES)
def test_05_slow_responses_time_out_and_the_wait_goes_on(wdata_conn, sleeps, mode):
    batch_id = start()
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, kind="slow", delay=1.5, times=3))
    wait_in(mode, batch_id, timeout=0.3, max_attempts=2)
    # The three slow reads timed out and at least one more was answered. (How many more depends on when the
    # simulator gets to count the abandoned slow reads as polls: it finishes them after the client gave up.)
    assert len(status_requests(wdata_conn)) >= 4


# 6. Token expires mid-wait: one 401, one new token, the wait goes on; no extra token requests otherwise.
@pytest.mark.parametrize("mode", MODES)
def test_06_token_expiring_mid_wait(wdata_conn, mode):
    wdata_conn.polls_to_finish = 4
    batch_id = start()
    first = WdataHook().get_batch_refresh(batch_id)
    assert first.source_status == "running"
    wdata_conn.expire_tokens()
    wait_in(mode, batch_id)
    assert len(wdata_conn.token_requests) == 2
    tokens = [r.headers["Authorization"] for r in status_requests(wdata_conn)]
    assert len(set(tokens)) == 2
    assert tokens.count(tokens[0]) == 2, "exactly one refused call with the old token, then the new one"


# 7. Token endpoint down for a while (5xx, refused): retried; returns once it is back.
@pytest.mark.parametrize("mode", MODES)
def test_07_token_endpoint_down_for_a_while(wdata_conn, sleeps, mode):
    batch_id = start()
    wdata_conn.expire_tokens()
    wdata_conn.add_fault(Fault(method="POST", path_contains="oauth2/token", status=503, times=3))
    wdata_conn.add_fault(Fault(method="POST", path_contains="oauth2/token", status=502, times=2))
    wait_in(mode, batch_id, max_attempts=2)
    assert len(wdata_conn.token_requests) == 1 + 5 + 1


# 8. Wrong client secret: fails fast with an authentication error naming the connection, not at the timeout.
def test_08_wrong_secret_fails_fast_everywhere(simulator, monkeypatch):
    conn = simulator.airflow_connection() | {"password": "definitely-wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_WDATA_DEFAULT", json.dumps(conn))
    event = wait_deferred("b-1", seconds=600)
    assert event["status"] == "error" and "'wdata_default'" in event["message"]
    assert "invalid_client" in event["message"]
    with pytest.raises(WdataError, match=r"'wdata_default'.*invalid_client"):
        poke_until_done("b-1")
    with pytest.raises(WdataAuthError, match="'wdata_default'"):
        WdataRefreshBatchOperator(task_id="t", connections=["conn-1"], deferrable=False).execute({"ti": None})
    assert len(simulator.token_requests) == 3, "one token request each, never retried"


# 9. 403 and 404 on the status call: fails fast with the service's message and the batch id.
@pytest.mark.parametrize("status", [403, 404])
def test_09_forbidden_or_missing_fails_fast(wdata_conn, status):
    batch_id = start()
    wdata_conn.add_fault(
        Fault(
            method="GET",
            path_contains=STATUS_PATH,
            status=status,
            times=None,
            body={"body": "Denied here", "code": status},
        )
    )
    event = wait_deferred(batch_id, seconds=600)
    assert event["status"] == "error" and event["batch_id"] == batch_id
    assert "Denied here" in event["message"] and batch_id in event["message"]
    with pytest.raises(WdataError, match="Denied here"):
        poke_until_done(batch_id)
    assert len(status_requests(wdata_conn)) == 2


# 10. Malformed JSON, HTML error page, empty body, several MB, no 'body' key: clear error or tolerant read.
@pytest.mark.parametrize(
    ("kind", "outcome", "says"),
    [
        ("malformed", "error", "is not JSON"),
        ("empty", "error", "is empty"),
        ("no_body_key", "error", "has no 'body' field"),
        ("html", "success", None),
        ("huge", "success", None),
    ],
)
def test_10_unreadable_or_odd_bodies(wdata_conn, sleeps, kind, outcome, says):
    batch_id = start()
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, kind=kind, times=2))
    event = wait_deferred(batch_id, max_attempts=2)
    assert event["status"] == outcome, event["message"]
    if says:
        assert says in event["message"] and len(event["message"]) < 600


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("body", "says"),
    [('{"body": null, "code": 200}', "a 'body' that is null"), ("__CHILD__", "a childRefreshes[1] that is null")],
)
def test_10_a_status_read_without_statuses_to_read_fails_at_once(wdata_conn, sleeps, mode, body, says):
    batch_id = start()
    if body == "__CHILD__":
        child = {"connectionId": "conn-1", "sourceStatus": "complete", "destinationStatus": "complete"}
        batch = {"batchRefreshId": batch_id, "sourceStatus": "running", "childRefreshes": [child, None]}
        body = json.dumps({"body": batch, "code": 200})
    fault = wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, kind="malformed", body=body))
    if mode == "deferred":
        event = wait_deferred(batch_id)
        assert event["status"] == "error" and says in event["message"], event["message"]
    else:
        with pytest.raises(WdataApiError, match=re.escape(says)):
            poke_until_done(batch_id)
    assert fault.fired == 1 and len(status_requests(wdata_conn)) == 1, "one read: not polled until the timeout"


@pytest.mark.parametrize("mode", MODES)
def test_10_a_body_over_the_limit_is_refused_unread(wdata_conn, mode):
    batch_id = start()
    fault = wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, kind="huge", size=3_000_000))
    if mode == "deferred":
        event = wait_deferred(batch_id, max_response_bytes=1_000_000)
        assert event["status"] == "error" and "more than 1000000 bytes" in event["message"]
    else:
        with pytest.raises(WdataApiError, match="more than 1000000 bytes"):
            poke_until_done(batch_id, max_response_bytes=1_000_000)
    assert fault.fired == 1 and len(status_requests(wdata_conn)) == 1, "refused at once, not tried again"


# 11. Unknown status values and unknown fields: tolerated as the decision rules say.
@pytest.mark.parametrize("mode", MODES)
def test_11_unknown_statuses_and_fields_are_tolerated(wdata_conn, mode):
    body = {
        "batchRefreshId": "raw",
        "sourceStatus": "complete",
        "destinationStatus": "COMPLETE",
        "brandNewField": [1, 2],
        "childRefreshes": [
            {"connectionId": "conn-1", "sourceStatus": "complete", "destinationStatus": "complete", "extra": {}},
            {"connectionId": "conn-2", "sourceStatus": "Complete", "destinationStatus": "complete", "error": None},
        ],
    }
    wdata_conn.put_raw_batch("raw", body | {"sourceStatus": "reticulating"})
    if mode == "deferred":
        assert wait_deferred("raw", seconds=0.3)["status"] == "timeout", "an unknown status is still in progress"
    wdata_conn.put_raw_batch("raw", body)
    assert wait_in(mode, "raw")["batch_refresh_id"] == "raw"


# 13. A start request that times out after sending: no second start; a clear error that it may have started.
def test_13_start_timing_out_after_sending_is_never_sent_twice(wdata_conn, sleeps):
    # A token in the cache first: the short timeout must apply to the start alone, not to a token request that a
    # loaded machine might answer late (that would be retried, and counted in ``sleeps``).
    WdataHook().get_wdata_connection("conn-1")
    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", kind="slow", delay=1.5))
    operator = WdataRefreshBatchOperator(
        task_id="t", connections=["conn-1"], deferrable=False, hook_params={"timeout": 0.3}
    )
    with pytest.raises(WdataRefreshMayHaveStartedError, match="may have started"):
        operator.execute({"ti": None})
    assert len(starts(wdata_conn)) == 1 and sleeps == []


# 14. Deadline reached while the service keeps failing: a timeout with the last statuses; soft_fail skips.
def test_14_deadline_while_the_service_keeps_failing(wdata_conn):
    batch_id = start()
    WdataHook().get_batch_refresh(batch_id)  # one poll: "running"
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, status=503, times=None))
    trigger = ending_after(trigger_for(batch_id, seconds=600, max_attempts=1), reads=2)
    event = asyncio.run(final_event(trigger))
    assert event["status"] == "timeout"
    assert "Last seen: no status could be read" in event["message"]
    assert "HTTP 503" in event["message"], "the last error is named"
    sensor = BatchRefreshSensor(task_id="wait", batch_id=batch_id, soft_fail=True)
    with pytest.raises(AirflowSkipException, match="Timed out"):
        sensor.execute_complete({}, event)


def test_14_timeout_names_the_last_statuses_seen(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    batch_id = start("conn-1")
    event = asyncio.run(final_event(ending_after(trigger_for(batch_id, seconds=600), reads=2)))
    assert event["status"] == "timeout"
    assert "source=running, destination=running" in event["message"]
    assert len(status_requests(wdata_conn)) == 2


def failing_after_one_read(sim) -> str:
    """A batch that was read once ("running"), after which every status read gets a 503."""
    batch_id = start()
    sim.add_fault(Fault(method="GET", path_contains=STATUS_PATH, status=503, times=None, skip=1))
    return batch_id


#: The module of the sensor loop this Airflow runs: the exceptions it raises are the ones named there.
SENSOR_MODULE = sys.modules[BaseSensorOperator.execute.__module__]


def test_14_in_poke_mode_airflows_sensor_timeout_ends_the_wait(wdata_conn, all_logs):
    batch_id = failing_after_one_read(wdata_conn)
    sensor = BatchRefreshSensor(
        task_id="wait",
        batch_id=batch_id,
        mode="poke",
        deferrable=False,
        timeout=0.3,
        poke_interval=0.05,
        hook_params=FAST | {"max_attempts": 1},
    )
    with pytest.raises(SENSOR_MODULE.AirflowSensorTimeout, match="timed out"):
        sensor.execute({})
    logs = all_logs.text
    assert "still running (" in logs and "source=running" in logs, "the last statuses seen are in the log"
    assert len(status_requests(wdata_conn)) >= 1


class _RescheduledTask:
    """What a sensor in reschedule mode asks of its task instance: when its first try started."""

    max_tries = 0
    dag_id, task_id, run_id, map_index = "d", "wait", "r", -1

    def __init__(self, first_try_started: datetime.datetime | None) -> None:
        self.first_try_started = first_try_started

    def get_first_reschedule_date(self, context):  # Airflow 3
        return self.first_try_started


def reschedule_context(monkeypatch, first_try_started: datetime.datetime | None) -> dict:
    if hasattr(SENSOR_MODULE, "_orig_start_date"):  # Airflow 2 reads it from the database
        monkeypatch.setattr(SENSOR_MODULE, "_orig_start_date", lambda **_: first_try_started)
    return {"ti": _RescheduledTask(first_try_started)}


def test_14_in_reschedule_mode_airflows_sensor_timeout_ends_the_wait(wdata_conn, all_logs, monkeypatch):
    AirflowRescheduleException, AirflowSensorTimeout = (
        SENSOR_MODULE.AirflowRescheduleException,
        SENSOR_MODULE.AirflowSensorTimeout,
    )
    batch_id = failing_after_one_read(wdata_conn)

    def sensor(**kwargs) -> BatchRefreshSensor:
        # Each try of a rescheduled sensor is a new task instance: a new sensor object, nothing kept in memory.
        return BatchRefreshSensor(
            task_id="wait",
            batch_id=batch_id,
            mode="reschedule",
            deferrable=False,
            timeout=60,
            hook_params=FAST | {"max_attempts": 1},
            **kwargs,
        )

    assert sensor().reschedule
    with pytest.raises(AirflowRescheduleException):  # first try: running, so it frees its slot until later
        sensor().execute(reschedule_context(monkeypatch, None))
    assert "source=running" in all_logs.text
    now = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(AirflowRescheduleException):  # a later try within the timeout: a 503, still waiting
        sensor().execute(reschedule_context(monkeypatch, now - datetime.timedelta(seconds=30)))
    assert "HTTP 503" in all_logs.text and "will try again" in all_logs.text
    long_ago = reschedule_context(monkeypatch, now - datetime.timedelta(seconds=120))
    with pytest.raises(AirflowSensorTimeout, match="timed out"):  # a try past the timeout: Airflow ends it
        sensor().execute(long_ago)
    with pytest.raises(AirflowSkipException):
        sensor(soft_fail=True).execute(long_ago)
    assert len(status_requests(wdata_conn)) == 4, "one read per try"


class FakeWaitClock:
    """The wait module's clock: the real one, moved on at once by each ``sleep``. The wait's deadline passes after
    about as many reads as the timeout holds poll intervals, however slow the machine."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def time(self) -> float:
        return time.time() + sum(self.slept)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_14_the_operators_own_wait_times_out_naming_the_last_error(wdata_conn, monkeypatch, all_logs):
    clock = FakeWaitClock()
    monkeypatch.setattr(wait_module, "time", types.SimpleNamespace(time=clock.time, sleep=clock.sleep))
    wdata_conn.add_fault(Fault(method="GET", path_contains=STATUS_PATH, status=503, times=None))
    operator = WdataRefreshBatchOperator(
        task_id="t",
        connections=["conn-1"],
        deferrable=False,
        timeout=1,
        poll_interval=0.25,
        hook_params=FAST | {"max_attempts": 1},
    )

    class TaskInstance:
        def xcom_push(self, key, value):
            pass

    with pytest.raises(WdataRefreshTimeoutError) as info:
        operator.execute({"ti": TaskInstance()})
    message = str(info.value)
    assert "Timed out" in message and "Last seen: no status could be read" in message
    assert "Last error: Wdata API GET /api/v1/connections/batch/refresh/" in message and "HTTP 503" in message
    reads = len(status_requests(wdata_conn))
    assert reads == len(clock.slept) and reads >= 3, "a read after each poll interval, until the deadline"
    assert all(seconds <= 0.25 for seconds in clock.slept)
    assert message in all_logs.text, "and in the task log"
