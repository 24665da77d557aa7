"""E2E test DAG: a deferrable batch refresh with one retry, one of whose connections the test scripts to fail
once: the retry must start a batch of only that connection."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

with DAG(
    dag_id="e2e_durable_rerun",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    WdataRefreshBatchOperator(
        task_id="refresh",
        connections=["conn-e2e-rerun-ok", "conn-e2e-rerun-fail"],
        deferrable=True,
        # Two seconds, so that the trigger fires well after the deferral (README, "Known Airflow issues").
        poll_interval=2,
        timeout=300,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
