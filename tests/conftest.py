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

#: A client secret and a token prefix that must never show anywhere outside the hook; see test_secrets.py.
CANARY_SECRET = "CANARY-secret-3f9b1c7e2d"
CANARY_TOKEN_PREFIX = "CANARY-token-"
CLIENT_ID = "canary-client"


@pytest.fixture(autouse=True)
def fresh_token_cache():
    TOKENS.clear()
    yield
    TOKENS.clear()


# ---------------------------------------------------------------------------------------------- canary scan
# Every test's captured output (logs, stdout, stderr) and failure text is kept, with every token the simulators
# issued; when the session ends, neither the canary secret nor any token may appear in any of it.

_SCANNED: list[str] = []
_ISSUED_TOKENS: set[str] = set()
SCAN_CONTROL = "canary-scan-control-line"


def pytest_runtest_logreport(report):
    _SCANNED.append(report.longreprtext)
    _SCANNED.extend(content for _, content in report.sections)


_CONTROL_PRINTED: list[bool] = []


def pytest_sessionfinish(session):
    text = "\n".join(_SCANNED)
    problems = [f"the canary secret {CANARY_SECRET!r}"] if CANARY_SECRET in text else []
    if CANARY_TOKEN_PREFIX in text:
        problems.append(f"an access token ({CANARY_TOKEN_PREFIX}...)")
    if _CONTROL_PRINTED and SCAN_CONTROL not in text:
        problems.append("nothing: the scan did not see a passing test's output, so it is blind")
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config._wdata_canary = (len(text), len(_ISSUED_TOKENS), problems)


def pytest_terminal_summary(terminalreporter, config):
    result = getattr(config, "_wdata_canary", None)
    if result is None:
        return
    size, tokens, problems = result
    if problems:
        terminalreporter.write_line(f"CANARY SCAN FAILED: found {'; '.join(problems)} in test output", red=True)
    else:
        terminalreporter.write_line(
            f"canary scan: {size} characters of test output and {tokens} issued tokens checked; no secret found"
        )


def print_scan_control() -> None:
    _CONTROL_PRINTED.append(True)
    print(SCAN_CONTROL)


@pytest.fixture
def simulator():
    with WdataSimulator(client_id=CLIENT_ID, client_secret=CANARY_SECRET, token_prefix=CANARY_TOKEN_PREFIX) as sim:
        yield sim
        _ISSUED_TOKENS.update(sim.issued_tokens)


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
    original = WdataHook._retry_policy

    def record(seconds: float) -> _NoWait:
        recorded.append(seconds)
        return _NoWait()

    def without_sleeping(self, request):
        return original(self, request) | {"sleep": record}

    monkeypatch.setattr(WdataHook, "_retry_policy", without_sleeping)
    return recorded
