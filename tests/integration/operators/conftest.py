"""Fixtures for operator/sensor DAG tests: the emulator as ``gip_default`` and a Langfuse connection."""

from __future__ import annotations

import json

import pytest

from gip_airflow_emulator.defaults import DEFAULT_RUN_SECONDS

DATASET = "qa-general-knowledge"
EVALUATION_CONFIG = {
    "judge_model_seq_id": 19,
    "judge_model_public_id": "openai/gpt-4",
    "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
    "judge_prompt": "Judge it. Answer <rationale>...</rationale><rating>true|false</rating>.",
}
BOOL_METRIC = {"type": "bool"}


@pytest.fixture
def gip_env(airflow_db, gip_emulator, gip_conn, monkeypatch):
    """The emulator as ``gip_default`` (with a console URL) and ``langfuse_default``; fast runs, no faults."""
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", gip_emulator.conn_json(console_url="https://console.test"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_LANGFUSE_DEFAULT",
        json.dumps(
            {
                "conn_type": "generic",
                "host": gip_emulator.base_url,
                "login": gip_emulator.langfuse_public_key,
                "password": gip_emulator.langfuse_secret_key,
            }
        ),
    )
    gip_emulator.clear_faults()
    gip_emulator.set_run_speed(run_seconds=0.5, never_finish=False)
    yield gip_emulator
    gip_emulator.clear_faults()
    gip_emulator.set_run_speed(run_seconds=DEFAULT_RUN_SECONDS, never_finish=False)
