"""The simulated refresh state machine: connections, their refresh runs (jobs) and batches of runs.

A run starts ``not_started``, reads ``running`` once polled, and reaches the terminal statuses of its outcome
on its ``polls_to_finish``-th poll or ``seconds_to_finish`` after its start, whichever comes first (both
``None``: on its first poll; ``polls_to_finish=0``: already at its start).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "OUTCOMES",
    "STATUSES",
    "TERMINAL_STATUSES",
    "SimulatedBatch",
    "SimulatedConnection",
    "SimulatedRun",
    "check_outcomes",
    "now_iso",
]

STATUSES = ("not_started", "running", "complete", "error", "cancelled")
TERMINAL_STATUSES = frozenset({"complete", "error", "cancelled"})

# outcome -> (sourceStatus, destinationStatus, default error text) once the refresh is finished.
TERMINAL_OUTCOMES: dict[str, tuple[str, str, str | None]] = {
    "complete": ("complete", "complete", None),
    "error": ("error", "error", "Simulated refresh failure"),
    "cancelled": ("cancelled", "cancelled", None),
    "source_error": ("error", "cancelled", "Simulated source failure"),
    "destination_error": ("complete", "error", "Simulated destination failure"),
    "complete_with_error": ("complete", "complete", "Simulated warning: the refresh completed with errors"),
}
# "stuck": running forever; "queued": not_started forever; "unwritable": the destination cannot be
# written: the child is cancelled when the batch was started with cancelUnwritables=true, else it errors.
OUTCOMES = (*TERMINAL_OUTCOMES, "stuck", "queued", "unwritable")
UNWRITABLE_ERROR = "Simulated failure: the destination cannot be written"
UNWRITABLE_CANCELLED = "Simulated: the destination cannot be written; refresh cancelled (cancelUnwritables)"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_outcomes(outcomes: Sequence[str]) -> list[str]:
    if isinstance(outcomes, str) or not outcomes:
        raise ValueError("outcomes must be a non-empty sequence of outcomes")
    for outcome in outcomes:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    return list(outcomes)


@dataclass
class SimulatedConnection:
    """A simulated Wdata connection and the outcomes its future refreshes will have.

    Each refresh (in a batch or alone) takes the first of ``outcomes``; the last one repeats.
    """

    connection_id: str
    name: str
    description: str
    source_type: str
    source_id: str
    destination_type: str
    destination_id: str
    workspace_id: str
    outcomes: list[str] = field(default_factory=lambda: ["complete"])
    error: str | None = None
    #: Scripted per refresh (``outcomes=``): ``error`` is the text of the refreshes that fail, not of a complete one.
    error_only_on_failure: bool = False
    polls_to_finish: int | None = None  # None: the simulator's default
    seconds_to_finish: float | None = None  # None: the simulator's default
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    #: Refreshes of this connection started so far, batch children included.
    refreshes: int = 0

    @property
    def outcome(self) -> str:
        """The outcome of the next refresh."""
        return self.outcomes[0]

    def take_outcome(self) -> str:
        self.refreshes += 1
        return self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]

    def to_api(self, last_run: SimulatedRun | None, workspace_id: str | None) -> dict[str, Any]:
        return {
            "id": self.connection_id,
            "name": self.name,
            "description": self.description,
            "sourceType": self.source_type,
            "sourceId": self.source_id,
            "destinationType": self.destination_type,
            "destinationId": self.destination_id,
            "workspaceId": workspace_id or self.workspace_id,
            "created": self.created,
            "updated": self.updated,
            "lastRun": last_run.to_api(workspace_id) if last_run is not None else None,
        }


@dataclass
class SimulatedRun:
    """One connection refresh (a job); the children of a batch are runs too."""

    connection_id: str
    job_id: str
    outcome: str
    error_text: str | None
    polls_to_finish: int | None
    seconds_to_finish: float | None
    started_at: float  # the simulator clock
    created: str
    updated: str
    created_by: str
    workspace_id: str | None
    source_workspace_id: str | None
    destination_workspace_id: str | None
    source_parameters: dict[str, Any]
    destination_parameters: dict[str, Any]
    batch_id: str | None = None
    #: 1 for the connection's first refresh, 2 for its second, ...
    attempt: int = 1
    #: The RefreshConnection object as the client sent it.
    request: dict[str, Any] = field(default_factory=dict)
    polls: int = 0
    source_status: str = "not_started"
    destination_status: str = "not_started"
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.source_status in TERMINAL_STATUSES and self.destination_status in TERMINAL_STATUSES

    def advance(self, now: float, poll: bool) -> None:
        """Move the run on: one more status read if ``poll``, and ``now`` on the simulator clock."""
        if self.terminal:
            return
        if poll:
            self.polls += 1
        running = ("running", "running", None) if self.polls else None
        state: tuple[str, str, str | None] | None
        if self.outcome == "stuck":
            state = running
        elif self.outcome == "queued":
            state = None
        elif self._finished(now):
            source, destination, default_error = TERMINAL_OUTCOMES[self.outcome]
            state = (source, destination, self.error_text if self.error_text is not None else default_error)
        else:
            state = running
        if state is not None and (self.source_status, self.destination_status, self.error) != state:
            self.source_status, self.destination_status, self.error = state
            self.updated = now_iso()

    def _finished(self, now: float) -> bool:
        polls, seconds = self.polls_to_finish, self.seconds_to_finish
        if polls is None and seconds is None:
            return self.polls >= 1
        return (polls is not None and self.polls >= polls) or (seconds is not None and now - self.started_at >= seconds)

    def to_api(self, workspace_id: str | None) -> dict[str, Any]:
        return {
            "connectionId": self.connection_id,
            "jobId": self.job_id,
            **_progress(self),
            "sourceParameters": dict(self.source_parameters),
            "destinationParameters": dict(self.destination_parameters),
            "sourceMetadata": {},
            "destinationMetadata": {},
            "workspaceId": workspace_id or self.workspace_id,
            "sourceWorkspaceId": self.source_workspace_id,
            "destinationWorkspaceId": self.destination_workspace_id,
        }


@dataclass
class SimulatedBatch:
    """One batch refresh."""

    batch_id: str
    children: list[SimulatedRun]
    cancel_unwritables: bool
    created: str
    updated: str
    created_by: str
    workspace_id: str | None
    polls: int = 0
    source_status: str = "not_started"
    destination_status: str = "not_started"
    error: str | None = None

    def derive_status(self, batch_status: str) -> None:
        """Set the batch statuses from the children's (``batch_status``: ``"derived"`` or ``"complete"``)."""
        children = self.children
        if all(c.terminal for c in children):
            if batch_status == "complete":
                state = ("complete", "complete")
            else:
                state = (
                    _batch_outcome(c.source_status for c in children),
                    _batch_outcome(c.destination_status for c in children),
                )
        elif all(c.source_status == c.destination_status == "not_started" for c in children):
            state = ("not_started", "not_started")
        else:
            state = ("running", "running")
        if (self.source_status, self.destination_status) != state:
            self.source_status, self.destination_status = state
            self.updated = now_iso()
        latest_child = max((c.updated for c in children), default=self.updated)
        self.updated = max(self.updated, latest_child)

    def to_api(self, workspace_id: str | None) -> dict[str, Any]:
        return {
            "batchRefreshId": self.batch_id,
            "childRefreshes": [c.to_api(workspace_id) for c in self.children],
            **_progress(self),
        }


def _progress(refresh: SimulatedRun | SimulatedBatch) -> dict[str, Any]:
    """The fields a ConnectionRun and a RefreshBatch share."""
    return {
        "sourceStatus": refresh.source_status,
        "destinationStatus": refresh.destination_status,
        "error": refresh.error,
        "created": refresh.created,
        "createdBy": refresh.created_by,
        "updated": refresh.updated,
    }


def _batch_outcome(statuses: Iterable[str]) -> str:
    # A cancelled child does not cancel its batch (that is what cancelUnwritables is for): only an error
    # does, or every child being cancelled.
    values = set(statuses)
    if "error" in values:
        return "error"
    if values == {"cancelled"}:
        return "cancelled"
    return "complete"
