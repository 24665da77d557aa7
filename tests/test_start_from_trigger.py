"""BatchRefreshSensor(start_from_trigger=True): the task starts in the triggerer (Airflow 3.3+)."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_wdata._compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor, ConnectionRefreshSensor
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from airflow_provider_wdata.wait import DEFERRAL_TIMEOUT_GRACE

needs_3_3 = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="start_from_trigger needs Airflow 3.3")


@needs_3_3
def test_the_sensor_declares_its_trigger_with_templated_fields_left_for_the_triggerer():
    sensor = BatchRefreshSensor(
        task_id="wait",
        batch_id="{{ ti.xcom_pull(task_ids='start', key='batch_refresh_id') }}",
        start_from_trigger=True,
        poke_interval=5,
        timeout=600,
    )
    args = sensor.start_trigger_args
    assert sensor.start_from_trigger is True
    assert args.trigger_cls == "airflow_provider_wdata.triggers.wdata.BatchRefreshTrigger"
    assert args.next_method == "execute_complete"
    assert args.trigger_kwargs["batch_id"].startswith("{{")
    assert args.trigger_kwargs["deadline"] is None and args.trigger_kwargs["timeout"] == 600
    assert args.timeout.total_seconds() == 600 + DEFERRAL_TIMEOUT_GRACE, "Airflow's backstop, after the wait's"
    assert not any(callable(v) for v in args.trigger_kwargs.values())


@needs_3_3
def test_a_trigger_started_from_its_arguments_runs_to_the_end(wdata_conn):
    batch_id = WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id
    sensor = BatchRefreshSensor(task_id="wait", batch_id=batch_id, start_from_trigger=True, poke_interval=0.05)
    trigger = BatchRefreshTrigger(**sensor.start_trigger_args.trigger_kwargs)

    async def events():
        return [event.payload async for event in trigger.run()]

    [event] = asyncio.run(events())
    assert event["status"] == "success" and event["batch_id"] == batch_id
    assert sensor.execute_complete({}, event)["batch_refresh_id"] == batch_id


def test_without_it_nothing_starts_in_the_triggerer():
    sensor = ConnectionRefreshSensor(task_id="wait", connection_id="c", job_id="j")
    assert not getattr(sensor, "start_from_trigger", False)


@pytest.mark.skipif(AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3+ supports it")
def test_older_airflow_refuses_it_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match=r"start_from_trigger=True needs Airflow 3\.3"):
        BatchRefreshSensor(task_id="wait", batch_id="b", start_from_trigger=True)


def test_a_trigger_needs_a_deadline_or_a_timeout():
    with pytest.raises(ValueError, match=r"deadline .* or a timeout"):
        BatchRefreshTrigger(batch_id="b")
