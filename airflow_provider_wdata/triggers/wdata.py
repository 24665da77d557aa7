"""Triggers that wait on a batch refresh or a single connection refresh in the triggerer.

Each trigger also carries the synchronous twin of its loop (:meth:`read`, :meth:`wait`), which the sensors
use in poke mode and before deferring, and the operators when they wait without deferring: one code path
reads, decides and builds the final event everywhere; :func:`finish` turns that event into the task's
result or exception.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pendulum

from airflow_provider_wdata._compat import AirflowSkipException, BaseTrigger, TriggerEvent
from airflow_provider_wdata.decision import Decision, Outcome, decide_batch, decide_connection_run
from airflow_provider_wdata.exceptions import WdataError, WdataRefreshFailedError, WdataRefreshTimeoutError
from airflow_provider_wdata.hooks.wdata import DEFAULT_RETRY_AFTER_MAX, WdataHook
from airflow_provider_wdata.models import ConnectionRun, RefreshBatch

#: Default seconds between two status reads.
DEFAULT_POLL_INTERVAL = 30.0

EVENT_STATUSES = frozenset({"success", "failed", "timeout", "error"})

Refresh = RefreshBatch | ConnectionRun


class _RefreshTrigger(BaseTrigger):
    """Poll one refresh until it ends, fails for good, or the absolute ``deadline`` passes.

    Yields exactly one event: ``{"status": "success" | "failed" | "timeout" | "error", "message": ...,
    "summary": <the last refresh read, JSON-able, or None>, "failed": [<failed runs>], <ids>}``.
    Network trouble, timeouts, 429 and 5xx (once the hook's own tries are spent) do not end the wait;
    refused credentials, 403, 404 and other client errors end it at once.
    """

    def __init__(
        self,
        *,
        wdata_conn_id: str = WdataHook.default_conn_name,
        workspace_id: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        deadline: float,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        hook_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}.")
        self.wdata_conn_id = wdata_conn_id
        self.workspace_id = workspace_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline)
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        self.hook_params = dict(hook_params or {})
        self.retry_after_max = float(self.hook_params.get("retry_after_max", DEFAULT_RETRY_AFTER_MAX))
        self._warned: set[str] = set()
        self._running_statuses: tuple[Any, ...] | None = None
        self.last: Refresh | None = None
        self.last_error: WdataError | None = None

    # what subclasses define ------------------------------------------------------------------------

    def ids(self) -> dict[str, str]:
        raise NotImplementedError

    def decide(self, refresh: Any) -> Decision:
        raise NotImplementedError

    def fetch(self, hook: WdataHook) -> Any:
        raise NotImplementedError

    async def afetch(self, hook: WdataHook) -> Any:
        raise NotImplementedError

    # shared by poke mode and run() -----------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {"fail_fast": self.fail_fast, "tolerate_cancelled": self.tolerate_cancelled}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        path = f"{type(self).__module__}.{type(self).__qualname__}"
        return path, {
            **self.ids(),
            "wdata_conn_id": self.wdata_conn_id,
            "workspace_id": self.workspace_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
            **self._options(),
            "hook_params": self.hook_params,
        }

    def event(
        self,
        status: str,
        message: str,
        refresh: Refresh | None = None,
        decision: Decision | None = None,
    ) -> dict[str, Any]:
        return {
            "status": status,
            **self.ids(),
            "message": message,
            "summary": refresh.to_dict() if refresh is not None else None,
            "failed": [run.to_dict() for run in decision.failed] if decision else [],
        }

    def check(self, refresh: Refresh, log: Any) -> dict[str, Any] | None:
        """Decide what was read: the final event, or None while the refresh is still going."""
        self.last, self.last_error = refresh, None
        statuses = _statuses(refresh)
        if statuses == self._running_statuses:  # nothing changed since a read that was still running
            return None
        decision = self.decide(refresh)
        if decision.unknown_statuses:
            self._warn_unknown(decision.unknown_statuses, log)
        if not decision.done:
            self._running_statuses = statuses
            log.info("%s", decision.summary)
            return None
        message = decision.summary if decision.outcome is Outcome.SUCCESS else decision.failure_report()
        return self.event(decision.outcome.value, message, refresh, decision)

    def _warn_unknown(self, statuses: frozenset[str], log: Any) -> None:
        for status in sorted(statuses - self._warned):
            self._warned.add(status)
            log.warning("Wdata reported an unknown status %r; treating it as still in progress.", status)

    def on_read_error(self, error: WdataError, log: Any) -> dict[str, Any] | None:
        """A read failed: the error event when trying again cannot help, else None (and it is noted)."""
        if not error.retryable:
            return self.event("error", str(error), self.last)
        self.last_error = error
        log.warning("Could not read the refresh status (%s); will try again.", error)
        return None

    def next_delay(self) -> float | None:
        """Seconds until the next read (``Retry-After`` stretches it), or None once the deadline passed."""
        remaining = self.deadline - time.time()
        if remaining <= 0:
            return None
        retry_after = self.last_error.retry_after if self.last_error is not None else None
        asked = min(retry_after or 0.0, self.retry_after_max)
        return min(max(self.poll_interval, asked), remaining)

    def timeout_event(self) -> dict[str, Any]:
        seen = self.decide(self.last).summary if self.last is not None else "no status could be read"
        failure = f"; last error: {self.last_error}" if self.last_error is not None else ""
        when = pendulum.from_timestamp(self.deadline).to_iso8601_string()
        message = f"Timed out: the refresh did not end by its deadline {when}. Last seen: {seen}{failure}"
        return self.event("timeout", message, self.last)

    def read(self, hook: WdataHook, log: Any) -> dict[str, Any] | None:
        """One synchronous read and decision (poke mode, and the check before deferring)."""
        try:
            return self.check(self.fetch(hook), log)
        except WdataError as error:
            return self.on_read_error(error, log)

    def wait(self, hook: WdataHook, log: Any) -> dict[str, Any]:
        """Poll synchronously until the final event: :meth:`run` for a worker that does not defer."""
        while True:
            event = self.read(hook, log)
            delay = self.next_delay() if event is None else None
            if event is None and delay is None:
                event = self.timeout_event()
            if event is not None:
                return event
            assert delay is not None
            time.sleep(delay)

    # the triggerer's side --------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = WdataHook(self.wdata_conn_id, **self.hook_params)
        try:
            # One timer for the whole wait, not one per read: a read (with the hook's own tries) or a sleep
            # still running at the deadline is cut off there.
            event = await _until(self._poll(hook), self.deadline)
        except asyncio.TimeoutError:
            event = self.timeout_event()
        yield TriggerEvent(event)

    async def _poll(self, hook: WdataHook) -> dict[str, Any]:
        while True:
            try:
                event = self.check(await self.afetch(hook), self.log)
            except WdataError as error:
                event = self.on_read_error(error, self.log)
            except Exception as error:  # a bug must still end the wait with a readable event
                self.log.exception("Unexpected error while waiting on the Wdata refresh")
                event = self.event("error", f"Unexpected error while waiting on the refresh: {error!r}", self.last)
            delay = self.next_delay() if event is None else None
            if event is None and delay is None:
                event = self.timeout_event()
            if event is not None:
                return event
            assert delay is not None
            await asyncio.sleep(delay)


def _statuses(refresh: Refresh) -> tuple[Any, ...]:
    """Everything the decision reads from a refresh: equal statuses, equal decision."""
    children = getattr(refresh, "child_refreshes", ())
    own = (refresh.source_status, refresh.destination_status, refresh.error)
    return own + tuple((c.source_status, c.destination_status, c.error) for c in children)


async def _until(awaitable: Awaitable[Any], deadline: float) -> Any:
    """Await, raising ``asyncio.TimeoutError`` at ``deadline`` (seconds since the epoch)."""
    seconds = max(deadline - time.time(), 0.0)
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def finish(event: Any, *, log: Any, soft_fail: bool) -> Any:
    """End a wait from its final event: the refresh summary on success, else the matching exception.

    Used by the sensors' and operators' ``execute_complete``, in every mode.
    """
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise WdataError(f"Unexpected event from the Wdata trigger: {event!r}. This is a bug; please report it.")
    status, message = event["status"], str(event.get("message") or "")
    if status == "success":
        log.info("%s", message)
        summary = event.get("summary") or {}
        for child in summary.get("child_refreshes") or []:
            log.info(
                "  connection %s (job %s): source=%s, destination=%s%s",
                child.get("connection_id"),
                child.get("job_id"),
                child.get("source_status"),
                child.get("destination_status"),
                f", error: {child['error']}" if child.get("error") else "",
            )
        return summary
    log.error("%s", message)
    if soft_fail:
        raise AirflowSkipException(f"Skipped (soft_fail): {message}")
    if status == "timeout":
        raise WdataRefreshTimeoutError(message)
    if status == "failed":
        raise WdataRefreshFailedError(message, failed=event.get("failed") or ())
    raise WdataError(message)


class BatchRefreshTrigger(_RefreshTrigger):
    """Wait on a batch refresh (``GET /api/v1/connections/batch/refresh/{batchId}``).

    :param batch_id: the ``batchRefreshId`` to wait on.
    :param deadline: absolute end of the wait, in seconds since the epoch (kept across triggerer restarts).
    :param poll_interval: seconds between two status reads.
    :param fail_fast: fail as soon as one connection refresh failed, without waiting for the others.
    :param tolerate_cancelled: count cancelled connection refreshes as fine rather than failed.
    :param hook_params: keyword arguments for :class:`WdataHook` (``timeout``, ``max_attempts``, backoff...).
    """

    def __init__(self, *, batch_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id

    def ids(self) -> dict[str, str]:
        return {"batch_id": self.batch_id}

    def decide(self, refresh: Any) -> Decision:
        return decide_batch(refresh, **self._options())

    def fetch(self, hook: WdataHook) -> RefreshBatch:
        return hook.get_batch_refresh(self.batch_id, workspace_id=self.workspace_id)

    async def afetch(self, hook: WdataHook) -> RefreshBatch:
        return await hook.aget_batch_refresh(self.batch_id, workspace_id=self.workspace_id)


class ConnectionRefreshTrigger(_RefreshTrigger):
    """Wait on one connection refresh (``GET /api/v1/connections/{connectionId}/status?jobId=``).

    Same parameters as :class:`BatchRefreshTrigger`, with ``connection_id`` and ``job_id`` in place of the
    batch id (``fail_fast`` and ``tolerate_cancelled`` have nothing to act on for a single run).
    """

    def __init__(self, *, connection_id: str, job_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection_id = connection_id
        self.job_id = job_id

    def ids(self) -> dict[str, str]:
        return {"connection_id": self.connection_id, "job_id": self.job_id}

    def decide(self, refresh: Any) -> Decision:
        return decide_connection_run(refresh, **self._options())

    def fetch(self, hook: WdataHook) -> ConnectionRun:
        return hook.get_connection_refresh(self.connection_id, self.job_id, workspace_id=self.workspace_id)

    async def afetch(self, hook: WdataHook) -> ConnectionRun:
        return await hook.aget_connection_refresh(self.connection_id, self.job_id, workspace_id=self.workspace_id)
