"""Operators that start Wdata refreshes and (by default) wait for them to end.

With ``durable=True`` (the default) on Airflow 3.3+, what a try started is kept in the task's state store
(:mod:`airflow_provider_wdata.durable`), so a retry reattaches to a refresh still running, returns one that has
succeeded since, or reruns only the connections that failed: never a second start of what already ran.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_wdata import durable, protocol, request_fields
from airflow_provider_wdata._compat import (
    DEFAULT_OUTLETS,
    TASK_STATE_STORE_ERRORS,
    BaseOperator,
    Context,
    default_deferrable,
)
from airflow_provider_wdata.arguments import is_templated, positive_seconds
from airflow_provider_wdata.assets import default_outlets, record_asset_events, refresh_runs
from airflow_provider_wdata.decision import Decision, Outcome, RunState, decide_batch, decide_connection_run, run_state
from airflow_provider_wdata.durable import StartedRefresh
from airflow_provider_wdata.exceptions import (
    WdataApiError,
    WdataAuthError,
    WdataError,
    WdataNothingToRerunError,
    WdataRefreshNotRecordedError,
)
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.openlineage import WdataStartLineageMixin
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger, ConnectionRefreshTrigger
from airflow_provider_wdata.wait import DEFAULT_POLL_INTERVAL, DEFERRAL_TIMEOUT_GRACE, finish

#: Default longest wait for a refresh to end (seconds): seven days, as for Airflow's sensors.
DEFAULT_WAIT_TIMEOUT = 7 * 24 * 3600.0

_warned_no_store = False


class _StartsRefresh(WdataStartLineageMixin, BaseOperator):
    ui_color = "#c5e3f6"
    emit_assets: bool  # set by each operator, after it declared its default outlets

    def __init__(
        self,
        *,
        wdata_conn_id: str = WdataHook.default_conn_name,
        workspace_id: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta = DEFAULT_WAIT_TIMEOUT,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        durable: bool = True,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = dict(hook_params or {})
        self.wdata_conn_id = wdata_conn_id
        self.workspace_id = workspace_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.timeout = positive_seconds(timeout, "timeout")
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        self.durable = durable
        if workspace_id is not None and not is_templated(workspace_id):
            protocol.validate_workspace_id(workspace_id)

    @cached_property
    def hook(self) -> WdataHook:
        return WdataHook(self.wdata_conn_id, **self.hook_params)

    # what each operator defines -------------------------------------------------------------------

    def requested(self) -> list[dict[str, Any]]:
        """The RefreshConnection fields of every connection this task refreshes (snake_case)."""
        raise NotImplementedError

    def start(self, connections: list[dict[str, Any]]) -> dict[str, str]:
        """Start refreshing ``connections``; the ids of what started (``batch_id`` or ``job_id``)."""
        raise NotImplementedError

    def read(self, record: StartedRefresh) -> Any:
        """Read the recorded refresh's status."""
        raise NotImplementedError

    def decide(self, refresh: Any) -> Decision:
        raise NotImplementedError

    def make_trigger(
        self, record: StartedRefresh, last_read_at: float
    ) -> BatchRefreshTrigger | ConnectionRefreshTrigger:
        raise NotImplementedError

    def ids_of(self, record: StartedRefresh) -> dict[str, str]:
        """The XCom keys and values pushed as soon as the refresh started; the first is returned when not waiting."""
        raise NotImplementedError

    # one try --------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if self.emit_assets and self.wait_for_completion and not self.outlets and _map_index(context) >= 0:
            # Airflow builds a mapped task without calling __init__ when it parses the DAG: no default outlets.
            self.log.warning(
                "emit_assets: this mapped task declares no outlets, so its refresh emits no asset events. Pass "
                "outlets=default_outlets([...]) to partial() to declare them, or emit_assets=False to silence this."
            )
        store = self._store(context)
        record = durable.load(store, context, self.log) if store is not None else None
        if record is not None:
            return self._resume(record, context, store)
        return self._start_and_wait(self.requested(), context, store)

    def _store(self, context: Context) -> Any:
        if not self.durable:
            return None
        store = durable.task_state_store(context)
        if store is None:
            global _warned_no_store
            if not _warned_no_store:
                _warned_no_store = True
                self.log.info(
                    "Durable retries need Airflow 3.3 or later (the task state store): a retry of this task "
                    "starts its refresh again."
                )
        return store

    def _start_and_wait(
        self, connections: list[dict[str, Any]], context: Context, store: Any, completed: Sequence[dict[str, Any]] = ()
    ) -> Any:
        ids = self.start(connections)
        started_at = time.time()
        record = StartedRefresh(
            connections=self.requested(),
            clear_number=durable.clear_number(context),
            completed=list(completed),
            **ids,
        )
        if store is None:
            return self._follow(record, context, started_at)
        try:
            durable.save(store, record)
        except TASK_STATE_STORE_ERRORS as error:  # an outage; anything else is a bug
            return self._follow_unrecorded(record, context, started_at, error)
        except Exception as error:
            failure = f"recording it in the task state store failed unexpectedly ({type(error).__name__}: {error})."
            raise _not_recorded(record, failure) from error
        return self._follow(record, context, started_at)

    def _follow_unrecorded(self, record: StartedRefresh, context: Context, started_at: float, cause: Exception) -> Any:
        """Follow a refresh the store did not record. No later try could know of it, so this try must succeed or
        fail for good; it waits in this worker because a deferred wait can end (trigger error, deferral timeout)
        in an ordinary failure that Airflow would retry."""
        self.log.error(
            "Wdata %s started, but the task state store did not record it (%s): following it in this worker; "
            "unless this try succeeds, it fails without retry so that no retry starts it again.",
            _describe(record),
            cause,
        )
        try:
            return self._follow(record, context, started_at, may_defer=False)
        except BaseException as error:  # Airflow 3 retries AirflowTaskTimeout and SystemExit, BaseExceptions too
            failure = f"the task state store did not record it ({cause}), and this try did not succeed: {error}"
            raise _not_recorded(record, failure) from error

    def _follow(self, record: StartedRefresh, context: Context, last_read_at: float, may_defer: bool = True) -> Any:
        """Push the ids, then return them or wait (deferred or in this worker) for the refresh to end."""
        ids = self.ids_of(record)
        for key, value in ids.items():
            context["ti"].xcom_push(key=key, value=value)
        if not self.wait_for_completion:
            return next(iter(ids.values()))
        trigger = self.make_trigger(record, last_read_at)
        if self.deferrable and may_defer:
            self.log.info("Deferring: the triggerer polls every %s s for up to %s s.", self.poll_interval, self.timeout)
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE),
            )
        return self._complete(context, trigger.make_wait().run(self.hook, self.log), record)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Called with the trigger's final event once a deferred wait ends."""
        store = self._store(context)
        record = durable.load(store, context, self.log) if store is not None else None
        return self._complete(context, event, record)

    def _complete(self, context: Context, event: Any, record: StartedRefresh | None) -> Any:
        """The task's result from the wait's final event, or the matching exception."""
        self.record_wdata_lineage(event)  # a failed event's last read names the failed connections
        return self._succeeded(context, finish(event, log=self.log), record)

    def _succeeded(self, context: Context, summary: Any, record: StartedRefresh | None) -> Any:
        """The refresh's summary, covering the runs that succeeded in an earlier batch of this task too, with
        its connections' asset events and lineage."""
        if record is not None and record.completed and isinstance(summary, dict):
            summary = {**summary, "child_refreshes": [*record.completed, *(summary.get("child_refreshes") or [])]}
        runs = refresh_runs(summary)
        self.record_wdata_lineage(summary)
        record_asset_events(context, self.outlets, runs)
        return summary

    # a later try -----------------------------------------------------------------------------------

    def _resume(self, record: StartedRefresh, context: Context, store: Any) -> Any:
        attempt = f"Try {_try_number(context)}"
        what = _describe(record)
        try:
            refresh = self.read(record)
        except WdataError as error:
            if error.retryable:
                raise  # the service is in trouble: failing this try is safer than a second start
            if not _unknown_to_the_service(error):
                self.log.warning("%s: %s cannot be read; starting nothing while in doubt.", attempt, what)
                raise WdataError(
                    f"Wdata {what} was started by an earlier try of this task, and reading it failed: {error} "
                    "Nothing is started again while it is unknown how it stands (a second start would refresh it "
                    "twice). Fix the cause and let Airflow retry the task, which reads it again; or check it in "
                    "Wdata and clear the task, which starts the refresh afresh."
                ) from error
            self.log.warning("%s: %s is unknown to Wdata (HTTP 404); starting afresh.", attempt, what)
            return self._start_and_wait(self.requested(), context, store)
        decision = self.decide(refresh)
        if decision.outcome is Outcome.RUNNING:
            self.log.info("%s: %s is still running; waiting on it instead of starting another.", attempt, what)
            return self._follow(record, context, time.time())
        if decision.outcome is Outcome.SUCCESS:
            self.log.info("%s: %s has succeeded; returning its result without starting another.", attempt, what)
            return self._succeeded(context, refresh.to_dict(), record)
        running = self.still_running(refresh)
        if running:
            names = ", ".join(running)
            self.log.warning("%s: %s ended badly, but %s still run in Wdata; starting nothing.", attempt, what, names)
            raise WdataError(
                f"{decision.summary}; but connection(s) {names} of it are still running in Wdata. "
                "Nothing is started while they run (that would refresh them twice): a later retry of this task "
                "reads the batch again and reruns what failed once they have ended. With no retry left, wait "
                "until they end in Wdata; clearing the task then starts every connection again."
            )
        rerun, completed = self.plan_rerun(record, refresh)
        if not rerun:
            self.log.warning(
                "%s: %s ended badly, though each of its connections completed; starting nothing.", attempt, what
            )
            raise WdataNothingToRerunError(
                f"{decision.summary}; yet each of its connections completed, so none is started again (that would "
                "refresh them twice), and the task is not retried (a retry would find the same). Check the batch "
                "in Wdata; clearing the task starts every connection again."
            )
        names = ", ".join(str(c["connection_id"]) for c in rerun)
        which = "all" if len(rerun) == len(record.connections) else "only the failed"
        self.log.info(
            "%s: %s ended badly; starting %s %d connection(s) again: %s", attempt, what, which, len(rerun), names
        )
        return self._start_and_wait(rerun, context, store, completed)

    def plan_rerun(self, record: StartedRefresh, refresh: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What to start again after a failed refresh, and the runs that succeeded and are kept."""
        return record.connections, []

    def still_running(self, refresh: Any) -> list[str]:
        """The connections of a failed refresh that are still running in Wdata."""
        return []


class WdataRefreshBatchOperator(_StartsRefresh):
    """Refresh several Wdata connections as one batch and wait for the batch to end.

    :param connections: 1 to 100 connection ids, or dicts with the RefreshConnection fields
        (``connection_id``, ``source_parameters``, ``destination_parameters``,
        ``use_previous_source_parameters``, ``use_previous_destination_parameters``, ``workspace_id``);
        templated. Duplicates and unknown keys are refused before any request.
    :param cancel_unwritables: let the service cancel single connections whose destination cannot be written.
    :param workspace_id: workspaceId for the start and the status reads (templated).
    :param wait_for_completion: wait for the batch to end (default); if False, return the batch id at once.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between two status reads.
    :param timeout: seconds (or a timedelta) to wait before failing with a timeout.
    :param fail_fast: fail as soon as one connection refresh failed.
    :param tolerate_cancelled: treat cancelled connection refreshes as fine rather than failed.
    :param durable: on Airflow 3.3+, a retry of this task reattaches to the batch it started, returns it once
        it has succeeded, or reruns what failed, instead of starting every connection again.
    :param retry_failed_only: when a retry finds the batch failed, start a new batch of only the connections
        that failed or were cancelled (with the fields they were first asked with); False starts all again.
    :param emit_assets: declare one :func:`~airflow_provider_wdata.assets.connection_asset` per connection as
        the task's outlets (when the connections are not templated and the task waits); outlets you pass win.
        On success each asset event's ``extra`` holds the batch id, job id, both statuses and ``updated``.
    :param wdata_conn_id: the Airflow connection of type ``wdata``.
    :param hook_params: keyword arguments for :class:`WdataHook` (``timeout``, ``max_attempts``, backoff...).

    Pushes the batch id to XCom under ``batch_refresh_id`` as soon as the batch started, and returns the
    batch as a JSON-able dict once it ended (the batch id when not waiting). After a rerun, the returned
    batch's ``child_refreshes`` cover every connection of the task; those kept from an earlier batch name it in
    ``batch_id`` (as their asset events and lineage do).
    """

    template_fields: Sequence[str] = ("connections", "workspace_id")

    def __init__(
        self,
        *,
        connections: Sequence[Any] | str,
        cancel_unwritables: bool = False,
        retry_failed_only: bool = True,
        emit_assets: bool = True,
        **kwargs: Any,
    ) -> None:
        if not is_templated(connections):
            protocol.validate_batch_connections(connections)
        _add_default_outlets(kwargs, connections, emit_assets)
        super().__init__(**kwargs)
        self.connections = connections
        self.cancel_unwritables = cancel_unwritables
        self.retry_failed_only = retry_failed_only
        self.emit_assets = emit_assets

    def requested(self) -> list[dict[str, Any]]:
        items = protocol.validate_batch_connections(self.connections)
        return [
            {field: item[key] for field, key in request_fields.REFRESH_CONNECTION_FIELDS.items() if key in item}
            for item in items
        ]

    def start(self, connections: list[dict[str, Any]]) -> dict[str, str]:
        batch = self.hook.start_batch_refresh(connections, self.cancel_unwritables, self.workspace_id)
        if not batch.batch_refresh_id:
            raise WdataError(f"Wdata started a batch refresh but returned no batchRefreshId: {batch.to_dict()}")
        self.log.info("Started Wdata batch refresh %s of %d connections.", batch.batch_refresh_id, len(connections))
        return {"batch_id": batch.batch_refresh_id}

    def read(self, record: StartedRefresh) -> Any:
        return self.hook.get_batch_refresh(str(record.batch_id), workspace_id=self.workspace_id)

    def decide(self, refresh: Any) -> Decision:
        return decide_batch(refresh, tolerate_cancelled=self.tolerate_cancelled)

    def make_trigger(self, record: StartedRefresh, last_read_at: float) -> BatchRefreshTrigger:
        return BatchRefreshTrigger(batch_id=str(record.batch_id), **_trigger_options(self, last_read_at))

    def ids_of(self, record: StartedRefresh) -> dict[str, str]:
        return {"batch_refresh_id": str(record.batch_id)}

    def still_running(self, refresh: Any) -> list[str]:
        return [
            str(child.connection_id)
            for child in refresh.child_refreshes
            if run_state(child.source_status, child.destination_status, child.error) is RunState.IN_PROGRESS
        ]

    def plan_rerun(self, record: StartedRefresh, refresh: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if not self.retry_failed_only:
            return record.connections, []
        return durable.batch_rerun(record, refresh)


class WdataRefreshConnectionOperator(_StartsRefresh):
    """Refresh one Wdata connection and wait for the refresh to end.

    :param connection_id: the Wdata connection to refresh (templated).
    :param source_parameters: source parameters for this run (templated).
    :param destination_parameters: destination parameters for this run (templated).
    :param use_previous_source_parameters: reuse the parameters of the previous run for the source.
    :param use_previous_destination_parameters: reuse them for the destination.

    The other parameters are those of :class:`WdataRefreshBatchOperator` (a retry with ``durable`` starts the
    connection again only when its run failed). Pushes the job id to XCom under ``job_id`` as soon as the
    refresh started; returns the run as a JSON-able dict (the job id when not waiting).
    """

    template_fields: Sequence[str] = ("connection_id", "source_parameters", "destination_parameters", "workspace_id")

    def __init__(
        self,
        *,
        connection_id: str,
        source_parameters: dict[str, Any] | None = None,
        destination_parameters: dict[str, Any] | None = None,
        use_previous_source_parameters: bool | None = None,
        use_previous_destination_parameters: bool | None = None,
        emit_assets: bool = True,
        **kwargs: Any,
    ) -> None:
        fields: dict[str, Any] = {
            "source_parameters": source_parameters,
            "destination_parameters": destination_parameters,
            "use_previous_source_parameters": use_previous_source_parameters,
            "use_previous_destination_parameters": use_previous_destination_parameters,
        }
        if not is_templated([connection_id, source_parameters, destination_parameters]):
            protocol.validate_refresh_fields(connection_id, **fields)
        _add_default_outlets(kwargs, [connection_id], emit_assets)
        super().__init__(**kwargs)
        self.connection_id = connection_id
        self.source_parameters = source_parameters
        self.destination_parameters = destination_parameters
        self.use_previous_source_parameters = use_previous_source_parameters
        self.use_previous_destination_parameters = use_previous_destination_parameters
        self.emit_assets = emit_assets

    def _fields(self) -> dict[str, Any]:
        return {
            "source_parameters": self.source_parameters,
            "destination_parameters": self.destination_parameters,
            "use_previous_source_parameters": self.use_previous_source_parameters,
            "use_previous_destination_parameters": self.use_previous_destination_parameters,
        }

    def requested(self) -> list[dict[str, Any]]:
        fields = {k: v for k, v in self._fields().items() if v is not None}
        return [{"connection_id": self.connection_id, **fields}]

    def start(self, connections: list[dict[str, Any]]) -> dict[str, str]:
        fields = {k: v for k, v in connections[0].items() if k != "connection_id"}
        run = self.hook.refresh_connection(self.connection_id, workspace_id=self.workspace_id, **fields)
        if not run.job_id:
            raise WdataError(f"Wdata started a refresh of {self.connection_id} but returned no jobId: {run.to_dict()}")
        self.log.info("Started Wdata refresh of connection %s: job %s.", self.connection_id, run.job_id)
        return {"job_id": run.job_id}

    def read(self, record: StartedRefresh) -> Any:
        return self.hook.get_connection_refresh(self.connection_id, str(record.job_id), workspace_id=self.workspace_id)

    def decide(self, refresh: Any) -> Decision:
        return decide_connection_run(refresh, tolerate_cancelled=self.tolerate_cancelled)

    def make_trigger(self, record: StartedRefresh, last_read_at: float) -> ConnectionRefreshTrigger:
        return ConnectionRefreshTrigger(
            connection_id=self.connection_id, job_id=str(record.job_id), **_trigger_options(self, last_read_at)
        )

    def ids_of(self, record: StartedRefresh) -> dict[str, str]:
        return {"job_id": str(record.job_id)}


def _add_default_outlets(kwargs: dict[str, Any], connections: Any, emit_assets: bool) -> None:
    """One asset per connection as the task's outlets, when the connections are known at parse time and the
    task waits for the refresh to end (else downstream DAGs would start too early). Outlets passed win. Not on
    Airflow 3.0 (see ``_compat.DEFAULT_OUTLETS``)."""
    workspace_id = kwargs.get("workspace_id")
    if (
        emit_assets
        and DEFAULT_OUTLETS
        and "outlets" not in kwargs
        and kwargs.get("wait_for_completion", True)
        and not is_templated([connections, workspace_id])
    ):
        kwargs["outlets"] = default_outlets(list(connections), workspace_id)


def _trigger_options(operator: _StartsRefresh, last_read_at: float) -> dict[str, Any]:
    """The wait's options; the start's answer (or the read that found the refresh running) counts as a read."""
    return {
        "wdata_conn_id": operator.wdata_conn_id,
        "workspace_id": operator.workspace_id,
        "poll_interval": operator.poll_interval,
        "deadline": time.time() + operator.timeout,
        "fail_fast": operator.fail_fast,
        "tolerate_cancelled": operator.tolerate_cancelled,
        "hook_params": operator.hook_params,
        "last_read_at": last_read_at,
    }


def _unknown_to_the_service(error: WdataError) -> bool:
    """Wdata answered 404 to the status read: it does not know the recorded id (not the token endpoint's 404)."""
    return isinstance(error, WdataApiError) and not isinstance(error, WdataAuthError) and error.status == 404


def _not_recorded(record: StartedRefresh, failure: str) -> WdataRefreshNotRecordedError:
    return WdataRefreshNotRecordedError(
        f"Wdata {_describe(record)} started, but {failure} Airflow does not retry this task: a retry could not "
        "know the refresh and would start it again. Check it in Wdata; clear the task to start it again."
    )


def _map_index(context: Context) -> int:
    index = getattr(context.get("ti"), "map_index", -1)
    return index if isinstance(index, int) else -1


def _try_number(context: Context) -> Any:
    ti = context.get("ti") if hasattr(context, "get") else None
    return getattr(ti, "try_number", "?")


def _describe(record: StartedRefresh) -> str:
    if record.batch_id:
        return f"batch {record.batch_id} (connections {', '.join(record.connection_ids)})"
    return f"refresh {record.job_id} of connection {', '.join(record.connection_ids)}"
