"""One deferral through real Airflow, on every supported version: ``dag.test()`` runs a DAG whose deferrable
``BatchRefreshSensor`` and ``WdataRefreshBatchOperator(deferrable=True)`` hand their waits to
``BatchRefreshTrigger`` (run inline by ``dag.test()``) against the bundled simulator.

The DAG runs in a child process whose ``AIRFLOW_HOME`` (a fresh SQLite database, migrated by ``airflow db
migrate``) is set before Airflow is imported, so nothing leaks into the other tests' Airflow.

It is also the real-Airflow leak scan of every supported version (the e2e scan runs Airflow 3 only): the
simulator uses the canary secret, and the run's output, database (XCom, trigger kwargs, rendered fields,
next_kwargs, decrypted with the run's Fernet key) and log files must hold neither it nor any issued token.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_wdata.testing import WdataSimulator
from airflow_provider_wdata.testing.run_dag import airflow_env
from tests.conftest import CANARY_SECRET, CANARY_TOKEN_PREFIX, CLIENT_ID, airflow_home_text, leaks_in, scan_text

pytestmark = pytest.mark.deferral

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "wdata_compat_deferral"  # as in DAG_FILE
#: The sensor reads the batch once before it defers, so with 3 polls to finish only a trigger can see it end.
POLLS_TO_FINISH = 3

DAG_FILE = """
import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG("wdata_compat_deferral", schedule=None, start_date=START, catchup=False) as dag:
    start = WdataRefreshBatchOperator(task_id="start", connections=["conn-1", "conn-2"], wait_for_completion=False)
    wait = BatchRefreshSensor(
        task_id="wait",
        batch_id="{{ ti.xcom_pull(task_ids='start', key='batch_refresh_id') }}",
        deferrable=True,
        poke_interval=0.2,
        timeout=120,
    )
    refresh_and_wait = WdataRefreshBatchOperator(
        task_id="refresh_and_wait", connections=["conn-3"], deferrable=True, poll_interval=0.2, timeout=120
    )
    start >> wait >> refresh_and_wait

if __name__ == "__main__":
    # What Airflow stores as a trigger's kwargs is its serialize(): print it as each trigger starts to run, for
    # the leak scan (Airflow 2's dag.test() runs the trigger object inline, storing no trigger row at all).
    import json

    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    run = BatchRefreshTrigger.run

    def printing_run(self):
        print("TRIGGER-KWARGS " + json.dumps(self.serialize()[1], default=str), flush=True)
        return run(self)

    BatchRefreshTrigger.run = printing_run
    dag.test()
"""


@pytest.fixture
def airflow_home(tmp_path):
    home, dags = tmp_path / "home", tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG_FILE)
    canary = {"client_id": CLIENT_ID, "client_secret": CANARY_SECRET, "token_prefix": CANARY_TOKEN_PREFIX}
    with WdataSimulator(polls_to_finish=POLLS_TO_FINISH, **canary) as sim:
        # A Fernet key of our own, so that the leak scan can read what Airflow stores encrypted.
        env = airflow_env(home, dags, sim) | {"AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()}
        migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-4000:]
        yield home, dags / f"{DAG_ID}.py", env, sim


def test_dag_test_defers_to_the_trigger_and_succeeds(airflow_home):
    home, dag_file, env, sim = airflow_home
    result = subprocess.run([sys.executable, str(dag_file)], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)))
        runs = [state for (state,) in db.execute("SELECT state FROM dag_run WHERE dag_id = ?", (DAG_ID,))]
    assert states == {"start": "success", "wait": "success", "refresh_and_wait": "success"}, output[-6000:]
    assert runs == ["success"]

    # Both waits went to the triggerer: dag.test() logs this line (2.11 and 3.x alike) before it runs a
    # deferred task's trigger inline, then resumes the task with the trigger's event.
    assert output.count("[DAG TEST] running trigger in line") == 2, output[-6000:]
    sensed, refreshed = sim.batches  # started by "start", then by "refresh_and_wait"
    for batch_id in (sensed, refreshed):
        assert sim.batch_body(batch_id)["sourceStatus"] == "complete"
        reads = [r for r in sim.requests if r.method == "GET" and r.path.endswith(f"/batch/refresh/{batch_id}")]
        # The sensor reads the batch once before deferring, the operator not at all; the trigger reads the rest.
        assert len(reads) == POLLS_TO_FINISH, [r.path for r in sim.requests]

    # Nothing secret in what the run printed (conftest tees it into the session scan too) or left behind.
    stored = airflow_home_text(home, env["AIRFLOW__CORE__FERNET_KEY"])
    scan_text(f"Airflow home after the {DAG_ID} run", stored)
    tokens = sim.issued_tokens
    assert tokens, "the run fetched a token"
    # The printed trigger kwargs were scanned: on the console, or (Airflow 2 sends a task's stdout to its log)
    # in the task logs.
    printed = re.findall(r"TRIGGER-KWARGS (\{.*\})", output + "\n" + stored)
    assert {json.loads(kwargs)["batch_id"] for kwargs in printed} == {sensed, refreshed}
    assert leaks_in(output, tokens=tokens) == []
    assert leaks_in(stored, tokens=tokens) == []
    assert sensed in stored and refreshed in stored, "the scanned database holds the run's XComs"
