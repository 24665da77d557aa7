from __future__ import annotations

import logging
import os
import tempfile

# Airflow reads its home when first imported: give the tests a throwaway one.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="wdata-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest

from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.testing import WdataSimulator
from airflow_provider_wdata.tokens import TOKENS

#: A client secret that must never show anywhere outside the hook; see test_secrets.py.
CANARY_SECRET = "CANARY-secret-3f9b1c7e2d"
CLIENT_ID = "canary-client"


@pytest.fixture(autouse=True)
def fresh_token_cache():
    TOKENS.clear()
    yield
    TOKENS.clear()


@pytest.fixture
def simulator():
    with WdataSimulator(client_id=CLIENT_ID, client_secret=CANARY_SECRET) as sim:
        yield sim


@pytest.fixture
def wdata_conn(simulator, monkeypatch):
    """The ``wdata_default`` Airflow connection, pointed at the simulator."""
    name, value = simulator.airflow_conn_uri_env("wdata_default")
    monkeypatch.setenv(name, value)
    return simulator


class Output:
    """Everything logged or printed during a test: stdlib logging, and structlog (Airflow 3) on stdout."""

    def __init__(self, caplog, capsys) -> None:
        self._caplog, self._capsys, self._seen = caplog, capsys, ""

    @property
    def text(self) -> str:
        captured = self._capsys.readouterr()
        self._seen += captured.out + captured.err
        return self._caplog.text + self._seen


@pytest.fixture
def all_logs(caplog, capsys) -> Output:
    caplog.set_level(logging.DEBUG)
    return Output(caplog, capsys)


class _NoWait:
    """Awaitable at once, and harmless when not awaited: stands in for both time.sleep and asyncio.sleep."""

    def __await__(self):
        return iter(())


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the hook's waits between tries (sync and async) instead of sleeping them."""
    recorded: list[float] = []
    original = WdataHook._retrying_args

    def record(seconds: float) -> _NoWait:
        recorded.append(seconds)
        return _NoWait()

    def without_sleeping(self, request):
        return original(self, request) | {"sleep": record}

    monkeypatch.setattr(WdataHook, "_retrying_args", without_sleeping)
    return recorded
