"""Warehouses for the transfer tests: a throw-away schema in the local PostgreSQL, and SQLite files.

Connections come from ``AIRFLOW_CONN_*`` environment variables (monkeypatched), as in real tasks.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
TIMESTAMPS = {
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "loaded_at",
    "window_start",
    "window_end",
}


def pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(**PG, connect_timeout=3).close()
        return True
    except Exception:
        return False


@dataclass
class Warehouse:
    """One target database: its connection id, table names, and helpers to read the tables back."""

    kind: str  # "postgres" | "sqlite"
    conn_id: str
    table: str
    fast_path: bool = True
    app: str = ""  # PostgreSQL application_name of the hook's connections
    cleanup: list[Any] = field(default_factory=list)

    @property
    def summary_table(self) -> str:
        return f"{self.table}_runs"

    @property
    def view(self) -> str:
        """The view joining each result row to its run's facts."""
        return f"{self.table}_v"

    def hook(self) -> Any:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id).get_hook()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        hook = self.hook()
        sql = sql.replace("?", hook.placeholder)
        conn = hook.get_conn()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [self._normal(dict(zip(names, r))) for r in cur.fetchall()]
        finally:
            conn.close()

    def _normal(self, row: dict[str, Any]) -> dict[str, Any]:
        """Same Python values from both databases: bools, parsed JSON, aware datetimes."""
        for key, value in row.items():
            if key == "passed" and value is not None:
                row[key] = bool(value)
            elif key == "extra" and isinstance(value, str):
                row[key] = json.loads(value)
            elif key in TIMESTAMPS and isinstance(value, str):
                row[key] = dt.datetime.fromisoformat(value)
        return row

    def rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every result row with its run's facts (through the view)."""
        where = " WHERE run_id = ?" if run_id else ""
        return self.query(
            f"SELECT * FROM {self.view}{where} ORDER BY run_id, row_number", (run_id,) if run_id else ()
        )

    def summaries(self) -> list[dict[str, Any]]:
        return self.query(f"SELECT * FROM {self.summary_table} ORDER BY run_id")

    def count(self, run_id: str | None = None) -> int:
        where = " WHERE run_id = ?" if run_id else ""
        (row,) = self.query(f"SELECT count(*) AS n FROM {self.table}{where}", (run_id,) if run_id else ())
        return int(row["n"])


def make_postgres(monkeypatch: pytest.MonkeyPatch, *, fast_path: bool = True, app: str = "") -> Warehouse:
    import psycopg

    if not pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (db test, user postgres); start it")
    schema = f"gip_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    extra = {"application_name": app} if app else {}
    conn_id = f"wh_pg_{schema}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": PG["host"],
                "port": PG["port"],
                "login": PG["user"],
                "schema": PG["dbname"],
                "extra": extra,
            }
        ),
    )
    wh = Warehouse("postgres", conn_id, f"{schema}.results", fast_path=fast_path, app=app)

    def drop() -> None:
        with psycopg.connect(**PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    wh.cleanup.append(drop)
    return wh


def make_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Warehouse:
    path = tmp_path / f"warehouse-{uuid.uuid4().hex[:6]}.db"
    conn_id = f"wh_lite_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    return Warehouse("sqlite", conn_id, "results")


@pytest.fixture(params=["postgres", "postgres-insert", "sqlite"])
def warehouse(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """Each test runs against PostgreSQL (COPY), PostgreSQL (executemany) and SQLite (executemany)."""
    if request.param == "sqlite":
        wh = make_sqlite(monkeypatch, tmp_path)
    else:
        wh = make_postgres(monkeypatch, fast_path=request.param == "postgres")
    try:
        yield wh
    finally:
        for fn in wh.cleanup:
            fn()


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Any:
    wh = make_postgres(monkeypatch, app=f"gip-load-{uuid.uuid4().hex[:8]}")
    try:
        yield wh
    finally:
        for fn in wh.cleanup:
            fn()
