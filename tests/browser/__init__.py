"""Browser tests: the Airflow UI in headless Chromium (marker ``browser``)."""

from pathlib import Path

#: Screenshots and the api-server's log are kept here for people to look at (git-ignored).
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
