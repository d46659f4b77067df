"""Operators without a server: validation at DAG parse time, display names, data-interval windows."""

from __future__ import annotations

import datetime as dt
import logging
import types

import pendulum
import pytest
from airflow.sdk import DAG

from gip_airflow import api
from gip_airflow.operators._validation import differences
from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
    data_interval_window,
    default_display_name,
)

EVAL_CONFIG = {"judge_model_seq_id": 19, "judge_model_public_id": "openai/gpt-4", "judge_prompt": "Rate it."}


@pytest.fixture
def dag():
    with DAG("validation", schedule=None, start_date=dt.datetime(2025, 1, 1)) as d:
        yield d


def test_experiment_field_error_at_parse_time(dag):
    with pytest.raises(
        api.GipRequestError, match=r"task 'e'.*config\.dataset_name: 'my data' contains whitespace"
    ):
        GipCreateExperimentOperator(
            task_id="e",
            name="x",
            experiment_type="langfuse_dataset",
            config={"integrated_service_credential_id": "c", "dataset_name": "my data"},
        )


def test_templated_parts_are_skipped_the_rest_is_checked(dag):
    cred = GipCreateLangfuseCredentialOperator(task_id="cred", alias="a", langfuse_conn_id="langfuse")
    ok = GipCreateExperimentOperator(
        task_id="ok",
        name="{{ dag_run.run_id }}",
        experiment_type="langfuse_trace",
        config={
            "integrated_service_credential_id": cred.output,
            "trace_filter_request": {"from_timestamp": "{{ data_interval_start }}"},
        },
    )
    assert ok.config["trace_filter_request"]["from_timestamp"] == "{{ data_interval_start }}"
    with pytest.raises(api.GipRequestError, match=r"config\.sampling_rte: unknown field"):
        GipCreateExperimentOperator(
            task_id="typo",
            name="x",
            experiment_type="langfuse_trace",
            config={"integrated_service_credential_id": cred.output, "sampling_rte": 0.5},
        )


def test_typed_config_sets_the_type(dag):
    op = GipCreateExperimentOperator(
        task_id="typed",
        name="x",
        config=api.ObservationExperimentConfig(integrated_service_credential_id="c"),
    )
    assert op.experiment_type == "langfuse_observation" and isinstance(op.config, dict)
    with pytest.raises(api.GipRequestError, match="does not match"):
        GipCreateExperimentOperator(
            task_id="mismatch",
            name="x",
            experiment_type="langfuse_dataset",
            config=api.TraceExperimentConfig(integrated_service_credential_id="c"),
        )


def test_window_rules(dag):
    with pytest.raises(api.GipRequestError, match="type 'langfuse_dataset' has no time window"):
        GipCreateExperimentOperator(
            task_id="w1",
            name="x",
            window="data_interval",
            config=api.DatasetExperimentConfig(integrated_service_credential_id="c", dataset_name="d"),
        )
    with pytest.raises(api.GipRequestError, match="already sets relative_time_range"):
        GipCreateExperimentOperator(
            task_id="w2",
            name="x",
            window="data_interval",
            experiment_type="langfuse_trace",
            config={
                "integrated_service_credential_id": "c",
                "trace_filter_request": {"relative_time_range": "PT12H"},
            },
        )


def test_evaluator_errors_name_the_fields(dag):
    with pytest.raises(api.GipRequestError) as info:
        GipCreateEvaluatorOperator(
            task_id="ev",
            name="x",
            metric={"type": "category", "config": [{"index": 0, "name": "a"}, {"index": 0, "name": "b"}]},
            evaluation_config={**EVAL_CONFIG, "judge_prompt": ""},
        )
    assert "duplicate category index 0" in str(info.value)
    assert "evaluation_config.judge_prompt" in str(info.value)
    typed = GipCreateEvaluatorOperator(
        task_id="typed",
        name="x",
        metric=api.NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}}),
        evaluation_config=api.EvaluationConfig(**EVAL_CONFIG),
    )
    assert typed.metric["type"] == "numeric"


def test_credential_needs_a_secret_source(dag):
    with pytest.raises(ValueError, match="langfuse_conn_id"):
        GipCreateLangfuseCredentialOperator(task_id="c", alias="a", base_url="https://x", public_key="pk")
    with pytest.raises(api.GipRequestError, match="base_url: 'ftp://x' is not an http"):
        GipCreateLangfuseCredentialOperator(
            task_id="c2", alias="a", base_url="ftp://x", public_key="pk", private_key="sk-1"
        )


def test_run_operator_validation(dag):
    with pytest.raises(api.GipRequestError, match="sync_score=True needs a score_name"):
        GipStartExperimentRunOperator(task_id="r1", experiment_id="e", evaluator_id="v", sync_score=True)
    with pytest.raises(api.GipRequestError, match=r"target_data_converter\.model_seq_id: required"):
        GipStartExperimentRunOperator(
            task_id="r2",
            experiment_id="e",
            evaluator_id="v",
            target_data_converter={
                "model_public_id": "anthropic/claude",
                "input_prompt_trajectory_template": {
                    "messages": [{"role": "user", "content": "{item.input}"}]
                },
            },
        )
    with pytest.raises(ValueError, match="both success and failure"):
        GipStartExperimentRunOperator(
            task_id="r3",
            experiment_id="e",
            evaluator_id="v",
            success_statuses=["DONE"],
            failure_statuses=["DONE"],
        )
    op = GipStartExperimentRunOperator(task_id="r4", experiment_id="e", evaluator_id="v", score_name="s")
    assert op._request_data("n")["metadata"] == {
        "langfuse_integration_config": {"score_name": "s", "sync_score": True}
    }


def test_default_display_name_unique_stable_bounded():
    a = default_display_name("dag", "task", "scheduled__2025-01-01T00:00:00+00:00", -1)
    assert a == "airflow/dag/task/scheduled__2025-01-01T00:00:00+00:00"
    assert default_display_name("dag", "task", "r", 3) == "airflow/dag/task/r/3"
    long = [default_display_name("d" * 250, "t" * 250, "manual__x", i) for i in (0, 1)]
    assert all(len(n) == 255 for n in long) and long[0] != long[1]
    assert long[0] == default_display_name("d" * 250, "t" * 250, "manual__x", 0)


def ctx(start, end, run_after=None):
    return {
        "data_interval_start": start,
        "data_interval_end": end,
        "dag_run": types.SimpleNamespace(run_after=run_after),
    }


def test_data_interval_window(caplog):
    log = logging.getLogger("test.window")
    start, end = pendulum.datetime(2025, 3, 1), pendulum.datetime(2025, 3, 2)
    assert data_interval_window(ctx(start, end), dt.timedelta(hours=24), log) == (start, end)
    with caplog.at_level(logging.WARNING, logger="test.window"):
        # manual run in Airflow 3: no data interval -> the 6 h before run_after
        run_after = pendulum.datetime(2025, 3, 5, 12)
        assert data_interval_window(ctx(None, None, run_after), dt.timedelta(hours=6), log) == (
            pendulum.datetime(2025, 3, 5, 6),
            run_after,
        )
        # zero-length interval (CronTriggerTimetable without interval=) -> the day before its end
        assert data_interval_window(ctx(end, end), dt.timedelta(hours=24), log) == (start, end)
    assert "no data interval" in caplog.text and "empty" in caplog.text


def test_differences_tolerates_extra_fields_only():
    ours = {"name": "x", "config": {"a": 1, "f": {"from": None}}, "tags": ["a"]}
    assert (
        differences(ours, {"id": "1", "name": "x", "config": {"a": 1.0, "b": 2, "f": {}}, "tags": ["a"]})
        == []
    )
    assert differences(ours, {"name": "x", "config": {"a": 2, "f": {"from": 5}}, "tags": []}) == [
        "config.a",
        "config.f.from",
        "tags",
    ]
