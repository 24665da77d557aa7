"""The decision rules, table-driven: every pair of the five statuses, for the batch and for a child."""

from __future__ import annotations

import itertools

import pytest

from airflow_provider_wdata.decision import (
    MAX_ERROR_CHARS,
    MAX_LISTED_FAILURES,
    Outcome,
    RunState,
    decide_batch,
    decide_connection_run,
    run_state,
)
from airflow_provider_wdata.models import ConnectionRun, RefreshBatch

STATUSES = ["not_started", "running", "complete", "error", "cancelled"]

# (sourceStatus, destinationStatus) -> state, written out for all 25 pairs.
RUN_STATE_TABLE = """
not_started not_started in_progress
not_started running     in_progress
not_started complete    in_progress
not_started error       failed
not_started cancelled   cancelled
running     not_started in_progress
running     running     in_progress
running     complete    in_progress
running     error       failed
running     cancelled   cancelled
complete    not_started in_progress
complete    running     in_progress
complete    complete    complete
complete    error       failed
complete    cancelled   cancelled
error       not_started failed
error       running     failed
error       complete    failed
error       error       failed
error       cancelled   failed
cancelled   not_started cancelled
cancelled   running     cancelled
cancelled   complete    cancelled
cancelled   error       failed
cancelled   cancelled   cancelled
"""
RUN_STATES = {
    (src, dst): RunState(state) for src, dst, state in (line.split() for line in RUN_STATE_TABLE.strip().splitlines())
}

# batch state, child state -> outcome for (default, fail_fast, tolerate_cancelled, both).
OUTCOME_TABLE = """
in_progress in_progress running running running running
in_progress complete    running running running running
in_progress failed      running failed  running failed
in_progress cancelled   running failed  running running
complete    in_progress running running running running
complete    complete    success success success success
complete    failed      failed  failed  failed  failed
complete    cancelled   failed  failed  success success
failed      in_progress failed  failed  failed  failed
failed      complete    failed  failed  failed  failed
failed      failed      failed  failed  failed  failed
failed      cancelled   failed  failed  failed  failed
cancelled   in_progress failed  failed  failed  failed
cancelled   complete    failed  failed  failed  failed
cancelled   failed      failed  failed  failed  failed
cancelled   cancelled   failed  failed  failed  failed
"""
OPTIONS = [
    {"fail_fast": False, "tolerate_cancelled": False},
    {"fail_fast": True, "tolerate_cancelled": False},
    {"fail_fast": False, "tolerate_cancelled": True},
    {"fail_fast": True, "tolerate_cancelled": True},
]
OUTCOMES = {
    (RunState(batch), RunState(child)): [Outcome(o) for o in outcomes]
    for batch, child, *outcomes in (line.split() for line in OUTCOME_TABLE.strip().splitlines())
}


def child(src: str | None, dst: str | None, error: str | None = None, cid: str = "c1") -> ConnectionRun:
    return ConnectionRun(connection_id=cid, job_id=f"job-{cid}", source_status=src, destination_status=dst, error=error)


def batch(src: str | None, dst: str | None, children=(), error: str | None = None) -> RefreshBatch:
    return RefreshBatch(
        batch_refresh_id="b1", source_status=src, destination_status=dst, error=error, child_refreshes=tuple(children)
    )


@pytest.mark.parametrize(("src", "dst"), itertools.product(STATUSES, STATUSES))
def test_run_state_of_every_status_pair(src, dst):
    assert run_state(src, dst, None) is RUN_STATES[(src, dst)]
    assert run_state(src.upper(), dst.title(), "") is RUN_STATES[(src, dst)], "statuses compare case-insensitively"


@pytest.mark.parametrize(("bsrc", "bdst"), itertools.product(STATUSES, STATUSES))
@pytest.mark.parametrize(("csrc", "cdst"), itertools.product(STATUSES, STATUSES))
def test_batch_outcome_for_every_batch_and_child_status_pair(bsrc, bdst, csrc, cdst):
    expected = OUTCOMES[(RUN_STATES[(bsrc, bdst)], RUN_STATES[(csrc, cdst)])]
    for options, outcome in zip(OPTIONS, expected, strict=True):
        decision = decide_batch(
            batch(bsrc, bdst, [child(csrc, cdst), child("complete", "complete", cid="c2")]), **options
        )
        assert decision.outcome is outcome, (options, decision.summary)


def test_complete_statuses_with_error_text_fail_and_cancelled_ones_stay_cancelled():
    assert run_state("complete", "complete", "Could not read source") is RunState.FAILED
    assert run_state("running", "not_started", "boom") is RunState.IN_PROGRESS
    assert run_state("complete", "complete", "   ") is RunState.COMPLETE
    # The text of a cancelled run says why it was cancelled (cancelUnwritables): it is still cancelled.
    assert run_state("cancelled", "complete", "boom") is RunState.CANCELLED
    assert run_state("cancelled", "cancelled", "destination cannot be written") is RunState.CANCELLED
    assert run_state("error", "cancelled", "") is RunState.FAILED


@pytest.mark.parametrize("destination", ["cancelled", "not_started"])
def test_tolerate_cancelled_accepts_a_child_cancelled_with_its_reason(destination):
    unwritable = child("cancelled", destination, "Simulated: refresh cancelled (cancelUnwritables)", cid="c2")
    refresh = batch("complete", "complete", [child("complete", "complete"), unwritable])
    assert decide_batch(refresh, tolerate_cancelled=True).outcome is Outcome.SUCCESS
    refused = decide_batch(refresh)
    assert refused.outcome is Outcome.FAILED and [run.state for run in refused.failed] == [RunState.CANCELLED]
    assert "pass tolerate_cancelled=True to accept them" in refused.failure_report()


def test_tolerate_cancelled_accepts_a_cancelled_single_run_but_not_a_batch_cancelled_as_a_whole():
    run = child("cancelled", "cancelled")
    accepted = decide_connection_run(run, tolerate_cancelled=True)
    assert accepted.outcome is Outcome.SUCCESS and "cancelled, accepted with tolerate_cancelled" in accepted.summary
    assert decide_connection_run(run).outcome is Outcome.FAILED
    children = [child("cancelled", "cancelled"), child("cancelled", "cancelled", cid="c2")]
    whole = batch("cancelled", "cancelled", children)
    decision = decide_batch(whole, tolerate_cancelled=True)
    assert decision.outcome is Outcome.FAILED
    assert "tolerate_cancelled" not in decision.failure_report(), "advice that cannot help is not given"


def test_complete_batch_with_no_children_succeeds_and_running_one_waits():
    assert decide_batch(batch("complete", "complete")).outcome is Outcome.SUCCESS
    assert decide_batch(batch("running", "complete")).outcome is Outcome.RUNNING


def test_fail_fast_fails_on_first_failed_child_while_others_run():
    b = batch("running", "running", [child("error", "cancelled", "bad sheet"), child("running", "running", cid="c2")])
    assert decide_batch(b).outcome is Outcome.RUNNING
    decision = decide_batch(b, fail_fast=True)
    assert decision.outcome is Outcome.FAILED
    assert [f.connection_id for f in decision.failed] == ["c1"]
    assert "bad sheet" in decision.failure_report()


def test_failed_children_are_listed_with_ids_statuses_and_error():
    b = batch(
        "complete",
        "complete",
        [child("error", "cancelled", "Source file missing", cid="c1"), child("complete", "complete", cid="c2")],
    )
    decision = decide_batch(b)
    assert decision.outcome is Outcome.FAILED
    report = decision.failure_report()
    assert "1 of 2 connection refreshes failed" in report
    assert "connection c1 (job job-c1) failed: source=error, destination=cancelled: Source file missing" in report
    assert "c2" not in report.split("\n", 1)[1]


def test_batch_error_text_is_in_the_summary():
    decision = decide_batch(batch("error", "error", error="Batch could not start"))
    assert decision.outcome is Outcome.FAILED
    assert "Batch could not start" in decision.summary


def test_unknown_status_is_in_progress_and_reported():
    b = batch("complete", "complete", [child("QUEUED_FOR_LATER", "complete")])
    decision = decide_batch(b)
    assert decision.outcome is Outcome.RUNNING
    assert decision.unknown_statuses == {"queued_for_later"}
    assert decide_batch(batch("complete", "complete", [child("complete", "complete")])).unknown_statuses == set()


@pytest.mark.parametrize("data", [{}, {"batchRefreshId": "b1"}, {"sourceStatus": None, "destinationStatus": None}])
def test_missing_or_null_fields_read_as_running(data):
    decision = decide_batch(RefreshBatch.from_api(data))
    assert decision.outcome is Outcome.RUNNING
    assert decision.unknown_statuses == set()


def test_children_missing_fields_or_not_a_list_are_tolerated():
    b = RefreshBatch.from_api(
        {"sourceStatus": "complete", "destinationStatus": "complete", "childRefreshes": [{}, None, 3]}
    )
    assert len(b.child_refreshes) == 3
    assert decide_batch(b).outcome is Outcome.RUNNING
    b = RefreshBatch.from_api({"sourceStatus": "complete", "destinationStatus": "complete", "childRefreshes": "x"})
    assert b.child_refreshes == ()
    assert decide_batch(b).outcome is Outcome.SUCCESS


def test_long_errors_and_many_failures_are_trimmed():
    children = [child("error", "error", "x" * 5000, cid=f"c{i}") for i in range(MAX_LISTED_FAILURES + 7)]
    report = decide_batch(batch("complete", "complete", children)).failure_report()
    lines = report.splitlines()
    assert len(lines) == 1 + MAX_LISTED_FAILURES + 1
    assert lines[-1].strip() == "... and 7 more"
    assert all(len(line) < MAX_ERROR_CHARS + 200 for line in lines)


def test_single_connection_run_uses_the_same_rules():
    assert decide_connection_run(child("complete", "complete")).outcome is Outcome.SUCCESS
    assert decide_connection_run(child("running", "not_started")).outcome is Outcome.RUNNING
    failed = decide_connection_run(child("complete", "error", "Sheet locked"))
    assert failed.outcome is Outcome.FAILED
    assert [f.error for f in failed.failed] == ["Sheet locked"]
    assert "Sheet locked" in failed.failure_report()
    assert decide_connection_run(child("cancelled", "cancelled")).outcome is Outcome.FAILED


def test_a_batch_read_without_children_is_still_a_batch_for_tolerate_cancelled():
    # Any field may be missing: a cancelled batch whose read lists no children is no cancelled connection refresh.
    for children in ((), None):
        refresh = RefreshBatch(batch_refresh_id="b1", source_status="cancelled", destination_status="cancelled")
        if children is None:
            refresh = RefreshBatch.from_api(
                {
                    "batchRefreshId": "b1",
                    "sourceStatus": "cancelled",
                    "destinationStatus": "cancelled",
                    "childRefreshes": None,
                }
            )
        decision = decide_batch(refresh, tolerate_cancelled=True)
        assert decision.outcome is Outcome.FAILED and decision.failed_as_a_whole


def test_no_tolerate_cancelled_hint_for_a_batch_that_failed_as_a_whole():
    refresh = batch("complete", "complete", [child("cancelled", "cancelled"), child("complete", "complete", cid="c2")])
    refresh = RefreshBatch(
        batch_refresh_id="b1",
        source_status="complete",
        destination_status="complete",
        error="the batch could not be written",
        child_refreshes=refresh.child_refreshes,
    )
    decision = decide_batch(refresh)
    assert (
        decision.outcome is Outcome.FAILED and decide_batch(refresh, tolerate_cancelled=True).outcome is Outcome.FAILED
    )
    assert "tolerate_cancelled" not in decision.failure_report(), "it could not make this batch pass"
