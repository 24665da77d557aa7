"""Refresh one Wdata connection and wait for it."""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshConnectionOperator

with DAG(
    dag_id="wdata_refresh_connection",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "example"],
):
    WdataRefreshConnectionOperator(
        task_id="refresh_connection",
        connection_id="conn-1",
        deferrable=True,
        poll_interval=2,
        timeout=600,
    )
