"""The example DAGs' regression gates through real Airflow (``dag.test()``), the emulator, SQLite and
PostgreSQL: a degraded window fails with a readable verdict while the others pass; the model comparison
reports each model against the first, paired by dataset item."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from gip_airflow.operators.gate import gate_asset
from tests.integration.operators.helpers import run_dag, ti_states
from tests.integration.transfers.test_gip_to_sql import asset_event_extras
from tests.system.dags.test_example_dags import daily_firing, fresh

DAILY = "gip_daily_trace_evaluation"
GATES_ASSET = gate_asset("gip_warehouse", "gip_trace_results").uri
assert GATES_ASSET == "gip-gate/gip_warehouse/gip_trace_results_gates"


@pytest.fixture
def bigger_windows(gip_env):
    """~150 traces a day instead of the seed's 6: windows big enough for a conclusive test."""
    gip_env.add_traces(per_day=150, days=6)
    yield gip_env
    gip_env.remove_added_traces()
    gip_env.clear_degradations()


def test_daily_gate_fails_only_the_degraded_window(dagbag, sqlite_warehouse, bigger_windows):
    events_before = len(asset_event_extras(GATES_ASSET))
    states = []
    for days_ago in (4, 3, 2):
        dag_run = run_dag(fresh(dagbag, DAILY), logical_date=daily_firing(days_ago))
        states.append(ti_states(dag_run)[("regression_gate", -1)])
    bigger_windows.degrade(model="openai/gpt-4", fail_rate=0.3, score_shift=-0.3)  # from now on
    dag_run = run_dag(fresh(dagbag, DAILY), logical_date=daily_firing(1))
    final = ti_states(dag_run)
    assert states == ["success", "success", "success"]
    assert dag_run.state == "failed" and final[("regression_gate", -1)] == "failed"
    assert final[("load_results", -1)] == "success"

    with sqlite3.connect(sqlite_warehouse) as db:
        verdicts = db.execute(
            "SELECT s.window_start, g.metric, g.verdict, g.n_baseline, g.estimate, g.p_value "
            "FROM gip_trace_results_gates g JOIN gip_trace_results_runs s ON s.run_id = g.run_id "
            "ORDER BY s.window_start, g.metric"
        ).fetchall()
    by_window: dict[str, list] = {}
    for window, metric, verdict, n_base, estimate, p in verdicts:
        by_window.setdefault(window, []).append((metric, verdict, n_base, estimate, p))
    windows = sorted(by_window)
    assert len(windows) == 4
    assert {v for _, v, *_ in by_window[windows[0]]} == {"inconclusive"}  # no earlier window yet
    assert all(v in ("no_change", "improvement") for w in windows[1:3] for _, v, *_ in by_window[w])
    degraded = {m: (v, est, p) for m, v, _, est, p in by_window[windows[3]]}
    assert degraded["pass_rate"][0] == "regression" and degraded["pass_rate"][1] < -0.15
    assert degraded["mean_score"][0] == "regression"
    # passing windows emitted the verdict on the gate's asset; the failed one did not
    extras = asset_event_extras(GATES_ASSET)[events_before:]
    assert [e["verdict"] for e in extras] == ["inconclusive", "pass", "pass"]
    assert all(e["passed"] for e in extras)


def test_model_comparison_reports_each_model_against_the_first(dagbag, postgres_warehouse, gip_env):
    dag_run = run_dag(fresh(dagbag, "gip_model_comparison"))
    states = ti_states(dag_run)
    assert dag_run.state == "success", states
    compared = sorted(k for k in states if k[0] == "compare_with_first_model")
    assert [states[k] for k in compared] == ["success", "success"]
    with psycopg.connect(postgres_warehouse) as db:
        rows = db.execute(
            "SELECT s.display_name, g.metric, g.method, g.n_current, g.verdict "
            "FROM gip_model_comparison_results_gates g "
            "JOIN gip_model_comparison_results_runs s ON s.run_id = g.run_id ORDER BY 1, 2"
        ).fetchall()
    for name, metric, method, n, verdict in rows:
        print(f"{name.split(' | ')[0]:<40} {metric:<11} {method or '-':<17} n={n:<4} {verdict}")
    assert {r[0].split(" | ")[0] for r in rows} == {
        "anthropic/claude-3-opus-20240229",
        "openai/gpt-4",
    }
    assert {r[2] for r in rows} == {"mcnemar-exact", "paired-bootstrap"}
    assert all(r[3] >= 10 for r in rows)


def test_release_dag_is_scheduled_on_the_gate_asset(dagbag):
    dag = fresh(dagbag, "gip_release_on_gate")
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [GATES_ASSET]
    # triggered by hand there is no gate event: the release is skipped, not run
    dag_run = run_dag(dag)
    assert ti_states(dag_run)[("release", -1)] == "skipped"
