"""Secrets never leave the hook. The whole-run canary scan lives in conftest.py; these check its pieces."""

from __future__ import annotations

import asyncio
import json
import time

from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.tokens import TOKENS
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from tests.conftest import CANARY_SECRET, print_scan_control


def test_the_canary_scan_sees_the_output_of_passing_tests():
    print_scan_control()  # conftest fails the session if this line is missing from what it scanned


def test_a_whole_deferred_wait_leaks_nothing(wdata_conn, all_logs, sleeps):
    hook = WdataHook()
    batch = hook.start_batch_refresh(["conn-1", "conn-2"])
    wdata_conn.expire_tokens()
    wdata_conn.add_fault(Fault(method="GET", path_contains="/batch/refresh/", status=503, times=2))
    trigger = BatchRefreshTrigger(
        batch_id=batch.batch_refresh_id, poll_interval=0.05, deadline=time.time() + 30, hook_params={"max_attempts": 2}
    )

    async def run():
        return [e.payload async for e in trigger.run()]

    [event] = asyncio.run(run())
    sensor = BatchRefreshSensor(task_id="wait", batch_id=batch.batch_refresh_id)
    xcom = sensor.execute_complete({}, event)
    produced = [
        all_logs.text,
        json.dumps(trigger.serialize()),
        json.dumps(event),
        json.dumps(xcom),
        repr(hook),
        repr(hook.config),
        repr(TOKENS._tokens),
        repr(sensor),
    ]
    tokens = wdata_conn.issued_tokens
    assert len(tokens) == 2 and event["status"] == "success"
    for text in produced:
        assert CANARY_SECRET not in text
        assert not any(token in text for token in tokens)
