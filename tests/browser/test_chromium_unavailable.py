"""Without Chromium the browser tests skip on a workstation, and fail under CI=true (not marked ``browser``:
this runs with the unit tests, where Chromium is not needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import chromium_or_skip

MISSING = (None, "no apt-get here")


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_workstation_without_chromium_skips(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="no apt-get here"):
        chromium_or_skip(lambda: MISSING)


@pytest.mark.parametrize("ci", ["true", "True", " TRUE "])
def test_ci_without_chromium_fails_instead_of_skipping(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true: failing rather than skipping"):
        chromium_or_skip(lambda: MISSING)


def test_ci_with_chromium_runs(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert chromium_or_skip(lambda: (Path("/usr/bin/chromium"), "")) == Path("/usr/bin/chromium")
