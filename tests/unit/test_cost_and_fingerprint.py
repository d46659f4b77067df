"""Evaluation fingerprints, price math, limits and budget settings (no sockets, no subprocesses)."""

from __future__ import annotations

import datetime as dt

import pytest

from gip_airflow import api
from gip_airflow.cost import (
    DEFAULT_PRICES,
    Estimate,
    LimitExceeded,
    Price,
    TargetCount,
    fit_limits,
    parse_price_table,
    price_of,
    target_query,
)
from gip_airflow.ledger import Budget, Ledger, evaluation_identity, fingerprint, history_key
from gip_airflow.operators.gip import GipStartExperimentRunOperator

EXPERIMENT = {
    "type": "langfuse_trace",
    "config": {
        "integrated_service_credential_id": "cred-1",
        "sampling_rate": 0.5,
        "trace_filter_request": {"name": "chat", "from_timestamp": 1_000, "to_timestamp": 2_000},
    },
}
EVALUATOR = {
    "type": "llm_judge",
    "metric": {"type": "bool"},
    "evaluation_config": {
        "judge_model_seq_id": 19,
        "judge_model_public_id": "openai/gpt-4",
        "judge_model_parameters": {"temperature": 0.5},
        "judge_prompt": "Judge it.",
    },
}


def identity(**changes):
    parts = {
        "dag_id": "d",
        "task_id": "t",
        "experiment": EXPERIMENT,
        "evaluator": EVALUATOR,
        "target_data_converter": None,
    }
    parts.update(changes)
    return evaluation_identity(**parts)


# --- fingerprint ------------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_is_stable():
    reordered = {
        "evaluation_config": EVALUATOR["evaluation_config"],
        "metric": {"type": "bool"},
        "type": "llm_judge",
    }
    assert fingerprint(identity()) == fingerprint(identity(evaluator=reordered))
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert len(fingerprint(identity())) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"dag_id": "other"},
        {"task_id": "other"},
        {
            "experiment": {
                **EXPERIMENT,
                "config": {**EXPERIMENT["config"], "trace_filter_request": {"to_timestamp": 3_000}},
            }
        },
        {"experiment": {**EXPERIMENT, "config": {**EXPERIMENT["config"], "sampling_rate": 1.0}}},
        {
            "evaluator": {
                **EVALUATOR,
                "evaluation_config": {
                    **EVALUATOR["evaluation_config"],
                    "judge_model_public_id": "openai/gpt-4o",
                },
            }
        },
        {
            "evaluator": {
                **EVALUATOR,
                "evaluation_config": {
                    **EVALUATOR["evaluation_config"],
                    "judge_model_parameters": {"temperature": 0},
                },
            }
        },
        {"target_data_converter": {"model_public_id": "anthropic/claude-3-haiku-20240307"}},
        {"dataset_version": "v2"},
        {"run_scope": "manual__2025-01-01"},
    ],
    ids=[
        "dag",
        "task",
        "window",
        "sampling",
        "judge",
        "judge-params",
        "converter",
        "dataset-version",
        "run-scope",
    ],
)
def test_every_part_of_the_evaluation_changes_the_fingerprint(change):
    assert fingerprint(identity(**change)) != fingerprint(identity())


def test_the_credential_is_identified_by_the_langfuse_project_it_points_to():
    again = {**EXPERIMENT, "config": {**EXPERIMENT["config"], "integrated_service_credential_id": "cred-2"}}
    project = ["https://lf.example", "pk-lf-1"]
    # Registered again for the same keys: the same evaluation.
    assert fingerprint(identity(langfuse_project=project)) == fingerprint(
        identity(experiment=again, langfuse_project=project)
    )
    # Without the lookup, the credential id stands for the source.
    assert fingerprint(identity()) != fingerprint(identity(experiment=again))


def test_history_key_ignores_the_window_but_not_the_evaluator():
    assert history_key("langfuse_trace", EVALUATOR, None) == history_key(
        "langfuse_trace", dict(EVALUATOR), None
    )
    assert history_key("langfuse_trace", EVALUATOR, None) != history_key("langfuse_dataset", EVALUATOR, None)


# --- prices and estimates ---------------------------------------------------------------------------


def test_price_math_per_million_tokens():
    assert Price(2.5, 10.0).cost(1_000_000, 100_000) == pytest.approx(3.5)
    assert Price(30, 60).cost(751_295, 26_534) == pytest.approx(22.53885 + 1.59204)


def test_price_table_overrides_defaults_and_names_its_source():
    table = parse_price_table('{"openai/gpt-4": {"prompt": 1, "completion": 2}}', "Variable 'x'")
    assert table["openai/gpt-4"] == Price(1, 2)
    assert table["openai/gpt-4o"] == DEFAULT_PRICES["openai/gpt-4o"]
    assert price_of(table, "unknown/model") == DEFAULT_PRICES["*"]
    with pytest.raises(ValueError, match=r"Variable 'x'.*'m'.*prompt.*completion"):
        parse_price_table({"m": {"prompt": 1}}, "Variable 'x'")
    with pytest.raises(ValueError, match="not JSON"):
        parse_price_table("{", "Variable 'x'")
    with pytest.raises(ValueError, match="negative"):
        parse_price_table({"m": {"prompt": -1, "completion": 1}}, "s")


def estimate(matching=1000, rate=1.0, max_count=None, per_item=(900.0, 100.0), model="openai/gpt-4o"):
    return Estimate(
        TargetCount(matching, rate, max_count),
        per_item[0],
        per_item[1],
        "history",
        model,
        DEFAULT_PRICES[model],
    )


def test_estimate_applies_sampling_and_max_count():
    assert estimate(rate=0.25).items == 250
    assert estimate(rate=0.25, max_count=100).items == 100
    e = estimate(rate=0.5)
    assert (e.prompt_tokens, e.completion_tokens, e.total_tokens) == (450_000, 50_000, 500_000)
    assert e.cost == pytest.approx(450_000 * 2.5 / 1e6 + 50_000 * 10 / 1e6)
    assert e.as_dict()["cost"] == pytest.approx(1.625)


def test_fail_policy_names_the_estimate_and_the_limit():
    with pytest.raises(LimitExceeded, match=r"estimated 1000000 tokens exceed max_tokens=500000"):
        fit_limits(
            estimate(), max_tokens=500_000, max_cost=None, policy="fail", experiment_type="langfuse_trace"
        )
    with pytest.raises(LimitExceeded, match=r"estimated cost \$3\.2500 exceeds max_cost=\$1"):
        fit_limits(estimate(), max_tokens=None, max_cost=1.0, policy="fail", experiment_type="langfuse_trace")
    assert fit_limits(estimate(), max_tokens=2e6, max_cost=10, policy="fail", experiment_type="x") is None


def test_downsample_finds_a_rate_that_fits_with_headroom():
    e = estimate()  # 1000 items, $3.25
    rate = fit_limits(e, max_tokens=None, max_cost=1.0, policy="downsample", experiment_type="langfuse_trace")
    assert rate == pytest.approx(1.0 / 3.25 * 0.9, abs=1e-4)
    assert e.with_rate(rate).cost <= 0.9 * 1.0 + 1e-9
    # The max count binds first: the rate is lowered below matching * rate = allowed items.
    capped = estimate(max_count=500)
    rate = fit_limits(
        capped, max_tokens=100_000, max_cost=None, policy="downsample", experiment_type="langfuse_trace"
    )
    assert capped.with_rate(rate).total_tokens <= 90_000


def test_downsample_cannot_lower_a_dataset():
    with pytest.raises(LimitExceeded, match="dataset experiment has no sampling_rate"):
        fit_limits(
            estimate(), max_tokens=10, max_cost=None, policy="downsample", experiment_type="langfuse_dataset"
        )


def test_target_queries_follow_the_experiment_filters():
    path, query = target_query(
        "langfuse_trace",
        {
            **EXPERIMENT["config"],
            "trace_filter_request": {
                "name": "chat",
                "tags": ["a", "b"],
                "from_timestamp": 1_742_293_735_000,
                "to_timestamp": 1_742_380_135_000,
            },
        },
        0,
    )
    assert path == api.LangfusePaths.traces
    assert query == [
        ("name", "chat"),
        ("tags", "a"),
        ("tags", "b"),
        ("fromTimestamp", "2025-03-18T10:28:55.000Z"),
        ("toTimestamp", "2025-03-19T10:28:55.000Z"),
    ]
    now = 1_742_380_135_000
    _, query = target_query(
        "langfuse_observation", {"observation_filter_request": {"relative_time_range": "PT12H"}}, now
    )
    assert query == [
        ("fromStartTime", "2025-03-18T22:28:55.000Z"),
        ("toStartTime", "2025-03-19T10:28:55.000Z"),
    ]
    assert target_query("langfuse_dataset", {"dataset_name": "qa"}, 0) == (
        api.LangfusePaths.dataset_items,
        [("datasetName", "qa")],
    )


# --- budgets and operator settings -----------------------------------------------------------------


def test_budget_settings():
    b = Budget.of({"amount": 50, "period": "day", "team": "search"}, "Task 't'")
    assert (b.amount, b.period, b.key("gip_default")) == (50.0, "day", "search")
    assert Budget.of({"amount": 5}, "t").key("gip_default") == "conn:gip_default"
    at = dt.datetime(2026, 12, 4, 23, 59, tzinfo=dt.UTC)
    assert (b.period_of(at), Budget(5).period_of(at)) == ("2026-12-04", "2026-12")
    assert Budget(5).fmt(1.23456) == "$1.2346" and Budget(5, unit="tokens").fmt(10) == "10 tokens"
    for bad, match in (
        ({"amount": 5, "period": "week"}, "period must be 'day' or 'month'"),
        ({"period": "day"}, "needs a numeric 'amount'"),
        ({"amount": -1}, "must be positive"),
        ({"amount": 1, "limit": 2}, "unknown budget keys"),
    ):
        with pytest.raises(ValueError, match=match):
            Budget.of(bad, "Task 't'")


def test_ledger_table_names_are_checked():
    Ledger.check_table_name("warehouse.gip_ledger")
    with pytest.raises(ValueError, match="not a plain table name"):
        Ledger.check_table_name("ledger; DROP TABLE x")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_cost": 5}, "set langfuse_conn_id"),
        ({"langfuse_conn_id": "lf", "budget": {"amount": 5}}, "set ledger_conn_id"),
        ({"langfuse_conn_id": "lf", "max_tokens": 0}, "max_tokens must be positive"),
        ({"over_limit": "skip"}, "over_limit must be 'fail' or 'downsample'"),
        ({"ledger_conn_id": "w", "ledger_table": "a-b"}, "not a plain table name"),
    ],
)
def test_operator_refuses_bad_cost_settings_at_parse_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GipStartExperimentRunOperator(task_id="run", experiment_id="e", evaluator_id="v", **kwargs)


def test_operator_defaults_leave_cost_control_off():
    op = GipStartExperimentRunOperator(task_id="run", experiment_id="e", evaluator_id="v")
    assert (op.ledger_conn_id, op.langfuse_conn_id, op.budget, op.force) == (None, None, None, False)
