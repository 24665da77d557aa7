"""The models read from the service's JSON and given back as plain dicts (the refresh summary in events and XCom)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from airflow_provider_wdata.models import ConnectionRun, RefreshBatch, WdataConnection

CHILD = {
    "connectionId": "c1",
    "jobId": "j1",
    "sourceStatus": "complete",
    "destinationStatus": "complete",
    "error": None,
    "sourceParameters": {"year": 2026, "nested": {"a": [1, 2]}},
    "destinationParameters": {},
    "unknownField": "ignored",
}
BATCH = {"batchRefreshId": "b1", "sourceStatus": "complete", "destinationStatus": "complete", "childRefreshes": [CHILD]}


@pytest.mark.parametrize("model", [ConnectionRun, RefreshBatch, WdataConnection])
def test_to_dict_gives_every_field_in_order_for_models_read_or_built(model):
    read = model.from_api({})
    built = model()
    names = [f.name for f in dataclasses.fields(model)]
    assert list(read.to_dict()) == names
    assert list(built.to_dict()) == names
    assert read == built


def test_a_status_read_round_trips_to_plain_json():
    batch = RefreshBatch.from_api(BATCH)
    summary = batch.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    child = summary["child_refreshes"][0]
    assert child["connection_id"] == "c1"
    assert child["source_parameters"] == {"year": 2026, "nested": {"a": [1, 2]}}
    assert type(child["source_parameters"]) is dict and type(child["destination_parameters"]) is dict
    assert "unknown_field" not in child and "unknownField" not in child
    # The summary is a copy: changing it leaves the model as it was.
    child["source_parameters"]["year"] = 1999
    summary["source_status"] = "error"
    assert batch.child_refreshes[0].source_parameters["year"] == 2026
    assert batch.source_status == "complete"


def test_a_model_built_in_code_gives_the_same_summary_as_one_read_from_json():
    read = RefreshBatch.from_api(BATCH)
    built = RefreshBatch(
        batch_refresh_id="b1",
        source_status="complete",
        destination_status="complete",
        child_refreshes=(
            ConnectionRun(
                connection_id="c1",
                job_id="j1",
                source_status="complete",
                destination_status="complete",
                source_parameters={"year": 2026, "nested": {"a": [1, 2]}},
            ),
        ),
    )
    assert built.to_dict() == read.to_dict()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("running", "running"), (3, "3"), (2.5, "2.5"), (True, "True"), ({"a": 1}, None), ([1], None)],
)
def test_text_fields_take_what_the_service_sends_and_read_mistyped_values_sensibly(raw, expected):
    run = ConnectionRun.from_api({"sourceStatus": raw, "error": raw})
    assert run.source_status == expected and run.error == expected


def test_nested_mappings_are_read_only_and_odd_shapes_read_as_empty():
    run = ConnectionRun.from_api({"sourceParameters": {"k": "v"}, "destinationParameters": ["not", "a", "dict"]})
    with pytest.raises(TypeError):
        run.source_parameters["k"] = "changed"  # type: ignore[index]
    assert dict(run.destination_parameters) == {}
    assert RefreshBatch.from_api({"childRefreshes": "not a list"}).child_refreshes == ()
    assert RefreshBatch.from_api(["not", "an", "object"]) == RefreshBatch()
    assert WdataConnection.from_api({"lastRun": "not an object"}).last_run is None
