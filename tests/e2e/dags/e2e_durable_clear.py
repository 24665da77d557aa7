"""E2E test DAG: a batch refresh that the test clears by hand once it succeeded: each clear starts it afresh."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

with DAG(
    dag_id="e2e_durable_clear",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    WdataRefreshBatchOperator(
        task_id="refresh",
        connections=["conn-e2e-clear-1", "conn-e2e-clear-2"],
        deferrable=False,
        poll_interval=1,
        timeout=300,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
