"""Operators that start Wdata refreshes and (by default) wait for them to end."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow_provider_wdata import protocol
from airflow_provider_wdata._compat import BaseOperator, Context, default_deferrable
from airflow_provider_wdata.exceptions import WdataError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.sensors.wdata import DEFERRAL_TIMEOUT_GRACE
from airflow_provider_wdata.triggers.wdata import (
    DEFAULT_POLL_INTERVAL,
    BatchRefreshTrigger,
    ConnectionRefreshTrigger,
    _RefreshTrigger,
    finish,
)

#: Default longest wait for a refresh to end (seconds): seven days, as for Airflow's sensors.
DEFAULT_WAIT_TIMEOUT = 7 * 24 * 3600.0


def _templated(value: Any) -> bool:
    return "{{" in json.dumps(value, default=str)


class _StartsRefresh(BaseOperator):
    ui_color = "#c5e3f6"

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
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = dict(hook_params or {})
        self.wdata_conn_id = wdata_conn_id
        self.workspace_id = workspace_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive numbers of seconds.")

    @cached_property
    def hook(self) -> WdataHook:
        return WdataHook(self.wdata_conn_id, **self.hook_params)

    def _trigger_options(self) -> dict[str, Any]:
        return {
            "wdata_conn_id": self.wdata_conn_id,
            "workspace_id": self.workspace_id,
            "poll_interval": self.poll_interval,
            "deadline": time.time() + self.timeout,
            "fail_fast": self.fail_fast,
            "tolerate_cancelled": self.tolerate_cancelled,
            "hook_params": self.hook_params,
        }

    def _wait(self, trigger: _RefreshTrigger) -> Any:
        if self.deferrable:
            self.log.info("Deferring: the triggerer polls every %s s for up to %s s.", self.poll_interval, self.timeout)
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE),
            )
        return finish(trigger.wait(self.hook, self.log), log=self.log, soft_fail=False)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Called with the trigger's final event once a deferred wait ends."""
        return finish(event, log=self.log, soft_fail=False)


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
    :param wdata_conn_id: the Airflow connection of type ``wdata``.
    :param hook_params: keyword arguments for :class:`WdataHook` (``timeout``, ``max_attempts``, backoff...).

    Pushes the batch id to XCom under ``batch_refresh_id`` as soon as the batch started, and returns the
    batch as a JSON-able dict once it ended (the batch id when not waiting).
    """

    template_fields: Sequence[str] = ("connections", "workspace_id")

    def __init__(self, *, connections: Sequence[Any] | str, cancel_unwritables: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections = connections
        self.cancel_unwritables = cancel_unwritables
        if not _templated(connections):
            protocol.start_batch_refresh(connections, cancel_unwritables)  # type: ignore[arg-type]

    def execute(self, context: Context) -> Any:
        batch = self.hook.start_batch_refresh(self.connections, self.cancel_unwritables, self.workspace_id)
        if not batch.batch_refresh_id:
            raise WdataError(f"Wdata started a batch refresh but returned no batchRefreshId: {batch.to_dict()}")
        context["ti"].xcom_push(key="batch_refresh_id", value=batch.batch_refresh_id)
        self.log.info(
            "Started Wdata batch refresh %s of %d connections.", batch.batch_refresh_id, len(self.connections)
        )
        if not self.wait_for_completion:
            return batch.batch_refresh_id
        return self._wait(BatchRefreshTrigger(batch_id=batch.batch_refresh_id, **self._trigger_options()))


class WdataRefreshConnectionOperator(_StartsRefresh):
    """Refresh one Wdata connection and wait for the refresh to end.

    :param connection_id: the Wdata connection to refresh (templated).
    :param source_parameters: source parameters for this run (templated).
    :param destination_parameters: destination parameters for this run (templated).
    :param use_previous_source_parameters: reuse the parameters of the previous run for the source.
    :param use_previous_destination_parameters: reuse them for the destination.

    The other parameters are those of :class:`WdataRefreshBatchOperator`. Pushes the job id to XCom under
    ``job_id`` as soon as the refresh started; returns the run as a JSON-able dict (the job id when not
    waiting).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connection_id = connection_id
        self.source_parameters = source_parameters
        self.destination_parameters = destination_parameters
        self.use_previous_source_parameters = use_previous_source_parameters
        self.use_previous_destination_parameters = use_previous_destination_parameters
        if not _templated([connection_id, source_parameters, destination_parameters]):
            protocol.refresh_connection(connection_id, **self._fields())

    def _fields(self) -> dict[str, Any]:
        return {
            "source_parameters": self.source_parameters,
            "destination_parameters": self.destination_parameters,
            "use_previous_source_parameters": self.use_previous_source_parameters,
            "use_previous_destination_parameters": self.use_previous_destination_parameters,
        }

    def execute(self, context: Context) -> Any:
        run = self.hook.refresh_connection(self.connection_id, workspace_id=self.workspace_id, **self._fields())
        if not run.job_id:
            raise WdataError(f"Wdata started a refresh of {self.connection_id} but returned no jobId: {run.to_dict()}")
        context["ti"].xcom_push(key="job_id", value=run.job_id)
        self.log.info("Started Wdata refresh of connection %s: job %s.", self.connection_id, run.job_id)
        if not self.wait_for_completion:
            return run.job_id
        trigger = ConnectionRefreshTrigger(
            connection_id=self.connection_id, job_id=run.job_id, **self._trigger_options()
        )
        return self._wait(trigger)
