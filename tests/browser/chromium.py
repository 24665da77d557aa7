"""Debian's Chromium for the browser tests: found at /usr/bin/chromium, or installed with apt-get once.

Playwright's own browser download does not work on these machines, so Playwright drives Debian's Chromium
(``executable_path``) with the flags below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, as root, on a machine whose only network is loopback: no background connections at all.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Debian's Chromium, and a font so that pages render text on a bare machine.
APT_PACKAGES = ("chromium", "fonts-dejavu-core")
APT_TIMEOUT = 1200


def ensure_chromium(log: Callable[[str], None] = print) -> tuple[Path | None, str]:
    """Return (path, "") when Chromium runs, installing Debian's package when missing; (None, reason) when it
    cannot be installed here. Raises RuntimeError when it is installed but does not run."""
    if _runs(CHROMIUM):
        return CHROMIUM, ""
    reason = _install(log)
    if reason:
        return None, reason
    if not _runs(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is installed but `{CHROMIUM} --version` fails")
    return CHROMIUM, ""


def _runs(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        result = subprocess.run([str(path), "--version"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _install(log: Callable[[str], None]) -> str:
    """apt-get install chromium; "" on success, else why it could not be installed."""
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root: run `apt-get install -y chromium` as root"
    log(f"{CHROMIUM} is missing: installing Debian's chromium package with apt-get (once; up to a few minutes)")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=600"]  # another apt-get may be running: wait for it
    install = [apt_get, *wait_for_lock, "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    for command in ([apt_get, *wait_for_lock, "update"], install):
        try:
            result = subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` did not finish within {APT_TIMEOUT} s"
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-2000:]
            return f"`{' '.join(command)}` exited with {result.returncode}; Chromium cannot be installed:\n{output}"
    log(f"installed Chromium in {time.monotonic() - started:.0f} s")
    return ""
