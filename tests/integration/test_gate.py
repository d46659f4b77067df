"""GipEvaluationGateOperator against real PostgreSQL and SQLite, on runs loaded by the real loader."""

from __future__ import annotations

import random

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from gip_airflow.operators.gate import GipEvaluationGateOperator
from tests.integration.gate_data import load_run, window
from tests.integration.transfers.conftest import make_postgres, make_sqlite


@pytest.fixture(params=["postgres", "sqlite"])
def wh(request, monkeypatch, tmp_path):
    w = make_sqlite(monkeypatch, tmp_path) if request.param == "sqlite" else make_postgres(monkeypatch)
    try:
        yield w
    finally:
        for fn in w.cleanup:
            fn()


def gate(wh, run_id, task_id="gate", **kwargs):
    return GipEvaluationGateOperator(
        task_id=task_id, conn_id=wh.conn_id, table=wh.table, run_id=run_id, **kwargs
    )


def trailing_history(wh, rng, *, days=7, n=300, pass_rate=0.9, mean=0.7, dag_id="daily"):
    for day in range(days):
        load_run(wh.hook(), wh.table, window(rng, n, pass_rate, mean), day=day, dag_id=dag_id)


def test_trailing_windows_regression_fails_with_numbers_and_writes_verdicts(wh):
    rng = random.Random(1)
    trailing_history(wh, rng)
    # another DAG's runs must not be part of the baseline
    load_run(wh.hook(), wh.table, window(rng, 300, 0.2, 0.1), day=6, dag_id="other")
    bad = load_run(wh.hook(), wh.table, window(rng, 300, 0.78, 0.6), day=7)
    with pytest.raises(AirflowFailException) as err:
        gate(wh, bad).execute({})
    message = str(err.value)
    assert f"Regression in run {bad} against the trailing baseline (7 runs" in message
    assert "pass_rate fell from" in message and "mean_score fell" in message
    assert "one-sided p=" in message and "n=300 vs 2100" in message
    rows = wh.query(f"SELECT * FROM {wh.table}_gates WHERE run_id = ? ORDER BY metric", (bad,))
    assert [(r["metric"], r["verdict"], r["n_current"], r["n_baseline"]) for r in rows] == [
        ("mean_score", "regression", rows[0]["n_current"], rows[0]["n_baseline"]),
        ("pass_rate", "regression", 300, 2100),
    ]
    pr = rows[1]
    assert pr["ci_high"] < 0 and pr["p_value"] < 0.025 and pr["alpha"] == pytest.approx(0.025)
    assert pr["estimate"] == pytest.approx(pr["current_value"] - pr["baseline_value"])
    # a rerun replaces the verdict rows instead of adding more
    with pytest.raises(AirflowFailException):
        gate(wh, bad).execute({})
    assert len(wh.query(f"SELECT run_id FROM {wh.table}_gates WHERE run_id = ?", (bad,))) == 2


def test_no_change_passes_and_first_window_is_inconclusive(wh):
    rng = random.Random(2)
    first = load_run(wh.hook(), wh.table, window(rng, 300, 0.9, 0.7), day=0)
    result = gate(wh, first).execute({})  # no baseline: inconclusive, warn -> passes
    assert result["verdict"] == "inconclusive" and result["baseline"] == []
    with pytest.raises(AirflowFailException, match="no baseline run"):
        gate(wh, first, inconclusive="fail").execute({})
    with pytest.raises(AirflowSkipException):
        gate(wh, first, inconclusive="skip").execute({})
    for day in range(1, 8):
        load_run(wh.hook(), wh.table, window(rng, 300, 0.9, 0.7), day=day)
    today = load_run(wh.hook(), wh.table, window(rng, 300, 0.9, 0.7), day=8)
    result = gate(wh, {"run_id": today}).execute({})
    assert result["verdict"] == "pass"
    assert len(result["baseline"]) == 7 and first not in result["baseline"]  # trailing 7 only
    assert {r["verdict"] for r in result["results"]} <= {"no_change", "improvement"}


def test_a_superseded_run_is_not_part_of_the_trailing_baseline(wh):
    """Day 5 was evaluated twice; only its current run counts, so the baseline still covers 7 windows."""
    rng = random.Random(4)
    runs = {}
    for day in range(7):
        runs[day] = load_run(
            wh.hook(), wh.table, window(rng, 200, 0.9, 0.7), day=day, evaluation_key=f"d{day}"
        )
    rerun = load_run(wh.hook(), wh.table, window(rng, 200, 0.9, 0.7), day=5, evaluation_key="d5")
    (old,) = wh.query(f"SELECT superseded_by FROM {wh.table}_runs WHERE run_id = ?", (runs[5],))
    assert old["superseded_by"] == rerun
    today = load_run(wh.hook(), wh.table, window(rng, 200, 0.9, 0.7), day=7, evaluation_key="d7")
    result = gate(wh, today).execute({})
    assert set(result["baseline"]) == {runs[d] for d in range(7) if d != 5} | {rerun}


def test_tolerance_and_direction(wh):
    rng = random.Random(3)
    trailing_history(wh, rng, days=3, n=2000, pass_rate=0.9)
    today = load_run(wh.hook(), wh.table, window(rng, 2000, 0.87, 0.7), day=3)
    # a 3-point drop over 2000 items is a regression with no tolerance ...
    with pytest.raises(AirflowFailException):
        gate(wh, today, metrics=["pass_rate"]).execute({})
    # ... but not when 5 points are tolerated
    assert gate(wh, today, metrics=["pass_rate"], tolerance=0.05).execute({})["verdict"] == "pass"
    # if lower is better, a drop is an improvement
    result = gate(wh, today, metrics=["pass_rate"], direction="lower_is_better").execute({})
    assert result["results"][0]["verdict"] == "improvement"


def test_segments_by_column_and_extra_key(wh):
    rng = random.Random(4)
    hook = wh.hook()
    for day in range(3):
        rows = window(rng, 400, 0.9, 0.7, tags=("billing", "roaming"))
        load_run(hook, wh.table, rows, day=day, extra_columns=("tag",))
    rows = window(rng, 400, 0.9, 0.7, tags=("billing", "roaming"))
    for r in rows[1::2]:  # roaming breaks: a third of its items fail
        if rng.random() < 0.35:
            r["passed"], r["score"] = False, None
    today = load_run(hook, wh.table, rows, day=3, extra_columns=("tag",))
    with pytest.raises(AirflowFailException, match=r"pass_rate\[roaming\]"):
        gate(wh, today, segment_by="extra.tag", metrics=["pass_rate"]).execute({})
    verdicts = {
        r["segment"]: r["verdict"]
        for r in wh.query(f"SELECT segment, verdict FROM {wh.table}_gates WHERE run_id = ?", (today,))
    }
    assert verdicts == {"billing": "no_change", "roaming": "regression"}
    # a run-level column from the summary table works as a segment too
    result = gate(wh, today, segment_by="evaluator_id", metrics=["mean_score"]).execute({})
    assert [r["segment"] for r in result["results"]] == ["ev-1"]


def paired_runs(wh):
    """Model B fails 12 items model A passed and scores every item 0.01-0.02 lower: same items."""
    rng = random.Random(5)
    a = window(rng, 300, 0.85, 0.7)
    b = [dict(r) for r in a]
    lost = [r for r in b if r["passed"]][:12]
    for r in lost:
        r["passed"], r["score"] = False, None
    for i, r in enumerate(b):
        if r["score"] is not None:
            r["score"] = max(0.0, r["score"] - (0.01 if i % 2 else 0.02))
    rng.shuffle(b)  # row order differs between runs: pairing is by item, not by position
    hook = wh.hook()
    run_a = load_run(hook, wh.table, a, dag_id="cmp", day=0)
    run_b = load_run(hook, wh.table, b, dag_id="cmp", day=0)
    return run_a, run_b


def test_paired_detects_what_unpaired_cannot(wh):
    run_a, run_b = paired_runs(wh)
    unpaired = gate(wh, run_b, "unpaired", baseline="run", baseline_run_id=run_a).execute({})
    assert unpaired["verdict"] == "pass"
    with pytest.raises(AirflowFailException, match="mcnemar-exact") as err:
        gate(wh, run_b, baseline="paired", baseline_run_id=run_a).execute({})
    assert "paired-bootstrap" in str(err.value)
    rows = {
        (r["baseline_kind"], r["metric"]): r
        for r in wh.query(f"SELECT * FROM {wh.table}_gates WHERE run_id = ?", (run_b,))
    }
    # both figures, side by side
    for metric in ("pass_rate", "mean_score"):
        u, p = rows[("run", metric)], rows[("paired", metric)]
        print(
            f"{metric}: unpaired p={u['p_value']:.3g} ({u['verdict']}), paired p={p['p_value']:.3g} ({p['verdict']})"
        )
        assert u["p_value"] > 0.025 and p["p_value"] < 0.001
    assert rows[("paired", "pass_rate")]["estimate"] == pytest.approx(-12 / 300)
    # report only: the model comparison DAG lists worse models without failing
    report = gate(wh, run_b, baseline="paired", baseline_run_id=run_a, fail_on_regression=False).execute({})
    assert report["verdict"] == "regression"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": ["accuracy"]}, "metrics item must be one of pass_rate, mean_score"),
        ({"alpha": 1.5}, "alpha must be a probability"),
        ({"tolerance": -0.1}, "tolerance for pass_rate must be a non-negative number"),
        ({"baseline": "paired"}, "needs baseline_run_id"),
        ({"baseline_run_id": "x"}, "only used with baseline='run'"),
        ({"segment_by": "model; DROP TABLE x"}, "segment_by 'model; DROP TABLE x' is not a column"),
        ({"inconclusive": "ignore"}, "inconclusive must be one of warn, fail, skip"),
        ({"direction": {"pass_rat": "lower_is_better"}}, "direction names unknown metrics"),
        ({"min_samples": 0}, "min_samples must be a positive integer"),
    ],
)
def test_bad_input_fails_at_parse_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GipEvaluationGateOperator(task_id="g", conn_id="c", table="t", run_id="r", **kwargs)


def test_unknown_run_says_what_to_do(wh):
    rng = random.Random(6)
    load_run(wh.hook(), wh.table, window(rng, 10, 0.9, 0.7))
    with pytest.raises(AirflowFailException, match=r"has no row in .*_runs: load it with GipToSqlOperator"):
        gate(wh, "missing-run").execute({})
    present = load_run(wh.hook(), wh.table, window(rng, 10, 0.9, 0.7), day=1)
    for kind in ("run", "paired"):
        with pytest.raises(AirflowFailException, match="baseline run nope has no row in"):
            gate(wh, present, baseline=kind, baseline_run_id="nope").execute({})


def test_paired_pairs_repeated_inputs_in_row_order(wh):
    rows_a = [{"input": f"q{i}", "passed": True, "score": 0.8} for i in range(40)]
    rows_b = [dict(r) for r in rows_a]
    rows_a.append({"input": "q0", "passed": False, "score": None})  # a 2nd q0 in run A: no partner in B
    rows_b.insert(5, {"input": "q1", "passed": False, "score": None})  # 2nd q1 in B after the 1st: pairs
    rows_a.append({"input": "q1", "passed": True, "score": 0.8})
    hook = wh.hook()
    run_a = load_run(hook, wh.table, rows_a, dag_id="cmp")
    run_b = load_run(hook, wh.table, rows_b, dag_id="cmp")
    result = gate(wh, run_b, baseline="paired", baseline_run_id=run_a).execute({})
    assert [(r["metric"], r["n_current"]) for r in result["results"]] == [
        ("pass_rate", 41),
        ("mean_score", 40),
    ]
    # the 2nd q1 pairs with the 2nd q1: passed in A, failed in B
    assert result["results"][0]["estimate"] == pytest.approx(-1 / 41)
