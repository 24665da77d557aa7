"""What a task started in Wdata, kept across the task's retries so that a retry never starts it twice.

Airflow 3.3 gives each task instance a store that survives its retries and is dropped when a person clears the
task (``context["task_state_store"]``). The start operators write a :class:`StartedRefresh` there right after a
start succeeds; a later try reads it first and reattaches, returns, or reruns only what failed. Clearing the
whole DAG run does not drop the store before Airflow 3.5, so the record also holds the DAG run's
``clear_number``: a record from before a clear is ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow_provider_wdata.decision import RunState, run_state
from airflow_provider_wdata.models import RefreshBatch

#: The store key. Renaming it would make in-flight retries start their refreshes again.
STORE_KEY = "wdata_refresh"


@dataclasses.dataclass
class StartedRefresh:
    """A refresh a task started: a batch (``batch_id``) or one connection's run (``job_id``)."""

    #: The RefreshConnection fields of every connection of the task, in snake_case, as first asked.
    connections: list[dict[str, Any]]
    batch_id: str | None = None
    job_id: str | None = None
    #: The DAG run's clear_number when this was started.
    clear_number: int = 0
    #: Runs (``ConnectionRun.to_dict()``) that succeeded in an earlier batch of this task and were not rerun.
    completed: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def connection_ids(self) -> list[str]:
        return [str(c["connection_id"]) for c in self.connections]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> StartedRefresh:
        """Read a stored record; raises ValueError when it is not one."""
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {type(value).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in value.items() if k in names})
        if not isinstance(record.connections, list) or not all(
            isinstance(c, dict) and c.get("connection_id") for c in record.connections
        ):
            raise ValueError("no connections recorded")
        if not (record.batch_id or record.job_id):
            raise ValueError("no batch id or job id recorded")
        return record


#: The connection states a rerun starts again: a cancelled connection refreshed nothing, tolerated or not.
_RERUNNABLE = frozenset({RunState.FAILED, RunState.CANCELLED})


def batch_rerun(record: StartedRefresh, batch: RefreshBatch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """After ``batch`` (the task's last batch) failed: the RefreshConnection fields to start again, and the runs
    kept. The failed and cancelled connections go again, and any that neither this batch nor an earlier one of the
    task listed; none that completed (here or in an earlier batch) is refreshed twice. A kept run names the batch
    it ran in (``batch_id``), for its asset event and lineage. All of them go again when a connection the task
    did not ask for failed (the record cannot be trusted then)."""
    failed = {
        child.connection_id
        for child in batch.child_refreshes
        if run_state(child.source_status, child.destination_status, child.error) in _RERUNNABLE
    }
    known = set(record.connection_ids)
    if not failed <= known:
        return record.connections, []
    listed = {child.connection_id for child in batch.child_refreshes}
    listed |= {run.get("connection_id") for run in record.completed}
    again = failed | (known - listed)
    rerun = [spec for spec in record.connections if spec["connection_id"] in again]
    kept = [
        {**child.to_dict(), "batch_id": record.batch_id}
        for child in batch.child_refreshes
        if child.connection_id not in again
    ]
    earlier = [run for run in record.completed if run.get("connection_id") not in again]
    return rerun, earlier + kept


def task_state_store(context: Any) -> Any:
    """The task's durable store (Airflow 3.3+), or None."""
    try:
        return context.get("task_state_store")
    except AttributeError:
        return None


def clear_number(context: Any) -> int:
    """How often the DAG run was cleared (0 where Airflow does not say)."""
    try:
        dag_run = context.get("dag_run")
    except AttributeError:
        return 0
    number = getattr(dag_run, "clear_number", 0)
    return number if isinstance(number, int) else 0


def load(store: Any, context: Any, log: Any) -> StartedRefresh | None:
    """The refresh an earlier try of this task started, unless there is none, it is unreadable or predates a clear."""
    raw = store.get(STORE_KEY)
    if raw is None:
        return None
    try:
        record = StartedRefresh.from_json(raw)
    except (TypeError, ValueError) as error:
        log.warning("The refresh recorded by an earlier try cannot be read (%s); starting afresh.", error)
        return None
    if record.clear_number != clear_number(context):
        log.info("The DAG run was cleared since the recorded refresh was started; starting afresh.")
        return None
    return record


def save(store: Any, record: StartedRefresh) -> None:
    store.set(STORE_KEY, record.to_json())
