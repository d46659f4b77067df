# Two entry points for a fresh machine: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: demo test lint bootstrap

bootstrap:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

demo: bootstrap
	$(UV) run --locked python -m gip_airflow.demo

test: bootstrap
	$(UV) run --locked pytest

lint: bootstrap
	$(UV) run --locked ruff check gip_airflow dags tests
	$(UV) run --locked ruff format --check gip_airflow dags tests
	$(UV) run --locked mypy gip_airflow
