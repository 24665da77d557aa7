"""E2E test DAG: a slow batch, waited on by a deferrable sensor while the test kills and restarts the triggerer."""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor

with DAG(
    dag_id="e2e_triggerer_restart",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    start = WdataRefreshBatchOperator(
        task_id="start_refresh",
        connections=["conn-e2e-slow"],
        wait_for_completion=False,
    )
    wait = BatchRefreshSensor(
        task_id="wait_for_refresh",
        batch_id="{{ ti.xcom_pull(task_ids='start_refresh', key='batch_refresh_id') }}",
        deferrable=True,
        poke_interval=1,
        timeout=600,
    )
    start >> wait
