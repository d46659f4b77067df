"""A 30-day backfill against a monthly budget that covers 10 windows, 4 runs at a time.

Each "DAG run" is ``GipStartExperimentRunOperator.execute()`` driven from one of 4 threads with a
stand-in task instance (XCom kept in a dict); everything else is real: the emulator over loopback HTTP
(its own seed: 30 days of 4 equal traces a day), the Langfuse count, and the ledger in PostgreSQL
(a throw-away schema) or SQLite. The same backfill through a real scheduler and Celery worker, on
PostgreSQL only, is ``tests/system/e2e/test_budget_backfill_topology.py``; this one is fast, covers
SQLite, and re-runs finished windows.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid

import pytest

from gip_airflow.hooks.gip import GipHook
from gip_airflow.ledger import BudgetExhausted, Ledger
from gip_airflow.operators.gip import GipStartExperimentRunOperator
from tests.integration.ledger.backfill import StandInTI, equal_traces_emulator

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
DAYS, PER_DAY, COVERED, PARALLEL = 30, 4, 10, 4
DAY_MS = 86_400_000
EVALUATION_CONFIG = {
    "judge_model_seq_id": 19,
    "judge_model_public_id": "openai/gpt-4",
    "judge_model_parameters": {"max_tokens": 50},
    "judge_prompt": "Judge it. Answer <rationale>...</rationale><rating>true|false</rating>.",
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """An emulator whose Langfuse holds PER_DAY traces of equal size on each of the last DAYS + 1 days."""
    with equal_traces_emulator(
        tmp_path_factory.mktemp("seed"),
        days=DAYS,
        per_day=PER_DAY,
        timestamp=lambda day, slot: f"now-P{day}DT{2 + slot * 5}H",
        trace_id=lambda day, slot: f"bf-{day:02d}-{slot}",
    ) as handle:
        yield handle


@pytest.fixture(params=["postgres", "sqlite"])
def warehouse(request, tmp_path, monkeypatch):
    """(conn id, ledger table) in a throw-away PostgreSQL schema or a SQLite file (one conn id each:
    Airflow caches connections by id)."""
    if request.param == "sqlite":
        monkeypatch.setenv(
            "AIRFLOW_CONN_LEDGER_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "l.db")})
        )
        yield "ledger_sqlite", "gip_evaluation_ledger"
        return
    psycopg = pytest.importorskip("psycopg")
    schema = f"gip_l_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(**PG, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    monkeypatch.setenv(
        "AIRFLOW_CONN_LEDGER_PG",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": PG["host"],
                "port": PG["port"],
                "login": PG["user"],
                "schema": PG["dbname"],
            }
        ),
    )
    yield "ledger_pg", f"{schema}.gip_evaluation_ledger"
    with psycopg.connect(**PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def execute(
    warehouse, dag_id: str, run_id: str, experiment_id: str, evaluator_id: str, **kwargs
) -> StandInTI:
    op = GipStartExperimentRunOperator(
        task_id="run",
        experiment_id=experiment_id,
        evaluator_id=evaluator_id,
        display_name=f"airflow/{dag_id}/run/{run_id}",
        ledger_conn_id=warehouse[0],
        ledger_table=warehouse[1],
        langfuse_conn_id="langfuse_bf",
        poll_interval=0.2,
        timeout=60,
        reuse_existing_run=False,  # no task state store outside a task runner
        **kwargs,
    )
    ti = StandInTI(dag_id, run_id)
    ti.xcoms["return_value"] = op.execute({"ti": ti, "run_id": run_id})
    return ti


def test_backfill_pays_for_exactly_the_windows_the_budget_covers(emulator, warehouse, monkeypatch):
    conn_id, table = warehouse
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", emulator.conn_json())
    monkeypatch.setenv(
        "AIRFLOW_CONN_LANGFUSE_BF",
        json.dumps(
            {
                "conn_type": "generic",
                "host": emulator.base_url,
                "login": emulator.langfuse_public_key,
                "password": emulator.langfuse_secret_key,
            }
        ),
    )
    now = int(time.time() * 1000)
    with GipHook() as hook:
        cred = hook.create_langfuse_credential(
            {
                "alias": "backfill",
                "base_url": emulator.base_url,
                "public_key": emulator.langfuse_public_key,
                "private_key": emulator.langfuse_secret_key,
            }
        )
        evaluator = hook.create_evaluator(
            {
                "name": f"bf-judge-{uuid.uuid4().hex[:6]}",
                "metric": {"type": "bool"},
                "evaluation_config": EVALUATION_CONFIG,
            }
        )

        def window_experiment(day: int) -> str:
            start = now - (day + 1) * DAY_MS + 1  # day `day` ago: [start, end)
            return hook.create_experiment(
                {
                    "name": f"bf-window-{day:02d}-{uuid.uuid4().hex[:6]}",
                    "type": "langfuse_trace",
                    "config": {
                        "integrated_service_credential_id": cred.id,
                        "trace_filter_request": {"from_timestamp": start, "to_timestamp": start + DAY_MS},
                    },
                }
            ).id

        windows = {day: window_experiment(day) for day in range(1, DAYS + 2)}

    # Tokens per item come from the ledger's history: one window evaluated before, outside the budget.
    warm = execute(warehouse, "bf_warmup", "warmup", windows[DAYS + 1], evaluator.id)
    per_window = warm.xcoms["cost"]["cost"]
    amount = per_window * (COVERED + 0.5)
    budget = {"amount": amount, "period": "month", "name": f"team-{uuid.uuid4().hex[:6]}"}

    # The backfill: the DAYS daily windows before today, PARALLEL DAG runs at a time.
    todo: queue.Queue[int] = queue.Queue()
    for day in range(1, DAYS + 1):
        todo.put(day)
    paid, refused, errors = {}, {}, []

    def worker() -> None:
        while True:
            try:
                day = todo.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            try:
                ti = execute(
                    warehouse,
                    "bf_backfill",
                    f"backfill__{day:02d}",
                    windows[day],
                    evaluator.id,
                    budget=budget,
                )
                paid[day] = ti.xcoms
            except BudgetExhausted as exc:
                refused[day] = (str(exc), time.perf_counter() - started)
            except Exception as exc:
                errors.append((day, repr(exc)))

    threads = [threading.Thread(target=worker) for _ in range(PARALLEL)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    elapsed = time.perf_counter() - started

    assert not errors, errors
    ours = set(windows.values())  # the emulator is shared by both warehouses

    def backfill_runs() -> list[dict]:
        return [
            r
            for r in emulator.runs()
            if r["experiment_id"] in ours and r["display_name"].startswith("airflow/bf_backfill/")
        ]

    ledger = Ledger.from_conn_id(conn_id, table)
    rows = ledger.rows()
    spent = sum(x["cost"]["cost"] for x in paid.values())
    slowest_refusal = max(s for _, s in refused.values())
    print(
        f"\n[measure] {conn_id}/{table}: {len(backfill_runs())} GIP runs paid, {len(refused)} refused "
        f"(slowest refusal {slowest_refusal:.2f} s), spent ${spent:.4f} of ${amount:.4f}, "
        f"{elapsed:.1f} s for {DAYS} windows x {PARALLEL} threads"
    )
    assert len(backfill_runs()) == len(paid) == COVERED
    budget_rows = [r for r in rows if r["budget_key"] == budget["name"]]
    assert len(rows) == COVERED + 1 and len(budget_rows) == COVERED  # refusals leave no row
    assert {r["status"] for r in budget_rows} == {"DONE"}
    assert sum(r["cost"] for r in budget_rows) == pytest.approx(spent)
    assert len(refused) == DAYS - COVERED
    assert spent <= amount
    for message, _ in refused.values():
        assert message.startswith("budget exhausted: spent $") and f" of ${amount:.4f}" in message

    # Re-running a finished window as a new DAG run: 0 new GIP runs and 0 new ledger rows ...
    day = min(paid)
    again = execute(
        warehouse, "bf_backfill", f"manual__rerun_{day:02d}", windows[day], evaluator.id, budget=budget
    )
    assert again.xcoms["return_value"] == paid[day]["return_value"]
    # ... and after clearing the task in its own DAG run (same run id, a new try).
    cleared = execute(
        warehouse, "bf_backfill", f"backfill__{day:02d}", windows[day], evaluator.id, budget=budget
    )
    assert cleared.xcoms["return_value"] == paid[day]["return_value"]
    assert len(backfill_runs()) == COVERED
    assert len(ledger.rows()) == COVERED + 1
