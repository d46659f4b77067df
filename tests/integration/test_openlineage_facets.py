"""The OpenLineage facet methods against the emulator: dataset inputs, the sensor, SQLite outputs, failures."""

from __future__ import annotations

import json
import uuid

import pytest

from gip_airflow.hooks.gip import GipHook
from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.sensors.gip import GipExperimentRunSensor
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator
from gip_airflow_emulator.defaults import DEFAULT_RUN_SECONDS
from tests.integration.operators.conftest import BOOL_METRIC, DATASET, EVALUATION_CONFIG


@pytest.fixture
def dataset_experiment(gip_conn):
    """A langfuse_dataset experiment and an evaluator, created through the hook."""
    with GipHook() as hook:
        credential = hook.create_langfuse_credential(
            {
                "alias": f"ol-{uuid.uuid4().hex[:6]}",
                "base_url": gip_conn.base_url,
                "public_key": gip_conn.langfuse_public_key,
                "private_key": gip_conn.langfuse_secret_key,
            }
        )
        experiment = hook.create_experiment(
            {
                "name": f"ol-{uuid.uuid4().hex[:6]}",
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": credential.id, "dataset_name": DATASET},
            }
        )
        evaluator = hook.create_evaluator(
            {
                "name": f"ol-{uuid.uuid4().hex[:6]}",
                "metric": BOOL_METRIC,
                "evaluation_config": EVALUATION_CONFIG,
            }
        )
    return credential, experiment, evaluator


def test_dataset_experiment_start_facets(dataset_experiment, gip_conn):
    _, experiment, evaluator = dataset_experiment
    op = GipStartExperimentRunOperator(task_id="run", experiment_id=experiment.id, evaluator_id=evaluator.id)
    lineage = op.get_openlineage_facets_on_start()
    (source,) = lineage.inputs
    assert source.namespace == f"langfuse://{gip_conn.base_url.split('://', 1)[1]}"
    assert source.name == DATASET
    assert source.facets["gipLangfuseSelection"].experimentType == "langfuse_dataset"
    facet = lineage.run_facets["gipExperimentRun"]
    assert (facet.experimentId, facet.experimentName, facet.evaluatorName) == (
        experiment.id,
        experiment.name,
        evaluator.name,
    )
    assert facet.judgeModel == EVALUATION_CONFIG["judge_model_public_id"]
    assert facet.runId is None and facet.totalTokens is None  # not started yet


def test_failure_facets_for_a_missing_experiment_do_not_raise(gip_conn):
    op = GipStartExperimentRunOperator(task_id="run", experiment_id="no-such-experiment", evaluator_id="nope")
    lineage = op.get_openlineage_facets_on_failure(None)
    assert lineage.inputs == []
    assert lineage.run_facets["gipExperimentRun"].experimentId == "no-such-experiment"


@pytest.fixture
def quick_runs(gip_conn):
    gip_conn.set_run_speed(run_seconds=0.1, never_finish=False)
    yield gip_conn
    gip_conn.set_run_speed(run_seconds=DEFAULT_RUN_SECONDS, never_finish=False)


def test_sensor_facets_name_the_run_and_its_usage(quick_runs):
    run = quick_runs.synthetic_run(rows=5, row_bytes=100, display_name="sensor lineage")
    sensor = GipExperimentRunSensor(
        task_id="wait", experiment_id=run["experiment_id"], run_id=run["id"], poke_interval=0.2
    )
    start = sensor.get_openlineage_facets_on_start().run_facets["gipExperimentRun"]
    assert start.runId == run["id"] and start.experimentId == run["experiment_id"]
    done = sensor.poke({})  # type: ignore[arg-type]
    assert done
    facet = sensor.get_openlineage_facets_on_complete(None).run_facets["gipExperimentRun"]
    assert facet.runStatus == "DONE"
    assert facet.totalTokens == run["aggregated_result"]["total_usage"]["total_tokens"]


def test_sqlite_load_facets(gip_conn, monkeypatch, tmp_path):
    path = tmp_path / "wh.db"
    monkeypatch.setenv("AIRFLOW_CONN_WH_OL", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    op = GipToSqlOperator(
        task_id="load", experiment_id="exp-1", run_id="run-1", conn_id="wh_ol", table="results"
    )
    lineage = op.get_openlineage_facets_on_start()
    (source,) = lineage.inputs
    assert source.namespace == f"gip://{gip_conn.base_url.split('://', 1)[1]}"
    assert source.name == f"{gip_conn.workspace_id}/experiments/exp-1/runs/run-1"
    assert [(o.namespace, o.name) for o in lineage.outputs] == [
        (f"sqlite://{path}", "results"),
        (f"sqlite://{path}", "results_runs"),
    ]
    columns = {f.name: f.type for f in lineage.outputs[0].facets["schema"].fields}
    assert columns["passed"] == "BOOLEAN" and "score_value" in columns
    assert lineage.outputs[0].outputFacets == {}  # statistics only once loaded
