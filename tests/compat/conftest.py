from __future__ import annotations


def pytest_configure(config):
    # The markers live in pyproject.toml; this one is registered here so that the compat tests stay in
    # tests/compat (pytest runs this hook for a conftest as soon as it is loaded, before collection).
    config.addinivalue_line(
        "markers", "deferral: runs a DAG through dag.test() in a fresh Airflow home; a task defers to its trigger"
    )
