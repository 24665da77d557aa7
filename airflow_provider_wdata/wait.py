"""One wait on a refresh: read its status, decide, note a failed read, pick the next delay, build the final event.

The same :class:`RefreshWait` serves every mode: the triggers' ``run()`` (:meth:`RefreshWait.arun`), the sensors'
poke mode and their check before deferring (:meth:`RefreshWait.read`), and the operators' waits without
deferring (:meth:`RefreshWait.run`). :func:`finish` turns its final event into the task's result or exception,
the same in every mode.

A final event is a JSON-able dict: ``{"status": "success" | "failed" | "timeout" | "error", <ids>, "message",
"summary": <the last refresh read, or None>, "failed": [<failed runs>], "error": <the error that ended the wait,
or None>}``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable
from typing import Any

import pendulum

from airflow_provider_wdata import ticks
from airflow_provider_wdata._compat import AirflowSkipException, timeout
from airflow_provider_wdata.arguments import positive_seconds
from airflow_provider_wdata.decision import Decision, Outcome, RunState, decide_batch, decide_connection_run, run_state
from airflow_provider_wdata.exceptions import (
    WdataError,
    WdataRefreshFailedError,
    WdataRefreshTimeoutError,
    error_from_event,
    error_to_event,
)
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.models import ConnectionRun, RefreshBatch
from airflow_provider_wdata.retries import DEFAULT_RETRY_AFTER_MAX

#: Default seconds between two status reads.
DEFAULT_POLL_INTERVAL = 30.0
#: A wait whose first read is already due (a triggerer restarted, took over, or had a long queue) takes it
#: after a random delay of up to one poll interval, and at most this many seconds, so that a triggerer that
#: finds thousands of waits due spreads their reads instead of sending them in one loop turn.
FIRST_READ_SPREAD_MAX = 30.0
#: The last read of a deferred wait, due at its deadline, may run this many seconds past it; the wait's own timeout
#: cuts off anything longer.
LAST_READ_GRACE = 30.0
#: Airflow's own deferral timeout is set this much later than the wait's deadline, as a backstop, so that the
#: wait's ``timeout`` event (which carries the last statuses) normally ends it: a minute more than the last read
#: may take (a sensor started in the triggerer counts its deadline from the trigger's start, Airflow from earlier).
DEFERRAL_TIMEOUT_GRACE = LAST_READ_GRACE + 60.0
#: Most unfinished connections named in a timeout message.
MAX_LISTED_UNFINISHED = 10

EVENT_STATUSES = frozenset({"success", "failed", "timeout", "error"})
_NONE_YET: frozenset[str] = frozenset()

Refresh = RefreshBatch | ConnectionRun


class RefreshWait:
    """The state of one wait: what was last read, the last read error, and when the next read is due.

    :param deadline: absolute end of the wait, in seconds since the epoch (``math.inf``: no end of its own,
        as in poke mode, where the sensor's timeout rules).
    :param last_read_at: when the status was last read (seconds since the epoch), if it was; the first read
        then comes one ``poll_interval`` after it.
    """

    def __init__(
        self,
        *,
        workspace_id: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        deadline: float = math.inf,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
        last_read_at: float | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.deadline = float(deadline)
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        self.retry_after_max = float(retry_after_max)
        self.last_read_at = last_read_at
        self.last: Refresh | None = None
        self.last_error: WdataError | None = None
        self._warned: frozenset[str] = _NONE_YET  # shared until a first warning: no object per wait
        self._running_statuses: tuple[Any, ...] | None = None

    # what each kind of refresh defines ------------------------------------------------------------

    def ids(self) -> dict[str, str]:
        raise NotImplementedError

    def decide(self, refresh: Any) -> Decision:
        raise NotImplementedError

    def fetch(self, hook: WdataHook) -> Refresh:
        raise NotImplementedError

    def afetch(self, hook: WdataHook) -> Awaitable[Refresh]:
        """The hook's read, to await (returned as is: one coroutine fewer alive per read in flight)."""
        raise NotImplementedError

    # deciding --------------------------------------------------------------------------------------

    def event(
        self,
        status: str,
        message: str,
        refresh: Refresh | None = None,
        decision: Decision | None = None,
        error: WdataError | None = None,
    ) -> dict[str, Any]:
        return {
            "status": status,
            **self.ids(),
            "message": message,
            "summary": refresh.to_dict() if refresh is not None else None,
            "failed": [run.to_dict() for run in decision.failed] if decision else [],
            "error": error_to_event(error) if error is not None else None,
        }

    def check(self, refresh: Refresh, log: Any) -> dict[str, Any] | None:
        """Decide what was read: the final event, or None while the refresh is still going."""
        if refresh != self.last:  # an equal read is dropped young: the collector already moved the one held to its old
            self.last = refresh  # generation, and replacing it would promote a copy there at every read
        self.last_error = None
        statuses = _statuses(refresh)
        if statuses == self._running_statuses:  # nothing changed since a read that was still running
            return None
        decision = self.decide(refresh)
        for status in sorted(decision.unknown_statuses - self._warned):
            self._warned |= {status}
            log.warning("Wdata reported an unknown status %r; treating it as still in progress.", status)
        if not decision.done:
            self._running_statuses = statuses
            log.info("%s", decision.summary)
            return None
        message = decision.summary if decision.outcome is Outcome.SUCCESS else decision.failure_report()
        return self.event(decision.outcome.value, message, refresh, decision)

    def on_read_error(self, error: WdataError, log: Any) -> dict[str, Any] | None:
        """A read failed: the error event when trying again cannot help, else None (and it is noted)."""
        if not error.retryable:
            return self.event("error", str(error), self.last, error=error)
        self.last_error = error
        log.warning("Could not read the refresh status (%s); will try again.", error)
        return None

    def _on_async_read_error(self, error: Exception, log: Any) -> dict[str, Any] | None:
        """:meth:`on_read_error`; in a trigger an unexpected error also ends the wait, with a readable event."""
        if isinstance(error, WdataError):
            return self.on_read_error(error, log)
        log.exception("Unexpected error while waiting on the Wdata refresh")
        return self.event("error", f"Unexpected error while waiting on the refresh: {error!r}", self.last)

    @property
    def read_tick(self) -> float:
        """Async reads wake on multiples of this many seconds (``ticks.READ_TICK``, at most a tenth of the interval)."""
        return min(ticks.READ_TICK, self.poll_interval / 10)

    def first_delay(self, now: float | None = None) -> float:
        """Seconds until the first read: one poll interval after the last read when it is not due yet; a read
        already due is spread over up to one interval (at most :data:`FIRST_READ_SPREAD_MAX`) with jitter; never
        past the deadline. A wait that starts after its deadline (a triggerer back from a long outage) reads once at
        once: the refresh may have ended in time, and the timeout names what it was doing if not.
        """
        now = time.time() if now is None else now
        if self.deadline - now <= 0:
            return 0.0
        due_in = self.last_read_at + self.poll_interval - now if self.last_read_at is not None else 0.0
        delay = due_in if due_in > 0 else random.uniform(0, min(self.poll_interval, FIRST_READ_SPREAD_MAX))
        return min(delay, self.deadline - now)

    def next_delay(self, now: float | None = None) -> float | None:
        """Seconds until the next read (``Retry-After`` stretches it), or None once the deadline passed."""
        remaining = self.deadline - (time.time() if now is None else now)
        if remaining <= 0:
            return None
        retry_after = self.last_error.retry_after if self.last_error is not None else None
        asked = min(retry_after or 0.0, self.retry_after_max)
        return min(max(self.poll_interval, asked), remaining)

    def timeout_event(self) -> dict[str, Any]:
        when = pendulum.from_timestamp(self.deadline).to_iso8601_string()
        seen = self.decide(self.last).summary if self.last is not None else "no status could be read"
        unfinished = _unfinished(self.last) if self.last is not None else []
        listed = ", ".join(unfinished[:MAX_LISTED_UNFINISHED])
        if len(unfinished) > MAX_LISTED_UNFINISHED:
            listed += f" and {len(unfinished) - MAX_LISTED_UNFINISHED} more"
        still = f" Still running: {listed}." if listed else ""
        failure = f" Last error: {self.last_error}" if self.last_error is not None else ""
        message = (
            f"Timed out: the refresh did not end by its deadline {when}. Last seen: {seen}.{still}{failure} "
            "Wdata cannot cancel a refresh: it keeps running there."
        )
        return self.event("timeout", message, self.last, error=self.last_error)

    # waiting ---------------------------------------------------------------------------------------

    def read(self, hook: WdataHook, log: Any) -> dict[str, Any] | None:
        """One synchronous read and decision: the final event, or None while the refresh runs."""
        self.last_read_at = time.time()
        try:
            return self.check(self.fetch(hook), log)
        except WdataError as error:
            return self.on_read_error(error, log)

    def run(self, hook: WdataHook, log: Any) -> dict[str, Any]:
        """Read every ``poll_interval`` until the final event, sleeping in this thread."""
        delay: float | None = self.first_delay()
        while delay is not None:
            time.sleep(delay)
            event = self.read(hook, log)
            if event is not None:
                return event
            delay = self.next_delay()
        return self.timeout_event()

    async def arun(self, hook: WdataHook, log: Any) -> dict[str, Any]:
        """Async :meth:`run`, on the loop's read ticks (:mod:`~airflow_provider_wdata.ticks`). As in :meth:`run`, the
        last read is due at the deadline; a read still going :data:`LAST_READ_GRACE` after it is cut off.

        One deadline timer for the whole wait, not one per read: thousands of waits read in one triggerer, and a
        timer per read left four young objects per read (two of them until asyncio purged the cancelled timer), which
        brought the garbage collector round more often and promoted them to its oldest generation.
        """
        seconds = self.deadline - time.time()
        try:
            async with timeout(max(seconds, 0.0) + LAST_READ_GRACE if math.isfinite(seconds) else None):
                delay: float | None = self.first_delay()
                while delay is not None:
                    await ticks.tick_after(delay, self.read_tick)
                    self.last_read_at = time.time()
                    try:  # read() as a coroutine, inlined: one coroutine fewer per read in flight
                        event = self.check(await self.afetch(hook), log)
                    except Exception as error:
                        event = self._on_async_read_error(error, log)
                    if event is not None:
                        return event
                    delay = self.next_delay()
                    if delay is not None and delay < self.read_tick:
                        break  # that read was the one due at the deadline (a tick moves a read by half a tick)
        except asyncio.TimeoutError:
            # A read was still going: the hook retrying (a slow service, Retry-After) past the grace. Say so, as
            # its error was never seen here.
            self.last_error = WdataError(
                f"the read made at the deadline was still waiting on the service {LAST_READ_GRACE:g} s after it "
                "(slow answers, or retries and Retry-After) and was cut off."
            )
        return self.timeout_event()


class BatchWait(RefreshWait):
    """A wait on a batch refresh (``GET /api/v1/connections/batch/refresh/{batchId}``)."""

    def __init__(self, *, batch_id: str, **options: Any) -> None:
        super().__init__(**options)
        self.batch_id = batch_id

    def ids(self) -> dict[str, str]:
        return {"batch_id": self.batch_id}

    def decide(self, refresh: Any) -> Decision:
        return decide_batch(refresh, fail_fast=self.fail_fast, tolerate_cancelled=self.tolerate_cancelled)

    def fetch(self, hook: WdataHook) -> RefreshBatch:
        return hook.get_batch_refresh(self.batch_id, workspace_id=self.workspace_id)

    def afetch(self, hook: WdataHook) -> Awaitable[RefreshBatch]:
        return hook.aget_batch_refresh(self.batch_id, workspace_id=self.workspace_id)


class ConnectionRunWait(RefreshWait):
    """A wait on one connection refresh (``GET /api/v1/connections/{connectionId}/status?jobId=``)."""

    def __init__(self, *, connection_id: str, job_id: str, **options: Any) -> None:
        super().__init__(**options)
        self.connection_id = connection_id
        self.job_id = job_id

    def ids(self) -> dict[str, str]:
        return {"connection_id": self.connection_id, "job_id": self.job_id}

    def decide(self, refresh: Any) -> Decision:
        return decide_connection_run(refresh, fail_fast=self.fail_fast, tolerate_cancelled=self.tolerate_cancelled)

    def fetch(self, hook: WdataHook) -> ConnectionRun:
        return hook.get_connection_refresh(self.connection_id, self.job_id, workspace_id=self.workspace_id)

    def afetch(self, hook: WdataHook) -> Awaitable[ConnectionRun]:
        return hook.aget_connection_refresh(self.connection_id, self.job_id, workspace_id=self.workspace_id)


def finish(event: Any, *, log: Any, soft_fail: bool = False) -> Any:
    """End a wait from its final event: the refresh summary on success, else the matching exception.

    The exception is of the same type in every mode: a wait ended by a 404 raises ``WdataApiError`` whether it
    was read in poke mode or by the trigger.
    """
    if (
        not isinstance(event, dict)
        or event.get("status") not in EVENT_STATUSES
        or (event["status"] == "success" and not isinstance(event.get("summary"), dict))
    ):
        raise WdataError(
            f"Unexpected event from the Wdata trigger: {event!r} (a final event has a 'status' of "
            f"{sorted(EVENT_STATUSES)}, and on success the refresh read in 'summary'). This is a bug; please report it."
        )
    status = event["status"]
    message = str(event.get("message") or f"The wait on the Wdata refresh ended: {status}, with no message.")
    if status == "success":
        log.info("%s", message)
        summary = event["summary"]
        children = summary.get("child_refreshes")
        for child in (c for c in children if isinstance(c, dict)) if isinstance(children, list) else ():
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
        failed = event.get("failed")
        runs = [run for run in failed if isinstance(run, dict)] if isinstance(failed, list) else []
        raise WdataRefreshFailedError(message, failed=runs)
    raise error_from_event(message, event.get("error"))


def _statuses(refresh: Refresh) -> tuple[Any, ...]:
    """Everything the decision reads from a refresh: equal statuses, equal decision."""
    children = getattr(refresh, "child_refreshes", ())
    own = (refresh.source_status, refresh.destination_status, refresh.error)
    return own + tuple((c.source_status, c.destination_status, c.error) for c in children)


def _unfinished(refresh: Refresh) -> list[str]:
    """The connections of a refresh still in progress, as people name them."""
    runs = getattr(refresh, "child_refreshes", None) or (refresh,)
    return [
        f"{run.connection_id or '?'} (source={run.source_status}, destination={run.destination_status})"
        for run in runs
        if isinstance(run, ConnectionRun)
        and run_state(run.source_status, run.destination_status, run.error) is RunState.IN_PROGRESS
    ]
