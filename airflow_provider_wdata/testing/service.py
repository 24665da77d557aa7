"""The simulated Wdata Prep service: connections, refreshes and batches in memory, without any I/O.

Its API methods take what a request carries (path values, query values, the parsed JSON body) and return the
``body`` the API would answer with, or raise :class:`~airflow_provider_wdata.testing.validation.ServiceError`.
:class:`~airflow_provider_wdata.testing.WdataSimulator` serves them over HTTP.

Decisions taken where the public API description is silent (all of them are scriptable):

* Progress is poll-based and/or time-based (see :mod:`~airflow_provider_wdata.testing.refresh_state`); each GET
  of a batch is one poll of every child.
* With ``batch_status="derived"`` each batch-level status (source and destination separately) stays
  ``running`` until every child is terminal, then reads ``error`` if any child has ``error`` on that side,
  else ``cancelled`` if every child was cancelled, else ``complete``. With ``batch_status="complete"`` both
  read ``complete`` once the children are terminal, whatever the children say. The batch ``error`` is ``null``.
* ``workspaceId`` given on a status call is echoed in the returned runs; otherwise the value given when the
  refresh started (else the connection's workspace) is returned.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_wdata.testing.refresh_state import (
    UNWRITABLE_CANCELLED,
    UNWRITABLE_ERROR,
    SimulatedBatch,
    SimulatedConnection,
    SimulatedRun,
    check_outcomes,
    now_iso,
)
from airflow_provider_wdata.testing.validation import (
    ServiceError,
    bad_request,
    check_workspace_id,
    decode_cursor,
    detail,
    encode_cursor,
    parse_int,
    validate_batch_items,
    validate_refresh_connection,
)

__all__ = ["DEFAULT_CONNECTIONS", "Clock", "SimulatedWdataService"]

Clock = Callable[[], float]

DEFAULT_CONNECTIONS: tuple[Mapping[str, Any], ...] = (
    {"connection_id": "conn-1", "source_type": "wdata_table", "destination_type": "spreadsheet"},
    {"connection_id": "conn-2", "source_type": "wdata_table", "destination_type": "spreadsheet"},
    {"connection_id": "conn-3", "source_type": "spreadsheet", "destination_type": "wdata_table"},
)


class SimulatedWdataService:
    """Scriptable in-memory Wdata connections and refreshes. Thread-safe: every method takes one lock.

    To count the refreshes a test caused, read :attr:`runs` (every refresh the service accepted, batch children
    included, in start order: ``run.connection_id``, ``run.batch_id``, ``run.attempt``, and ``run.request``, the
    RefreshConnection object as sent), :attr:`batches`, or ``connections[id].refreshes``.
    """

    def __init__(
        self,
        polls_to_finish: int | None = 2,
        seconds_to_finish: float | None = None,
        connections: Iterable[str | Mapping[str, Any]] | None = None,
        batch_status: str = "derived",
        *,
        clock: Clock = time.monotonic,
        created_by: str = "sim-user@example.com",
    ) -> None:
        if batch_status not in ("derived", "complete"):
            raise ValueError("batch_status must be 'derived' or 'complete'")
        self.polls_to_finish = polls_to_finish
        self.seconds_to_finish = seconds_to_finish
        self.batch_status = batch_status
        self.clock = clock
        self.created_by = created_by
        self._lock = threading.Lock()  # guards all the state below
        self._connections: dict[str, SimulatedConnection] = {}
        self._runs: dict[tuple[str, str], SimulatedRun] = {}
        self._latest_runs: dict[str, SimulatedRun] = {}
        self._batches: dict[str, SimulatedBatch] = {}
        self._raw_batches: dict[str, Any] = {}
        self._raw_runs: dict[tuple[str, str], Any] = {}
        for conn in DEFAULT_CONNECTIONS if connections is None else connections:
            if isinstance(conn, str):
                self.add_connection(conn)
            else:
                self.add_connection(**dict(conn))

    # ------------------------------------------------------------------------------------------- script

    def add_connection(
        self,
        connection_id: str,
        name: str | None = None,
        outcome: str = "complete",
        error: str | None = None,
        polls_to_finish: int | None = None,
        source_type: str = "wdata_table",
        destination_type: str = "spreadsheet",
        *,
        seconds_to_finish: float | None = None,
        description: str | None = None,
        source_id: str | None = None,
        destination_id: str | None = None,
        workspace_id: str = "sim-workspace",
        outcomes: Sequence[str] | None = None,
    ) -> SimulatedConnection:
        """Add a connection; ``outcomes`` (one per refresh, the last repeats) takes precedence over ``outcome``."""
        conn = SimulatedConnection(
            connection_id=connection_id,
            name=name if name is not None else f"Simulated connection {connection_id}",
            description=description if description is not None else f"Simulator connection {connection_id}",
            source_type=source_type,
            source_id=source_id if source_id is not None else f"src-{connection_id}",
            destination_type=destination_type,
            destination_id=destination_id if destination_id is not None else f"dst-{connection_id}",
            workspace_id=workspace_id,
            outcomes=check_outcomes(outcomes if outcomes is not None else [outcome]),
            error=error,
            error_only_on_failure=outcomes is not None,
            polls_to_finish=polls_to_finish,
            seconds_to_finish=seconds_to_finish,
        )
        with self._lock:
            if connection_id in self._connections:
                raise ValueError(f"connection {connection_id!r} already exists; use script_connection()")
            self._connections[connection_id] = conn
        return conn

    def script_connection(
        self,
        connection_id: str,
        outcome: str = "complete",
        error: str | None = None,
        polls_to_finish: int | None = None,
        *,
        seconds_to_finish: float | None = None,
        outcomes: Sequence[str] | None = None,
    ) -> None:
        """Set the outcome of FUTURE refreshes of an existing connection (running ones are unaffected).

        ``outcomes`` scripts one outcome per refresh from now on, in a batch or alone; the last one repeats:
        ``outcomes=["error", "complete"]`` fails the next refresh and completes every later one. ``error`` is
        the error text of every refresh that fails (``None``: a default text).
        """
        checked = check_outcomes(outcomes if outcomes is not None else [outcome])
        with self._lock:
            conn = self._connections.get(connection_id)
            if conn is None:
                raise KeyError(connection_id)
            conn.outcomes = checked
            conn.error = error
            conn.error_only_on_failure = outcomes is not None
            conn.polls_to_finish = polls_to_finish
            conn.seconds_to_finish = seconds_to_finish
            conn.updated = now_iso()

    def remove_connection(self, connection_id: str) -> None:
        with self._lock:
            del self._connections[connection_id]

    def put_raw_batch(self, batch_id: str, body: Any) -> None:
        """Serve exactly ``{"body": body, "code": 200}`` for GET .../batch/refresh/{batch_id} (``None``
        removes the override)."""
        with self._lock:
            if body is None:
                self._raw_batches.pop(batch_id, None)
            else:
                self._raw_batches[batch_id] = copy.deepcopy(body)

    def put_raw_run(self, connection_id: str, job_id: str, body: Any) -> None:
        """Serve exactly ``{"body": body, "code": 200}`` for GET .../{connection_id}/status?jobId={job_id}
        (``None`` removes the override)."""
        with self._lock:
            if body is None:
                self._raw_runs.pop((connection_id, job_id), None)
            else:
                self._raw_runs[(connection_id, job_id)] = copy.deepcopy(body)

    @property
    def connections(self) -> dict[str, SimulatedConnection]:
        with self._lock:
            return dict(self._connections)

    @property
    def batches(self) -> dict[str, SimulatedBatch]:
        with self._lock:
            return dict(self._batches)

    @property
    def runs(self) -> dict[tuple[str, str], SimulatedRun]:
        """(connection_id, job_id) -> run, batch children included, in start order."""
        with self._lock:
            return dict(self._runs)

    def batch_body(self, batch_id: str) -> dict[str, Any]:
        """The RefreshBatch as the API would show it now, without advancing it."""
        with self._lock:
            batch = self._batches[batch_id]
            batch.derive_status(self.batch_status)
            return batch.to_api(None)

    def reset(self) -> None:
        """Forget batches, runs and raw overrides (keep connections and their scripts)."""
        with self._lock:
            self._runs.clear()
            self._latest_runs.clear()
            self._batches.clear()
            self._raw_batches.clear()
            self._raw_runs.clear()

    # ---------------------------------------------------------------------------------------------- API

    def start_batch(self, items: Any, cancel_unwritables: bool) -> dict[str, Any]:
        """POST /api/v1/connections/batch/refresh: ``items`` is the parsed JSON body."""
        checked = validate_batch_items(items)
        with self._lock:
            missing = [item["connectionId"] for item in checked if item["connectionId"] not in self._connections]
            if missing:
                messages = [f"Connection {cid} not found" for cid in missing]
                raise ServiceError(404, messages[0] if len(messages) == 1 else messages)
            now = now_iso()
            batch_id = str(uuid.uuid4())
            batch = SimulatedBatch(
                batch_id=batch_id,
                children=[
                    self._start_run(item["connectionId"], item, batch_id, cancel_unwritables, now) for item in checked
                ],
                cancel_unwritables=cancel_unwritables,
                created=now,
                updated=now,
                created_by=self.created_by,
                workspace_id=next((i.get("workspaceId") for i in checked if i.get("workspaceId")), None),
            )
            self._batches[batch_id] = batch
            batch.derive_status(self.batch_status)
            return batch.to_api(None)

    def batch_status_body(self, batch_id: str, workspace_id: str | None) -> Any:
        """GET /api/v1/connections/batch/refresh/{batch_id}: one poll of every child."""
        workspace_id = check_workspace_id(workspace_id)
        with self._lock:
            if batch_id in self._raw_batches:
                return self._raw_batches[batch_id]
            batch = self._batches.get(batch_id)
            if batch is None:
                raise ServiceError(404, f"Batch refresh {batch_id} not found")
            batch.polls += 1
            now = self.clock()
            for child in batch.children:
                child.advance(now, poll=True)
            batch.derive_status(self.batch_status)
            return batch.to_api(workspace_id)

    def start_refresh(self, connection_id: str, item: Any) -> dict[str, Any]:
        """POST /api/v1/connections/{connection_id}/refresh: ``item`` is the parsed JSON body, ``None`` if none."""
        if item is None:
            raise bad_request(
                "The request body is required: a RefreshConnection object (it may be {})",
                [detail("required", "missing request body", "body")],
            )
        details = validate_refresh_connection(item, "body", require_id=False)
        if not details and item.get("connectionId") not in (None, connection_id):
            details.append(detail("mismatch", "connectionId differs from the connection in the path", "connectionId"))
        if details:
            raise bad_request("Invalid RefreshConnection in the request body", details)
        with self._lock:
            if connection_id not in self._connections:
                raise ServiceError(404, f"Connection {connection_id} not found")
            return self._start_run(connection_id, item, None, False, now_iso()).to_api(None)

    def refresh_status_body(self, connection_id: str, job_id: str | None, workspace_id: str | None) -> Any:
        """GET /api/v1/connections/{connection_id}/status?jobId=: one poll of the run."""
        if not job_id:
            raise bad_request("The jobId query parameter is required", [detail("required", "missing", "jobId")])
        workspace_id = check_workspace_id(workspace_id)
        with self._lock:
            if (connection_id, job_id) in self._raw_runs:
                return self._raw_runs[(connection_id, job_id)]
            if connection_id not in self._connections:
                raise ServiceError(404, f"Connection {connection_id} not found")
            run = self._runs.get((connection_id, job_id))
            if run is None:
                raise ServiceError(404, f"Job {job_id} not found for connection {connection_id}")
            run.advance(self.clock(), poll=True)
            return run.to_api(workspace_id)

    def connection_body(self, connection_id: str, workspace_id: str | None) -> dict[str, Any]:
        """GET /api/v1/connections/{connection_id}."""
        workspace_id = check_workspace_id(workspace_id)
        with self._lock:
            conn = self._connections.get(connection_id)
            if conn is None:
                raise ServiceError(404, f"Connection {connection_id} not found")
            return self._connection_to_api(conn, workspace_id)

    def list_connections(self, query: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        """GET /api/v1/connections: (one page, the cursor of the next page or ``None``)."""
        limit = parse_int(query.get("limit"), "limit", default=100, low=1, high=1000)
        offset = parse_int(query.get("offset"), "offset", default=0, low=0, high=None)
        cursor = query.get("cursor")
        if cursor:
            offset = decode_cursor(cursor)
        filters = {
            "source_type": query.get("sourceType"),
            "source_id": query.get("sourceId"),
            "destination_type": query.get("destinationType"),
            "destination_id": query.get("destinationId"),
        }
        with self._lock:
            selected = [
                c
                for c in self._connections.values()
                if all(v in (None, "") or getattr(c, k) == v for k, v in filters.items())
            ]
            page = [self._connection_to_api(c, None) for c in selected[offset : offset + limit]]
        next_cursor = encode_cursor(offset + limit) if offset + limit < len(selected) else None
        return page, next_cursor

    # ---------------------------------------------------------------------------- state (hold self._lock)

    def _start_run(
        self, connection_id: str, item: Mapping[str, Any], batch_id: str | None, cancel_unwritables: bool, now: str
    ) -> SimulatedRun:
        conn = self._connections[connection_id]
        previous = self._latest_runs.get(conn.connection_id)
        source_parameters = dict(item.get("sourceParameters") or {})
        destination_parameters = dict(item.get("destinationParameters") or {})
        if item.get("usePreviousSourceParameters") and previous is not None:
            source_parameters = dict(previous.source_parameters)
        if item.get("usePreviousDestinationParameters") and previous is not None:
            destination_parameters = dict(previous.destination_parameters)
        outcome, error_text = conn.take_outcome(), conn.error
        if outcome == "complete" and conn.error_only_on_failure:
            error_text = None
        if outcome == "unwritable":
            if cancel_unwritables:
                outcome, error_text = "cancelled", error_text or UNWRITABLE_CANCELLED
            else:
                outcome, error_text = "error", error_text or UNWRITABLE_ERROR
        run = SimulatedRun(
            connection_id=conn.connection_id,
            job_id=str(uuid.uuid4()),
            outcome=outcome,
            error_text=error_text,
            polls_to_finish=conn.polls_to_finish if conn.polls_to_finish is not None else self.polls_to_finish,
            seconds_to_finish=(
                conn.seconds_to_finish if conn.seconds_to_finish is not None else self.seconds_to_finish
            ),
            started_at=self.clock(),
            created=now,
            updated=now,
            created_by=self.created_by,
            workspace_id=item.get("workspaceId") or conn.workspace_id,
            source_workspace_id=conn.workspace_id,
            destination_workspace_id=conn.workspace_id,
            source_parameters=source_parameters,
            destination_parameters=destination_parameters,
            batch_id=batch_id,
            attempt=conn.refreshes,
            request=dict(item),
        )
        self._runs[(run.connection_id, run.job_id)] = run
        self._latest_runs[run.connection_id] = run
        run.advance(run.started_at, poll=False)
        return run

    def _connection_to_api(self, conn: SimulatedConnection, workspace_id: str | None) -> dict[str, Any]:
        last = self._latest_runs.get(conn.connection_id)
        if last is not None:
            last.advance(self.clock(), poll=False)  # time-based progress shows without polling
        return conn.to_api(last, workspace_id)
