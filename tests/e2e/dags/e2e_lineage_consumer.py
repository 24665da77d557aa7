"""E2E test DAG: scheduled on the asset of one Wdata connection that e2e_lineage_refresh refreshes; returns the
asset events that triggered it."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow import DAG
from airflow.sdk import task

from airflow_provider_wdata.assets import connection_asset

LINEAGE_ASSET = connection_asset("conn-e2e-lineage")

with DAG(
    dag_id="e2e_lineage_consumer",
    schedule=LINEAGE_ASSET,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "e2e"],
):

    @task
    def report(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        return [
            {"source_run_id": event.source_run_id, "extra": dict(event.extra or {})}
            for event in triggering_asset_events[LINEAGE_ASSET]
        ]

    report()
