"""Triggers that wait on a batch refresh or a single connection refresh in the triggerer.

A trigger is only the triggerer's side of a :class:`~airflow_provider_wdata.wait.RefreshWait`: it carries the
wait's arguments through serialization and runs the wait in the triggerer's event loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow_provider_wdata._compat import BaseTrigger, TriggerEvent
from airflow_provider_wdata.arguments import positive_seconds
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.retries import DEFAULT_RETRY_AFTER_MAX
from airflow_provider_wdata.wait import (
    DEFAULT_POLL_INTERVAL,
    EVENT_STATUSES,
    BatchWait,
    ConnectionRunWait,
    RefreshWait,
    finish,
)

# finish, EVENT_STATUSES and DEFAULT_POLL_INTERVAL lived here before the wait had its own module.
__all__ = ["DEFAULT_POLL_INTERVAL", "EVENT_STATUSES", "BatchRefreshTrigger", "ConnectionRefreshTrigger", "finish"]


class _RefreshTrigger(BaseTrigger):
    """Yields exactly one event, the wait's final one (see :mod:`airflow_provider_wdata.wait`).

    Network trouble, timeouts, 429 and 5xx (once the hook's own tries are spent) do not end the wait;
    refused credentials, 403, 404 and other client errors end it at once.
    """

    def __init__(
        self,
        *,
        wdata_conn_id: str = WdataHook.default_conn_name,
        workspace_id: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        deadline: float | None = None,
        timeout: float | None = None,
        fail_fast: bool = False,
        tolerate_cancelled: bool = False,
        hook_params: dict[str, Any] | None = None,
        last_read_at: float | None = None,
    ) -> None:
        super().__init__()
        # Plain attributes, not a wait built here: Airflow may render templated ones after __init__
        # (start_from_trigger), so the wait is made from them when it runs.
        self.wdata_conn_id = wdata_conn_id
        self.workspace_id = workspace_id
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        if deadline is None and timeout is None:
            raise ValueError("A Wdata trigger needs a deadline (epoch seconds) or a timeout (seconds).")
        self.deadline = float(deadline) if deadline is not None else None
        self.timeout = positive_seconds(timeout, "timeout") if timeout is not None else None
        self.fail_fast = fail_fast
        self.tolerate_cancelled = tolerate_cancelled
        self.hook_params = dict(hook_params or {})
        self.last_read_at = last_read_at

    def ids(self) -> dict[str, str]:
        raise NotImplementedError

    def make_wait(self) -> RefreshWait:
        """The wait this trigger runs."""
        raise NotImplementedError

    def _wait_options(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline if self.deadline is not None else time.time() + float(self.timeout or 0),
            "fail_fast": self.fail_fast,
            "tolerate_cancelled": self.tolerate_cancelled,
            "retry_after_max": float(self.hook_params.get("retry_after_max", DEFAULT_RETRY_AFTER_MAX)),
            "last_read_at": self.last_read_at,
        }

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            **self.ids(),
            "wdata_conn_id": self.wdata_conn_id,
            "workspace_id": self.workspace_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
            **({"timeout": self.timeout} if self.timeout is not None else {}),
            "fail_fast": self.fail_fast,
            "tolerate_cancelled": self.tolerate_cancelled,
            "hook_params": self.hook_params,
            "last_read_at": self.last_read_at,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.deadline is None:  # started from the triggerer (start_from_trigger): the wait starts now
            self.deadline = time.time() + float(self.timeout or 0)
        hook = WdataHook(self.wdata_conn_id, **self.hook_params)
        yield TriggerEvent(await self.make_wait().arun(hook, self.log))

    async def on_kill(self) -> None:
        """A person ended the deferred task: Wdata has no way to cancel a refresh, so say that it goes on."""
        ids = ", ".join(f"{name} {value}" for name, value in self.ids().items())
        self.log.warning(
            "The task was stopped, but the Wdata refresh (%s) keeps running in Wdata: it cannot be cancelled.", ids
        )


class BatchRefreshTrigger(_RefreshTrigger):
    """Wait on a batch refresh (``GET /api/v1/connections/batch/refresh/{batchId}``).

    :param batch_id: the ``batchRefreshId`` to wait on.
    :param deadline: absolute end of the wait, in seconds since the epoch (kept across triggerer restarts).
    :param timeout: instead of ``deadline``, seconds from when the trigger first runs (for a sensor started from
        the triggerer, whose trigger arguments are fixed when the DAG is parsed).
    :param poll_interval: seconds between two status reads.
    :param fail_fast: fail as soon as one connection refresh failed, without waiting for the others.
    :param tolerate_cancelled: count cancelled connection refreshes as fine rather than failed.
    :param hook_params: keyword arguments for :class:`WdataHook` (``timeout``, ``max_attempts``, backoff...).
    :param last_read_at: when the status was last read (seconds since the epoch): the first read comes one
        ``poll_interval`` after it. A first read already due is spread with jitter (see
        :data:`~airflow_provider_wdata.wait.FIRST_READ_SPREAD_MAX`).
    """

    def __init__(self, *, batch_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id

    def ids(self) -> dict[str, str]:
        return {"batch_id": self.batch_id}

    def make_wait(self) -> BatchWait:
        return BatchWait(batch_id=self.batch_id, **self._wait_options())


class ConnectionRefreshTrigger(_RefreshTrigger):
    """Wait on one connection refresh (``GET /api/v1/connections/{connectionId}/status?jobId=``).

    Same parameters as :class:`BatchRefreshTrigger`, with ``connection_id`` and ``job_id`` in place of the
    batch id (``fail_fast`` has nothing to act on for a single run; ``tolerate_cancelled`` accepts a cancelled run).
    """

    def __init__(self, *, connection_id: str, job_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection_id = connection_id
        self.job_id = job_id

    def ids(self) -> dict[str, str]:
        return {"connection_id": self.connection_id, "job_id": self.job_id}

    def make_wait(self) -> ConnectionRunWait:
        return ConnectionRunWait(connection_id=self.connection_id, job_id=self.job_id, **self._wait_options())
