"""Fixtures of the browser tests: Debian's Chromium (installed once when missing) driven by Playwright, and a
real Airflow 3 api-server (see airflow_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

from . import OUTPUT_DIR
from .airflow_server import ApiServer, running_api_server
from .chromium import CHROMIUM_ARGS, ensure_chromium


@pytest.fixture(scope="session")
def chromium(pytestconfig: pytest.Config) -> Path:
    """/usr/bin/chromium, installed with apt-get on first use when missing; skips only where it cannot be."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def log(message: str) -> None:
        # To the terminal as it happens, past pytest's capture: a long install must not look like a hang.
        with capture.global_and_fixture_disabled():
            print(f"\n[browser tests] {message}", flush=True)

    path, reason = ensure_chromium(log)
    if path is None:
        pytest.skip(f"Chromium is not available for the browser tests: {reason}")
    return path


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
    with running_api_server(tmp_path_factory.mktemp("airflow-home"), OUTPUT_DIR / "api-server.log") as server:
        yield server
