"""Airflow assets of Wdata connections: a refresh updates them, and downstream DAGs are scheduled on them.

One asset per Wdata connection (not to be confused with an Airflow connection), named by a ``wdata`` URI that the
DAG author can write at parse time, from the ids alone:

- ``wdata://connections/<connection_id>``, when no workspace is named;
- ``wdata://workspaces/<workspace_id>/connections/<connection_id>``, when one is.

Ids are percent-encoded (``quote(id, safe="")``; ids made only of letters, digits and ``-._~`` stay as they are).
The same arguments always give the same URI, and a hand-written URI is normalised to it by :func:`normalize_uri`
(the scheme handler registered in the provider info); but Airflow 3 names an asset from its URI as written, so
consumers should build theirs with :func:`connection_asset` too. The workspace is part of the identity: name it in
both the refreshing and the consuming DAG, or in neither.

On Airflow 2.11 the asset is a ``Dataset``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_wdata import protocol
from airflow_provider_wdata._compat import Asset, add_hook_output_asset

log = logging.getLogger(__name__)

#: The URI scheme of Wdata connection assets.
SCHEME = "wdata"

#: The keys :func:`record_asset_events` sets on an asset event's extra.
EVENT_EXTRA_KEYS = (
    "connection_id",
    "workspace_id",
    "batch_id",
    "job_id",
    "source_status",
    "destination_status",
    "updated",
)

__all__ = [
    "SCHEME",
    "MalformedWdataUriError",
    "connection_asset",
    "connection_ids_of",
    "connection_uri",
    "create_asset",
    "default_outlets",
    "normalize_uri",
    "parse_connection_uri",
    "record_asset_events",
    "refresh_runs",
    "report_hook_lineage",
]


# ------------------------------------------------------------------------------------------------------ URIs


def _encoded_id(name: str, value: Any) -> str:
    """``value`` fit for a URI path, or WdataConfigError (a ValueError) naming what is wrong with it."""
    return protocol.path_param(name, value)


def _encoded_workspace(value: Any) -> str:
    """A workspace id fit for a URI path. It goes in a query string in the API, where any character may appear
    (``V1NfMTIz+/==``): only its length is checked, and everything else is percent-encoded."""
    protocol.validate_workspace_id(value)
    if value in (".", ".."):  # a dot segment: URL handling would collapse it
        return value.replace(".", "%2E")
    return urllib.parse.quote(value, safe="-._~")


def connection_uri(connection_id: str, workspace_id: str | None = None) -> str:
    """The ``wdata`` URI of one Wdata connection (see the module's doc); raises ValueError on an invalid id."""
    encoded = _encoded_id("connection_id", connection_id)
    if workspace_id is None:
        return f"{SCHEME}://connections/{encoded}"
    return f"{SCHEME}://workspaces/{_encoded_workspace(workspace_id)}/connections/{encoded}"


def connection_asset(connection_id: str, workspace_id: str | None = None) -> Asset:
    """The Airflow asset (a Dataset on Airflow 2.11) of one Wdata connection.

    Computed from the ids alone, never from the Airflow connection, so that a DAG can be scheduled on it at
    parse time. Raises ValueError naming the id when an id is not a valid Wdata id.
    """
    return Asset(uri=connection_uri(connection_id, workspace_id))


def create_asset(*, connection_id: str, workspace_id: str | None = None, extra: dict[str, Any] | None = None) -> Asset:
    """The asset factory registered for the ``wdata`` scheme (Airflow's hook lineage collector calls it)."""
    uri = connection_uri(connection_id, workspace_id)
    return Asset(uri=uri, extra=extra) if extra else Asset(uri=uri)


class MalformedWdataUriError(ValueError):
    """A ``wdata`` asset URI that is not one of the two shapes, or holds an invalid id."""


def _malformed(parts: urllib.parse.SplitResult, why: str) -> MalformedWdataUriError:
    return MalformedWdataUriError(
        f"Malformed Wdata asset URI {urllib.parse.urlunsplit(parts)!r}: {why.rstrip('.')}. Expected "
        f"'{SCHEME}://connections/<connection_id>' or "
        f"'{SCHEME}://workspaces/<workspace_id>/connections/<connection_id>' "
        "(build it with airflow_provider_wdata.assets.connection_asset)."
    )


def _decoded(parts: urllib.parse.SplitResult, name: str, segment: str) -> str:
    if not segment:
        raise _malformed(parts, f"the {name} is empty")
    return urllib.parse.unquote(segment, errors="strict")


def normalize_uri(parts: urllib.parse.SplitResult) -> urllib.parse.SplitResult:
    """The scheme handler of ``wdata`` URIs: the canonical form of a URI, or ValueError saying what is wrong.

    Lower-cases the host part (``connections``/``workspaces``) and the ``connections`` segment, re-encodes the ids
    canonically, and drops a trailing slash and a fragment. Refuses a query, user info, a port, a missing or extra
    path segment, and ids that are not valid Wdata ids.
    """
    if parts.scheme.lower() != SCHEME:
        raise _malformed(parts, f"the scheme is not {SCHEME!r}")
    if parts.query:
        raise _malformed(parts, "a Wdata asset URI takes no query")
    host = parts.netloc.lower()
    if host not in ("connections", "workspaces"):
        raise _malformed(parts, f"{parts.netloc!r} is neither 'connections' nor 'workspaces'")
    segments = parts.path.rstrip("/").split("/")[1:] if parts.path.startswith("/") else []
    if host == "connections" and len(segments) != 1:
        raise _malformed(parts, "the path must be exactly '/<connection_id>'")
    if host == "workspaces" and (len(segments) != 3 or segments[1].lower() != "connections"):
        raise _malformed(parts, "the path must be exactly '/<workspace_id>/connections/<connection_id>'")
    problem = None
    try:
        if host == "connections":
            uri = connection_uri(_decoded(parts, "connection id", segments[0]))
        else:
            workspace_id = _decoded(parts, "workspace id", segments[0])
            uri = connection_uri(_decoded(parts, "connection id", segments[2]), workspace_id)
    except UnicodeDecodeError:
        problem = "an id is not valid percent-encoded UTF-8"
    except MalformedWdataUriError:
        raise
    except ValueError as error:
        problem = str(error)
    if problem is not None:  # raised outside the except block: no exception chained to it
        raise _malformed(parts, problem)
    return urllib.parse.urlsplit(uri)


def parse_connection_uri(uri: str) -> tuple[str, str | None] | None:
    """``(connection_id, workspace_id)`` of a ``wdata`` URI, or None when ``uri`` is not a valid one."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() != SCHEME:
        return None
    try:
        parts = normalize_uri(parts)
    except ValueError:
        return None
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
    return (segments[0], None) if parts.netloc == "connections" else (segments[2], segments[0])


# --------------------------------------------------------------------------------------- for the operators


def connection_ids_of(connections: Any) -> list[tuple[str, str | None]]:
    """``(connection_id, workspace_id or None)`` of each entry of an operator's connections.

    Takes connection ids and RefreshConnection dicts (``connection_id`` and an optional ``workspace_id``);
    skips anything else (a template not rendered yet, for one).
    """
    if isinstance(connections, (str, Mapping)):
        connections = [connections]
    found: list[tuple[str, str | None]] = []
    for entry in connections if isinstance(connections, Iterable) else ():
        if isinstance(entry, str):
            found.append((entry, None))
        elif isinstance(entry, Mapping) and isinstance(entry.get("connection_id"), str):
            workspace = entry.get("workspace_id")
            found.append((entry["connection_id"], workspace if isinstance(workspace, str) else None))
    return found


def default_outlets(connection_ids: Sequence[Any], workspace_id: str | None = None) -> list[Asset]:
    """The assets a refresh of ``connection_ids`` updates, one per connection, in order, without duplicates.

    ``connection_ids`` holds connection ids or RefreshConnection dicts; a dict's own ``workspace_id`` wins over
    ``workspace_id``. Raises ValueError on an invalid id. Call it only with rendered (non-templated) values.
    """
    outlets: list[Asset] = []
    seen: set[str] = set()
    for connection_id, own_workspace in connection_ids_of(connection_ids):
        asset = connection_asset(connection_id, own_workspace if own_workspace is not None else workspace_id)
        if asset.uri not in seen:
            seen.add(asset.uri)
            outlets.append(asset)
    return outlets


def refresh_runs(result: Any) -> list[dict[str, Any]]:
    """The per-connection runs of a refresh, as :func:`record_asset_events` and the lineage take them.

    ``result`` is what a refresh operator returns: a batch (``RefreshBatch.to_dict()``, whose children get the
    batch's id as ``batch_id``) or one run (``ConnectionRun.to_dict()``); or a wait's final event (a trigger's
    event, success or not), whose ``summary`` is the last refresh read. Anything else gives no runs.
    """
    if not isinstance(result, Mapping):
        return []
    if "status" in result and "summary" in result:  # a final event
        summary = result.get("summary")
        if isinstance(summary, Mapping):
            runs = refresh_runs(summary)
            if result.get("batch_id"):
                runs = [{**run, "batch_id": run.get("batch_id") or result["batch_id"]} for run in runs]
            return runs
        if result.get("connection_id"):
            return [{"connection_id": result["connection_id"], "job_id": result.get("job_id")}]
        return []
    children = result.get("child_refreshes")
    if isinstance(children, list):
        batch_id = result.get("batch_refresh_id")
        child_runs: list[Mapping[str, Any]] = [child for child in children if isinstance(child, Mapping)]
        # A run kept from an earlier batch of a durable task names its own batch.
        return [{**run, "batch_id": run.get("batch_id") or batch_id} for run in child_runs]
    return [dict(result)] if result.get("connection_id") else []


def _event_extra(run: Mapping[str, Any], workspace_id: str | None) -> dict[str, Any]:
    extra = {key: run.get(key) for key in EVENT_EXTRA_KEYS if run.get(key) is not None}
    if workspace_id is not None:
        extra.setdefault("workspace_id", workspace_id)
    return extra


def record_asset_events(context: Mapping[str, Any], outlets: Iterable[Any], runs: Sequence[Mapping[str, Any]]) -> int:
    """Put what the refresh did for each Wdata connection asset among ``outlets`` on its asset event's extra.

    Call it when the refresh succeeded. For each outlet that is a ``wdata`` connection asset and has a run in
    ``runs`` (matched by connection id), updates ``context["outlet_events"][asset].extra`` with ``connection_id``,
    ``batch_id`` and/or ``job_id``, ``source_status``, ``destination_status``, ``updated`` (and the asset's
    ``workspace_id``). Other outlets are left alone. Returns how many events got an extra.
    """
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return 0
    by_connection = {run.get("connection_id"): run for run in runs if isinstance(run, Mapping)}
    recorded = 0
    for outlet in outlets or ():
        uri = getattr(outlet, "uri", None)
        parsed = parse_connection_uri(uri) if isinstance(uri, str) else None
        if parsed is None:
            continue
        connection_id, workspace_id = parsed
        run = by_connection.get(connection_id)
        if run is None:
            continue
        outlet_events[outlet].extra.update(_event_extra(run, workspace_id))
        recorded += 1
    return recorded


def report_hook_lineage(hook: Any, connection_ids: Sequence[Any], workspace_id: str | None = None) -> None:
    """Report each connection's asset as an output of ``hook`` to Airflow's hook-level lineage collector.

    Called by the hook once refreshes started. Never raises: lineage must not fail a refresh.
    """
    try:
        for asset in default_outlets(connection_ids, workspace_id):
            add_hook_output_asset(hook, asset)
    except Exception:
        log.debug("Could not report the hook lineage of Wdata connections %s", connection_ids, exc_info=True)
