"""What the regression gate reads from the warehouse, and the ``<table>_gates`` verdict table.

Queries only aggregate: per run and segment the counts, sums and sums of squares (unpaired tests);
per segment the concordant/discordant pass counts and the counts of distinct score differences
(paired tests). Run-level facts (dag, evaluator, window) come from the summary table, joined on
``run_id``, so the queries work whether or not the results table repeats them on every row.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gip_airflow.api import RESULT_CSV_COLUMNS
from gip_airflow.transfers.tables import SUMMARY_TABLE, create_table_sql, flavour_of, quoter, table_columns

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.sql.hooks.sql import DbApiHook

#: Row-level columns of the results table (present in every layout).
ROW_COLUMNS = frozenset({*RESULT_CSV_COLUMNS, "run_id", "row_number", "score_value"})
#: Run-level columns, read from the summary table.
RUN_COLUMNS = frozenset(c for c, _, _ in SUMMARY_TABLE)
_PAIRED, _REPEATED, _UNMATCHED = 1, 2, 0
#: Default item key of paired comparisons: the evaluated input and the source's output (for a dataset
#: experiment, the item's expected output), which together tell dataset items apart.
PAIR_BY = ("input_data_from_experiment", "output_data_from_experiment")
_RUN_COLUMNS = "run_id, dag_id, evaluator_id, COALESCE(window_start, loaded_at), window_start, window_end"
_EXTRA_KEY = re.compile(r"^extra\.([A-Za-z_][A-Za-z0-9_]{0,62})$")

#: The verdict table: one row per gate run, metric and segment.
GATES_TABLE: tuple[tuple[str, str, bool], ...] = (
    ("run_id", "id", True),
    ("gate", "id", True),
    ("metric", "id", True),
    ("segment", "id", True),
    ("baseline_kind", "id", True),
    ("baseline", "text", False),
    ("method", "id", False),
    ("n_current", "int", False),
    ("n_baseline", "int", False),
    ("current_value", "float", False),
    ("baseline_value", "float", False),
    ("estimate", "float", False),
    ("ci_low", "float", False),
    ("ci_high", "float", False),
    ("confidence", "float", False),
    ("p_value", "float", False),
    ("alpha", "float", False),
    ("tolerance", "float", False),
    ("direction", "id", False),
    ("verdict", "id", True),
    ("dag_id", "id", False),
    ("checked_at", "ts", True),
)


def column_expr(name: str, *, what: str, dialect: str) -> tuple[str, bool]:
    """The SQL expression of a segment or pairing column, and whether it needs the summary join.

    ``name``: a column of the results table, a run-level column of the summary table, or
    ``extra.<key>`` for a key of the ``extra`` JSON (extra CSV columns).
    """
    match = _EXTRA_KEY.match(name)
    if match:
        key = match.group(1)
        if dialect == "postgresql":
            return f"(r.extra ->> '{key}')", False
        if dialect == "sqlite":
            return f"CAST(json_extract(r.extra, '$.{key}') AS TEXT)", False
        return f"JSON_VALUE(r.extra, '$.{key}')", False
    if name in RUN_COLUMNS and name != "run_id":
        return f"s.{name}", True
    if name in ROW_COLUMNS:
        return f"r.{name}", False
    raise ValueError(
        f"{what} {name!r} is not a column of the results or summary table, nor 'extra.<key>'; use one of "
        f"{sorted(ROW_COLUMNS | RUN_COLUMNS)} or e.g. 'extra.tag' for a key of the extra JSON"
    )


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    dag_id: str | None
    evaluator_id: str | None
    at: Any  # COALESCE(window_start, loaded_at), as the database returns it
    window_start: Any
    window_end: Any


@dataclass
class Aggregate:
    """One run (or pooled runs) and segment: pass counts and score moments."""

    n_pass: int = 0
    passed: int = 0
    n_score: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, other: Aggregate) -> None:
        self.n_pass += other.n_pass
        self.passed += other.passed
        self.n_score += other.n_score
        self.total += other.total
        self.total_sq += other.total_sq


@dataclass
class PairedPass:
    both: int = 0
    lost: int = 0  # baseline passed, current failed
    gained: int = 0
    neither: int = 0

    @property
    def n(self) -> int:
        return self.both + self.lost + self.gained + self.neither


class GateReader:
    """Reads aggregates for the gate through a common.sql hook (one short query each)."""

    def __init__(
        self,
        hook: DbApiHook,
        table: str,
        summary_table: str,
        *,
        segment_by: str | None = None,
        pair_by: Sequence[str] = PAIR_BY,
    ) -> None:
        self.hook = hook
        self.table = table
        self.summary_table = summary_table
        self.dialect = flavour_of(hook).name
        self.ph = hook.placeholder
        if segment_by:
            self.segment, self.segment_join = column_expr(segment_by, what="segment_by", dialect=self.dialect)
        else:
            self.segment, self.segment_join = "''", False
        keys = [column_expr(c, what="pair_by", dialect=self.dialect) for c in pair_by]
        self.pair_keys = [expr for expr, _ in keys]
        self.pair_join = any(join for _, join in keys)
        self._summary_columns: set[str] | None = None
        self._paired_cache: dict[
            tuple[str, str], tuple[dict[str, PairedPass], dict[str, dict[float, int]]]
        ] = {}

    def _records(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with closing(self.hook.get_conn()) as conn, closing(conn.cursor()) as cur:
            cur.execute(sql, tuple(params))
            rows = cur.fetchall()
            with suppress(Exception):
                conn.rollback()  # end the read transaction; nothing was written
        return [tuple(r) for r in rows]

    def _from(self, join: bool) -> str:
        joined = f" JOIN {self.summary_table} s ON s.run_id = r.run_id" if join else ""
        return f"{self.table} r{joined}"

    def run_info(self, run_id: str) -> RunInfo | None:
        rows = self._records(
            f"SELECT {_RUN_COLUMNS} FROM {self.summary_table} WHERE run_id = {self.ph}",
            (run_id,),
        )
        return RunInfo(*rows[0]) if rows else None

    def summary_columns(self) -> set[str]:
        """The summary table's columns (lower case); empty when it cannot be read."""
        if self._summary_columns is None:
            try:
                with closing(self.hook.get_conn()) as conn, closing(conn.cursor()) as cur:
                    try:
                        found = table_columns(conn, cur, flavour_of(self.hook), self.summary_table)
                        self._summary_columns = set(found or ())
                    finally:
                        with suppress(Exception):
                            conn.rollback()
            except Exception:
                self._summary_columns = set()
        return self._summary_columns

    def trailing_runs(self, current: RunInfo, windows: int, *, same_evaluator: bool) -> list[RunInfo]:
        """The ``windows`` latest earlier runs of the same DAG (and evaluator), newest first; only the
        current run of each evaluation (a superseded run of a re-evaluated window does not count twice)."""
        where = [
            f"dag_id = {self.ph}",
            f"run_id <> {self.ph}",
            f"COALESCE(window_start, loaded_at) < {self.ph}",
        ]
        if "superseded_by" in self.summary_columns():
            where.append("superseded_by IS NULL")
        params: list[Any] = [current.dag_id, current.run_id, current.at]
        if same_evaluator and current.evaluator_id is not None:
            where.append(f"evaluator_id = {self.ph}")
            params.append(current.evaluator_id)
        rows = self._records(
            f"SELECT {_RUN_COLUMNS} FROM {self.summary_table} WHERE {' AND '.join(where)} "
            f"ORDER BY COALESCE(window_start, loaded_at) DESC LIMIT {int(windows)}",
            params,
        )
        return [RunInfo(*r) for r in rows]

    def aggregates(self, run_ids: Sequence[str]) -> dict[tuple[str, str], Aggregate]:
        """``(run_id, segment) -> Aggregate`` for the given runs: counts and sums only."""
        if not run_ids:
            return {}
        marks = ", ".join([self.ph] * len(run_ids))
        rows = self._records(
            f"SELECT r.run_id, {self.segment}, COUNT(r.passed), "
            "SUM(CASE WHEN r.passed THEN 1 ELSE 0 END), COUNT(r.score_value), SUM(r.score_value), "
            f"SUM(r.score_value * r.score_value) FROM {self._from(self.segment_join)} "
            f"WHERE r.run_id IN ({marks}) GROUP BY 1, 2",
            list(run_ids),
        )
        return {
            (str(run), _segment(seg)): Aggregate(
                int(n_pass or 0), int(passed or 0), int(n_score or 0), float(s or 0.0), float(ss or 0.0)
            )
            for run, seg, n_pass, passed, n_score, s, ss in rows
        }

    def paired(
        self, current: str, baseline: str
    ) -> tuple[dict[str, PairedPass], dict[str, dict[float, int]]]:
        """Pass/fail pairs and counts of score differences per segment.

        Items pair on the key. Pairs are formed by one GROUP BY over both runs' rows (a hash or sort,
        never a nested-loop join); the outer query counts them per (segment, current passed, baseline
        passed, score difference). When a key repeats within a run (a dataset with identical items),
        the query runs again with each key's occurrences numbered in row order, so that the k-th copy
        in one run pairs with the k-th in the other.
        """
        key = (current, baseline)
        if key in self._paired_cache:
            return self._paired_cache[key]
        rows = self._pairs_query(key, numbered=False)
        if any(kind == _REPEATED for *_, kind in rows):
            rows = self._pairs_query(key, numbered=True)
        rows = [r for r in rows if r[-1] == _PAIRED]
        passes: dict[str, PairedPass] = {}
        diffs: dict[str, dict[float, int]] = {}
        for seg, cp, bp, d, count, _ in rows:
            segment, n = _segment(seg), int(count)
            if cp is not None and bp is not None:
                pp = passes.setdefault(segment, PairedPass())
                if cp and bp:
                    pp.both += n
                elif bp:
                    pp.lost += n
                elif cp:
                    pp.gained += n
                else:
                    pp.neither += n
            if d is not None:
                # merge differences that only differ by floating-point noise (0.7 - 0.3 vs 0.5 - 0.1)
                bucket = diffs.setdefault(segment, {})
                value = round(float(d), 12)
                bucket[value] = bucket.get(value, 0) + n
        self._paired_cache[key] = (passes, diffs)
        return passes, diffs

    def _pairs_query(self, params: tuple[str, str], *, numbered: bool) -> list[tuple[Any, ...]]:
        """Rows ``(seg, cp, bp, d, count, kind)``; kind tells pairs from unmatched and repeated keys."""
        join = self.pair_join or self.segment_join
        exprs = list(self.pair_keys)
        keys = ", ".join(f"{expr} AS k{i}" for i, expr in enumerate(exprs))
        group = ", ".join(f"k{i}" for i in range(len(exprs)))
        if numbered:
            keys += f", ROW_NUMBER() OVER (PARTITION BY {', '.join(exprs)} ORDER BY r.row_number) AS occ"
            group += ", occ"

        def side(flag: int) -> str:
            return (
                f"SELECT {keys}, {flag} AS side, {self.segment} AS seg, "
                "CASE WHEN r.passed IS NULL THEN NULL WHEN r.passed THEN 1 ELSE 0 END AS p, "
                f"r.score_value AS s FROM {self._from(join)} WHERE r.run_id = {self.ph}"
            )

        groups = (
            "SELECT MAX(CASE WHEN side = 1 THEN seg END) AS seg, "
            "MAX(CASE WHEN side = 1 THEN p END) AS cp, MAX(CASE WHEN side = 0 THEN p END) AS bp, "
            "MAX(CASE WHEN side = 1 THEN s END) - MAX(CASE WHEN side = 0 THEN s END) AS d, "
            f"CASE WHEN COUNT(*) = 2 AND SUM(side) = 1 THEN {_PAIRED} "
            f"WHEN SUM(side) > 1 OR COUNT(*) - SUM(side) > 1 THEN {_REPEATED} ELSE {_UNMATCHED} END AS kind "
            f"FROM ({side(1)} UNION ALL {side(0)}) u GROUP BY {group}"
        )
        return self._records(
            f"SELECT seg, cp, bp, d, COUNT(*), kind FROM ({groups}) g GROUP BY 1, 2, 3, 4, 6", params
        )

    def paired_pass(self, current: str, baseline: str) -> dict[str, PairedPass]:
        return self.paired(current, baseline)[0]

    def paired_differences(self, current: str, baseline: str) -> dict[str, dict[float, int]]:
        """``segment -> {difference: count}`` of ``current.score_value - baseline.score_value``."""
        return self.paired(current, baseline)[1]


def _segment(value: Any) -> str:
    return "" if value is None else str(value)


def write_verdicts(
    hook: DbApiHook,
    gates_table: str,
    rows: list[dict[str, Any]],
    *,
    run_id: str,
    gate: str,
    create_table: bool,
) -> None:
    """Replace this gate's verdict rows for ``run_id`` in one transaction (a rerun leaves one copy)."""
    flavour = flavour_of(hook)
    quote = quoter(hook)
    ph = hook.placeholder
    columns = [c for c, _, _ in GATES_TABLE]
    insert = (
        f"INSERT INTO {gates_table} ({', '.join(map(quote, columns))}) "
        f"VALUES ({', '.join([ph] * len(columns))})"
    )
    with closing(hook.get_conn()) as conn:
        try:
            if getattr(hook, "supports_autocommit", False):
                hook.set_autocommit(conn, False)
            with closing(conn.cursor()) as cur:
                if create_table:
                    cur.execute(
                        create_table_sql(
                            gates_table, flavour, GATES_TABLE, ("run_id", "gate", "metric", "segment"), quote
                        )
                    )
                cur.execute(
                    f"DELETE FROM {gates_table} WHERE {quote('run_id')} = {ph} AND {quote('gate')} = {ph}",
                    (run_id, gate),
                )
                values = []
                for row in rows:
                    record = dict(row)
                    record["checked_at"] = flavour.timestamp(record["checked_at"])
                    if not isinstance(record.get("baseline"), str | None):
                        record["baseline"] = json.dumps(record["baseline"])
                    values.append(tuple(record.get(c) for c in columns))
                if values:
                    cur.executemany(insert, values)
            conn.commit()
        except BaseException:
            with suppress(Exception):
                conn.rollback()
            raise


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
