"""Secrets never leave the hook. The whole-run canary scan lives in conftest.py; these check its pieces."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import subprocess
import sys
import time

from cryptography.fernet import Fernet

from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor
from airflow_provider_wdata.testing import Fault
from airflow_provider_wdata.tokens import TOKENS
from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger
from tests.conftest import (
    CANARY_SECRET,
    CANARY_TOKEN_PREFIX,
    airflow_db_text,
    leaks_in,
    print_scan_control,
    register_secret,
    scan_control,
)

# Controls: each sends a marker through one channel the session-end scan must see (conftest fails the session,
# naming the channel, when a marker is missing from what it scanned).


def test_the_canary_scan_sees_the_output_of_passing_tests():
    print_scan_control()


def test_the_canary_scan_sees_output_a_helper_read_with_readouterr(capsys):
    print(scan_control("output read with capsys.readouterr()"))
    assert "canary-scan-control-line" in capsys.readouterr().out  # now gone from the test's report


def test_the_canary_scan_sees_the_output_of_a_passing_subprocess():
    marker = scan_control("output of a subprocess")
    result = subprocess.run([sys.executable, "-c", f"print({marker!r})"], capture_output=True, text=True, check=True)
    assert result.returncode == 0  # the output is then thrown away, as a passing test does


def test_the_canary_scan_sees_log_records_the_test_cleared(caplog):
    logging.getLogger("wdata.canary").warning(scan_control("a log record cleared from caplog"))
    caplog.clear()
    assert caplog.text == ""


def test_the_scan_finds_full_tokens_without_their_prefix_and_registered_secrets():
    token, other_secret = secrets.token_urlsafe(32), "other-" + secrets.token_hex(8)
    register_secret(other_secret)
    assert leaks_in(f"Bearer {token}", tokens=[token]) == ["1 issued access token(s)"]
    assert leaks_in(f"password={other_secret}") == ["1 client secret(s)"]
    assert leaks_in(f"{CANARY_TOKEN_PREFIX}x") == [f"the token prefix {CANARY_TOKEN_PREFIX!r}"]
    assert leaks_in(f"a {token[:-1]} b", tokens=[token]) == []
    found = leaks_in(f"{CANARY_SECRET} {token}", tokens=[token])
    assert found == ["1 client secret(s)", "1 issued access token(s)"]
    assert not any(CANARY_SECRET in line or token in line for line in found), "the finding never shows it"


def test_the_airflow_db_text_holds_every_table_and_decrypted_values(tmp_path):
    key = Fernet.generate_key().decode()
    db = tmp_path / "airflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE trigger (id INTEGER, kwargs TEXT)")
        connection.execute("CREATE TABLE xcom (value BLOB)")
        connection.execute("INSERT INTO trigger VALUES (1, ?)", (Fernet(key).encrypt(b'{"s": "hidden-1"}').decode(),))
        connection.execute("INSERT INTO xcom VALUES (?)", (b'"plain-2"',))
    text = airflow_db_text(db, key)
    assert "hidden-1" in text and "plain-2" in text
    assert "hidden-1" not in airflow_db_text(db)


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
