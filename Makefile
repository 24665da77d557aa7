# Everything a fresh machine needs comes from here: `make demo`, `make test`.
PYTHON ?= python3.11
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

.PHONY: env demo test lint unit bench clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode \
		-e ".[test]" "apache-airflow==$(AIRFLOW_VERSION)"
	rm -f $(VENV)/.installed-*
	touch $@

lint: env
	$(BIN)/ruff check airflow_provider_wdata tests example_dags
	$(BIN)/ruff format --check airflow_provider_wdata tests example_dags
	$(BIN)/mypy airflow_provider_wdata

unit: env
	$(BIN)/pytest -m "not e2e"

test: lint
	$(BIN)/pytest

demo: env
	$(BIN)/python -m airflow_provider_wdata.testing.run_dag example_dags/wdata_refresh_batch.py wdata_refresh_batch

bench: env
	$(BIN)/python benchmarks/bench_triggers.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
