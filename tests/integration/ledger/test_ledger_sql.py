"""The ledger table itself in PostgreSQL and SQLite: serialized reservations, settling, superseding."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from gip_airflow.ledger import Budget, BudgetExhausted, EvaluationBusy, Ledger

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


@pytest.fixture(params=["postgres", "sqlite"])
def ledger(request, tmp_path, monkeypatch):
    conn_id = f"ledger_sql_{request.param}"
    if request.param == "sqlite":
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "l.db")}),
        )
        yield Ledger.from_conn_id(conn_id)
        return
    psycopg = pytest.importorskip("psycopg")
    schema = f"gip_l_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(**PG, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
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
    yield Ledger.from_conn_id(conn_id, f"{schema}.ledger")
    with psycopg.connect(**PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def entry(fp: str, run_id: str = "r1", cost: float = 1.0) -> dict:
    return {
        "fingerprint": fp,
        "dag_id": "d",
        "task_id": "t",
        "airflow_run_id": run_id,
        "map_index": -1,
        "est_cost": cost,
    }


class SlowLedger(Ledger):
    """Widens the gap between reading what is spent and writing the reservation."""

    def spent(self, *args, **kwargs):
        value = super().spent(*args, **kwargs)
        time.sleep(0.05)
        return value


def test_concurrent_reservations_cannot_overspend(ledger):
    slow = SlowLedger(ledger.hook, ledger.table)
    budget = Budget(amount=3.0, period="day", name="team")
    outcomes: list[str] = []

    def reserve(i: int) -> None:
        try:
            kind, _ = slow.begin(entry(f"fp-{i}", f"run-{i}"), force=False, budget=budget, budget_key="team")
            outcomes.append(kind)
        except BudgetExhausted as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("new") == 3
    refused = [o for o in outcomes if o != "new"]
    assert len(refused) == 5 and all(
        o.startswith("budget exhausted: spent $3.0000 of $3.0000") for o in refused
    )


def test_done_is_reused_running_is_attached_force_supersedes(ledger):
    kind, first = ledger.begin(entry("fp"), force=False)
    assert kind == "new" and first["status"] == "RESERVED"
    # Another DAG run while the first is being started: busy (a retry will attach).
    with pytest.raises(EvaluationBusy, match="DAG run 'r1' is starting this evaluation"):
        ledger.begin(entry("fp", "r2"), force=False)
    ledger.started(first["entry_id"], experiment_id="e", gip_run_id="g1")
    assert ledger.begin(entry("fp", "r2"), force=False)[0] == "attach"
    ledger.finish("g1", done=True, prompt_tokens=900, completion_tokens=100, cost=0.5)
    kind, row = ledger.begin(entry("fp", "r3"), force=False)
    assert (kind, row["gip_run_id"], row["total_tokens"]) == ("reuse", "g1", 1000)

    kind, forced = ledger.begin(entry("fp", "r4"), force=True)
    assert kind == "new"
    ledger.started(forced["entry_id"], experiment_id="e", gip_run_id="g2")
    ledger.finish("g2", done=True, prompt_tokens=800, completion_tokens=100, cost=0.4)
    rows = {r["gip_run_id"]: r for r in ledger.rows()}
    assert (rows["g1"]["status"], rows["g1"]["superseded_by"], rows["g2"]["status"]) == (
        "SUPERSEDED",
        "g2",
        "DONE",
    )
    assert ledger.begin(entry("fp", "r5"), force=False)[1]["gip_run_id"] == "g2"
    # History: mean tokens per item of finished runs with the same key.
    assert ledger.tokens_per_item("none", None, None) is None


def test_a_failed_run_is_not_reused_and_a_retry_takes_over_its_reservation(ledger):
    _, first = ledger.begin(entry("fp"), force=False)
    # The same task instance again (a retry after a crash before the run was created): takes over.
    kind, again = ledger.begin(entry("fp"), force=False)
    assert kind == "new" and again["entry_id"] != first["entry_id"]
    ledger.started(again["entry_id"], experiment_id="e", gip_run_id="g1")
    ledger.finish("g1", done=False, prompt_tokens=10, completion_tokens=1, cost=0.01)
    assert ledger.begin(entry("fp", "r2"), force=False)[0] == "new"
    statuses = sorted(r["status"] for r in ledger.rows())
    assert statuses == ["FAILED", "FAILED", "RESERVED"]


def test_settle_closes_a_running_row_whose_task_ended_without_recording(ledger):
    _, row = ledger.begin(entry("fp"), force=False)
    ledger.started(row["entry_id"], experiment_id="e", gip_run_id="g1")
    settled = {"status": "DONE", "prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "cost": 0.1}
    kind, reused = ledger.begin(entry("fp", "r2"), force=False, settle=lambda r: settled)
    assert (kind, reused["gip_run_id"], reused["cost"]) == ("reuse", "g1", 0.1)
