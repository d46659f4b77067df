"""The examples the docs include from docs/snippets/ run against the emulator as shown.

Each DAG runs through ``dag.test()`` with the emulator as ``gip_default``; only poll intervals are
shortened so the test does not sit through the documented production values.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pendulum
import pytest

from tests.integration.operators.helpers import run_dag, runs_named, ti_states, xcom

SNIPPETS = Path(__file__).resolve().parents[3] / "docs" / "snippets"
SEED_EXPERIMENT = "0195a8c0-0000-7000-8000-000000000002"
SEED_EVALUATOR = "0195a8c0-0000-7000-8000-000000000003"


def load_dag(file_name: str, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(SNIPPETS / file_name))
    assert bag.import_errors == {}, bag.import_errors
    return bag.get_dag(dag_id)


def fast(dag, **attrs: dict[str, float]):
    """Shorten the waits of the named tasks (``task_id={"attr": value}``)."""
    for task_id, values in attrs.items():
        for name, value in values.items():
            setattr(dag.get_task(task_id), name, value)
    return dag


def test_minimal_dag_runs_and_loads(gip_env, monkeypatch, tmp_path):
    warehouse = tmp_path / "warehouse.sqlite"
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIP_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
    )
    runs_before = len(gip_env.runs(SEED_EXPERIMENT))
    dag = fast(load_dag("minimal_dag.py", "gip_nightly_evaluation"), evaluate={"poll_interval": 0.3})
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    run_id = xcom(dag_run, "evaluate")
    with sqlite3.connect(warehouse) as db:
        (items,) = db.execute(
            "SELECT item_count FROM gip_results_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        (rows,) = db.execute("SELECT COUNT(*) FROM gip_results WHERE run_id = ?", (run_id,)).fetchone()
    assert items == rows > 0
    assert len(gip_env.runs(SEED_EXPERIMENT)) == runs_before + 1


def test_sensor_dag_waits_for_the_run(gip_env):
    gip_env.set_run_speed(run_seconds=1.0)
    dag = fast(load_dag("sensor_dag.py", "gip_start_then_wait"), wait_for_run={"poke_interval": 0.3})
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    run = xcom(dag_run, "wait_for_run")
    assert run["id"] == xcom(dag_run, "start_run") and run["status"] == "DONE"


def test_custom_operator_defers_to_the_trigger(gip_env):
    gip_env.set_run_speed(run_seconds=1.0)
    dag = fast(load_dag("trigger_operator.py", "gip_custom_wait"), wait_for_run={"poll_interval": 0.3})
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    run = xcom(dag_run, "wait_for_run")
    assert run["id"] == xcom(dag_run, "start_run") and run["status"] == "DONE"


def test_custom_operator_fails_on_a_failed_run(gip_env):
    gip_env.set_faults(run_failure_rate=1.0)
    dag = fast(load_dag("trigger_operator.py", "gip_custom_wait"), wait_for_run={"poll_interval": 0.3})
    dag_run = run_dag(dag)
    assert dag_run.state == "failed"
    assert ti_states(dag_run)[("wait_for_run", -1)] == "failed"


def test_hook_examples(gip_env, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hook_usage", SNIPPETS / "hook_usage.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real_sleep = module.time.sleep
    monkeypatch.setattr(module.time, "sleep", lambda _: real_sleep(0.2))
    gip_env.set_run_speed(run_seconds=0.5)

    name = f"docs hook example {uuid.uuid4().hex[:8]}"
    dest = tmp_path / "result.csv"
    run_id = module.evaluate_and_download(SEED_EXPERIMENT, SEED_EVALUATOR, name, str(dest))
    assert dest.read_text().startswith("input_data_from_experiment")
    # Called again with the same display name, it finds the run instead of starting (and paying for) another.
    runs_before = len(gip_env.runs(SEED_EXPERIMENT))
    assert module.evaluate_and_download(SEED_EXPERIMENT, SEED_EVALUATOR, name, str(dest)) == run_id
    assert len(gip_env.runs(SEED_EXPERIMENT)) == runs_before

    assert asyncio.run(module.run_status(SEED_EXPERIMENT, run_id)) == "DONE"


@pytest.mark.parametrize(
    "name", ["minimal_dag.py", "sensor_dag.py", "trigger_operator.py", "hook_usage.py", "cost_control_dag.py"]
)
def test_every_snippet_is_tested_here(name):
    assert (SNIPPETS / name).exists()
    assert sorted(p.name for p in SNIPPETS.glob("*.py")) == sorted(
        ["minimal_dag.py", "sensor_dag.py", "trigger_operator.py", "hook_usage.py", "cost_control_dag.py"]
    ), "a new snippet needs a test in this file"


def test_cost_control_dag_estimates_records_and_reuses(gip_env, monkeypatch, tmp_path):
    warehouse = tmp_path / "warehouse.sqlite"
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIP_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
    )
    dag = fast(
        load_dag("cost_control_dag.py", "gip_daily_traces_on_a_budget"), evaluate={"poll_interval": 0.3}
    )

    day = pendulum.now("UTC").start_of("day")
    first = run_dag(dag, logical_date=day, run_conf={"force": False})
    assert first.state == "success", ti_states(first)
    estimate = xcom(first, "evaluate", key="estimate")
    cost = xcom(first, "evaluate", key="cost")
    assert estimate["matching_targets"] > 0 and cost["total_tokens"] > 0
    with sqlite3.connect(warehouse) as db:
        rows = db.execute("SELECT status, budget_key, gip_run_id, cost FROM gip_evaluation_ledger").fetchall()
    assert rows == [("DONE", "search-team", xcom(first, "evaluate"), cost["cost"])]
    assert len(runs_named(gip_env, "airflow/gip_daily_traces_on_a_budget/")) == 1
    run_id = xcom(first, "evaluate")
    summary_sql = "SELECT run_id, evaluation_key, superseded_by, cost FROM gip_trace_results_runs"
    with sqlite3.connect(warehouse) as db:
        (fingerprint,) = db.execute("SELECT fingerprint FROM gip_evaluation_ledger").fetchone()
        assert db.execute(summary_sql).fetchall() == [(run_id, fingerprint, None, cost["cost"])]

    # The window again (a cleared DAG run): the DONE run is reused and its summary row stays the only one.
    again = run_dag(dag, logical_date=day, run_conf={"force": False})
    assert again.state == "success", ti_states(again)
    assert len(runs_named(gip_env, "airflow/gip_daily_traces_on_a_budget/")) == 1
    assert xcom(again, "evaluate") == run_id
    with sqlite3.connect(warehouse) as db:
        assert db.execute(summary_sql).fetchall() == [(run_id, fingerprint, None, cost["cost"])]
