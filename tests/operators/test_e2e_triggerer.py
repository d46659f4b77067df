"""End to end: a deferred GipStartExperimentRunOperator completes through a real ``airflow triggerer``.

Uses the shared local topology (``tests/e2e/topology.py``: api-server, scheduler, dag-processor,
triggerer and a Celery worker on local PostgreSQL + Redis) and a dedicated emulator whose API key and
Langfuse secret key are recognisable, so the real task logs (written with Airflow's secrets masking
active) can be grepped for leaks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gip_airflow.emulator.pytest_plugin import start_emulator
from tests.e2e.topology import AirflowTopology, services_unavailable

pytestmark = pytest.mark.e2e

LF_SECRET = "sk-lf-E2ELEAK-5d2b7e91"
API_KEY = "gip-E2ELEAK-api-key-0c4f"
DAG_ID = "gip_e2e_operators"

DAG_FILE = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator, GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator, GipStartExperimentRunOperator,
)
from gip_airflow.sensors.gip import GipExperimentRunSensor


@dag(dag_id="gip_e2e_operators", schedule=None, start_date=pendulum.datetime(2025, 3, 1), catchup=False)
def gip_e2e_operators():
    cred = GipCreateLangfuseCredentialOperator(
        task_id="credential", alias="e2e", langfuse_conn_id="langfuse_default"
    )
    GipCreateLangfuseCredentialOperator(
        task_id="credential_templated", alias="e2e-templated", base_url="{{ conn.langfuse_default.host }}",
        public_key="{{ conn.langfuse_default.login }}", private_key="{{ var.value.langfuse_secret }}",
    )
    exp = GipCreateExperimentOperator(
        task_id="experiment", name="e2e {{ run_id }}", experiment_type="langfuse_dataset",
        config={"integrated_service_credential_id": cred.output, "dataset_name": "qa-general-knowledge"},
    )
    judge = GipCreateEvaluatorOperator(
        task_id="evaluator", name="e2e-judge", metric={"type": "bool"},
        evaluation_config={"judge_model_seq_id": 19, "judge_model_public_id": "openai/gpt-4",
                           "judge_prompt": "Answer <rationale>..</rationale><rating>true|false</rating>."},
    )
    run = GipStartExperimentRunOperator(
        task_id="run", experiment_id=exp.output, evaluator_id=judge.output,
        deferrable=True, poll_interval=1, timeout=120,
    )
    GipExperimentRunSensor(
        task_id="sensor", experiment_id=exp.output, run_id=run.output, deferrable=True,
        poke_interval=1, timeout=60,
    )


gip_e2e_operators()
"""


@pytest.mark.timeout(300)
def test_deferred_run_completes_in_real_triggerer(tmp_path: Path):
    reason = services_unavailable()
    if reason:
        pytest.skip(f"e2e topology needs local PostgreSQL and Redis: {reason}")
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / f"{DAG_ID}.py").write_text(DAG_FILE)
    emulator = start_emulator("--api-key", API_KEY, "--langfuse-secret-key", LF_SECRET, "--run-seconds", "6")
    try:
        env = {
            "AIRFLOW_CONN_GIP_DEFAULT": emulator.conn_json(),
            "AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(
                {
                    "conn_type": "generic",
                    "host": emulator.base_url,
                    "login": emulator.langfuse_public_key,
                    "password": LF_SECRET,
                }
            ),
            "AIRFLOW_VAR_LANGFUSE_SECRET": LF_SECRET,
        }
        with AirflowTopology(
            tmp_path / "dags", extra_env=env, worker_concurrency=1, startup_timeout=150
        ) as topo:
            topo.wait_for_dags([DAG_ID], timeout=90)
            started = time.monotonic()
            run_id = topo.trigger_dag(DAG_ID)["dag_run_id"]
            obs = topo.wait_for_runs([(DAG_ID, run_id)], timeout=150)
            wall = time.monotonic() - started
            assert obs.runs[(DAG_ID, run_id)]["state"] == "success", obs.states

            # The run waited in the triggerer, not in a worker slot; the sensor then found it DONE at
            # its first look and needed no deferral.
            key = (DAG_ID, run_id, "run", -1)
            assert "deferred" in obs.states[key], obs.states
            assert obs.triggerer_hosts.get(key) == {"triggerer"}, obs.triggerer_hosts
            files = topo.task_log_files(DAG_ID, run_id, "run")
            assert any(".trigger." in f.name for f in files), files
            trigger_log = "".join(f.read_text(errors="replace") for f in files if ".trigger." in f.name)
            assert "status DONE" in trigger_log
            assert obs.states[(DAG_ID, run_id, "sensor", -1)][-1] == "success"
            final = topo.api(
                "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/run/xcomEntries/run"
            )["value"]
            final = json.loads(final) if isinstance(final, str) else final
            assert final["status"] == "DONE"

            # The extra link, as the API server (UI) serves it.
            links = topo.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/run/links")
            url = json.dumps(links)
            assert f"/evals/experiments/{final['experiment_id']}/runs/{final['id']}" in url, links

            # Exactly one evaluation was paid for.
            gip_runs = [r for r in emulator.runs() if r["display_name"].startswith(f"airflow/{DAG_ID}/run/")]
            assert len(gip_runs) == 1 and gip_runs[0]["status"] == "DONE"

            # No secret in any task log, triggerer log part or service log.
            logs = [p for p in topo.airflow_home.rglob("*") if p.is_file() and p.suffix != ".pid"]
            logs = [p for p in logs if "logs" in p.parts or "services" in p.parts]
            assert logs
            for path in logs:
                text = path.read_text(errors="replace")
                for secret in (LF_SECRET, API_KEY):
                    assert secret not in text, f"secret in {path}"
            print(f"\n[measure] e2e: trigger -> success {wall:.1f} s (GIP run 6 s); states {obs.states}")
    finally:
        emulator.stop()
