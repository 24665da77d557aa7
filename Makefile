# Everything a fresh machine needs comes from here: `make demo`, `make test`, `make matrix`.
PYTHON ?= python3.11
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
UV := $(BIN)/uv

# Supported releases, the latest patch of each; the newest one comes last.
AIRFLOW_VERSIONS := 2.11.2 3.0.6 3.1.8 3.2.2 3.3.2
PYTHON_VERSIONS := 3.10 3.11 3.12 3.13
# `make matrix` tests every Airflow release on this Python (the newest one that all of them support),
# and every Python on the newest Airflow.
MATRIX_PYTHON := 3.12
NEWEST_AIRFLOW := $(lastword $(AIRFLOW_VERSIONS))
AIRFLOW2_VERSION := $(firstword $(AIRFLOW_VERSIONS))
COMPAT_PYTEST := -m "not e2e and not browser" -p no:cacheprovider
# Caps a release needs and does not declare (no constraints file is used, so pip takes the newest of each);
# without them dag.test() fails in the in-process execution API: on 3.0 with a 422 on every task (FastAPI
# 0.118+), on 3.2 with a pydantic schema error (FastAPI 0.137+) and "State has no svcs_registry" (svcs 26).
# 2.11, 3.0 and 3.1 set an attribute on cryptography's MultiFernet, which cryptography 51 no longer allows: with
# a Fernet key set, every connection read from a secrets backend fails ("has no attribute 'is_encrypted'").
CAPS_2.11 := "cryptography<51"
CAPS_3.0 := "fastapi<0.118" "cryptography<51"
CAPS_3.1 := "cryptography<51"
CAPS_3.2 := "fastapi<0.137" "svcs<26"

# pythonX.Y from PATH if it runs, else pyenv's (pyenv's shims run only the versions `pyenv global` selects).
PYENV_ROOT ?= $(HOME)/.pyenv
find_python = $(firstword $(shell python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null) \
	$(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)) python$(1))

# A compat venv is .venv-af<airflow>-py<python>, next to the main .venv. `sort` drops the cell both lists make.
compat_venv = .venv-af$(1)-py$(2)
MATRIX_CELLS := $(sort $(foreach af,$(AIRFLOW_VERSIONS),$(call compat_venv,$(af),$(MATRIX_PYTHON))) \
	$(foreach py,$(PYTHON_VERSIONS),$(call compat_venv,$(NEWEST_AIRFLOW),$(py))))
AIRFLOW2_VENV := $(call compat_venv,$(AIRFLOW2_VERSION),$(MATRIX_PYTHON))

.PHONY: env demo test test-airflow2 lint unit matrix bench mutate clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode \
		-e ".[test]" "apache-airflow==$(AIRFLOW_VERSION)"
	rm -f $(VENV)/.installed-*
	touch $@

# The main venv lends its uv (it is made once, when missing).
$(UV):
	$(MAKE) env

# A compat venv's versions, from the stem of its stamp: $* is "<airflow>-py<python>", e.g. 2.11.2-py3.12.
stem_airflow = $(firstword $(subst -py, ,$*))
stem_python = $(lastword $(subst -py, ,$*))

.venv-af%/.installed: pyproject.toml Makefile | $(UV)
	$(UV) venv -q --allow-existing --no-python-downloads --python $(call find_python,$(stem_python)) $(@D)
	$(UV) pip install -q --python $(@D)/bin/python --compile-bytecode \
		-e ".[test]" "apache-airflow==$(stem_airflow)" $(CAPS_$(basename $(stem_airflow)))
	touch $@

lint: env
	$(BIN)/ruff check airflow_provider_wdata tests example_dags benchmarks
	$(BIN)/ruff format --check airflow_provider_wdata tests example_dags benchmarks
	$(BIN)/mypy airflow_provider_wdata

unit: env
	$(BIN)/pytest -m "not e2e"

test: lint
	$(BIN)/pytest
	$(MAKE) test-airflow2

# The unit tests and a dag.test() deferral on Airflow 2.11.
test-airflow2: $(AIRFLOW2_VENV)/.installed
	$(AIRFLOW2_VENV)/bin/pytest $(COMPAT_PYTEST)

# Installs run two at a time (this is a 2-core machine); the test runs go one after another.
matrix: | $(UV)
	$(MAKE) -j2 $(addsuffix /.installed,$(MATRIX_CELLS))
	$(BIN)/python tests/compat/matrix.py --pytest-args '$(COMPAT_PYTEST)' --pythons '$(PYTHON_VERSIONS)' \
		--output tests/compat/matrix.md --readme README.md $(MATRIX_CELLS)

demo: env
	$(BIN)/python -m airflow_provider_wdata.testing.run_dag example_dags wdata_refresh_batch wdata_refresh_batch_and_wait

bench: env
	$(BIN)/python benchmarks/bench_triggers.py
	$(BIN)/python benchmarks/bench_read_cost.py

# Mutation testing of the pure layer (not part of `make test`): mutmut mutates MUTATE_MODULES one change at a
# time and runs MUTATE_TESTS (fast, no Airflow run) against each mutant; a surviving mutant is a change no test
# noticed. It runs in a copy of the tree (build/mutate, with its own setup.cfg holding mutmut's settings), so
# the work tree and pyproject.toml stay untouched. Afterwards: `cd build/mutate && ../../$(BIN)/mutmut show NAME`.
MUTATE_MODULES ?= decision.py protocol.py redaction.py tokens.py config.py
MUTATE_TESTS ?= tests/test_protocol.py tests/test_redaction.py tests/test_tokens.py tests/test_decision.py \
	tests/test_config.py tests/test_models.py
MUTATE_DIR := build/mutate
MUTMUT_VERSION ?= 3.8.1

mutate: env
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(UV) pip install -q --python $(BIN)/python "mutmut==$(MUTMUT_VERSION)"
	rm -rf $(MUTATE_DIR) && mkdir -p $(MUTATE_DIR)
	cp -r airflow_provider_wdata tests pyproject.toml $(MUTATE_DIR)/
	printf '%s\n' '[mutmut]' 'source_paths = airflow_provider_wdata' \
		'only_mutate =' $(foreach m,$(MUTATE_MODULES),'    airflow_provider_wdata/$(m)') \
		'pytest_add_cli_args_test_selection =' $(foreach t,$(MUTATE_TESTS),'    $(t)') \
		'pytest_add_cli_args = -p no:cacheprovider -q' 'use_git_change_detection = false' \
		> $(MUTATE_DIR)/setup.cfg
	cd $(MUTATE_DIR) && PATH="$(abspath $(BIN)):$$PATH" timeout 3000 mutmut run --max-children 2
	cd $(MUTATE_DIR) && PATH="$(abspath $(BIN)):$$PATH" mutmut results --all true > results.txt; \
		$(abspath $(BIN))/python -c "import collections; c = collections.Counter(l.rsplit(': ', 1)[-1].strip() \
		for l in open('results.txt') if ': ' in l); n = sum(c.values()); left = n - c['killed']; \
		print(dict(c), f'not killed (survived or no test): {left}/{n} = {100 * left / max(n, 1):.1f}%')"

clean:
	rm -rf $(VENV) .venv-af* .pytest_cache .mypy_cache .ruff_cache
