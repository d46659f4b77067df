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

.PHONY: demo test lint bootstrap

bootstrap:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

demo: bootstrap
	$(UV) run --locked python -m gip_airflow.demo

test: bootstrap
	$(UV) run --locked pytest

lint: bootstrap
	$(UV) run --locked ruff check gip_airflow dags tests
	$(UV) run --locked ruff format --check gip_airflow dags tests
	$(UV) run --locked mypy gip_airflow
	$(UV) run --locked lint-imports
