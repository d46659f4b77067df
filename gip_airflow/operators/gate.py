"""A regression gate: is a GIP run significantly worse than its baseline, beyond a tolerated drop?

Reads the result and summary tables that :class:`~gip_airflow.transfers.gip_to_sql.GipToSqlOperator`
writes (any common.sql database), compares the run with a baseline (the trailing windows of the same
DAG, a pinned run, or another run on the same dataset paired item by item) with the tests of
:mod:`gip_airflow.stats`, writes one verdict row per metric and segment into ``<table>_gates``, logs a
table, emits an Asset event carrying the verdict, and fails (no retries) on a regression.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from gip_airflow import stats
from gip_airflow.operators._gate_sql import (
    PAIR_BY,
    Aggregate,
    GateReader,
    PairedPass,
    RunInfo,
    column_expr,
    now,
    write_verdicts,
)
from gip_airflow.transfers.tables import check_table_name

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context

__all__ = ["GipEvaluationGateOperator", "gate_asset"]

METRICS = ("pass_rate", "mean_score")
BASELINES = ("trailing", "run", "paired")
DIRECTIONS = ("higher_is_better", "lower_is_better")
INCONCLUSIVE = ("warn", "fail", "skip")
CORRECTIONS = ("bonferroni", "none")

REGRESSION, IMPROVEMENT, NO_CHANGE, INCONCLUSIVE_VERDICT = (
    "regression",
    "improvement",
    "no_change",
    "inconclusive",
)


def gate_asset(conn_id: str, table: str, gates_table: str | None = None) -> Asset:
    """The Asset the gate emits its verdict on: schedule a release DAG on it.

    A named Asset (no database URI), so that declaring it reads no connection when the DAG is parsed.
    """
    return Asset(name=f"gip-gate/{conn_id}/{gates_table or f'{table}_gates'}")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class GipEvaluationGateOperator(BaseOperator):
    """Fail when a GIP run is significantly worse than its baseline by more than a tolerated drop.

    For every metric (``pass_rate``; ``mean_score``, the mean of ``score_value``) and segment the gate
    tests ``H0: current - baseline >= -tolerance`` one-sided at ``alpha`` (divided by the number of
    comparisons with ``correction="bonferroni"``, so that one gate run raises a false alarm with
    probability at most ``alpha``):

    * ``baseline="trailing"``: the ``trailing_windows`` latest earlier runs of the same DAG (and
      evaluator), pooled; unpaired tests: Newcombe interval (pass rate), Welch interval (mean);
    * ``baseline="run"``: the pinned ``baseline_run_id``, unpaired as above;
    * ``baseline="paired"``: ``baseline_run_id`` on the same dataset, paired item by item on ``pair_by``:
      exact McNemar (pass rate), seeded paired bootstrap (mean score).

    Verdicts: ``regression`` (upper bound below ``-tolerance``), ``improvement`` (lower bound above
    ``+tolerance``), ``no_change``, or ``inconclusive`` (fewer than ``min_samples`` items or no
    baseline; handled by ``inconclusive``: ``warn``, ``fail`` or ``skip``). A regression raises
    ``AirflowFailException`` (no retries) with the numbers, unless ``fail_on_regression=False``.

    Returns (XCom) ``{"run_id", "verdict", "baseline", "results"}``; the Asset event of
    ``gate_asset(conn_id, table)`` carries the same in its ``extra``.

    :param conn_id: a common.sql connection (PostgreSQL, SQLite, ...) holding the tables.
    :param table: the results table ``GipToSqlOperator`` loads (templated).
    :param run_id: the run to gate (templated; a dict with ``run_id`` works too, e.g. a load's XCom).
    :param baseline: ``trailing`` (default), ``run`` or ``paired``.
    :param baseline_run_id: the pinned or paired baseline run (templated).
    :param trailing_windows: how many earlier windows make the trailing baseline (default 7).
    :param same_evaluator: trailing windows only from runs with the same evaluator (default True).
    :param metrics: any of ``pass_rate``, ``mean_score`` (default both).
    :param tolerance: tolerated drop, in the metric's units (0.02 = two points of pass rate); a number
        or ``{metric: number}``.
    :param direction: ``higher_is_better`` (default) or ``lower_is_better``; or ``{metric: direction}``.
    :param alpha: false alarm probability of the gate (default 0.05).
    :param correction: ``bonferroni`` (default) or ``none`` (each comparison at ``alpha``).
    :param min_samples: fewest items (pairs when paired) on each side for a conclusive test (default 30).
    :param inconclusive: ``warn`` (default: log, pass), ``fail`` or ``skip``.
    :param segment_by: one verdict per value of this column: a results or summary table column, or
        ``extra.<key>`` for a key of the extra JSON (templated).
    :param pair_by: the item key for paired comparisons, one column or several (default
        ``input_data_from_experiment`` and ``output_data_from_experiment``;
        e.g. ``extra.dataset_item_id`` when the CSV carries one).
    :param bootstrap_resamples: resamples of the paired bootstrap (default 2000).
    :param seed: seed of the bootstrap (same data, same seed: same verdict).
    :param fail_on_regression: raise on a regression (default True); False only reports.
    :param summary_table: default ``<table>_runs``. :param gates_table: default ``<table>_gates``.
    :param create_table: create the gates table if missing (default True).
    :param hook_params: passed to ``Connection.get_hook``.
    """

    template_fields: Sequence[str] = (
        "run_id",
        "baseline_run_id",
        "table",
        "summary_table",
        "gates_table",
        "segment_by",
    )
    ui_color = "#f6e3c4"

    def __init__(
        self,
        *,
        conn_id: str,
        table: str,
        run_id: Any,
        baseline: str = "trailing",
        baseline_run_id: Any = None,
        trailing_windows: int = 7,
        same_evaluator: bool = True,
        metrics: Sequence[str] = METRICS,
        tolerance: float | Mapping[str, float] = 0.0,
        direction: str | Mapping[str, str] = "higher_is_better",
        alpha: float = 0.05,
        correction: str = "bonferroni",
        min_samples: int = 30,
        inconclusive: str = "warn",
        segment_by: str | None = None,
        pair_by: str | Sequence[str] = PAIR_BY,
        bootstrap_resamples: int = 2000,
        seed: int = 0,
        fail_on_regression: bool = True,
        summary_table: str | None = None,
        gates_table: str | None = None,
        create_table: bool = True,
        hook_params: Mapping[str, Any] | None = None,
        declare_asset: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault(
            "retries", 0
        )  # a deterministic verdict; a regression (AirflowFailException) never retries
        self.conn_id = conn_id
        self.table = table
        self.run_id = run_id
        self.baseline = baseline
        self.baseline_run_id = baseline_run_id
        self.trailing_windows = trailing_windows
        self.same_evaluator = same_evaluator
        self.metrics = tuple(metrics)
        self.tolerance = _per_metric(tolerance, self.metrics, "tolerance")
        self.direction = _per_metric(direction, self.metrics, "direction")
        self.alpha = alpha
        self.correction = correction
        self.min_samples = min_samples
        self.inconclusive = inconclusive
        self.segment_by = segment_by
        self.pair_by = (pair_by,) if isinstance(pair_by, str) else tuple(pair_by)
        self.bootstrap_resamples = bootstrap_resamples
        self.seed = seed
        self.fail_on_regression = fail_on_regression
        self.summary_table = summary_table
        self.gates_table = gates_table
        self.create_table = create_table
        self.hook_params = dict(hook_params or {})
        self._validate()
        self.asset: Asset | None = None
        if declare_asset and not any(map(_templated, (table, gates_table))):
            self.asset = gate_asset(conn_id, table, gates_table)
            outlets = kwargs.get("outlets") or []
            outlets = list(outlets) if isinstance(outlets, list | tuple) else [outlets]
            kwargs["outlets"] = [*outlets, *([self.asset] if self.asset not in outlets else [])]
        super().__init__(**kwargs)

    # -- validation (before anything runs) --------------------------------------------------------

    def _validate(self) -> None:
        def choice(name: str, value: Any, allowed: Sequence[str]) -> None:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

        choice("baseline", self.baseline, BASELINES)
        choice("correction", self.correction, CORRECTIONS)
        choice("inconclusive", self.inconclusive, INCONCLUSIVE)
        if not self.metrics:
            raise ValueError(f"metrics must name at least one of {', '.join(METRICS)}")
        for metric in self.metrics:
            choice("metrics item", metric, METRICS)
            choice(f"direction for {metric}", self.direction[metric], DIRECTIONS)
            tol = self.tolerance[metric]
            if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < math.inf:
                raise ValueError(
                    f"tolerance for {metric} must be a non-negative number in the metric's units "
                    f"(0.02 = 2 points of pass rate); got {tol!r}"
                )
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, int | float)
            or not 0 < self.alpha < 0.5
        ):
            raise ValueError(f"alpha must be a probability between 0 and 0.5 (e.g. 0.05); got {self.alpha!r}")
        for name in ("trailing_windows", "min_samples", "bootstrap_resamples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.baseline in ("run", "paired") and self.baseline_run_id in (None, ""):
            raise ValueError(f"baseline={self.baseline!r} needs baseline_run_id: the run to compare with")
        if self.baseline == "trailing" and self.baseline_run_id not in (None, ""):
            raise ValueError(
                "baseline_run_id is only used with baseline='run' (pinned) or 'paired'; "
                "drop it or set baseline accordingly"
            )
        for name in ("table", "summary_table", "gates_table"):
            value = getattr(self, name)
            if value is not None and not _templated(value):
                check_table_name(value, name)
        if self.segment_by and not _templated(self.segment_by):
            column_expr(self.segment_by, what="segment_by", dialect="generic")
        if not self.pair_by:
            raise ValueError("pair_by must name at least one column, e.g. 'input_data_from_experiment'")
        for column in self.pair_by:
            column_expr(column, what="pair_by", dialect="generic")

    # -- execution ------------------------------------------------------------------------------

    def get_db_hook(self) -> DbApiHook:
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        conn = BaseHook.get_connection(self.conn_id)
        hook = conn.get_hook(hook_params=self.hook_params)
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"connection {self.conn_id!r} (type {conn.conn_type!r}) gives a {type(hook).__name__}, "
                "which is not a common.sql DbApiHook: the gate needs the SQL warehouse GipToSqlOperator loads"
            )
        return hook

    @cached_property
    def _tables(self) -> tuple[str, str, str]:
        table = check_table_name(self.table)
        return (
            table,
            check_table_name(self.summary_table or f"{table}_runs", "summary_table"),
            check_table_name(self.gates_table or f"{table}_gates", "gates_table"),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        run_id = _run_ref(self.run_id, "run_id")
        table, summary_table, gates_table = self._tables
        if self.segment_by:
            column_expr(self.segment_by, what="segment_by", dialect="generic")
        hook = self.get_db_hook()
        reader = GateReader(hook, table, summary_table, segment_by=self.segment_by, pair_by=self.pair_by)
        current = reader.run_info(run_id)
        if current is None:
            raise AirflowFailException(
                f"run {run_id} has no row in {summary_table}: load it with GipToSqlOperator first "
                f"(table={table!r}) and gate downstream of that load"
            )
        if self.baseline in ("run", "paired"):
            pinned = _run_ref(self.baseline_run_id, "baseline_run_id")
            if reader.run_info(pinned) is None:
                raise AirflowFailException(
                    f"baseline run {pinned} has no row in {summary_table}: load it into {table} with "
                    "GipToSqlOperator, or pass the id of a run that was loaded"
                )
        if self.baseline == "paired":
            baseline_ids = [_run_ref(self.baseline_run_id, "baseline_run_id")]
            results = self._paired(reader, run_id, baseline_ids[0])
        else:
            baseline_ids = self._baseline_runs(reader, current)
            results = self._unpaired(reader, run_id, baseline_ids)
        verdict = _overall(results)
        gate = f"{getattr(context.get('dag'), 'dag_id', None) or current.dag_id}.{self.task_id}"
        checked_at = now()
        for row in results:
            row.update(
                run_id=run_id,
                gate=gate,
                baseline_kind=self.baseline,
                baseline=baseline_ids,
                dag_id=current.dag_id,
                checked_at=checked_at,
            )
        write_verdicts(hook, gates_table, results, run_id=run_id, gate=gate, create_table=self.create_table)
        self.log.info(
            "Gate %s: run %s vs %s baseline %s\n%s",
            verdict.upper(),
            run_id,
            self.baseline,
            _short_ids(baseline_ids),
            render_table(results),
        )
        summary = {
            "run_id": run_id,
            "verdict": verdict,
            "baseline": baseline_ids,
            "results": [_public(r) for r in results],
        }
        if verdict == REGRESSION and self.fail_on_regression:
            raise AirflowFailException(regression_message(run_id, self.baseline, baseline_ids, results))
        if verdict == INCONCLUSIVE_VERDICT:
            reasons = "; ".join(
                f"{_label(r)}: {r['reason']}" for r in results if r["verdict"] == INCONCLUSIVE_VERDICT
            )
            message = f"Gate inconclusive for run {run_id}: {reasons}"
            if self.inconclusive == "fail":
                raise AirflowFailException(message + " (inconclusive='fail')")
            if self.inconclusive == "skip":
                raise AirflowSkipException(message + " (inconclusive='skip')")
            self.log.warning("%s (inconclusive='warn': passing)", message)
        self._annotate_asset_event(context, summary)
        return summary

    def _baseline_runs(self, reader: GateReader, current: RunInfo) -> list[str]:
        if self.baseline == "run":
            return [_run_ref(self.baseline_run_id, "baseline_run_id")]
        if current.dag_id is None:
            raise AirflowFailException(
                f"run {current.run_id} has no dag_id in the summary table, so it has no trailing windows; "
                "use baseline='run' with baseline_run_id"
            )
        runs = reader.trailing_runs(current, self.trailing_windows, same_evaluator=self.same_evaluator)
        return [r.run_id for r in runs]

    def _alpha(self, comparisons: int) -> float:
        if self.correction == "bonferroni" and comparisons > 1:
            return self.alpha / comparisons
        return self.alpha

    def _unpaired(self, reader: GateReader, run_id: str, baseline_ids: list[str]) -> list[dict[str, Any]]:
        aggs = reader.aggregates([run_id, *baseline_ids])
        current: dict[str, Aggregate] = {}
        pooled: dict[str, Aggregate] = {}
        for (run, seg), agg in aggs.items():
            target = current if run == run_id else pooled
            target.setdefault(seg, Aggregate()).add(agg)
        segments = sorted(set(current) | set(pooled)) or [""]
        plans = []
        for metric in self.metrics:
            for seg in segments:
                cur, base = current.get(seg, Aggregate()), pooled.get(seg, Aggregate())
                if metric == "pass_rate":
                    n_cur, n_base = cur.n_pass, base.n_pass
                    values = (_ratio(cur.passed, n_cur), _ratio(base.passed, n_base))
                else:
                    n_cur, n_base = cur.n_score, base.n_score
                    values = (_ratio(cur.total, n_cur), _ratio(base.total, n_base))
                plans.append((metric, seg, n_cur, n_base, values, cur, base))
        alpha = self._alpha(sum(self._enough(p[2], p[3]) is None for p in plans))
        results = []
        for metric, seg, n_cur, n_base, (v_cur, v_base), cur, base in plans:
            row = self._row(metric, seg, n_cur=n_cur, n_base=n_base, v_cur=v_cur, v_base=v_base, alpha=alpha)
            reason = self._enough(n_cur, n_base, baseline_runs=len(baseline_ids))
            if reason is None:
                sign = 1 if self.direction[metric] == "higher_is_better" else -1
                tol = float(self.tolerance[metric])
                if metric == "pass_rate":
                    x_cur = cur.passed if sign > 0 else n_cur - cur.passed
                    x_base = base.passed if sign > 0 else n_base - base.passed
                    cmp = stats.compare_proportions(x_cur, n_cur, x_base, n_base, alpha=alpha, margin=tol)
                    cmp = _flip(cmp, sign) if sign < 0 else cmp
                else:
                    m_cur = stats.Moments(cur.n_score, sign * cur.total, cur.total_sq)
                    m_base = stats.Moments(base.n_score, sign * base.total, base.total_sq)
                    if n_cur < 2 or n_base < 2:
                        reason = "Welch's interval needs at least two scored items on each side"
                    else:
                        cmp = stats.compare_means(m_cur, m_base, alpha=alpha, margin=tol)
                        cmp = _flip(cmp, sign) if sign < 0 else cmp
            if reason is None:
                self._conclude(row, cmp, sign, tol)
            else:
                row.update(verdict=INCONCLUSIVE_VERDICT, reason=reason)
            results.append(row)
        return results

    def _paired(self, reader: GateReader, run_id: str, baseline_id: str) -> list[dict[str, Any]]:
        plans: list[tuple[str, str, Any]] = []
        if "pass_rate" in self.metrics:
            plans += [
                ("pass_rate", seg, pp) for seg, pp in sorted(reader.paired_pass(run_id, baseline_id).items())
            ]
            if not any(p[0] == "pass_rate" for p in plans):
                plans.append(("pass_rate", "", PairedPass()))
        if "mean_score" in self.metrics:
            diffs = sorted(reader.paired_differences(run_id, baseline_id).items())
            plans += [("mean_score", seg, d) for seg, d in diffs] or [("mean_score", "", {})]
        sizes = [data.n if metric == "pass_rate" else sum(data.values()) for metric, _, data in plans]
        alpha = self._alpha(sum(self._enough(n, n) is None for n in sizes))
        results = []
        for (metric, seg, data), n in zip(plans, sizes, strict=True):
            sign = 1 if self.direction[metric] == "higher_is_better" else -1
            tol = float(self.tolerance[metric])
            if metric == "pass_rate":
                pp: PairedPass = data
                v_cur = _ratio(pp.both + pp.gained, n)
                v_base = _ratio(pp.both + pp.lost, n)
            else:
                v_cur = v_base = None
            row = self._row(metric, seg, n_cur=n, n_base=n, v_cur=v_cur, v_base=v_base, alpha=alpha)
            reason = self._enough(n, n)
            if reason is not None:
                row.update(verdict=INCONCLUSIVE_VERDICT, reason=reason)
                results.append(row)
                continue
            if metric == "pass_rate":
                lost, gained = (pp.lost, pp.gained) if sign > 0 else (pp.gained, pp.lost)
                cmp = stats.compare_paired_pass(pp.both, lost, gained, pp.neither, alpha=alpha, margin=tol)
            else:
                cmp = stats.compare_paired_means(
                    {sign * d: c for d, c in data.items()},
                    alpha=alpha,
                    margin=tol,
                    resamples=self.bootstrap_resamples,
                    seed=self.seed,
                )
            cmp = _flip(cmp, sign) if sign < 0 else cmp
            self._conclude(row, cmp, sign, tol)
            results.append(row)
        return results

    def _enough(self, n_cur: int, n_base: int, baseline_runs: int | None = None) -> str | None:
        if baseline_runs == 0:
            return "no baseline run (no earlier window of this DAG in the summary table)"
        if n_cur < self.min_samples or n_base < self.min_samples:
            return f"too few items (current {n_cur}, baseline {n_base}; min_samples={self.min_samples})"
        return None

    def _row(
        self,
        metric: str,
        seg: str,
        *,
        n_cur: int,
        n_base: int,
        v_cur: float | None,
        v_base: float | None,
        alpha: float,
    ) -> dict[str, Any]:
        return {
            "metric": metric,
            "segment": seg,
            "method": None,
            "n_current": n_cur,
            "n_baseline": n_base,
            "current_value": v_cur,
            "baseline_value": v_base,
            "estimate": None,
            "ci_low": None,
            "ci_high": None,
            "confidence": 1 - 2 * alpha,
            "p_value": None,
            "alpha": alpha,
            "tolerance": float(self.tolerance[metric]),
            "direction": self.direction[metric],
            "verdict": None,
            "reason": None,
        }

    @staticmethod
    def _conclude(row: dict[str, Any], cmp: stats.Comparison, sign: int, tol: float) -> None:
        """Fill in a comparison, given in the metric's own units and sign."""
        # in "better is positive" units: worse when the upper bound is below -tol
        better_low, better_high = sorted((sign * cmp.low, sign * cmp.high))
        if better_high < -tol:
            verdict = REGRESSION
        elif better_low > tol:
            verdict = IMPROVEMENT
        else:
            verdict = NO_CHANGE
        row.update(
            method=cmp.method,
            estimate=cmp.estimate,
            ci_low=cmp.low,
            ci_high=cmp.high,
            p_value=cmp.p_value,
            verdict=verdict,
        )

    def _annotate_asset_event(self, context: Context, summary: dict[str, Any]) -> None:
        if self.asset is None:
            return
        extra = {
            "run_id": summary["run_id"],
            "verdict": summary["verdict"],
            "passed": summary["verdict"] != REGRESSION,
            "baseline": summary["baseline"][:20],
            "results": [
                {k: r[k] for k in ("metric", "segment", "verdict", "estimate", "p_value")}
                for r in summary["results"][:50]
            ],
        }
        try:
            context["outlet_events"][self.asset].extra = extra
        except Exception as exc:  # the event itself is still emitted by Airflow
            self.log.debug("Could not annotate the gate's asset event: %s", exc)


# -------------------------------------------------------------------------------------------------
# Helpers: input, verdicts, the log table and the failure message
# -------------------------------------------------------------------------------------------------


def _per_metric(value: Any, metrics: Sequence[str], name: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        unknown = set(value) - set(METRICS)
        if unknown:
            raise ValueError(f"{name} names unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
        default = 0.0 if name == "tolerance" else "higher_is_better"
        return {m: value.get(m, default) for m in metrics}
    return dict.fromkeys(metrics, value)


def _run_ref(value: Any, name: str) -> str:
    if isinstance(value, Mapping):
        value = value.get("run_id") or value.get("id")
    if not isinstance(value, str) or not value.strip() or value.strip() == "None":
        raise AirflowFailException(f"{name} must be a GIP run id (or a dict with run_id); got {value!r}")
    return value.strip()


def _ratio(num: float, den: int) -> float | None:
    return num / den if den else None


def _flip(cmp: stats.Comparison, sign: int) -> stats.Comparison:
    """Back from "better is positive" units to the metric's own sign."""
    return stats.Comparison(cmp.method, sign * cmp.estimate, sign * cmp.high, sign * cmp.low, cmp.p_value)


def _overall(results: list[dict[str, Any]]) -> str:
    verdicts = {r["verdict"] for r in results}
    if REGRESSION in verdicts:
        return REGRESSION
    if INCONCLUSIVE_VERDICT in verdicts:
        return INCONCLUSIVE_VERDICT
    return "pass"


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("checked_at", "baseline", "gate", "run_id", "dag_id")}


def _label(row: dict[str, Any]) -> str:
    return row["metric"] + (f"[{row['segment']}]" if row["segment"] else "")


def _short_ids(ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(ids[:limit])
    return f"({len(ids)} runs: {shown}{', ...' if len(ids) > limit else ''})"


def _fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if metric == "pass_rate" else f"{value:.3f}"


def _fmt_diff(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.1f} pt" if metric == "pass_rate" else f"{value:+.3f}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    if p <= 0.0:
        return "<1e-300"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _p_rel(p: float | None) -> str:
    text = _fmt_p(p)
    return f" {text}" if text.startswith("<") else f"={text}"


def render_table(results: list[dict[str, Any]]) -> str:
    """A fixed-width table of the verdict rows, for the task log."""
    header = (
        "metric",
        "segment",
        "method",
        "n",
        "n base",
        "current",
        "baseline",
        "change",
        "interval",
        "p",
        "verdict",
    )
    lines = [header]
    for r in results:
        m = r["metric"]
        interval = "-"
        if r["ci_low"] is not None:
            interval = f"[{_fmt_diff(m, r['ci_low'])}, {_fmt_diff(m, r['ci_high'])}] ({r['confidence']:.0%})"
        lines.append(
            (
                m,
                r["segment"] or "(all)",
                r["method"] or "-",
                str(r["n_current"]),
                str(r["n_baseline"]),
                _fmt_value(m, r["current_value"]),
                _fmt_value(m, r["baseline_value"]),
                _fmt_diff(m, r["estimate"]),
                interval,
                _fmt_p(r["p_value"]),
                r["verdict"].upper() if r["verdict"] in (REGRESSION, IMPROVEMENT) else r["verdict"],
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7, 9}
    return "\n".join(
        "  ".join(
            str(c).rjust(w) if i in numeric else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def regression_message(
    run_id: str, kind: str, baseline_ids: Sequence[str], results: list[dict[str, Any]]
) -> str:
    """The failure message: every regressed metric and segment with its numbers."""
    parts = []
    for r in results:
        if r["verdict"] != REGRESSION:
            continue
        m = r["metric"]
        moved = "fell" if (r["estimate"] or 0) < 0 else "rose"
        values = (
            f"from {_fmt_value(m, r['baseline_value'])} to {_fmt_value(m, r['current_value'])} "
            if r["current_value"] is not None
            else ""
        )
        parts.append(
            f"{_label(r)} {moved} {values}({_fmt_diff(m, r['estimate'])}, {r['confidence']:.0%} interval "
            f"{_fmt_diff(m, r['ci_low'])} to {_fmt_diff(m, r['ci_high'])}; "
            f"one-sided p{_p_rel(r['p_value'])} "
            f"< alpha {r['alpha']:.3g}; tolerated {_fmt_diff(m, r['tolerance']).lstrip('+')}; "
            f"n={r['n_current']} vs {r['n_baseline']}, {r['method']})"
        )
    return f"Regression in run {run_id} against the {kind} baseline {_short_ids(baseline_ids)}: " + "; ".join(
        parts
    )
