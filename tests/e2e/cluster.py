"""A real Airflow 3 for the end-to-end tests: api-server, scheduler, dag-processor and triggerer as separate
processes, LocalExecutor on SQLite, in a throwaway AIRFLOW_HOME, with ``wdata_default`` pointed at a
:class:`~airflow_provider_wdata.testing.WdataSimulator` running in the test process.

Every component runs in its own process group (its task, log-server and trigger-runner children with it) and
writes its output to ``<root>/component-logs/<name>.log``. :meth:`AirflowCluster.stop` sends SIGTERM to every
group, then SIGKILL after a grace period; it is safe to call more than once, after a failed start too.

Airflow is driven through its REST API (``/api/v2``) only; the one CLI call is ``airflow db migrate``.
Waits poll for a state with a deadline, and a wait that times out says what it saw, with the logs' tails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from cryptography.fernet import Fernet

from airflow_provider_wdata.testing import WdataSimulator

AIRFLOW_BIN = Path(sys.executable).with_name("airflow")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS_DIR = REPO / "example_dags"
TEST_DAGS_DIR = Path(__file__).resolve().parent / "dags"

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: How long a component may take to exit after SIGTERM before its whole group gets SIGKILL.
STOP_GRACE = 5.0
#: The triggerer's heartbeat period and the age after which its triggers go to another triggerer. Short, so
#: that a restarted triggerer takes over the triggers of a killed one within seconds.
TRIGGERER_HEARTBEAT = 2
TRIGGERER_HEALTH_THRESHOLD = 10

#: What the scheduler logs when it fails a resumed deferred task on the stale event of its deferring process.
STALE_DEFER_EXIT = "finished with state success, but the task instance's state attribute is"

_ROUTINE_ACCESS = re.compile(r"\[http\.access\].* status_code=2\d\d\b")

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A wait for a state did not see it before its deadline."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.25,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or raise WaitTimeout at the deadline.

    A request error or a locked database counts as "not yet"; any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except (requests.RequestException, sqlite3.OperationalError) as error:
            value, last_error = None, error
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what}"
            if last_error is not None:
                message += f" (last error: {last_error!r})"
            if details is not None:
                message += "\n" + details()
            raise WaitTimeout(message)
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log, without the api-server's access lines for successful requests (the
    tests' own polling, which would crowd out everything else)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"({error})"
    kept = [line for line in text.splitlines() if not _ROUTINE_ACCESS.search(line)]
    return "\n".join(kept[-lines:])


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session=True: the group id is the leader's pid. Nothing to do if the whole group is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class AirflowCluster:
    """One Airflow with every component, for a module of tests. See the module docstring."""

    def __init__(self, root: Path, simulator: WdataSimulator, dag_files: Iterable[Path]) -> None:
        self.root = root
        self.home = root / "airflow-home"
        self.dags_folder = self.home / "dags"
        self.output_dir = root / "component-logs"
        self.task_logs_dir = self.home / "logs"
        self.db_path = self.home / "airflow.db"
        self.simulator = simulator
        self.dag_files = list(dag_files)
        self.api_port, self.worker_log_port, self.trigger_log_port = free_ports(3)
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.fernet_key = Fernet.generate_key().decode()
        self.components: dict[str, Component] = {}
        self.started: list[Component] = []  # every process ever started, restarted ones included
        self.runs: list[tuple[str, str]] = []  # (dag_id, run_id) triggered, oldest first
        self.session = requests.Session()
        #: The decrypted kwargs of every trigger row seen while polling task instances, by trigger id: the rows
        #: are deleted once their task resumes, so the leak scan reads them here.
        self.seen_trigger_kwargs: dict[int, str] = {}
        self._env = self._make_env()

    # ------------------------------------------------------------------------------------------ setup

    def _make_env(self) -> dict[str, str]:
        conn_name, conn_value = self.simulator.airflow_conn_env("wdata_default")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                # The task supervisor notices its task process exited only at its next wake-up, every
                # min_heartbeat_interval seconds (default 5). When a trigger fires within that time of the deferral,
                # the scheduler may requeue the task before it drains the stale "success" of the deferring
                # process, and then fails the task ("state mismatch", apache/airflow#71580, #72716). 1 s closes
                # the window for triggers that poll at least once before firing.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(TRIGGERER_HEARTBEAT),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD),
                "PYTHONUNBUFFERED": "1",
                conn_name: conn_value,
            }
        )
        return env

    def start(self, dag_ids: Iterable[str], timeout: float = 150) -> None:
        """Migrate the database, start every component, and wait until they are healthy and ``dag_ids``
        are parsed."""
        for directory in (self.dags_folder, self.output_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for dag_file in self.dag_files:  # before the dag-processor starts: it lists the folder once at start
            shutil.copy2(dag_file, self.dags_folder / dag_file.name)
        started = time.monotonic()
        self._migrate(timeout)
        for name in COMPONENTS:
            self.start_component(name)
        remaining = max(30.0, timeout - (time.monotonic() - started))
        self.wait_healthy(remaining)
        # The first execution-API call is slow (about 5 s); make it here rather than in the first task.
        self.session.get(f"{self.base_url}/execution/health", timeout=60).raise_for_status()
        self.wait_for_dags(dag_ids, timeout=max(30.0, timeout - (time.monotonic() - started)))

    def _migrate(self, timeout: float) -> None:
        log_path = self.output_dir / "db-migrate.log"
        with log_path.open("wb") as out:
            result = subprocess.run(
                [str(AIRFLOW_BIN), "db", "migrate"],
                env=self._env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate exited with {result.returncode}:\n{tail(log_path)}")

    def start_component(self, name: str, extra_env: Mapping[str, str] | None = None) -> Component:
        """Start (or start again) one component in a new process group."""
        args = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }[name]
        current = self.components.get(name)
        if current is not None and current.alive:
            raise RuntimeError(f"{name} is already running (pid {current.process.pid})")
        count = sum(1 for c in self.started if c.name == name)
        log_path = self.output_dir / (f"{name}.log" if count == 0 else f"{name}-{count + 1}.log")
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [str(AIRFLOW_BIN), *args],
                env={**self._env, **(extra_env or {})},
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        component = Component(name, process, log_path)
        self.components[name] = component
        self.started.append(component)
        return component

    def kill_component(self, name: str) -> None:
        """SIGKILL a component's whole process group (no clean shutdown) and reap it."""
        component = self.components[name]
        _signal_group(component.process, signal.SIGKILL)
        component.process.wait(timeout=30)

    def restart_triggerer(self) -> Component:
        """Start a new triggerer (its log server on a fresh port, in case the old one's is not freed yet)."""
        (port,) = free_ports(1)
        return self.start_component("triggerer", {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port)})

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL them after STOP_GRACE seconds. Always safe to call."""
        self.session.close()
        for component in reversed(self.started):
            if component.alive:
                _signal_group(component.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for component in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for component in self.started:
            # Also when the leader exited: task processes and log servers may outlive it in its group.
            _signal_group(component.process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=10)

    def check_alive(self) -> None:
        dead = [c for c in self.components.values() if not c.alive]
        if dead:
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead)
            raise RuntimeError(f"Airflow components exited: {names}\n{self.tails()}")

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            self.check_alive()
            health = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=10).json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ok = all((health.get(part) or {}).get("status") == "healthy" for part in parts)
            return health if ok else None

        return wait_for(healthy, timeout, "every Airflow component to report healthy", details=self.tails)

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float) -> None:
        missing = set(dag_ids)

        def parsed() -> bool:
            self.check_alive()
            errors = self.api("GET", "/api/v2/importErrors").get("import_errors") or []
            if errors:
                raise RuntimeError(f"DAG import errors: {json.dumps(errors, indent=1)}")
            for dag_id in sorted(missing):
                if self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=10).status_code == 200:
                    missing.discard(dag_id)
            return not missing

        wait_for(parsed, timeout, f"the dag-processor to parse {sorted(missing)}", interval=0.5, details=self.tails)

    # ------------------------------------------------------------------------------------------ REST

    def api(self, method: str, path: str, expect: Iterable[int] = (200,), **kwargs: Any) -> Any:
        response = self.session.request(method, self.base_url + path, timeout=30, **kwargs)
        if response.status_code not in tuple(expect):
            raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json()

    def trigger_dag(self, dag_id: str) -> str:
        run_id = f"e2e__{dag_id}__{uuid.uuid4().hex[:8]}"
        body = {"dag_run_id": run_id, "logical_date": None}
        created = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", expect=(200, 201), json=body)
        assert created["dag_run_id"] == run_id, created
        self.runs.append((dag_id, run_id))
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        data = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")
        tis = {ti["task_id"]: ti for ti in data["task_instances"]}
        if any(ti.get("trigger") for ti in tis.values()):
            self.snapshot_trigger_kwargs()
        return tis

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 90,
        on_poll: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the run (and its task instances, handed to ``on_poll``) until it succeeded or failed."""
        seen: dict[str, dict[str, Any]] = {}

        def ended() -> dict[str, Any] | None:
            self.check_alive()
            seen.update(self.task_instances(dag_id, run_id))
            if on_poll is not None:
                on_poll(seen)
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in TERMINAL_RUN_STATES else None

        def details() -> str:
            states = {task_id: ti.get("state") for task_id, ti in seen.items()}
            return f"task instances: {states}\n{self.tails(runs=[(dag_id, run_id)])}"

        return wait_for(ended, timeout, f"run {run_id} of {dag_id} to end", interval=0.3, details=details)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}"
        value = self.api("GET", path)["value"]
        if isinstance(value, str):  # the stored JSON, or a plain string
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as the REST API serves it, one JSON object (or text line) per line."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
        entries = content.get("content") or []
        return "\n".join(json.dumps(e, ensure_ascii=False) if not isinstance(e, str) else e for e in entries)

    # ------------------------------------------------------------------------------------------ files and DB

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the metadata database directly (read-only)."""
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def _decrypted(self, stored: str) -> str:
        return stored if stored.startswith("{") else Fernet(self.fernet_key.encode()).decrypt(stored.encode()).decode()

    def trigger_kwargs(self, trigger_id: int) -> dict[str, Any] | None:
        """The decrypted kwargs of a trigger row, or None once the row is gone."""
        rows = self.query("SELECT kwargs FROM trigger WHERE id = ?", (trigger_id,))
        if not rows:
            return None
        raw = self._decrypted(rows[0][0])
        self.seen_trigger_kwargs[trigger_id] = raw
        from airflow.sdk.serde import deserialize

        return deserialize(json.loads(raw))

    def snapshot_trigger_kwargs(self) -> None:
        """Keep the decrypted kwargs of every trigger row there is now (see seen_trigger_kwargs)."""
        for trigger_id, stored in self.query("SELECT id, kwargs FROM trigger"):
            if trigger_id not in self.seen_trigger_kwargs:
                self.seen_trigger_kwargs[trigger_id] = self._decrypted(stored)

    def run_log_files(self, dag_id: str, run_id: str) -> list[Path]:
        """Every task and trigger log file of one run."""
        return sorted((self.task_logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}").rglob("*.log*"))

    def trigger_log_files(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        folder = self.task_logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(folder.glob("*.log.trigger.*.log"))

    def all_log_files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file() and ".log" in p.name)

    def tails(self, runs: Iterable[tuple[str, str]] = (), lines: int = 60) -> str:
        """The last lines of every component's output, and of every log file of ``runs``."""
        parts = []
        if any(STALE_DEFER_EXIT in path.read_text(errors="replace") for path in self.output_dir.glob("scheduler*.log")):
            parts.append(
                "NOTE: the scheduler failed a task on a stale executor event after a deferral "
                "(an Airflow race, apache/airflow#71580 and #72716), not a provider failure."
            )
        for path in sorted(self.output_dir.glob("*.log")):
            parts.append(f"----- {path.name} (last {lines} lines) -----\n{tail(path, lines)}")
        for dag_id, run_id in runs:
            for path in self.run_log_files(dag_id, run_id):
                parts.append(f"----- {path.relative_to(self.task_logs_dir)} -----\n{tail(path, lines)}")
        return "\n".join(parts)
