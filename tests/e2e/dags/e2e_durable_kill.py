"""E2E test DAG: a non-deferrable batch refresh with one retry, whose task process the test SIGKILLs mid-wait:
the retry must wait on the batch the first try started, not start another."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

with DAG(
    dag_id="e2e_durable_kill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    WdataRefreshBatchOperator(
        task_id="refresh",
        connections=["conn-e2e-durable-kill"],
        deferrable=False,
        poll_interval=1,
        timeout=300,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
