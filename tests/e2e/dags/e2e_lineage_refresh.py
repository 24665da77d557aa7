"""E2E test DAG: a deferrable batch refresh whose default outlets are its connections' assets; no retries, so
that a failed refresh fails the run (and emits no asset event)."""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

with DAG(
    dag_id="e2e_lineage_refresh",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    WdataRefreshBatchOperator(
        task_id="refresh",
        connections=["conn-e2e-lineage", "conn-e2e-lineage-other"],
        deferrable=True,
        poll_interval=2,
        timeout=300,
        retries=0,
    )
