"""Load the result CSV of a finished GIP experiment run into a SQL table (any common.sql database).

The CSV is streamed to a temporary file and from there into the database in ~1 MiB blocks, so memory
stays flat however large the run. PostgreSQL gets ``COPY ... FROM STDIN``; other databases batched
``executemany`` inserts. The load is one transaction: a run loaded twice is there once, and a failed
load leaves the previous state untouched. docs/transfer.md shows the tables' DDL per database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import Asset, AssetAlias, BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from gip_airflow import api
from gip_airflow.assets import TableLocation, table_location
from gip_airflow.exceptions import GipEndpointDisabledError, GipNotFoundError
from gip_airflow.hooks.gip import GipHook
from gip_airflow.ledger import DEFAULT_LEDGER_TABLE, Ledger, Status, fingerprint
from gip_airflow.transfers._result_csv import ResultCsvError
from gip_airflow.transfers._sql import RunMeta, check_table_name, load_result_csv

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Connection, Context

    from gip_airflow.transfers._result_csv import Metric

__all__ = ["GipToSqlOperator", "ResultCsvError", "result_alias", "result_asset"]

#: Name prefix of the Asset aliases this operator declares: ``gip-results/<conn_id>/<table>``.
ALIAS_PREFIX = "gip-results"
#: Download directories are ``<tmp_dir>/gip-result-*``; each holds a ``.lock`` file its load keeps locked.
DOWNLOAD_DIR_PREFIX = "gip-result-"
_LOCK_FILE = ".lock"

log = logging.getLogger(__name__)


@contextlib.contextmanager
def download_dir(parent: str | None = None) -> Iterator[str]:
    """A fresh directory for one download, locked (``flock``) while in use and removed afterwards.

    First removes what killed loads left behind: directories whose lock nobody holds any more (the
    kernel releases a lock when its process dies, ``SIGKILL`` included). The lock file is created under
    another name and renamed once locked, so a directory with a ``.lock`` is always locked while in use.
    """
    parent = parent or tempfile.gettempdir()
    remove_abandoned_downloads(parent)
    path = tempfile.mkdtemp(prefix=DOWNLOAD_DIR_PREFIX, dir=parent)
    try:
        with open(os.path.join(path, _LOCK_FILE + ".new"), "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.rename(lock.name, os.path.join(path, _LOCK_FILE))
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_abandoned_downloads(parent: str) -> list[str]:
    """Delete the ``gip-result-*`` directories of loads that died; return their paths."""
    removed: list[str] = []
    candidates: list[str] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(parent) as entries:
        candidates = [e.path for e in entries if e.name.startswith(DOWNLOAD_DIR_PREFIX) and e.is_dir()]
    for path in candidates:
        try:
            with open(os.path.join(path, _LOCK_FILE), "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                with os.scandir(path) as files:
                    size = sum(f.stat().st_size for f in files if f.is_file())
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # no lock file (not ours, or not set up yet), locked (in use), or already gone
            continue
        removed.append(path)
        log.info("Removed %s (%.1f MB), left behind by a load that was killed", path, size / 1e6)
    return removed


def result_asset(conn_id: str, table: str, *, database: str | None = None) -> Asset:
    """The canonical Asset of a results (or summary) table, for ``schedule=[...]`` of downstream DAGs.

    Reads the connection (host, port, database) to build the URI the database's provider uses, e.g.
    ``postgres://db:5432/warehouse/public/gip_results``: see :mod:`gip_airflow.assets`. Writing that
    URI literally in ``Asset(...)`` is equivalent and reads no connection when the DAG is parsed.
    """
    return Asset(table_location(BaseHook.get_connection(conn_id), table, database=database).uri)


def result_alias(conn_id: str, table: str) -> AssetAlias:
    """The Asset alias a load declares for a table; its events carry the table's canonical Asset.

    The canonical URI needs the connection's host and database, which are only read at run time;
    pass ``outlets=[result_alias(conn_id, table), ...]`` to ``partial()`` of a mapped load.
    """
    return AssetAlias(f"{ALIAS_PREFIX}/{conn_id}/{table}", group="gip-results")


def _templated(value: Any) -> bool:
    return not isinstance(value, str) or "{{" in value or "{%" in value


class GipToSqlOperator(BaseOperator):
    """Load the result CSV of a ``DONE`` GIP run into ``table``, plus a summary row into ``<table>_runs``.

    Every CSV row becomes a row of ``table``: the documented CSV columns, ``passed`` as a boolean,
    ``score_value`` (the score as a number: numeric metric -> the value, bool -> 1/0, category -> its
    index), unknown extra CSV columns as a JSON object in ``extra``, ``run_id`` and ``row_number``. The
    run's facts are stored once, in the summary table's row for the run: status, item/passed/failed
    counts, pass rate, mean score_value, token usage, window, ``experiment_id``, ``evaluator_id``,
    ``dag_id``, ``logical_date`` (empty for manual runs), ``data_interval_start``/``_end`` and
    ``loaded_at``: what dashboards and quality gates (``SQLThresholdCheckOperator``) read. The view
    ``<table>_v`` joins each row to its run's facts.

    Loading is one transaction (delete the run's rows, stream the new ones in, write the summary row):
    re-running the task leaves exactly one copy, and a failure half-way leaves the previous state. A
    malformed CSV fails with the row, line and what is wrong, before anything is committed.

    One summary row per evaluation is current: a run of an evaluation that was loaded before (the same
    window evaluated again) marks the earlier rows ``superseded_by`` itself. The evaluation is the ledger's
    fingerprint when ``ledger_conn_id`` names the run operator's ledger (which also gives ``cost``), else
    the DAG, task, map index, window, experiment and evaluator of the load.

    Emits asset events for both tables under their canonical URIs (the URI the database's provider
    uses, e.g. ``postgres://host:5432/db/public/<table>``; see :mod:`gip_airflow.assets`), so DAGs
    scheduled on those Assets run after the load; the event's ``extra`` names the run. The URIs need
    the connection, which is read at run time: the operator declares the aliases
    ``gip-results/<conn_id>/<table>`` and ``.../<summary_table>`` as outlets (when the table names are
    not templated) and adds the canonical Assets to them. With ``.partial().expand()`` the constructor
    runs only at run time: pass ``outlets=[result_alias(conn_id, table), ...]`` to ``partial()``.

    Returns (XCom) ``{"run_id", "experiment_id", "table", "summary_table", "rows", "passed", "failed",
    "pass_rate", "mean_score_value", "method", "seconds"}``.

    :param experiment_id: the run's experiment (templated; e.g. ``create_experiment.output``).
    :param run_id: the run to load (templated; e.g. ``start_run.output``; a dict with ``run_id`` and
        ``experiment_id`` works too).
    :param conn_id: an Airflow connection whose hook is a common.sql ``DbApiHook`` (postgres, sqlite, ...).
    :param table: target ``table`` or ``schema.table`` (templated).
    :param summary_table: per-run summary table (templated); default ``<table>_runs``.
    :param create_table: create both tables and the view if missing, and migrate tables of the earlier
        layout (run-level columns in every row) in one transaction (default True). With False, such
        tables are refused with the statements that migrate them.
    :param evaluator_id: evaluator whose metric gives ``score_value`` (templated); default the run's.
    :param metric: the metric itself (dict or model), instead of asking GIP for the evaluator.
    :param window_start: start of the evaluated window for the summary row (templated); default the
        DAG run's ``data_interval_start``.
    :param window_end: end of the evaluated window; default ``data_interval_end``.
    :param fast_path: use PostgreSQL ``COPY`` when the driver offers it (default True).
    :param batch_rows: rows per ``executemany`` call on the generic path.
    :param max_record_bytes: largest accepted CSV record (default 256 MiB).
    :param hook_params: passed to ``Connection.get_hook`` (e.g. ``{"schema": ...}``).
    :param tmp_dir: where the CSV is downloaded to (default: the system temp dir); downloads that
        killed loads left there are removed by the next load.
    :param declare_assets: declare the tables as outlet Assets (default True).
    :param ledger_conn_id: the connection of the run operator's ledger (``ledger_conn_id`` there): the
        summary row gets the run's evaluation fingerprint and actual cost from it.
    :param ledger_table: the ledger table (default ``gip_evaluation_ledger``).
    :param gip_conn_id: the ``gip`` connection.
    """

    template_fields: Sequence[str] = (
        "experiment_id",
        "run_id",
        "table",
        "summary_table",
        "evaluator_id",
        "window_start",
        "window_end",
    )
    ui_color = "#e3f1d4"

    def __init__(
        self,
        *,
        run_id: Any,
        conn_id: str,
        table: str,
        experiment_id: Any = None,
        summary_table: str | None = None,
        create_table: bool = True,
        evaluator_id: str | None = None,
        metric: Mapping[str, Any] | api.CategoryMetric | api.NumericMetric | api.BoolMetric | None = None,
        window_start: Any = None,
        window_end: Any = None,
        fast_path: bool = True,
        batch_rows: int = 1000,
        max_record_bytes: int | None = None,
        hook_params: Mapping[str, Any] | None = None,
        tmp_dir: str | None = None,
        declare_assets: bool = True,
        ledger_conn_id: str | None = None,
        ledger_table: str = DEFAULT_LEDGER_TABLE,
        gip_conn_id: str = GipHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.conn_id = conn_id
        self.table = table
        self.summary_table = summary_table
        self.create_table = create_table
        self.evaluator_id = evaluator_id
        self.metric = _parse_metric(metric)
        self.window_start = window_start
        self.window_end = window_end
        self.fast_path = fast_path
        self.batch_rows = batch_rows
        self.max_record_bytes = max_record_bytes
        self.hook_params = dict(hook_params or {})
        self.tmp_dir = tmp_dir
        self.ledger_conn_id = ledger_conn_id
        self.ledger_table = ledger_table
        self.gip_conn_id = gip_conn_id
        if ledger_conn_id:
            Ledger.check_table_name(ledger_table)
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        if not _templated(table):
            check_table_name(table)
        if summary_table is not None and not _templated(summary_table):
            check_table_name(summary_table, "summary_table")
        outlets = kwargs.get("outlets") or []
        outlets = list(outlets) if isinstance(outlets, list | tuple) else [outlets]
        if declare_assets and not _templated(table) and not _templated(summary_table or table):
            aliases = [result_alias(conn_id, table), result_alias(conn_id, summary_table or f"{table}_runs")]
            outlets = [*outlets, *(a for a in aliases if a not in outlets)]
            kwargs["outlets"] = outlets
        self._db_conn: Connection | None = None
        self._load_stats: dict[str, int] | None = None
        super().__init__(**kwargs)

    @cached_property
    def gip_hook(self) -> GipHook:
        return GipHook(self.gip_conn_id)

    def get_db_hook(self) -> DbApiHook:
        """The connection's hook; must be a common.sql ``DbApiHook``."""
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        conn = BaseHook.get_connection(self.conn_id)
        self._db_conn = conn
        hook = conn.get_hook(hook_params=self.hook_params)
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"connection {self.conn_id!r} (type {conn.conn_type!r}) gives a {type(hook).__name__}, "
                "which is not a common.sql DbApiHook: GipToSqlOperator needs a SQL database connection"
            )
        return hook

    # -- execution ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._load(context)
        finally:
            if "gip_hook" in self.__dict__:
                self.gip_hook.close()

    def _load(self, context: Context) -> dict[str, Any]:
        run_id, experiment_id = self._ids()
        table = check_table_name(self.table)
        summary_table = check_table_name(self.summary_table or f"{table}_runs", "summary_table")
        entry = self._ledger_entry(run_id)
        ran = entry and entry.get("experiment_id")
        if ran and ran != experiment_id:  # e.g. over_limit="downsample" ran a copy of the experiment
            self.log.info("The ledger says GIP run %s ran experiment %s, not %s", run_id, ran, experiment_id)
            experiment_id = str(ran)
        run = self.gip_hook.get_experiment_run(experiment_id, run_id)
        self._check_done(run, run_id)
        evaluator_id = self.evaluator_id or run.evaluator_id
        metric = self.metric or self._evaluator_metric(evaluator_id)
        meta = self._with_evaluation(self._meta(context, run, run_id, experiment_id, evaluator_id), entry)
        db_hook = self.get_db_hook()

        with download_dir(self.tmp_dir) as tmp:
            path = os.path.join(tmp, "result.csv")
            started = time.monotonic()
            size = self.gip_hook.download_run_result(experiment_id, run_id, path)
            seconds = max(time.monotonic() - started, 1e-9)
            self.log.info(
                "Downloaded the result CSV of run %s: %.1f MB in %.1f s (%.1f MB/s)",
                run_id,
                size / 1e6,
                seconds,
                size / 1e6 / seconds,
            )
            result = load_result_csv(
                db_hook,
                path,
                meta,
                table=table,
                summary_table=summary_table,
                metric=metric,
                create_table=self.create_table,
                fast_path=self.fast_path,
                batch_rows=self.batch_rows,
                max_record_bytes=self.max_record_bytes,
            )
        stats = result.stats
        self._load_stats = {"rows": stats.rows, "bytes": size}
        self.log.info(
            "Loaded %s rows of run %s into %s via %s in %.1f s (%.0f rows/s); pass rate %s; "
            "summary row in %s",
            f"{stats.rows:,}",
            run_id,
            table,
            result.method,
            result.seconds,
            result.rows_per_second,
            "n/a" if stats.pass_rate is None else f"{stats.pass_rate:.1%}",
            summary_table,
        )
        if stats.blank_lines:
            self.log.info("Skipped %d blank line(s) in the CSV", stats.blank_lines)
        summary = {
            "run_id": run_id,
            "experiment_id": experiment_id,
            "table": table,
            "summary_table": summary_table,
            "rows": stats.rows,
            "passed": stats.passed,
            "failed": stats.failed,
            "pass_rate": stats.pass_rate,
            "mean_score_value": stats.mean_score,
            "method": result.method,
            "seconds": round(result.seconds, 3),
        }
        self._emit_asset_events(
            context, summary, {t: self.table_location(db_hook, t) for t in (table, summary_table)}
        )
        return summary

    def table_location(self, db_hook: DbApiHook, table: str) -> TableLocation:
        """Where ``table`` lives in the warehouse: its canonical Asset URI and OpenLineage name."""
        conn = self._db_conn or BaseHook.get_connection(self.conn_id)
        database = getattr(db_hook, "database", None) or self.hook_params.get("database")
        return table_location(conn, table, database=database)

    def _ids(self) -> tuple[str, str]:
        run_ref, experiment_id = self.run_id, self.experiment_id
        if isinstance(run_ref, Mapping):  # e.g. an XCom holding a run reference
            experiment_id = experiment_id or run_ref.get("experiment_id")
            run_ref = run_ref.get("run_id") or run_ref.get("id")
        if not isinstance(run_ref, str) or not run_ref.strip():
            raise AirflowFailException(f"run_id must be a GIP run id, got {run_ref!r}")
        if not isinstance(experiment_id, str) or not experiment_id.strip():
            raise AirflowFailException(
                f"experiment_id must be the GIP experiment id of run {run_ref}, got {experiment_id!r}"
            )
        return run_ref.strip(), experiment_id.strip()

    def _check_done(self, run: api.ExperimentRun, run_id: str) -> None:
        status = run.status
        if status in api.SUCCESS_STATUSES:
            return
        if status in api.FAILURE_STATUSES:
            raise AirflowFailException(
                f"GIP run {run_id} ended with status {status}"
                + (f" ({run.error})" if run.error else "")
                + "; it has no result CSV to load"
            )
        raise AirflowException(
            f"GIP run {run_id} is {status or 'without a status'}, not DONE: its result CSV is not ready. "
            "Load it downstream of GipStartExperimentRunOperator (wait_for_completion=True) or "
            "GipExperimentRunSensor; a retry of this task will check again"
        )

    def _evaluator_metric(self, evaluator_id: str | None) -> Metric | None:
        if not evaluator_id:
            self.log.info("The run names no evaluator; score_value is derived without a metric")
            return None
        try:
            metric = self.gip_hook.get_evaluator(evaluator_id).parsed_metric()
        except GipEndpointDisabledError:
            self.log.warning(
                "The GIP connection sets list_endpoints: false, so evaluator %s is not read; score_value "
                "is derived without its metric (pass metric= to use it)",
                evaluator_id,
            )
            return None
        except GipNotFoundError as exc:
            # Gone for good: load without it. Any other failure fails the try, so that Airflow's retry
            # loads the same score_value a healthy GIP gives, never silently different rows.
            self.log.warning(
                "Evaluator %s does not exist (%s); score_value is derived without its metric",
                evaluator_id,
                exc,
            )
            return None
        self.log.info("Evaluator %s has a %s metric", evaluator_id, metric.type if metric else "unknown")
        return metric

    def _meta(
        self,
        context: Context,
        run: api.ExperimentRun,
        run_id: str,
        experiment_id: str,
        evaluator_id: str | None,
    ) -> RunMeta:
        dag_run = context.get("dag_run")
        interval_start = _when(getattr(dag_run, "data_interval_start", None), "data_interval_start")
        interval_end = _when(getattr(dag_run, "data_interval_end", None), "data_interval_end")
        usage = run.aggregated_result.total_usage if run.aggregated_result else None
        dag = context.get("dag")
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", None)
        return RunMeta(
            run_id=run_id,
            experiment_id=experiment_id,
            evaluator_id=evaluator_id,
            status=run.status,
            display_name=run.display_name,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            dag_id=dag.dag_id if dag is not None else getattr(dag_run, "dag_id", None),
            logical_date=_when(getattr(dag_run, "logical_date", None), "logical_date"),
            data_interval_start=interval_start,
            data_interval_end=interval_end,
            window_start=_when(self.window_start, "window_start") or interval_start,
            window_end=_when(self.window_end, "window_end") or interval_end,
            task_id=getattr(ti, "task_id", None) or self.task_id,
            map_index=map_index if isinstance(map_index, int) else None,
            dag_run_id=getattr(dag_run, "run_id", None),
        )

    def _ledger_entry(self, run_id: str) -> dict[str, Any] | None:
        """The run's ledger row, when a ledger is configured and knows the run."""
        if not self.ledger_conn_id:
            return None
        entry = Ledger.from_conn_id(self.ledger_conn_id, self.ledger_table).entry_of_run(run_id)
        if entry is None:
            self.log.warning(
                "GIP run %s has no row in the ledger %s (connection %r): its summary row gets no cost, "
                "and the evaluation is keyed by this load's DAG, task, window, experiment and evaluator",
                run_id,
                self.ledger_table,
                self.ledger_conn_id,
            )
        return entry

    def _with_evaluation(self, meta: RunMeta, entry: Mapping[str, Any] | None) -> RunMeta:
        """The run's evaluation key, cost and (when the ledger says it was replaced) ``superseded_by``."""
        if entry is None:
            return dataclasses.replace(meta, evaluation_key=derived_evaluation_key(meta))
        superseded_by = entry.get("superseded_by") if entry.get("status") == Status.SUPERSEDED else None
        if superseded_by:
            self.log.info(
                "The ledger says GIP run %s was superseded by run %s: its summary row is loaded as history",
                meta.run_id,
                superseded_by,
            )
        cost = entry.get("cost")
        return dataclasses.replace(
            meta,
            evaluation_key=str(entry["fingerprint"]),
            superseded_by=str(superseded_by) if superseded_by else None,
            cost=float(cost) if cost is not None else None,
        )

    # -- OpenLineage (called by apache-airflow-providers-openlineage; see gip_airflow.openlineage) -----

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        from gip_airflow.transfers._lineage import load_lineage

        return load_lineage(self, complete=False)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        from gip_airflow.transfers._lineage import load_lineage

        return load_lineage(self, complete=self._load_stats is not None)

    def _emit_asset_events(
        self, context: Context, summary: dict[str, Any], tables: dict[str, TableLocation]
    ) -> None:
        """Add each table's canonical Asset to its declared alias, with the loaded run in ``extra``."""
        extra = {k: summary[k] for k in ("run_id", "experiment_id", "rows", "pass_rate")}
        try:
            events = context["outlet_events"]
            for table, location in tables.items():
                alias = result_alias(self.conn_id, table)
                if alias in self.outlets:
                    events[alias].add(Asset(location.uri), extra=extra)
        except Exception as exc:  # asset events are a nicety; never fail a finished load over them
            self.log.warning("Could not emit asset events: %s", exc)


def derived_evaluation_key(meta: RunMeta) -> str:
    """The evaluation of a run without a ledger row: the load's DAG, task and map index, the window, the
    experiment and the evaluator (the DAG run instead of the window when there is none)."""
    window = [w.astimezone(dt.UTC).isoformat() if w else None for w in (meta.window_start, meta.window_end)]
    identity: dict[str, Any] = {
        "dag_id": meta.dag_id,
        "task_id": meta.task_id,
        "map_index": meta.map_index,
        "window": window,
        "experiment_id": meta.experiment_id,
        "evaluator_id": meta.evaluator_id,
    }
    if window == [None, None]:
        identity["dag_run_id"] = meta.dag_run_id
    return fingerprint(identity)


def _parse_metric(value: Any) -> Metric | None:
    if value is None or isinstance(value, api.CategoryMetric | api.NumericMetric | api.BoolMetric):
        return value
    parsed = api.Evaluator(id="-", metric=dict(value)).parsed_metric()
    if parsed is None:
        raise ValueError(f"metric {value!r} is not a GIP metric (category, numeric or bool)")
    return parsed


def _when(value: Any, what: str) -> dt.datetime | None:
    """An aware datetime from a datetime or an ISO 8601 string (a rendered template); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        parsed = pendulum.parse(str(value))
    except Exception as exc:
        raise AirflowFailException(f"{what} {value!r} is not an ISO 8601 date-time") from exc
    if not isinstance(parsed, dt.datetime):
        raise AirflowFailException(f"{what} {value!r} is not a date-time")
    return parsed
