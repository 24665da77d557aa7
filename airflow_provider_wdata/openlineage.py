"""OpenLineage for Wdata refreshes: each connection's source is an input, its destination an output.

Needs ``apache-airflow-providers-openlineage`` (``pip install 'airflow-provider-wdata[openlineage]'``); nothing
here imports it before it is used, so the provider works without it.

Datasets:

- namespace ``wdata://<host of the API base URL>`` (e.g. ``wdata://h.app.wdesk.com``; the port too when the URL
  names one), the Wdata service the connections live in;
- name ``<type>/<id>`` from the Wdata connection: ``<sourceType>/<sourceId>`` for the input,
  ``<destinationType>/<destinationId>`` for the output (e.g. ``spreadsheet/9f3c...``).

Run facets: ``wdata_refresh`` (:func:`refresh_run_facet`: the task's batch id and, per connection, the batch it ran
in, its job id, statuses, ``updated`` and error) and, when a connection refresh failed or was cancelled (unless
``tolerate_cancelled`` accepted it), ``errorMessage`` naming each with
its error (on a FAIL event OpenLineage replaces that one with the task's exception, which names them too).

A ``wdata`` asset (:mod:`airflow_provider_wdata.assets`), as hook-level lineage or an outlet, converts to the
dataset of namespace ``wdata`` and name ``connections/<id>`` or ``workspaces/<ws>/connections/<id>``.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from airflow_provider_wdata.assets import connection_ids_of, parse_connection_uri, refresh_runs
from airflow_provider_wdata.decision import FailedRun, RunState, run_state

log = logging.getLogger(__name__)

#: The key of the run facet :func:`lineage_for_refresh` adds.
RUN_FACET_KEY = "wdata_refresh"

__all__ = [
    "RUN_FACET_KEY",
    "WdataLineageMixin",
    "convert_asset_to_openlineage",
    "dataset_namespace",
    "lineage_for_refresh",
    "refresh_run_facet",
]


def dataset_namespace(base_url: str) -> str:
    """The OpenLineage namespace of the datasets behind one Wdata API: ``wdata://<host[:port]>``."""
    netloc = urllib.parse.urlsplit(base_url).netloc.rpartition("@")[2].lower()
    return f"wdata://{netloc}" if netloc else "wdata"


def convert_asset_to_openlineage(asset: Any, lineage_context: Any = None) -> Any:
    """The ``to_openlineage_converter`` of the ``wdata`` scheme: a connection asset as an OpenLineage dataset."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parsed = parse_connection_uri(asset.uri)
    if parsed is None:
        raise ValueError(f"{asset.uri!r} is not a Wdata connection asset URI.")
    parts = urllib.parse.urlsplit(asset.uri)
    return Dataset(namespace="wdata", name=f"{parts.netloc.lower()}{parts.path}")


@functools.cache
def _run_facet_class() -> type:
    """The ``wdata_refresh`` run facet's class, made when first used (OpenLineage is optional)."""
    import attr
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attr.define
    class WdataRefreshRunFacet(RunFacet):  # type: ignore[misc,valid-type]
        """What a Wdata refresh did: the batch id (if any) and one entry per connection refresh."""

        batchId: str | None = None
        connections: list[dict[str, Any]] = attr.Factory(list)

    # Findable by pickle as airflow_provider_wdata.openlineage.WdataRefreshRunFacet (see __getattr__).
    WdataRefreshRunFacet.__module__ = __name__
    WdataRefreshRunFacet.__qualname__ = "WdataRefreshRunFacet"
    return WdataRefreshRunFacet


def __getattr__(name: str) -> Any:
    if name == "WdataRefreshRunFacet":
        return _run_facet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def refresh_run_facet(runs: Sequence[Mapping[str, Any]], batch_id: str | None = None) -> Any:
    """The ``wdata_refresh`` run facet of ``runs`` (snake_case run dicts, as from ``ConnectionRun.to_dict()``)."""
    batch_id = batch_id or next((run.get("batch_id") for run in runs if run.get("batch_id")), None)
    connections = []
    for run in runs:
        entry = {
            "connectionId": run.get("connection_id"),
            "batchId": run.get("batch_id"),
            "jobId": run.get("job_id"),
            "sourceStatus": run.get("source_status"),
            "destinationStatus": run.get("destination_status"),
            "updated": run.get("updated"),
            "error": run.get("error"),
        }
        connections.append({key: value for key, value in entry.items() if value is not None})
    return _run_facet_class()(batchId=batch_id, connections=connections)


def _failures(runs: Sequence[Mapping[str, Any]], tolerate_cancelled: bool = False) -> list[str]:
    failures = []
    for run in runs:
        state = run_state(run.get("source_status"), run.get("destination_status"), run.get("error"))
        if state is RunState.FAILED or (state is RunState.CANCELLED and not tolerate_cancelled):
            failed = FailedRun(
                connection_id=run.get("connection_id"),
                job_id=run.get("job_id"),
                source_status=run.get("source_status"),
                destination_status=run.get("destination_status"),
                error=run.get("error"),
                state=state,
            )
            failures.append(failed.describe())
    return failures


def _read_connection(
    hook: Any, connection_id: str, workspace_id: str | None, cache: MutableMapping[Any, Any]
) -> Any | None:
    key = connection_id  # a connection's id names it in every workspace
    if key not in cache:
        try:
            cache[key] = hook.get_wdata_connection(connection_id, workspace_id=workspace_id)
        except Exception as error:  # lineage must never fail the task
            log.warning("OpenLineage: could not read Wdata connection %s: %s", connection_id, error)
            cache[key] = None
    return cache[key]


def lineage_for_refresh(
    hook: Any,
    runs: Sequence[Mapping[str, Any]],
    *,
    batch_id: str | None = None,
    workspace_id: str | None = None,
    cache: MutableMapping[Any, Any] | None = None,
    tolerate_cancelled: bool = False,
) -> Any:
    """The ``OperatorLineage`` of a refresh of ``runs``: sources as inputs, destinations as outputs.

    :param hook: the ``WdataHook`` that ran the refresh; each connection is read once with
        ``hook.get_wdata_connection`` (a failed read is logged and leaves that connection out).
    :param runs: one dict per connection with snake_case keys as ``ConnectionRun.to_dict()`` (at least
        ``connection_id``), an optional ``batch_id``; see :func:`airflow_provider_wdata.assets.refresh_runs`.
    :param batch_id: the batch refresh id, when the runs do not carry it.
    :param workspace_id: the workspace to read a connection in when its run names none (the refresh's).
    :param cache: a dict the caller keeps for one task, so that each connection is read only once.
    :param tolerate_cancelled: the task accepted cancelled connection refreshes: they are no failure.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset, ErrorMessageRunFacet
    from airflow.providers.openlineage.extractors import OperatorLineage

    cache = {} if cache is None else cache
    runs = [run for run in runs if isinstance(run, Mapping) and isinstance(run.get("connection_id"), str)]
    namespace = dataset_namespace(hook.config.base_url) if runs else "wdata"
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for run in runs:
        connection = _read_connection(hook, run["connection_id"], run.get("workspace_id") or workspace_id, cache)
        if connection is None:
            continue
        if connection.source_type and connection.source_id:
            name = f"{connection.source_type}/{connection.source_id}"
            inputs.setdefault(name, Dataset(namespace=namespace, name=name))
        if connection.destination_type and connection.destination_id:
            name = f"{connection.destination_type}/{connection.destination_id}"
            outputs.setdefault(name, Dataset(namespace=namespace, name=name))
    run_facets: dict[str, Any] = {RUN_FACET_KEY: refresh_run_facet(runs, batch_id)} if runs else {}
    failures = _failures(runs, tolerate_cancelled)
    if failures:
        message = f"{len(failures)} of {len(runs)} Wdata connection refreshes failed:\n" + "\n".join(failures)
        run_facets["errorMessage"] = ErrorMessageRunFacet(message=message, programmingLanguage="python")
    return OperatorLineage(inputs=list(inputs.values()), outputs=list(outputs.values()), run_facets=run_facets)


class WdataLineageMixin:
    """OpenLineage methods for a refresh operator (or sensor) with a ``hook`` property.

    The operator calls :meth:`record_wdata_lineage` with what its wait ended on (the final event, before
    ``finish``) or with its result; the lineage covers those runs, else the connections the operator names
    (``connections`` or ``connection_id``). Each Wdata connection is read once per task instance.
    """

    _wdata_lineage_runs: list[dict[str, Any]] | None = None
    _wdata_lineage_batch_id: str | None = None
    _wdata_lineage_cache: dict[Any, Any] | None = None

    def record_wdata_lineage(self, result: Any) -> None:
        """Keep the runs of a final event, a batch summary or a run summary for the lineage."""
        runs = refresh_runs(result)
        if runs:
            self._wdata_lineage_runs = runs
            # The task's batch: after a durable rerun, runs kept from an earlier batch name their own.
            batch_id = result.get("batch_refresh_id") or result.get("batch_id")
            self._wdata_lineage_batch_id = batch_id if isinstance(batch_id, str) else None

    def _wdata_planned_runs(self) -> list[dict[str, Any]]:
        named = getattr(self, "connections", None) or getattr(self, "connection_id", None)
        return [
            {"connection_id": connection_id, **({"workspace_id": workspace} if workspace else {})}
            for connection_id, workspace in connection_ids_of(named or ())
        ]

    def _wdata_operator_lineage(self) -> Any:
        if self._wdata_lineage_cache is None:
            self._wdata_lineage_cache = {}
        runs = self._wdata_lineage_runs or self._wdata_planned_runs()
        return lineage_for_refresh(
            self.hook,  # type: ignore[attr-defined]
            runs,
            batch_id=self._wdata_lineage_batch_id if self._wdata_lineage_runs else None,
            workspace_id=getattr(self, "workspace_id", None),
            cache=self._wdata_lineage_cache,
            tolerate_cancelled=bool(getattr(self, "tolerate_cancelled", False)),
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage facets of a finished refresh (called by the OpenLineage provider)."""
        return self._wdata_operator_lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage facets of a failed refresh (called by the OpenLineage provider)."""
        return self._wdata_operator_lineage()


class WdataStartLineageMixin(WdataLineageMixin):
    """:class:`WdataLineageMixin` for the operators that start refreshes, whose START event names the same datasets.

    Not for the sensors: a sensor in reschedule mode starts at every poke, and would read its connections each time.
    """

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage facets of a refresh about to start: the inputs and outputs it will report on completion
        (without them, the START event would name the task's ``wdata://`` assets and COMPLETE the datasets)."""
        planned = self._wdata_operator_lineage()
        return type(planned)(inputs=planned.inputs, outputs=planned.outputs)
