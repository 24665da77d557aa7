"""End-to-end: the provider's DAGs run through a real Airflow (api-server, scheduler, dag-processor and
triggerer as separate processes, LocalExecutor on SQLite) against the Wdata simulator over HTTP.

One Airflow is shared by the module (see ``cluster.py``); each test triggers its DAG runs through the REST API
and checks what Airflow recorded against what the simulator saw. The triggerer-restart test kills the triggerer
for real and starts a new one.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_wdata.testing import RecordedRequest, WdataSimulator

from .cluster import EXAMPLE_DAGS_DIR, TEST_DAGS_DIR, AirflowCluster, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        int(version("apache-airflow").split(".")[0]) < 3,
        reason="the e2e harness runs Airflow 3 components (api-server, dag-processor)",
    ),
]

BATCH_TRIGGER = "airflow_provider_wdata.triggers.wdata.BatchRefreshTrigger"
#: A client secret only these tests know: it must not show in any log Airflow writes.
CLIENT_SECRET = f"e2e-secret-{secrets.token_hex(12)}"
FAILING_CONNECTION = "conn-e2e-fail"
SLOW_CONNECTION = "conn-e2e-slow"
ERROR_TEXT = "Source file quarterly-close.xlsx was not found (e2e)"
#: Status reads the slow connection needs to finish: the triggerer restart must happen well before that.
SLOW_POLLS = 14
RESTART_SENSOR_TIMEOUT = 600  # the sensor's timeout in dags/e2e_triggerer_restart.py


@pytest.fixture(scope="module")
def simulator() -> Iterator[WdataSimulator]:
    # Three status reads to finish: the sensor's check before deferring is one, so the trigger reads at least twice.
    sim = WdataSimulator(client_secret=CLIENT_SECRET, polls_to_finish=3)
    # Destinations other than "spreadsheet", so that wdata_refresh_by_destination does not pick them.
    sim.add_connection(FAILING_CONNECTION, destination_type="wdata_table")
    sim.add_connection(SLOW_CONNECTION, destination_type="wdata_table")
    with sim:
        yield sim


@pytest.fixture(scope="module")
def cluster(simulator: WdataSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    example_dags = sorted(EXAMPLE_DAGS_DIR.glob("*.py"))
    test_dags = sorted(TEST_DAGS_DIR.glob("*.py"))
    airflow = AirflowCluster(tmp_path_factory.mktemp("airflow-e2e"), simulator, [*example_dags, *test_dags])

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # pytest then still runs the teardown below

    previous = signal.signal(signal.SIGTERM, interrupted)  # e.g. a CI timeout: do not leave Airflow running
    try:
        airflow.start(dag_ids=[path.stem for path in [*example_dags, *test_dags]])
        yield airflow
    finally:
        airflow.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, cluster: AirflowCluster) -> Iterator[None]:
    """When a test fails, print the tail of every component's output and of its runs' task logs."""
    first_run = len(cluster.runs)
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"Airflow home: {cluster.home}")
        print(cluster.tails(runs=cluster.runs[first_run:], lines=80))


# ---------------------------------------------------------------------------------------------- helpers


def batch_reads(simulator: WdataSimulator, batch_id: str) -> list[RecordedRequest]:
    return [r for r in simulator.requests if r.method == "GET" and r.path.endswith(f"/batch/refresh/{batch_id}")]


def batch_starts(simulator: WdataSimulator) -> list[RecordedRequest]:
    return [r for r in simulator.requests if r.method == "POST" and r.path.endswith("/batch/refresh")]


def states(tis: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    return {task_id: ti["state"] for task_id, ti in tis.items()}


def assert_batch_complete(summary: dict[str, Any], batch_id: str, connection_ids: list[str]) -> None:
    assert summary["batch_refresh_id"] == batch_id
    assert (summary["source_status"], summary["destination_status"]) == ("complete", "complete"), summary
    children = summary["child_refreshes"]
    assert sorted(child["connection_id"] for child in children) == sorted(connection_ids)
    for child in children:
        assert (child["source_status"], child["destination_status"], child["error"]) == ("complete", "complete", None)


class StateRecorder:
    """Collects, per task, the sequence of states and the triggers seen while a run is polled."""

    def __init__(self) -> None:
        self.states: dict[str, list[str | None]] = {}
        self.triggers: dict[str, dict[str, Any]] = {}

    def __call__(self, tis: dict[str, dict[str, Any]]) -> None:
        for task_id, ti in tis.items():
            seen = self.states.setdefault(task_id, [])
            if not seen or seen[-1] != ti["state"]:
                seen.append(ti["state"])
            if ti.get("trigger"):
                self.triggers[task_id] = ti["trigger"]


# ---------------------------------------------------------------------------------------------- tests


def test_batch_example_defers_to_the_triggerer_and_succeeds(cluster: AirflowCluster, simulator: WdataSimulator):
    dag_id = "wdata_refresh_batch"
    batches_before = set(simulator.batches)
    run_id = cluster.trigger_dag(dag_id)
    recorder = StateRecorder()

    run = cluster.wait_for_run(dag_id, run_id, on_poll=recorder)

    assert run["state"] == "success"
    assert states(cluster.task_instances(dag_id, run_id)) == {"start_refresh": "success", "wait_for_refresh": "success"}
    # The sensor waited in the triggerer: it was seen deferred, on the provider's trigger...
    assert "deferred" in recorder.states["wait_for_refresh"], recorder.states
    assert recorder.triggers["wait_for_refresh"]["classpath"] == BATCH_TRIGGER
    # ...the batch the start task pushed is the one batch the simulator started...
    batch_id = cluster.xcom(dag_id, run_id, "start_refresh", key="batch_refresh_id")
    assert set(simulator.batches) - batches_before == {batch_id}
    batch = simulator.batches[batch_id]
    assert [child.connection_id for child in batch.children] == ["conn-1", "conn-2", "conn-3"]
    # ...and the trigger polled it from the triggerer, writing the trigger log Airflow keeps next to the task's.
    trigger_logs = cluster.trigger_log_files(dag_id, run_id, "wait_for_refresh")
    assert trigger_logs, f"no trigger log in {cluster.task_logs_dir}"
    trigger_text = "\n".join(path.read_text(errors="replace") for path in trigger_logs)
    assert f"batch refresh {batch_id} still running" in trigger_text
    assert len(batch_reads(simulator, batch_id)) >= 3  # one check by the sensor, the rest by the trigger

    summary = cluster.xcom(dag_id, run_id, "wait_for_refresh")
    assert_batch_complete(summary, batch_id, ["conn-1", "conn-2", "conn-3"])
    assert {child["job_id"] for child in summary["child_refreshes"]} == {child.job_id for child in batch.children}


def test_failed_child_fails_the_sensor_naming_the_connection_and_error(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    dag_id = "e2e_batch_fails"
    simulator.script_connection(FAILING_CONNECTION, outcome="error", error=ERROR_TEXT)
    run_id = cluster.trigger_dag(dag_id)
    recorder = StateRecorder()

    run = cluster.wait_for_run(dag_id, run_id, on_poll=recorder)

    assert run["state"] == "failed"
    tis = cluster.task_instances(dag_id, run_id)
    assert states(tis) == {"start_refresh": "success", "wait_for_refresh": "failed"}
    assert "deferred" in recorder.states["wait_for_refresh"], recorder.states
    batch_id = cluster.xcom(dag_id, run_id, "start_refresh", key="batch_refresh_id")
    failed_job = next(c.job_id for c in simulator.batches[batch_id].children if c.connection_id == FAILING_CONNECTION)

    log = cluster.task_log(dag_id, run_id, "wait_for_refresh", tis["wait_for_refresh"]["try_number"])
    assert FAILING_CONNECTION in log
    assert ERROR_TEXT in log
    assert f"connection {FAILING_CONNECTION} (job {failed_job}) failed" in log
    assert "WdataRefreshFailedError" in log
    assert "connection conn-1 (job" not in log  # the complete child is not reported as failed


def test_other_example_dags_succeed(cluster: AirflowCluster, simulator: WdataSimulator):
    dag_ids = ["wdata_refresh_connection", "wdata_refresh_by_destination", "wdata_refresh_batch_and_wait"]
    runs = {dag_id: cluster.trigger_dag(dag_id) for dag_id in dag_ids}  # all at once: they mostly wait deferred

    ended = {dag_id: cluster.wait_for_run(dag_id, run_id, timeout=120)["state"] for dag_id, run_id in runs.items()}

    assert ended == dict.fromkeys(dag_ids, "success")

    # One connection refreshed on its own; the job id in XCom is the refresh the simulator ran.
    run_id = runs["wdata_refresh_connection"]
    job_id = cluster.xcom("wdata_refresh_connection", run_id, "refresh_connection", key="job_id")
    sim_run = simulator.runs[("conn-1", job_id)]
    assert sim_run.batch_id is None
    assert (sim_run.source_status, sim_run.destination_status) == ("complete", "complete")
    result = cluster.xcom("wdata_refresh_connection", run_id, "refresh_connection")
    assert (result["job_id"], result["source_status"], result["destination_status"]) == (job_id, "complete", "complete")

    # The custom operator batches exactly the connections that write to spreadsheets.
    run_id = runs["wdata_refresh_by_destination"]
    batch_id = cluster.xcom("wdata_refresh_by_destination", run_id, "start_refresh")
    assert sorted(c.connection_id for c in simulator.batches[batch_id].children) == ["conn-1", "conn-2"]
    summary = cluster.xcom("wdata_refresh_by_destination", run_id, "wait_for_refresh")
    assert_batch_complete(summary, batch_id, ["conn-1", "conn-2"])

    # Start and wait in one deferrable task.
    run_id = runs["wdata_refresh_batch_and_wait"]
    batch_id = cluster.xcom("wdata_refresh_batch_and_wait", run_id, "refresh_spreadsheet", key="batch_refresh_id")
    summary = cluster.xcom("wdata_refresh_batch_and_wait", run_id, "refresh_spreadsheet")
    assert_batch_complete(summary, batch_id, ["conn-1", "conn-2"])
    assert simulator.batches[batch_id].cancel_unwritables is True


def test_killed_triggerer_is_replaced_and_the_wait_resumes_with_its_deadline(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    dag_id, sensor = "e2e_triggerer_restart", "wait_for_refresh"
    simulator.script_connection(SLOW_CONNECTION, polls_to_finish=SLOW_POLLS)
    starts_before = len(batch_starts(simulator))
    batches_before = set(simulator.batches)
    run_id = cluster.trigger_dag(dag_id)

    def new_batch_id() -> str | None:
        new = set(simulator.batches) - batches_before
        return next(iter(new)) if new else None

    def trigger_polling() -> dict[str, Any] | None:
        """The sensor's trigger, once a triggerer runs it and it has read the batch at least twice."""
        cluster.check_alive()
        ti = cluster.task_instances(dag_id, run_id).get(sensor) or {}
        assert ti.get("state") not in ("success", "failed"), f"the sensor ended before the restart: {ti}"
        trigger = ti.get("trigger") or {}
        batch_id = new_batch_id()
        if ti.get("state") != "deferred" or trigger.get("triggerer_id") is None or batch_id is None:
            return None
        return trigger if len(batch_reads(simulator, batch_id)) >= 3 else None

    trigger = wait_for(trigger_polling, 90, "the trigger to poll from the triggerer", details=cluster.tails)
    batch_id = new_batch_id()
    assert batch_id is not None
    trigger_id, first_triggerer = trigger["id"], trigger["triggerer_id"]
    assert trigger["classpath"] == BATCH_TRIGGER
    original = cluster.trigger_kwargs(trigger_id)
    assert original is not None and CLIENT_SECRET not in json.dumps(original, default=str)
    assert original is not None and original["batch_id"] == batch_id
    deadline = original["deadline"]

    cluster.kill_component("triggerer")
    killed_wall, killed_at = time.time(), time.monotonic()
    reads_at_kill = len(batch_reads(simulator, batch_id))
    try:
        # The refresh is still going and the task still deferred; the trigger row outlived its triggerer.
        assert reads_at_kill < SLOW_POLLS
        assert simulator.batch_body(batch_id)["sourceStatus"] == "running"
        assert cluster.task_instances(dag_id, run_id)[sensor]["state"] == "deferred"
        assert cluster.trigger_kwargs(trigger_id) == original

        cluster.restart_triggerer()

        def taken_over() -> dict[str, Any] | None:
            cluster.check_alive()
            ti = cluster.task_instances(dag_id, run_id)[sensor]
            assert ti["state"] == "deferred", f"the sensor left deferred before a new triggerer took over: {ti}"
            current = ti.get("trigger") or {}
            return current if current.get("triggerer_id") not in (None, first_triggerer) else None

        resumed = wait_for(taken_over, 90, "a new triggerer to take the trigger over", details=cluster.tails)
        assert resumed["id"] == trigger_id  # the same trigger row, not a new deferral
        assert cluster.trigger_kwargs(trigger_id) == original  # same batch, same absolute deadline

        run = cluster.wait_for_run(dag_id, run_id, timeout=90)
    finally:
        if not cluster.components["triggerer"].alive:  # leave a triggerer for the tests that follow
            cluster.restart_triggerer()

    assert run["state"] == "success"
    assert states(cluster.task_instances(dag_id, run_id)) == {"start_refresh": "success", sensor: "success"}
    # The new triggerer did the remaining reads; the deadline is the one set before the kill, not a new one.
    reads = batch_reads(simulator, batch_id)
    assert any(r.at > killed_at for r in reads), "no status read after the triggerer was killed"
    assert len(reads) >= SLOW_POLLS
    assert killed_wall + RESTART_SENSOR_TIMEOUT - 120 < deadline <= killed_wall + RESTART_SENSOR_TIMEOUT
    # No second batch: the restart resumed the wait, it did not start the refresh again.
    assert len(batch_starts(simulator)) == starts_before + 1
    assert [b for b in simulator.batches.values() if b.children[0].connection_id == SLOW_CONNECTION] == [
        simulator.batches[batch_id]
    ]
    summary = cluster.xcom(dag_id, run_id, sensor)
    assert_batch_complete(summary, batch_id, [SLOW_CONNECTION])


def test_no_secret_or_token_in_any_airflow_log(cluster: AirflowCluster, simulator: WdataSimulator):
    if not cluster.runs:  # run alone: make Airflow use the connection once
        dag_id = "wdata_refresh_batch_and_wait"
        assert cluster.wait_for_run(dag_id, cluster.trigger_dag(dag_id))["state"] == "success"
    tokens = simulator.issued_tokens
    assert tokens, "Airflow never fetched a token"
    files = cluster.all_log_files()
    assert any(".log.trigger." in path.name for path in files), "no trigger log to check"
    assert any(path.parent == cluster.output_dir for path in files), "no component output to check"
    leaks: list[str] = []
    for path in files:
        text = path.read_text(errors="replace")
        if CLIENT_SECRET in text:
            leaks.append(f"the client secret in {Path(path).relative_to(cluster.root)}")
        leaked = sum(1 for token in tokens if token in text)
        if leaked:
            leaks.append(f"{leaked} token(s) in {Path(path).relative_to(cluster.root)}")
    stored = {
        "XCom values": [row[0] for row in cluster.query("SELECT value FROM xcom")],
        "rendered template fields": [
            row[0] for row in cluster.query("SELECT rendered_fields FROM rendered_task_instance_fields")
        ],
        "trigger kwargs": [
            json.dumps(cluster.trigger_kwargs(row[0]), default=str) for row in cluster.query("SELECT id FROM trigger")
        ],
    }
    assert stored["XCom values"] and stored["rendered template fields"], "nothing stored to check"
    for what, values in stored.items():
        text = "\n".join(str(value) for value in values)
        if CLIENT_SECRET in text or any(token in text for token in tokens):
            leaks.append(f"a secret in the {what}")
    assert not leaks, "; ".join(leaks)  # never the secret or a token itself in the message
