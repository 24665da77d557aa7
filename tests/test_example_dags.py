"""Every example DAG imports cleanly and runs green against the simulator through ``airflow dags test``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_wdata._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_wdata.testing.run_dag import airflow_env
from tests.conftest import airflow_home_text, leaks_in, scan_text

EXAMPLES = Path(__file__).resolve().parents[1] / "example_dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_IDS = {
    "wdata_refresh_batch": ["start_refresh", "wait_for_refresh"],
    "wdata_refresh_batch_and_wait": ["refresh_spreadsheet"],
    "wdata_refresh_connection": ["refresh_connection"],
    "wdata_refresh_by_destination": ["start_refresh", "wait_for_refresh"],
    "wdata_refresh_assets": ["refresh_connections"],
    "wdata_reporting_on_assets": ["build_report"],
}
#: The reporting DAG refreshes nothing: it runs when the refresh DAG's assets are updated.
REFRESH_DAG_IDS = sorted(set(DAG_IDS) - {"wdata_reporting_on_assets"})

pytestmark = pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the example DAGs are written for Airflow 3")


def test_example_dags_import_without_errors():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0 and 3.1
        from airflow.models.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(EXAMPLES))
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(DAG_IDS)
    for dag_id, task_ids in DAG_IDS.items():
        assert sorted(dagbag.dags[dag_id].task_ids) == sorted(task_ids)


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(home)}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home


@pytest.mark.parametrize("dag_id", REFRESH_DAG_IDS)
def test_example_dag_runs_green_against_the_simulator(airflow_home, wdata_conn, dag_id):
    fernet_key = Fernet.generate_key().decode()  # known, so that the scan reads encrypted values too
    env = airflow_env(airflow_home, EXAMPLES, wdata_conn) | {"AIRFLOW__CORE__FERNET_KEY": fernet_key}
    result = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    # The session's canary scan sees this output (conftest tees every subprocess's), and what the run left in
    # the Airflow home: the database (XCom, trigger kwargs, rendered fields) and the log files.
    stored = airflow_home_text(airflow_home, fernet_key)
    scan_text(f"Airflow home after `airflow dags test {dag_id}`", stored)
    assert result.returncode == 0, output[-4000:]
    assert "state=success" in output
    assert "succeeded" in output, "the wait ended with the refresh's success"
    assert wdata_conn.batches or wdata_conn.runs, "it refreshed something in Wdata"
    assert "[DAG TEST] running trigger in line" in output, "every example waits deferred, in the trigger"
    tokens = wdata_conn.issued_tokens
    assert tokens, "the run used the connection"
    assert leaks_in(output, tokens=tokens) == []
    assert leaks_in(stored, tokens=tokens) == []
    assert dag_id in stored, "the scanned database holds this run"
