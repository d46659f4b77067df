"""The evaluation ledger in real DAG runs (``dag.test()``): never pay twice for one evaluation.

The run operator talks to the emulator over loopback HTTP, counts targets through its Langfuse API and
keeps the ledger in a real SQLite file (and in PostgreSQL in tests/integration/ledger).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from airflow.sdk import DAG

from gip_airflow.hooks.gip import GipHook
from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator
from tests.integration.operators.conftest import BOOL_METRIC, DATASET, EVALUATION_CONFIG
from tests.integration.operators.helpers import run_dag, runs_named, ti_states, unique_dag_id, xcom
from tests.integration.transfers.conftest import make_postgres, make_sqlite

START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def ledger_db(tmp_path, monkeypatch):
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def ledger_rows(path, table="gip_evaluation_ledger"):
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY created_at")]


@pytest.fixture
def objects(gip_env):
    """A credential, a dataset experiment and an evaluator, created once per test as a user would."""
    with GipHook() as hook:
        cred = hook.create_langfuse_credential(
            {
                "alias": "ledger",
                "base_url": gip_env.base_url,
                "public_key": gip_env.langfuse_public_key,
                "private_key": gip_env.langfuse_secret_key,
            }
        )
        exp = hook.create_experiment(
            {
                "name": unique_dag_id("ledger-exp"),
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": cred.id, "dataset_name": DATASET},
            }
        )
        evaluator = hook.create_evaluator(
            {
                "name": unique_dag_id("ledger-judge"),
                "metric": BOOL_METRIC,
                "evaluation_config": EVALUATION_CONFIG,
            }
        )
    return exp.id, evaluator.id


def ledger_dag(dag_id, experiment_id, evaluator_id, **kwargs):
    with DAG(dag_id, schedule=None, start_date=START, params={"force": False}) as dag:
        GipStartExperimentRunOperator(
            task_id="run",
            experiment_id=experiment_id,
            evaluator_id=evaluator_id,
            ledger_conn_id="warehouse",
            langfuse_conn_id="langfuse_default",
            force="{{ params.force }}",
            **{"poll_interval": 0.2, "timeout": 60, **kwargs},
        )
    return dag


def test_rerun_reuses_the_done_evaluation_and_force_supersedes_it(gip_env, ledger_db, objects):
    dag_id = unique_dag_id("ledger_reuse")
    dag = ledger_dag(dag_id, *objects)

    first = run_dag(dag)
    assert first.state == "success", ti_states(first)
    run_id = xcom(first, "run")
    estimate = xcom(first, "run", key="estimate")
    assert estimate["matching_targets"] == 14  # qa-general-knowledge: 16 items, 2 archived
    assert xcom(first, "run", key="cost")["total_tokens"] > 0
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 1
    [row] = ledger_rows(ledger_db)
    assert (row["status"], row["gip_run_id"]) == ("DONE", run_id)
    assert row["total_tokens"] == xcom(first, "run", key="cost")["total_tokens"] and row["cost"] > 0

    # A new DAG run of the same evaluation: the DONE run is reused, nothing is paid, no new row.
    second = run_dag(dag)
    assert second.state == "success", ti_states(second)
    assert xcom(second, "run") == run_id
    assert xcom(second, "run", key="run")["id"] == run_id
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 1
    assert len(ledger_rows(ledger_db)) == 1

    # force=True: one new run; the old entry is kept as history, marked superseded.
    forced = run_dag(dag, run_conf={"force": True})
    assert forced.state == "success", ti_states(forced)
    new_run_id = xcom(forced, "run")
    assert new_run_id != run_id
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 2
    rows = {r["gip_run_id"]: r for r in ledger_rows(ledger_db)}
    assert rows[run_id]["status"] == "SUPERSEDED" and rows[run_id]["superseded_by"] == new_run_id
    assert rows[new_run_id]["status"] == "DONE"

    # And the next plain re-run reuses the forced (current) run.
    again = run_dag(dag, run_conf={"force": False})  # dag.test() keeps the last run_conf's params
    assert xcom(again, "run") == new_run_id
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 2


def test_another_evaluator_is_another_evaluation(gip_env, ledger_db, objects):
    experiment_id, evaluator_id = objects
    with GipHook() as hook:
        other = hook.create_evaluator(
            {
                "name": unique_dag_id("ledger-judge-b"),
                "metric": BOOL_METRIC,
                "evaluation_config": {**EVALUATION_CONFIG, "judge_model_parameters": {"temperature": 0.0}},
            }
        )
    dag_id = unique_dag_id("ledger_other")
    assert run_dag(ledger_dag(dag_id, experiment_id, evaluator_id)).state == "success"
    assert run_dag(ledger_dag(dag_id, experiment_id, other.id)).state == "success"
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 2
    rows = ledger_rows(ledger_db)
    assert len({r["fingerprint"] for r in rows}) == 2 and {r["status"] for r in rows} == {"DONE"}


def test_over_the_task_limit_fails_before_paying(gip_env, ledger_db, objects):
    dag_id = unique_dag_id("ledger_limit")
    dag_run = run_dag(ledger_dag(dag_id, *objects, max_tokens=100))
    assert dag_run.state == "failed"
    assert runs_named(gip_env, f"airflow/{dag_id}/") == []
    assert ledger_rows(ledger_db) == []


def test_deferred_wait_records_the_actual_cost(gip_env, ledger_db, objects):
    """execute_complete runs on a fresh operator object: the ledger row is found by its GIP run id."""
    dag_id = unique_dag_id("ledger_deferred")
    dag_run = run_dag(ledger_dag(dag_id, *objects, deferrable=True))
    assert dag_run.state == "success", ti_states(dag_run)
    [row] = ledger_rows(ledger_db)
    cost = xcom(dag_run, "run", key="cost")
    assert (row["status"], row["gip_run_id"]) == ("DONE", xcom(dag_run, "run"))
    assert (row["total_tokens"], row["cost"]) == (cost["total_tokens"], cost["cost"])


def test_a_failed_run_is_recorded_and_the_next_dag_run_pays_again(gip_env, ledger_db, objects):
    dag_id = unique_dag_id("ledger_failed")
    dag = ledger_dag(dag_id, *objects)
    gip_env.set_faults(run_failure_rate=1.0)
    failed = run_dag(dag, run_conf={"force": False})
    gip_env.clear_faults()
    assert failed.state == "failed"
    assert [r["status"] for r in ledger_rows(ledger_db)] == ["FAILED"]

    again = run_dag(dag, run_conf={"force": False})
    assert again.state == "success", ti_states(again)
    assert [r["status"] for r in ledger_rows(ledger_db)] == ["FAILED", "DONE"]
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 2


def test_after_a_timed_out_wait_the_next_dag_run_waits_for_the_same_run(gip_env, ledger_db, objects):
    dag_id = unique_dag_id("ledger_timeout")
    gip_env.set_run_speed(run_seconds=0.5, never_finish=True)
    timed_out = run_dag(ledger_dag(dag_id, *objects, timeout=1), run_conf={"force": False})
    assert timed_out.state == "failed"
    assert [r["status"] for r in ledger_rows(ledger_db)] == ["RUNNING"]  # the run goes on, still paid

    gip_env.set_run_speed(run_seconds=0.5, never_finish=False)
    again = run_dag(ledger_dag(dag_id, *objects), run_conf={"force": False})
    assert again.state == "success", ti_states(again)
    [row] = ledger_rows(ledger_db)
    assert (row["status"], row["gip_run_id"]) == ("DONE", xcom(again, "run"))
    assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 1


# -- the summary table: one current row per evaluation -----------------------------------------------

WINDOW = ("2025-03-01T00:00:00+00:00", "2025-03-02T00:00:00+00:00")


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request, monkeypatch, tmp_path):
    """The results, summary and ledger tables in one warehouse: a SQLite file or a PostgreSQL schema."""
    wh = make_sqlite(monkeypatch, tmp_path) if request.param == "sqlite" else make_postgres(monkeypatch)
    try:
        yield wh
    finally:
        for fn in wh.cleanup:
            fn()


def ledger_table(wh) -> str:
    schema, _, _ = wh.table.rpartition(".")
    return f"{schema}.gip_evaluation_ledger" if schema else "gip_evaluation_ledger"


def evaluation_dag(dag_id, experiment_id, evaluator_id, wh, *, ledger: bool):
    """Start a run and load it, as in docs/snippets/cost_control_dag.py; both tasks share the ledger."""
    shared = {"ledger_conn_id": wh.conn_id, "ledger_table": ledger_table(wh)} if ledger else {}
    with DAG(dag_id, schedule=None, start_date=START, params={"force": False}) as dag:
        run = GipStartExperimentRunOperator(
            task_id="run",
            experiment_id=experiment_id,
            evaluator_id=evaluator_id,
            force="{{ params.force }}",
            poll_interval=0.2,
            timeout=60,
            **shared,
        )
        GipToSqlOperator(
            task_id="load",
            run_id=run.output,
            experiment_id=experiment_id,
            conn_id=wh.conn_id,
            table=wh.table,
            window_start=WINDOW[0],
            window_end=WINDOW[1],
            **shared,
        )
    return dag


def summary(wh) -> dict[str, dict]:
    return {r["run_id"]: r for r in wh.summaries()}


def test_rerunning_a_window_pays_once_and_force_supersedes_the_summary_row(gip_env, warehouse, objects):
    wh = warehouse
    dag_id = unique_dag_id("summary_ledger")
    dag = evaluation_dag(dag_id, *objects, wh, ledger=True)
    day = dt.datetime(2025, 3, 2, tzinfo=dt.UTC)

    first = run_dag(dag, logical_date=day, run_conf={"force": False})
    assert first.state == "success", ti_states(first)
    run_1 = xcom(first, "run")
    items = wh.count()
    [entry] = wh.query(f"SELECT * FROM {ledger_table(wh)}")
    [row] = wh.summaries()
    assert (row["run_id"], row["superseded_by"], row["evaluation_key"]) == (run_1, None, entry["fingerprint"])
    assert row["cost"] == pytest.approx(entry["cost"]) and row["cost"] > 0

    # The same DAG run cleared and run again, then a new DAG run for the window: nothing paid, nothing added.
    for again in (
        run_dag(dag, logical_date=day, run_conf={"force": False}),
        run_dag(dag, logical_date=day + dt.timedelta(days=1), run_conf={"force": False}),
    ):
        assert again.state == "success", ti_states(again)
        assert xcom(again, "run") == run_1
        assert len(runs_named(gip_env, f"airflow/{dag_id}/")) == 1
        assert (wh.count(), list(summary(wh))) == (items, [run_1])

    # force=True: one new paid run; its summary row is current, the earlier one is history.
    forced = run_dag(dag, logical_date=day + dt.timedelta(days=2), run_conf={"force": True})
    assert forced.state == "success", ti_states(forced)
    run_2 = xcom(forced, "run")
    assert run_2 != run_1 and len(runs_named(gip_env, f"airflow/{dag_id}/")) == 2
    rows = summary(wh)
    assert (rows[run_1]["superseded_by"], rows[run_2]["superseded_by"]) == (run_2, None)
    assert rows[run_1]["evaluation_key"] == rows[run_2]["evaluation_key"]
    ledger = {e["gip_run_id"]: e for e in wh.query(f"SELECT * FROM {ledger_table(wh)}")}
    assert ledger[run_1]["status"] == "SUPERSEDED" and rows[run_2]["cost"] == pytest.approx(
        ledger[run_2]["cost"]
    )
    assert wh.count() == wh.count(run_1) + wh.count(run_2) == items + wh.count(run_2)  # history kept once

    # The earlier DAG run cleared: it reuses the current run, and the old row stays history.
    cleared = run_dag(dag, logical_date=day, run_conf={"force": False})
    assert xcom(cleared, "run") == run_2 and len(runs_named(gip_env, f"airflow/{dag_id}/")) == 2
    assert {r: v["superseded_by"] for r, v in summary(wh).items()} == {run_1: run_2, run_2: None}


def test_without_the_ledger_a_rerun_of_the_window_supersedes_the_earlier_row(gip_env, warehouse, objects):
    wh = warehouse
    dag_id = unique_dag_id("summary_plain")
    dag = evaluation_dag(dag_id, *objects, wh, ledger=False)
    day = dt.datetime(2025, 3, 2, tzinfo=dt.UTC)
    first = run_dag(dag, logical_date=day, run_conf={"force": False})
    second = run_dag(dag, logical_date=day + dt.timedelta(days=1), run_conf={"force": False})
    assert first.state == second.state == "success", (ti_states(first), ti_states(second))
    run_1, run_2 = xcom(first, "run"), xcom(second, "run")
    assert run_1 != run_2  # without the ledger the second DAG run paid again
    rows = summary(wh)
    assert (rows[run_1]["superseded_by"], rows[run_2]["superseded_by"]) == (run_2, None)
    assert rows[run_1]["evaluation_key"] == rows[run_2]["evaluation_key"] is not None
    assert rows[run_2]["cost"] is None  # the cost comes from the ledger only
    current = wh.query(f"SELECT run_id FROM {wh.summary_table} WHERE superseded_by IS NULL")
    assert current == [{"run_id": run_2}]
