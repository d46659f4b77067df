"""The Langfuse secret key and the GIP API key never reach XCom, rendered templates or exception texts.

A dedicated emulator runs with recognisable keys, so a leak anywhere is a plain substring match.
(Real task logs are checked in the e2e test, where Airflow's log masking is active.)
"""

from __future__ import annotations

import datetime as dt
import json
import traceback

import pytest
from airflow.sdk import DAG

from gip_airflow import api
from gip_airflow.exceptions import GipApiError
from gip_airflow.hooks.gip import GipHook
from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
)
from gip_airflow_emulator.pytest_plugin import start_emulator
from tests.integration.operators.conftest import BOOL_METRIC, DATASET, EVALUATION_CONFIG
from tests.integration.operators.helpers import rendered_fields, run_dag, ti_states, unique_dag_id, xcoms

LF_SECRET = "sk-lf-LEAKCHECK-3f9a1c0e"
API_KEY = "gip-LEAKCHECK-api-key-77b2"
SECRETS = (LF_SECRET, API_KEY)


@pytest.fixture(scope="module")
def leak_emulator():
    emu = start_emulator("--api-key", API_KEY, "--langfuse-secret-key", LF_SECRET, "--run-seconds", "0.3")
    yield emu
    emu.stop()


@pytest.fixture
def leak_env(airflow_db, leak_emulator, monkeypatch):
    leak_emulator.clear_faults()
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", leak_emulator.conn_json())
    monkeypatch.setenv(
        "AIRFLOW_CONN_LANGFUSE_DEFAULT",
        json.dumps(
            {
                "conn_type": "generic",
                "host": leak_emulator.base_url,
                "login": leak_emulator.langfuse_public_key,
                "password": LF_SECRET,
            }
        ),
    )
    monkeypatch.setenv("AIRFLOW_VAR_LANGFUSE_SECRET", LF_SECRET)
    yield leak_emulator
    leak_emulator.clear_faults()


def assert_clean(what: str, value) -> None:
    text = json.dumps(value, default=str)
    for secret in SECRETS:
        assert secret not in text, f"a secret reached {what}"


def test_no_secret_in_xcom_or_rendered_templates(leak_env):
    dag_id = unique_dag_id("secrets")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC)) as dag:
        from_conn = GipCreateLangfuseCredentialOperator(
            task_id="from_connection", alias="leak-conn", langfuse_conn_id="langfuse_default"
        )
        GipCreateLangfuseCredentialOperator(
            task_id="from_template",
            alias="leak-template",
            base_url=leak_env.base_url,
            public_key=leak_env.langfuse_public_key,
            private_key="{{ var.value.langfuse_secret }}",
        )
        GipCreateLangfuseCredentialOperator(
            task_id="from_literal",
            alias="leak-literal",
            base_url=leak_env.base_url,
            public_key=leak_env.langfuse_public_key,
            private_key=LF_SECRET,
        )
        exp = GipCreateExperimentOperator(
            task_id="experiment",
            name=f"{dag_id}-exp",
            experiment_type="langfuse_dataset",
            config={"integrated_service_credential_id": from_conn.output, "dataset_name": DATASET},
        )
        judge = GipCreateEvaluatorOperator(
            task_id="evaluator",
            name=f"{dag_id}-judge",
            metric=BOOL_METRIC,
            evaluation_config=EVALUATION_CONFIG,
        )
        for deferrable in (False, True):
            GipStartExperimentRunOperator(
                task_id=f"run_{'deferred' if deferrable else 'worker'}",
                experiment_id=exp.output,
                evaluator_id=judge.output,
                deferrable=deferrable,
                poll_interval=0.2,
                timeout=60,
            )
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    values = xcoms(dag_run)
    assert values[("run_worker", -1, "run")]["status"] == "DONE", "the secret key really worked"
    assert_clean("XCom", {str(k): v for k, v in values.items()})
    fields = rendered_fields(dag_run)
    assert fields[("from_template", -1)]["private_key"] == "***"
    assert_clean("rendered template fields", {str(k): v for k, v in fields.items()})


def exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(getattr(exc, "args", ""))


def test_no_secret_in_exceptions_when_gip_fails(leak_env):
    leak_env.set_faults(error_rate=1.0, error_statuses=[500], path_pattern="credentials")
    op = GipCreateLangfuseCredentialOperator(task_id="c", alias="x", langfuse_conn_id="langfuse_default")
    with pytest.raises(GipApiError) as info:
        op.execute({})
    assert "HTTP 500" in str(info.value)
    for secret in SECRETS:
        assert secret not in exception_text(info.value)


def test_echoed_secret_is_scrubbed(leak_env, monkeypatch):
    def echo(self, body):
        raise GipApiError(f"GIP POST credentials answered HTTP 422: invalid key {LF_SECRET}", http_status=422)

    monkeypatch.setattr(GipHook, "create_langfuse_credential", echo)
    op = GipCreateLangfuseCredentialOperator(task_id="c", alias="x", langfuse_conn_id="langfuse_default")
    with pytest.raises(GipApiError) as info:
        op.execute({})
    assert "invalid key ***" in str(info.value)
    assert LF_SECRET not in exception_text(info.value)


def test_no_secret_in_validation_errors(leak_env):
    with pytest.raises(api.GipRequestError) as info:
        GipCreateLangfuseCredentialOperator(
            task_id="c", alias="", base_url="not a url", public_key="pk", private_key=LF_SECRET
        )
    assert "alias" in str(info.value) and "base_url" in str(info.value)
    assert LF_SECRET not in exception_text(info.value)
