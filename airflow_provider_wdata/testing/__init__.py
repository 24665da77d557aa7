"""Test helpers: a local simulator of the Workiva Wdata Prep API.

Run it standalone with ``python -m airflow_provider_wdata.testing --help``.
"""

from __future__ import annotations

from airflow_provider_wdata.testing.simulator import (
    BatchState,
    ConnectionState,
    Fault,
    RecordedRequest,
    RunState,
    WdataSimulator,
)

__all__ = ["BatchState", "ConnectionState", "Fault", "RecordedRequest", "RunState", "WdataSimulator"]
