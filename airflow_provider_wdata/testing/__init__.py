"""Test helpers: a local simulator of the Workiva Wdata Prep API.

Run it standalone with ``python -m airflow_provider_wdata.testing --help``.
"""

from __future__ import annotations

from airflow_provider_wdata.testing.clock import ManualClock
from airflow_provider_wdata.testing.faults import Fault
from airflow_provider_wdata.testing.recording import RecordedRequest
from airflow_provider_wdata.testing.refresh_state import SimulatedBatch, SimulatedConnection, SimulatedRun
from airflow_provider_wdata.testing.service import SimulatedWdataService
from airflow_provider_wdata.testing.simulator import WdataSimulator

# The names before SimulatedRun & co; RunState clashed with airflow_provider_wdata.decision.RunState.
RunState = SimulatedRun
BatchState = SimulatedBatch
ConnectionState = SimulatedConnection

__all__ = [
    "BatchState",
    "ConnectionState",
    "Fault",
    "ManualClock",
    "RecordedRequest",
    "RunState",
    "SimulatedBatch",
    "SimulatedConnection",
    "SimulatedRun",
    "SimulatedWdataService",
    "WdataSimulator",
]
