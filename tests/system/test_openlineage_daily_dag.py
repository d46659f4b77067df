"""OpenLineage: ``airflow dags test`` of the daily example DAG emits START and COMPLETE events with the
Langfuse traces as input and the PostgreSQL tables, named as common.sql names them, as output.

Runs in a subprocess: the OpenLineage listener decides at plugin load whether a transport is configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pendulum
import psycopg
import pytest

from tests.conftest import REPO

PG = "host=127.0.0.1 port=5432 user=postgres dbname=test"
DAG_ID = "gip_daily_trace_evaluation"


@pytest.fixture
def warehouse_db():
    name = f"gip_ol_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_daily_dag_emits_langfuse_inputs_and_postgres_outputs(airflow_db, gip_env, warehouse_db, tmp_path):
    events_file = tmp_path / "openlineage.jsonl"
    warehouse = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "login": "postgres",
        "schema": warehouse_db,
    }
    env = {
        **os.environ,
        "AIRFLOW_CONN_GIP_WAREHOUSE": json.dumps(warehouse),
        # [START openlineage_config]
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "gip-test",
        # [END openlineage_config]
    }
    firing = pendulum.now("UTC").subtract(days=1).replace(minute=0, second=0, microsecond=0)
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, firing.isoformat()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "OpenLineage method failed" not in done.stdout + done.stderr
    events = _events(events_file)

    def task_events(task_id: str, event_type: str) -> list[dict]:
        return [
            e for e in events if e["eventType"] == event_type and e["job"]["name"] == f"{DAG_ID}.{task_id}"
        ]

    # The evaluation: START names the Langfuse traces (host, project, window); COMPLETE adds the run.
    (start,) = task_events("evaluate", "START")[:1]
    complete = task_events("evaluate", "COMPLETE")[-1]
    langfuse_host = gip_env.base_url.split("://", 1)[1]
    for event in (start, complete):
        (source,) = event["inputs"]
        assert source["namespace"] == f"langfuse://{langfuse_host}"
        assert source["name"] == "airflow-daily-traces/traces"
        selection = source["facets"]["gipLangfuseSelection"]
        assert selection["experimentType"] == "langfuse_trace"
        window = pendulum.parse(selection["windowEnd"]) - pendulum.parse(selection["windowStart"])
        assert window.in_hours() == 24
        facet = event["run"]["facets"]["gipExperimentRun"]
        assert facet["judgeModel"] == "openai/gpt-4" and facet["evaluatorName"] == "daily-trace-quality"
    run_facet = complete["run"]["facets"]["gipExperimentRun"]
    assert run_facet["runStatus"] == "DONE" and run_facet["runId"]
    assert run_facet["totalTokens"] > 0
    assert run_facet["consoleUrl"].endswith(f"/runs/{run_facet['runId']}")

    # The load: the run's result in; the tables out, named like common.sql's PostgresHook names them.
    load_start = task_events("load_results", "START")[0]
    load = task_events("load_results", "COMPLETE")[-1]
    (result,) = load["inputs"]
    assert result["name"].endswith(f"/runs/{run_facet['runId']}") and result["namespace"].startswith("gip://")
    outputs = {o["name"]: o for o in load["outputs"]}
    assert set(outputs) == {
        f"{warehouse_db}.public.gip_trace_results",
        f"{warehouse_db}.public.gip_trace_results_runs",
    }
    assert {o["namespace"] for o in load["outputs"]} == {"postgres://127.0.0.1:5432"}
    assert {o["name"] for o in load_start["outputs"]} == set(outputs)
    results = outputs[f"{warehouse_db}.public.gip_trace_results"]
    stats = results["outputFacets"]["outputStatistics"]
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={warehouse_db}") as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM gip_trace_results").fetchone()
    assert stats["rowCount"] == rows > 0 and stats["size"] > 0
    columns = {f["name"]: f["type"] for f in results["facets"]["schema"]["fields"]}
    assert columns["passed"] == "boolean" and columns["score_value"] == "double precision"
    # what the SQL hook itself says (the same names a SQL operator on this table would emit)
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import Connection

    conn = Connection(conn_id="wh", **warehouse)
    info = PostgresHook(postgres_conn_id="wh").get_openlineage_database_info(conn)
    assert f"{info.scheme}://{info.authority}" == "postgres://127.0.0.1:5432"
