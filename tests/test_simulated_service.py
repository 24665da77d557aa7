"""Unit tests of the simulated Wdata service, called directly: no HTTP, no threads."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_wdata.testing import (
    BatchState,
    ConnectionState,
    ManualClock,
    RunState,
    SimulatedBatch,
    SimulatedConnection,
    SimulatedRun,
    SimulatedWdataService,
)
from airflow_provider_wdata.testing.validation import ServiceError


@pytest.fixture
def service() -> SimulatedWdataService:
    return SimulatedWdataService()


def statuses(body: dict[str, Any]) -> tuple[str, str]:
    return body["sourceStatus"], body["destinationStatus"]


def refused(call: Any, *args: Any) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        call(*args)
    return info.value


def test_old_names_are_aliases() -> None:
    assert (RunState, BatchState, ConnectionState) == (SimulatedRun, SimulatedBatch, SimulatedConnection)


def test_batch_progresses_one_poll_per_status_read(service: SimulatedWdataService) -> None:
    service.script_connection("conn-2", outcome="error", error="boom")
    started = service.start_batch([{"connectionId": "conn-1"}, {"connectionId": "conn-2"}], cancel_unwritables=False)
    batch_id = started["batchRefreshId"]
    assert statuses(started) == ("not_started", "not_started")
    assert statuses(service.batch_status_body(batch_id, None)) == ("running", "running")
    done = service.batch_status_body(batch_id, "ws-1")
    assert statuses(done) == ("error", "error")
    assert [statuses(c) for c in done["childRefreshes"]] == [("complete", "complete"), ("error", "error")]
    assert done["childRefreshes"][1]["error"] == "boom" and done["childRefreshes"][0]["workspaceId"] == "ws-1"
    assert service.batches[batch_id].polls == 2
    assert statuses(service.batch_body(batch_id)) == ("error", "error")
    assert service.batches[batch_id].polls == 2  # batch_body does not poll


def test_outcomes_are_taken_one_per_refresh_and_the_last_repeats(service: SimulatedWdataService) -> None:
    service.script_connection("conn-2", outcomes=["error", "cancelled", "complete"], polls_to_finish=0)
    assert service.connections["conn-2"].outcome == "error"
    first = service.start_batch([{"connectionId": "conn-2"}], cancel_unwritables=False)["childRefreshes"][0]
    second = service.start_refresh("conn-2", {})
    third = service.start_batch([{"connectionId": "conn-2"}, {"connectionId": "conn-2"}], cancel_unwritables=False)
    assert [statuses(r) for r in (first, second, *third["childRefreshes"])] == [
        ("error", "error"),
        ("cancelled", "cancelled"),
        ("complete", "complete"),
        ("complete", "complete"),
    ]
    runs = [r for r in service.runs.values() if r.connection_id == "conn-2"]
    assert [r.attempt for r in runs] == [1, 2, 3, 4]
    assert service.connections["conn-2"].refreshes == 4
    service.script_connection("conn-2", outcomes=["stuck"])  # a new script starts again from its first step
    assert service.connections["conn-2"].outcome == "stuck"
    with pytest.raises(ValueError):
        service.script_connection("conn-2", outcomes=[])
    with pytest.raises(ValueError):
        service.script_connection("conn-2", outcomes="error")  # a string is not a list of outcomes
    with pytest.raises(KeyError):
        service.script_connection("ghost", outcomes=["error"])


def test_add_connection_with_outcomes() -> None:
    service = SimulatedWdataService(polls_to_finish=0, connections=[])
    service.add_connection("c", outcomes=["queued", "unwritable"])
    assert statuses(service.start_refresh("c", {})) == ("not_started", "not_started")
    cancelled = service.start_batch([{"connectionId": "c"}], cancel_unwritables=True)["childRefreshes"][0]
    errored = service.start_batch([{"connectionId": "c"}], cancel_unwritables=False)["childRefreshes"][0]
    assert statuses(cancelled) == ("cancelled", "cancelled") and "cancelUnwritables" in cancelled["error"]
    assert statuses(errored) == ("error", "error") and "cannot be written" in errored["error"]


def test_refresh_starts_are_recorded_with_their_request(service: SimulatedWdataService) -> None:
    item = {"connectionId": "conn-1", "sourceParameters": {"year": 2024}, "workspaceId": "ws-2"}
    batch = service.start_batch([item, {"connectionId": "conn-3"}], cancel_unwritables=True)
    service.start_refresh("conn-1", {"usePreviousSourceParameters": True})
    runs = list(service.runs.values())
    assert [(r.connection_id, r.batch_id, r.attempt) for r in runs] == [
        ("conn-1", batch["batchRefreshId"], 1),
        ("conn-3", batch["batchRefreshId"], 1),
        ("conn-1", None, 2),
    ]
    assert runs[0].request == item and runs[2].request == {"usePreviousSourceParameters": True}
    assert runs[2].source_parameters == {"year": 2024}
    assert runs[0].workspace_id == "ws-2" and service.batches[batch["batchRefreshId"]].workspace_id == "ws-2"
    assert service.batches[batch["batchRefreshId"]].cancel_unwritables is True


def test_single_refresh_and_its_status(service: SimulatedWdataService) -> None:
    run = service.start_refresh("conn-3", {"connectionId": "conn-3"})
    seen = [statuses(service.refresh_status_body("conn-3", run["jobId"], None)) for _ in range(3)]
    assert seen == [("running", "running"), ("complete", "complete"), ("complete", "complete")]
    assert service.connection_body("conn-3", None)["lastRun"]["jobId"] == run["jobId"]
    assert refused(service.refresh_status_body, "conn-3", None, None).status == 400
    assert refused(service.refresh_status_body, "conn-3", "nope", None).status == 404
    assert refused(service.refresh_status_body, "ghost", "nope", None).message == "Connection ghost not found"
    assert refused(service.start_refresh, "ghost", {}).status == 404
    assert refused(service.start_refresh, "conn-1", None).details == [
        {"code": "required", "message": "missing request body", "target": "body"}
    ]
    mismatch = refused(service.start_refresh, "conn-1", {"connectionId": "conn-2"})
    assert mismatch.status == 400 and mismatch.details is not None and mismatch.details[0]["code"] == "mismatch"


def test_time_based_progress_shows_without_polling() -> None:
    clock = ManualClock()
    service = SimulatedWdataService(polls_to_finish=None, seconds_to_finish=5, clock=clock)
    job_id = service.start_refresh("conn-1", {})["jobId"]
    assert statuses(service.connection_body("conn-1", None)["lastRun"]) == ("not_started", "not_started")
    clock.advance(5)
    assert statuses(service.connection_body("conn-1", None)["lastRun"]) == ("complete", "complete")
    assert service.runs[("conn-1", job_id)].polls == 0


@pytest.mark.parametrize(
    ("items", "status", "target"),
    [
        ({"connectionId": "conn-1"}, 400, "body"),
        ([], 400, "body"),
        ([{"connectionId": "conn-1"}] * 101, 400, "body"),
        ([{"sourceParameters": {}}], 400, "[0].connectionId"),
        ([{"connectionId": "conn-1", "destinationParameters": []}], 400, "[0].destinationParameters"),
        ([{"connectionId": "conn-1", "workspaceId": "w" * 41}], 400, "[0].workspaceId"),
    ],
)
def test_bad_batches_are_refused(service: SimulatedWdataService, items: Any, status: int, target: str) -> None:
    error = refused(service.start_batch, items, False)
    assert error.status == status and error.details is not None
    assert target in [d["target"] for d in error.details]
    assert service.batches == {} and service.runs == {}


def test_unknown_connections_in_a_batch_are_404(service: SimulatedWdataService) -> None:
    error = refused(service.start_batch, [{"connectionId": "a"}, {"connectionId": "b"}], False)
    assert error.status == 404 and error.message == ["Connection a not found", "Connection b not found"]
    assert refused(service.batch_status_body, "nope", None).status == 404
    assert refused(service.batch_status_body, "nope", "w" * 41).status == 400
    assert service.connections["conn-1"].refreshes == 0


def test_list_connections_pages_with_cursors_and_filters(service: SimulatedWdataService) -> None:
    ids, cursor = [], None
    while True:
        page, cursor = service.list_connections({"limit": "2", **({"cursor": cursor} if cursor else {})})
        ids += [c["id"] for c in page]
        if cursor is None:
            break
    assert ids == ["conn-1", "conn-2", "conn-3"]
    assert [c["id"] for c in service.list_connections({"destinationType": "wdata_table"})[0]] == ["conn-3"]
    for bad in ({"limit": "0"}, {"offset": "x"}, {"cursor": "simcur1.!!"}, {"cursor": "other"}):
        assert refused(service.list_connections, bad).status == 400, bad


def test_raw_bodies_and_reset(service: SimulatedWdataService) -> None:
    service.put_raw_batch("raw", {"sourceStatus": "paused"})
    service.put_raw_run("ghost", "j", {"jobId": "j"})
    assert service.batch_status_body("raw", None) == {"sourceStatus": "paused"}
    assert service.refresh_status_body("ghost", "j", None) == {"jobId": "j"}
    service.start_refresh("conn-1", {})
    service.reset()
    assert service.runs == {} and service.batches == {}
    assert refused(service.batch_status_body, "raw", None).status == 404
    assert set(service.connections) == {"conn-1", "conn-2", "conn-3"}
    service.remove_connection("conn-1")
    assert refused(service.connection_body, "conn-1", None).status == 404


def test_batch_status_complete_mode_and_validation() -> None:
    service = SimulatedWdataService(polls_to_finish=0, batch_status="complete")
    service.script_connection("conn-1", outcome="error")
    body = service.start_batch([{"connectionId": "conn-1"}], cancel_unwritables=False)
    assert statuses(body) == ("complete", "complete") and statuses(body["childRefreshes"][0]) == ("error", "error")
    with pytest.raises(ValueError):
        SimulatedWdataService(batch_status="sometimes")
    with pytest.raises(ValueError):
        service.add_connection("conn-1")
    with pytest.raises(ValueError):
        service.add_connection("new", outcome="maybe")
