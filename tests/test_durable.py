"""Durable retries: a later try of a start operator reattaches, returns, or reruns only what failed.

A stand-in for Airflow 3.3's task state store (same interface, JSON values) carries what a try started to the
next try; the simulator counts every refresh it accepted.
"""

from __future__ import annotations

import json
import logging

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_wdata import durable
from airflow_provider_wdata._compat import AIRFLOW_V_3_3_PLUS, AirflowFailException
from airflow_provider_wdata.exceptions import (
    WdataError,
    WdataNothingToRerunError,
    WdataRefreshFailedError,
    WdataRefreshNotRecordedError,
    WdataRefreshTimeoutError,
)
from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator, WdataRefreshConnectionOperator
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2}


class FakeStore:
    """Airflow 3.3's ``task_state_store``: get/set/delete/clear of JSON values."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str, default=None):
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value, *, retention=None) -> None:
        self.values[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def clear(self) -> None:
        self.values.clear()


def execution_api_failure() -> Exception:
    """What Airflow 3.3's task state store raises when its execution API call fails; before 3.3, which has no task
    state store (the tests hand the operators one), a broken channel to the supervisor."""
    if not AIRFLOW_V_3_3_PLUS:
        return ConnectionResetError("the supervisor closed the channel")
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    return AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 503}))


class StoreThatFailsToSet(FakeStore):
    """The store of a try during which the execution API failed: reads work, the write raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def set(self, key: str, value, *, retention=None) -> None:
        raise self.error


class FakeTaskInstance:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


class FakeDagRun:
    def __init__(self, clear_number: int = 0) -> None:
        self.clear_number = clear_number


class Task:
    """Successive tries of one task instance: the same store, a new context per try."""

    def __init__(self) -> None:
        self.store = FakeStore()
        self.tries = 0
        self.clear_number = 0

    def context(self, *, store: bool = True) -> dict:
        self.tries += 1
        ctx = {"ti": FakeTaskInstance(self.tries), "dag_run": FakeDagRun(self.clear_number)}
        if store:
            ctx["task_state_store"] = self.store
        return ctx


def batch_op(connections, **kwargs) -> WdataRefreshBatchOperator:
    kwargs.setdefault("deferrable", False)
    return WdataRefreshBatchOperator(
        task_id="refresh", connections=connections, poll_interval=0.05, hook_params=FAST_HOOK, **kwargs
    )


def starts(sim) -> list[list[str]]:
    """The connection ids of each refresh start the simulator received, in order."""
    found = []
    for r in sim.requests:
        if r.method != "POST" or r.is_token_request:
            continue
        body = r.json()
        found.append([item["connectionId"] for item in body] if isinstance(body, list) else [r.path.split("/")[-2]])
    return found


def test_the_start_is_recorded_before_the_wait(wdata_conn):
    task = Task()
    ctx = task.context()
    with pytest.raises(TaskDeferred):
        batch_op(
            [{"connection_id": "conn-1", "source_parameters": {"year": "2026"}}, "conn-2"], deferrable=True
        ).execute(ctx)
    record = durable.StartedRefresh.from_json(task.store.get(durable.STORE_KEY))
    assert record.batch_id == ctx["ti"].xcom["batch_refresh_id"]
    assert record.connections == [
        {"connection_id": "conn-1", "source_parameters": {"year": "2026"}},
        {"connection_id": "conn-2"},
    ]
    assert record.clear_number == 0


def test_a_retry_reattaches_to_a_batch_still_running(wdata_conn, all_logs):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    task = Task()
    with pytest.raises(WdataRefreshTimeoutError):
        batch_op(["conn-1"], timeout=0.2).execute(task.context())
    first_batch = task.store.get(durable.STORE_KEY)["batch_id"]
    with pytest.raises(TaskDeferred) as deferred:
        batch_op(["conn-1"], deferrable=True).execute(task.context())
    assert isinstance(deferred.value.trigger, BatchRefreshTrigger)
    assert deferred.value.trigger.batch_id == first_batch
    assert starts(wdata_conn) == [["conn-1"]], "no second start"
    assert f"Try 2: batch {first_batch} (connections conn-1) is still running; waiting on it" in all_logs.text


def test_a_retry_returns_a_batch_that_succeeded_since_without_starting_or_waiting(wdata_conn):
    task = Task()
    with pytest.raises(TaskDeferred):
        batch_op(["conn-1", "conn-2"], deferrable=True).execute(task.context())
    batch_id = task.store.get(durable.STORE_KEY)["batch_id"]
    while wdata_conn.batch_body(batch_id)["destinationStatus"] != "complete":
        batch_op(["conn-1"]).hook.get_batch_refresh(batch_id)  # let the simulated batch finish
    reads_before = len(wdata_conn.requests)
    result = batch_op(["conn-1", "conn-2"], deferrable=True).execute(task.context())
    assert result["batch_refresh_id"] == batch_id
    assert [c["connection_id"] for c in result["child_refreshes"]] == ["conn-1", "conn-2"]
    assert len(starts(wdata_conn)) == 1
    assert len(wdata_conn.requests) - reads_before == 1, "one status read, no wait"


def test_a_retry_reruns_only_the_failed_and_cancelled_connections_with_their_fields(wdata_conn, all_logs):
    wdata_conn.script_connection("conn-2", outcomes=["error", "complete"], error="Sheet locked")
    wdata_conn.script_connection("conn-3", outcomes=["cancelled", "complete"])
    connections = [
        "conn-1",
        {"connection_id": "conn-2", "destination_parameters": {"sheet": "Q4"}, "use_previous_source_parameters": True},
        {"connection_id": "conn-3", "source_parameters": {"year": "2026"}},
    ]
    task = Task()
    with pytest.raises(WdataRefreshFailedError):
        batch_op(connections).execute(task.context())
    result = batch_op(connections).execute(task.context())
    assert starts(wdata_conn) == [["conn-1", "conn-2", "conn-3"], ["conn-2", "conn-3"]]
    rerun = [r.json() for r in wdata_conn.requests if r.method == "POST" and not r.is_token_request][1]
    assert rerun == [
        {"connectionId": "conn-2", "destinationParameters": {"sheet": "Q4"}, "usePreviousSourceParameters": True},
        {"connectionId": "conn-3", "sourceParameters": {"year": "2026"}},
    ]
    children = {c["connection_id"]: c for c in result["child_refreshes"]}
    assert sorted(children) == ["conn-1", "conn-2", "conn-3"], "the result covers every connection of the task"
    assert all(c["destination_status"] == "complete" for c in children.values())
    assert "Try 2:" in all_logs.text and "starting only the failed 2 connection(s) again: conn-2, conn-3" in (
        all_logs.text
    )


def test_after_a_rerun_each_connection_names_the_batch_it_ran_in(wdata_conn):
    from airflow_provider_wdata._compat import AIRFLOW_V_3_0_PLUS

    if not AIRFLOW_V_3_0_PLUS:
        pytest.skip("asset event accessors of Airflow 3")
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from airflow_provider_wdata.assets import connection_asset, default_outlets
    from airflow_provider_wdata.openlineage import RUN_FACET_KEY

    wdata_conn.script_connection("conn-2", outcomes=["error", "complete"], error="Sheet locked")
    task = Task()
    with pytest.raises(WdataRefreshFailedError):
        batch_op(["conn-1", "conn-2"]).execute(task.context())
    [first] = list(wdata_conn.batches)
    context = task.context()
    context["outlet_events"] = events = OutletEventAccessors()
    # Declared here: Airflow 3.0 gets no default outlets (see _compat.DEFAULT_OUTLETS).
    operator = batch_op(["conn-1", "conn-2"], outlets=default_outlets(["conn-1", "conn-2"]))
    result = operator.execute(context)
    second = result["batch_refresh_id"]
    assert second != first
    kept = next(c for c in result["child_refreshes"] if c["connection_id"] == "conn-1")
    assert kept["batch_id"] == first, "the kept run names the batch it ran in"
    assert events[connection_asset("conn-1")].extra["batch_id"] == first
    assert events[connection_asset("conn-2")].extra["batch_id"] == second
    facet = operator.get_openlineage_facets_on_complete(None).run_facets[RUN_FACET_KEY]
    assert facet.batchId == second, "the task's batch"
    assert {c["connectionId"]: c["batchId"] for c in facet.connections} == {"conn-1": first, "conn-2": second}


def test_a_retry_reruns_the_cancelled_connections_of_a_batch_cancelled_as_a_whole(wdata_conn):
    # tolerate_cancelled accepts cancelled connections in a batch that succeeds; a batch cancelled as a whole
    # refreshed nothing, so its retry starts them again (not "each of its connections completed").
    for connection_id in ("conn-1", "conn-2"):
        wdata_conn.script_connection(connection_id, outcomes=["cancelled", "complete"])
    task = Task()
    with pytest.raises(WdataRefreshFailedError, match="cancelled"):
        batch_op(["conn-1", "conn-2"], tolerate_cancelled=True).execute(task.context())
    result = batch_op(["conn-1", "conn-2"], tolerate_cancelled=True).execute(task.context())
    assert starts(wdata_conn) == [["conn-1", "conn-2"], ["conn-1", "conn-2"]]
    assert all(c["destination_status"] == "complete" for c in result["child_refreshes"])


def test_a_deferred_rerun_returns_the_whole_picture_too(wdata_conn):
    wdata_conn.script_connection("conn-2", outcomes=["error", "complete"], error="Sheet locked")
    task = Task()
    with pytest.raises(WdataRefreshFailedError):
        batch_op(["conn-1", "conn-2"]).execute(task.context())
    ctx = task.context()
    with pytest.raises(TaskDeferred) as deferred:
        batch_op(["conn-1", "conn-2"], deferrable=True).execute(ctx)
    wait = deferred.value.trigger.make_wait()
    event = wait.run(batch_op(["conn-1"]).hook, logging.getLogger("test"))
    result = batch_op(["conn-1", "conn-2"], deferrable=True).execute_complete(ctx, event)
    assert sorted(c["connection_id"] for c in result["child_refreshes"]) == ["conn-1", "conn-2"]
    assert starts(wdata_conn) == [["conn-1", "conn-2"], ["conn-2"]]


def test_retry_failed_only_false_starts_every_connection_again(wdata_conn):
    wdata_conn.script_connection("conn-2", outcomes=["error", "complete"], error="Sheet locked")
    task = Task()
    with pytest.raises(WdataRefreshFailedError):
        batch_op(["conn-1", "conn-2"], retry_failed_only=False).execute(task.context())
    result = batch_op(["conn-1", "conn-2"], retry_failed_only=False).execute(task.context())
    assert starts(wdata_conn) == [["conn-1", "conn-2"], ["conn-1", "conn-2"]]
    assert len(result["child_refreshes"]) == 2


@pytest.mark.parametrize("how", ["durable=False", "no store"])
def test_without_durability_every_try_starts_again(wdata_conn, how):
    wdata_conn.script_connection("conn-2", outcomes=["error", "complete"], error="Sheet locked")
    task = Task()
    kwargs = {"durable": False} if how == "durable=False" else {}
    with pytest.raises(WdataRefreshFailedError):
        batch_op(["conn-1", "conn-2", "conn-3"], **kwargs).execute(task.context(store=how != "no store"))
    batch_op(["conn-1", "conn-2", "conn-3"], **kwargs).execute(task.context(store=how != "no store"))
    assert starts(wdata_conn) == [["conn-1", "conn-2", "conn-3"]] * 2
    if how == "durable=False":
        assert task.store.values == {}, "nothing recorded"


@pytest.mark.parametrize("stored", ["unknown-batch", "unreadable"])
def test_an_unknown_or_unreadable_record_starts_afresh(wdata_conn, all_logs, stored):
    task = Task()
    if stored == "unknown-batch":
        task.store.set(durable.STORE_KEY, {"connections": [{"connection_id": "conn-1"}], "batch_id": "no-such-batch"})
    else:
        task.store.set(durable.STORE_KEY, ["not", "a", "record"])
    result = batch_op(["conn-1"]).execute(task.context())
    assert result["child_refreshes"][0]["connection_id"] == "conn-1"
    assert starts(wdata_conn) == [["conn-1"]]
    assert "starting afresh" in all_logs.text
    if stored == "unknown-batch":
        assert "batch no-such-batch (connections conn-1) is unknown to Wdata (HTTP 404); starting afresh" in (
            all_logs.text
        )
    assert task.store.get(durable.STORE_KEY)["batch_id"] == result["batch_refresh_id"]


def test_a_cleared_dag_run_starts_afresh(wdata_conn, all_logs):
    task = Task()
    batch_op(["conn-1"]).execute(task.context())
    task.clear_number = 1  # a person cleared the whole DAG run; the store survived (Airflow before 3.5)
    batch_op(["conn-1"]).execute(task.context())
    assert starts(wdata_conn) == [["conn-1"], ["conn-1"]]
    assert "cleared" in all_logs.text
    assert task.store.get(durable.STORE_KEY)["clear_number"] == 1


def test_the_connection_operator_reattaches_returns_and_restarts(wdata_conn, all_logs):
    def op(**kwargs):
        kwargs.setdefault("deferrable", False)
        return WdataRefreshConnectionOperator(
            task_id="one",
            connection_id="conn-3",
            source_parameters={"year": "2026"},
            poll_interval=0.05,
            hook_params=FAST_HOOK,
            **kwargs,
        )

    wdata_conn.script_connection("conn-3", outcomes=["error", "complete"], error="Destination missing")
    task = Task()
    with pytest.raises(WdataRefreshFailedError):
        op().execute(task.context())
    result = op().execute(task.context())
    assert result["destination_status"] == "complete"
    posted = [r.json() for r in wdata_conn.requests if r.method == "POST" and not r.is_token_request]
    assert posted == [{"sourceParameters": {"year": "2026"}}] * 2, "started again with the same fields"
    assert "Try 2:" in all_logs.text
    third = op().execute(task.context())
    assert third["job_id"] == result["job_id"], "a succeeded run is returned, not started again"
    assert len(posted) == 2 == len([r for r in wdata_conn.requests if r.method == "POST" and not r.is_token_request])


def test_a_person_stopping_a_deferred_task_is_told_the_refresh_keeps_running(all_logs):
    import asyncio

    trigger = BatchRefreshTrigger(batch_id="b-42", deadline=2_000_000_000)
    asyncio.run(trigger.on_kill())
    assert "batch_id b-42" in all_logs.text and "keeps running in Wdata" in all_logs.text


def test_parse_time_checks_start_nothing(monkeypatch):
    from airflow_provider_wdata import protocol

    def refuse(*args, **kwargs):
        raise AssertionError("a request was built while the DAG was parsed")

    monkeypatch.setattr(protocol, "start_batch_refresh", refuse)
    monkeypatch.setattr(protocol, "refresh_connection", refuse)
    WdataRefreshBatchOperator(task_id="a", connections=["conn-1"])
    WdataRefreshConnectionOperator(task_id="b", connection_id="conn-1")


@pytest.mark.parametrize(
    "fault",
    [
        Fault(method="GET", path_contains="batch/refresh/", status=403, times=None),
        Fault(method="GET", path_contains="batch/refresh/", status=423, times=None),
        Fault(method="GET", path_contains="batch/refresh/", kind="malformed", times=None),
    ],
    ids=["403", "423", "malformed 200"],
)
def test_a_recorded_batch_that_cannot_be_read_is_not_started_again(wdata_conn, all_logs, fault):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    task = Task()
    with pytest.raises(TaskDeferred):
        batch_op(["conn-1"], deferrable=True).execute(task.context())
    batch_id = task.store.get(durable.STORE_KEY)["batch_id"]
    wdata_conn.add_fault(fault)
    with pytest.raises(WdataError) as failed:
        batch_op(["conn-1"]).execute(task.context())
    assert not isinstance(failed.value, AirflowFailException), "a later retry may read it again"
    assert starts(wdata_conn) == [["conn-1"]], "no second start while in doubt"
    message = str(failed.value)
    assert f"batch {batch_id} (connections conn-1) was started by an earlier try" in message
    assert "Nothing is started again" in message and "let Airflow retry" in message
    assert f"Try 2: batch {batch_id} (connections conn-1) cannot be read; starting nothing" in all_logs.text
    assert task.store.get(durable.STORE_KEY)["batch_id"] == batch_id, "the record is kept for the next retry"


def test_a_recorded_job_that_cannot_be_read_is_not_started_again(wdata_conn):
    def op():
        return WdataRefreshConnectionOperator(
            task_id="one", connection_id="conn-3", deferrable=True, poll_interval=0.05, hook_params=FAST_HOOK
        )

    wdata_conn.script_connection("conn-3", outcome="stuck")
    task = Task()
    with pytest.raises(TaskDeferred):
        op().execute(task.context())
    job_id = task.store.get(durable.STORE_KEY)["job_id"]
    wdata_conn.add_fault(Fault(method="GET", path_contains="/status", status=403, times=None))
    with pytest.raises(WdataError, match=f"refresh {job_id} of connection conn-3 was started by an earlier try"):
        op().execute(task.context())
    assert len(starts(wdata_conn)) == 1


def test_a_failed_store_write_never_lets_a_retry_start_the_refresh_again(wdata_conn, all_logs):
    wdata_conn.script_connection("conn-2", outcomes=["error", "complete"], error="Sheet locked")
    task = Task()
    task.store = StoreThatFailsToSet(execution_api_failure())
    ctx = task.context()
    with pytest.raises(WdataRefreshNotRecordedError) as failed:
        batch_op(["conn-1", "conn-2"], deferrable=True).execute(ctx)
    assert isinstance(failed.value, AirflowFailException), "Airflow must not retry into a second start"
    assert isinstance(failed.value.__cause__, WdataRefreshFailedError)
    batch_id = ctx["ti"].xcom["batch_refresh_id"]
    assert f"Wdata batch {batch_id} (connections conn-1, conn-2) started, but the task state store" in str(failed.value)
    assert "Sheet locked" in str(failed.value) and "Airflow does not retry this task" in str(failed.value)
    assert f"batch {batch_id} (connections conn-1, conn-2) started, but the task state store did not" in (all_logs.text)
    assert starts(wdata_conn) == [["conn-1", "conn-2"]]


def test_a_failed_store_write_still_follows_the_refresh_to_its_success(wdata_conn):
    task = Task()
    task.store = StoreThatFailsToSet(execution_api_failure())
    ctx = task.context()
    result = batch_op(["conn-1"], deferrable=True).execute(ctx)  # waits in the worker: no TaskDeferred
    assert result["batch_refresh_id"] == ctx["ti"].xcom["batch_refresh_id"]
    assert result["child_refreshes"][0]["destination_status"] == "complete"
    assert starts(wdata_conn) == [["conn-1"]]


def test_an_execution_timeout_while_following_an_unrecorded_refresh_is_not_retried(wdata_conn, monkeypatch):
    try:
        from airflow.sdk.exceptions import AirflowTaskTimeout  # a BaseException on Airflow 3, which retries it
    except ImportError:
        from airflow.exceptions import AirflowTaskTimeout

    class TimedOutWait:
        def run(self, hook, log):
            raise AirflowTaskTimeout("execution_timeout reached")

    monkeypatch.setattr(BatchRefreshTrigger, "make_wait", lambda trigger: TimedOutWait())
    task = Task()
    task.store = StoreThatFailsToSet(execution_api_failure())
    with pytest.raises(WdataRefreshNotRecordedError, match="execution_timeout reached"):
        batch_op(["conn-1"]).execute(task.context())
    assert starts(wdata_conn) == [["conn-1"]]


def test_an_unexpected_store_error_fails_for_good_and_is_not_swallowed(wdata_conn):
    task = Task()
    task.store = StoreThatFailsToSet(TypeError("Object of type Decimal is not JSON serializable"))
    with pytest.raises(WdataRefreshNotRecordedError, match="failed unexpectedly \\(TypeError") as failed:
        batch_op(["conn-1"]).execute(task.context())
    assert isinstance(failed.value.__cause__, TypeError)
    assert starts(wdata_conn) == [["conn-1"]]


ABORTED_CONNECTIONS = ["conn-1", "conn-2", "conn-3"]


def task_that_started_b_aborted() -> Task:
    """A task whose earlier try started batch ``b-aborted`` of :data:`ABORTED_CONNECTIONS`."""
    task = Task()
    record = {"connections": [{"connection_id": c} for c in ABORTED_CONNECTIONS], "batch_id": "b-aborted"}
    task.store.set(durable.STORE_KEY, record)
    return task


def running_child_batch(batch_id: str, conn_2_status: str) -> dict:
    """A batch that failed on its own while conn-3 is still running (conn-2: ``conn_2_status``)."""

    def child(connection_id: str, status: str) -> dict:
        return {
            "connectionId": connection_id,
            "jobId": f"job-{connection_id}",
            "sourceStatus": status,
            "destinationStatus": status,
        }

    return {
        "batchRefreshId": batch_id,
        "sourceStatus": "error",
        "destinationStatus": "error",
        "error": "Batch aborted",
        "childRefreshes": [
            child("conn-1", "complete"),
            child("conn-2", conn_2_status),
            {**child("conn-3", "running"), "sourceStatus": "complete"},
        ],
    }


@pytest.mark.parametrize("conn_2_status", ["error", "not_started"])
def test_a_failed_batch_with_connections_still_running_starts_nothing(wdata_conn, all_logs, conn_2_status):
    connections, task = ABORTED_CONNECTIONS, task_that_started_b_aborted()
    wdata_conn.put_raw_batch("b-aborted", running_child_batch("b-aborted", conn_2_status))
    with pytest.raises(WdataError) as failed:
        batch_op(connections).execute(task.context())
    assert not isinstance(failed.value, AirflowFailException), "a later retry finds them ended"
    assert starts(wdata_conn) == []
    running = "conn-2, conn-3" if conn_2_status == "not_started" else "conn-3"
    assert f"connection(s) {running} of it are still running in Wdata" in str(failed.value)
    assert "batch refresh b-aborted failed (source=error" in str(failed.value)
    assert f"ended badly, but {running} still run in Wdata; starting nothing" in all_logs.text


def test_once_the_running_connections_ended_a_retry_reruns_only_the_failed_one(wdata_conn):
    connections, task = ABORTED_CONNECTIONS, task_that_started_b_aborted()
    body = running_child_batch("b-aborted", "error")
    wdata_conn.put_raw_batch("b-aborted", body)
    with pytest.raises(WdataError):
        batch_op(connections).execute(task.context())
    body["childRefreshes"][2].update(destinationStatus="complete")
    wdata_conn.put_raw_batch("b-aborted", body)
    result = batch_op(connections).execute(task.context())
    assert starts(wdata_conn) == [["conn-2"]]
    assert sorted(c["connection_id"] for c in result["child_refreshes"]) == connections


def test_a_failed_batch_whose_connections_all_completed_starts_nothing(wdata_conn, all_logs):
    connections, task = ABORTED_CONNECTIONS, task_that_started_b_aborted()
    body = running_child_batch("b-aborted", "complete")
    body["childRefreshes"][2].update(destinationStatus="complete")
    wdata_conn.put_raw_batch("b-aborted", body)
    with pytest.raises(WdataNothingToRerunError, match="yet each of its connections completed, so none") as failed:
        batch_op(connections).execute(task.context())
    assert starts(wdata_conn) == [], "every connection was refreshed once already"
    assert isinstance(failed.value, AirflowFailException), "a later retry would find the same: none is spent on it"
    assert "though each of its connections completed; starting nothing" in all_logs.text


def test_a_retry_reruns_the_connections_a_failed_batch_never_listed(wdata_conn):
    connections, task = ABORTED_CONNECTIONS, task_that_started_b_aborted()
    body = running_child_batch("b-aborted", "complete")
    del body["childRefreshes"][2]  # the batch failed before it started conn-3
    wdata_conn.put_raw_batch("b-aborted", body)
    result = batch_op(connections).execute(task.context())
    assert starts(wdata_conn) == [["conn-3"]], "only the one the batch never started"
    assert sorted(c["connection_id"] for c in result["child_refreshes"]) == connections


def test_a_second_rerun_starts_only_what_failed_again(wdata_conn):
    # conn-2 fails in the first batch and in its rerun; conn-1 and conn-3 completed in the first one.
    wdata_conn.script_connection("conn-2", outcomes=["error", "error", "complete"], error="Sheet locked")
    connections = ["conn-1", "conn-2", "conn-3"]
    task = Task()
    for _ in range(2):
        with pytest.raises(WdataRefreshFailedError):
            batch_op(connections).execute(task.context())
    result = batch_op(connections).execute(task.context())
    assert starts(wdata_conn) == [connections, ["conn-2"], ["conn-2"]], "conn-1 and conn-3 were refreshed once"
    assert sorted(c["connection_id"] for c in result["child_refreshes"]) == connections, "each of them once"
