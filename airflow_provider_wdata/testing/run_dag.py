"""Run DAGs through Airflow against a fresh Wdata simulator: ``make demo`` uses it.

    python -m airflow_provider_wdata.testing.run_dag DAGS_FOLDER DAG_ID [DAG_ID ...]

Starts the simulator, points a throwaway Airflow home (SQLite) and the ``wdata_default`` connection at it,
migrates the database, runs ``airflow dags test DAG_ID`` for each DAG (deferred tasks run their triggers
inline), then prints every batch and connection refresh the simulator saw, with its final statuses. Exits
non-zero if any DAG run failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from airflow_provider_wdata.testing.simulator import WdataSimulator


def airflow_env(home: Path, dags_folder: Path, simulator: WdataSimulator) -> dict[str, str]:
    """Environment for Airflow processes that use ``simulator`` as their ``wdata_default`` connection."""
    name, value = simulator.airflow_conn_env("wdata_default")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": "wdata-demo-" + "0" * 48,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            name: value,
        }
    )
    return env


def _print_refreshes(simulator: WdataSimulator) -> None:
    print("\nWhat the Wdata simulator saw:")
    for batch_id in simulator.batches:
        body = simulator.batch_body(batch_id)
        print(f"  batch refresh {batch_id}: source={body['sourceStatus']}, destination={body['destinationStatus']}")
        for child in body.get("childRefreshes") or []:
            print(
                f"    connection {child['connectionId']} (job {child['jobId']}): "
                f"source={child['sourceStatus']}, destination={child['destinationStatus']}"
            )
    for (connection_id, job_id), run in simulator.runs.items():
        if run.batch_id is None:
            print(
                f"  refresh of connection {connection_id} (job {job_id}): "
                f"source={run.source_status}, destination={run.destination_status}"
            )
    print(f"  requests: {len(simulator.requests)} ({len(simulator.token_requests)} for tokens)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dags_folder", type=Path, help="folder (or one file) holding the DAGs")
    parser.add_argument("dag_ids", nargs="+", metavar="DAG_ID")
    parser.add_argument("--polls-to-finish", type=int, default=2)
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary Airflow home")
    args = parser.parse_args(argv)
    airflow = shutil.which("airflow", path=os.path.dirname(sys.executable)) or "airflow"
    home = Path(tempfile.mkdtemp(prefix="wdata-demo-airflow-"))
    try:
        with WdataSimulator(polls_to_finish=args.polls_to_finish) as simulator:
            print(f"Wdata simulator at {simulator.base_url}; Airflow home {home}", flush=True)
            folder = args.dags_folder.resolve()
            env = airflow_env(home, folder if folder.is_dir() else folder.parent, simulator)
            subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
            outcomes = {}
            for dag_id in args.dag_ids:
                print(f"\n=== airflow dags test {dag_id}", flush=True)
                outcomes[dag_id] = subprocess.run([airflow, "dags", "test", dag_id], env=env).returncode
            _print_refreshes(simulator)
            print()
            for dag_id, code in outcomes.items():
                print(f"airflow dags test {dag_id}: {'succeeded' if code == 0 else 'FAILED'}")
            return 0 if not any(outcomes.values()) else 1
    finally:
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
