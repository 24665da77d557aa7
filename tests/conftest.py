from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterable
from pathlib import Path

# Airflow reads its home when first imported: give the tests a throwaway one.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="wdata-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest

from airflow_provider_wdata._compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS
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
# Everything the tests produce is kept: every test's captured output (logs, stdout, stderr) and failure text,
# what helpers read with capsys.readouterr() (and so take out of the report), the output of every subprocess
# run with communicate() (subprocess.run's capture_output included), and what the Airflow tests hand over
# with scan_text(): logs of `airflow dags test`, of the e2e cluster's components, tasks and triggers, and
# the text of their airflow.db (XCom, trigger kwargs decrypted, rendered fields, next_kwargs...). When the
# session ends, none of it may hold a registered client secret (the canary's, and any other a simulator of the
# tests used), the token prefix, or any token a simulator issued (full values).
#
# Each of those channels has a control (see test_secrets.py): a marker sent through it must reach the scan,
# else the session fails as blind.


def _shared_state() -> types.ModuleType:
    """pytest imports this file as ``conftest``, the tests as ``tests.conftest``: two copies of the module. The
    scan's state is one object in sys.modules, so that what a test registers is what the hooks scan."""
    state = sys.modules.get("_wdata_canary_scan")
    if state is None:
        state = types.ModuleType("_wdata_canary_scan")
        state.scanned = []  # (where it came from, text)
        state.tokens = set()
        state.secrets = {CANARY_SECRET}
        state.controls = {}  # channel -> the marker a control test sent through it
        state.current = "outside any test"  # the test running now, to say where a leak was found
        sys.modules[state.__name__] = state
    return state


_STATE = _shared_state()
_SCANNED: list[tuple[str, str]] = _STATE.scanned
_ISSUED_TOKENS: set[str] = _STATE.tokens
_SECRETS: set[str] = _STATE.secrets
_CONTROLS: dict[str, str] = _STATE.controls
SCAN_CONTROL = "canary-scan-control-line"


# Airflow 3.0's task supervisor logs every secret it is asked to mask, at debug level, in the output of `airflow
# dags test` ("Sending request msg=MaskSecret(value='...')"); Airflow 3.1 no longer does. It is Airflow's line,
# not the provider's: on 3.0 alone the scan leaves those lines out (README "Known Airflow issues").
_AIRFLOW_3_0_MASK_SECRET_LINE = re.compile(r"^.*\bmsg=MaskSecret\(value=.*$", re.MULTILINE)
_SKIP_AIRFLOW_3_0_LINES = AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS


def _without_airflow_leaks(text: str) -> str:
    return _AIRFLOW_3_0_MASK_SECRET_LINE.sub("", text) if _SKIP_AIRFLOW_3_0_LINES else text


def scan_text(source: str, text: str | bytes) -> None:
    """Add ``text`` (from ``source``, named in a failure) to what the session-end scan searches."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text:
        _SCANNED.append((source, _without_airflow_leaks(text)))


def register_secret(secret: str) -> None:
    """A client secret some test gave a simulator other than the ``simulator`` fixture: scanned for too."""
    _SECRETS.add(secret)


def register_tokens(tokens: Iterable[str]) -> None:
    """Tokens a simulator other than the ``simulator`` fixture issued: scanned for too."""
    _ISSUED_TOKENS.update(tokens)


def scan_control(channel: str) -> str:
    """A marker the caller sends through ``channel``; the session fails if the scan never sees it."""
    marker = f"{SCAN_CONTROL}:{channel}"
    _CONTROLS[channel] = marker
    return marker


def print_scan_control() -> None:
    print(scan_control("stdout of a passing test"))


def airflow_db_text(db_path: Path, fernet_key: str | None = None) -> str:
    """Every value of every table of an Airflow SQLite database as text, Fernet-encrypted values (trigger
    kwargs, ...) decrypted with ``fernet_key`` too, for a leak scan."""
    fernet = None
    if fernet_key:
        from cryptography.fernet import Fernet

        fernet = Fernet(fernet_key.encode())
    parts: list[str] = []
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):  # table names from the database itself
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", errors="replace")
                    if not isinstance(value, str):
                        continue
                    parts.append(value)
                    if fernet is not None and value.startswith("gAAAA"):
                        with contextlib.suppress(Exception):
                            parts.append(fernet.decrypt(value.encode()).decode("utf-8", errors="replace"))
    finally:
        connection.close()
    return "\n".join(parts)


def airflow_home_text(home: Path, fernet_key: str | None = None) -> str:
    """The text of an Airflow home after a run, for a leak scan: its airflow.db (see :func:`airflow_db_text`)
    and every log file under it."""
    parts = [airflow_db_text(home / "airflow.db", fernet_key)] if (home / "airflow.db").exists() else []
    parts.extend(path.read_text(errors="replace") for path in sorted(home.rglob("*.log*")) if path.is_file())
    return "\n".join(parts)


def leaks_in(text: str, secrets: Iterable[str] = (), tokens: Iterable[str] = ()) -> list[str]:
    """What of ``secrets`` (the registered ones too), the token prefix and ``tokens`` (the issued ones too)
    ``text`` holds, described without showing any of it."""
    found = []
    text = _without_airflow_leaks(text)
    secret_hits = sum(1 for secret in {*_SECRETS, *secrets} if secret in text)
    if secret_hits:
        found.append(f"{secret_hits} client secret(s)")
    if CANARY_TOKEN_PREFIX in text:
        found.append(f"the token prefix {CANARY_TOKEN_PREFIX!r}")
    token_hits = sum(1 for token in {*_ISSUED_TOKENS, *tokens} if token and token in text)
    if token_hits:
        found.append(f"{token_hits} issued access token(s)")
    return found


def _record_readouterr() -> None:
    """Tee what every capsys/capfd.readouterr() returns into the scan: a test that reads its output takes it
    out of the report that pytest_runtest_logreport sees."""
    from _pytest.capture import CaptureFixture

    original = CaptureFixture.readouterr
    if getattr(original, "_wdata_scanned", False):
        return

    def readouterr(self):
        captured = original(self)
        scan_text(f"{_STATE.current}: capsys/capfd.readouterr()", captured.out)
        scan_text(f"{_STATE.current}: capsys/capfd.readouterr()", captured.err)
        return captured

    readouterr._wdata_scanned = True
    CaptureFixture.readouterr = readouterr


def _record_subprocess_output() -> None:
    """Tee the output of every subprocess read with communicate() (so subprocess.run(capture_output=True)
    too) into the scan: a test that passes throws it away."""
    original = subprocess.Popen.communicate
    if getattr(original, "_wdata_scanned", False):
        return

    def communicate(self, *args, **kwargs):
        out, err = original(self, *args, **kwargs)
        # Named by its program only: its arguments may be what leaks.
        program = Path(self.args if isinstance(self.args, str) else str(self.args[0])).name.split()[0]
        for stream in (out, err):
            if stream:
                scan_text(f"{_STATE.current}: output of a {program} subprocess", stream)
        return out, err

    communicate._wdata_scanned = True
    subprocess.Popen.communicate = communicate


def _record_issued_tokens() -> None:
    """Every token every simulator of the session issued (the fixture's, and any other a test starts)."""
    original = WdataSimulator.stop
    if getattr(original, "_wdata_scanned", False):
        return

    def stop(self):
        try:
            return original(self)
        finally:
            register_tokens(self.issued_tokens)

    stop._wdata_scanned = True
    WdataSimulator.stop = stop


def pytest_configure(config):
    _record_readouterr()
    _record_subprocess_output()
    _record_issued_tokens()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _STATE.current = item.nodeid
    try:
        return (yield)
    finally:
        _STATE.current = "outside any test"


def pytest_runtest_logreport(report):
    scan_text(f"{report.nodeid} ({report.when})", report.longreprtext)
    for section, content in report.sections:
        scan_text(f"{report.nodeid}: {section}", content)


def pytest_sessionfinish(session):
    problems = []
    for source, text in _SCANNED:
        found = leaks_in(text)
        if found:
            problems.append(f"{', '.join(found)} in {source}")
    text = "\n".join(text for _, text in _SCANNED)
    blind = sorted(channel for channel, marker in _CONTROLS.items() if marker not in text)
    if blind:
        problems.append(f"nothing: the scan did not see what went through {', '.join(blind)}, so it is blind there")
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config._wdata_canary = (len(text), len(_ISSUED_TOKENS), len(_SECRETS), sorted(_CONTROLS), problems)


def pytest_terminal_summary(terminalreporter, config):
    result = getattr(config, "_wdata_canary", None)
    if result is None:
        return
    size, tokens, secrets, controls, problems = result
    if problems:
        terminalreporter.write_line("CANARY SCAN FAILED: found " + "; ".join(problems[:20]), red=True)
    else:
        terminalreporter.write_line(
            f"canary scan: {size} characters of test output, {secrets} client secret(s) and {tokens} issued "
            f"tokens checked, {len(controls)} channel control(s) seen; no secret found"
        )


@pytest.fixture
def simulator():
    # The tokens it issues join the scan when it stops (see _record_issued_tokens).
    with WdataSimulator(client_id=CLIENT_ID, client_secret=CANARY_SECRET, token_prefix=CANARY_TOKEN_PREFIX) as sim:
        yield sim


@pytest.fixture
def wdata_conn(simulator, monkeypatch):
    """The ``wdata_default`` Airflow connection, pointed at the simulator."""
    name, value = simulator.airflow_conn_env("wdata_default")
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

    def count(self, fragment: str) -> int:
        """How many lines hold ``fragment``: each channel (stdlib logging, stdout) holds every line at most once,
        and Airflow 2 writes a line to both."""
        self.text  # noqa: B018 - reads what was printed so far
        return max(self._caplog.text.count(fragment), self._seen.count(fragment))


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


def ending_after(trigger, reads: int):
    """``trigger``, whose wait's deadline is pulled in to the end of its ``reads``-th read (a failed one too): the
    wait then times out by its own rule after exactly that many reads, however slow the machine (a deadline fixed
    before the loop starts may pass before the first read on a loaded machine). The wait it ran is kept as
    ``trigger.wait``."""
    make_wait = trigger.make_wait

    def counting_wait():
        wait = make_wait()
        afetch, done = wait.afetch, []

        async def counted(hook):
            try:
                return await afetch(hook)
            finally:
                done.append(1)
                if len(done) >= reads:
                    wait.deadline = min(wait.deadline, time.time())

        wait.afetch = counted
        trigger.wait = wait
        return wait

    trigger.make_wait = counting_wait
    return trigger
