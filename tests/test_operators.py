"""WdataRefreshBatchOperator and WdataRefreshConnectionOperator against the simulator."""

from __future__ import annotations

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_wdata.exceptions import (
    WdataConfigError,
    WdataRefreshFailedError,
    WdataRefreshMayHaveStartedError,
    WdataRefreshTimeoutError,
)
from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator, WdataRefreshConnectionOperator
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger, ConnectionRefreshTrigger

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2}


class FakeTaskInstance:
    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def context() -> dict:
    return {"ti": FakeTaskInstance()}


def batch_op(connections, **kwargs) -> WdataRefreshBatchOperator:
    kwargs.setdefault("deferrable", False)
    return WdataRefreshBatchOperator(
        task_id="refresh", connections=connections, poll_interval=0.05, hook_params=FAST_HOOK, **kwargs
    )


def posts(sim) -> int:
    return sum(1 for r in sim.requests if r.method == "POST" and not r.is_token_request)


@pytest.mark.parametrize(
    ("connections", "message"),
    [
        ([], "1 to 100 connections; got 0"),
        ([f"c{i}" for i in range(101)], "got 101"),
        (["conn-1", "conn-1"], "more than once"),
        ([{"connection_id": "conn-1", "sourceParameters": {}}], "unknown key"),
        ([{"connection_id": "conn-1", "source_parameters": "year=2026"}], "must be a dict"),
        ([{"connection_id": "conn-1", "use_previous_source_parameters": "yes"}], "true or false"),
        ([42], "not int"),
        ("conn-1", "must be a list"),
        ([{"source_parameters": {}}], "connection_id must be a non-empty string"),
    ],
)
def test_bad_connections_are_refused_when_the_dag_is_parsed(connections, message):
    with pytest.raises(WdataConfigError, match=message):
        batch_op(connections)


def test_bad_rendered_connections_are_refused_before_any_request(wdata_conn):
    op = batch_op("{{ params.connections }}")
    op.connections = ["conn-1", "conn-1"]  # as rendered
    with pytest.raises(WdataConfigError, match="more than once"):
        op.execute(context())
    assert wdata_conn.requests == []


def test_starts_pushes_the_batch_id_at_once_and_returns_the_batch(wdata_conn, all_logs):
    ctx = context()
    result = batch_op(["conn-1", {"connection_id": "conn-2", "use_previous_source_parameters": True}]).execute(ctx)
    batch_id = ctx["ti"].xcom["batch_refresh_id"]
    assert list(wdata_conn.batches) == [batch_id]
    assert result["batch_refresh_id"] == batch_id
    assert all(c["source_status"] == "complete" for c in result["child_refreshes"])
    log = all_logs.text
    assert f"Started Wdata batch refresh {batch_id} of 2 connections" in log
    assert "connection conn-2 (job" in log, "one line per child at the end"


def test_without_waiting_returns_the_batch_id(wdata_conn):
    ctx = context()
    assert batch_op(["conn-1"], wait_for_completion=False).execute(ctx) == ctx["ti"].xcom["batch_refresh_id"]
    assert sum(1 for r in wdata_conn.requests if r.method == "GET") == 0


def test_failure_is_raised_after_the_batch_id_was_pushed(wdata_conn):
    wdata_conn.script_connection("conn-2", outcome="error", error="Spreadsheet deleted")
    ctx = context()
    with pytest.raises(WdataRefreshFailedError, match="Spreadsheet deleted"):
        batch_op(["conn-1", "conn-2"]).execute(ctx)
    assert ctx["ti"].xcom["batch_refresh_id"] in wdata_conn.batches


def test_timeout_while_polling(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="stuck")
    with pytest.raises(WdataRefreshTimeoutError, match="still running"):
        batch_op(["conn-1"], timeout=0.3).execute(context())


def test_deferrable_pushes_then_defers(wdata_conn):
    ctx = context()
    with pytest.raises(TaskDeferred) as info:
        batch_op(["conn-1"], deferrable=True, timeout=120).execute(ctx)
    trigger = info.value.trigger
    assert isinstance(trigger, BatchRefreshTrigger)
    assert trigger.batch_id == ctx["ti"].xcom["batch_refresh_id"]
    assert info.value.method_name == "execute_complete"


@pytest.mark.parametrize(
    "fault",
    [
        Fault(method="POST", path_contains="batch/refresh", status=500),
        Fault(method="POST", path_contains="batch/refresh", status=504),
        Fault(method="POST", path_contains="batch/refresh", kind="drop"),
    ],
    ids=["500", "504", "dropped"],
)
def test_never_starts_twice_under_ambiguous_faults(wdata_conn, fault):
    wdata_conn.add_fault(fault)
    ctx = context()
    with pytest.raises(WdataRefreshMayHaveStartedError):
        batch_op(["conn-1"]).execute(ctx)
    assert posts(wdata_conn) == 1
    assert ctx["ti"].xcom == {}


def test_start_retried_when_certainly_not_accepted(wdata_conn):
    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", status=503, headers={"Retry-After": "1"}))
    batch_op(["conn-1"], wait_for_completion=False).execute(context())
    assert posts(wdata_conn) == 2
    assert len(wdata_conn.batches) == 1


def test_refresh_connection_operator(wdata_conn):
    ctx = context()
    op = WdataRefreshConnectionOperator(
        task_id="one", connection_id="conn-2", poll_interval=0.05, deferrable=False, source_parameters={"y": 1}
    )
    result = op.execute(ctx)
    assert result["job_id"] == ctx["ti"].xcom["job_id"]
    post = next(r for r in wdata_conn.requests if r.method == "POST" and not r.is_token_request)
    assert post.json() == {"sourceParameters": {"y": 1}}
    with pytest.raises(TaskDeferred) as info:
        WdataRefreshConnectionOperator(task_id="one", connection_id="conn-2", deferrable=True).execute(ctx)
    assert isinstance(info.value.trigger, ConnectionRefreshTrigger)


def test_refresh_connection_failure_is_surfaced(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="error", error="Token for source expired")
    op = WdataRefreshConnectionOperator(task_id="one", connection_id="conn-1", poll_interval=0.05, deferrable=False)
    with pytest.raises(WdataRefreshFailedError, match="Token for source expired"):
        op.execute(context())


def test_connection_operator_checks_its_arguments_when_the_dag_is_parsed():
    with pytest.raises(WdataConfigError, match="connection_id"):
        WdataRefreshConnectionOperator(task_id="one", connection_id="../x")
    with pytest.raises(WdataConfigError, match="must be a dict"):
        WdataRefreshConnectionOperator(task_id="one", connection_id="c", source_parameters="year=2026")
    WdataRefreshConnectionOperator(task_id="one", connection_id="{{ params.connection }}")


def test_a_start_that_may_have_happened_is_not_retried_by_airflow_either(wdata_conn):
    from airflow_provider_wdata._compat import AirflowFailException

    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", status=500))
    with pytest.raises(AirflowFailException, match="may have started"):  # Airflow fails such a task without retry
        batch_op(["conn-1"]).execute(context())


def test_tolerate_cancelled_accepts_what_cancel_unwritables_cancelled(wdata_conn):
    # The service says why it cancelled the child (an error text): it is cancelled, not failed.
    wdata_conn.script_connection("conn-2", outcome="unwritable")
    result = batch_op(["conn-1", "conn-2"], cancel_unwritables=True, tolerate_cancelled=True).execute(context())
    cancelled = next(c for c in result["child_refreshes"] if c["connection_id"] == "conn-2")
    assert cancelled["destination_status"] == "cancelled" and "cancelUnwritables" in cancelled["error"]
    with pytest.raises(WdataRefreshFailedError, match="pass tolerate_cancelled=True to accept them"):
        batch_op(["conn-1", "conn-2"], cancel_unwritables=True).execute(context())


def test_tolerate_cancelled_accepts_a_cancelled_connection_refresh(wdata_conn):
    wdata_conn.script_connection("conn-1", outcome="cancelled")
    op = WdataRefreshConnectionOperator(
        task_id="one", connection_id="conn-1", poll_interval=0.05, deferrable=False, tolerate_cancelled=True
    )
    assert op.execute(context())["destination_status"] == "cancelled"
    with pytest.raises(WdataRefreshFailedError, match="cancelled"):
        WdataRefreshConnectionOperator(
            task_id="one", connection_id="conn-1", poll_interval=0.05, deferrable=False
        ).execute(context())


@pytest.mark.parametrize(("map_index", "warned"), [(0, True), (-1, False)])
def test_a_mapped_task_without_outlets_is_told_it_emits_no_asset_events(wdata_conn, all_logs, map_index, warned):
    # A mapped task runs with the outlets of its partial() (none by default): emit_assets could not declare them.
    ctx = context()
    ctx["ti"].map_index = map_index
    batch_op(["conn-1"], outlets=[]).execute(ctx)
    assert ("this mapped task declares no outlets" in all_logs.text) is warned
    assert ("outlets=default_outlets([...]) to partial()" in all_logs.text) is warned
