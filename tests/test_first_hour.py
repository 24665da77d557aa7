"""What a new user meets in the first hour: bad input refused early, naming the argument, field or connection,
with the same error types in every mode."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from airflow_provider_wdata.config import build_config
from airflow_provider_wdata.decision import decide_batch, decide_connection_run
from airflow_provider_wdata.exceptions import WdataApiError, WdataAuthError, WdataConfigError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.models import ConnectionRun, RefreshBatch
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor, ConnectionRefreshSensor
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from airflow_provider_wdata.wait import finish

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"poke_interval": 0}, "poke_interval"),
        ({"poke_interval": -5}, "poke_interval"),
        ({"poke_interval": timedelta(0)}, "poke_interval"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
    ],
)
def test_a_sensor_refuses_bad_intervals_when_the_dag_is_parsed(kwargs, named):
    with pytest.raises(ValueError, match=f"^{named} must be a positive number of seconds"):
        BatchRefreshSensor(task_id="wait", batch_id="b-1", **kwargs)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: BatchRefreshSensor(task_id="w", batch_id="a/b"), "batch_id"),
        (lambda: BatchRefreshSensor(task_id="w", batch_id=""), "batch_id"),
        (lambda: ConnectionRefreshSensor(task_id="w", connection_id="c 1", job_id="j"), "connection_id"),
        (lambda: ConnectionRefreshSensor(task_id="w", connection_id="c", job_id="../j"), "job_id"),
        (lambda: BatchRefreshSensor(task_id="w", batch_id="b", workspace_id="w" * 41), "workspace_id"),
    ],
)
def test_a_sensor_refuses_literal_bad_ids_when_the_dag_is_parsed(make, named):
    with pytest.raises(WdataConfigError, match=named):
        make()


def test_templated_ids_are_checked_only_once_rendered():
    sensor = BatchRefreshSensor(task_id="w", batch_id="{{ ti.xcom_pull('start', 'batch_refresh_id') }}")
    assert sensor.batch_id.startswith("{{")


def test_sensor_signatures_spell_out_their_options():
    import inspect

    for cls in (BatchRefreshSensor, ConnectionRefreshSensor):
        params = inspect.signature(cls.__init__).parameters
        for name in ("wdata_conn_id", "workspace_id", "fail_fast", "tolerate_cancelled", "deferrable"):
            assert name in params, (cls.__name__, name)
        assert {"poke_interval", "timeout", "hook_params"} <= set(params)


def config(host: str):
    return build_config("wdata_x", login="id", password="secret", host=host, port=None, extras={})


@pytest.mark.parametrize("host", ["not a url", "https://exa mple.com/prep", "ftp://h.example.com"])
def test_a_malformed_host_is_a_config_error_naming_the_connection_and_field(host):
    with pytest.raises(WdataConfigError) as info:
        config(host)
    message = str(info.value)
    assert "'wdata_x'" in message and f"host {host!r}" in message and "not a valid URL" in message


def test_a_malformed_host_fails_before_any_request(simulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WDATA_BAD", '{"conn_type": "wdata", "login": "a", "password": "b", "host": "not a url"}'
    )
    seen = len(simulator.requests)
    with pytest.raises(WdataConfigError, match="'wdata_bad': host 'not a url'"):
        WdataHook("wdata_bad", **FAST_HOOK).get_batch_refresh("b-1")
    assert len(simulator.requests) == seen


@pytest.mark.parametrize("host", ["127.0.0.1:44753/s/wdata/prep", "localhost:8080", "[::1]:8080/prep"])
def test_a_loopback_host_without_scheme_asks_for_one(host):
    with pytest.raises(WdataConfigError) as info:
        config(host)
    message = str(info.value)
    assert "has no scheme" in message and f"https://{host}" in message and f"http://{host}" in message
    assert "verify" not in message


def test_a_remote_host_without_scheme_is_https():
    assert config("h.eu.wdesk.com/s/wdata/prep").base_url == "https://h.eu.wdesk.com/s/wdata/prep"


def test_a_sensor_raises_the_same_error_type_for_a_wrong_batch_id_in_every_mode(wdata_conn):
    def sensor(**kwargs):
        return BatchRefreshSensor(
            task_id="wait", batch_id="deadbeef", poke_interval=0.05, hook_params=FAST_HOOK, **kwargs
        )

    with pytest.raises(WdataApiError) as poked:
        sensor(deferrable=False).poke({})
    trigger = BatchRefreshTrigger(batch_id="deadbeef", poll_interval=0.05, deadline=time.time() + 30)
    [event] = asyncio.run(_events(trigger))
    with pytest.raises(WdataApiError) as deferred:
        sensor(deferrable=True).execute_complete({}, event)
    assert poked.value.status == deferred.value.status == 404
    assert poked.value.messages == deferred.value.messages and deferred.value.messages


def test_refused_credentials_raise_an_auth_error_after_deferral_too(simulator, monkeypatch):
    name, value = simulator.airflow_conn_env("wdata_default")
    monkeypatch.setenv(name, value.replace(simulator.client_secret, "wrong-secret"))
    trigger = BatchRefreshTrigger(batch_id="b-1", poll_interval=0.05, deadline=time.time() + 30, hook_params=FAST_HOOK)
    [event] = asyncio.run(_events(trigger))
    with pytest.raises(WdataAuthError) as info:
        finish(event, log=_NullLog())
    assert info.value.oauth_error == "invalid_client"


def test_a_cancelled_child_points_at_tolerate_cancelled():
    batch = RefreshBatch.from_api(
        {
            "batchRefreshId": "b-1",
            "sourceStatus": "complete",
            "destinationStatus": "complete",
            "childRefreshes": [
                {"connectionId": "conn-1", "sourceStatus": "complete", "destinationStatus": "complete"},
                {"connectionId": "conn-2", "sourceStatus": "complete", "destinationStatus": "cancelled"},
            ],
        }
    )
    report = decide_batch(batch).failure_report()
    assert "conn-2" in report and "cancelled by the service" in report and "no error text" in report
    assert "tolerate_cancelled=True" in report
    assert "tolerate_cancelled" not in decide_batch(_with_error_child(batch)).failure_report()


def _with_error_child(batch: RefreshBatch) -> RefreshBatch:
    body = batch.to_dict()
    return RefreshBatch.from_api(
        {
            "batchRefreshId": body["batch_refresh_id"],
            "sourceStatus": "complete",
            "destinationStatus": "complete",
            "childRefreshes": [{"connectionId": "conn-2", "sourceStatus": "error", "destinationStatus": "error"}],
        }
    )


def test_a_single_connection_failure_says_its_facts_once():
    run = ConnectionRun.from_api(
        {
            "connectionId": "conn-3",
            "jobId": "j-1",
            "sourceStatus": "error",
            "destinationStatus": "error",
            "error": "Sheet locked",
        }
    )
    report = decide_connection_run(run).failure_report()
    assert report.count("Sheet locked") == 1 and report.count("conn-3") == 1


async def _events(trigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


class _NullLog:
    def info(self, *args) -> None: ...

    def error(self, *args) -> None: ...


def test_a_failed_token_request_is_named_as_such(simulator, monkeypatch):
    simulator.stop_listening()
    name, value = simulator.airflow_conn_env("wdata_default")
    monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match=r"^Token request to 127\.0\.0\.1:\d+ failed before the request was sent"):
        WdataHook(max_attempts=1).get_batch_refresh("b-1")


def test_a_tls_failure_mentions_a_plain_http_server(simulator, monkeypatch):
    name, value = simulator.airflow_conn_env("wdata_default")
    monkeypatch.setenv(name, value.replace("http://", "https://"))
    with pytest.raises(Exception, match="write http:// at the start of the connection's host"):
        WdataHook(max_attempts=1).get_batch_refresh("b-1")
