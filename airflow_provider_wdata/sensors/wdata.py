"""Sensors that wait on a batch refresh or a single connection refresh, poking or deferred."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_wdata._compat import (
    BaseSensorOperator,
    Context,
    PokeReturnValue,
    default_deferrable,
)
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.triggers.wdata import (
    BatchRefreshTrigger,
    ConnectionRefreshTrigger,
    _RefreshTrigger,
    finish,
)

#: Airflow's own deferral timeout is set this much later than the trigger's deadline, as a backstop, so
#: that the trigger's ``timeout`` event (which carries the last statuses) normally ends the wait.
DEFERRAL_TIMEOUT_GRACE = 60.0


class _RefreshSensor(BaseSensorOperator):
    ui_color = "#c5e3f6"

    def __init__(
        self,
        *,
        wdata_conn_id: str = WdataHook.default_conn_name,
        workspace_id: str | None = None,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        deferrable: bool | None = None,
        poke_interval: float = 30,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.hook_params = dict(hook_params or {})
        self.wdata_conn_id = wdata_conn_id
        self.workspace_id = workspace_id
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self._poke_trigger: _RefreshTrigger | None = None

    def make_trigger(self, deadline: float) -> _RefreshTrigger:
        raise NotImplementedError

    def _trigger_options(self, deadline: float) -> dict[str, Any]:
        return {
            "wdata_conn_id": self.wdata_conn_id,
            "workspace_id": self.workspace_id,
            "poll_interval": self.poke_interval,
            "deadline": deadline,
            "fail_fast": self.fail_fast,
            "tolerate_cancelled": self.tolerate_cancelled,
            "hook_params": self.hook_params,
        }

    @cached_property
    def hook(self) -> WdataHook:
        return WdataHook(self.wdata_conn_id, **self.hook_params)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        trigger = self.make_trigger(deadline=time.time() + self.timeout)
        event = trigger.read(self.hook, self.log)
        if event is not None:
            return self.execute_complete(context, event)
        self.log.info("Deferring: the triggerer polls every %s s for up to %s s.", self.poke_interval, self.timeout)
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE),
        )

    def poke(self, context: Context) -> Any:
        if self._poke_trigger is None:
            # The deadline is the sensor's own timeout in poke and reschedule mode.
            self._poke_trigger = self.make_trigger(deadline=float("inf"))
        event = self._poke_trigger.read(self.hook, self.log)
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.execute_complete(context, event))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Called with the trigger's event (or the same event built in poke mode)."""
        return finish(event, log=self.log, soft_fail=self.soft_fail)


class BatchRefreshSensor(_RefreshSensor):
    """Wait for a Wdata batch refresh to end; fail, naming each failed connection, if it went wrong.

    :param batch_id: the batch refresh id (templated), e.g. ``{{ ti.xcom_pull('start', 'batch_refresh_id') }}``.
    :param wdata_conn_id: the Airflow connection of type ``wdata``.
    :param workspace_id: workspaceId sent with each read (templated); defaults to the connection's.
    :param fail_fast: fail as soon as one connection refresh failed, without waiting for the others.
    :param tolerate_cancelled: treat cancelled connection refreshes as fine rather than failed.
    :param deferrable: wait in the triggerer instead of a worker slot (default: ``[operators]
        default_deferrable``). Checks once first and returns at once if the batch has already ended.
    :param poke_interval: seconds between two status reads, in every mode.
    :param timeout: seconds before the wait ends with a timeout (skipped instead with ``soft_fail``).
    :param hook_params: keyword arguments for :class:`WdataHook` (``timeout``, ``max_attempts``, backoff...).

    Returns (XCom ``return_value``) the batch as a JSON-able dict with snake_case keys.
    """

    template_fields: Sequence[str] = ("batch_id", "workspace_id")

    def __init__(self, *, batch_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id

    def make_trigger(self, deadline: float) -> BatchRefreshTrigger:
        return BatchRefreshTrigger(batch_id=self.batch_id, **self._trigger_options(deadline))


class ConnectionRefreshSensor(_RefreshSensor):
    """Wait for one Wdata connection refresh (a ``job_id``) to end. Same options as the batch sensor.

    :param connection_id: the Wdata connection (templated).
    :param job_id: the refresh job id (templated), e.g. ``{{ ti.xcom_pull('refresh', 'job_id') }}``.
    """

    template_fields: Sequence[str] = ("connection_id", "job_id", "workspace_id")

    def __init__(self, *, connection_id: str, job_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection_id = connection_id
        self.job_id = job_id

    def make_trigger(self, deadline: float) -> ConnectionRefreshTrigger:
        return ConnectionRefreshTrigger(
            connection_id=self.connection_id, job_id=self.job_id, **self._trigger_options(deadline)
        )
