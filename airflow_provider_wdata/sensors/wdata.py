"""Sensors that wait on a batch refresh or a single connection refresh, poking or deferred.

Each poke is one read of a :class:`~airflow_provider_wdata.wait.RefreshWait`; deferred, the sensor reads once
and hands the same wait to a trigger. Sensors start nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_wdata import protocol
from airflow_provider_wdata._compat import (
    AIRFLOW_V_3_3_PLUS,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
    StartTriggerArgs,
    default_deferrable,
)
from airflow_provider_wdata.arguments import is_resolved_by_airflow, is_templated, positive_seconds
from airflow_provider_wdata.assets import record_asset_events, refresh_runs
from airflow_provider_wdata.exceptions import WdataConfigError, WdataRefreshTimeoutError, WdataSensorTimeoutError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.openlineage import WdataLineageMixin
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger, ConnectionRefreshTrigger
from airflow_provider_wdata.wait import DEFAULT_POLL_INTERVAL, DEFERRAL_TIMEOUT_GRACE, RefreshWait, finish

#: Default longest wait (seconds): seven days, as for Airflow's sensors.
DEFAULT_SENSOR_TIMEOUT = 7 * 24 * 3600.0


class _RefreshSensor(WdataLineageMixin, BaseSensorOperator):
    ui_color = "#c5e3f6"

    def __init__(
        self,
        *,
        wdata_conn_id: str,
        workspace_id: str | None,
        fail_fast: bool,
        tolerate_cancelled: bool,
        deferrable: bool | None,
        poke_interval: float,
        timeout: float | timedelta,
        hook_params: dict[str, Any] | None,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        if start_from_trigger and not AIRFLOW_V_3_3_PLUS:
            raise ValueError(
                "start_from_trigger=True needs Airflow 3.3 or later (earlier triggerers cannot render the "
                "sensor's templated fields); use deferrable=True instead."
            )
        super().__init__(
            poke_interval=positive_seconds(poke_interval, "poke_interval"),
            timeout=positive_seconds(timeout, "timeout"),
            **kwargs,
        )
        self.hook_params = dict(hook_params or {})
        self.wdata_conn_id = wdata_conn_id
        self.workspace_id = workspace_id
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self._poke_wait: RefreshWait | None = None
        self._ended_badly: dict[str, Any] | None = None
        self._start_in_triggerer = start_from_trigger
        if workspace_id is not None and not is_templated(workspace_id):
            protocol.validate_workspace_id(workspace_id)

    def make_trigger(
        self, *, deadline: float | None, last_read_at: float | None
    ) -> BatchRefreshTrigger | ConnectionRefreshTrigger:
        raise NotImplementedError

    def _start_from_trigger_if_asked(self) -> None:
        """With ``start_from_trigger``, the task starts in the triggerer: no worker slot, not even for a first
        check. The trigger's arguments are fixed now, so its wait is the sensor's ``timeout`` from its start."""
        if not self._start_in_triggerer:
            return
        resolved = [name for name in self.template_fields if is_resolved_by_airflow(getattr(self, name))]
        if resolved:
            raise WdataConfigError(
                f"start_from_trigger=True cannot take {', '.join(resolved)} from an XComArg (or another value Airflow "
                "resolves when the task runs): the trigger's arguments are fixed when the DAG is parsed, and the "
                "triggerer renders only Jinja templates in them. Pull the XCom in a template instead, e.g. "
                "\"{{ ti.xcom_pull(task_ids='start', map_indexes=-1) }}\" for start.output, or use deferrable=True."
            )
        trigger = self.make_trigger(deadline=None, last_read_at=None)
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{type(trigger).__module__}.{type(trigger).__qualname__}",
            trigger_kwargs=trigger.serialize()[1],
            next_method="execute_complete",
            next_kwargs=None,
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE),
        )

    def _trigger_options(self, deadline: float | None, last_read_at: float | None) -> dict[str, Any]:
        return {
            "wdata_conn_id": self.wdata_conn_id,
            "workspace_id": self.workspace_id,
            "poll_interval": self.poke_interval,
            "deadline": deadline,
            "timeout": self.timeout if deadline is None else None,
            "fail_fast": self.fail_fast,
            "tolerate_cancelled": self.tolerate_cancelled,
            "hook_params": self.hook_params,
            "last_read_at": last_read_at,
        }

    @cached_property
    def hook(self) -> WdataHook:
        return WdataHook(self.wdata_conn_id, **self.hook_params)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            try:
                result = super().execute(context)
            except AirflowSensorTimeout as timed_out:
                if isinstance(timed_out, WdataSensorTimeoutError):
                    raise
                # Airflow's own timeout ended a poke or reschedule wait: end it as a deferred wait's timeout
                # event does, with the last statuses read.
                self.execute_complete(context, self._timeout_event_now(because=str(timed_out)))
                raise  # not reached: a timeout event always raises
            if self._ended_badly is not None:
                if getattr(self, "never_fail", False):  # as Airflow's poke loop treats what poke raises
                    raise AirflowSkipException(f"Skipped (never_fail): {self._ended_badly.get('message')}")
                return self.execute_complete(context, self._ended_badly)  # raises
            return result

        trigger = self.make_trigger(deadline=time.time() + self.timeout, last_read_at=None)
        wait = trigger.make_wait()
        event = wait.read(self.hook, self.log)
        if event is not None:
            return self.execute_complete(context, event)
        self.log.info("Deferring: the triggerer polls every %s s for up to %s s.", self.poke_interval, self.timeout)
        trigger.last_read_at = wait.last_read_at
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE),
        )

    def poke(self, context: Context) -> Any:
        if self._poke_wait is None:
            # The sensor's own timeout ends a wait in poke and reschedule mode.
            self._poke_wait = self.make_trigger(deadline=math.inf, last_read_at=None).make_wait()
        event = self._poke_wait.read(self.hook, self.log)
        if event is None:
            return False
        if self.silent_fail and event["status"] != "success":
            # silent_fail would swallow what poke raises and poke again, until the timeout: the wait already rode
            # out the read errors that can pass, so this end is final. It is raised from execute(), past silent_fail.
            self._ended_badly = event
            return True
        return PokeReturnValue(is_done=True, xcom_value=self.execute_complete(context, event))

    def _timeout_event_now(self, *, because: str) -> dict[str, Any]:
        """The timeout event of the poke wait, as if its deadline were now, its message ending with ``because``."""
        wait = self._poke_wait or self.make_trigger(deadline=math.inf, last_read_at=None).make_wait()
        wait.deadline = time.time()
        event = wait.timeout_event()
        event["message"] = f"{event['message']} ({because})"
        return event

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Called with the trigger's event (or the same event built in poke mode)."""
        self.record_wdata_lineage(event)
        try:
            summary = finish(event, log=self.log, soft_fail=self.soft_fail)
        except WdataRefreshTimeoutError as timed_out:
            # Final, as Airflow's own sensor timeout is: a retry would wait the whole timeout again.
            raise WdataSensorTimeoutError(str(timed_out)) from None
        record_asset_events(context, self.outlets, refresh_runs(event))
        return summary


class BatchRefreshSensor(_RefreshSensor):
    """Wait for a Wdata batch refresh to end; fail, naming each failed connection, if it went wrong.

    :param batch_id: the batch refresh id (templated), e.g. ``{{ ti.xcom_pull('start', 'batch_refresh_id') }}``, or
        an XComArg such as ``start.output``.
    :param wdata_conn_id: the Airflow connection of type ``wdata``.
    :param workspace_id: workspaceId sent with each read (templated); defaults to the connection's.
    :param fail_fast: fail as soon as one connection refresh failed, without waiting for the others.
    :param tolerate_cancelled: treat cancelled connection refreshes as fine rather than failed.
    :param deferrable: wait in the triggerer instead of a worker slot (default: ``[operators]
        default_deferrable``). Checks once first and returns at once if the batch has already ended.
    :param poke_interval: seconds between two status reads, in every mode.
    :param timeout: seconds (or a timedelta) before the wait ends with ``WdataSensorTimeoutError``, in every mode:
        an ``AirflowSensorTimeout``, so not retried (skipped instead with ``soft_fail``).
    :param hook_params: keyword arguments for :class:`WdataHook` (``timeout``, ``max_attempts``, backoff...).
    :param start_from_trigger: Airflow 3.3+: start the task directly in the triggerer, with ``batch_id`` and
        ``workspace_id`` rendered there; the wait holds no worker slot, not even for its first check. Its
        ``timeout`` runs from the trigger's start (a triggerer restart starts it again; Airflow's own deferral
        timeout, ``timeout`` plus ``DEFERRAL_TIMEOUT_GRACE`` (90 s) from the task's start, still bounds the whole
        wait). On Airflow 3.3.2 pull XCom with ``map_indexes=-1`` in its templates: ``{{ ti.xcom_pull(task_ids='start',
        key='batch_refresh_id', map_indexes=-1) }}`` (without it the triggerer cannot answer the pull and the
        rendering hangs).

    Every other keyword argument is :class:`BaseSensorOperator`'s (``mode``, ``soft_fail``, ``outlets``...).
    Returns (XCom ``return_value``) the batch as a JSON-able dict with snake_case keys.
    """

    template_fields: Sequence[str] = ("batch_id", "workspace_id")

    def __init__(
        self,
        *,
        batch_id: str,
        wdata_conn_id: str = WdataHook.default_conn_name,
        workspace_id: str | None = None,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        deferrable: bool | None = None,
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta = DEFAULT_SENSOR_TIMEOUT,
        hook_params: dict[str, Any] | None = None,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            wdata_conn_id=wdata_conn_id,
            workspace_id=workspace_id,
            fail_fast=fail_fast,
            tolerate_cancelled=tolerate_cancelled,
            deferrable=deferrable,
            poke_interval=poke_interval,
            timeout=timeout,
            hook_params=hook_params,
            start_from_trigger=start_from_trigger,
            **kwargs,
        )
        self.batch_id = batch_id
        if not is_templated(batch_id):
            protocol.path_param("batch_id", batch_id)
        self._start_from_trigger_if_asked()

    def make_trigger(self, *, deadline: float | None, last_read_at: float | None) -> BatchRefreshTrigger:
        return BatchRefreshTrigger(batch_id=self.batch_id, **self._trigger_options(deadline, last_read_at))


class ConnectionRefreshSensor(_RefreshSensor):
    """Wait for one Wdata connection refresh (a ``job_id``) to end. Same options as the batch sensor.

    :param connection_id: the Wdata connection (templated).
    :param job_id: the refresh job id (templated), e.g. ``{{ ti.xcom_pull('refresh', 'job_id') }}``.
    """

    template_fields: Sequence[str] = ("connection_id", "job_id", "workspace_id")

    def __init__(
        self,
        *,
        connection_id: str,
        job_id: str,
        wdata_conn_id: str = WdataHook.default_conn_name,
        workspace_id: str | None = None,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        deferrable: bool | None = None,
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta = DEFAULT_SENSOR_TIMEOUT,
        hook_params: dict[str, Any] | None = None,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            wdata_conn_id=wdata_conn_id,
            workspace_id=workspace_id,
            fail_fast=fail_fast,
            tolerate_cancelled=tolerate_cancelled,
            deferrable=deferrable,
            poke_interval=poke_interval,
            timeout=timeout,
            hook_params=hook_params,
            start_from_trigger=start_from_trigger,
            **kwargs,
        )
        self.connection_id = connection_id
        self.job_id = job_id
        for name, value in (("connection_id", connection_id), ("job_id", job_id)):
            if not is_templated(value):
                protocol.path_param(name, value)
        self._start_from_trigger_if_asked()

    def make_trigger(self, *, deadline: float | None, last_read_at: float | None) -> ConnectionRefreshTrigger:
        return ConnectionRefreshTrigger(
            connection_id=self.connection_id, job_id=self.job_id, **self._trigger_options(deadline, last_read_at)
        )
