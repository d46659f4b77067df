"""The evaluation ledger: one row per paid GIP run, keyed by a fingerprint of the evaluation.

A new DAG run of an evaluation that is already DONE reuses that run instead of paying again; a forced
re-run marks the earlier row SUPERSEDED once it is DONE itself. Each row keeps the estimate and the actual
tokens and cost of its run, and shared budgets are reserved atomically against the rows of a period: under
``pg_advisory_xact_lock`` on PostgreSQL and in a ``BEGIN IMMEDIATE`` transaction on SQLite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

__all__ = [
    "DEFAULT_LEDGER_TABLE",
    "RESERVATION_TTL",
    "Budget",
    "BudgetExhausted",
    "EvaluationBusy",
    "Ledger",
    "Status",
    "fingerprint",
]

DEFAULT_LEDGER_TABLE = "gip_evaluation_ledger"
#: How long a reservation without a GIP run counts as live (creating the run takes seconds).
RESERVATION_TTL = dt.timedelta(minutes=15)


class Status:
    RESERVED = "RESERVED"  # budget reserved, the GIP run not created yet
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    SUPERSEDED = "SUPERSEDED"  # DONE, then replaced by a forced re-run


class BudgetExhausted(AirflowFailException):
    """A run's estimate does not fit in what is left of its budget; retrying will not help."""


class EvaluationBusy(AirflowException):
    """Another task is starting the same evaluation right now; a retry will attach to its run."""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(identity: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an evaluation's identity (key order and whitespace do not matter)."""
    return hashlib.sha256(canonical(identity).encode("utf-8")).hexdigest()


def evaluation_identity(
    *,
    dag_id: str,
    task_id: str,
    experiment: Mapping[str, Any],
    evaluator: Mapping[str, Any],
    target_data_converter: Mapping[str, Any] | None,
    langfuse_project: Any = None,
    dataset_version: str | None = None,
    run_scope: str | None = None,
) -> dict[str, Any]:
    """What identifies an evaluation: DAG and task, the experiment definition (its window, or its dataset
    and version), the evaluator definition (judge model and parameters, prompt, metric) and the converter.

    The credential id is replaced by the Langfuse project it points to when known (a credential registered
    again for the same keys is the same source). ``run_scope`` (the DAG run) is set for relative windows,
    which evaluate a different period at every run.
    """
    config = dict(experiment.get("config") or {})
    credential = config.pop("integrated_service_credential_id", None)
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "experiment": {"type": experiment.get("type"), "config": config},
        "source": langfuse_project if langfuse_project is not None else credential,
        "dataset_version": dataset_version,
        "evaluator": {
            "type": evaluator.get("type"),
            "metric": evaluator.get("metric"),
            "evaluation_config": evaluator.get("evaluation_config"),
        },
        "target_data_converter": dict(target_data_converter) if target_data_converter else None,
        "run_scope": run_scope,
    }


def history_key(experiment_type: str | None, evaluator: Mapping[str, Any], converter: Any) -> str:
    """Rows with this key have comparable tokens per item: same target kind, evaluator and converter."""
    return fingerprint({"type": experiment_type, "evaluator": dict(evaluator), "converter": converter})[:32]


@dataclasses.dataclass(frozen=True)
class Budget:
    """A shared spending limit for a period (UTC calendar day or month), per connection or per team.

    Runs with the same ``name`` share it; the default name is the ``gip`` connection id. ``unit`` is
    ``cost`` (US dollars, priced with the price table) or ``tokens``.
    """

    amount: float
    period: Literal["day", "month"] = "month"
    name: str | None = None
    unit: Literal["cost", "tokens"] = "cost"

    @classmethod
    def of(cls, value: Budget | Mapping[str, Any], where: str) -> Budget:
        if isinstance(value, Budget):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: budget must be a dict like {{'amount': 50, 'period': 'month'}}")
        unknown = set(value) - {"amount", "period", "name", "team", "unit"}
        if unknown:
            raise ValueError(
                f"{where}: unknown budget keys {sorted(unknown)}; use amount, period, name, unit"
            )
        try:
            amount = float(value["amount"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{where}: budget needs a numeric 'amount' (US dollars, or tokens with unit)"
            ) from None
        period, unit = value.get("period", "month"), value.get("unit", "cost")
        if period not in ("day", "month"):
            raise ValueError(f"{where}: budget period must be 'day' or 'month', got {period!r}")
        if unit not in ("cost", "tokens"):
            raise ValueError(f"{where}: budget unit must be 'cost' or 'tokens', got {unit!r}")
        if amount <= 0:
            raise ValueError(f"{where}: budget amount must be positive, got {amount:g}")
        name = value.get("name") or value.get("team")
        return cls(amount=amount, period=period, name=str(name) if name else None, unit=unit)

    def key(self, gip_conn_id: str) -> str:
        return self.name or f"conn:{gip_conn_id}"

    def period_of(self, at: dt.datetime) -> str:
        return at.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")

    def fmt(self, value: float) -> str:
        return f"${value:.4f}" if self.unit == "cost" else f"{value:.0f} tokens"


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

#: (column, kind); kinds map to SQL types per database.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("entry_id", "key"),
    ("fingerprint", "text"),
    ("status", "text"),
    ("dag_id", "text"),
    ("task_id", "text"),
    ("airflow_run_id", "text"),
    ("map_index", "int"),
    ("try_number", "int"),
    ("experiment_id", "text"),
    ("evaluator_id", "text"),
    ("gip_run_id", "text"),
    ("experiment_type", "text"),
    ("history_key", "text"),
    ("judge_model", "text"),
    ("budget_key", "text"),
    ("budget_period", "text"),
    ("items_estimated", "real"),
    ("sampling_rate", "real"),
    ("est_prompt_tokens", "int"),
    ("est_completion_tokens", "int"),
    ("est_cost", "real"),
    ("prompt_tokens", "int"),
    ("completion_tokens", "int"),
    ("total_tokens", "int"),
    ("cost", "real"),
    ("superseded_by", "text"),
    ("identity", "text"),
    ("created_at", "text"),
    ("updated_at", "text"),
)
_TYPES = {
    "postgresql": {
        "key": "VARCHAR(64) PRIMARY KEY",
        "text": "TEXT",
        "int": "BIGINT",
        "real": "DOUBLE PRECISION",
    },
    "sqlite": {"key": "TEXT PRIMARY KEY", "text": "TEXT", "int": "INTEGER", "real": "REAL"},
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
_LIVE = (Status.RESERVED, Status.RUNNING)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


Decision = tuple[Literal["reuse", "attach", "new"], dict[str, Any]]


class Ledger:
    """The ledger table in a PostgreSQL or SQLite database reached through a common.sql hook."""

    def __init__(self, hook: DbApiHook, table: str = DEFAULT_LEDGER_TABLE) -> None:
        self.check_table_name(table)
        dialect = getattr(hook, "dialect_name", None)
        if dialect not in _TYPES:
            raise ValueError(
                f"The ledger needs PostgreSQL or SQLite (atomic budget reservations); connection "
                f"{getattr(hook, 'get_conn_id', lambda: '?')()!r} is {dialect!r}"
            )
        self.hook = hook
        self.table = table
        self.dialect: str = dialect
        self.ph = "%s" if dialect == "postgresql" else "?"
        self._lock_id = int.from_bytes(
            hashlib.sha256(f"gip-ledger:{table}".encode()).digest()[:8], "big", signed=True
        )
        self._ready = False

    @staticmethod
    def check_table_name(table: str) -> None:
        if not isinstance(table, str) or not _NAME.match(table):
            raise ValueError(
                f"ledger_table {table!r} is not a plain table name; use letters, digits and _ "
                "(optionally schema.table)"
            )

    @classmethod
    def from_conn_id(cls, conn_id: str, table: str = DEFAULT_LEDGER_TABLE) -> Ledger:
        from airflow.providers.common.sql.hooks.sql import DbApiHook
        from airflow.sdk import BaseHook

        hook = BaseHook.get_connection(conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise ValueError(
                f"ledger_conn_id {conn_id!r} is not a SQL database connection (postgres or sqlite)"
            )
        return cls(hook, table)

    # -- transactions -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One serialized transaction: every ledger change holds the table's lock until commit."""
        conn = self.hook.get_conn()
        try:
            if self.dialect == "sqlite":
                conn.isolation_level = None  # manual transactions
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
            else:
                cur = conn.cursor()
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_id,))
            if not self._ready:
                self._create(cur)
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK") if self.dialect == "sqlite" else conn.rollback()
                raise
            cur.execute("COMMIT") if self.dialect == "sqlite" else conn.commit()
            self._ready = True
        finally:
            conn.close()

    def _create(self, cur: Any) -> None:
        types = _TYPES[self.dialect]
        columns = ", ".join(f"{name} {types[kind]}" for name, kind in COLUMNS)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")
        schema, _, base = self.table.rpartition(".")
        for suffix, cols in (("fp", "fingerprint, status"), ("budget", "budget_key, budget_period")):
            index = f"{base}_{suffix}_idx"
            if self.dialect == "sqlite" and schema:
                cur.execute(f"CREATE INDEX IF NOT EXISTS {schema}.{index} ON {base} ({cols})")
            else:
                cur.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {self.table} ({cols})")

    def _select(self, cur: Any, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        cur.execute(f"SELECT * FROM {self.table} WHERE {where} ORDER BY created_at DESC", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _update(self, cur: Any, entry_id: str, **values: Any) -> None:
        values["updated_at"] = _stamp(_now())
        sets = ", ".join(f"{k} = {self.ph}" for k in values)
        cur.execute(
            f"UPDATE {self.table} SET {sets} WHERE entry_id = {self.ph}", (*values.values(), entry_id)
        )

    # -- reading ----------------------------------------------------------------------------------

    def rows(self, where: str = "1 = 1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.transaction() as cur:
            return self._select(cur, where, params)

    def entry_of_run(self, gip_run_id: str) -> dict[str, Any] | None:
        """The row of a GIP run, a finished one first; None when the table or the row does not exist.

        Read without the table's lock and without creating the table: a reader of the ledger, such as the
        warehouse load, never writes to it.
        """
        ph = self.ph
        conn = self.hook.get_conn()
        try:
            cur = conn.cursor()
            try:
                cur.execute(
                    f"SELECT * FROM {self.table} WHERE gip_run_id = {ph} "
                    f"ORDER BY CASE WHEN status IN ({ph}, {ph}) THEN 0 ELSE 1 END, created_at DESC",
                    (gip_run_id, Status.DONE, Status.SUPERSEDED),
                )
            except Exception as exc:
                if getattr(exc, "sqlstate", None) == "42P01" or "no such table" in str(exc):
                    return None
                raise
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
            return dict(zip(names, row, strict=True)) if row is not None else None
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()
            conn.close()

    def spent(self, cur: Any, budget: Budget, key: str, period: str, now: dt.datetime) -> float:
        """Actual use of finished runs plus the estimates of live ones, in the budget's unit."""
        actual, estimate = (
            ("cost", "est_cost")
            if budget.unit == "cost"
            else (
                "total_tokens",
                "est_prompt_tokens + est_completion_tokens",
            )
        )
        stale = _stamp(now - RESERVATION_TTL)
        ph = self.ph
        cur.execute(
            f"SELECT COALESCE(SUM(CASE WHEN status IN ({ph}, {ph}) THEN {estimate} ELSE {actual} END), 0) "
            f"FROM {self.table} WHERE budget_key = {ph} AND budget_period = {ph} "
            f"AND NOT (status = {ph} AND created_at < {ph})",
            (*_LIVE, key, period, Status.RESERVED, stale),
        )
        return float(cur.fetchone()[0] or 0)

    def tokens_per_item(
        self, key: str, judge_model: str | None, experiment_type: str | None
    ) -> tuple[float, float] | None:
        """Mean (prompt, completion) tokens per item of finished runs: same evaluator first, then the same
        judge model on the same kind of targets; None without history."""
        ph = self.ph
        done = f"status IN ({ph}, {ph}) AND items_estimated > 0 AND total_tokens IS NOT NULL"
        with self.transaction() as cur:
            for where, params in (
                (f"history_key = {ph}", (key,)),
                (f"judge_model = {ph} AND experiment_type = {ph}", (judge_model, experiment_type)),
            ):
                cur.execute(
                    "SELECT SUM(prompt_tokens), SUM(completion_tokens), SUM(items_estimated) "
                    f"FROM {self.table} WHERE {done} AND {where}",
                    (Status.DONE, Status.SUPERSEDED, *params),
                )
                prompt, completion, items = cur.fetchone()
                if items:
                    return float(prompt or 0) / float(items), float(completion or 0) / float(items)
        return None

    # -- the decision before a paid call -----------------------------------------------------------

    def begin(
        self,
        entry: Mapping[str, Any],
        *,
        force: bool,
        check_limits: Callable[[], None] = lambda: None,
        budget: Budget | None = None,
        budget_key: str | None = None,
        settle: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> Decision:
        """Reuse a DONE evaluation, attach to a running one, or reserve a new run, in one locked transaction.

        ``entry`` holds the new row's values (``fingerprint``, task identity, estimate). ``settle`` gives
        the final values of a RUNNING row whose GIP run has ended (None while it runs). ``check_limits``
        raises when the task's own limits refuse a new run; the budget is checked after it.
        """
        now = _now()
        fp = entry["fingerprint"]
        with self.transaction() as cur:
            live_or_done = self._select(
                cur,
                f"fingerprint = {self.ph} AND status IN ({self.ph}, {self.ph}, {self.ph})",
                (fp, Status.DONE, *_LIVE),
            )
            for row in live_or_done:
                if row["status"] == Status.RUNNING and settle is not None:
                    values = settle(row)  # e.g. a run whose task ended without recording it
                    if values:
                        self._update(cur, row["entry_id"], **values)
                        row.update(values)
            done = [r for r in live_or_done if r["status"] == Status.DONE]
            if done and not force:
                return "reuse", done[0]
            running = [r for r in live_or_done if r["status"] == Status.RUNNING]
            if running:
                return "attach", running[0]
            for row in (r for r in live_or_done if r["status"] == Status.RESERVED):
                mine = all(
                    row[k] == entry.get(k) for k in ("dag_id", "task_id", "airflow_run_id", "map_index")
                )
                if mine or row["created_at"] < _stamp(now - RESERVATION_TTL):
                    self._update(cur, row["entry_id"], status=Status.FAILED)
                else:
                    raise EvaluationBusy(
                        f"DAG run {row['airflow_run_id']!r} is starting this evaluation (ledger entry "
                        f"{row['entry_id']}); a retry will reuse its run"
                    )
            check_limits()
            row = {name: None for name, _ in COLUMNS}
            row.update(entry)
            row.update(entry_id=str(uuid.uuid4()), status=Status.RESERVED, created_at=_stamp(now))
            row["updated_at"] = row["created_at"]
            if budget is not None and budget_key:
                period = budget.period_of(now)
                spent = self.spent(cur, budget, budget_key, period, now)
                wanted = (
                    float(entry.get("est_cost") or 0)
                    if budget.unit == "cost"
                    else float(
                        (entry.get("est_prompt_tokens") or 0) + (entry.get("est_completion_tokens") or 0)
                    )
                )
                if spent + wanted > budget.amount:
                    raise BudgetExhausted(
                        f"budget exhausted: spent {budget.fmt(spent)} of {budget.fmt(budget.amount)} "
                        f"(budget {budget_key!r}, {budget.period} {period}); this run needs about "
                        f"{budget.fmt(wanted)}"
                    )
                row.update(budget_key=budget_key, budget_period=period)
            names = [name for name, _ in COLUMNS]
            cur.execute(
                f"INSERT INTO {self.table} ({', '.join(names)}) VALUES ({', '.join([self.ph] * len(names))})",
                tuple(row[n] for n in names),
            )
            return "new", row

    def started(self, entry_id: str, *, experiment_id: str, gip_run_id: str) -> None:
        with self.transaction() as cur:
            self._update(
                cur, entry_id, status=Status.RUNNING, experiment_id=experiment_id, gip_run_id=gip_run_id
            )

    def finish(
        self,
        gip_run_id: str,
        *,
        done: bool,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cost: float | None,
    ) -> None:
        """Record the end and actual use of a GIP run (every live row waiting for it); a DONE run supersedes
        the earlier DONE runs of its evaluation."""
        total = None if prompt_tokens is None else prompt_tokens + (completion_tokens or 0)
        ph = self.ph
        with self.transaction() as cur:
            for row in self._select(
                cur, f"gip_run_id = {ph} AND status IN ({ph}, {ph})", (gip_run_id, *_LIVE)
            ):
                self._update(
                    cur,
                    row["entry_id"],
                    status=Status.DONE if done else Status.FAILED,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=total,
                    cost=cost,
                )
            if done:
                cur.execute(
                    f"UPDATE {self.table} SET status = {ph}, superseded_by = {ph}, updated_at = {ph} "
                    f"WHERE status = {ph} AND gip_run_id <> {ph} AND fingerprint IN "
                    f"(SELECT fingerprint FROM {self.table} WHERE gip_run_id = {ph})",
                    (Status.SUPERSEDED, gip_run_id, _stamp(_now()), Status.DONE, gip_run_id, gip_run_id),
                )
