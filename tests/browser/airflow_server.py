"""A real Airflow 3 api-server for the browser tests: a throwaway SQLite home, no login needed (every user is
an admin), and the connection "Test" button enabled. Started in its own process group and always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.fernet import Fernet

AIRFLOW_BIN = Path(sys.executable).with_name("airflow")
STARTUP_TIMEOUT = 90.0
STOP_GRACE = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({error})"


@dataclass(frozen=True)
class StoredConnection:
    conn_type: str
    host: str | None
    login: str | None
    password: str | None
    port: int | None
    extra: dict[str, object]

    def __repr__(self) -> str:  # never show the password, in a failed assertion either
        return f"StoredConnection({self.conn_type!r}, host={self.host!r}, login={self.login!r}, extra={self.extra!r})"


@dataclass
class ApiServer:
    url: str
    log_path: Path
    db_path: Path
    fernet_key: str

    def log_tail(self) -> str:
        return f"--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"

    def stored_connection(self, conn_id: str) -> StoredConnection | None:
        """The connection as the metadata database holds it (decrypted), read-only."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute(
                "SELECT conn_type, host, login, password, port, extra, is_encrypted, is_extra_encrypted "
                "FROM connection WHERE conn_id = ?",
                (conn_id,),
            ).fetchone()
        finally:
            db.close()
        if row is None:
            return None
        conn_type, host, login, password, port, extra, is_encrypted, is_extra_encrypted = row
        fernet = Fernet(self.fernet_key.encode())
        if password and is_encrypted:
            password = fernet.decrypt(password.encode()).decode()
        if extra and is_extra_encrypted:
            extra = fernet.decrypt(extra.encode()).decode()
        return StoredConnection(conn_type, host, login, password, port, json.loads(extra) if extra else {})


@contextlib.contextmanager
def running_api_server(home: Path, log_path: Path) -> Iterator[ApiServer]:
    """``airflow db migrate`` then ``airflow api-server`` in its own process group, on a SQLite database in
    ``home``, its output in ``log_path``; stopped on leaving, whatever happened."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    db_path = home / "airflow.db"
    fernet_key = Fernet.generate_key().decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db_path}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "PYTHONUNBUFFERED": "1",
        }
    )
    with log_path.open("wb") as out:
        migrate = subprocess.run(
            [str(AIRFLOW_BIN), "db", "migrate"],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate exited with {migrate.returncode}\n{_tail(log_path)}")
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [str(AIRFLOW_BIN), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped whole below
        )
    server = ApiServer(url, log_path, db_path, fernet_key)
    try:
        _wait_healthy(server, process)
        yield server
    finally:
        _stop_group(process)


def _wait_healthy(server: ApiServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: object = None
    with requests.Session() as session:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the api-server exited with {process.returncode}\n{server.log_tail()}")
            try:
                response = session.get(f"{server.url}/api/v2/monitor/health", timeout=5)
                if response.ok and response.json()["metadatabase"]["status"] == "healthy":
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except (requests.RequestException, ValueError, KeyError) as error:
                last = error
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the api-server was not healthy after {STARTUP_TIMEOUT:.0f} s ({last!r})\n{server.log_tail()}"
                )
            time.sleep(0.25)  # polling interval of a wait with a deadline, not a fixed wait


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the api-server's process group, SIGKILL whatever is left of it after STOP_GRACE seconds."""
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE)
    _signal_group(process, signal.SIGKILL)  # also when the leader exited: its workers may linger in the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, sig)  # start_new_session=True: the group id is the leader's pid
