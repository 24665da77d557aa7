"""A reporting DAG scheduled on Wdata connection assets instead of a time of day.

It runs once every connection it reads from was refreshed (by ``wdata_refresh_assets`` or any DAG whose
refresh task has these assets as outlets), and reads what each refresh did from the triggering asset events.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow import DAG
from airflow.sdk import task

from airflow_provider_wdata.assets import connection_asset

with DAG(
    dag_id="wdata_reporting_on_assets",
    # Both connections must have been refreshed since the last run (use | to run on either).
    schedule=connection_asset("conn-1") & connection_asset("conn-2"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "example", "assets"],
):

    @task
    def build_report(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """One line per refreshed connection, from the asset events that triggered this run."""
        refreshed = [
            {"asset": asset.uri, **event.extra}
            for asset, events in (triggering_asset_events or {}).items()
            for event in events
        ]
        for line in refreshed:
            print(f"Refreshed: {line}")
        return refreshed

    build_report()
