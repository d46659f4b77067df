"""The request models reject bad input before any call, naming the field and the fix."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from gip_airflow import api
from gip_airflow.api import GipRequestError, build

CRED = "ccd1ea20-5d1c-47e8-9a4b-a36ced7cb856"


def trace_experiment(**filter_fields):
    return {
        "name": "traces",
        "type": "langfuse_trace",
        "config": {
            "integrated_service_credential_id": CRED,
            "sampling_rate": 1.0,
            "max_trace_count": 10,
            "trace_filter_request": filter_fields,
        },
    }


def evaluator(metric):
    return {
        "name": "judge",
        "metric": metric,
        "evaluation_config": {
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
            "judge_prompt": "Rate it.",
        },
    }


@pytest.mark.parametrize(
    ("model", "data", "field", "fix"),
    [
        (
            api.ExperimentCreate,
            {
                "name": "ds",
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": CRED, "dataset_name": "my dataset"},
            },
            "config.dataset_name",
            "rename the Langfuse dataset (e.g. 'my_dataset')",
        ),
        (
            api.ExperimentCreate,
            {**trace_experiment(), "config": {**trace_experiment()["config"], "sampling_rate": 1.5}},
            "config.sampling_rate",
            "between 0.0 and 1.0",
        ),
        (
            api.ExperimentCreate,
            {**trace_experiment(), "config": {**trace_experiment()["config"], "sampling_rate": -0.1}},
            "config.sampling_rate",
            "between 0.0 and 1.0",
        ),
        (
            api.ExperimentCreate,
            trace_experiment(relative_time_range="12 hours"),
            "config.trace_filter_request.relative_time_range",
            "write e.g. 'PT12H'",
        ),
        (
            api.ExperimentCreate,
            trace_experiment(relative_time_range="PT12H", from_timestamp=1742293735000),
            "config.trace_filter_request",
            "Use one: explicit epoch-ms windows",
        ),
        (
            api.ExperimentCreate,
            trace_experiment(from_timestamp=1742293735000, to_timestamp=1742293735000),
            "config.trace_filter_request",
            "must be before to_timestamp",
        ),
        (
            api.ExperimentCreate,
            trace_experiment(from_timestamp="2026-11-01T00:00:00"),
            "config.trace_filter_request.from_timestamp",
            "no time zone",
        ),
        (
            api.ExperimentCreate,
            {"name": "x", "type": "langfuse_span", "config": {}},
            "type",
            "use one of 'langfuse_dataset'",
        ),
        (
            api.ExperimentCreate,
            {**trace_experiment(), "config": {**trace_experiment()["config"], "max_trace_cnt": 3}},
            "config.max_trace_cnt",
            "unknown field",
        ),
        (
            api.EvaluatorCreate,
            evaluator({"type": "stars"}),
            "metric",
            "use one of 'category', 'numeric', 'bool'",
        ),
        (
            api.EvaluatorCreate,
            evaluator({"type": "numeric", "config": {"min": {"value": 1.0}, "max": {"value": 1.0}}}),
            "metric.numeric.config",
            "must be below max",
        ),
        (
            api.EvaluatorCreate,
            evaluator(
                {"type": "category", "config": [{"index": 0, "name": "bad"}, {"index": 0, "name": "good"}]}
            ),
            "metric.category.config",
            "duplicate category index 0",
        ),
        (
            api.EvaluatorCreate,
            evaluator(
                {"type": "category", "config": [{"index": 0, "name": "ok"}, {"index": 1, "name": "ok"}]}
            ),
            "metric.category.config",
            "duplicate category name 'ok'",
        ),
        (
            api.LangfuseCredentialCreate,
            {"alias": "a", "base_url": "cloud.langfuse.com", "public_key": "pk", "private_key": "sk"},
            "base_url",
            "use e.g. https://cloud.langfuse.com",
        ),
        (
            api.AutoEvaluationCreate,
            {"evaluator_id": "e", "name": "n", "schedule": "0 23 * *", "timezone": "Asia/Seoul"},
            "schedule",
            "5-field cron",
        ),
        (
            api.AutoEvaluationCreate,
            {"evaluator_id": "e", "name": "n", "schedule": "0 23 * * *", "timezone": "Seoul"},
            "timezone",
            "IANA time zone",
        ),
    ],
)
def test_bad_input_names_field_and_fix(model, data, field, fix):
    with pytest.raises(GipRequestError) as err:
        build(model, data)
    message = str(err.value)
    assert f"{field}: " in message, message
    assert fix in message, message


def test_documented_examples_validate_unchanged():
    body = build(api.ExperimentCreate, trace_experiment(to_timestamp=1742293735000)).to_wire()
    assert body["config"]["trace_filter_request"] == {
        "name": None,
        "from_timestamp": None,
        "to_timestamp": 1742293735000,
        "tags": None,
        "version": None,
        "release": None,
        "relative_time_range": None,
    }
    ev = build(
        api.EvaluatorCreate,
        evaluator(
            {"type": "category", "config": [{"index": 0, "name": "bad"}, {"index": 1, "name": "good"}]}
        ),
    ).to_wire()
    assert ev["type"] == "llm_judge"
    assert ev["metric"]["config"][1] == {"index": 1, "name": "good"}


@pytest.mark.parametrize(
    "value",
    [
        1795305600000,
        "1795305600000",
        "2026-11-22T00:00:00+00:00",
        "2026-11-22T09:00:00+09:00",
        pendulum.datetime(2026, 11, 22, tz="UTC"),
        dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
    ],
)
def test_windows_accept_templates_and_datetimes(value):
    body = build(api.ExperimentCreate, trace_experiment(from_timestamp=value)).to_wire()
    assert body["config"]["trace_filter_request"]["from_timestamp"] == 1795305600000


def test_secret_never_in_repr_or_json_but_on_the_wire():
    cred = build(
        api.LangfuseCredentialCreate,
        {"alias": "a", "base_url": "https://x/", "public_key": "pk-1", "private_key": "sk-lf-TOPSECRET"},
    )
    assert "TOPSECRET" not in repr(cred)
    assert "TOPSECRET" not in cred.model_dump_json()
    assert cred.to_wire()["private_key"] == "sk-lf-TOPSECRET"
    with pytest.raises(GipRequestError) as err:
        build(api.LangfuseCredentialCreate, {"alias": "", "base_url": "x", "private_key": "sk-lf-TOPSECRET"})
    assert "TOPSECRET" not in str(err.value)


def test_responses_keep_unknown_fields_and_statuses():
    run = api.ExperimentRun.model_validate(
        {
            "id": "r",
            "status": "QUEUED_FOR_JUDGE",
            "new_field": 1,
            "aggregated_result": {"error": "x", "more": 2},
        }
    )
    assert run.status == "QUEUED_FOR_JUDGE"
    assert run.model_extra == {"new_field": 1}
    assert run.error == "x"


def test_status_sets_are_disjoint_and_cover_enum():
    assert api.SUCCESS_STATUSES.isdisjoint(api.FAILURE_STATUSES)
    assert api.TERMINAL_STATUSES.isdisjoint(api.IN_PROGRESS_STATUSES)
    assert set(api.RunStatus) == set(api.TERMINAL_STATUSES | api.IN_PROGRESS_STATUSES)


def test_list_items_shapes():
    assert api.list_items([1]) == [1]
    assert api.list_items({"data": [1], "meta": {}}) == [1]
    with pytest.raises(ValueError, match="unexpected list answer"):
        api.list_items({"weird": 1})
