"""Opt-in cost control for :class:`~gip_airflow.operators.gip.GipStartExperimentRunOperator`.

Before any paid call: fingerprint the evaluation and reuse a DONE one from the ledger, estimate the run
(XCom ``estimate``), apply the task's limits and reserve the shared budget; on completion record the actual
tokens and cost (XCom ``cost``). With every parameter left at its default the operator behaves as before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseHook, Variable
from airflow.sdk.exceptions import AirflowFailException

from gip_airflow import api
from gip_airflow.cost import (
    DEFAULT_TOKENS_PER_ITEM,
    PRICE_TABLE_VARIABLE,
    Estimate,
    LimitExceeded,
    Price,
    count_targets,
    fit_limits,
    parse_price_table,
    price_of,
)
from gip_airflow.exceptions import GipApiError, GipEndpointDisabledError, GipNotFoundError
from gip_airflow.hooks.langfuse import LangfuseHook
from gip_airflow.ledger import (
    DEFAULT_LEDGER_TABLE,
    Budget,
    Ledger,
    Status,
    canonical,
    evaluation_identity,
    fingerprint,
    history_key,
)
from gip_airflow.links import GipExperimentRunLink
from gip_airflow.triggers.gip import raise_for_event

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import JsonValue

__all__ = ["CostControlMixin"]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _usage(run: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    usage = ((run or {}).get("aggregated_result") or {}).get("total_usage") or {}
    if not usage:
        return None, None
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class CostControlMixin:
    """The ledger, estimate, limits and budget parameters of the run operator (docs/cost-control.md).

    :param ledger_conn_id: a PostgreSQL or SQLite connection: record every run in the ledger table, reuse a
        DONE evaluation (same DAG, task, window or dataset version, experiment, evaluator and converter)
        instead of paying again, and attach to one still running.
    :param ledger_table: the ledger table (created when missing).
    :param force: start a new run even if the evaluation is DONE; the old entry becomes SUPERSEDED.
        Templated ("{{ params.force }}").
    :param langfuse_conn_id: the Langfuse connection (URL, public key, secret key) of the experiment's
        credential: count its targets to estimate the run's tokens and cost (XCom ``estimate``).
    :param tokens_per_item: ``(prompt, completion)`` tokens per item when the ledger has no history.
    :param max_tokens: per-task limit on the estimated tokens.
    :param max_cost: per-task limit on the estimated cost (US dollars, from the price table).
    :param over_limit: ``"fail"`` (default) or ``"downsample"``: lower ``sampling_rate`` so the run fits.
    :param budget: a shared budget, e.g. ``{"amount": 50, "period": "month", "name": "team-a"}``
        (needs ``ledger_conn_id``); a run that does not fit fails with "budget exhausted: spent X of Y".
    """

    # Provided by the operator.
    experiment_id: str
    evaluator_id: str
    target_data_converter: dict[str, Any] | None
    gip_conn_id: str
    task_id: str
    hook: Any
    log: Any

    def __init__(
        self,
        *,
        ledger_conn_id: str | None = None,
        ledger_table: str = DEFAULT_LEDGER_TABLE,
        force: bool | str = False,
        langfuse_conn_id: str | None = None,
        tokens_per_item: tuple[float, float] | None = None,
        max_tokens: float | None = None,
        max_cost: float | None = None,
        over_limit: Literal["fail", "downsample"] = "fail",
        budget: Budget | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = f"Task {self.task_id!r}"
        if over_limit not in ("fail", "downsample"):
            raise ValueError(f"{where}: over_limit must be 'fail' or 'downsample', got {over_limit!r}")
        for name, limit in (("max_tokens", max_tokens), ("max_cost", max_cost)):
            if limit is not None and not limit > 0:
                raise ValueError(f"{where}: {name} must be positive, got {limit!r}")
        if (max_tokens or max_cost or budget) and not langfuse_conn_id:
            raise ValueError(
                f"{where}: max_tokens, max_cost and budget compare an estimate, which counts the targets "
                "in Langfuse: set langfuse_conn_id (the Langfuse connection of the experiment's credential)"
            )
        if budget is not None and not ledger_conn_id:
            raise ValueError(f"{where}: a budget is tracked in the ledger: set ledger_conn_id")
        if tokens_per_item is not None and (
            len(tokens_per_item) != 2 or min(float(t) for t in tokens_per_item) < 0
        ):
            raise ValueError(f"{where}: tokens_per_item must be (prompt, completion) token counts")
        self.ledger_conn_id = ledger_conn_id
        self.ledger_table = ledger_table
        self.force = force
        self.langfuse_conn_id = langfuse_conn_id
        self.tokens_per_item = tokens_per_item
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.over_limit = over_limit
        self.budget = Budget.of(budget, where) if budget is not None else None
        if ledger_conn_id:
            Ledger.check_table_name(ledger_table)
        self._entry: dict[str, Any] | None = None
        self._judge: str | None = None

    # -- before the paid call --------------------------------------------------------------------------

    def _cost_control_begin(self, context: Context) -> str | None:
        """Decide before any paid call; returns the id of a DONE run to reuse, or None to go on."""
        if not (self.ledger_conn_id or self.langfuse_conn_id):
            return None
        experiment = self._definition("experiment", self.hook.get_experiment, self.experiment_id)
        evaluator = self._definition("evaluator", self.hook.get_evaluator, self.evaluator_id)
        etype, config = experiment.get("type"), experiment.get("config") or {}
        judge = (evaluator.get("evaluation_config") or {}).get("judge_model_public_id")
        self._judge = judge
        ledger = Ledger.from_conn_id(self.ledger_conn_id, self.ledger_table) if self.ledger_conn_id else None
        hkey = history_key(
            etype, {k: evaluator.get(k) for k in ("metric", "evaluation_config")}, self.target_data_converter
        )
        estimate, new_rate, refusal = None, None, None
        if self.langfuse_conn_id:
            if not etype or not config:
                raise AirflowFailException(
                    f"Task {self.task_id!r}: the cost estimate needs the experiment's definition, and GIP "
                    f"did not give experiment {self.experiment_id}; drop langfuse_conn_id and the limits"
                )
            count = count_targets(LangfuseHook(self.langfuse_conn_id), etype, config, int(time.time() * 1000))
            per_item, source = None, "history"
            if ledger is not None:
                per_item = ledger.tokens_per_item(hkey, judge, etype)
            if per_item is None:
                source = "configured" if self.tokens_per_item else "default"
                per_item = tuple(float(t) for t in self.tokens_per_item or DEFAULT_TOKENS_PER_ITEM)  # type: ignore[assignment]
            estimate = Estimate(count, per_item[0], per_item[1], source, judge, self._price(judge))  # type: ignore[arg-type,index]
            self.log.info("Cost estimate: %s", estimate.describe())
            try:
                new_rate = fit_limits(
                    estimate,
                    max_tokens=self.max_tokens,
                    max_cost=self.max_cost,
                    policy=self.over_limit,
                    experiment_type=str(etype),
                )
            except LimitExceeded as exc:
                refusal = f"Task {self.task_id!r}: {exc}"
            pushed = estimate.as_dict()
            if new_rate is not None:
                estimate = estimate.with_rate(new_rate)
                pushed = {**estimate.as_dict(), "requested_sampling_rate": pushed["sampling_rate"]}
            context["ti"].xcom_push(key="estimate", value=pushed)

        def check_limits() -> None:
            if refusal:
                raise AirflowFailException(refusal)

        if ledger is None:
            check_limits()
            self._downsample(experiment, new_rate, estimate)
            return None
        window = config.get("trace_filter_request") or config.get("observation_filter_request") or {}
        ti = context["ti"]
        identity = evaluation_identity(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            experiment=experiment,
            evaluator=evaluator,
            target_data_converter=self.target_data_converter,
            langfuse_project=self._langfuse_project(config.get("integrated_service_credential_id")),
            dataset_version=estimate.count.version if estimate else None,
            run_scope=ti.run_id if window.get("relative_time_range") else None,
        )
        entry = {
            "fingerprint": fingerprint(identity),
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "airflow_run_id": ti.run_id,
            "map_index": getattr(ti, "map_index", -1),
            "try_number": getattr(ti, "try_number", None),
            "experiment_id": self.experiment_id,
            "evaluator_id": self.evaluator_id,
            "experiment_type": etype,
            "history_key": hkey,
            "judge_model": judge,
            "identity": canonical(identity),
        }
        if estimate is not None:
            entry.update(
                items_estimated=estimate.items,
                sampling_rate=estimate.count.sampling_rate,
                est_prompt_tokens=estimate.prompt_tokens,
                est_completion_tokens=estimate.completion_tokens,
                est_cost=estimate.cost,
            )
        force = _truthy(self.render_template(self.force, context))  # type: ignore[attr-defined]
        kind, row = ledger.begin(
            entry,
            force=force,
            check_limits=check_limits,
            budget=self.budget,
            budget_key=self.budget.key(self.gip_conn_id) if self.budget else None,
            settle=self._settle_row,
        )
        self.experiment_id = str(row.get("experiment_id") or self.experiment_id)
        if kind == "reuse":
            self.log.info(
                "Evaluation %s is already DONE (GIP run %s of experiment %s, DAG run %r): reusing it, "
                "no new run. Set force=True to pay for a new one",
                row["fingerprint"][:12],
                row["gip_run_id"],
                row["experiment_id"],
                row["airflow_run_id"],
            )
            run = self.hook.get_experiment_run(row["experiment_id"], row["gip_run_id"])
            GipExperimentRunLink.store(self, context, row["experiment_id"], run.id)
            ti.xcom_push(key="run", value=run.model_dump(mode="json"))
            return str(run.id)
        self._entry = row
        if kind == "attach":
            self.log.info(
                "Evaluation %s is running as GIP run %s (DAG run %r): waiting for it, no new run",
                row["fingerprint"][:12],
                row["gip_run_id"],
                row["airflow_run_id"],
            )
            return None
        if force:
            self.log.info("force=True: starting a new run; the DONE one will be marked superseded")
        self._downsample(experiment, new_rate, estimate)
        return None

    def _definition(self, what: str, read: Any, object_id: str) -> dict[str, Any]:
        """An experiment's or evaluator's definition, or just its id when GIP does not give it."""
        try:
            return dict(read(object_id).model_dump(mode="json"))
        except (GipNotFoundError, GipEndpointDisabledError) as exc:
            self.log.warning("No %s definition for the fingerprint (%s); using its id", what, exc)
        except GipApiError as exc:
            if exc.http_status is None or not 400 <= exc.http_status < 500 or exc.http_status == 401:
                raise
            self.log.warning(
                "No %s definition for the fingerprint (HTTP %s); using its id", what, exc.http_status
            )
        return {"id": object_id}

    def _langfuse_project(self, credential_id: str | None) -> list[str | None] | None:
        """The Langfuse URL and public key a credential points to, when GIP lists credentials."""
        listed = self.hook.lookup("credentials", self.hook.list_credentials)
        found = next((c for c in listed or () if c.id == credential_id), None)
        return [found.base_url, found.public_key] if found is not None and found.base_url else None

    def _price(self, judge: str | None) -> Price:
        raw = Variable.get(PRICE_TABLE_VARIABLE, default=None)
        source = f"Variable {PRICE_TABLE_VARIABLE!r}"
        if raw is None:
            raw = BaseHook.get_connection(self.gip_conn_id).extra_dejson.get("price_table")
            source = f"extra 'price_table' of connection {self.gip_conn_id!r}"
        try:
            return price_of(parse_price_table(raw, source), judge)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None

    def _downsample(
        self, experiment: Mapping[str, Any], rate: float | None, estimate: Estimate | None
    ) -> None:
        """Run a copy of the experiment at the lower sampling rate (a GIP experiment's rate is fixed)."""
        if rate is None or estimate is None:
            return
        config = {**(experiment.get("config") or {}), "sampling_rate": rate}
        # Cap the count too, so that sampling noise cannot take the run over the limit.
        cap_key = "max_trace_count" if "trace_filter_request" in config else "max_observation_count"
        cap = max(1, math.floor(estimate.count.matching * rate))
        config[cap_key] = min(cap, config.get(cap_key) or cap)
        name = f"{str(experiment.get('name') or self.experiment_id)[:200]} (sampling_rate {rate:g})"
        body = {"name": name, "type": experiment.get("type"), "config": config}
        created = self.hook.create_experiment(api.build(api.ExperimentCreate, body, "downsampled experiment"))
        self.log.warning(
            "over_limit='downsample': sampling_rate lowered from %g to %g so the run fits (%s); running "
            "experiment %s (%s) instead of %s",
            float((experiment.get("config") or {}).get("sampling_rate", 1.0)),
            rate,
            estimate.describe(),
            created.id,
            name,
            self.experiment_id,
        )
        self.experiment_id = created.id
        if self._entry is not None:
            self._entry["experiment_id"] = created.id

    # -- around the run --------------------------------------------------------------------------------

    def _cost_control_attached(self) -> JsonValue | None:
        """The reference of a running GIP run of the same evaluation to wait for instead of creating one."""
        row = self._entry
        if row is None or row.get("status") != Status.RUNNING or not row.get("gip_run_id"):
            return None
        return {
            "experiment_id": row["experiment_id"],
            "run_id": row["gip_run_id"],
            "evaluator_id": self.evaluator_id,
        }

    def _cost_control_started(self, run: api.ExperimentRun) -> None:
        if self._entry is not None and self.ledger_conn_id:
            Ledger.from_conn_id(self.ledger_conn_id, self.ledger_table).started(
                self._entry["entry_id"], experiment_id=self.experiment_id, gip_run_id=run.id
            )
            self._entry.update(status=Status.RUNNING, gip_run_id=run.id)

    def _settle_row(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The final values of a RUNNING ledger row whose GIP run has ended, or None while it runs."""
        try:
            run = self.hook.get_experiment_run(row["experiment_id"], row["gip_run_id"])
        except GipNotFoundError:
            return {"status": Status.FAILED}
        status = run.status or ""
        settings = self.wait_settings  # type: ignore[attr-defined]
        if status not in settings.success_statuses | settings.failure_statuses:
            return None
        prompt, completion = _usage(run.model_dump(mode="json"))
        done = status in settings.success_statuses
        cost = (
            self._price(row.get("judge_model")).cost(prompt, completion or 0) if prompt is not None else None
        )
        total = None if prompt is None else prompt + (completion or 0)
        status = Status.DONE if done else Status.FAILED
        return {
            "status": status,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "cost": cost,
        }

    def _settle(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """``raise_for_event``, recording the run's end and actual use in the ledger first."""
        run_id = str(event.get("run_id") or (event.get("run") or {}).get("id") or "")
        try:
            run = raise_for_event(event)
        except Exception:
            if event.get("status") == "failure":  # a timed-out wait leaves the run going: keep it RUNNING
                self._record_end(context, run_id, event.get("run"), done=False)
            raise
        self._record_end(context, run_id, run, done=True)
        return run

    def _record_end(self, context: Context, run_id: str, run: Any, *, done: bool) -> None:
        if not (self.ledger_conn_id or self.langfuse_conn_id) or not run_id:
            return
        prompt, completion = _usage(run if isinstance(run, Mapping) else None)
        ledger = Ledger.from_conn_id(self.ledger_conn_id, self.ledger_table) if self.ledger_conn_id else None
        rows = ledger.rows(f"gip_run_id = {ledger.ph}", (run_id,)) if ledger else []
        judge = rows[0]["judge_model"] if rows else self._judge
        cost = self._price(judge).cost(prompt, completion or 0) if prompt is not None else None
        if ledger is not None:
            ledger.finish(run_id, done=done, prompt_tokens=prompt, completion_tokens=completion, cost=cost)
        if prompt is not None:
            estimate = rows[0].get("est_prompt_tokens") if rows else None
            self.log.info(
                "Actual use of run %s: %d prompt + %d completion tokens, cost %s (estimate: %s tokens)",
                run_id,
                prompt,
                completion or 0,
                f"${cost:.4f}" if cost is not None else "unknown",
                (estimate or 0) + (rows[0].get("est_completion_tokens") or 0)
                if estimate is not None
                else "none",
            )
            context["ti"].xcom_push(
                key="cost",
                value={
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + (completion or 0),
                    "cost": cost,
                },
            )
