"""Reliability on the real CeleryExecutor topology (scheduler, dag-processor, triggerer, api-server,
Celery worker as local processes; see tests/system/e2e/topology.py), against one emulator whose API key,
Cognito password and Langfuse secret key are recognisable strings.

* Killed tasks: the task process is SIGKILLed while it waits for the GIP run, while it downloads the
  result CSV, and in the middle of the warehouse COPY. Airflow's retry must reuse the run (one GIP run)
  and the warehouse must hold exactly one complete copy.
* (A real ``airflow triggerer`` holding many deferred waits on this topology is measured in
  tests/perf/triggerer/test_triggerer_topology.py.)
* Every operator and the deferrable sensor in one DAG: the run waits in the triggerer, one GIP run is
  paid for, the console link is served.
* Secrets: every example DAG (and a factory DAG, the operators DAG above, and a DAG whose key is
  wrong) runs with Cognito auth (so JWTs exist) or the API key; then every task and service log, every table of the metadata
  database (XComs, rendered template fields, ...) and of the warehouse is searched for the key, the
  password, any JWT the emulator issued and the Langfuse secret key: zero hits.

One topology serves the module (start-up dominates). CI: 16 deferred waits; GIP_RELIABILITY_FULL=1: 500
(about half an hour on a 2-core machine: every wait is a task that a worker starts and later resumes).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from gip_airflow.transfers._sql import FLAVOURS, ddl
from gip_airflow_emulator.pytest_plugin import GipEmulator, start_emulator
from tests.integration.reliability.conftest import size
from tests.system.e2e.topology import (
    PG_ADMIN_DSN,
    REPO,
    AirflowTopology,
    postgres_conn_json,
    services_unavailable,
    temporary_database,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

API_KEY = "gip-RELLEAK-api-key-5e1f0b"
PASSWORD = "RELLEAK-cognito-password-8a2c"
LANGFUSE_SECRET = "sk-lf-RELLEAK-3c9d7e"
WRONG_KEY = "gip-RELLEAK-wrong-key-77aa"
DEFERRED_WAITS = size(16, 500)
#: Bound of each phase of the triggerer test (deferring all waits, finishing them), seconds.
TRIGGER_PHASE_LIMIT = size(600, 3000)
#: Status poll interval of the held waits: 8 polls/s in CI, 100/s at full size (the default poll interval,
#: 30 s, gives 17/s for 500 waits). test_triggerer_load.py polls 500 waits every 2 s in one loop.
TRIGGER_POLL_SECONDS = size(2, 5)
WAREHOUSE_TABLE = "killed_results"

KILLED_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

with DAG(
    "rel_killed",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=1)},
):
    run = GipStartExperimentRunOperator(
        task_id="evaluate",
        experiment_id="{{ dag_run.conf['experiment_id'] }}",
        evaluator_id="{{ dag_run.conf['evaluator_id'] }}",
        gip_conn_id="gip_apikey",
        deferrable=False,
        poll_interval=0.5,
        timeout=600,
    )
    GipToSqlOperator(
        task_id="load",
        experiment_id="{{ dag_run.conf['experiment_id'] }}",
        run_id=run.output,
        conn_id="gip_warehouse",
        table="%(table)s",
        gip_conn_id="gip_apikey",
        tmp_dir="%(tmp_dir)s",
    )
"""

TRIGGER_LOAD_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, get_current_context, task

from gip_airflow.sensors.gip import GipExperimentRunSensor

# Deferred task instances count against max_active_tasks (default 16): allow all of them at once.
with DAG(
    "rel_trigger_load",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1),
    catchup=False,
    max_active_tasks=1000,
):

    @task
    def run_ids() -> list[str]:
        return list(get_current_context()["dag_run"].conf["run_ids"])

    GipExperimentRunSensor.partial(
        task_id="wait",
        experiment_id="{{ dag_run.conf['experiment_id'] }}",
        gip_conn_id="gip_apikey",
        deferrable=True,
        poke_interval=%(poll)d,
        timeout=%(timeout)d,
    ).expand(run_id=run_ids())
"""

#: Every operator and the sensor, the run deferred to the triggerer (moved here from its own topology).
OPERATORS_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag

from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator, GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator, GipStartExperimentRunOperator,
)
from gip_airflow.sensors.gip import GipExperimentRunSensor


@dag(dag_id="rel_operators", schedule=None, start_date=pendulum.datetime(2025, 3, 1), catchup=False)
def rel_operators():
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


rel_operators()
"""

WRONG_KEY_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from gip_airflow.operators.gip import GipCreateExperimentOperator

with DAG("rel_wrong_key", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False,
         default_args={"retries": 2}):
    GipCreateExperimentOperator(
        task_id="experiment",
        name="never created",
        experiment_type="langfuse_dataset",
        config={"integrated_service_credential_id": "c", "dataset_name": "qa-general-knowledge"},
        gip_conn_id="gip_wrongkey",
    )
"""


@dataclass
class Rel:
    topo: AirflowTopology
    emu: GipEmulator
    warehouse: str
    tmp_dir: Path
    preset: dict[str, str]
    gc_probe_dir: Path
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def warehouse_dsn(self) -> str:
        return PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={self.warehouse}")

    def wh(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.warehouse_dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()


def _langfuse_conn(emu: GipEmulator) -> str:
    return json.dumps(
        {
            "conn_type": "generic",
            "host": emu.base_url,
            "login": emu.langfuse_public_key,
            "password": LANGFUSE_SECRET,
        }
    )


def _factory_spec(path: Path, preset: dict[str, str]) -> None:
    entry = {
        "dag_id": "rel_factory_traces",
        "schedule": "0 0 * * *",
        "timezone": "UTC",
        "window": "PT24H",
        "paused_on_creation": False,
        "poll_interval": 2,
        "retries": 1,
        "evaluator_id": preset["evaluator"],
        "experiment": {
            "name": "rel factory traces",
            "type": "langfuse_trace",
            "config": {"integrated_service_credential_id": preset["credential"], "max_trace_count": 10},
        },
        "run_name": "rel-factory",
        "warehouse_conn_id": "gip_warehouse",
        "warehouse_table": "gip_factory_results",
    }
    path.write_text(json.dumps({"version": 1, "dags": [entry]}))


@contextmanager
def reliability_topology(base: Path, gc_probe: Path | None = None) -> Iterator[Rel]:
    """The topology, emulator and warehouse these tests share; ``gc_probe``: a sitecustomize folder that
    makes every service process log its garbage-collection pauses."""
    reason = services_unavailable()
    if reason:
        pytest.skip(f"the topology needs local PostgreSQL and Redis: {reason}")
    dags, tmp_dir, gc_probe_dir = base / "dags", base / "downloads", base / "gc"
    for folder in (dags, tmp_dir, gc_probe_dir):
        folder.mkdir()
    for path in (REPO / "dags").glob("*.py"):
        (dags / path.name).symlink_to(path)
    (dags / "rel_killed.py").write_text(KILLED_DAG % {"table": WAREHOUSE_TABLE, "tmp_dir": tmp_dir})
    (dags / "rel_trigger_load.py").write_text(
        TRIGGER_LOAD_DAG % {"timeout": 2 * TRIGGER_PHASE_LIMIT, "poll": TRIGGER_POLL_SECONDS}
    )
    (dags / "rel_wrong_key.py").write_text(WRONG_KEY_DAG)
    (dags / "rel_operators.py").write_text(OPERATORS_DAG)
    emu = start_emulator(
        "--api-key",
        API_KEY,
        "--password",
        PASSWORD,
        "--langfuse-secret-key",
        LANGFUSE_SECRET,
        "--run-seconds",
        "2",
    )
    try:
        seed = emu.info()["seed"]
        preset = {
            "credential": seed["credentials"][0],
            "experiment": seed["experiments"][0],
            "evaluator": seed["evaluators"][0],
        }
        _factory_spec(base / "spec.json", preset)
        with temporary_database("gip_relwh") as warehouse:
            env = {
                # Cognito for the example DAGs (so JWTs exist), the API key for the test DAGs.
                "AIRFLOW_CONN_GIP_DEFAULT": emu.conn_json(auth_type="cognito"),
                "AIRFLOW_CONN_GIP_APIKEY": emu.conn_json(retry_backoff=0.2),
                "AIRFLOW_CONN_GIP_WRONGKEY": emu.conn_json(password=WRONG_KEY),
                "AIRFLOW_CONN_LANGFUSE_DEFAULT": _langfuse_conn(emu),
                "AIRFLOW_VAR_LANGFUSE_SECRET": LANGFUSE_SECRET,
                "AIRFLOW_CONN_GIP_WAREHOUSE": postgres_conn_json(warehouse),
                "GIP_AUTO_EVALUATIONS_SPEC": str(base / "spec.json"),
                "AIRFLOW__TRIGGERER__CAPACITY": "1000",
                "PYTHONPATH": os.pathsep.join([*([str(gc_probe)] if gc_probe else []), str(REPO)]),
                "GIP_GC_PROBE_DIR": str(gc_probe_dir),
            }
            topo = AirflowTopology(
                dags, extra_env=env, worker_concurrency=2, parallelism=8, startup_timeout=180
            )
            with topo:
                yield Rel(topo, emu, warehouse, tmp_dir, preset, gc_probe_dir)
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rel]:
    with reliability_topology(tmp_path_factory.mktemp("rel-topology")) as topology:
        yield topology


# ---------------------------------------------------------------------------------------------
# Killed tasks
# ---------------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One task to SIGKILL in one DAG run, as soon as it runs and ``ready()`` holds."""

    name: str
    run_id: str
    task_id: str
    ready: Callable[[], bool]
    after: Callable[[], None] = lambda: None
    killed: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)


def _kill_all(rel: Rel, kills: list[Kill], timeout: float = 400) -> None:
    """Watch every planned kill at once, one thread each (task state every 0.25 s, readiness every 10 ms)."""
    errors: list[BaseException] = []

    def watch(k: Kill) -> None:
        deadline, refreshed = time.monotonic() + timeout, 0.0
        try:
            while k.killed is None:
                if time.monotonic() - refreshed > 0.25:
                    refreshed = time.monotonic()
                    tis = {ti["task_id"]: ti for ti in rel.topo.task_instances("rel_killed", k.run_id)}
                    k.state = tis.get(k.task_id) or {}
                    assert k.state.get("state") not in ("success", "failed"), (
                        f"{k.name}: done before the kill"
                    )
                if k.state.get("state") == "running" and k.state.get("pid") and k.ready():
                    process = psutil.Process(k.state["pid"])
                    what = " ".join(process.cmdline())[:60].strip()
                    assert rel.topo.service_of(process) == "worker-1" and "airflow worker" in what, what
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=10)
                    k.killed = {"try": k.state["try_number"], "process": what}
                    k.after()
                assert time.monotonic() < deadline, f"{k.name} never got ready: {k.state}"
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=(k,), name=f"kill-{k.name}") for k in kills]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rel.topo.assert_running()
    if errors:
        raise errors[0]


def _gip_runs(rel: Rel, run_id: str) -> list[dict[str, Any]]:
    return [r for r in rel.emu.runs() if r["display_name"] == f"airflow/rel_killed/evaluate/{run_id}"]


def _one_complete_copy(rel: Rel, gip_run: str) -> dict[str, int]:
    rows, distinct = rel.wh(
        f"SELECT count(*), count(DISTINCT row_number) FROM {WAREHOUSE_TABLE} WHERE run_id = %s", (gip_run,)
    )[0]
    summaries = rel.wh(f"SELECT item_count FROM {WAREHOUSE_TABLE}_runs WHERE run_id = %s", (gip_run,))
    expected = rel.emu.run(gip_run)["target_count"]
    assert summaries == [(rows,)], (summaries, rows)
    assert rows == distinct == expected > 0, (rows, distinct, expected)
    return {"rows": rows, "summary_rows": len(summaries)}


def _brake_copies(rel: Rel, experiment_id: str) -> Callable[[], None]:
    """Slow the COPY of one experiment's rows to ~1 ms per row until the returned release is called.

    A 20k-row COPY otherwise ends in well under a second on a fast machine, before the watcher (task
    state every 0.25 s) can catch it running; a row trigger makes the kill window long and certain.
    """
    statements = [
        *ddl(WAREHOUSE_TABLE, f"{WAREHOUSE_TABLE}_runs", FLAVOURS["postgresql"]),
        "CREATE TABLE IF NOT EXISTS copy_brake (experiment_id text PRIMARY KEY)",
        "CREATE OR REPLACE FUNCTION copy_brake() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        # result rows name their run only; the run's summary row (written first, same transaction)
        # names its experiment
        "IF EXISTS (SELECT 1 FROM copy_brake b JOIN "
        f"{WAREHOUSE_TABLE}_runs s ON s.experiment_id = b.experiment_id WHERE s.run_id = NEW.run_id) "
        "THEN PERFORM pg_sleep(0.001); END IF; RETURN NEW; END $$",
        f"DROP TRIGGER IF EXISTS copy_brake ON {WAREHOUSE_TABLE}",
        f"CREATE TRIGGER copy_brake BEFORE INSERT ON {WAREHOUSE_TABLE} FOR EACH ROW EXECUTE FUNCTION copy_brake()",
    ]
    with psycopg.connect(rel.warehouse_dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("INSERT INTO copy_brake VALUES (%s) ON CONFLICT DO NOTHING", (experiment_id,))

    def release() -> None:
        with psycopg.connect(rel.warehouse_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM copy_brake")

    return release


def _experiment(rel: Rel, name: str, dataset: str) -> str:
    with rel.emu.client() as client:
        answer = client.post(
            rel.emu.ws_path("/evals/experiments"),
            json={
                "name": name,
                "type": "langfuse_dataset",
                "config": {
                    "integrated_service_credential_id": rel.preset["credential"],
                    "dataset_name": dataset,
                },
            },
        )
        answer.raise_for_status()
        return str(answer.json()["id"])


@pytest.mark.timeout(600)
def test_killed_tasks_reuse_the_run_and_load_once(rel: Rel, reliability_report) -> None:
    """Three DAG runs at once; in each the task process is SIGKILLed at another moment:

    * ``waiting``: the evaluate task, while the GIP run is PENDING/RUNNING (it waits in the worker);
    * ``downloading``: the load task, while its result-CSV request is in flight (GIP holds the answer
      back 8 s);
    * ``copying``: the load task, in the middle of PostgreSQL's ``COPY`` of a 20k+ row result (slowed
      by a row trigger until the kill, so the moment cannot pass unseen).
    """
    emu = rel.emu
    emu.create_dataset("rel-killed-big", count=size(20_000, 60_000))
    experiments = {
        "waiting": rel.preset["experiment"],
        "downloading": _experiment(rel, "rel killed downloading", "qa-general-knowledge"),
        "copying": _experiment(rel, "rel killed copying", "rel-killed-big"),
    }
    # Only the downloading run's CSV request is held back.
    emu.set_faults(
        latency_ms=8000, path_pattern=rf"/experiments/{experiments['downloading']}/runs/[^/]+/download$"
    )
    emu.set_run_speed(run_seconds=8)
    release_copies = _brake_copies(rel, experiments["copying"])
    created_before = emu.stats()["runs_created"]
    runs = {
        name: rel.topo.trigger_dag(
            "rel_killed", conf={"experiment_id": exp, "evaluator_id": rel.preset["evaluator"]}
        )["dag_run_id"]
        for name, exp in experiments.items()
    }
    copied: list[int] = []

    def waiting() -> bool:
        found = _gip_runs(rel, runs["waiting"])
        return bool(found) and found[0]["status"] in ("PENDING", "RUNNING")

    def downloading() -> bool:
        return emu.stats()["faults"]["latency"] > 0  # the held-back request has arrived

    def copying() -> bool:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            found = conn.execute(
                "SELECT p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_database d ON d.oid = p.datid "
                "WHERE d.datname = %s AND p.command = 'COPY FROM' AND p.tuples_processed > 500",
                (rel.warehouse,),
            ).fetchall()
        copied.extend(int(r[0]) for r in found)
        return bool(found)

    visible_after_kill: list[int] = []

    def check_nothing_visible() -> None:
        release_copies()
        gip_run = _gip_runs(rel, runs["copying"])[0]["id"]
        visible_after_kill.append(
            rel.wh(f"SELECT count(*) FROM {WAREHOUSE_TABLE} WHERE run_id = %s", (gip_run,))[0][0]
            + rel.wh(f"SELECT count(*) FROM {WAREHOUSE_TABLE}_runs WHERE run_id = %s", (gip_run,))[0][0]
        )

    before_tmp = set(os.listdir(rel.tmp_dir))
    kills = [
        Kill("waiting", runs["waiting"], "evaluate", waiting),
        Kill("downloading", runs["downloading"], "load", downloading, after=emu.clear_faults),
        Kill("copying", runs["copying"], "load", copying, after=check_nothing_visible),
    ]
    try:
        _kill_all(rel, kills)
    finally:
        emu.clear_faults()
        emu.set_run_speed(run_seconds=2)
        release_copies()
    observed = rel.topo.wait_for_runs([("rel_killed", r) for r in runs.values()], timeout=400)

    figures: dict[str, Any] = {}
    for kill in kills:
        assert observed.runs[("rel_killed", kill.run_id)]["state"] == "success", (kill.name, observed.states)
        tries = {ti["task_id"]: ti["try_number"] for ti in rel.topo.task_instances("rel_killed", kill.run_id)}
        gip_runs = _gip_runs(rel, kill.run_id)
        assert len(gip_runs) == 1 and gip_runs[0]["status"] == "DONE", (kill.name, gip_runs)
        assert kill.killed is not None and kill.killed["try"] == 1
        assert tries == {"evaluate": 1, "load": 1, kill.task_id: 2}, (kill.name, tries)
        figures[kill.name] = {
            "tries": tries,
            "gip_runs": len(gip_runs),
            **_one_complete_copy(rel, gip_runs[0]["id"]),
        }
    assert emu.stats()["runs_created"] - created_before == len(kills), "a retry created another GIP run"
    assert visible_after_kill == [0], "rows of the killed COPY became visible"
    left = sorted(set(os.listdir(rel.tmp_dir)) - before_tmp)
    figures["copying"]["rows_copied_when_killed"] = copied[-1]
    figures["copying"]["rows_visible_after_kill"] = visible_after_kill[0]
    figures["temp_dirs_left_by_killed_loads"] = len(left)
    reliability_report(figures)
    # The two killed loads left their downloads; each retry's load removed what was abandoned by then.
    assert left == [], f"downloads left in tmp_dir: {left}"


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def _jwt_header(emu: GipEmulator) -> str:
    """The first part of every JWT this emulator issues (its fixed header, base64url)."""
    header = emu.id_token().split(".")[0]
    assert base64.urlsafe_b64decode(header + "==").startswith(b"{")
    return header


def _recent(hours: int) -> str:
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return (now - dt.timedelta(hours=now.hour % hours + hours)).isoformat()


def _table_texts(dsn: str) -> dict[str, str]:
    """Every table of a database, every row as text (``row::text``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        return {
            f"{s}.{t}": "\n".join(r[0] for r in conn.execute(f'SELECT t::text FROM "{s}"."{t}" t').fetchall())
            for s, t in tables
        }


@pytest.mark.timeout(300)
def test_deferred_operator_and_sensor_complete_in_the_real_triggerer(rel: Rel, reliability_report) -> None:
    """Credential (from a connection and from templates), experiment, evaluator, a deferrable run and a
    deferrable sensor: the run waits in the triggerer (Cognito JWTs fetched there), one GIP run is paid
    for, the final run is XCom ``run`` and the console link is served by the API server."""
    topo, emu, dag_id = rel.topo, rel.emu, "rel_operators"
    topo.wait_for_dags([dag_id], timeout=90)
    started = time.monotonic()
    run_id = topo.trigger_dag(dag_id)["dag_run_id"]
    obs = topo.wait_for_runs([(dag_id, run_id)], timeout=150)
    wall = time.monotonic() - started
    assert obs.runs[(dag_id, run_id)]["state"] == "success", obs.states

    # The run waited in the triggerer, not in a worker slot; the sensor then found it DONE.
    key = (dag_id, run_id, "run", -1)
    assert "deferred" in obs.states[key], obs.states
    assert obs.triggerer_hosts.get(key) == {"triggerer"}, obs.triggerer_hosts
    files = topo.task_log_files(dag_id, run_id, "run")
    trigger_log = "".join(f.read_text(errors="replace") for f in files if ".trigger." in f.name)
    assert "status DONE" in trigger_log, files
    assert obs.states[(dag_id, run_id, "sensor", -1)][-1] == "success"
    final = topo.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/run/xcomEntries/run")[
        "value"
    ]
    final = json.loads(final) if isinstance(final, str) else final
    assert final["status"] == "DONE"

    # The extra link, as the API server (UI) serves it.
    links = topo.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/run/links")
    assert f"/evals/experiments/{final['experiment_id']}/runs/{final['id']}" in json.dumps(links), links

    # Exactly one evaluation was paid for.
    gip_runs = [r for r in emu.runs() if (r["display_name"] or "").startswith(f"airflow/{dag_id}/run/")]
    assert len(gip_runs) == 1 and gip_runs[0]["status"] == "DONE", gip_runs
    reliability_report({"seconds_trigger_to_success": round(wall, 1), "run_states": obs.states[key]})


@pytest.mark.timeout(900)
def test_no_secret_anywhere_after_every_example_dag(rel: Rel, reliability_report) -> None:
    topo, emu = rel.topo, rel.emu
    secrets = {
        "api key": API_KEY,
        "cognito password": PASSWORD,
        "langfuse secret key": LANGFUSE_SECRET,
        "wrong api key": WRONG_KEY,
        "jwt (emulator-issued)": _jwt_header(emu),
    }
    before = emu.stats()
    yesterday = (dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)).isoformat()
    planned = {
        "gip_daily_trace_evaluation": yesterday,
        "gip_observation_evaluation_after_etl": _recent(6),
        "gip_model_comparison": None,
        "gip_refresh_dataset": None,
        # Asset-scheduled; the topology's scheduler makes no scheduled runs (use_job_schedule off), so
        # it is triggered like a manual run.
        "gip_dataset_evaluation_on_asset": None,
        "rel_factory_traces": yesterday,
        "rel_wrong_key": None,
    }
    topo.wait_for_dags(list(planned), timeout=120)
    runs = [(dag_id, topo.trigger_dag(dag_id, date)["dag_run_id"]) for dag_id, date in planned.items()]
    observed = topo.wait_for_runs(runs, timeout=600)
    states = {dag_id: observed.runs[(dag_id, run_id)]["state"] for dag_id, run_id in runs}
    after = emu.stats()
    assert states.pop("rel_wrong_key") == "failed"
    assert set(states.values()) == {"success"}, (states, observed.states)
    assert after["tokens_issued"] > before["tokens_issued"], "Cognito was not used: no JWT to look for"

    # Where a secret could end up: every log file, every table of both databases.
    places: dict[str, str] = {}
    for path in topo.airflow_home.rglob("*"):
        if path.is_file() and path.suffix != ".pid" and ("logs" in path.parts or "services" in path.parts):
            places[str(path.relative_to(topo.airflow_home))] = path.read_text(errors="replace")
    metadata = _table_texts(PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={topo.db_name}"))
    warehouse = _table_texts(rel.warehouse_dsn)
    places.update({f"metadata:{k}": v for k, v in metadata.items()})
    places.update({f"warehouse:{k}": v for k, v in warehouse.items()})
    hits = {
        f"{what} in {where}" for where, text in places.items() for what, s in secrets.items() if s in text
    }

    wrong = topo.task_log("rel_wrong_key", dict(runs)["rel_wrong_key"], "experiment")
    figures = {
        "dag_runs": {dag_id: observed.runs[(dag_id, run_id)]["state"] for dag_id, run_id in runs},
        "task_logs_searched": sum(1 for k in places if k.startswith("logs")),
        "service_logs_searched": sum(1 for k in places if k.startswith("services")),
        "metadata_tables_searched": len(metadata),
        "xcom_rows": metadata.get("public.xcom", "").count("\n") + 1,
        "rendered_field_rows": metadata.get("public.rendered_task_instance_fields", "").count("\n") + 1,
        "warehouse_tables_searched": len(warehouse),
        "jwts_issued": after["tokens_issued"] - before["tokens_issued"],
        "gip_requests": after["requests_by_group"]["gip"] - before["requests_by_group"]["gip"],
        "secret_hits": sorted(hits),
    }
    reliability_report(figures)
    assert figures["xcom_rows"] > 10 and figures["rendered_field_rows"] > 10
    assert "HTTP 401" in wrong and "GipAuthError" in wrong, wrong[-2000:]
    assert not hits, hits
