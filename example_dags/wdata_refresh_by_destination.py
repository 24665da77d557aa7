"""A custom operator built on WdataHook: refresh every connection that writes to spreadsheets.

It lists the connections (all pages) with ``list_connections``, filtered by destination type (and id,
if given), starts one batch refresh of them, and hands the batch id on through XCom (``start.output``) to a
deferrable BatchRefreshSensor.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow import DAG
from airflow.sdk import BaseOperator

from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor


class RefreshSpreadsheetConnectionsOperator(BaseOperator):
    template_fields = ("destination_type", "destination_id")

    def __init__(
        self,
        *,
        destination_type: str,
        destination_id: str | None = None,
        wdata_conn_id: str = "wdata_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination_type = destination_type
        self.destination_id = destination_id
        self.wdata_conn_id = wdata_conn_id

    def execute(self, context: Any) -> str:
        hook = WdataHook(self.wdata_conn_id)
        filters = {"destination_type": self.destination_type}
        if self.destination_id:
            filters["destination_id"] = self.destination_id
        ids = [c.id for c in hook.list_connections(**filters) if c.id]
        if not ids:
            raise ValueError(f"No Wdata connection matches {filters}.")
        self.log.info("Refreshing %d connections: %s", len(ids), ", ".join(ids))
        batch = hook.start_batch_refresh(ids)  # more than 100 are refused, saying to split them into batches
        return str(batch.batch_refresh_id)


with DAG(
    dag_id="wdata_refresh_by_destination",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wdata", "example"],
):
    start = RefreshSpreadsheetConnectionsOperator(task_id="start_refresh", destination_type="spreadsheet")
    wait = BatchRefreshSensor(
        task_id="wait_for_refresh",
        batch_id=start.output,  # the batch id the task returned, resolved when the sensor runs
        deferrable=True,
        poke_interval=2,
        timeout=600,
    )
    start >> wait
