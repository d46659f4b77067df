"""Runs that end in a failure status: the task fails with GIP's own error, nothing downstream runs
(no load, no quality gate), and a later re-run for the same logical date starts a fresh GIP run
that succeeds and is loaded once.

A failed run is never reused: each task try (``retries=2`` here) starts one new run, because a
failure inside GIP may be transient (a judge model answering 503). So a run failure costs at most
``retries + 1`` GIP runs, one per try, and never two in one try.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from airflow.providers.common.sql.operators.sql import SQLThresholdCheckOperator
from airflow.sdk import DAG

from gip_airflow.exceptions import GipRunFailedError
from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator
from tests.integration.operators.helpers import run_dag, ti_states, try_numbers, unique_dag_id, xcom
from tests.integration.reliability.helpers import pg_warehouse

pytestmark = pytest.mark.chaos

#: The emulator's preset objects (seed): a dataset experiment and a bool-metric evaluator.
EXPERIMENT = "0195a8c0-0000-7000-8000-000000000002"
EVALUATOR = "0195a8c0-0000-7000-8000-000000000003"


@pytest.fixture
def failing_env(airflow_db, own_emulator, monkeypatch):
    emu = own_emulator
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", emu.conn_json(retry_backoff=0.1))
    emu.clear_faults()
    emu.set_run_speed(run_seconds=0.5)
    with pg_warehouse() as wh:
        for key, value in wh.env.items():
            monkeypatch.setenv(key, value)
        yield emu, wh
    emu.clear_faults()


def pipeline(dag_id: str, wh: Any, deferrable: bool, failures: list[BaseException]) -> DAG:
    """run -> load -> two quality gates, with task retries allowed everywhere."""
    with DAG(
        dag_id,
        schedule=None,
        start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        default_args={"retries": 2, "retry_delay": dt.timedelta(0)},
    ) as dag:
        run = GipStartExperimentRunOperator(
            task_id="evaluate",
            experiment_id=EXPERIMENT,
            evaluator_id=EVALUATOR,
            deferrable=deferrable,
            poll_interval=0.2,
            timeout=60,
            on_failure_callback=lambda ctx: failures.append(ctx["exception"]),
        )
        load = GipToSqlOperator(
            task_id="load", experiment_id=EXPERIMENT, run_id=run.output, conn_id=wh.conn_id, table=wh.table
        )
        gates = [
            SQLThresholdCheckOperator(
                task_id=f"gate_{column}",
                conn_id=wh.conn_id,
                sql=f"SELECT COALESCE({column}, 0) FROM {wh.summary} "
                "WHERE run_id = '{{ ti.xcom_pull(task_ids='evaluate') }}'",
                min_threshold=0.0,
                max_threshold=high,
                retries=0,
            )
            for column, high in (("pass_rate", 1.0), ("mean_score_value", 1e9))
        ]
        run >> load >> gates
    return dag


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_failed_run_stops_the_pipeline_and_a_rerun_succeeds(failing_env, deferrable, reliability_report):
    emu, wh = failing_env
    failures: list[BaseException] = []
    dag = pipeline(unique_dag_id("runfail"), wh, deferrable, failures)
    logical_date = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    emu.set_faults(run_failure_rate=1.0)
    first = run_dag(dag, logical_date=logical_date)
    emu.clear_faults()
    states = ti_states(first)
    display_name = f"airflow/{dag.dag_id}/evaluate/{first.run_id}"
    gip_runs = [r for r in emu.runs() if r["display_name"] == display_name]

    assert first.state == "failed"
    assert states[("evaluate", -1)] == "failed"
    assert {states[(t, -1)] for t in ("load", "gate_pass_rate", "gate_mean_score_value")} == {
        "upstream_failed"
    }
    tries = try_numbers(first)[("evaluate", -1)]
    first_states = {task: state for (task, _), state in states.items()}
    assert tries == 3
    assert len(gip_runs) == tries, "one GIP run per task try, never two"
    assert {r["status"] for r in gip_runs} == {"FAILED"}
    last = max(gip_runs, key=lambda r: r["created_at"])
    gip_error = last["aggregated_result"]["error"]
    assert gip_error
    (failure,) = failures
    assert isinstance(failure, GipRunFailedError), repr(failure)
    assert gip_error in str(failure) and last["id"] in str(failure) and "FAILED" in str(failure)
    assert not wh.exists() or wh.rows_per_run() == {}, "nothing was loaded"

    # A later run for the same logical date (what a user does after GIP recovers).
    second = run_dag(dag, logical_date=logical_date)
    states = ti_states(second)
    assert second.state == "success", states
    assert {r["status"] for r in emu.runs() if r["display_name"] == display_name} == {"FAILED"}
    (new,) = [r for r in emu.runs() if r["display_name"] == f"airflow/{dag.dag_id}/evaluate/{second.run_id}"]
    assert new["status"] == "DONE"
    done = new["id"]
    assert xcom(second, "evaluate") == done
    rows = wh.rows_per_run()
    assert set(rows) == {done} and rows[done] == wh.summary_row(done)[0] > 0
    reliability_report(
        {
            "tries_on_failed_runs": tries,
            "gip_runs_failed": sum(1 for r in emu.runs() if r["display_name"] == display_name),
            "gip_error": gip_error,
            "task_message": str(failure)[:200],
            "first_run_states": first_states,
            "rerun_rows": rows[done],
        }
    )
