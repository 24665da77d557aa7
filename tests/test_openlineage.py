"""OpenLineage for Wdata refreshes: inputs are the connections' sources, outputs their destinations.

The whole module needs the OpenLineage provider (the ``openlineage`` extra, part of the ``test`` extra);
tests/test_assets.py checks that everything else works without it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.openlineage", reason="needs apache-airflow-providers-openlineage")

from cryptography.fernet import Fernet

from airflow_provider_wdata._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_wdata.assets import connection_asset, refresh_runs
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.openlineage import (
    RUN_FACET_KEY,
    WdataLineageMixin,
    WdataStartLineageMixin,
    convert_asset_to_openlineage,
    dataset_namespace,
    lineage_for_refresh,
)
from airflow_provider_wdata.testing.run_dag import airflow_env
from tests.conftest import airflow_home_text, leaks_in, scan_text

EXAMPLES = Path(__file__).resolve().parents[1] / "example_dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def names(datasets):
    return [(d.namespace, d.name) for d in datasets]


def connection_reads(sim, connection_id) -> int:
    """How many times the connection was read (a count: a failure must not print requests and their headers)."""
    return sum(1 for r in sim.requests if r.method == "GET" and r.path.endswith(f"/api/v1/connections/{connection_id}"))


def refresh_to_the_end(hook, connection_ids):
    batch = hook.start_batch_refresh(connection_ids)
    for _ in range(20):
        batch = hook.get_batch_refresh(batch.batch_refresh_id)
        if all(c.source_status in ("complete", "error", "cancelled") for c in batch.child_refreshes):
            return batch.to_dict()
    raise AssertionError(f"the batch did not end: {batch.to_dict()}")


def test_namespace_is_the_api_host():
    assert dataset_namespace("https://h.app.wdesk.com/s/wdata/prep") == "wdata://h.app.wdesk.com"
    assert dataset_namespace("https://H.EU.wdesk.com:8443/s/wdata/prep") == "wdata://h.eu.wdesk.com:8443"


def test_sources_are_inputs_and_destinations_outputs_read_once_per_connection(wdata_conn):
    sim = wdata_conn
    sim.add_connection("conn-7", source_type="wdata_table", source_id="tbl-7", destination_type="spreadsheet",
                       destination_id="sheet-A")  # fmt: skip
    sim.add_connection("conn-8", source_type="wdata_query", source_id="qry-8", destination_type="spreadsheet",
                       destination_id="sheet-A")  # fmt: skip
    hook = WdataHook()
    runs = refresh_runs(refresh_to_the_end(hook, ["conn-7", "conn-8", "conn-3"]))
    cache: dict = {}
    lineage = lineage_for_refresh(hook, runs, cache=cache)
    namespace = f"wdata://127.0.0.1:{sim.port}"
    assert names(lineage.inputs) == [
        (namespace, "wdata_table/tbl-7"),
        (namespace, "wdata_query/qry-8"),
        (namespace, "spreadsheet/src-conn-3"),
    ]
    assert names(lineage.outputs) == [
        (namespace, "spreadsheet/sheet-A"),  # two connections write the same spreadsheet: one output
        (namespace, "wdata_table/dst-conn-3"),
    ]
    facet = lineage.run_facets[RUN_FACET_KEY]
    assert facet.batchId == runs[0]["batch_id"]
    assert [c["connectionId"] for c in facet.connections] == ["conn-7", "conn-8", "conn-3"]
    assert all(c["sourceStatus"] == c["destinationStatus"] == "complete" and c["jobId"] for c in facet.connections)
    assert "errorMessage" not in lineage.run_facets
    assert connection_reads(sim, "conn-7") == 1
    lineage_for_refresh(hook, runs, cache=cache)
    assert connection_reads(sim, "conn-7") == 1, "the task's cache spares a second read"


def test_a_failed_connection_is_in_the_error_facet(wdata_conn):
    sim = wdata_conn
    sim.add_connection("conn-bad", outcome="error", error="Destination spreadsheet is locked")
    hook = WdataHook()
    runs = refresh_runs(refresh_to_the_end(hook, ["conn-1", "conn-bad"]))
    lineage = lineage_for_refresh(hook, runs)
    error = lineage.run_facets["errorMessage"]
    assert error.message.startswith("1 of 2 Wdata connection refreshes failed:")
    assert "connection conn-bad" in error.message
    assert "Destination spreadsheet is locked" in error.message
    assert "conn-1" not in error.message
    assert error.programmingLanguage == "python"
    [bad] = [c for c in lineage.run_facets[RUN_FACET_KEY].connections if c["connectionId"] == "conn-bad"]
    assert bad["error"] == "Destination spreadsheet is locked"
    assert len(lineage.outputs) == 2, "a failed connection still names what it was to write"


def test_a_cancelled_refresh_the_task_accepted_is_no_failure_in_the_lineage(wdata_conn):
    hook = WdataHook()
    runs = [{"connection_id": "conn-1", "source_status": "cancelled", "destination_status": "cancelled"}]
    assert "errorMessage" in lineage_for_refresh(hook, runs).run_facets
    assert "errorMessage" not in lineage_for_refresh(hook, runs, tolerate_cancelled=True).run_facets
    operator = _Refresh(hook, connection_id="conn-1", tolerate_cancelled=True)
    operator.record_wdata_lineage(runs[0])
    assert "errorMessage" not in operator.get_openlineage_facets_on_complete(None).run_facets


def test_an_unreadable_connection_is_left_out_without_failing(wdata_conn):
    hook = WdataHook()
    runs = [{"connection_id": "conn-1"}, {"connection_id": "no-such-connection"}]
    lineage = lineage_for_refresh(hook, runs, batch_id="b-1")
    assert [d.name for d in lineage.inputs] == ["wdata_table/src-conn-1"]
    assert lineage.run_facets[RUN_FACET_KEY].batchId == "b-1"


def test_a_connection_is_read_in_its_own_workspace_before_the_refreshs(wdata_conn):
    # As the refresh request and the asset do: a RefreshConnection's own workspaceId wins over the operator's.
    hook = WdataHook()
    runs = [{"connection_id": "conn-1", "workspace_id": "ws-b"}, {"connection_id": "conn-2"}]
    lineage_for_refresh(hook, runs, workspace_id="ws-a")
    reads = {r.path.rsplit("/", 1)[-1]: r.query.get("workspaceId") for r in wdata_conn.requests if r.method == "GET"}
    assert reads == {"conn-1": "ws-b", "conn-2": "ws-a"}


def test_facets_serialise_to_openlineage_json(wdata_conn):
    from openlineage.client.serde import Serde

    hook = WdataHook()
    lineage = lineage_for_refresh(hook, refresh_runs(refresh_to_the_end(hook, ["conn-1"])))
    facet = json.loads(Serde.to_json(lineage.run_facets[RUN_FACET_KEY]))
    assert facet["batchId"] and facet["connections"][0]["connectionId"] == "conn-1"
    assert facet["_producer"] and facet["_schemaURL"]


def test_the_asset_converter():
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    dataset = convert_asset_to_openlineage(connection_asset("conn-1"), None)
    assert (dataset.namespace, dataset.name) == ("wdata", "connections/conn-1")
    dataset = translate_airflow_asset(connection_asset("c:1", "ws"), None)  # through Airflow's registry
    assert (dataset.namespace, dataset.name) == ("wdata", "workspaces/ws/connections/c%3A1")


class _Refresh(WdataStartLineageMixin):
    def __init__(self, hook, **named):
        self.hook = hook
        self.workspace_id = None
        self.__dict__.update(named)


def test_only_the_start_operators_name_their_datasets_on_start():
    from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
    from airflow_provider_wdata.sensors.wdata import ConnectionRefreshSensor

    assert hasattr(WdataRefreshBatchOperator, "get_openlineage_facets_on_start")
    # A sensor in reschedule mode starts at every poke: it would read its connections each time.
    assert issubclass(ConnectionRefreshSensor, WdataLineageMixin)
    assert not hasattr(ConnectionRefreshSensor, "get_openlineage_facets_on_start")


def test_the_mixin_before_and_after_a_run(wdata_conn):
    hook = WdataHook()
    operator = _Refresh(hook, connections=["conn-1", {"connection_id": "conn-2"}])
    planned = operator.get_openlineage_facets_on_failure(None)
    assert [d.name for d in planned.outputs] == ["spreadsheet/dst-conn-1", "spreadsheet/dst-conn-2"]
    start = operator.get_openlineage_facets_on_start()  # the OpenLineage provider passes nothing
    assert (start.inputs, start.outputs) == (planned.inputs, planned.outputs) and not start.run_facets
    event = {"status": "success", "batch_id": "b", "message": "", "summary": refresh_to_the_end(hook, ["conn-1"])}
    operator.record_wdata_lineage(event)
    done = operator.get_openlineage_facets_on_complete(None)
    assert [d.name for d in done.inputs] == ["wdata_table/src-conn-1"]
    assert done.run_facets[RUN_FACET_KEY].connections[0]["sourceStatus"] == "complete"
    assert connection_reads(wdata_conn, "conn-1") == 1
    single = _Refresh(hook, connection_id="conn-3")
    assert [d.name for d in single.get_openlineage_facets_on_complete(None).inputs] == ["spreadsheet/src-conn-3"]


# ----------------------------------------------------------------------- end to end, once the operators are wired


def _operators_are_wired() -> bool:
    from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator

    return hasattr(WdataRefreshBatchOperator, "get_openlineage_facets_on_complete")


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the example DAGs are written for Airflow 3")
@pytest.mark.skipif(
    not _operators_are_wired(),
    reason="NEEDS WIRING: WdataRefreshBatchOperator has no get_openlineage_facets_on_complete yet",
)
def test_dag_test_of_the_example_emits_a_complete_event_with_sources_and_destinations(wdata_conn, tmp_path):
    """`airflow dags test wdata_refresh_assets` with OpenLineage's file transport: the refresh task's COMPLETE
    event has the connections' sources as inputs and their destinations as outputs."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    events_file = tmp_path / "openlineage.jsonl"
    fernet_key = Fernet.generate_key().decode()
    env = airflow_env(home, EXAMPLES, wdata_conn) | {
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "wdata-tests",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run(
        [AIRFLOW, "dags", "test", "wdata_refresh_assets"], env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for _ in range(50):  # the listener may emit from a thread after the task ended
        if events_file.exists() and '"COMPLETE"' in events_file.read_text():
            break
        time.sleep(0.2)
    text = events_file.read_text() if events_file.exists() else ""
    scan_text("OpenLineage events of `airflow dags test wdata_refresh_assets`", text)
    scan_text("Airflow home after the OpenLineage run", airflow_home_text(home, fernet_key))
    assert leaks_in(text, tokens=wdata_conn.issued_tokens) == []
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    [complete] = [
        e
        for e in events
        if e.get("eventType") == "COMPLETE" and e["job"]["name"] == "wdata_refresh_assets.refresh_connections"
    ]
    namespace = f"wdata://127.0.0.1:{wdata_conn.port}"
    assert sorted((d["namespace"], d["name"]) for d in complete["inputs"]) == [
        (namespace, "spreadsheet/src-conn-3"),
        (namespace, "wdata_table/src-conn-1"),
        (namespace, "wdata_table/src-conn-2"),
    ]
    assert sorted((d["namespace"], d["name"]) for d in complete["outputs"]) == [
        (namespace, "spreadsheet/dst-conn-1"),
        (namespace, "spreadsheet/dst-conn-2"),
        (namespace, "wdata_table/dst-conn-3"),
    ]
    starts = [
        e
        for e in events
        if e.get("eventType") == "START" and e["job"]["name"] == "wdata_refresh_assets.refresh_connections"
    ]
    assert starts, "a START event"
    for start, side in itertools.product(starts, ("inputs", "outputs")):
        # START (again when the task resumes from its deferral) names what COMPLETE does, not the wdata:// assets
        assert sorted(d["name"] for d in start[side]) == sorted(d["name"] for d in complete[side]), side
    facet = complete["run"]["facets"][RUN_FACET_KEY]
    assert facet["batchId"] in wdata_conn.batches
    assert sorted(c["connectionId"] for c in facet["connections"]) == ["conn-1", "conn-2", "conn-3"]
    assert os.path.getsize(events_file) > 0
