"""The example DAGs: they import cleanly and fast, make no API calls at parse time, and run end to end
against the emulator with a SQLite and a PostgreSQL warehouse."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pendulum
import psycopg
import pytest

from tests.conftest import REPO
from tests.integration.operators.helpers import run_dag, ti_states

DAGS = REPO / "dags"
EXAMPLE_DAG_IDS = {
    "gip_daily_trace_evaluation",
    "gip_refresh_dataset",
    "gip_dataset_evaluation_on_asset",
    "gip_model_comparison",
    "gip_observation_evaluation_after_etl",
}
PG = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture(scope="module")
def dagbag(airflow_db, gip_emulator):
    from airflow.dag_processing.dagbag import DagBag

    before = gip_emulator.stats()["requests_by_group"].get("gip", 0)
    bag = DagBag(dag_folder=str(DAGS))
    assert gip_emulator.stats()["requests_by_group"].get("gip", 0) == before, "a DAG called GIP at parse time"
    return bag


def test_every_dag_imports_with_docs(dagbag):
    assert dagbag.import_errors == {}
    assert EXAMPLE_DAG_IDS <= set(dagbag.dag_ids)
    for dag_id in EXAMPLE_DAG_IDS:
        dag = dagbag.get_dag(dag_id)
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no real doc_md"
        assert "example" in dag.tags


def test_parsing_does_no_io_and_is_measured(airflow_db):
    """Each file parsed in an interpreter warmed up like the dag-processor's: parsing opens no network
    connection and starts no process (what makes top-level code slow and fragile); times are printed."""
    code = (
        "import json, sys, time, runpy\n"
        "import airflow.sdk, gip_airflow.operators.gip, gip_airflow.transfers.gip_to_sql\n"
        "from airflow.providers.common.sql.operators.sql import SQLThresholdCheckOperator\n"
        "with airflow.sdk.DAG('warm_up', schedule=None): SQLThresholdCheckOperator(task_id='t', sql='x',"
        " min_threshold=0, max_threshold=1, conn_id='c')\n"
        "io = []\n"
        "sys.addaudithook(lambda e, a: io.append(e) if e in ('socket.connect', 'subprocess.Popen') else None)\n"
        "for path in sys.argv[1:]:\n"
        "    io.clear(); before = len(sys.modules); t = time.perf_counter(); runpy.run_path(path)\n"
        "    print(json.dumps([path, time.perf_counter() - t, len(sys.modules) - before, io]))\n"
    )
    paths = [str(p) for p in sorted(DAGS.glob("gip_*.py"))]
    out = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120, check=True
    )
    for line in out.stdout.strip().splitlines()[-len(paths) :]:
        path, seconds, new_modules, io = json.loads(line)
        print(f"parse {Path(path).name}: {seconds * 1000:.0f} ms, {new_modules} modules imported")
        assert io == [], f"{Path(path).name} does I/O at parse time: {io}"


def test_daily_dag_matches_the_cron_config(dagbag):
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    # The scheduler's view of the timetable (the SDK object only describes it).
    timetable = decode_timetable(encode_timetable(dagbag.get_dag("gip_daily_trace_evaluation").timetable))
    start = pendulum.datetime(2026, 11, 20, tz="UTC")
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(start, start),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    fire = info.run_after.in_timezone("Asia/Seoul")
    assert (fire.hour, fire.minute) == (23, 0)
    assert info.data_interval.end - info.data_interval.start == pendulum.duration(days=1)
    assert info.data_interval.end == info.run_after


@pytest.fixture
def example_env(gip_env, monkeypatch):
    """The emulator as GIP and Langfuse (operators' conftest ``gip_env``), plus the warehouse connection."""

    def use_warehouse(conn: dict) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_WAREHOUSE", json.dumps(conn))

    return use_warehouse


@pytest.fixture
def sqlite_warehouse(example_env, tmp_path) -> Path:
    path = tmp_path / "warehouse.sqlite"
    example_env({"conn_type": "sqlite", "host": str(path)})
    return path


@pytest.fixture
def postgres_warehouse(example_env):
    name = f"gip_dags_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    example_env(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": name}
    )
    try:
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def daily_firing(days_ago: int) -> pendulum.DateTime:
    """The daily DAG's 23:00 Asia/Seoul firing ``days_ago`` days before today (always in the past)."""
    today = pendulum.now("Asia/Seoul").replace(hour=23, minute=0, second=0, microsecond=0)
    return today.subtract(days=days_ago).in_timezone("UTC")


def fresh(dagbag, dag_id: str):
    """The DAG parsed anew from its file: ``dag.test(run_conf=...)`` leaves the conf in the DAG's params."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=dagbag.get_dag(dag_id).fileloc).get_dag(dag_id)


def _run_example(dagbag, dag_id: str, **kwargs):
    dag_run = run_dag(fresh(dagbag, dag_id), **kwargs)
    states = ti_states(dag_run)
    assert dag_run.state == "success", states
    return dag_run


def _summary(query, table: str) -> list[tuple]:
    return query(
        f"SELECT run_id, item_count, passed_count, pass_rate, window_start, window_end FROM {table}_runs"
    )


def test_daily_dag_backfill_days_sqlite(dagbag, sqlite_warehouse, gip_env):
    """Three past days (as a backfill), each evaluated once with its own window and loaded once."""
    fires = [daily_firing(d) for d in (3, 2, 1)]
    runs_before = len(gip_env.runs())
    for fire in fires:
        _run_example(dagbag, "gip_daily_trace_evaluation", logical_date=fire)

    def query(sql: str) -> list[tuple]:
        with sqlite3.connect(sqlite_warehouse) as db:
            return db.execute(sql).fetchall()

    summary = _summary(query, "gip_trace_results")
    windows = sorted((pendulum.parse(r[4]), pendulum.parse(r[5])) for r in summary)
    expected = [(f.subtract(days=1), f) for f in fires]
    assert [(s.int_timestamp, e.int_timestamp) for s, e in windows] == [
        (s.int_timestamp, e.int_timestamp) for s, e in expected
    ]
    assert all(r[1] > 0 for r in summary), "every day has traces in the seed"
    rows = query("SELECT run_id, COUNT(*), COUNT(DISTINCT row_number) FROM gip_trace_results GROUP BY run_id")
    assert len(rows) == 3 and all(count == distinct for _, count, distinct in rows)
    assert len(gip_env.runs()) - runs_before == 3


def test_daily_dag_quality_gate_fails_readably(dagbag, sqlite_warehouse, gip_env):
    fire = daily_firing(2)
    dag_run = run_dag(
        fresh(dagbag, "gip_daily_trace_evaluation"), logical_date=fire, run_conf={"min_mean_score": 1.99}
    )
    states = ti_states(dag_run)
    assert dag_run.state == "failed"
    assert states[("load_results", -1)] == "success"
    assert states[("gate_mean_score", -1)] == "failed"
    assert states[("gate_pass_rate", -1)] == "success"


def test_daily_dag_postgres_warehouse(dagbag, postgres_warehouse):
    fire = daily_firing(1)
    _run_example(dagbag, "gip_daily_trace_evaluation", logical_date=fire)
    with psycopg.connect(postgres_warehouse) as db:
        (items,) = db.execute("SELECT SUM(item_count) FROM gip_trace_results_runs").fetchone()
        (rows,) = db.execute("SELECT COUNT(*) FROM gip_trace_results").fetchone()
        (passed_type,) = db.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'gip_trace_results' AND column_name = 'passed'"
        ).fetchone()
    assert items == rows > 0
    assert passed_type == "boolean"


def test_model_comparison_postgres(dagbag, postgres_warehouse, gip_env):
    dag_run = _run_example(dagbag, "gip_model_comparison")
    with psycopg.connect(postgres_warehouse) as db:
        summary = db.execute(
            "SELECT display_name, item_count, mean_score_value FROM gip_model_comparison_results_runs"
        ).fetchall()
    models = {name.split(" | ")[0] for name, _, _ in summary}
    assert models == {
        "anthropic/claude-3-sonnet-20240229",
        "anthropic/claude-3-opus-20240229",
        "openai/gpt-4",
    }
    assert len({mean for _, _, mean in summary}) > 1, "the stand-in models must differ"
    from tests.integration.operators.helpers import xcom

    report = xcom(dag_run, "report")
    assert [r["mean_score"] for r in report] == sorted((r["mean_score"] for r in report), reverse=True)


def test_dataset_dag_on_asset_syncs_scores(dagbag, sqlite_warehouse, gip_env):
    dag = dagbag.get_dag("gip_dataset_evaluation_on_asset")
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [
        "langfuse://datasets/JSONL_samples-plan_suggestion_dataset_v2"
    ]
    _run_example(dagbag, "gip_refresh_dataset")
    score_name = f"airflow_test_{uuid.uuid4().hex[:6]}"
    _run_example(dagbag, "gip_dataset_evaluation_on_asset", run_conf={"score_name": score_name})
    import httpx

    scores = httpx.get(
        f"{gip_env.base_url}/api/public/scores",
        params={"name": score_name, "limit": 100},
        auth=(gip_env.langfuse_public_key, gip_env.langfuse_secret_key),
    ).json()
    with sqlite3.connect(sqlite_warehouse) as db:
        (items,) = db.execute("SELECT item_count FROM gip_dataset_results_runs").fetchone()
    assert 0 < scores["meta"]["totalItems"] <= items
    assert {s["dataType"] for s in scores["data"]} == {"BOOLEAN"}


def test_observation_dag_sqlite(dagbag, sqlite_warehouse, gip_env):
    fire = pendulum.now("UTC").replace(minute=0, second=0, microsecond=0)
    fire = fire.subtract(hours=fire.hour % 6 + 6)
    _run_example(dagbag, "gip_observation_evaluation_after_etl", logical_date=fire)
    with sqlite3.connect(sqlite_warehouse) as db:
        (count, start, end) = db.execute(
            "SELECT item_count, window_start, window_end FROM gip_observation_results_runs"
        ).fetchone()
    assert pendulum.parse(end) - pendulum.parse(start) == pendulum.duration(hours=6)
    assert count > 0
