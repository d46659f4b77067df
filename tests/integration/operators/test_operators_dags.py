"""The operators in real DAGs (``dag.test()``) against the GIP emulator over loopback HTTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time

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
from tests.integration.operators.conftest import BOOL_METRIC, DATASET, EVALUATION_CONFIG
from tests.integration.operators.helpers import (
    run_dag,
    runs_named,
    ti_states,
    try_numbers,
    unique_dag_id,
    xcom,
)

START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
RETRY = {"retries": 1, "retry_delay": dt.timedelta(seconds=0)}


def chain(dag_id: str, run_cls=GipStartExperimentRunOperator, **run_kwargs):
    """credential -> experiment + evaluator -> run, the way a user writes it."""
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        cred = GipCreateLangfuseCredentialOperator(
            task_id="credential", alias=f"{dag_id}-lf", langfuse_conn_id="langfuse_default"
        )
        exp = GipCreateExperimentOperator(
            task_id="experiment",
            name=f"{dag_id}-exp",
            experiment_type="langfuse_dataset",
            config={"integrated_service_credential_id": cred.output, "dataset_name": DATASET},
        )
        evaluator = GipCreateEvaluatorOperator(
            task_id="evaluator",
            name=f"{dag_id}-judge",
            metric=BOOL_METRIC,
            evaluation_config=EVALUATION_CONFIG,
        )
        run_kwargs = {"poll_interval": 0.2, "timeout": 60, **run_kwargs}
        run_cls(task_id="run", experiment_id=exp.output, evaluator_id=evaluator.output, **run_kwargs)
    return dag


def display_name(dag_run, task_id: str = "run", map_index: int = -1) -> str:
    suffix = f"/{map_index}" if map_index >= 0 else ""
    return f"airflow/{dag_run.dag_id}/{task_id}/{dag_run.run_id}{suffix}"


# --- each operator, waiting in the worker and in the triggerer -----------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_pipeline_runs_evaluation(gip_env, deferrable):
    dag_id = unique_dag_id(f"pipeline_{'deferred' if deferrable else 'worker'}")
    started = time.perf_counter()
    dag_run = run_dag(chain(dag_id, deferrable=deferrable, score_name="judge_v1"))
    elapsed = time.perf_counter() - started
    assert dag_run.state == "success", ti_states(dag_run)
    print(f"\n[measure] dag.test() pipeline, deferrable={deferrable}: {elapsed:.1f} s")

    credential_id = xcom(dag_run, "credential")
    experiment_id = xcom(dag_run, "experiment")
    run_id = xcom(dag_run, "run")
    assert credential_id and experiment_id and xcom(dag_run, "evaluator") and run_id
    final = xcom(dag_run, "run", key="run")
    assert final["id"] == run_id and final["status"] == "DONE"
    assert final["result_path"] and final["aggregated_result"]["total_usage"]["total_tokens"] > 0
    link = xcom(dag_run, "run", key="_link_GipExperimentRunLink")
    assert link == (
        f"https://console.test/workspaces/{gip_env.workspace_id}/evals/experiments/{experiment_id}/runs/{run_id}"
    )
    (run,) = runs_named(gip_env, display_name(dag_run))
    assert run["id"] == run_id
    with GipHook() as hook:
        stored = hook.get_experiment_run(experiment_id, run_id)
    assert stored.status == "DONE"


def test_score_sync_settings_reach_gip(gip_env):
    dag_id = unique_dag_id("score_sync")
    dag_run = run_dag(chain(dag_id, score_name="judge_v1", wait_for_completion=False))
    assert dag_run.state == "success"
    (run,) = runs_named(gip_env, display_name(dag_run))
    assert run["metadata"]["langfuse_integration_config"] == {"score_name": "judge_v1", "sync_score": True}
    # Not waiting: the XCom holds the run as it was right after the start.
    assert xcom(dag_run, "run", key="run")["id"] == xcom(dag_run, "run")


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_failing_run_fails_task(gip_env, deferrable):
    gip_env.set_faults(run_failure_rate=1.0)
    dag_run = run_dag(chain(unique_dag_id("failing"), deferrable=deferrable))
    assert dag_run.state == "failed"
    assert ti_states(dag_run)[("run", -1)] == "failed"
    final = xcom(dag_run, "run", key="run")
    assert final["status"] in api.FAILURE_STATUSES and final["aggregated_result"]["error"]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_timeout_ends_wait(gip_env, deferrable):
    gip_env.set_run_speed(never_finish=True)
    started = time.perf_counter()
    dag_run = run_dag(chain(unique_dag_id("timeout"), deferrable=deferrable, timeout=2))
    took = time.perf_counter() - started
    print(f"\n[measure] 2 s timeout, deferrable={deferrable}: dag.test() took {took:.1f} s")
    assert dag_run.state == "failed"
    assert ti_states(dag_run)[("run", -1)] == "failed"
    (run,) = runs_named(gip_env, display_name(dag_run))
    assert run["status"] not in api.TERMINAL_STATUSES, "the run keeps going on GIP"


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_transient_errors_during_wait_are_waited_out(gip_env, deferrable):
    gip_env.set_run_speed(run_seconds=1.5)
    faults_before = gip_env.stats()["faults_total"]
    # Only the run-status GETs fail: 4 of them in a row (polling turns the hook's own retries off, so
    # the wait policy's backoff does the work), then GIP recovers.
    gip_env.set_faults(error_rate=1.0, path_pattern=r"/runs/[^/]+$", max_faults=4)
    dag_run = run_dag(
        chain(unique_dag_id("flaky"), deferrable=deferrable, max_consecutive_errors=6, poll_interval=0.1)
    )
    assert dag_run.state == "success", ti_states(dag_run)
    assert xcom(dag_run, "run", key="run")["status"] == "DONE"
    assert len(runs_named(gip_env, display_name(dag_run))) == 1
    assert gip_env.stats()["faults_total"] - faults_before == 4


def test_persistent_errors_give_up(gip_env):
    gip_env.set_faults(error_rate=1.0, path_pattern=r"/runs/[^/]+$")
    dag_run = run_dag(chain(unique_dag_id("down"), max_consecutive_errors=3, poll_interval=0.05))
    assert dag_run.state == "failed"


# --- retries never pay twice ------------------------------------------------------------------------------


class CrashAfterCreate(GipStartExperimentRunOperator):
    """The first try dies right after GIP created the run, before its id reached the task state store."""

    def submit_job(self, context):
        ref = super().submit_job(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker died between creating the run and recording it")
        return ref


class CrashWhileWaiting(GipStartExperimentRunOperator):
    """The first try dies while waiting (the run id is already in the task state store)."""

    def poll_until_complete(self, external_id, context):
        if context["ti"].try_number == 1:
            raise RuntimeError("worker died while waiting")
        return super().poll_until_complete(external_id, context)


@pytest.mark.parametrize("crash", [CrashAfterCreate, CrashWhileWaiting], ids=["before-store", "after-store"])
def test_retry_reuses_the_run(gip_env, crash):
    gip_env.set_run_speed(run_seconds=1.0)
    dag_run = run_dag(chain(unique_dag_id("crash"), run_cls=crash, **RETRY))
    assert dag_run.state == "success", ti_states(dag_run)
    assert try_numbers(dag_run)[("run", -1)] == 2
    runs = runs_named(gip_env, display_name(dag_run))
    assert len(runs) == 1, "exactly one run exists on GIP after the retry"
    assert xcom(dag_run, "run") == runs[0]["id"]


def test_run_started_earlier_with_same_display_name_is_reused(gip_env):
    dag_id = unique_dag_id("prestarted")
    with GipHook() as hook:
        cred = hook.create_langfuse_credential(
            {
                "alias": "pre",
                "base_url": gip_env.base_url,
                "public_key": gip_env.langfuse_public_key,
                "private_key": gip_env.langfuse_secret_key,
            }
        )
        exp = hook.create_experiment(
            {
                "name": f"{dag_id}-exp",
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": cred.id, "dataset_name": DATASET},
            }
        )
        evaluator = hook.create_evaluator(
            {"name": f"{dag_id}-judge", "metric": BOOL_METRIC, "evaluation_config": EVALUATION_CONFIG}
        )
        earlier = hook.create_experiment_run(
            exp.id, {"evaluator_id": evaluator.id, "display_name": f"pre-{dag_id}"}
        )
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GipStartExperimentRunOperator(
            task_id="run",
            experiment_id=exp.id,
            evaluator_id=evaluator.id,
            display_name="pre-{{ dag.dag_id }}",
            poll_interval=0.2,
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "success"
    assert xcom(dag_run, "run") == earlier.id
    assert len(runs_named(gip_env, f"pre-{dag_id}")) == 1


def test_reuse_off_starts_a_new_run(gip_env):
    dag_run = run_dag(
        chain(unique_dag_id("noreuse"), run_cls=CrashAfterCreate, reuse_existing_run=False, **RETRY)
    )
    assert dag_run.state == "success"
    assert len(runs_named(gip_env, display_name(dag_run))) == 2


# --- create operators are idempotent ------------------------------------------------------------------------


def create_dag(
    dag_id: str, names: str, credential_id: str, judge_prompt: str = EVALUATION_CONFIG["judge_prompt"]
):
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GipCreateExperimentOperator(
            task_id="experiment",
            name=f"{names}-exp",
            config=api.DatasetExperimentConfig(
                integrated_service_credential_id=credential_id, dataset_name=DATASET
            ),
        )
        GipCreateEvaluatorOperator(
            task_id="evaluator",
            name=f"{names}-judge",
            metric=BOOL_METRIC,
            evaluation_config={**EVALUATION_CONFIG, "judge_prompt": judge_prompt},
        )
    return dag


@pytest.fixture
def credential_id(gip_env) -> str:
    with GipHook() as hook:
        return hook.create_langfuse_credential(
            {
                "alias": "tests",
                "base_url": gip_env.base_url,
                "public_key": gip_env.langfuse_public_key,
                "private_key": gip_env.langfuse_secret_key,
            }
        ).id


def test_rerun_reuses_experiment_and_evaluator(gip_env, credential_id):
    names = unique_dag_id("idem")
    first = run_dag(create_dag(unique_dag_id("idem_a"), names, credential_id))
    second = run_dag(create_dag(unique_dag_id("idem_b"), names, credential_id))
    assert first.state == second.state == "success"
    assert xcom(first, "experiment") == xcom(second, "experiment")
    assert xcom(first, "evaluator") == xcom(second, "evaluator")
    changed = run_dag(
        create_dag(unique_dag_id("idem_c"), names, credential_id, judge_prompt="Another rubric.")
    )
    assert xcom(changed, "evaluator") != xcom(first, "evaluator"), "another definition is another evaluator"
    assert xcom(changed, "experiment") == xcom(first, "experiment")
    with GipHook() as hook:
        assert len([e for e in hook.list_experiments() if e.name == f"{names}-exp"]) == 1
        assert len([e for e in hook.list_evaluators() if e.name == f"{names}-judge"]) == 2


class NoListingCrashAfterCreate(GipCreateExperimentOperator):
    """GIP without list endpoints, and a first try that dies after the experiment was created."""

    def list_same_name(self, name):
        raise GipApiError("Method Not Allowed", http_status=405)

    def execute(self, context):
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("died after creating the experiment")
        return result


def test_retry_reuses_experiment_from_task_state_store(gip_env, credential_id):
    dag_id = unique_dag_id("store")
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        NoListingCrashAfterCreate(
            task_id="experiment",
            name=f"{dag_id}-exp",
            config=api.DatasetExperimentConfig(
                integrated_service_credential_id=credential_id, dataset_name=DATASET
            ),
            **RETRY,
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "success"
    assert try_numbers(dag_run)[("experiment", -1)] == 2
    with GipHook() as hook:
        same = [e for e in hook.list_experiments() if e.name == f"{dag_id}-exp"]
    assert [e.id for e in same] == [xcom(dag_run, "experiment")]


# --- dynamic task mapping ----------------------------------------------------------------------


def test_mapped_runs_over_evaluators(gip_env):
    dag_id = unique_dag_id("mapped")
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        cred = GipCreateLangfuseCredentialOperator(
            task_id="credential", alias="mapped", langfuse_conn_id="langfuse_default"
        )
        exp = GipCreateExperimentOperator(
            task_id="experiment",
            name=f"{dag_id}-exp",
            experiment_type="langfuse_dataset",
            config={"integrated_service_credential_id": cred.output, "dataset_name": DATASET},
        )
        judges = GipCreateEvaluatorOperator.partial(
            task_id="evaluators", metric=BOOL_METRIC, evaluation_config=EVALUATION_CONFIG
        ).expand(name=[f"{dag_id}-a", f"{dag_id}-b", f"{dag_id}-c"])
        GipStartExperimentRunOperator.partial(
            task_id="run", experiment_id=exp.output, poll_interval=0.2, deferrable=True
        ).expand(evaluator_id=judges.output)
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    run_ids = [xcom(dag_run, "run", map_index=i) for i in range(3)]
    evaluator_ids = [xcom(dag_run, "evaluators", map_index=i) for i in range(3)]
    assert len(set(run_ids)) == 3 and len(set(evaluator_ids)) == 3
    for i in range(3):
        (run,) = runs_named(gip_env, display_name(dag_run, map_index=i))
        assert run["id"] == run_ids[i] and run["evaluator_id"] == evaluator_ids[i]
        assert xcom(dag_run, "run", key="run", map_index=i)["status"] == "DONE"


# --- the CLI: `airflow dags test` in a subprocess --------------------------------------------------

CLI_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator, GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator, GipStartExperimentRunOperator,
)

# CONSTANTS


@dag(schedule="@daily", start_date=pendulum.datetime(2025, 3, 1), catchup=False)
def gip_cli_dag():
    cred = GipCreateLangfuseCredentialOperator(
        task_id="credential", alias="cli", langfuse_conn_id="langfuse_default"
    )
    exp = GipCreateExperimentOperator(
        task_id="experiment", name="cli-{{ run_id }}", experiment_type="langfuse_dataset",
        config={"integrated_service_credential_id": cred.output, "dataset_name": DATASET},
    )
    judge = GipCreateEvaluatorOperator(task_id="evaluator", name="cli-judge", metric={"type": "bool"},
                                       evaluation_config=EVALUATION_CONFIG)
    GipStartExperimentRunOperator(task_id="run", experiment_id=exp.output, evaluator_id=judge.output,
                                  deferrable=True, poll_interval=0.2, timeout=60)


gip_cli_dag()
"""


def test_airflow_dags_test_cli(gip_env, tmp_path):
    constants = f"DATASET = {DATASET!r}\nEVALUATION_CONFIG = {EVALUATION_CONFIG!r}"
    (tmp_path / "gip_cli_dag.py").write_text(textwrap.dedent(CLI_DAG).replace("# CONSTANTS", constants))
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path)}
    before = {r["id"] for r in gip_env.runs()}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "gip_cli_dag"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(f"\n[measure] airflow dags test: {time.perf_counter() - started:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    new = [r for r in gip_env.runs() if r["id"] not in before]
    assert len(new) == 1 and new[0]["display_name"].startswith("airflow/gip_cli_dag/run/")
    assert new[0]["status"] == "DONE"


# --- data-interval windows ----------------------------------------------------------------------

SEED_CREDENTIAL = "0195a8c0-0000-7000-8000-000000000001"


def test_windows_from_the_data_interval(gip_env):
    from airflow.timetables.trigger import CronTriggerTimetable

    dag_id = unique_dag_id("window")
    daily = CronTriggerTimetable("0 0 * * *", timezone="UTC", interval=dt.timedelta(days=1))
    with DAG(dag_id, schedule=daily, start_date=START, catchup=False) as dag:
        GipCreateExperimentOperator(
            task_id="filled",
            name=f"{dag_id}-filled {{{{ run_id }}}}",
            config=api.TraceExperimentConfig(integrated_service_credential_id=SEED_CREDENTIAL),
            window="data_interval",
        )
        GipCreateExperimentOperator(
            task_id="templated",
            name=f"{dag_id}-templated {{{{ run_id }}}}",
            experiment_type="langfuse_observation",
            config={
                "integrated_service_credential_id": SEED_CREDENTIAL,
                "observation_filter_request": {
                    "from_start_time": "{{ data_interval_start }}",
                    "to_start_time": "{{ data_interval_end }}",
                },
            },
        )
    dag_run = run_dag(dag, logical_date=dt.datetime(2025, 3, 2, tzinfo=dt.UTC))
    assert dag_run.state == "success", ti_states(dag_run)
    end_ms = int(dt.datetime(2025, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
    start_ms = end_ms - 24 * 3600 * 1000
    with GipHook() as hook:
        filled = hook.get_experiment(xcom(dag_run, "filled")).config["trace_filter_request"]
        templated = hook.get_experiment(xcom(dag_run, "templated")).config["observation_filter_request"]
    assert (filled["from_timestamp"], filled["to_timestamp"]) == (start_ms, end_ms)
    assert (templated["from_start_time"], templated["to_start_time"]) == (start_ms, end_ms)


@pytest.mark.parametrize("schedule", [None, "@daily"], ids=["no-interval", "empty-interval"])
def test_window_fallback(gip_env, schedule):
    # Airflow 3: "@daily" is a CronTriggerTimetable without interval= -> empty intervals.
    dag_id = unique_dag_id("window_fallback")
    with DAG(dag_id, schedule=schedule, start_date=START, catchup=False) as dag:
        GipCreateExperimentOperator(
            task_id="filled",
            name=f"{dag_id}-filled",
            config=api.TraceExperimentConfig(integrated_service_credential_id=SEED_CREDENTIAL),
            window="data_interval",
            window_fallback=dt.timedelta(hours=6),
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    with GipHook() as hook:
        window = hook.get_experiment(xcom(dag_run, "filled")).config["trace_filter_request"]
    assert window["to_timestamp"] - window["from_timestamp"] == 6 * 3600 * 1000


class CredentialCrashAfterCreate(GipCreateLangfuseCredentialOperator):
    def execute(self, context):
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("died after registering the credential")
        return result


def test_credential_retry_reuses_registration(gip_env):
    dag_id = unique_dag_id("cred_retry")
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        CredentialCrashAfterCreate(
            task_id="credential", alias=f"{dag_id}-lf", langfuse_conn_id="langfuse_default", **RETRY
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "success"
    assert try_numbers(dag_run)[("credential", -1)] == 2
    with gip_env.client() as client:
        listed = client.get(gip_env.ws_path("/integrated-services/credentials")).json()
    items = listed["data"] if isinstance(listed, dict) else listed
    assert [c["id"] for c in items if c["alias"] == f"{dag_id}-lf"] == [xcom(dag_run, "credential")]


def test_credential_remembered_across_dag_runs(gip_env, monkeypatch):
    """``remember_in_variable``: later DAG runs reuse the registration until the keys change."""
    from airflow.models import Variable  # the metadata database, as the test process sees it

    dag_id = unique_dag_id("cred_remember")
    variable = f"{dag_id}_credential"

    def dag_once():
        with DAG(dag_id, schedule=None, start_date=START) as dag:
            GipCreateLangfuseCredentialOperator(
                task_id="credential",
                alias=f"{dag_id}-lf",
                langfuse_conn_id="langfuse_default",
                remember_in_variable="{{ dag.dag_id }}_credential",
            )
        return dag

    def registered() -> list[str]:
        items, page = [], 1
        with gip_env.client() as client:
            while True:
                listed = client.get(
                    gip_env.ws_path("/integrated-services/credentials"), params={"page": page, "limit": 100}
                )
                listed.raise_for_status()
                batch = listed.json()
                batch = batch["data"] if isinstance(batch, dict) else batch
                if not batch:
                    break
                items += batch
                page += 1
        return sorted(c["id"] for c in items if c["alias"] == f"{dag_id}-lf")

    first, second = run_dag(dag_once()), run_dag(dag_once())
    assert first.state == second.state == "success"
    assert xcom(first, "credential") == xcom(second, "credential")
    assert registered() == [xcom(first, "credential")]
    stored = Variable.get(variable, deserialize_json=True)
    assert stored["id"] == xcom(first, "credential")
    assert gip_emulator_secret(gip_env) not in json.dumps(stored)

    # New keys (a rotated secret): a new registration, and the Variable follows it.
    monkeypatch.setenv(
        "AIRFLOW_CONN_LANGFUSE_DEFAULT",
        json.dumps(
            {
                "conn_type": "generic",
                "host": gip_env.base_url,
                "login": gip_env.langfuse_public_key,
                "password": "sk-lf-rotated-0001",
            }
        ),
    )
    third = run_dag(dag_once())
    assert third.state == "success"
    assert xcom(third, "credential") != xcom(first, "credential")
    assert registered() == sorted([xcom(first, "credential"), xcom(third, "credential")])
    assert Variable.get(variable, deserialize_json=True)["id"] == xcom(third, "credential")

    # A Variable this operator did not write fails the task with its name, before any registration.
    Variable.set(variable, "not json")
    fourth = run_dag(dag_once())
    assert fourth.state == "failed"
    assert len(registered()) == 2


def gip_emulator_secret(emu) -> str:
    return emu.langfuse_secret_key
