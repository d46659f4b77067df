"""Read the run summary tables (``<table>_runs``) and gate verdicts (``<table>_gates``) for the view.

Only the summary table is read: one row per loaded run, already aggregated by the loader. The
results table (one row per evaluated item) is never touched. Optional columns (added in later
releases, or by other operators) are detected per table, so an older warehouse still renders. Runs
marked ``superseded_by`` a later run of the same evaluation are history: counted, not listed.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import closing, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gip_airflow.transfers.gip_to_sql import check_table_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.providers.common.sql.hooks.sql import DbApiHook

log = logging.getLogger(__name__)

#: Columns every summary table has (the loader's first layout).
BASE_COLUMNS = (
    "run_id",
    "experiment_id",
    "evaluator_id",
    "status",
    "display_name",
    "item_count",
    "passed_count",
    "pass_rate",
    "mean_score_value",
    "total_tokens",
    "window_start",
    "window_end",
    "logical_date",
    "loaded_at",
)
#: Columns read when present (NULL otherwise).
OPTIONAL_COLUMNS = ("task_id", "map_index", "dag_run_id")
#: Gate table: the run column and the verdict column, first name found wins.
GATE_RUN_COLUMNS = ("run_id", "candidate_run_id")
GATE_VERDICT_COLUMNS = ("verdict", "outcome", "status", "result")


def parse_ts(value: Any) -> dt.datetime | None:
    """A UTC datetime from a driver value: a datetime (PostgreSQL) or ISO 8601 text (SQLite)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def is_failing(verdict: str) -> bool:
    """A gate verdict that means "regression" (the worst verdict of a run is shown)."""
    return any(word in verdict.lower() for word in ("fail", "regress"))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Run:
    """One summary row: what a chart point and a table row show."""

    run_id: str
    experiment_id: str | None
    evaluator_id: str | None
    task_id: str | None
    map_index: int | None
    dag_run_id: str | None
    display_name: str | None
    status: str | None
    item_count: int | None
    passed_count: int | None
    pass_rate: float | None
    mean_score: float | None
    total_tokens: int | None
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    logical_date: dt.datetime | None
    loaded_at: dt.datetime | None
    gate: str | None = None

    @property
    def window(self) -> tuple[dt.datetime, dt.datetime] | None:
        if self.window_start and self.window_end:
            return self.window_start, self.window_end
        return None

    @property
    def when(self) -> dt.datetime | None:
        """Where the run sits on the time axis: its window's middle, else its logical date or load time."""
        if self.window_start and self.window_end:
            return self.window_start + (self.window_end - self.window_start) / 2
        return self.window_start or self.window_end or self.logical_date or self.loaded_at

    @property
    def series(self) -> tuple[str, str]:
        return (self.task_id or "(task not recorded)", self.evaluator_id or "(no evaluator)")


@dataclass
class DagSummary:
    dag_id: str
    runs: int
    last_window_end: dt.datetime | None


@dataclass
class Facet:
    task_id: str | None
    evaluator_id: str | None
    runs: int


@dataclass
class DagPage:
    """What one DAG's page shows."""

    dag_id: str
    runs: list[Run]
    facets: list[Facet]
    total_runs: int
    gates_found: bool
    tables: list[str] = field(default_factory=list)
    superseded: int = 0  # runs of the DAG (with the filters) replaced by a later run, not listed


class Warehouse:
    """The summary tables named by ``[gip] results_table``, read through one common.sql hook."""

    def __init__(self, hook: DbApiHook, tables: Sequence[str]):
        self.hook = hook
        self.tables = [check_table_name(t, "[gip] results_table") for t in tables]
        self.ph = hook.placeholder
        self._columns: dict[str, set[str] | None] = {}
        self._conn: Any = None

    # -- plumbing: one connection per page, read-only ---------------------------------------------

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.rollback()
            self._conn.close()
            self._conn = None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = self.hook.get_conn()
        with closing(self._conn.cursor()) as cur:
            cur.execute(sql, tuple(params))
            return [tuple(r) for r in cur.fetchall()]

    def columns(self, table: str) -> set[str] | None:
        """The table's column names (lower case), or None when it does not exist."""
        if table not in self._columns:
            if self._conn is None:
                self._conn = self.hook.get_conn()
            try:
                with closing(self._conn.cursor()) as cur:
                    cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
                    cur.fetchall()
                    self._columns[table] = {str(d[0]).lower() for d in cur.description or ()}
            except Exception as exc:
                log.debug("Table %s is not readable: %s", table, exc)
                with suppress(Exception):
                    self._conn.rollback()  # PostgreSQL: the failed statement aborted the transaction
                self._columns[table] = None
        return self._columns[table]

    def _current(self, table: str) -> str:
        """The condition selecting current runs (every run in a table without ``superseded_by``)."""
        return "superseded_by IS NULL" if "superseded_by" in (self.columns(table) or ()) else "1 = 1"

    def summary_tables(self) -> list[str]:
        """The existing summary tables (``<table>_runs``) that have a ``dag_id`` column."""
        found = []
        for table in self.tables:
            cols = self.columns(f"{table}_runs")
            if cols is not None and "dag_id" in cols and "run_id" in cols:
                found.append(f"{table}_runs")
        return found

    # -- queries -------------------------------------------------------------------------------

    def dags(self, readable: Iterable[str] | None) -> list[DagSummary]:
        """Per DAG: run count and latest window end (a GROUP BY per summary table)."""
        allowed = None if readable is None else set(readable)
        merged: dict[str, DagSummary] = {}
        for summary in self.summary_tables():
            sql = (
                f"SELECT dag_id, COUNT(*), MAX(COALESCE(window_end, logical_date, loaded_at)) "
                f"FROM {summary} WHERE dag_id IS NOT NULL AND {self._current(summary)} GROUP BY dag_id"
            )
            for dag_id, count, last in self._query(sql):
                if allowed is not None and dag_id not in allowed:
                    continue
                item = merged.setdefault(dag_id, DagSummary(dag_id, 0, None))
                item.runs += int(count)
                last_ts = parse_ts(last)
                if last_ts and (item.last_window_end is None or last_ts > item.last_window_end):
                    item.last_window_end = last_ts
        return sorted(merged.values(), key=lambda d: d.dag_id)

    def dag_page(
        self, dag_id: str, *, task_id: str | None = None, evaluator_id: str | None = None, limit: int = 500
    ) -> DagPage:
        """The latest ``limit`` runs of one DAG (optionally one task / evaluator), oldest first."""
        ph = self.ph
        runs: list[Run] = []
        facets: dict[tuple[str | None, str | None], Facet] = {}
        total = 0
        superseded = 0
        gates_found = False
        tables = self.summary_tables()
        for summary in tables:
            cols = self.columns(summary) or set()
            has_task = "task_id" in cols
            task_expr = "task_id" if has_task else "NULL"
            current = self._current(summary)
            facet_sql = (
                f"SELECT {task_expr}, evaluator_id, SUM(CASE WHEN {current} THEN 1 ELSE 0 END), COUNT(*) "
                f"FROM {summary} WHERE dag_id = {ph} GROUP BY {task_expr}, evaluator_id"
            )
            for task, evaluator, count, every in self._query(facet_sql, (dag_id,)):
                facet = facets.setdefault((task, evaluator), Facet(task, evaluator, 0))
                facet.runs += int(count or 0)
                if (not task_id or task == task_id) and (not evaluator_id or evaluator == evaluator_id):
                    total += int(count or 0)
                    superseded += int(every) - int(count or 0)
            where = [f"dag_id = {ph}", current]
            params: list[Any] = [dag_id]
            if task_id:
                if not has_task:
                    continue
                where.append(f"task_id = {ph}")
                params.append(task_id)
            if evaluator_id:
                where.append(f"evaluator_id = {ph}")
                params.append(evaluator_id)
            select = [c if c in cols else "NULL" for c in (*BASE_COLUMNS, *OPTIONAL_COLUMNS)]
            order = "COALESCE(window_start, logical_date, loaded_at)"
            sql = (
                f"SELECT {', '.join(select)} FROM {summary} WHERE {' AND '.join(where)} "
                f"ORDER BY {order} DESC, run_id DESC LIMIT {int(limit)}"
            )
            table_runs = [self._run(row) for row in self._query(sql, params)]
            verdicts = self._gates(summary[: -len("_runs")], dag_id, [r.run_id for r in table_runs])
            if verdicts is not None:
                gates_found = True
                table_runs = [replace(r, gate=verdicts.get(r.run_id)) for r in table_runs]
            runs.extend(table_runs)
        runs.sort(key=lambda r: (r.when or dt.datetime.min.replace(tzinfo=dt.UTC), r.run_id))
        runs = runs[-limit:]
        ordered = sorted(facets.values(), key=lambda f: (f.task_id or "", f.evaluator_id or ""))
        return DagPage(dag_id, runs, ordered, total, gates_found, tables, superseded)

    @staticmethod
    def _run(row: Sequence[Any]) -> Run:
        (
            run_id,
            experiment_id,
            evaluator_id,
            status,
            display_name,
            item_count,
            passed_count,
            pass_rate,
            mean_score,
            total_tokens,
            window_start,
            window_end,
            logical_date,
            loaded_at,
            task_id,
            map_index,
            dag_run_id,
        ) = row
        return Run(
            run_id=str(run_id),
            experiment_id=experiment_id,
            evaluator_id=evaluator_id,
            task_id=task_id,
            map_index=int(map_index) if map_index is not None else None,
            dag_run_id=dag_run_id,
            display_name=display_name,
            status=status,
            item_count=int(item_count) if item_count is not None else None,
            passed_count=int(passed_count) if passed_count is not None else None,
            pass_rate=_num(pass_rate),
            mean_score=_num(mean_score),
            total_tokens=int(total_tokens) if total_tokens is not None else None,
            window_start=parse_ts(window_start),
            window_end=parse_ts(window_end),
            logical_date=parse_ts(logical_date),
            loaded_at=parse_ts(loaded_at),
        )

    def _gates(self, table: str, dag_id: str, run_ids: list[str]) -> dict[str, str] | None:
        """Gate verdict per run from ``<table>_gates`` when it exists; None without that table."""
        gates = f"{table}_gates"
        cols = self.columns(gates)
        if cols is None:
            return None
        run_col = next((c for c in GATE_RUN_COLUMNS if c in cols), None)
        verdict_col = next((c for c in GATE_VERDICT_COLUMNS if c in cols), None)
        if run_col is None or verdict_col is None or not run_ids:
            return {}
        verdicts: dict[str, str] = {}
        for start in range(0, len(run_ids), 400):
            chunk = run_ids[start : start + 400]
            where = f"{run_col} IN ({', '.join([self.ph] * len(chunk))})"
            params: list[Any] = list(chunk)
            if "dag_id" in cols:
                where += f" AND dag_id = {self.ph}"
                params.append(dag_id)
            for run_id, verdict in self._query(
                f"SELECT {run_col}, {verdict_col} FROM {gates} WHERE {where}", params
            ):
                if verdict is not None and (str(run_id) not in verdicts or is_failing(str(verdict))):
                    verdicts[str(run_id)] = str(verdict)
        return verdicts
