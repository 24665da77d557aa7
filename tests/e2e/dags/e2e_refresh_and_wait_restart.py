"""E2E test DAG: one deferrable task starts a slow batch and waits on it, while the test kills and restarts the
triggerer: the batch must start exactly once."""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

with DAG(
    dag_id="e2e_refresh_and_wait_restart",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    WdataRefreshBatchOperator(
        task_id="refresh_and_wait",
        connections=["conn-e2e-slow-operator"],
        deferrable=True,
        poll_interval=1,
        timeout=600,
    )
