"""Run the unit tests in each compat venv and write the results as a markdown table (``make matrix``).

    python tests/compat/matrix.py [--pytest-args ARGS] [--output FILE] .venv-af2.11.2-py3.12 ...

Each venv is named ``.venv-af<airflow>-py<python>`` (the Makefile builds them). The venvs run one after
another (the tests start Airflow processes and time things; two at once on two cores makes them flaky).
Each run's log goes to ``test-output/matrix/<venv>.log``. Exits 1 if any cell is red. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "test-output" / "matrix"
VENV_NAME = re.compile(r"^\.venv-af(?P<airflow>[\w.]+)-py(?P<python>\d+\.\d+)$")
DEFERRAL_TEST = "test_dag_test_defers_to_the_trigger_and_succeeds"
GREEN, RED = "🟢", "🔴"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


@dataclass
class Cell:
    venv: str
    airflow: str
    python: str
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    deferral: str = "not run"  # passed, failed, skipped, not run
    failures: list[str] = field(default_factory=list)

    @property
    def green(self) -> bool:
        return self.exit_code == 0 and not (self.failed or self.errors) and self.passed > 0

    def text(self) -> str:
        counts = [f"{self.passed} passed"]
        counts += [f"{n} {what}" for n, what in ((self.failed, "failed"), (self.errors, "errors")) if n]
        if self.skipped:
            counts.append(f"{self.skipped} skipped")
        if self.exit_code not in (0, 1):
            counts.append(f"pytest exit {self.exit_code}")
        minutes, seconds = divmod(round(self.seconds), 60)
        return f"{GREEN if self.green else RED} {', '.join(counts)} ({minutes}m{seconds:02d}s)"


def run_cell(venv: str, pytest_args: list[str]) -> Cell:
    match = VENV_NAME.match(venv)
    if not match:
        raise SystemExit(f"{venv}: not a compat venv name (.venv-af<airflow>-py<python>)")
    cell = Cell(venv, match["airflow"], match["python"])
    LOGS.mkdir(parents=True, exist_ok=True)
    junit, log = LOGS / f"{venv}.xml", LOGS / f"{venv}.log"
    junit.unlink(missing_ok=True)
    # The tests give Airflow a throwaway home of their own: keep the caller's Airflow settings out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "VIRTUAL_ENV"}
    command = [str(ROOT / venv / "bin" / "python"), "-m", "pytest", *pytest_args, f"--junitxml={junit}", "-q"]
    print(f"{venv}: {shlex.join(command[1:])}", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        cell.exit_code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    cell.seconds = time.monotonic() - started
    if junit.exists():
        read_junit(cell, junit)
    print(f"{venv}: {cell.text()}; deferral {cell.deferral}; log {log.relative_to(ROOT)}", flush=True)
    return cell


def read_junit(cell: Cell, junit: Path) -> None:
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        name = f"{case.get('classname')}::{case.get('name')}"
        if outcome == "passed":
            cell.passed += 1
        elif outcome == "skipped":
            cell.skipped += 1
        else:
            cell.failed += outcome == "failure"
            cell.errors += outcome == "error"
            cell.failures.append(f"{name} ({outcome})")
        if case.get("name") == DEFERRAL_TEST:
            cell.deferral = {"failure": "failed", "error": "failed"}.get(outcome, outcome)


def python_support(cells: list[Cell]) -> dict[tuple[str, str], bool]:
    """(airflow, python) -> whether that Airflow release declares support for that Python."""
    pythons = sorted({c.python for c in cells}, key=version_key)
    support: dict[tuple[str, str], bool] = {}
    for airflow in {c.airflow for c in cells}:
        venv = next(c.venv for c in cells if c.airflow == airflow)
        code = (
            "import sys; from importlib.metadata import metadata; from packaging.specifiers import SpecifierSet; "
            "spec = SpecifierSet(metadata('apache-airflow')['Requires-Python'] or ''); "
            "print(' '.join(v for v in sys.argv[1:] if spec.contains(v + '.0')))"
        )
        out = subprocess.run(
            [str(ROOT / venv / "bin" / "python"), "-c", code, *pythons], capture_output=True, text=True
        ).stdout.split()
        support.update({(airflow, py): py in out for py in pythons})
    return support


def table(cells: list[Cell], all_pythons: list[str], pytest_args: str) -> str:
    airflows = sorted({c.airflow for c in cells}, key=version_key)
    pythons = sorted(set(all_pythons) | {c.python for c in cells}, key=version_key)
    by_key = {(c.airflow, c.python): c for c in cells}
    support = python_support(cells)
    lines = [
        "# Compatibility matrix",
        "",
        f"`make matrix`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores: "
        f"`pytest {pytest_args}` in one venv per cell (the unit tests, and the `dag.test()` deferral of "
        "`tests/compat/test_deferral.py`). Each Airflow release runs on one Python; each Python runs with the "
        "newest Airflow.",
        "",
        "| Airflow \\ Python | " + " | ".join(pythons) + " | `dag.test()` deferral |",
        "|---" * (len(pythons) + 2) + "|",
    ]
    for airflow in airflows:
        row = []
        for py in pythons:
            cell = by_key.get((airflow, py))
            if cell:
                row.append(cell.text())
            else:
                row.append("—" if support.get((airflow, py), True) else "n/a")
        ran = [c for c in cells if c.airflow == airflow]
        deferral = [f"{GREEN if c.deferral == 'passed' else RED} {c.deferral} (py{c.python})" for c in ran]
        lines.append(f"| {airflow} | " + " | ".join(row) + " | " + "<br>".join(deferral) + " |")
    lines += [
        "",
        f"{GREEN} every selected test passed · {RED} a failure or error · — supported, not in the matrix · "
        "n/a: that Airflow release does not support that Python (its `Requires-Python`).",
    ]
    red = [c for c in cells if not c.green or c.deferral != "passed"]
    if red:
        lines += ["", "## Failures", ""]
        for c in red:
            lines.append(f"- Airflow {c.airflow}, Python {c.python} (`test-output/matrix/{c.venv}.log`):")
            lines += [f"  - `{name}`" for name in c.failures[:20]]
            if len(c.failures) > 20:
                lines.append(f"  - ... and {len(c.failures) - 20} more")
            if c.deferral != "passed":
                lines.append(f"  - the deferral test {c.deferral}")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- matrix: written by make matrix -->", "<!-- /matrix -->"


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the table between the README's markers with this run's."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    readme.write_text(text[:start] + "\n" + "\n".join(rows) + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venvs", nargs="+")
    parser.add_argument("--pytest-args", default='-m "not e2e and not browser" -p no:cacheprovider')
    parser.add_argument("--pythons", default="3.10 3.11 3.12 3.13", help="the table's columns")
    parser.add_argument("--output", type=Path, default=ROOT / "tests" / "compat" / "matrix.md")
    parser.add_argument("--readme", type=Path, help="also put the table between the matrix markers of this file")
    args = parser.parse_args(argv)
    cells = [run_cell(venv, shlex.split(args.pytest_args)) for venv in args.venvs]
    markdown = table(cells, args.pythons.split(), args.pytest_args)
    args.output.write_text(markdown, encoding="utf-8")
    print("\n" + markdown + f"\n(written to {args.output})")
    if args.readme:
        update_readme(args.readme, markdown)
    return 0 if all(c.green and c.deferral == "passed" for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
