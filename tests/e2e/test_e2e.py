"""End-to-end: the provider's DAGs run through a real Airflow (api-server, scheduler, dag-processor and
triggerer as separate processes, LocalExecutor on SQLite) against the Wdata simulator over HTTP.

One Airflow is shared by the module (see ``cluster.py``); each test triggers its DAG runs through the REST API
and checks what Airflow recorded against what the simulator saw. The triggerer-restart tests kill the triggerer
for real and start a new one: while a sensor waits on a batch an earlier task started, and while a deferrable
operator waits on the batch it started itself (which must then still have started once).

After every test, everything the cluster wrote so far (component, task and trigger logs; every table of its
airflow.db, encrypted values decrypted; the kwargs of every trigger row seen while the test polled) is scanned
for the client secret and the issued tokens, and handed to the session's canary scan (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_wdata.durable import STORE_KEY
from airflow_provider_wdata.testing import RecordedRequest, WdataSimulator
from tests.conftest import airflow_db_text, leaks_in, register_secret, scan_text

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
SLOW_OPERATOR_CONNECTION = "conn-e2e-slow-operator"  # as in dags/e2e_refresh_and_wait_restart.py
ERROR_TEXT = "Source file quarterly-close.xlsx was not found (e2e)"
#: The connections of the durable-retry, lineage and start_from_trigger DAGs (each used by one test only).
KILL_CONNECTION = "conn-e2e-durable-kill"  # dags/e2e_durable_kill.py
RERUN_OK, RERUN_FAIL = "conn-e2e-rerun-ok", "conn-e2e-rerun-fail"  # dags/e2e_durable_rerun.py
CLEAR_CONNECTIONS = ["conn-e2e-clear-1", "conn-e2e-clear-2"]  # dags/e2e_durable_clear.py
LINEAGE_CONNECTION, LINEAGE_OTHER = "conn-e2e-lineage", "conn-e2e-lineage-other"  # dags/e2e_lineage_refresh.py
FROM_TRIGGER_CONNECTION = "conn-e2e-from-trigger"  # dags/e2e_start_from_trigger.py
OWN_CONNECTIONS = [
    KILL_CONNECTION,
    RERUN_OK,
    RERUN_FAIL,
    *CLEAR_CONNECTIONS,
    LINEAGE_CONNECTION,
    LINEAGE_OTHER,
    FROM_TRIGGER_CONNECTION,
]
KILL_POLLS = 8  # status reads the killed task's batch needs: the kill comes after two
RERUN_ERROR = "Source file rerun.xlsx was not found (e2e)"
LINEAGE_ERROR = "Source file lineage.xlsx was not found (e2e)"
FROM_TRIGGER_POLLS = 5
#: The sensor's batch_id in dags/e2e_start_from_trigger.py (see there why map_indexes=-1).
FROM_TRIGGER_BATCH_ID_TEMPLATE = "{{ ti.xcom_pull(task_ids='start', key='batch_refresh_id', map_indexes=-1) }}"
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
    sim.add_connection(SLOW_OPERATOR_CONNECTION, destination_type="wdata_table")
    for connection_id in OWN_CONNECTIONS:  # one set per scenario below, as named in its DAG file
        sim.add_connection(connection_id, destination_type="wdata_table")
    register_secret(CLIENT_SECRET)  # the session's canary scan looks for this secret too
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
        for source, text in produced_by(airflow).items():  # into the session's canary scan
            scan_text(f"e2e cluster: {source}", text)


def produced_by(cluster: AirflowCluster) -> dict[str, str]:
    """Everything the cluster wrote so far, by where: each log file, its airflow.db, the trigger kwargs seen."""
    produced = {
        str(path.relative_to(cluster.root)): path.read_text(errors="replace") for path in cluster.all_log_files()
    }
    if cluster.db_path.exists():
        produced["airflow.db"] = airflow_db_text(cluster.db_path, cluster.fernet_key)
    produced["trigger kwargs seen while polling"] = "\n".join(cluster.seen_trigger_kwargs.values())
    return produced


@pytest.fixture(autouse=True)
def nothing_secret_written(cluster: AirflowCluster, simulator: WdataSimulator) -> Iterator[None]:
    """After each scenario: neither the secret nor a token in anything the cluster wrote or stored so far."""
    yield
    tokens = simulator.issued_tokens
    leaks = [
        f"{', '.join(found)} in {source}"
        for source, text in produced_by(cluster).items()
        if (found := leaks_in(text, tokens=tokens))
    ]
    assert not leaks, "; ".join(leaks)  # never the secret or a token itself in the message


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


def starts_of(simulator: WdataSimulator, connection_id: str) -> list[RecordedRequest]:
    """The batch starts whose body names ``connection_id``."""
    return [r for r in batch_starts(simulator) if connection_id in {c.get("connectionId") for c in r.json()}]


def assert_deferred(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> str:
    """The task deferred and a triggerer ran its trigger: the trigger log Airflow writes next to the task's only
    exists then. Returns its text."""
    files = cluster.trigger_log_files(dag_id, run_id, task_id)
    assert files, f"{dag_id}.{task_id} never ran a trigger in the triggerer (no trigger log in {cluster.task_logs_dir})"
    text = "\n".join(path.read_text(errors="replace") for path in files)
    assert text.strip(), f"the trigger log of {dag_id}.{task_id} is empty"
    return text


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
    trigger_text = assert_deferred(cluster, dag_id, run_id, "wait_for_refresh")
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
    assert_deferred(cluster, dag_id, run_id, "wait_for_refresh")
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
    # Each waited deferred, in the triggerer.
    deferring = {
        "wdata_refresh_connection": "refresh_connection",
        "wdata_refresh_by_destination": "wait_for_refresh",
        "wdata_refresh_batch_and_wait": "refresh_spreadsheet",
    }
    for dag_id, task_id in deferring.items():
        assert_deferred(cluster, dag_id, runs[dag_id], task_id)

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


def wait_for_trigger_polling(
    cluster: AirflowCluster,
    simulator: WdataSimulator,
    ids: tuple[str, str, str],
    batch_id: Callable[[], str | None],
    reads: int,
) -> tuple[dict[str, Any], str]:
    """The task's trigger and batch id, once a triggerer runs the trigger and it read the batch ``reads`` times."""
    dag_id, run_id, task_id = ids

    def polling() -> tuple[dict[str, Any], str] | None:
        cluster.check_alive()
        ti = cluster.task_instances(dag_id, run_id).get(task_id) or {}
        assert ti.get("state") not in ("success", "failed"), f"{task_id} ended before the kill: {ti}"
        trigger = ti.get("trigger") or {}
        started = batch_id()
        if ti.get("state") != "deferred" or trigger.get("triggerer_id") is None or started is None:
            return None
        return (trigger, started) if len(batch_reads(simulator, started)) >= reads else None

    return wait_for(polling, 90, f"the trigger of {task_id} to poll from the triggerer", details=cluster.tails)


def wait_for_takeover(cluster: AirflowCluster, ids: tuple[str, str, str], first_triggerer: Any) -> dict[str, Any]:
    """The task's trigger, once a triggerer other than ``first_triggerer`` runs it (the task still deferred)."""
    dag_id, run_id, task_id = ids

    def taken_over() -> dict[str, Any] | None:
        cluster.check_alive()
        ti = cluster.task_instances(dag_id, run_id)[task_id]
        assert ti["state"] == "deferred", f"{task_id} left deferred before a new triggerer took over: {ti}"
        current = ti.get("trigger") or {}
        return current if current.get("triggerer_id") not in (None, first_triggerer) else None

    return wait_for(taken_over, 90, "a new triggerer to take the trigger over", details=cluster.tails)


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

    ids = (dag_id, run_id, sensor)
    trigger, batch_id = wait_for_trigger_polling(cluster, simulator, ids, new_batch_id, reads=3)
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
        resumed = wait_for_takeover(cluster, ids, first_triggerer)
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
    assert_deferred(cluster, dag_id, run_id, sensor)


def test_killed_triggerer_mid_wait_of_a_deferrable_operator_never_starts_the_batch_twice(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    """The risky case: the task that started the batch is the one waiting. When its triggerer dies and another
    one takes the trigger over, and when the task resumes to finish, nothing may start the batch again."""
    dag_id, task_id = "e2e_refresh_and_wait_restart", "refresh_and_wait"
    simulator.script_connection(SLOW_OPERATOR_CONNECTION, polls_to_finish=SLOW_POLLS)
    assert starts_of(simulator, SLOW_OPERATOR_CONNECTION) == []
    run_id = cluster.trigger_dag(dag_id)

    def batch_id() -> str | None:
        ids = [bid for bid, b in simulator.batches.items() if b.children[0].connection_id == SLOW_OPERATOR_CONNECTION]
        return ids[0] if ids else None

    ids = (dag_id, run_id, task_id)
    trigger, started = wait_for_trigger_polling(cluster, simulator, ids, batch_id, reads=2)
    trigger_id, first_triggerer = trigger["id"], trigger["triggerer_id"]
    assert trigger["classpath"] == BATCH_TRIGGER
    original = cluster.trigger_kwargs(trigger_id)
    assert original is not None and original["batch_id"] == started

    cluster.kill_component("triggerer")
    killed_at = time.monotonic()
    try:
        assert len(batch_reads(simulator, started)) < SLOW_POLLS, "the refresh is still running at the kill"
        assert cluster.task_instances(dag_id, run_id)[task_id]["state"] == "deferred"
        assert len(starts_of(simulator, SLOW_OPERATOR_CONNECTION)) == 1

        cluster.restart_triggerer()
        resumed = wait_for_takeover(cluster, ids, first_triggerer)
        assert resumed["id"] == trigger_id  # the same trigger row: the wait resumed, the task did not run again
        run = cluster.wait_for_run(dag_id, run_id, timeout=90)
    finally:
        if not cluster.components["triggerer"].alive:  # leave a triggerer for the tests that follow
            cluster.restart_triggerer()

    assert run["state"] == "success"
    assert states(cluster.task_instances(dag_id, run_id)) == {task_id: "success"}
    # Exactly one start at the simulator, of the one batch the task pushed and waited on to its end.
    assert len(starts_of(simulator, SLOW_OPERATOR_CONNECTION)) == 1
    assert batch_id() == started
    assert cluster.xcom(dag_id, run_id, task_id, key="batch_refresh_id") == started
    reads = batch_reads(simulator, started)
    assert any(r.at > killed_at for r in reads), "no status read after the triggerer was killed"
    assert len(reads) >= SLOW_POLLS
    assert_batch_complete(cluster.xcom(dag_id, run_id, task_id), started, [SLOW_OPERATOR_CONNECTION])
    assert_deferred(cluster, dag_id, run_id, task_id)


# ---------------------------------------------------------------------------------------------- durable retries


def batches_of(simulator: WdataSimulator, connection_id: str) -> list[str]:
    """The ids of the batches that refreshed ``connection_id``, in start order."""
    return [
        batch_id
        for batch_id, batch in simulator.batches.items()
        if connection_id in {child.connection_id for child in batch.children}
    ]


def stored_refresh(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
    """What the operator recorded in its task state store (Airflow 3.3's ``task_state_store`` table), if anything."""
    rows = cluster.query(
        "SELECT value FROM task_state_store WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
        (dag_id, run_id, task_id, STORE_KEY),
    )
    if not rows:
        return None
    value = json.loads(rows[0][0])
    return json.loads(value) if isinstance(value, str) else value


def tries(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> dict[int, dict[str, Any]]:
    """Every try of a task instance Airflow recorded (ended tries and the current one), by try number."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/tries"
    return {ti["try_number"]: ti for ti in cluster.api("GET", path)["task_instances"]}


def kill_task_process(ti: dict[str, Any]) -> int:
    """SIGKILL the process running a task instance: the child the task supervisor forked, which Airflow records
    as the TI's pid and which calls itself ``airflow worker -- <ti id>``. Its supervisor survives and reports
    the exit."""
    pid = ti["pid"]
    assert pid, f"no pid recorded for the running task: {ti}"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert str(ti["id"]) in cmdline, f"pid {pid} is not the process of TI {ti['id']}: {cmdline!r}"
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_for_rerun(
    cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str, after_try: int, timeout: float = 90
) -> dict[str, Any]:
    """After a clear: wait until the task ran a try after ``after_try`` and the run ended again; the run."""

    def ended() -> dict[str, Any] | None:
        cluster.check_alive()
        ti = cluster.task_instances(dag_id, run_id)[task_id]
        run = cluster.dag_run(dag_id, run_id)
        return run if ti["try_number"] > after_try and run["state"] in ("success", "failed") else None

    return wait_for(ended, timeout, f"{dag_id}.{task_id} to run again after the clear", details=cluster.tails)


def test_killed_task_process_resumes_on_retry_without_a_second_start(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    """A non-deferrable batch operator waiting in its worker is SIGKILLed; its retry finds the batch still running
    in the task state store and waits on it: one start at Wdata, not two."""
    dag_id, task_id = "e2e_durable_kill", "refresh"
    simulator.script_connection(KILL_CONNECTION, polls_to_finish=KILL_POLLS)
    assert starts_of(simulator, KILL_CONNECTION) == []
    run_id = cluster.trigger_dag(dag_id)

    def waiting_in_worker() -> dict[str, Any] | None:
        """The running TI, once it started the batch, recorded it, and read its status at least twice."""
        cluster.check_alive()
        ti = cluster.task_instances(dag_id, run_id).get(task_id) or {}
        assert ti.get("state") not in ("success", "failed", "up_for_retry"), f"the task ended before the kill: {ti}"
        started = batches_of(simulator, KILL_CONNECTION)
        if ti.get("state") != "running" or not ti.get("pid") or not started:
            return None
        if len(batch_reads(simulator, started[0])) < 2 or stored_refresh(cluster, dag_id, run_id, task_id) is None:
            return None
        return ti

    ti = wait_for(waiting_in_worker, 90, "the operator to wait on its batch in the worker", details=cluster.tails)
    (batch_id,) = batches_of(simulator, KILL_CONNECTION)
    record = stored_refresh(cluster, dag_id, run_id, task_id)
    assert record is not None and record["batch_id"] == batch_id, record
    assert ti["try_number"] == 1

    kill_task_process(ti)
    killed_at = time.monotonic()
    reads_at_kill = len(batch_reads(simulator, batch_id))
    assert reads_at_kill < KILL_POLLS - 1, "the batch must still be running when the retry reads it"

    run = cluster.wait_for_run(dag_id, run_id, timeout=120)

    assert run["state"] == "success"
    ti = cluster.task_instances(dag_id, run_id)[task_id]
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    assert tries(cluster, dag_id, run_id, task_id)[1]["state"] in ("up_for_retry", "failed")  # the killed try
    # Exactly one start: the retry waited on the batch the killed try had started.
    assert len(starts_of(simulator, KILL_CONNECTION)) == 1
    assert batches_of(simulator, KILL_CONNECTION) == [batch_id]
    log = cluster.task_log(dag_id, run_id, task_id, 2)
    assert (
        f"Try 2: batch {batch_id} (connections {KILL_CONNECTION}) is still running; "
        "waiting on it instead of starting another" in log
    ), log[-3000:]
    assert "Started Wdata batch refresh" not in log
    reads = batch_reads(simulator, batch_id)
    assert any(r.at > killed_at for r in reads), "the retry never read the batch"
    assert len(reads) >= KILL_POLLS
    assert cluster.xcom(dag_id, run_id, task_id, key="batch_refresh_id") == batch_id
    assert_batch_complete(cluster.xcom(dag_id, run_id, task_id), batch_id, [KILL_CONNECTION])


def test_retry_reruns_only_the_failed_connection_and_returns_every_connection(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    """A batch with one failing connection: the deferrable operator's retry starts a batch of only that
    connection, and its result covers both."""
    dag_id, task_id = "e2e_durable_rerun", "refresh"
    simulator.script_connection(RERUN_FAIL, outcomes=["error", "complete"], error=RERUN_ERROR)
    assert starts_of(simulator, RERUN_FAIL) == []
    run_id = cluster.trigger_dag(dag_id)
    recorder = StateRecorder()

    run = cluster.wait_for_run(dag_id, run_id, timeout=150, on_poll=recorder)

    assert run["state"] == "success"
    ti = cluster.task_instances(dag_id, run_id)[task_id]
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    assert tries(cluster, dag_id, run_id, task_id)[1]["state"] in ("up_for_retry", "failed")
    assert "deferred" in recorder.states[task_id], recorder.states
    # Two starts: both connections, then the failed one alone.
    first, second = batches_of(simulator, RERUN_FAIL)
    assert batches_of(simulator, RERUN_OK) == [first]
    assert len(starts_of(simulator, RERUN_OK)) == 1
    rerun_starts = starts_of(simulator, RERUN_FAIL)
    assert len(rerun_starts) == 2
    assert [c["connectionId"] for c in rerun_starts[0].json()] == [RERUN_OK, RERUN_FAIL]
    assert [c["connectionId"] for c in rerun_starts[1].json()] == [RERUN_FAIL]
    assert [child.connection_id for child in simulator.batches[second].children] == [RERUN_FAIL]

    first_log = cluster.task_log(dag_id, run_id, task_id, 1)
    assert RERUN_ERROR in first_log
    second_log = cluster.task_log(dag_id, run_id, task_id, 2)
    assert (
        f"Try 2: batch {first} (connections {RERUN_OK}, {RERUN_FAIL}) ended badly; "
        f"starting only the failed 1 connection(s) again: {RERUN_FAIL}" in second_log
    ), second_log[-3000:]

    # The result is the rerun batch, covering every connection of the task with the job that completed it.
    assert cluster.xcom(dag_id, run_id, task_id, key="batch_refresh_id") == second
    summary = cluster.xcom(dag_id, run_id, task_id)
    assert_batch_complete(summary, second, [RERUN_OK, RERUN_FAIL])
    jobs = {child["connection_id"]: child["job_id"] for child in summary["child_refreshes"]}
    ok_job = next(c.job_id for c in simulator.batches[first].children if c.connection_id == RERUN_OK)
    assert jobs == {RERUN_OK: ok_job, RERUN_FAIL: simulator.batches[second].children[0].job_id}


def test_clearing_a_succeeded_task_or_its_run_starts_the_refresh_afresh(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    """What the operator recorded must not survive a person's clear: of the task, then of the whole DAG run."""
    dag_id, task_id = "e2e_durable_clear", "refresh"
    run_id = cluster.trigger_dag(dag_id)
    assert cluster.wait_for_run(dag_id, run_id)["state"] == "success"
    (first,) = batches_of(simulator, CLEAR_CONNECTIONS[0])
    assert cluster.task_instances(dag_id, run_id)[task_id]["try_number"] == 1

    body = {"dry_run": False, "task_ids": [task_id], "dag_run_id": run_id, "only_failed": False}
    cleared = cluster.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)
    assert [ti["task_id"] for ti in cleared["task_instances"]] == [task_id]
    run = wait_for_rerun(cluster, dag_id, run_id, task_id, after_try=1)

    assert run["state"] == "success"
    second_try = cluster.task_instances(dag_id, run_id)[task_id]["try_number"]
    batches = batches_of(simulator, CLEAR_CONNECTIONS[0])
    assert len(batches) == 2 and batches[0] == first, batches
    second = batches[1]
    assert [c.connection_id for c in simulator.batches[second].children] == CLEAR_CONNECTIONS
    log = cluster.task_log(dag_id, run_id, task_id, second_try)
    assert f"Started Wdata batch refresh {second} of 2 connections" in log, log[-3000:]
    assert "has succeeded; returning its result" not in log
    assert cluster.xcom(dag_id, run_id, task_id, key="batch_refresh_id") == second
    assert_batch_complete(cluster.xcom(dag_id, run_id, task_id), second, CLEAR_CONNECTIONS)

    # The whole run, cleared: afresh again.
    cluster.api("POST", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/clear", json={"dry_run": False})
    run = wait_for_rerun(cluster, dag_id, run_id, task_id, after_try=second_try)

    assert run["state"] == "success"
    third_try = cluster.task_instances(dag_id, run_id)[task_id]["try_number"]
    batches = batches_of(simulator, CLEAR_CONNECTIONS[0])
    assert len(batches) == 3 and batches[:2] == [first, second], batches
    third = batches[2]
    log = cluster.task_log(dag_id, run_id, task_id, third_try)
    assert f"Started Wdata batch refresh {third} of 2 connections" in log, log[-3000:]
    assert "has succeeded; returning its result" not in log
    for connection_id in CLEAR_CONNECTIONS:
        assert len(starts_of(simulator, connection_id)) == 3
    assert_batch_complete(cluster.xcom(dag_id, run_id, task_id), third, CLEAR_CONNECTIONS)


# ---------------------------------------------------------------------------------------------- assets


def asset_events(cluster: AirflowCluster, **filters: str) -> list[dict[str, Any]] | None:
    """The asset events matching ``filters``; None while Airflow cannot list them yet: Airflow 3.3.2 answers 500
    while an event's DAG run is queued (its ``start_date`` is None, which its response model refuses)."""
    response = cluster.session.get(
        cluster.base_url + "/api/v2/assets/events", params={**filters, "limit": 100}, timeout=30
    )
    if response.status_code == 500:
        return None
    assert response.status_code == 200, f"GET /api/v2/assets/events answered {response.status_code}: {response.text}"
    return response.json()["asset_events"]


def dag_run_ids(cluster: AirflowCluster, dag_id: str) -> set[str]:
    return {run["dag_run_id"] for run in cluster.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]}


def test_downstream_dag_runs_on_the_connection_asset_only_after_a_successful_refresh(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    refresh_dag, consumer_dag = "e2e_lineage_refresh", "e2e_lineage_consumer"
    simulator.script_connection(LINEAGE_CONNECTION, outcomes=["error", "complete"], error=LINEAGE_ERROR)
    consumer_runs_before = dag_run_ids(cluster, consumer_dag)

    # A failed refresh: no asset event, so nothing for the consumer.
    failed_run = cluster.trigger_dag(refresh_dag)
    assert cluster.wait_for_run(refresh_dag, failed_run)["state"] == "failed"
    assert asset_events(cluster, source_dag_id=refresh_dag, source_run_id=failed_run) == []

    ok_run = cluster.trigger_dag(refresh_dag)
    assert cluster.wait_for_run(refresh_dag, ok_run)["state"] == "success"
    batch_id = cluster.xcom(refresh_dag, ok_run, "refresh", key="batch_refresh_id")

    def consumed() -> list[dict[str, Any]] | None:
        """The successful run's asset events, once the one of conn-e2e-lineage created a consumer run."""
        events = asset_events(cluster, source_dag_id=refresh_dag, source_run_id=ok_run) or []
        ours = [e for e in events if e["uri"] == f"wdata://connections/{LINEAGE_CONNECTION}"]
        return events if ours and ours[0]["created_dagruns"] else None

    events = wait_for(consumed, 90, "the asset event to create a run of the consumer DAG", details=cluster.tails)
    by_uri = {event["uri"]: event for event in events}
    assert set(by_uri) == {f"wdata://connections/{c}" for c in (LINEAGE_CONNECTION, LINEAGE_OTHER)}
    batch = simulator.batches[batch_id]
    for connection_id in (LINEAGE_CONNECTION, LINEAGE_OTHER):
        extra = by_uri[f"wdata://connections/{connection_id}"]["extra"]
        job_id = next(c.job_id for c in batch.children if c.connection_id == connection_id)
        assert extra["connection_id"] == connection_id, extra
        assert extra["batch_id"] == batch_id, extra
        assert extra["job_id"] == job_id, extra
        assert (extra["source_status"], extra["destination_status"]) == ("complete", "complete"), extra
        assert extra.get("updated"), extra
    created = by_uri[f"wdata://connections/{LINEAGE_CONNECTION}"]["created_dagruns"]
    assert [ref["dag_id"] for ref in created] == [consumer_dag], created
    consumer_run = created[0]["run_id"]
    assert by_uri[f"wdata://connections/{LINEAGE_OTHER}"]["created_dagruns"] == []  # nobody schedules on it

    assert cluster.wait_for_run(consumer_dag, consumer_run)["state"] == "success"
    # The consumer ran once, on the successful refresh's event alone: the failed refresh triggered nothing.
    assert dag_run_ids(cluster, consumer_dag) - consumer_runs_before == {consumer_run}
    path = f"/api/v2/dags/{consumer_dag}/dagRuns/{quote(consumer_run, safe='')}/upstreamAssetEvents"
    upstream = cluster.api("GET", path)["asset_events"]
    assert [(e["source_run_id"], e["uri"]) for e in upstream] == [(ok_run, f"wdata://connections/{LINEAGE_CONNECTION}")]
    reported = cluster.xcom(consumer_dag, consumer_run, "report")
    assert [(r["source_run_id"], r["extra"]["batch_id"]) for r in reported] == [(ok_run, batch_id)]


# ---------------------------------------------------------------------------------------------- start_from_trigger


def test_sensor_started_from_the_triggerer_renders_its_batch_id_there_and_succeeds(
    cluster: AirflowCluster, simulator: WdataSimulator
):
    dag_id, sensor = "e2e_start_from_trigger", "wait"
    simulator.script_connection(FROM_TRIGGER_CONNECTION, polls_to_finish=FROM_TRIGGER_POLLS)
    run_id = cluster.trigger_dag(dag_id)
    recorder = StateRecorder()

    def polling_from_triggerer() -> dict[str, Any] | None:
        """The sensor's TI, once deferred with its trigger in a triggerer that has read the batch."""
        cluster.check_alive()
        tis = cluster.task_instances(dag_id, run_id)
        recorder(tis)
        ti = tis.get(sensor) or {}
        assert ti.get("state") not in ("success", "failed"), f"the sensor ended before it was seen deferred: {ti}"
        started = batches_of(simulator, FROM_TRIGGER_CONNECTION)
        if ti.get("state") != "deferred" or (ti.get("trigger") or {}).get("triggerer_id") is None or not started:
            return None
        return ti if batch_reads(simulator, started[0]) else None

    ti = wait_for(polling_from_triggerer, 90, "the sensor to wait in the triggerer", details=cluster.tails)
    (batch_id,) = batches_of(simulator, FROM_TRIGGER_CONNECTION)
    # No worker ever had it: never queued or running before it deferred, no worker host, no process...
    before = recorder.states[sensor][: recorder.states[sensor].index("deferred")]
    assert not {"queued", "running"} & set(before), recorder.states[sensor]
    assert (ti["queued_when"], ti["pid"], ti["hostname"] or None) == (None, None, None), ti
    # ...and the trigger row is the one the scheduler made from the DAG: its batch id still the template, rendered
    # only in the triggerer, and no deadline yet (a worker's deferral would have rendered it and set one).
    kwargs = cluster.trigger_kwargs(ti["trigger"]["id"])
    assert kwargs is not None
    assert kwargs["batch_id"] == FROM_TRIGGER_BATCH_ID_TEMPLATE, kwargs
    assert (kwargs["deadline"], kwargs["timeout"]) == (None, 300.0), kwargs
    assert ti["trigger"]["classpath"] == BATCH_TRIGGER

    run = cluster.wait_for_run(dag_id, run_id, timeout=90, on_poll=recorder)

    assert run["state"] == "success"
    assert states(cluster.task_instances(dag_id, run_id)) == {"start": "success", sensor: "success"}
    assert cluster.xcom(dag_id, run_id, "start", key="batch_refresh_id") == batch_id
    trigger_text = assert_deferred(cluster, dag_id, run_id, sensor)
    assert f"batch refresh {batch_id} still running" in trigger_text  # the rendered id, in the triggerer
    assert len(batch_reads(simulator, batch_id)) >= FROM_TRIGGER_POLLS
    assert_batch_complete(cluster.xcom(dag_id, run_id, sensor), batch_id, [FROM_TRIGGER_CONNECTION])
    triggerer_output = "\n".join(
        c.log_path.read_text(errors="replace") for c in cluster.started if c.name == "triggerer"
    )
    assert f"Start from trigger enabled for task {sensor}" in triggerer_output


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
    # Trigger rows are deleted when their task resumes: the kwargs seen while the tests polled are checked too.
    stored["trigger kwargs seen while polling"] = list(cluster.seen_trigger_kwargs.values())
    assert stored["trigger kwargs seen while polling"], "no trigger kwargs seen to check"
    for what, values in stored.items():
        text = "\n".join(str(value) for value in values)
        if CLIENT_SECRET in text or any(token in text for token in tokens):
            leaks.append(f"a secret in the {what}")
    assert not leaks, "; ".join(leaks)  # never the secret or a token itself in the message
