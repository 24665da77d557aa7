"""Every import that differs between Airflow 2.11 and 3.x, or between Pythons, in one place (``make matrix`` checks
each release).

- BaseOperator, BaseSensorOperator, PokeReturnValue, Connection, Context: ``airflow.sdk`` from 3.0.
- DAG, task, task_group, for the tests: ``airflow.sdk`` from 3.0; ``airflow.models.dag`` and ``airflow.decorators``
  on 2.11. Imported on first use (see ``__getattr__``): Airflow's task decorators take 0.2 s to import.
- ResolveMixin, the base of what Airflow resolves when it renders a task (XComArg, MappedArgument, DagParam...):
  ``airflow.sdk.definitions._internal.mixins`` from 3.0, ``airflow.utils.mixins`` on 2.11.
- BaseHook: ``airflow.sdk`` from 3.1 (3.0 still has it in ``airflow.hooks.base`` only); its
  ``aget_connection`` from 3.1 too, before which ``get_connection`` runs in a thread.
- AirflowException, AirflowFailException, AirflowSensorTimeout, AirflowSkipException, conf:
  ``airflow.sdk.exceptions`` and ``airflow.sdk.configuration`` from 3.2. 3.1 has no ``airflow.sdk.configuration`` and
  no ``AirflowSkipException`` in ``airflow.sdk.exceptions``; its task runner and sensors, like 3.0's, catch
  ``airflow.exceptions.AirflowSkipException`` and ``AirflowSensorTimeout``.
  From 3.2 on, ``airflow.exceptions`` re-exports the ``airflow.sdk.exceptions`` classes.
- BaseTrigger, TriggerEvent, StartTriggerArgs: ``airflow.triggers.base`` on every version; ``start_from_trigger``
  renders templated fields in the triggerer from 3.3 (disabled on 3.1 and 3.2).
- Asset: ``airflow.sdk.Asset`` from 3.0; ``airflow.datasets.Dataset`` on 2.11. Provider info registers URI schemes under
  ``asset-uris`` (read by 3.x) and ``dataset-uris`` (read by 2.11). Asset events' extras are
  ``context["outlet_events"][asset].extra`` on both (2.10+).
- ``timeout`` (an async context manager that raises ``asyncio.TimeoutError``): ``asyncio.timeout`` from Python 3.11,
  the ``async-timeout`` package (which aiohttp itself requires there) on 3.10.
- Hook-level lineage collector: ``airflow.sdk.lineage.get_hook_lineage_collector`` from 3.2, before that
  ``airflow.lineage.hook.get_hook_lineage_collector``; its ``add_output_asset`` is ``add_output_dataset`` on 2.11.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from airflow import __version__ as AIRFLOW_VERSION
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TriggerEvent
from packaging.version import Version

_AIRFLOW = Version(Version(AIRFLOW_VERSION).base_version)
AIRFLOW_V_3_0_PLUS = Version("3.0.0") <= _AIRFLOW
AIRFLOW_V_3_1_PLUS = Version("3.1.0") <= _AIRFLOW
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= _AIRFLOW
#: start_from_trigger with templated fields rendered in the triggerer.
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= _AIRFLOW
#: Airflow 3.0's ``dag.test()`` (and ``airflow dags test``) refuses a task whose outlets name assets no DAG
#: processor has registered yet, so outlets the DAG author did not ask for would break it there.
DEFAULT_OUTLETS = not (AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS)

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:
    from async_timeout import timeout  # type: ignore[no-redef]

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import Asset, BaseOperator, BaseSensorOperator, Connection, Context, PokeReturnValue
    from airflow.sdk.definitions._internal.mixins import ResolveMixin
else:
    from airflow.datasets import Dataset as Asset  # type: ignore
    from airflow.models import BaseOperator  # type: ignore
    from airflow.models.connection import Connection  # type: ignore
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue  # type: ignore
    from airflow.utils.context import Context  # type: ignore
    from airflow.utils.mixins import ResolveMixin  # type: ignore

if AIRFLOW_V_3_1_PLUS:
    from airflow.sdk import BaseHook
else:
    from airflow.hooks.base import BaseHook  # type: ignore

if AIRFLOW_V_3_2_PLUS:
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
else:
    from airflow.configuration import conf  # type: ignore
    from airflow.exceptions import (  # type: ignore
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )

if AIRFLOW_V_3_3_PLUS:
    from airflow.sdk.exceptions import AirflowRuntimeError

    #: What the task state store raises when the execution API fails or refuses a call (``AirflowRuntimeError``,
    #: carrying the supervisor's error answer) or the task's channel to the supervisor breaks.
    TASK_STATE_STORE_ERRORS: tuple[type[Exception], ...] = (AirflowRuntimeError, OSError, EOFError)
else:
    TASK_STATE_STORE_ERRORS = (OSError, EOFError)  # no task state store before 3.3

__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "DEFAULT_OUTLETS",
    "TASK_STATE_STORE_ERRORS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "Asset",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Connection",
    "Context",
    "PokeReturnValue",
    "ResolveMixin",
    "StartTriggerArgs",
    "TriggerEvent",
    "add_hook_output_asset",
    "aget_connection",
    "default_deferrable",
    "timeout",
]


def __getattr__(name: str) -> Any:
    """``DAG``, ``task`` and ``task_group``, imported when first asked for (the tests use them, the provider not)."""
    airflow_2_modules = {"DAG": "airflow.models.dag", "task": "airflow.decorators", "task_group": "airflow.decorators"}
    if name not in airflow_2_modules:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = "airflow.sdk" if AIRFLOW_V_3_0_PLUS else airflow_2_modules[name]
    return getattr(importlib.import_module(module), name)


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, read when an operator is built."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


async def aget_connection(conn_id: str) -> Any:
    """Read an Airflow connection without blocking the event loop."""
    if AIRFLOW_V_3_1_PLUS:
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)


def add_hook_output_asset(context: Any, asset: Any) -> None:
    """Report ``asset`` as written by ``context`` (a hook) to Airflow's hook-level lineage collector.

    The collector hands what it gathered to the hook lineage readers (the OpenLineage provider registers one);
    without a reader it is a no-op collector.
    """
    if AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.lineage import get_hook_lineage_collector
    else:
        from airflow.lineage.hook import get_hook_lineage_collector  # type: ignore

    collector = get_hook_lineage_collector()
    if AIRFLOW_V_3_0_PLUS:
        collector.add_output_asset(context=context, uri=asset.uri)
    else:
        collector.add_output_dataset(context=context, uri=asset.uri)  # type: ignore[attr-defined]
