# Two entry points for a fresh machine: `make demo` and `make test`. Both install what they need:
# uv (from PyPI, if it is not on PATH) and the locked environment from uv.lock.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
# Install packages with their bytecode compiled: with PYTHONDONTWRITEBYTECODE set (as on our CI machines)
# every process would otherwise compile Airflow from source (`import airflow.triggers.base`: 3.8 s of
# CPU without .pyc files, 1.6 s with); the tests start many Airflow processes. ~9 s once per install.
export UV_COMPILE_BYTECODE := 1

.PHONY: demo test test-unit test-integration test-system perf coverage lint docs dist bootstrap

bootstrap:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

demo: bootstrap
	$(UV) run --locked python -m gip_airflow_emulator.demo

# Tests come in layers (tests/unit, tests/integration, tests/system); `make test` runs all three.
test: bootstrap
	$(UV) run --locked pytest

# No socket, no subprocess: under a minute.
test-unit: bootstrap
	$(UV) run --locked pytest tests/unit

# The provider against the emulator and real databases (PostgreSQL, SQLite).
test-integration: bootstrap
	$(UV) run --locked pytest tests/integration

# The example DAGs, the multi-process Airflow topology, the Docker files.
test-system: bootstrap
	$(UV) run --locked pytest tests/system

# Benchmarks and load harnesses (outside `make test`); each fails when it misses its target ratio.
perf: bootstrap
	$(UV) run --locked pytest tests/perf -m benchmark

# Line coverage of the gip_airflow package over the three test layers.
coverage: bootstrap
	$(UV) run --locked pytest --cov=gip_airflow --cov-report=term-missing:skip-covered --cov-report=xml

lint: bootstrap
	$(UV) run --locked ruff check gip_airflow emulator dags tests docs/conf.py docs/snippets
	$(UV) run --locked ruff format --check gip_airflow emulator dags tests docs/conf.py docs/snippets
	$(UV) run --locked mypy gip_airflow emulator/gip_airflow_emulator
	$(UV) run --locked lint-imports

# The documentation site, built strictly: any warning or broken internal reference fails the build.
docs: bootstrap
	$(UV) run --locked sphinx-build -W --keep-going -n -b html docs docs/_build/html

# Both distributions (sdists and wheels) into dist/: the provider and the emulator.
dist: bootstrap
	$(UV) build --all-packages --out-dir dist
