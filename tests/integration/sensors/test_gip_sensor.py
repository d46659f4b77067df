"""GipExperimentRunSensor in real DAGs (poke, reschedule, deferrable) against the emulator."""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk import DAG

from gip_airflow.hooks.gip import GipHook
from gip_airflow.sensors.gip import GipExperimentRunSensor
from tests.integration.operators.helpers import run_dag, ti_states, unique_dag_id, xcom

SEED_EXPERIMENT = "0195a8c0-0000-7000-8000-000000000002"
SEED_EVALUATOR = "0195a8c0-0000-7000-8000-000000000003"
START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def start_run(name: str) -> str:
    with GipHook() as hook:
        return hook.create_experiment_run(
            SEED_EXPERIMENT, {"evaluator_id": SEED_EVALUATOR, "display_name": f"sensor-test {name}"}
        ).id


def sensor_dag(run_id: str, **kwargs):
    with DAG(unique_dag_id("sensor"), schedule=None, start_date=START) as dag:
        GipExperimentRunSensor(
            task_id="wait",
            experiment_id=SEED_EXPERIMENT,
            run_id="{{ params.run_id }}",
            params={"run_id": run_id},
            **{"poke_interval": 0.2, "timeout": 60, **kwargs},
        )
    return dag


MODES = [
    {"mode": "poke"},
    {"mode": "reschedule"},
    {"deferrable": True},
]
MODE_IDS = ["poke", "reschedule", "deferrable"]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_sensor_waits_for_done(gip_env, mode):
    gip_env.set_run_speed(run_seconds=1.0)
    run_id = start_run("done")
    dag_run = run_dag(sensor_dag(run_id, **mode))
    assert dag_run.state == "success", ti_states(dag_run)
    run = xcom(dag_run, "wait")
    assert run["id"] == run_id and run["status"] == "DONE" and run["result_path"]
    assert xcom(dag_run, "wait", key="_link_GipExperimentRunLink").endswith(f"/runs/{run_id}")


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_sensor_fails_on_failed_run(gip_env, mode):
    gip_env.set_faults(run_failure_rate=1.0)
    dag_run = run_dag(sensor_dag(start_run("failed"), **mode))
    assert dag_run.state == "failed"


@pytest.mark.parametrize("mode", [{"mode": "poke"}, {"deferrable": True}], ids=["poke", "deferrable"])
def test_sensor_timeout_and_soft_fail(gip_env, mode):
    gip_env.set_run_speed(never_finish=True)
    run_id = start_run("never")
    failed = run_dag(sensor_dag(run_id, timeout=1.5, **mode))
    assert failed.state == "failed"
    skipped = run_dag(sensor_dag(run_id, timeout=1.5, soft_fail=True, **mode))
    assert ti_states(skipped)[("wait", -1)] == "skipped"


def test_sensor_waits_out_transient_errors(gip_env):
    gip_env.set_run_speed(run_seconds=1.0)
    run_id = start_run("flaky")
    # Every status read fails for a while; the hook's retries and the sensor's budget absorb it.
    gip_env.set_faults(error_rate=1.0, path_pattern=r"/runs/[^/]+$", max_faults=3)
    dag_run = run_dag(sensor_dag(run_id, mode="poke", max_consecutive_errors=5))
    assert dag_run.state == "success"
