"""Auto evaluation configs used by the migration tests (request bodies as documented)."""

from __future__ import annotations

from typing import Any

CRED = "0195a8cc-1f0a-7b2e-8c3d-4e5f6a7b8c9d"
EVALUATOR = "0195a8cd-4b1e-7a3c-9d2f-3e1b6c7d8e9f"

CONVERTER = {
    "model_seq_id": 6,
    "model_public_id": "anthropic/claude-3-sonnet-20240229",
    "model_parameters": {"top_p": 0.5, "temperature": 0.6, "max_tokens": 50},
    "input_prompt_trajectory_template": {
        "messages": [
            {"role": "system", "content": "You are an AI assistant that answers questions"},
            {"role": "user", "content": "{item.input}"},
        ]
    },
}
SCORE_SYNC = {"langfuse_integration_config": {"score_name": "chat_quality_v1", "sync_score": True}}


def trace_experiment(name: str = "chat-traces", relative: str | None = "PT12H", cred: str = CRED) -> dict:
    return {
        "name": name,
        "type": "langfuse_trace",
        "config": {
            "integrated_service_credential_id": cred,
            "sampling_rate": 1.0,
            "max_trace_count": 1000,
            "trace_filter_request": {"name": None, "tags": None, "relative_time_range": relative},
        },
    }


def observation_experiment(name: str = "generations", relative: str = "P1D", cred: str = CRED) -> dict:
    return {
        "name": name,
        "type": "langfuse_observation",
        "config": {
            "integrated_service_credential_id": cred,
            "sampling_rate": 1.0,
            "observation_filter_request": {"relative_time_range": relative},
        },
    }


def dataset_experiment(name: str = "plan-suggestions", cred: str = CRED, dataset: str = "qa_dataset") -> dict:
    return {
        "name": name,
        "type": "langfuse_dataset",
        "config": {"integrated_service_credential_id": cred, "dataset_name": dataset},
    }


def auto_evaluation(
    name: str, schedule: str, timezone: str, evaluator: str = EVALUATOR, **extra: Any
) -> dict:
    return {"evaluator_id": evaluator, "name": name, "schedule": schedule, "timezone": timezone, **extra}


def file_entries() -> list[dict]:
    """A config file as a team would export it: good configs plus three that cannot be migrated."""
    return [
        {
            "id": "ae-1",
            "experiment_id": "exp-1",
            "experiment": trace_experiment(),
            "auto_evaluation": auto_evaluation(
                "Nightly chat quality!",
                "0 9,21 * * *",
                "America/New_York",
                target_data_converter=CONVERTER,
                metadata=SCORE_SYNC,
            ),
        },
        {
            "id": "ae-2",
            "experiment_id": "exp-2",
            "experiment": dataset_experiment(),
            "auto_evaluation": auto_evaluation("weekly plan suggestions", "30 9 * * 1", "Europe/Berlin"),
        },
        {
            "id": "ae-3",
            "experiment_id": "exp-3",
            "experiment": observation_experiment(),
            "auto_evaluation": auto_evaluation("nightly-chat-quality", "0 23 * * *", "Asia/Seoul"),
        },
        {
            "id": "ae-bad-cron",
            "experiment_id": "exp-1",
            "experiment": trace_experiment(),
            "auto_evaluation": auto_evaluation("bad cron", "61 * * * *", "Etc/UTC"),
        },
        {
            "id": "ae-bad-tz",
            "experiment_id": "exp-1",
            "experiment": trace_experiment(),
            "auto_evaluation": auto_evaluation("bad zone", "0 8 * * *", "Mars/Olympus_Mons"),
        },
        {"id": "ae-no-exp", "auto_evaluation": auto_evaluation("orphan", "0 8 * * *", "Etc/UTC")},
    ]
