"""End to end on the docker/ topology run as local processes: Airflow on the CeleryExecutor.

The module starts api-server, scheduler, dag-processor, triggerer and one Celery worker once,
against a fresh PostgreSQL metadata database and Redis (see ``tests/system/e2e/topology.py``), with the
repo's ``dags/`` and the smoke DAG of ``tests/system/e2e/dags``. The smoke test triggers two runs, the daily
evaluation DAG runs as a three-day backfill (then again, reprocessing the same days), and both check
from the outside what the deployment promises:

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

import ast
import datetime as dt
import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.system.e2e.topology import (
    PG_ADMIN_DSN,
    REPO,
    AirflowTopology,
    RunObservation,
    postgres_conn_json,
    services_unavailable,
    temporary_database,
)

pytestmark = pytest.mark.e2e

SMOKE_DAGS = REPO / "tests" / "system" / "e2e" / "dags"
SMOKE_DAG_ID = "gip_e2e_topology_smoke"
DAILY_DAG_ID = "gip_daily_trace_evaluation"
DAILY_DAG_FILE = REPO / "dags" / f"{DAILY_DAG_ID}.py"
LOGICAL_DATES = ("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
MB = 1024 * 1024


def _missing_project_modules(path: Path) -> list[str]:
    """``gip_airflow`` modules a DAG file imports that do not exist (yet)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    missing = []
    for module in sorted(m for m in modules if m.split(".")[0] == "gip_airflow"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(module)
    return missing


def _run_and_observe(
    topo: AirflowTopology,
    dag_id: str,
    conf: dict[str, Any],
    timeout: float,
    logical_dates: tuple[str, ...] = LOGICAL_DATES,
) -> tuple[list[tuple[str, str]], RunObservation]:
    topo.wait_for_dags([dag_id], timeout=90)
    runs = [(dag_id, topo.trigger_dag(dag_id, date, conf=conf)["dag_run_id"]) for date in logical_dates]
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

    summary = {
        (dag_id, run_id, r["task_id"], r["map_index"]): r
        for dag_id, run_id in runs
        for r in topo.task_summary(dag_id, run_id)
    }
    assert {r["executor"] for r in summary.values()} == {"CeleryExecutor"}
    # Waits went to the triggerer: state 'deferred', trigger held by the triggerer's job.
    deferred = obs.deferred_tasks()
    assert deferred, f"no task was seen deferred; states: {obs.states}"
    assert all(obs.triggerer_hosts.get(key) == {"triggerer"} for key in deferred), obs.triggerer_hosts
    for dag_id, run_id, task_id, map_index in deferred:
        log = topo.task_log(dag_id, run_id, task_id, map_index=map_index)
        assert "Pausing task as DEFERRED" in log
        assert summary[(dag_id, run_id, task_id, map_index)]["deferred"]
        files = topo.task_log_files(dag_id, run_id, task_id, map_index=map_index)
        assert any(".trigger." in f.name for f in files), "the triggerer wrote no log part for the task"
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


def _langfuse_conn_json(emulator: Any) -> str:
    public, secret = emulator.langfuse_auth
    return json.dumps(
        {"conn_type": "generic", "host": emulator.langfuse_base_url, "login": public, "password": secret}
    )


@dataclass
class E2E:
    """The module's topology and what the tests share."""

    topo: AirflowTopology
    warehouse: str
    emulator: Any | None
    started: float
    memory_idle: dict[str, int]


@pytest.fixture(scope="module")
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """One Celery topology for this module: the repo's dags/ plus the smoke DAG, emulator connections.

    Started once (start-up dominates the cost) and stopped by ``test_all_processes_stopped`` or,
    when that test is not selected, at teardown.
    """
    if services_unavailable():
        pytest.skip(f"e2e topology needs local PostgreSQL and Redis: {services_unavailable()}")
    t0 = time.monotonic()
    dags = tmp_path_factory.mktemp("e2e-dags")
    for folder in (REPO / "dags", SMOKE_DAGS):
        for path in folder.glob("*.py"):
            (dags / path.name).symlink_to(path)
    try:
        emulator = request.getfixturevalue("gip_emulator")
    except pytest.FixtureLookupError:
        emulator = None
    with temporary_database("gip_wh") as warehouse:
        env = {"AIRFLOW_CONN_GIP_WAREHOUSE": postgres_conn_json(warehouse)}
        if emulator is not None:
            env["AIRFLOW_CONN_GIP_DEFAULT"] = emulator.conn_json()
            env["AIRFLOW_CONN_LANGFUSE_DEFAULT"] = _langfuse_conn_json(emulator)
        topo = AirflowTopology(dags, extra_env=env, worker_concurrency=1, startup_timeout=150)
        with topo:
            yield E2E(topo, warehouse, emulator, t0, topo.memory()["total"])


@pytest.mark.timeout(240)
def test_topology_smoke(e2e: E2E, e2e_report: Callable[[dict[str, Any]], None]) -> None:
    """Our own small DAG: worker task -> 6 s wait deferred to the triggerer -> warehouse insert."""
    topo = e2e.topo
    runs, obs = _run_and_observe(topo, SMOKE_DAG_ID, {"wait_seconds": 6}, timeout=150)
    memory = topo.memory()["total"]
    measured = _assert_celery_and_triggerer(topo, runs, obs)

    dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={e2e.warehouse}")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT run_id, logical_date, start_host, record_host, waited_seconds"
            " FROM e2e_smoke_results ORDER BY logical_date"
        ).fetchall()
    assert {r[0] for r in rows} == {run_id for _, run_id in runs}
    assert [r[1] for r in rows] == [dt.datetime.fromisoformat(d) for d in LOGICAL_DATES]
    assert {(r[2], r[3], r[4]) for r in rows} == {("worker-1", "worker-1", 6.0)}
    e2e_report(
        {
            **{k: round(v, 1) for k, v in topo.timings.items()},
            "healthy_after": json.dumps(topo.healthy_after),
            "runs_seconds": round(obs.seconds, 1),
            "processes": memory["processes"],
            "pss_idle_mb": round(e2e.memory_idle["pss"] / MB),
            "rss_idle_mb": round(e2e.memory_idle["rss"] / MB),
            "pss_after_runs_mb": round(memory["pss"] / MB),
            "rss_after_runs_mb": round(memory["rss"] / MB),
            **measured,
        }
    )


@pytest.mark.timeout(420)
def test_backfill_three_days_rerun_adds_nothing(
    e2e: E2E, e2e_report: Callable[[dict[str, Any]], None]
) -> None:
    """The daily evaluation DAG on the Celery topology, as a real-scheduler backfill over three past days:
    tasks on the worker, waits deferred to the triggerer, three runs with three distinct and correct
    windows in the PostgreSQL warehouse; backfilling the same days again (reprocess) creates no GIP run
    and no duplicate row."""
    if e2e.emulator is None or _missing_project_modules(DAILY_DAG_FILE):
        pytest.skip("needs the emulator and the daily DAG")
    topo = e2e.topo
    topo.wait_for_dags([DAILY_DAG_ID], timeout=90)
    seoul = dt.timezone(dt.timedelta(hours=9))
    last = dt.datetime.now(seoul).replace(hour=23, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    fires = [last - dt.timedelta(days=d) for d in (2, 1, 0)]
    dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={e2e.warehouse}")

    def backfill(reprocess: str, days: int = 3) -> tuple[list[tuple[str, str]], RunObservation, float]:
        t0 = time.monotonic()
        body = {
            "dag_id": DAILY_DAG_ID,
            "from_date": fires[-days].isoformat(),
            "to_date": fires[-1].isoformat(),
            "reprocess_behavior": reprocess,
            "max_active_runs": 3,
        }
        backfill_id = topo.api("POST", "/api/v2/backfills", json=body)["id"]
        # A CronTriggerTimetable with an interval gives each run logical_date = its interval's start.
        starts = {(f - dt.timedelta(days=1)).astimezone(dt.UTC) for f in fires[-days:]}
        runs: list[tuple[str, str]] = []
        deadline = time.monotonic() + 180
        while len(runs) < days:
            assert time.monotonic() < deadline, f"backfill {backfill_id} created only {runs}"
            time.sleep(1)
            listed = topo.api("GET", f"/api/v2/dags/{DAILY_DAG_ID}/dagRuns", params={"limit": 100})
            runs = [
                (DAILY_DAG_ID, r["dag_run_id"])
                for r in listed["dag_runs"]
                if r["run_type"] == "backfill" and dt.datetime.fromisoformat(r["logical_date"]) in starts
            ]
        obs = topo.wait_for_runs(runs, timeout=300)
        failed = {k: v["state"] for k, v in obs.runs.items() if v["state"] != "success"}
        assert not failed, f"backfill runs failed: {failed}; {obs.states}"
        completed_by = time.monotonic() + 120
        while not topo.api("GET", f"/api/v2/backfills/{backfill_id}").get("completed_at"):
            assert time.monotonic() < completed_by, f"backfill {backfill_id} never completed"
            time.sleep(1)  # the scheduler marks a backfill completed shortly after its last run
        return runs, obs, time.monotonic() - t0

    def warehouse() -> tuple[list[tuple], list[tuple]]:
        with psycopg.connect(dsn) as conn:
            summary = conn.execute(
                "SELECT run_id, window_start, window_end, item_count FROM gip_trace_results_runs"
                " WHERE window_end = ANY(%s) ORDER BY window_start",
                ([f.astimezone(dt.UTC) for f in fires],),
            ).fetchall()
            counts = conn.execute(
                "SELECT run_id, COUNT(*), COUNT(DISTINCT row_number) FROM gip_trace_results"
                " WHERE run_id = ANY(%s) GROUP BY run_id ORDER BY run_id",
                ([r[0] for r in summary],),
            ).fetchall()
        return summary, counts

    gip_runs_before = len(e2e.emulator.runs())
    runs, obs, first_seconds = backfill("none")
    # Tasks ran on the Celery worker, the waits were deferred to the triggerer (no slot held).
    measured = _assert_celery_and_triggerer(topo, runs, obs)
    summary, counts = warehouse()
    assert [(r[1], r[2]) for r in summary] == [
        (f.astimezone(dt.UTC) - dt.timedelta(days=1), f.astimezone(dt.UTC)) for f in fires
    ]
    assert all(items > 0 for *_, items in summary)
    assert all(n == distinct for _, n, distinct in counts) and len(counts) == 3
    gip_runs = len(e2e.emulator.runs()) - gip_runs_before
    assert gip_runs == 3

    # Backfilling the last day again re-runs its (completed) DAG run: same run id, same GIP run.
    rerun, _, second_seconds = backfill("completed", days=1)
    assert set(rerun) <= set(runs), "reprocessing re-runs the existing DAG run"
    assert warehouse() == (summary, counts), "the re-run changed the warehouse"
    assert len(e2e.emulator.runs()) - gip_runs_before == 3, "the re-run started new GIP runs"
    e2e_report(
        {
            "backfill_seconds": round(first_seconds, 1),
            "rerun_seconds": round(second_seconds, 1),
            "gip_runs": gip_runs,
            "rows": sum(n for _, n, _ in counts),
            "pss_mb": round(topo.memory()["total"]["pss"] / MB),
            **measured,
        }
    )


@pytest.mark.timeout(120)
def test_all_processes_stopped(e2e: E2E, e2e_report: Callable[[dict[str, Any]], None]) -> None:
    """Stopping the topology leaves no process, no metadata database and no AIRFLOW_HOME behind."""
    t0 = time.monotonic()
    seen = e2e.topo.session_processes()
    assert len(seen) >= len(e2e.topo.services)
    e2e.topo.stop()
    assert all(not p.is_running() or p.status() == "zombie" for p in seen)
    _assert_stopped(e2e.topo)
    e2e_report(
        {
            "stop_seconds": round(time.monotonic() - t0, 1),
            "module_total_seconds": round(time.monotonic() - e2e.started, 1),
        }
    )


def test_topology_rejects_unknown_service() -> None:
    with pytest.raises(ValueError, match="unknown services"):
        AirflowTopology(services=("api-server", "webserver"))
