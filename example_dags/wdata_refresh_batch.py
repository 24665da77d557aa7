"""Start a Wdata batch refresh, then wait for it with a deferrable BatchRefreshSensor.

The batch id travels through XCom (``batch_refresh_id``); the sensor waits in the triggerer, not in a
worker slot, and fails naming every connection refresh that failed. The connection ids are those of the
bundled simulator: put your own here.
"""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor

with DAG(
    dag_id="wdata_refresh_batch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "example"],
):
    start = WdataRefreshBatchOperator(
        task_id="start_refresh",
        connections=["conn-1", "conn-2", "conn-3"],
        wait_for_completion=False,
    )
    wait = BatchRefreshSensor(
        task_id="wait_for_refresh",
        batch_id="{{ ti.xcom_pull(task_ids='start_refresh', key='batch_refresh_id') }}",
        deferrable=True,
        poke_interval=2,
        timeout=600,
    )
    start >> wait
