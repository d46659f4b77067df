"""A 30-day backfill against a monthly budget that covers 10 windows, 4 DAG runs at a time, on a real scheduler.

The Celery topology (``tests/system/e2e/topology.py``: api-server, scheduler, dag-processor and a Celery
worker with 4 slots, on a fresh PostgreSQL metadata database) runs ``POST /api/v2/backfills`` of
``tests/system/e2e/dags/gip_e2e_budget_backfill.py`` over 30 daily UTC windows with ``max_active_runs=4``.
Its own emulator serves 4 equal traces on each of those days; the ledger is in a PostgreSQL warehouse.

Before the topology starts, one window outside the backfill is evaluated in this process (no budget): it
gives the ledger its tokens-per-item history, so every estimate matches a window's actual cost, and it
gives that cost, from which the budget is set to cover 10.5 windows (a budget is fixed at parse time).

Checked from the outside: exactly 10 GIP runs paid, their actual cost within the budget, the 20 other
``evaluate`` task instances failed on their first try (retries are configured; the refusal is an
``AirflowFailException``) with "budget exhausted: spent" in their task log and no ledger row, the
backfill ran every DAG run to its end, and the ``evaluate`` tasks really ran at the same time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.ledger.backfill import StandInTI, equal_traces_emulator
from tests.system.e2e.topology import (
    PG_ADMIN_DSN,
    REPO,
    AirflowTopology,
    postgres_conn_json,
    temporary_database,
)

pytestmark = pytest.mark.e2e

DAG_FILE = REPO / "tests" / "system" / "e2e" / "dags" / "gip_e2e_budget_backfill.py"
DAG_ID = "gip_e2e_budget_backfill"
DAYS, PER_DAY, COVERED, PARALLEL = 30, 4, 10, 4
LEDGER_TABLE = "gip_evaluation_ledger"
EVALUATION_CONFIG = {
    "judge_model_seq_id": 19,
    "judge_model_public_id": "openai/gpt-4",
    "judge_model_parameters": {"max_tokens": 50},
    "judge_prompt": "Judge it. Answer <rationale>...</rationale><rating>true|false</rating>.",
}
MB = 1024 * 1024


#: Midnight UTC that ends the last window, fixed once, so the seed and the backfill agree across a midnight.
TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An emulator whose Langfuse holds PER_DAY equal traces on each of the DAYS + 1 UTC days before today."""
    # Every window must cost the same: a judge without noise (quality 1) rates by content alone, each day
    # has the same 4 answers, and with these trace ids the judge answers every item in format.
    # Runs last 5 s, so the paid tasks of the first DAG runs hold their worker slots at the same time.
    with equal_traces_emulator(
        tmp_path_factory.mktemp("seed"),
        days=DAYS,
        per_day=PER_DAY,
        timestamp=lambda day, slot: (
            TODAY - dt.timedelta(days=day) + dt.timedelta(hours=2 + slot * 5)
        ).isoformat(),
        trace_id=lambda day, slot: f"trace-{day:02d}-{slot}",
        day_in_text=False,
        judge_quality=(EVALUATION_CONFIG["judge_model_public_id"], 1.0),
        run_seconds=5,
    ) as handle:
        yield handle


def _connections(emulator: Any, warehouse: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` of the DAG: its own GIP and Langfuse (this emulator) and the warehouse."""
    langfuse = {
        "conn_type": "generic",
        "host": emulator.base_url,
        "login": emulator.langfuse_public_key,
        "password": emulator.langfuse_secret_key,
    }
    return {
        "AIRFLOW_CONN_GIP_BUDGET": emulator.conn_json(),
        "AIRFLOW_CONN_LANGFUSE_BUDGET": json.dumps(langfuse),
        "AIRFLOW_CONN_GIP_WAREHOUSE": postgres_conn_json(warehouse),
    }


def _warm_up(emulator: Any, env: dict[str, str]) -> tuple[str, str, float]:
    """Register the credential and evaluator, evaluate day DAYS + 1 (outside the backfill) without a budget.

    Returns (credential id, evaluator id, the window's actual cost).
    """
    from gip_airflow.hooks.gip import GipHook
    from gip_airflow.operators.gip import GipStartExperimentRunOperator

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with GipHook("gip_budget") as hook:
            cred = hook.create_langfuse_credential(
                {
                    "alias": "budget-backfill",
                    "base_url": emulator.base_url,
                    "public_key": emulator.langfuse_public_key,
                    "private_key": emulator.langfuse_secret_key,
                }
            )
            evaluator = hook.create_evaluator(
                {"name": "budget-judge", "metric": {"type": "bool"}, "evaluation_config": EVALUATION_CONFIG}
            )
            start = TODAY - dt.timedelta(days=DAYS + 1)
            window = {
                "from_timestamp": int(start.timestamp() * 1000),
                "to_timestamp": int((start + dt.timedelta(days=1)).timestamp() * 1000),
            }
            experiment = hook.create_experiment(
                {
                    "name": "budget warm-up",
                    "type": "langfuse_trace",
                    "config": {"integrated_service_credential_id": cred.id, "trace_filter_request": window},
                }
            )
        op = GipStartExperimentRunOperator(
            task_id="run",
            gip_conn_id="gip_budget",
            experiment_id=experiment.id,
            evaluator_id=evaluator.id,
            display_name="airflow/budget_warmup/run/warmup",
            ledger_conn_id="gip_warehouse",
            ledger_table=LEDGER_TABLE,
            langfuse_conn_id="langfuse_budget",
            poll_interval=0.5,
            timeout=60,
            reuse_existing_run=False,  # no task state store outside a task runner
        )
        ti = StandInTI("budget_warmup", "warmup")
        op.execute({"ti": ti, "run_id": ti.run_id})  # type: ignore[arg-type]
    return cred.id, evaluator.id, float(ti.xcoms["cost"]["cost"])


def _max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """Largest number of [start, end) intervals that hold at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def _code_span(log: str) -> tuple[dt.datetime, dt.datetime]:
    """First and last timestamp of a task log: when the task process ran its code.

    A task instance's start and end dates also hold the worker's supervisor, which may notice the task
    process's exit only at its next heartbeat wait; the log shows the task's own time.
    """
    stamps = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            stamps.append(dt.datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")))
    assert stamps, log[-2000:]
    return min(stamps), max(stamps)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@pytest.mark.timeout(600)
def test_backfill_pays_for_exactly_the_windows_the_budget_covers(
    local_services: None,
    emulator: Any,
    tmp_path: Path,
    e2e_report: Callable[[dict[str, Any]], None],
) -> None:
    t0 = time.monotonic()
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / DAG_FILE.name).symlink_to(DAG_FILE)
    with temporary_database("gip_wh") as warehouse:
        env = _connections(emulator, warehouse)
        credential_id, evaluator_id, per_window = _warm_up(emulator, env)
        amount = per_window * (COVERED + 0.5)
        budget_name = f"e2e-month-{uuid.uuid4().hex[:6]}"
        env["GIP_E2E_BUDGET_BACKFILL"] = json.dumps(
            {"amount": amount, "name": budget_name, "ledger_table": LEDGER_TABLE}
        )
        warm_seconds = time.monotonic() - t0
        topo = AirflowTopology(
            dags,
            extra_env=env,
            services=("api-server", "scheduler", "dag-processor", "worker"),  # nothing defers here
            worker_concurrency=PARALLEL,
            parallelism=2 * PARALLEL,
            startup_timeout=150,
        )
        with topo:
            topo.wait_for_dags([DAG_ID], timeout=90)
            body = {
                "dag_id": DAG_ID,
                "from_date": (TODAY - dt.timedelta(days=DAYS)).isoformat(),
                "to_date": (TODAY - dt.timedelta(days=1)).isoformat(),
                "max_active_runs": PARALLEL,
                "dag_run_conf": {"credential_id": credential_id, "evaluator_id": evaluator_id},
            }
            planned = topo.api("POST", "/api/v2/backfills/dry_run", json=body)["backfills"]
            assert len(planned) == DAYS, planned
            t1 = time.monotonic()
            backfill_id = topo.api("POST", "/api/v2/backfills", json=body)["id"]

            # Two requests per poll (all runs, all evaluate task instances): the API server shares 2 cores.
            running_tasks: list[int] = []
            running_runs: list[int] = []
            runs_path = f"/api/v2/dags/{DAG_ID}/dagRuns"
            tis_path = f"/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances"
            deadline = time.monotonic() + 420
            while True:
                topo.assert_running()
                runs = topo.api("GET", runs_path, params={"limit": 100})["dag_runs"]
                tis = topo.api("GET", tis_path, params={"task_id": "evaluate", "limit": 100})[
                    "task_instances"
                ]
                running_tasks.append(sum(ti["state"] == "running" for ti in tis))
                running_runs.append(sum(r["state"] == "running" for r in runs))
                if len(runs) == DAYS and all(r["state"] in ("success", "failed") for r in runs):
                    break
                states = sorted((r["logical_date"][:10], r["state"]) for r in runs)
                assert time.monotonic() < deadline, f"backfill {backfill_id} not finished: {states}"
                time.sleep(0.5)
            backfill_seconds = time.monotonic() - t1
            completed_by = time.monotonic() + 60
            while not topo.api("GET", f"/api/v2/backfills/{backfill_id}").get("completed_at"):
                assert time.monotonic() < completed_by, f"backfill {backfill_id} never completed"
                time.sleep(1)

            assert {r["run_type"] for r in runs} == {"backfill"}
            assert len(tis) == DAYS
            paid_tis = [ti for ti in tis if ti["state"] == "success"]
            refused_tis = [ti for ti in tis if ti["state"] != "success"]
            # Exactly the covered windows were paid: one GIP run each, by this DAG.
            gip_runs = [r for r in emulator.runs() if r["display_name"].startswith(f"airflow/{DAG_ID}/")]
            assert len(gip_runs) == len(paid_tis) == COVERED, (len(gip_runs), [t["state"] for t in tis])
            assert {r["display_name"].rsplit("/", 1)[1] for r in gip_runs} == {
                t["dag_run_id"] for t in paid_tis
            }
            # The others failed at once, on their first try, without a paid call and with the reason.
            assert {ti["state"] for ti in refused_tis} == {"failed"}
            assert {ti["max_tries"] for ti in tis} == {2}, "the DAG's retries are configured"
            assert {ti["try_number"] for ti in refused_tis} == {1}, "a refused budget burned a retry"
            logs = {ti["dag_run_id"]: topo.task_log(DAG_ID, ti["dag_run_id"], "evaluate") for ti in tis}
            for ti in refused_tis:
                log = logs[ti["dag_run_id"]]
                assert "budget exhausted: spent $" in log and f" of ${amount:.4f}" in log, log[-2000:]
                assert "AirflowFailException" in log or "BudgetExhausted" in log, log[-2000:]
            # A refused window fails its DAG run; the backfill still ran every one of its runs.
            by_run = {r["dag_run_id"]: r["state"] for r in runs}
            assert {by_run[ti["dag_run_id"]] for ti in refused_tis} == {"failed"}
            assert {by_run[ti["dag_run_id"]] for ti in paid_tis} == {"success"}

            # The ledger: one DONE row per paid window (a refusal leaves none), the spend within the budget.
            dsn = PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={warehouse}")
            with psycopg.connect(dsn) as conn:
                every = conn.execute(
                    f"SELECT airflow_run_id, status, cost, est_cost, budget_key FROM {LEDGER_TABLE}"
                ).fetchall()
            rows = [r for r in every if r[4] == budget_name]
            assert len(every) == COVERED + 1, every  # + the warm-up
            assert len(rows) == COVERED and {r[1] for r in rows} == {"DONE"}, rows
            assert {r[0] for r in rows} == {t["dag_run_id"] for t in paid_tis}
            spent = sum(r[2] for r in rows)
            assert spent <= amount, (spent, amount)
            # The premise of "covers 10 windows": each window cost what the warm-up did, and was estimated so.
            assert all(r[2] == pytest.approx(per_window) for r in rows), rows
            assert all(r[3] == pytest.approx(per_window) for r in rows), rows
            assert {r["target_count"] for r in gip_runs} == {PER_DAY}

            # The DAG runs really overlapped: evaluate tasks ran their code at the same time.
            spans = {run_id: _code_span(log) for run_id, log in logs.items()}
            overlap = _max_overlap(list(spans.values()))
            paid_overlap = _max_overlap([spans[t["dag_run_id"]] for t in paid_tis])
            assert overlap >= 2, spans
            assert max(running_runs) <= PARALLEL, running_runs  # the backfill's max_active_runs held
            seconds = {run_id: (end - start).total_seconds() for run_id, (start, end) in spans.items()}
            refused_median = _median([seconds[t["dag_run_id"]] for t in refused_tis])
            paid_median = _median([seconds[t["dag_run_id"]] for t in paid_tis])
            # Fail fast: a refusal takes less time than a paid run (which waits for its GIP run).
            assert refused_median < paid_median, (refused_median, paid_median)
            e2e_report(
                {
                    "gip_runs_paid": len(gip_runs),
                    "refused": len(refused_tis),
                    "spent_usd": f"{spent:.4f}",
                    "budget_usd": f"{amount:.4f}",
                    "per_window_usd": f"{per_window:.4f}",
                    "max_evaluate_overlap": overlap,
                    "max_paid_overlap": paid_overlap,
                    "max_running_sampled": max(running_tasks),
                    "max_running_runs": max(running_runs),
                    "refused_median_seconds": round(refused_median, 2),
                    "refused_max_seconds": round(max(seconds[t["dag_run_id"]] for t in refused_tis), 2),
                    "paid_median_seconds": round(paid_median, 2),
                    "ti_duration_refused_max": round(max(t["duration"] for t in refused_tis), 1),
                    "warm_up_seconds": round(warm_seconds, 1),
                    "startup_seconds": round(topo.timings["startup_seconds"], 1),
                    "backfill_seconds": round(backfill_seconds, 1),
                    "pss_mb": round(topo.memory()["total"]["pss"] / MB),
                    "test_seconds": round(time.monotonic() - t0, 1),
                }
            )
    assert not os.path.exists(topo.airflow_home) or topo.keep_home
