"""Fixtures of the browser tests: Debian's Chromium (installed once when missing) driven by Playwright, and a
real Airflow 3 api-server (see airflow_server.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

from tests.conftest import scan_text

from . import OUTPUT_DIR
from .airflow_server import ApiServer, running_api_server
from .chromium import CHROMIUM_ARGS, ensure_chromium


def running_in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab CI and most others set it): a browser test that cannot run is a failure."""
    return os.environ.get("CI", "").strip().lower() == "true"


def chromium_or_skip(ensure: Callable[[], tuple[Path | None, str]]) -> Path:
    """Chromium's path from ``ensure`` (:func:`ensure_chromium`). Where it cannot be had, the browser tests
    skip, except under CI=true, where they fail: a CI run must not pass without them."""
    path, reason = ensure()
    if path is None:
        message = f"Chromium is not available for the browser tests: {reason}"
        if running_in_ci():
            pytest.fail(f"{message} (CI=true: failing rather than skipping)", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def chromium(pytestconfig: pytest.Config) -> Path:
    """/usr/bin/chromium, installed with apt-get on first use when missing (see chromium_or_skip)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def log(message: str) -> None:
        # To the terminal as it happens, past pytest's capture: a long install must not look like a hang.
        with capture.global_and_fixture_disabled():
            print(f"\n[browser tests] {message}", flush=True)

    return chromium_or_skip(lambda: ensure_chromium(log))


@pytest.fixture(scope="module")  # sync_playwright runs an event loop: never beyond this module
def browser(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Debian Chromium driven by Playwright, with a fresh profile (--user-data-dir)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        # A persistent context is the way to give Chromium a fresh --user-data-dir of our own.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1400},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def airflow_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    OUTPUT_DIR.mkdir(exist_ok=True)
    log_path = OUTPUT_DIR / "api-server.log"
    try:
        with running_api_server(tmp_path_factory.mktemp("airflow-home"), log_path) as server:
            yield server
    finally:  # the api-server ran the connection tests: its output joins the session's canary scan
        if log_path.exists():
            scan_text("the browser tests' api-server output", log_path.read_text(errors="replace"))
