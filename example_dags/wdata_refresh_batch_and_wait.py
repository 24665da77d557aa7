"""Refresh several connections as one batch and wait, in one deferrable task."""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

with DAG(
    dag_id="wdata_refresh_batch_and_wait",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "example"],
):
    WdataRefreshBatchOperator(
        task_id="refresh_spreadsheet",
        connections=[
            "conn-1",
            {"connection_id": "conn-2", "use_previous_source_parameters": True},
        ],
        cancel_unwritables=True,
        deferrable=True,
        poll_interval=2,
        timeout=600,
    )
