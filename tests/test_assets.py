"""Wdata connection assets: URIs, the scheme's registration with Airflow, outlets, asset events, hook lineage."""

from __future__ import annotations

import importlib
import json
import sys
import urllib.parse
import warnings
from pathlib import Path

import pytest

from airflow_provider_wdata import assets, get_provider_info
from airflow_provider_wdata._compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_2_PLUS, DEFAULT_OUTLETS, Asset
from airflow_provider_wdata.assets import (
    MalformedWdataUriError,
    connection_asset,
    default_outlets,
    normalize_uri,
    parse_connection_uri,
    record_asset_events,
    refresh_runs,
    report_hook_lineage,
)
from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator, WdataRefreshConnectionOperator


def normalized(uri: str) -> str:
    return urllib.parse.urlunsplit(normalize_uri(urllib.parse.urlsplit(uri)))


# ------------------------------------------------------------------------------------------------------ URIs


def test_the_uri_is_computed_from_the_ids_alone_and_is_stable():
    assert connection_asset("conn-1").uri == "wdata://connections/conn-1"
    assert connection_asset("conn-1", "ws-7").uri == "wdata://workspaces/ws-7/connections/conn-1"
    assert connection_asset("conn-1") == connection_asset("conn-1")
    assert connection_asset("conn-1", "ws-7") == connection_asset("conn-1", workspace_id="ws-7")
    assert connection_asset("conn-1") != connection_asset("conn-1", "ws-7"), "the workspace is part of the identity"
    assert isinstance(connection_asset("conn-1"), Asset)


def test_ids_are_percent_encoded_and_decode_back():
    asset = connection_asset("a:b@é~x", "w s"[:1] + "s")
    assert asset.uri == "wdata://workspaces/ws/connections/a%3Ab%40%C3%A9~x"
    assert asset.uri.isascii()
    assert parse_connection_uri(asset.uri) == ("a:b@é~x", "ws")
    assert normalized(asset.uri) == asset.uri, "a built URI is already canonical"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("wdata://connections/conn-1", "wdata://connections/conn-1"),
        ("wdata://Connections/conn%2D1/", "wdata://connections/conn-1"),
        ("wdata://connections/conn-1#section", "wdata://connections/conn-1"),
        ("wdata://WORKSPACES/ws-7/Connections/conn-1", "wdata://workspaces/ws-7/connections/conn-1"),
        ("wdata://connections/a:b", "wdata://connections/a%3Ab"),
        ("wdata://connections/a%3ab", "wdata://connections/a%3Ab"),
    ],
)
def test_the_handler_normalises(given, canonical):
    assert normalized(given) == canonical
    assert normalized(canonical) == canonical


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("wdata://connections", "the path must be exactly '/<connection_id>'"),
        ("wdata://connections/", "the path must be exactly '/<connection_id>'"),
        ("wdata://connections/a/b", "the path must be exactly '/<connection_id>'"),
        ("wdata://connection/conn-1", "'connection' is neither 'connections' nor 'workspaces'"),
        ("wdata://user@connections/conn-1", "is neither 'connections' nor 'workspaces'"),
        ("wdata://connections:8080/conn-1", "is neither 'connections' nor 'workspaces'"),
        ("wdata://connections/conn-1?x=1", "takes no query"),
        ("wdata://workspaces/ws/conn-1", "'/<workspace_id>/connections/<connection_id>'"),
        ("wdata://workspaces/ws/tables/conn-1", "'/<workspace_id>/connections/<connection_id>'"),
        ("wdata://workspaces//connections/conn-1", "the workspace id is empty"),
        ("wdata://connections/a%2Fb", "connection_id 'a/b' is not a valid Wdata id"),
        ("wdata://connections/..", "connection_id '..' is not a valid Wdata id"),
        ("wdata://connections/a%20b", "is not a valid Wdata id"),
        ("wdata://connections/%FF", "not valid percent-encoded UTF-8"),
        (f"wdata://workspaces/{'w' * 41}/connections/c", "workspace_id must be a string of 1 to 40 characters"),
    ],
)
def test_the_handler_rejects_malformed_uris_saying_why(uri, reason):
    with pytest.raises(MalformedWdataUriError) as caught:
        normalized(uri)
    message = str(caught.value)
    assert reason in message
    assert message.startswith(f"Malformed Wdata asset URI {uri!r}")
    assert "wdata://connections/<connection_id>" in message, "it shows the expected shapes"
    assert isinstance(caught.value, ValueError), "Airflow expects a ValueError from a scheme handler"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("",), "connection_id must be a non-empty string"),
        (("a/b",), "connection_id 'a/b' is not a valid Wdata id"),
        ((None,), "connection_id must be a non-empty string"),
        (("conn-1", ""), "workspace_id must be a string of 1 to 40 characters"),
    ],
)
def test_invalid_ids_are_refused_with_a_clear_error(args, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        connection_asset(*args)


@pytest.mark.parametrize("workspace_id", ["V1NfMTIz+/==", "ws/1", "ws 1", "ws%1", "ws?#1", "..", "."])
def test_any_workspace_id_the_api_takes_makes_an_asset(workspace_id):
    # The API takes the workspace id in a query string, where any character may appear: the URI encodes it.
    asset = connection_asset("conn-1", workspace_id)
    assert asset.uri.isascii() and asset.uri.count("/") == 5, asset.uri
    assert "/./" not in asset.uri and "/../" not in asset.uri, "no dot segment that URL handling would collapse"
    assert parse_connection_uri(asset.uri) == ("conn-1", workspace_id)
    assert normalized(asset.uri) == asset.uri
    assert Asset(uri=asset.uri) == asset, "Airflow's own normalisation keeps it"
    assert default_outlets(["conn-1"], workspace_id=workspace_id) == [asset]


def test_parse_connection_uri():
    assert parse_connection_uri("wdata://connections/conn-1") == ("conn-1", None)
    assert parse_connection_uri("wdata://workspaces/ws/connections/c%3A1") == ("c:1", "ws")
    assert parse_connection_uri("s3://bucket/key") is None
    assert parse_connection_uri("wdata://connections/a%2Fb") is None


# ------------------------------------------------------------------------------- registration with Airflow


def _providers_manager():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_provider_info_registers_the_scheme_for_both_airflow_generations():
    info = get_provider_info()
    assert info["asset-uris"] == info["dataset-uris"]
    [entry] = info["asset-uris"]
    assert entry["schemes"] == ["wdata"]
    for key in ("handler", "factory", "to_openlineage_converter"):
        module, _, name = entry[key].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), entry[key]


def test_provider_info_matches_this_airflows_schema():
    import jsonschema
    from airflow import providers_manager

    schema = json.loads(Path(providers_manager.__file__).with_name("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def _registries():
    """(handlers, factories, converters) of each providers manager this Airflow has."""
    if not AIRFLOW_V_3_0_PLUS:
        manager = _providers_manager()
        yield manager.dataset_uri_handlers, manager.dataset_factories, manager.dataset_to_openlineage_converters
        return
    managers = [_providers_manager()]
    try:  # what tasks read (the scheduler's manager delegates to it from 3.2, with a deprecation warning)
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        managers.append(ProvidersManagerTaskRuntime())
    except ImportError:
        pass
    for manager in managers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield manager.asset_uri_handlers, manager.asset_factories, manager.asset_to_openlineage_converters


def test_airflows_providers_manager_resolves_the_scheme():
    from airflow_provider_wdata.openlineage import convert_asset_to_openlineage

    for handlers, factories, converters in _registries():
        assert handlers["wdata"] is assets.normalize_uri
        assert factories["wdata"] is assets.create_asset
        assert converters["wdata"] is convert_asset_to_openlineage


def test_airflow_normalises_a_hand_written_uri_through_the_handler():
    assert Asset(uri="wdata://Connections/conn%2D1/").uri == "wdata://connections/conn-1"
    assert Asset(uri="wdata://connections/conn-1") == connection_asset("conn-1")


def test_airflow_refuses_a_malformed_wdata_uri():
    if AIRFLOW_V_3_0_PLUS:
        with pytest.raises(ValueError, match="Malformed Wdata asset URI 'wdata://connections/a%2Fb'"):
            Asset(uri="wdata://connections/a%2Fb")
    else:  # Airflow 2 only warns unless [core] strict_dataset_uri_validation is on
        with pytest.warns(UserWarning, match="Malformed Wdata asset URI"):
            Asset(uri="wdata://connections/a%2Fb")


def test_the_factory_builds_the_same_asset():
    assert assets.create_asset(connection_id="conn-1") == connection_asset("conn-1")
    assert assets.create_asset(connection_id="c", workspace_id="w").uri == "wdata://workspaces/w/connections/c"


# ---------------------------------------------------------------------------------------------- outlets


def test_default_outlets_one_per_connection_in_order_without_duplicates():
    outlets = default_outlets(["conn-2", "conn-1", {"connection_id": "conn-2"}], None)
    assert [o.uri for o in outlets] == ["wdata://connections/conn-2", "wdata://connections/conn-1"]


def test_default_outlets_with_workspaces():
    outlets = default_outlets(["conn-1", {"connection_id": "conn-2", "workspace_id": "ws-b"}], "ws-a")
    assert [o.uri for o in outlets] == [
        "wdata://workspaces/ws-a/connections/conn-1",
        "wdata://workspaces/ws-b/connections/conn-2",
    ]
    assert default_outlets([], None) == []


def test_default_outlets_refuses_an_invalid_id():
    with pytest.raises(ValueError, match="not a valid Wdata id"):
        default_outlets(["conn-1", "bad/id"], None)


BATCH = {
    "batch_refresh_id": "batch-9",
    "source_status": "complete",
    "destination_status": "complete",
    "child_refreshes": [
        {
            "connection_id": "conn-1",
            "job_id": "job-1",
            "source_status": "complete",
            "destination_status": "complete",
            "updated": "2026-01-01T10:00:00Z",
            "error": None,
            "source_parameters": {"year": 2026},
        },
        {
            "connection_id": "conn-2",
            "job_id": "job-2",
            "source_status": "complete",
            "destination_status": "complete",
            "updated": "2026-01-01T10:00:05Z",
        },
    ],
}


def test_refresh_runs_of_a_batch_a_run_and_a_final_event():
    runs = refresh_runs(BATCH)
    assert [(r["connection_id"], r["batch_id"]) for r in runs] == [("conn-1", "batch-9"), ("conn-2", "batch-9")]
    run = BATCH["child_refreshes"][1]
    assert refresh_runs(run) == [run]
    event = {"status": "failed", "batch_id": "batch-9", "message": "m", "summary": BATCH, "failed": []}
    assert refresh_runs(event) == runs
    started = {"status": "error", "connection_id": "c", "job_id": "j", "message": "m", "summary": None}
    assert refresh_runs(started) == [{"connection_id": "c", "job_id": "j"}]
    assert refresh_runs(None) == refresh_runs("batch-9") == refresh_runs({}) == []


def _outlet_events():
    """Airflow's own outlet_events accessor, as a task's context holds it."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time.context import OutletEventAccessors
    else:
        from airflow.utils.context import OutletEventAccessors  # type: ignore[no-redef]
    return OutletEventAccessors()


def test_record_asset_events_puts_what_the_refresh_did_on_each_connection_event():
    outlet_events = _outlet_events()
    other = Asset(uri="s3://bucket/report.csv")
    outlets = [*default_outlets(["conn-1", "conn-2", "conn-3"], None), other]
    recorded = record_asset_events({"outlet_events": outlet_events}, outlets, refresh_runs(BATCH))
    assert recorded == 2
    assert outlet_events[connection_asset("conn-1")].extra == {
        "connection_id": "conn-1",
        "batch_id": "batch-9",
        "job_id": "job-1",
        "source_status": "complete",
        "destination_status": "complete",
        "updated": "2026-01-01T10:00:00Z",
    }
    assert outlet_events[connection_asset("conn-2")].extra["job_id"] == "job-2"
    assert outlet_events[connection_asset("conn-3")].extra == {}, "no run for it: no extra"
    assert outlet_events[other].extra == {}, "other outlets are left alone"
    json.dumps(outlet_events[connection_asset("conn-1")].extra)


def test_record_asset_events_of_one_connection_refresh_with_a_workspace():
    outlet_events = _outlet_events()
    asset = connection_asset("conn-1", "ws-1")
    run = {"connection_id": "conn-1", "job_id": "job-7", "source_status": "complete", "destination_status": "complete"}
    assert record_asset_events({"outlet_events": outlet_events}, [asset], [run]) == 1
    assert outlet_events[asset].extra == {
        "connection_id": "conn-1",
        "workspace_id": "ws-1",
        "job_id": "job-7",
        "source_status": "complete",
        "destination_status": "complete",
    }


def test_record_asset_events_keeps_extras_the_author_set_and_tolerates_no_accessor():
    outlet_events = _outlet_events()
    asset = connection_asset("conn-1")
    outlet_events[asset].extra["rows"] = 12
    record_asset_events({"outlet_events": outlet_events}, [asset], refresh_runs(BATCH))
    assert outlet_events[asset].extra["rows"] == 12
    assert outlet_events[asset].extra["job_id"] == "job-1"
    assert record_asset_events({}, [asset], refresh_runs(BATCH)) == 0


# ------------------------------------------------------------------------------------------- hook lineage


@pytest.fixture
def hook_lineage_collector(monkeypatch):
    """A real collector in place of the global one (which is a no-op without a lineage reader)."""
    if AIRFLOW_V_3_2_PLUS:
        import airflow.sdk.lineage as module
    else:
        import airflow.lineage.hook as module  # type: ignore[no-redef]
    collector = module.HookLineageCollector()
    monkeypatch.setattr(module, "get_hook_lineage_collector", lambda: collector)
    return collector


def test_report_hook_lineage_adds_each_connection_as_an_output(hook_lineage_collector):
    hook = object()
    report_hook_lineage(hook, ["conn-1", {"connection_id": "conn-2"}], "ws-1")
    if AIRFLOW_V_3_0_PLUS:
        outputs = hook_lineage_collector.collected_assets.outputs
    else:
        outputs = hook_lineage_collector.collected_datasets.outputs
    uris = [getattr(entry, "asset", None) or entry.dataset for entry in outputs]
    assert [u.uri for u in uris] == [
        "wdata://workspaces/ws-1/connections/conn-1",
        "wdata://workspaces/ws-1/connections/conn-2",
    ]
    assert all(entry.context is hook for entry in outputs)


def test_report_hook_lineage_never_fails_the_refresh(monkeypatch):
    def broken(context, asset):
        raise RuntimeError("collector broke")

    monkeypatch.setattr(assets, "add_hook_output_asset", broken)
    report_hook_lineage(object(), ["conn-1"], None)
    report_hook_lineage(object(), ["bad/id"], None)


# --------------------------------------------------------------------------- without the OpenLineage provider


def test_everything_but_openlineage_works_without_the_openlineage_provider(monkeypatch):
    # Airflow loads its plugins (the OpenLineage one among them) once: load them while the provider is there.
    report_hook_lineage(object(), ["conn-1"], None)
    blocked = ("openlineage", "airflow.providers.openlineage", "airflow.providers.common.compat.openlineage")
    for name in list(sys.modules):
        if name in blocked or name.startswith(tuple(f"{b}." for b in blocked)):
            monkeypatch.delitem(sys.modules, name)
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    for name in ("airflow_provider_wdata.assets", "airflow_provider_wdata.openlineage"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError):
        import airflow.providers.openlineage  # noqa: F401

    fresh_assets = importlib.import_module("airflow_provider_wdata.assets")
    fresh_openlineage = importlib.import_module("airflow_provider_wdata.openlineage")
    info = get_provider_info()
    assert info["asset-uris"][0]["schemes"] == ["wdata"]
    outlets = fresh_assets.default_outlets(["conn-1"], None)
    outlet_events = _outlet_events()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh_assets.record_asset_events({"outlet_events": outlet_events}, outlets, refresh_runs(BATCH))
    assert outlet_events[outlets[0]].extra["batch_id"] == "batch-9"
    fresh_assets.report_hook_lineage(object(), ["conn-1"], None)
    assert fresh_openlineage.dataset_namespace("https://h.app.wdesk.com/s/wdata/prep") == "wdata://h.app.wdesk.com"
    with pytest.raises(ImportError):
        fresh_openlineage.convert_asset_to_openlineage(outlets[0], None)


# ------------------------------------------------------------------------------------------ operator outlets


needs_default_outlets = pytest.mark.skipif(not DEFAULT_OUTLETS, reason="no default outlets on Airflow 3.0")
FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2}


def uris(operator) -> list[str]:
    return [outlet.uri for outlet in operator.outlets]


@needs_default_outlets
def test_the_start_operators_declare_one_asset_per_connection():
    batch = WdataRefreshBatchOperator(
        task_id="a", connections=["conn-1", {"connection_id": "conn-2", "workspace_id": "ws-b"}], workspace_id="ws-a"
    )
    assert uris(batch) == ["wdata://workspaces/ws-a/connections/conn-1", "wdata://workspaces/ws-b/connections/conn-2"]
    one = WdataRefreshConnectionOperator(task_id="b", connection_id="conn-3")
    assert uris(one) == ["wdata://connections/conn-3"]


def test_outlets_the_author_passes_win_and_emit_assets_turns_the_default_off():
    mine = Asset(uri="s3://bucket/report.csv")
    assert uris(WdataRefreshBatchOperator(task_id="a", connections=["conn-1"], outlets=[mine])) == [mine.uri]
    assert uris(WdataRefreshBatchOperator(task_id="b", connections=["conn-1"], emit_assets=False)) == []
    assert uris(WdataRefreshConnectionOperator(task_id="c", connection_id="conn-1", emit_assets=False)) == []


def test_no_default_outlets_for_templated_connections_or_a_task_that_does_not_wait():
    templated = WdataRefreshBatchOperator(task_id="a", connections="{{ params.connections }}")
    not_waiting = WdataRefreshBatchOperator(task_id="b", connections=["conn-1"], wait_for_completion=False)
    assert uris(templated) == [] and uris(not_waiting) == []


@pytest.mark.skipif(DEFAULT_OUTLETS, reason="Airflow 3.0 only")
def test_airflow_3_0_gets_no_default_outlets():
    assert uris(WdataRefreshBatchOperator(task_id="a", connections=["conn-1"])) == []


class _TaskInstance:
    def xcom_push(self, key, value) -> None:
        pass


@needs_default_outlets
@pytest.mark.parametrize("kind", ["batch", "connection"])
def test_a_successful_refresh_puts_its_ids_and_statuses_on_each_asset_event(wdata_conn, kind):
    if kind == "batch":
        operator = WdataRefreshBatchOperator(
            task_id="a", connections=["conn-1", "conn-2"], poll_interval=0.05, deferrable=False, hook_params=FAST_HOOK
        )
    else:
        operator = WdataRefreshConnectionOperator(
            task_id="b", connection_id="conn-1", poll_interval=0.05, deferrable=False, hook_params=FAST_HOOK
        )
    outlet_events = _outlet_events()
    result = operator.execute({"ti": _TaskInstance(), "outlet_events": outlet_events})
    extra = outlet_events[connection_asset("conn-1")].extra
    assert (extra["source_status"], extra["destination_status"]) == ("complete", "complete")
    assert extra["updated"] and extra["connection_id"] == "conn-1"
    if kind == "batch":
        assert extra["batch_id"] == result["batch_refresh_id"]
        assert outlet_events[connection_asset("conn-2")].extra["batch_id"] == result["batch_refresh_id"]
    else:
        assert extra["job_id"] == result["job_id"]


@needs_default_outlets
def test_a_failed_refresh_records_no_asset_event_extra(wdata_conn):
    from airflow_provider_wdata.exceptions import WdataRefreshFailedError

    wdata_conn.script_connection("conn-2", outcome="error", error="Sheet locked")
    operator = WdataRefreshBatchOperator(
        task_id="a", connections=["conn-1", "conn-2"], poll_interval=0.05, deferrable=False, hook_params=FAST_HOOK
    )
    outlet_events = _outlet_events()
    with pytest.raises(WdataRefreshFailedError):
        operator.execute({"ti": _TaskInstance(), "outlet_events": outlet_events})
    assert outlet_events[connection_asset("conn-1")].extra == {}
