"""End to end on the docker/ topology run as local processes: Airflow on the CeleryExecutor.

Each test starts api-server, scheduler, dag-processor, triggerer and one Celery worker against a
fresh PostgreSQL metadata database and Redis (see ``tests/e2e/topology.py``), triggers two runs
for two logical dates, and checks from the outside what the deployment promises:

* tasks ran on the Celery worker (the worker's own log names each task instance it executed, and
  each task instance's ``hostname`` is the worker's);
* waits were deferred to the triggerer (the task state went through ``deferred`` while a job of the
  triggerer held its trigger) and held no worker slot (with one slot, more task instances were
  running or deferred at once than the worker has slots);
* results landed in the PostgreSQL warehouse;
* every process was gone after the stop.

Worker concurrency is 1 on purpose: it makes "a deferred task holds no slot" observable.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.e2e.topology import (
    PG_ADMIN_DSN,
    REPO,
    AirflowTopology,
    RunObservation,
    postgres_conn_json,
    temporary_database,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("local_services")]

SMOKE_DAGS = REPO / "tests" / "e2e" / "dags"
SMOKE_DAG_ID = "gip_e2e_topology_smoke"
DAILY_DAG_ID = "gip_daily_trace_evaluation"
DAILY_DAG_FILE = REPO / "dags" / f"{DAILY_DAG_ID}.py"
LOGICAL_DATES = ("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
MB = 1024 * 1024


def _warehouse_rows(dbname: str) -> dict[str, int]:
    """Row count of every table in the warehouse database's user schemas."""
    dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={dbname}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        return {
            f"{schema}.{name}": conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0]
            for schema, name in tables
        }


def _run_and_observe(
    topo: AirflowTopology, dag_id: str, conf: dict[str, Any], timeout: float
) -> tuple[list[tuple[str, str]], RunObservation]:
    topo.wait_for_dags([dag_id], timeout=90)
    runs = [(dag_id, topo.trigger_dag(dag_id, date, conf=conf)["dag_run_id"]) for date in LOGICAL_DATES]
    return runs, topo.wait_for_runs(runs, timeout=timeout)


def _assert_celery_and_triggerer(
    topo: AirflowTopology, runs: list[tuple[str, str]], obs: RunObservation
) -> dict[str, Any]:
    """The checks shared by both tests; returns what they measured."""
    failed = {k: v["state"] for k, v in obs.runs.items() if v["state"] != "success"}
    assert not failed, f"runs not successful: {failed}; task states: {obs.states}"

    tis = [ti for dag_id, run_id in runs for ti in topo.task_instances(dag_id, run_id)]
    executed = [ti for ti in tis if ti["state"] in ("success", "failed")]
    assert executed, "no task instance ran"
    # Every task ran on the Celery worker: its hostname, its queue, and the worker's own log.
    assert {ti["hostname"] for ti in executed} == {"worker-1"}, [(t["task_id"], t["hostname"]) for t in tis]
    assert {ti["queue"] for ti in executed} == {"default"}
    ran_on_worker = {ti_id for _, ti_id in topo.celery_workloads()}
    missing = [ti["task_id"] for ti in executed if ti["id"] not in ran_on_worker]
    assert not missing, f"not in the Celery worker's log: {missing}"

    # Waits went to the triggerer: state 'deferred', trigger held by the triggerer's job.
    deferred = obs.deferred_tasks()
    assert deferred, f"no task was seen deferred; states: {obs.states}"
    assert all(obs.triggerer_hosts.get(key) == {"triggerer"} for key in deferred), obs.triggerer_hosts
    for dag_id, run_id, task_id, map_index in deferred:
        log = topo.task_log(dag_id, run_id, task_id, map_index=map_index)
        assert "Pausing task as DEFERRED" in log
        assert topo.task_log_files(dag_id, run_id, task_id, map_index=map_index)[-1].name.startswith(
            "attempt=1.log.trigger."
        ), "the triggerer wrote no log part for the deferred task"
    # ... and held no worker slot: more task instances were running or deferred at one moment
    # than the worker has slots.
    assert obs.max_in_flight() > topo.worker_concurrency, obs.samples
    return {
        "task_instances": len(executed),
        "deferred": len(deferred),
        "max_running_or_deferred": obs.max_in_flight(),
        "worker_slots": topo.worker_concurrency,
    }


def _assert_stopped(topo: AirflowTopology) -> None:
    assert topo.services_stopped_cleanly is True
    assert topo.session_processes() == []
    assert all(s.process is not None and s.process.returncode is not None for s in topo.services.values())
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (topo.db_name,)).fetchone()
    assert left is None, f"metadata database {topo.db_name} was not dropped"
    assert not topo.airflow_home.exists() or topo.keep_home


@pytest.mark.timeout(300)
def test_topology_smoke(e2e_report: Callable[[dict[str, Any]], None]) -> None:
    """Our own small DAG: worker task -> 6 s wait deferred to the triggerer -> warehouse insert."""
    t0 = time.monotonic()
    with temporary_database("gip_wh") as warehouse:
        topo = AirflowTopology(
            SMOKE_DAGS,
            extra_env={"AIRFLOW_CONN_GIP_WAREHOUSE": postgres_conn_json(warehouse)},
            worker_concurrency=1,
            startup_timeout=150,
        )
        with topo:
            memory_idle = topo.memory()["total"]
            runs, obs = _run_and_observe(topo, SMOKE_DAG_ID, {"wait_seconds": 6}, timeout=150)
            memory_after = topo.memory()["total"]
            measured = _assert_celery_and_triggerer(topo, runs, obs)

            dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={warehouse}")
            with psycopg.connect(dsn) as conn:
                rows = conn.execute(
                    "SELECT run_id, logical_date, start_host, record_host, waited_seconds"
                    " FROM e2e_smoke_results ORDER BY logical_date"
                ).fetchall()
            assert {r[0] for r in rows} == {run_id for _, run_id in runs}
            assert [r[1] for r in rows] == [dt.datetime.fromisoformat(d) for d in LOGICAL_DATES]
            assert {(r[2], r[3], r[4]) for r in rows} == {("worker-1", "worker-1", 6.0)}
        _assert_stopped(topo)
    e2e_report(
        {
            **{k: round(v, 1) for k, v in topo.timings.items()},
            "runs_seconds": round(obs.seconds, 1),
            "total_seconds": round(time.monotonic() - t0, 1),
            "processes": memory_after["processes"],
            "pss_idle_mb": round(memory_idle["pss"] / MB),
            "pss_after_runs_mb": round(memory_after["pss"] / MB),
            "rss_after_runs_mb": round(memory_after["rss"] / MB),
            **measured,
        }
    )


@pytest.mark.timeout(300)
def test_daily_evaluation_dag_on_celery(
    request: pytest.FixtureRequest, e2e_report: Callable[[dict[str, Any]], None]
) -> None:
    """The repo's daily evaluation DAG against the GIP emulator, on the Celery topology."""
    if not DAILY_DAG_FILE.exists():
        pytest.skip(f"{DAILY_DAG_FILE.relative_to(REPO)} does not exist yet")
    try:
        emulator = request.getfixturevalue("gip_emulator")
    except pytest.FixtureLookupError:
        pytest.skip("the gip_emulator fixture (gip_airflow/emulator/pytest_plugin.py) is not available yet")

    t0 = time.monotonic()
    with temporary_database("gip_wh") as warehouse:
        topo = AirflowTopology(
            REPO / "dags",
            extra_env={
                "AIRFLOW_CONN_GIP_DEFAULT": emulator.conn_json(),
                "AIRFLOW_CONN_GIP_WAREHOUSE": postgres_conn_json(warehouse),
            },
            worker_concurrency=1,
            startup_timeout=150,
        )
        with topo:
            runs, obs = _run_and_observe(topo, DAILY_DAG_ID, {}, timeout=180)
            memory = topo.memory()["total"]
            measured = _assert_celery_and_triggerer(topo, runs, obs)
            rows = _warehouse_rows(warehouse)
            assert sum(rows.values()) > 0, f"no results in the warehouse: {rows}"
        _assert_stopped(topo)
    e2e_report(
        {
            **{k: round(v, 1) for k, v in topo.timings.items()},
            "runs_seconds": round(obs.seconds, 1),
            "total_seconds": round(time.monotonic() - t0, 1),
            "pss_mb": round(memory["pss"] / MB),
            "rss_mb": round(memory["rss"] / MB),
            "warehouse_rows": json.dumps(rows),
            **measured,
        }
    )


def test_topology_rejects_unknown_service() -> None:
    with pytest.raises(ValueError, match="unknown services"):
        AirflowTopology(services=("api-server", "webserver"))
