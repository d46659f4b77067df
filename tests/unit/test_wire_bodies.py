"""Request bodies on the wire hold what the user set and what the seed documents show, nothing else.

The expected bodies are the seeds' own examples (/work/shared/seeds, 001: the GIP evaluation intro);
a key the seeds never show, or ``null`` where they never show one, could be rejected by a strict GIP.
"""

from __future__ import annotations

import pytest

from gip_airflow import api

CRED = "0195a8c1-0000-7000-8000-000000000001"
PARAMS = {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50}

SEED_BODIES = [
    (
        api.LangfuseCredentialCreate,
        {
            "service_name": "LANGFUSE",
            "alias": "gip-eval-intro-demo",
            "base_url": "https://cloud.langfuse.com",
            "public_key": "pk-lf-1",
            "private_key": "sk-lf-1",
        },
    ),
    (
        api.ExperimentCreate,
        {
            "name": "Langfuse dataset",
            "description": "demo - dataset",
            "type": "langfuse_dataset",
            "config": {
                "integrated_service_credential_id": CRED,
                "dataset_name": "JSONL_samples-plan_suggestion_dataset_v2",
                "include_archived_items": False,
            },
        },
    ),
    (
        api.ExperimentCreate,
        {
            "name": "Langfuse trace",
            "description": "demo - trace",
            "type": "langfuse_trace",
            "config": {
                "integrated_service_credential_id": CRED,
                "sampling_rate": 1.0,
                "max_trace_count": 10,
                "trace_filter_request": {
                    "name": None,
                    "from_timestamp": None,
                    "to_timestamp": 1742293735000,
                    "tags": None,
                    "version": None,
                    "release": None,
                    "relative_time_range": None,
                },
            },
        },
    ),
    (
        api.ExperimentCreate,
        {
            "name": "Langfuse observation",
            "description": "demo - observation",
            "type": "langfuse_observation",
            "config": {
                "integrated_service_credential_id": CRED,
                "sampling_rate": 1.0,
                "max_observation_count": 10,
                "observation_filter_request": {
                    "name": None,
                    "from_start_time": None,
                    "to_start_time": 1742293735000,
                    "version": None,
                    "relative_time_range": None,
                },
            },
        },
    ),
    (
        api.EvaluatorCreate,
        {
            "name": "Category Metric Evaluator",
            "metric": {
                "type": "category",
                "config": [{"index": 0, "name": "bad"}, {"index": 1, "name": "good"}],
            },
            "type": "llm_judge",
            "evaluation_config": {
                "judge_model_seq_id": 19,
                "judge_model_public_id": "openai/gpt-4",
                "judge_model_parameters": PARAMS,
                "judge_prompt": "Judge it.",
            },
        },
    ),
    (
        api.EvaluatorCreate,
        {
            "name": "Bool Metric Evaluator",
            "metric": {"type": "bool"},
            "type": "llm_judge",
            "evaluation_config": {
                "judge_model_seq_id": 19,
                "judge_model_public_id": "openai/gpt-4",
                "judge_model_parameters": PARAMS,
                "judge_prompt": "Judge it.",
            },
        },
    ),
    (
        api.ExperimentRunCreate,
        {"evaluator_id": "e-1", "display_name": "run", "target_data_converter": None, "metadata": None},
    ),
    (
        api.ExperimentRunCreate,
        {
            "evaluator_id": "e-1",
            "display_name": "run",
            "target_data_converter": {
                "model_seq_id": 6,
                "model_public_id": "anthropic/claude-3-sonnet-20240229",
                "model_parameters": {"top_p": 0.5, "temperature": 0.6, "max_tokens": 50},
                "input_prompt_trajectory_template": {
                    "messages": [
                        {"role": "system", "content": "You are an AI assistant that answers questions"},
                        {"role": "user", "content": "{item.input}"},
                    ]
                },
            },
            "metadata": {
                "langfuse_integration_config": {"score_name": "sync_score_test_v1", "sync_score": True}
            },
        },
    ),
    (
        api.AutoEvaluationCreate,
        {
            "evaluator_id": "e-1",
            "enabled": True,
            "name": "nightly",
            "schedule": "0 23 * * *",
            "timezone": "Asia/Seoul",
            "target_data_converter": None,
            "metadata": None,
        },
    ),
]


@pytest.mark.parametrize(
    ("model", "body"), SEED_BODIES, ids=lambda v: v.get("name", "") if isinstance(v, dict) else v.__name__
)
def test_seed_bodies_go_on_the_wire_unchanged(model, body):
    assert api.build(model, body).to_wire() == body


def test_bool_metric_has_no_null_config():
    wire = api.build(
        api.EvaluatorCreate, {**SEED_BODIES[5][1], "metric": {"type": "bool", "config": None}}
    ).to_wire()
    assert wire["metric"] == {"type": "bool"}


def test_model_parameters_left_out_are_not_sent_as_nulls():
    body = {**SEED_BODIES[5][1]}
    body["evaluation_config"] = {**body["evaluation_config"], "judge_model_parameters": {"temperature": 0}}
    wire = api.build(api.EvaluatorCreate, body).to_wire()
    assert wire["evaluation_config"]["judge_model_parameters"] == {"temperature": 0.0}


def test_optional_fields_left_out_or_none_are_not_sent():
    wire = api.build(
        api.ExperimentCreate,
        {
            "name": "t",
            "description": None,
            "type": "langfuse_trace",
            "config": {"integrated_service_credential_id": CRED, "max_trace_count": None},
        },
    ).to_wire()
    assert "description" not in wire
    assert "max_trace_count" not in wire["config"]
    # Defaults the seeds show are still sent.
    assert wire["config"]["sampling_rate"] == 1.0
    assert wire["config"]["trace_filter_request"]["relative_time_range"] is None


def test_defaults_the_seeds_show_are_sent_when_left_out():
    credential = api.build(
        api.LangfuseCredentialCreate,
        {"alias": "a", "base_url": "https://x.example", "public_key": "pk", "private_key": "sk"},
    ).to_wire()
    assert credential["service_name"] == "LANGFUSE"
    run = api.build(api.ExperimentRunCreate, {"evaluator_id": "e", "display_name": "d"}).to_wire()
    assert run == {"evaluator_id": "e", "display_name": "d", "target_data_converter": None, "metadata": None}
    evaluator = api.build(
        api.EvaluatorCreate,
        {
            "name": "n",
            "metric": {"type": "bool"},
            "evaluation_config": {"judge_model_seq_id": 1, "judge_model_public_id": "m", "judge_prompt": "p"},
        },
    ).to_wire()
    assert evaluator["type"] == "llm_judge"
    auto = api.build(
        api.AutoEvaluationCreate, {"evaluator_id": "e", "name": "n", "schedule": "0 1 * * *"}
    ).to_wire()
    assert auto["enabled"] is True and auto["timezone"] == "Etc/UTC"
    score = api.build(
        api.ExperimentRunCreate,
        {
            "evaluator_id": "e",
            "display_name": "d",
            "metadata": {"langfuse_integration_config": {"score_name": "s"}},
        },
    ).to_wire()
    assert score["metadata"] == {"langfuse_integration_config": {"score_name": "s", "sync_score": True}}
