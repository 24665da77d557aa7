"""Refresh Wdata connections and update their Airflow assets, so that downstream DAGs run when they change.

Each Wdata connection is an asset (``wdata://connections/<connection_id>``, see
``airflow_provider_wdata.assets``). The refresh task lists them as its outlets by default (on Airflow 3.1+ and
2.11; pass ``outlets=default_outlets(CONNECTIONS)`` to have them on 3.0 too): when the refresh succeeds,
Airflow records an asset event per connection, whose extra holds what the refresh did for it (``batch_id``,
``job_id``, ``source_status``, ``destination_status``, ``updated``). ``wdata_reporting_on_assets`` is scheduled
on these assets. With the OpenLineage provider installed, the task also emits lineage: the connections' sources
as inputs, their destinations as outputs. The connection ids are those of the bundled simulator.
"""

from __future__ import annotations

import pendulum
from airflow import DAG

from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

CONNECTIONS = ["conn-1", "conn-2", "conn-3"]

with DAG(
    dag_id="wdata_refresh_assets",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "example", "assets"],
):
    WdataRefreshBatchOperator(
        task_id="refresh_connections",
        connections=CONNECTIONS,
        deferrable=True,
        poll_interval=2,
        timeout=600,
    )
