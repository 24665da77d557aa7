"""E2E test DAG: a batch started without waiting, and a sensor that starts directly in the triggerer
(start_from_trigger), its templated batch id rendered there."""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor

BATCH_ID_TEMPLATE = "{{ ti.xcom_pull(task_ids='start', key='batch_refresh_id', map_indexes=-1) }}"

with DAG(
    dag_id="e2e_start_from_trigger",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):
    start = WdataRefreshBatchOperator(
        task_id="start",
        connections=["conn-e2e-from-trigger"],
        wait_for_completion=False,
    )
    wait = BatchRefreshSensor(
        task_id="wait",
        # map_indexes=-1: rendered in the triggerer, a pull without it asks for an XCom slice
        # (GetXComSequenceSlice), which Airflow 3.3.2's trigger runner cannot decode: the render hangs.
        batch_id=BATCH_ID_TEMPLATE,
        start_from_trigger=True,
        poke_interval=1,
        timeout=300,
    )
    start >> wait
