"""Helpers of the reliability tests: a throw-away PostgreSQL warehouse, content hashes, log counters."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from gip_airflow.api import RESULT_CSV_COLUMNS

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
#: The columns that come from the result CSV (plus what is derived from it): equal for equal results.
CONTENT_COLUMNS = ("row_number", *RESULT_CSV_COLUMNS, "score_value", "extra")
SUMMARY_COLUMNS = (
    "item_count",
    "passed_count",
    "failed_count",
    "pass_rate",
    "scored_count",
    "mean_score_value",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)


def postgres_conn(dbname: str = "test") -> dict[str, Any]:
    return {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": dbname}


@dataclass
class PgWarehouse:
    """A schema of its own in the local ``test`` database, as an Airflow connection."""

    schema: str = field(default_factory=lambda: f"gip_rel_{uuid.uuid4().hex[:10]}")
    conn_id: str = ""

    def __post_init__(self) -> None:
        self.conn_id = f"wh_{self.schema}"

    @property
    def table(self) -> str:
        return f"{self.schema}.results"

    @property
    def summary(self) -> str:
        return f"{self.schema}.results_runs"

    @property
    def env(self) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(postgres_conn())}

    def create(self) -> PgWarehouse:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        return self

    def drop(self) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def exists(self) -> bool:
        return bool(self.query("SELECT to_regclass(%s)", (self.table,))[0][0])

    def rows_per_run(self) -> dict[str, int]:
        if not self.exists():
            return {}
        return dict(self.query(f"SELECT run_id, count(*) FROM {self.table} GROUP BY run_id"))

    def content_hash(self, run_id: str) -> str:
        """A digest of a run's loaded rows (CSV-derived columns only, in row order)."""
        rows = self.query(
            f"SELECT {', '.join(CONTENT_COLUMNS)} FROM {self.table} WHERE run_id = %s ORDER BY row_number",
            (run_id,),
        )
        return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()

    def summary_row(self, run_id: str) -> tuple[Any, ...] | None:
        found = self.query(
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM {self.summary} WHERE run_id = %s", (run_id,)
        )
        return found[0] if found else None


@contextlib.contextmanager
def pg_warehouse() -> Iterator[PgWarehouse]:
    wh = PgWarehouse().create()
    try:
        yield wh
    finally:
        wh.drop()


class RecordCounter(logging.Handler):
    """Counts (and keeps) log records of some loggers while installed; re-attaches if logging is reset."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.DEBUG)
        self.names = names
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())

    def __enter__(self) -> RecordCounter:
        for name in self.names:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            logger.disabled = False
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            logging.getLogger(name).removeHandler(self)

    def matching(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [m for m in self.messages if rx.search(m)]


def retry_kinds(messages: list[str]) -> Counter[str]:
    """Classify the hook's "retry n/m" warnings: HTTP status, or transport error (``...@download``)."""
    kinds: Counter[str] = Counter()
    for message in messages:
        head, _, detail = message.partition(": ")
        where = "@download" if head.endswith("/download") else ""
        status = re.match(r"(\d{3}) ", detail)
        if status:
            kinds[status.group(1) + where] += 1
        elif detail.startswith("Too Many Requests"):
            kinds["429" + where] += 1
        else:
            error = re.match(r"(\w+):", detail)
            kinds[(error.group(1) if error else "other") + where] += 1
    return kinds
