"""The one place that decides how a refresh stands. Pure: no I/O, no clock, no logging.

Poke mode, the triggers and the operators all call :func:`decide`; nothing else interprets statuses.

A *run* (a batch itself, one child of a batch, or a single connection refresh) has two statuses,
``sourceStatus`` and ``destinationStatus``, each one of ``not_started``, ``running``, ``complete``, ``error``,
``cancelled`` (compared case-insensitively), and an ``error`` text. A run:

- FAILED when either status is ``error``;
- CANCELLED when either status is ``cancelled``, whatever its error text (which says why: a connection the service
  cancelled under ``cancelUnwritables`` carries one);
- FAILED when both are ``complete`` and the error text is not empty;
- COMPLETE when both are ``complete``;
- otherwise still IN_PROGRESS (a status outside the five counts as in progress and is reported back in
  ``Decision.unknown_statuses`` so the caller can warn once).

The whole refresh (the run and its children):

- SUCCESS when the run is COMPLETE and every child is COMPLETE (CANCELLED children are accepted too with
  ``tolerate_cancelled``); a run with no children needs only itself COMPLETE (or CANCELLED, with
  ``tolerate_cancelled``: it is a connection refresh too);
- FAILED when the run FAILED or was CANCELLED (a batch failed or cancelled as a whole fails even with
  ``tolerate_cancelled``, whether or not its read lists children); once the run and all children are terminal
  and some child failed (CANCELLED counts as failed unless ``tolerate_cancelled``); with ``fail_fast``, as soon
  as any child failed;
- RUNNING otherwise.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from airflow_provider_wdata.models import ConnectionRun, RefreshBatch

KNOWN_STATUSES = frozenset({"not_started", "running", "complete", "error", "cancelled"})

#: Longest error text quoted per failed run, and most failed runs listed, in messages and logs.
MAX_ERROR_CHARS = 500
MAX_LISTED_FAILURES = 20


class RunState(str, enum.Enum):
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not RunState.IN_PROGRESS


class Outcome(str, enum.Enum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class FailedRun:
    """A run that failed or was cancelled, as people need to see it."""

    connection_id: str | None
    job_id: str | None
    source_status: str | None
    destination_status: str | None
    error: str | None
    state: RunState

    def describe(self) -> str:
        if self.error:
            error = _trim(self.error, MAX_ERROR_CHARS)
        elif self.state is RunState.CANCELLED:
            error = "cancelled by the service, with no error text"
        else:
            error = "no error text"
        return (
            f"connection {self.connection_id or '?'} (job {self.job_id or '?'}) {self.state.value}: "
            f"source={self.source_status}, destination={self.destination_status}: {error}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state.value}


@dataclasses.dataclass(frozen=True)
class Decision:
    outcome: Outcome
    #: One line for people: what stands, with the statuses.
    summary: str
    #: The runs that failed or were cancelled (children; or the run itself when it has no children).
    failed: tuple[FailedRun, ...] = ()
    #: Status values outside the documented five, seen in this read.
    unknown_statuses: frozenset[str] = frozenset()
    #: How many connection refreshes the batch has (0 for a single run, whose summary already says it all).
    children: int = 0
    #: Whether the batch itself failed or was cancelled, which ``tolerate_cancelled`` cannot accept.
    failed_as_a_whole: bool = False

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.RUNNING

    def failure_report(self) -> str:
        """The summary followed by one line per failed connection refresh, trimmed to a sane length."""
        if not self.children:
            return self.summary
        lines = [self.summary]
        lines += [f"  - {run.describe()}" for run in self.failed[:MAX_LISTED_FAILURES]]
        if len(self.failed) > MAX_LISTED_FAILURES:
            lines.append(f"  ... and {len(self.failed) - MAX_LISTED_FAILURES} more")
        if not self.failed_as_a_whole and any(run.state is RunState.CANCELLED for run in self.failed):
            lines.append(
                "  Cancelled connection refreshes count as failures: pass tolerate_cancelled=True to accept them."
            )
        return "\n".join(lines)


def _norm(status: str | None) -> str:
    return (status or "").strip().lower()


def run_state(source_status: str | None, destination_status: str | None, error: str | None) -> RunState:
    """The state of one run from its two statuses and its error text."""
    statuses = (_norm(source_status), _norm(destination_status))
    if "error" in statuses:
        return RunState.FAILED
    if "cancelled" in statuses:
        return RunState.CANCELLED
    if statuses == ("complete", "complete"):
        return RunState.FAILED if error and error.strip() else RunState.COMPLETE
    return RunState.IN_PROGRESS


def _state_of(run: ConnectionRun | RefreshBatch) -> tuple[RunState, frozenset[str]]:
    """The state of a run, and the statuses in it outside the documented five."""
    statuses = (_norm(run.source_status), _norm(run.destination_status))
    unknown = frozenset(s for s in statuses if s and s not in KNOWN_STATUSES)
    return run_state(run.source_status, run.destination_status, run.error), unknown


def _failed_run(run: ConnectionRun | RefreshBatch, state: RunState) -> FailedRun:
    return FailedRun(
        connection_id=getattr(run, "connection_id", None),
        job_id=getattr(run, "job_id", None),
        source_status=run.source_status,
        destination_status=run.destination_status,
        error=run.error,
        state=state,
    )


def _trim(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Child states in the order the summary counts them.
_COUNTED = sorted(RunState, key=lambda state: state.value)
_FAILING = frozenset({RunState.FAILED, RunState.CANCELLED})
_FAILING_UNLESS_CANCELLED = frozenset({RunState.FAILED})


def decide(
    run: ConnectionRun | RefreshBatch,
    *,
    label: str,
    fail_fast: bool = False,
    tolerate_cancelled: bool = False,
) -> Decision:
    """Decide a batch (with its ``child_refreshes``) or a single connection run.

    ``label`` names the refresh in the summary, e.g. ``"batch refresh 1234"``.
    """
    children: tuple[ConnectionRun, ...] = getattr(run, "child_refreshes", ())
    failing = _FAILING_UNLESS_CANCELLED if tolerate_cancelled else _FAILING
    is_batch = isinstance(run, RefreshBatch)  # even one read without children: a batch is no connection refresh
    own_failing = _FAILING if is_batch else failing
    own, unknown = _state_of(run)
    states: list[RunState] = []
    failed_runs: list[FailedRun] = []
    for child in children:
        state, child_unknown = _state_of(child)
        states.append(state)
        unknown |= child_unknown
        if state in failing:
            failed_runs.append(_failed_run(child, state))
    if not children and own in own_failing:
        failed_runs.append(_failed_run(run, own))
    failed = tuple(failed_runs)

    statuses = f"source={run.source_status}, destination={run.destination_status}"
    if children:
        counts = [f"{states.count(state)} {state.value}" for state in _COUNTED if state in states]
        statuses += "; connections: " + ", ".join(counts)
    all_terminal = own.terminal and RunState.IN_PROGRESS not in states

    if own in own_failing:
        error = f": {_trim(run.error, MAX_ERROR_CHARS)}" if run.error else ""
        summary = f"{label} {own.value} ({statuses}){error}"
        return Decision(Outcome.FAILED, summary, failed, unknown, len(children), failed_as_a_whole=is_batch)
    if failed and (fail_fast or all_terminal):
        summary = f"{label} failed: {len(failed)} of {len(children)} connection refreshes failed ({statuses})"
        return Decision(Outcome.FAILED, summary, failed, unknown, len(children))
    if all_terminal:
        if children:
            done = f"{len(children)} connection refreshes complete"
        else:
            done = "cancelled, accepted with tolerate_cancelled" if own is RunState.CANCELLED else "complete"
        return Decision(Outcome.SUCCESS, f"{label} succeeded: {done} ({statuses})", (), unknown, len(children))
    return Decision(Outcome.RUNNING, f"{label} still running ({statuses})", failed, unknown, len(children))


def decide_batch(batch: RefreshBatch, **options: bool) -> Decision:
    return decide(batch, label=f"batch refresh {batch.batch_refresh_id}", **options)


def decide_connection_run(run: ConnectionRun, **options: bool) -> Decision:
    return decide(run, label=f"refresh of connection {run.connection_id} (job {run.job_id})", **options)
