"""Operators for the GIP evaluation API: register a Langfuse credential, create experiments and
evaluators, and start (and wait for) experiment runs.

The operators are thin: requests are validated with the models of :mod:`gip_airflow.api` before the hook
is touched (and at DAG parse time for the parts that are not templated), the HTTP work lives in
:class:`~gip_airflow.hooks.gip.GipHook`, and waiting follows :mod:`gip_airflow.triggers.gip`.

Retry safety (details in docs/operators.md):

* credentials: the task state store remembers what this task instance registered;
* experiments and evaluators: the state store, then a same-name-and-definition lookup on GIP;
* runs: ``ResumableJobMixin`` (state store, Airflow >= 3.3) reconnects a retry to the stored run, and a
  display-name lookup before every create closes the gap between creating a run and storing its id.

Lookups use list endpoints the GIP documents do not describe: any 4xx answer there but 401 means "no
lookup" (logged once, the create goes on), and the connection extra ``list_endpoints: false`` skips them,
so that only the task state store protects a retry (see :meth:`~gip_airflow.hooks.gip.GipHook.lookup`).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Collection, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from airflow.sdk import BaseHook, BaseOperator, Variable, conf
from airflow.sdk.exceptions import AirflowFailException
from pydantic import BaseModel

from gip_airflow import api
from gip_airflow.exceptions import GipError, GipNotFoundError
from gip_airflow.hooks.gip import GipHook
from gip_airflow.links import GipExperimentRunLink
from gip_airflow.operators._base import (
    DEFAULT_WINDOW_FALLBACK,
    GipCreateOperatorBase,
    as_dict,
    data_interval_window,
    default_display_name,
    fill_window,
    mask_secret,
    to_seconds,
    url_of,
)
from gip_airflow.operators._cost_control import CostControlMixin
from gip_airflow.operators._validation import check_at_parse_time, is_dynamic
from gip_airflow.triggers.gip import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFER_GRACE_SECONDS,
    RunWait,
    WaitSettings,
    poll_keepalive,
    wait_in_worker,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context, ResumableJobMixin
    from pydantic import JsonValue

    HAS_RESUMABLE_JOB_MIXIN = True
else:
    try:  # Airflow >= 3.3 (AIP-103): job ids survive task retries in the task state store
        from airflow.sdk import ResumableJobMixin

        HAS_RESUMABLE_JOB_MIXIN = True
    except ImportError:  # older Airflow: every try submits; only the display-name lookup protects

        class ResumableJobMixin:
            """Stand-in without a task state store: submit, wait, return."""

            external_id_key = "remote_job_id"

            def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.durable = False

            def execute_resumable(self, context: Context) -> Any:
                external_id = self.submit_job(context)
                self.poll_until_complete(external_id, context)
                return self.get_job_result(external_id, context)

        HAS_RESUMABLE_JOB_MIXIN = False

__all__ = [
    "DEFAULT_WINDOW_FALLBACK",
    "DEFER_GRACE_SECONDS",
    "GipCreateEvaluatorOperator",
    "GipCreateExperimentOperator",
    "GipCreateLangfuseCredentialOperator",
    "GipStartExperimentRunOperator",
    "data_interval_window",
    "default_display_name",
]


# ---------------------------------------------------------------------------------------------
# Create operators
# ---------------------------------------------------------------------------------------------


class GipCreateLangfuseCredentialOperator(GipCreateOperatorBase):
    """Register a Langfuse project's API keys with GIP; returns the credential id (XCom ``return_value``).

    Prefer ``langfuse_conn_id``: an Airflow connection (type ``generic`` or ``http``) whose host is the
    Langfuse base URL, login the public key and password the secret key. Explicit arguments override the
    connection's values. The secret key is registered with Airflow's secrets masker, the template field
    ``private_key`` is redacted in rendered templates by name, and it never goes to XCom or exceptions.

    Retry safety: GIP has no list endpoint for credentials, so the task state store (Airflow >= 3.3)
    makes a retry of the same task instance reuse the credential it registered (when the alias, URL and
    keys are unchanged). Across DAG runs, ``remember_in_variable`` does the same through an Airflow
    Variable; without it each DAG run registers a new credential.

    :param alias: name of the credential in GIP.
    :param base_url: Langfuse base URL (e.g. ``https://cloud.langfuse.com``).
    :param public_key: Langfuse public key (``pk-lf-...``).
    :param private_key: Langfuse secret key (``sk-lf-...``); better via ``langfuse_conn_id``.
    :param langfuse_conn_id: Airflow connection with host/login/password = URL/public key/secret key.
    :param gip_conn_id: the ``gip`` connection.
    :param reuse_existing: set False to always register a new credential.
    :param remember_in_variable: name of an Airflow Variable that keeps the registered credential's id
        with a SHA-256 digest of the request (never the key itself); later DAG runs reuse that id while
        the alias, URL and keys are unchanged, and register anew (updating the Variable) when they change.
        Delete the Variable to force a new registration (e.g. after deleting the credential in GIP).
    """

    template_fields: Sequence[str] = (
        "alias",
        "base_url",
        "public_key",
        "private_key",
        "langfuse_conn_id",
        "remember_in_variable",
    )
    what = "Langfuse credential"
    state_key = "gip_langfuse_credential"
    model = api.LangfuseCredentialCreate

    def __init__(
        self,
        *,
        alias: str,
        base_url: str | None = None,
        public_key: str | None = None,
        private_key: str | None = None,
        langfuse_conn_id: str | None = None,
        remember_in_variable: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.remember_in_variable = remember_in_variable
        self.alias = alias
        self.base_url = base_url
        self.public_key = public_key
        self.private_key = private_key
        self.langfuse_conn_id = langfuse_conn_id
        if isinstance(private_key, str) and private_key and not is_dynamic(private_key):
            mask_secret(private_key)
        if not langfuse_conn_id and not private_key:
            raise ValueError(
                f"Task {self.task_id!r}: give langfuse_conn_id (a connection whose password is the Langfuse "
                "secret key; preferred) or private_key"
            )
        if not langfuse_conn_id:
            self._check_at_parse_time()

    def request_data(self, context: Context | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "alias": self.alias,
            "base_url": self.base_url,
            "public_key": self.public_key,
            "private_key": self.private_key,
        }
        if self.langfuse_conn_id and context is not None:
            conn = BaseHook.get_connection(self.langfuse_conn_id)
            if conn.password:
                mask_secret(conn.password)
            for key, value in (("base_url", url_of(conn)), ("public_key", conn.login)):
                values[key] = values[key] or value
            values["private_key"] = values["private_key"] or conn.password
        if values["private_key"]:
            mask_secret(str(values["private_key"]))
        return {k: v for k, v in values.items() if v is not None}

    def _find_equivalent(self, wire: Mapping[str, Any], fingerprint: str) -> Any:
        """No list endpoint for credentials: look in ``remember_in_variable`` instead."""
        if not self.remember_in_variable:
            return None
        raw = Variable.get(self.remember_in_variable, default=None)
        try:
            remembered = json.loads(raw) if isinstance(raw, str) else raw
            if remembered is not None and not isinstance(remembered, Mapping):
                raise ValueError
        except ValueError:  # not what _created writes: never overwrite someone else's Variable
            raise AirflowFailException(
                f"Variable {self.remember_in_variable!r} (remember_in_variable) holds something other than "
                "what this operator writes; delete it or choose another name"
            ) from None
        if remembered is not None and remembered.get("fingerprint") == fingerprint:
            self.log.info(
                "Reusing Langfuse credential %s registered by an earlier DAG run (Variable %r; same alias, "
                "URL and keys)",
                remembered.get("id"),
                self.remember_in_variable,
            )
            return api.Credential(id=str(remembered["id"]))
        if remembered is not None:
            self.log.info(
                "Variable %r holds a credential for another alias, URL or keys; registering a new one",
                self.remember_in_variable,
            )
        return None

    def _created(self, object_id: str, fingerprint: str) -> None:
        if self.remember_in_variable:
            value = {"id": str(object_id), "fingerprint": fingerprint, "alias": self.alias}
            Variable.set(
                self.remember_in_variable,
                value,
                description="GIP Langfuse credential registered by gip-airflow (id, SHA-256 of the request)",
                serialize_json=True,
            )
            self.log.info("Remembered credential %s in Variable %r", object_id, self.remember_in_variable)

    def create(self, request: api.LangfuseCredentialCreate) -> api.Credential:
        secret = request.private_key.get_secret_value()
        try:
            return self.hook.create_langfuse_credential(request)
        except GipError as exc:
            if secret and secret in str(exc):  # GIP echoed the key: never let it into logs or the UI
                raise type(exc)(str(exc).replace(secret, "***")) from None
            raise


_TYPE_OF_CONFIG = {model: etype for etype, model in api.CONFIG_BY_TYPE.items()}


class GipCreateExperimentOperator(GipCreateOperatorBase):
    """Create an experiment (*what* to evaluate); returns its id (XCom ``return_value``).

    ``config`` is a typed config (``api.TraceExperimentConfig`` etc., which also sets ``experiment_type``)
    or a plain dict (templated: e.g. ``{"integrated_service_credential_id": cred.output, ...}``). Window
    timestamps accept epoch ms, aware datetimes and ISO strings such as ``"{{ data_interval_start }}"``.

    ``window="data_interval"`` fills the experiment's window (``from_timestamp``/``to_timestamp`` or
    ``from_start_time``/``to_start_time``) from the DAG run's data interval, making every run reproducible
    and backfillable. Runs without a usable interval (manual/API runs in Airflow 3 have none; a
    ``CronTriggerTimetable`` without ``interval=`` gives an empty one) evaluate the ``window_fallback``
    (default 24 h) before ``dag_run.run_after`` (or before the interval's end), with a warning in the log.

    Retry safety: a retry of the same task instance reuses the experiment stored in the task state store;
    otherwise an experiment with the same name *and* definition found on GIP is reused (assumed list
    endpoint), else a new one is created. A same-named experiment with another definition is never reused.

    :param name: experiment name (max 255 characters).
    :param config: the type's config, typed or dict.
    :param experiment_type: ``langfuse_dataset``, ``langfuse_trace`` or ``langfuse_observation``;
        inferred from a typed config.
    :param description: optional description.
    :param window: ``"data_interval"`` to fill the window from the run's data interval, or None.
    :param window_fallback: length of the fallback window for runs without a data interval.
    :param gip_conn_id: the ``gip`` connection.
    :param reuse_existing: set False to always create a new experiment.
    """

    template_fields: Sequence[str] = ("name", "description", "experiment_type", "config")
    template_fields_renderers: ClassVar[dict[str, str]] = {"config": "json"}
    what = "experiment"
    state_key = "gip_experiment"
    model = api.ExperimentCreate

    def __init__(
        self,
        *,
        name: str,
        config: api.ExperimentConfig | Mapping[str, Any],
        experiment_type: api.ExperimentType | str | None = None,
        description: str | None = None,
        window: Literal["data_interval"] | None = None,
        window_fallback: dt.timedelta = DEFAULT_WINDOW_FALLBACK,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        inferred = _TYPE_OF_CONFIG.get(type(config)) if isinstance(config, BaseModel) else None
        if inferred and experiment_type and str(experiment_type) != inferred.value:
            raise api.GipRequestError(
                f"Task {self.task_id!r}: experiment_type {str(experiment_type)!r} does not match the "
                f"{type(config).__name__} config (type {inferred.value!r}); drop experiment_type"
            )
        if window not in (None, "data_interval"):
            raise ValueError(f"Task {self.task_id!r}: window must be 'data_interval' or None, got {window!r}")
        self.name = name
        self.description = description
        self.experiment_type = str(inferred or experiment_type) if (inferred or experiment_type) else None
        self.config = as_dict(config)
        self.window = window
        self.window_fallback = window_fallback
        self._check_at_parse_time()

    def request_data(self, context: Context | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "type": self.experiment_type,
            "config": copy.deepcopy(self.config),
        }
        if self.window == "data_interval":
            fill_window(self.task_id, data, context, self.window_fallback, self.log)
        return data

    def list_same_name(self, name: str) -> list[api.Experiment]:
        return [e for e in self.hook.list_experiments() if e.name == name]

    def create(self, request: api.ExperimentCreate) -> api.Experiment:
        return self.hook.create_experiment(request)


class GipCreateEvaluatorOperator(GipCreateOperatorBase):
    """Create an evaluator (*how* to evaluate: judge model, prompt, metric); returns its id.

    ``metric`` and ``evaluation_config`` are typed models (``api.CategoryMetric``, ``api.EvaluationConfig``,
    ...) or plain dicts, validated at parse time where not templated.

    Retry safety: as for experiments (task state store, then an evaluator with the same name and definition
    on GIP is reused).

    :param name: evaluator name.
    :param metric: ``{"type": "category"|"numeric"|"bool", "config": ...}``.
    :param evaluation_config: judge model ids and parameters and the judge prompt.
    :param evaluator_type: only ``llm_judge`` exists today.
    :param gip_conn_id: the ``gip`` connection.
    :param reuse_existing: set False to always create a new evaluator.
    """

    template_fields: Sequence[str] = ("name", "metric", "evaluation_config")
    template_fields_renderers: ClassVar[dict[str, str]] = {"metric": "json", "evaluation_config": "json"}
    what = "evaluator"
    state_key = "gip_evaluator"
    model = api.EvaluatorCreate

    def __init__(
        self,
        *,
        name: str,
        metric: api.CategoryMetric | api.NumericMetric | api.BoolMetric | Mapping[str, Any],
        evaluation_config: api.EvaluationConfig | Mapping[str, Any],
        evaluator_type: str = "llm_judge",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.metric = as_dict(metric)
        self.evaluation_config = as_dict(evaluation_config)
        self.evaluator_type = evaluator_type
        self._check_at_parse_time()

    def request_data(self, context: Context | None) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.evaluator_type,
            "metric": self.metric,
            "evaluation_config": self.evaluation_config,
        }

    def list_same_name(self, name: str) -> list[api.Evaluator]:
        return [e for e in self.hook.list_evaluators() if e.name == name]

    def create(self, request: api.EvaluatorCreate) -> api.Evaluator:
        return self.hook.create_evaluator(request)


# ---------------------------------------------------------------------------------------------
# Experiment runs
# ---------------------------------------------------------------------------------------------

_STALE = "__gip_stored_run_is_for_another_experiment_or_evaluator__"
_MISSING = "__gip_stored_run_not_found__"


class GipStartExperimentRunOperator(CostControlMixin, ResumableJobMixin, BaseOperator):
    """Start an experiment run (experiment x evaluator) and, by default, wait until it finishes.

    Returns the run id (XCom ``return_value``) and pushes the final run (``status``,
    ``aggregated_result`` with token usage, ``result_path``) as XCom ``run``. The "GIP experiment run"
    extra link opens the run in the GIP console when the connection has a ``console_url`` extra.

    Retry safety (a retry never pays for a second evaluation of the same task instance):

    * Airflow >= 3.3: the run id is kept in the task state store (``ResumableJobMixin``); a retry
      reconnects to the stored run while it is in progress and returns at once when it is DONE. A stored
      run that FAILED is not reused: the retry starts a new run.
    * Before every create, a display-name lookup (assumed list endpoint; skipped with the connection extra
      ``list_endpoints: false`` or when GIP refuses to list) reuses a run of this task instance that is in
      progress or DONE. This closes the mixin's gap (worker died between creating the
      run and storing its id) and protects on Airflow < 3.3. The default display name is unique per task
      instance; a custom one must be too (include ``{{ run_id }}`` and, when mapped, ``{{ ti.map_index }}``).
    * ``reuse_existing_run=False`` turns both off: every try starts a new run.

    Across DAG runs (opt-in): ledger, estimate, limits, budgets; parameters in ``_cost_control``.

    Waiting: in the worker (``poll_interval``), or with ``deferrable=True`` in the triggerer, which frees the
    worker slot. Both use one policy: transient API errors are waited out with backoff (honouring
    ``Retry-After``) and the wait gives up after ``max_consecutive_errors`` failed polls; a failure status
    fails the task naming the run, its status and GIP's ``aggregated_result.error``; unknown statuses are
    logged and waited on; after ``timeout`` the task fails saying how long it waited (the run keeps going;
    a retry reconnects to it).

    :param experiment_id: the experiment to run.
    :param evaluator_id: the evaluator to judge with.
    :param display_name: run name; default ``airflow/<dag>/<task>/<run_id>[/<map_index>]``.
    :param target_data_converter: optional model to re-generate the evaluated outputs (typed or dict).
    :param score_name: write each item's score back to Langfuse under this name.
    :param sync_score: enable/disable score sync (default True when ``score_name`` is set).
    :param metadata: extra run metadata (dict); ``score_name``/``sync_score`` fill its
        ``langfuse_integration_config``.
    :param wait_for_completion: wait for the run to finish (default True).
    :param poll_interval: seconds between status polls.
    :param timeout: how long to wait (seconds or timedelta; default 24 h).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param success_statuses: statuses that mean done (default ``DONE``).
    :param failure_statuses: statuses that fail the task (default ``FAILED``, ``ERROR``, ``CANCELLED``).
    :param max_consecutive_errors: failed polls in a row before giving up.
    :param reuse_existing_run: reuse the run of an earlier try (default True).
    :param gip_conn_id: the ``gip`` connection.
    """

    template_fields: Sequence[str] = (
        "experiment_id",
        "evaluator_id",
        "display_name",
        "target_data_converter",
        "score_name",
        "metadata",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "target_data_converter": "json",
        "metadata": "json",
    }
    operator_extra_links = (GipExperimentRunLink(),)
    ui_color = "#d6e6fb"
    #: Task state store key of the run reference. Renaming it breaks retries of in-flight tasks.
    external_id_key = "gip_experiment_run"
    _request: api.ExperimentRunCreate

    def __init__(
        self,
        *,
        experiment_id: str,
        evaluator_id: str,
        display_name: str | None = None,
        target_data_converter: api.TargetDataConverter | Mapping[str, Any] | None = None,
        score_name: str | None = None,
        sync_score: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait_for_completion: bool = True,
        poll_interval: dt.timedelta | float = 30.0,
        timeout: dt.timedelta | float = dt.timedelta(hours=24),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        reuse_existing_run: bool = True,
        gip_conn_id: str = GipHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("durable", reuse_existing_run)
        super().__init__(**kwargs)
        self.experiment_id = experiment_id
        self.evaluator_id = evaluator_id
        self.display_name = display_name
        self.target_data_converter = as_dict(target_data_converter)
        self.score_name = score_name
        self.sync_score = sync_score
        self.metadata = dict(metadata) if metadata is not None else None
        self.wait_for_completion = wait_for_completion
        self.poll_interval = to_seconds(poll_interval, "poll_interval")
        self.timeout = to_seconds(timeout, "timeout")
        self.deferrable = deferrable
        self.gip_conn_id = gip_conn_id
        self.max_consecutive_errors = max_consecutive_errors
        self.wait_settings = WaitSettings.of(self, self.poll_interval, success_statuses, failure_statuses)
        self.reuse_existing_run = reuse_existing_run
        if sync_score and not score_name:
            raise api.GipRequestError(f"Task {self.task_id!r}: sync_score=True needs a score_name")
        if display_name and not is_dynamic(display_name) and reuse_existing_run:
            self.log.warning(
                "Task %r: display_name %r has no template. Retries reuse a run found by display name, so "
                "it must be unique per task instance: include {{ run_id }} (and {{ ti.map_index }} when "
                "mapped), or leave the default",
                self.task_id,
                display_name,
            )
        self._run: api.ExperimentRun | None = None
        self._final: dict[str, Any] | None = None
        #: The run's console URL once known ("" without ``console_url``); read by the extra link.
        self.gip_run_url: str | None = None
        check_at_parse_time(
            api.ExperimentRunCreate, self._request_data(display_name or "parse-time-check"), self._what()
        )

    @cached_property
    def hook(self) -> GipHook:
        return GipHook(self.gip_conn_id)

    @cached_property
    def poll_hook(self) -> GipHook:
        """One request per poll (the wait policy owns retries and backoff), on one kept-alive connection."""
        return GipHook(self.gip_conn_id, max_retries=0, keepalive_expiry=poll_keepalive(self.poll_interval))

    def _what(self) -> str:
        return f"experiment run for task {self.task_id!r}"

    def _request_data(self, display_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] | None = dict(self.metadata) if self.metadata else None
        if self.score_name:
            metadata = metadata or {}
            metadata["langfuse_integration_config"] = {
                "score_name": self.score_name,
                "sync_score": True if self.sync_score is None else self.sync_score,
            }
        return {
            "evaluator_id": self.evaluator_id,
            "display_name": display_name,
            "target_data_converter": self.target_data_converter,
            "metadata": metadata,
        }

    def _display_name(self, context: Context) -> str:
        if self.display_name:
            return str(self.display_name)
        ti = context["ti"]
        return default_display_name(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", None))

    # -- execute --------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        for name, value in (("experiment_id", self.experiment_id), ("evaluator_id", self.evaluator_id)):
            if not isinstance(value, str) or not value.strip():
                raise AirflowFailException(
                    f"Task {self.task_id!r}: {name} is empty or not a string: {value!r}"
                )
        try:
            self._request = api.build(
                api.ExperimentRunCreate, self._request_data(self._display_name(context)), self._what()
            )
        except api.GipRequestError as exc:
            raise AirflowFailException(str(exc)) from None
        if (reused := self._cost_control_begin(context)) is not None:
            return reused  # the evaluation is DONE in the ledger
        return str(self.execute_resumable(context))

    def _ref(self, run_id: str) -> dict[str, JsonValue]:
        return {"experiment_id": self.experiment_id, "run_id": run_id, "evaluator_id": self.evaluator_id}

    def submit_job(self, context: Context) -> JsonValue:
        if (attached := self._cost_control_attached()) is not None:
            return attached
        if self.reuse_existing_run:
            found = self._find_reusable_run(self._request.display_name)
            if found is not None:
                self._run = found
                self.log.info(
                    "Reusing experiment run %s (%r, status %s) that this task instance started earlier; "
                    "not starting another",
                    found.id,
                    found.display_name,
                    found.status,
                )
                return self._ref(found.id)
        run = self.hook.create_experiment_run(self.experiment_id, self._request)
        self._cost_control_started(run)
        self._run = run
        return self._ref(run.id)

    def _find_reusable_run(self, display_name: str) -> api.ExperimentRun | None:
        """A run with our display name and evaluator that is DONE or still going (FAILED ones are skipped)."""
        listed = self.hook.lookup(
            f"runs of experiment {self.experiment_id}",
            lambda: self.hook.list_experiment_runs(self.experiment_id),
        )
        if listed is None:  # no lookup available (logged by the hook)
            return None
        runs = [
            r
            for r in listed
            if r.display_name == display_name and r.evaluator_id in (None, self.evaluator_id)
        ]
        success, failure = self.wait_settings.success_statuses, self.wait_settings.failure_statuses
        done = [r for r in runs if (r.status or "") in success]
        going = [r for r in runs if (r.status or "") not in success | failure]
        if len(done) + len(going) > 1:
            self.log.warning(
                "%d runs named %r exist on experiment %s; reusing one. Is the display name unique per "
                "task instance?",
                len(done) + len(going),
                display_name,
                self.experiment_id,
            )
        return next(iter(done or going), None)

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        ref = external_id if isinstance(external_id, dict) else {}
        if ref.get("experiment_id") != self.experiment_id or ref.get("evaluator_id") not in (
            None,
            self.evaluator_id,
        ):
            self.log.info("The stored run %s is for another experiment or evaluator", ref.get("run_id"))
            return _STALE
        try:
            run = self.hook.get_experiment_run(self.experiment_id, str(ref.get("run_id")))
        except GipNotFoundError:
            self.log.warning("The stored run %s no longer exists on GIP", ref.get("run_id"))
            return _MISSING
        self._run = run
        return run.status or ""

    def is_job_active(self, status: str) -> bool:
        settings = self.wait_settings
        return status not in settings.success_statuses | settings.failure_statuses | {_STALE, _MISSING}

    def is_job_succeeded(self, status: str) -> bool:
        return status in self.wait_settings.success_statuses

    # Returns the run id: the mixin returns this method's value when it reconnects to a stored run.
    def poll_until_complete(self, external_id: JsonValue, context: Context) -> str:  # type: ignore[override]
        run_id = str(cast("dict", external_id)["run_id"])
        GipExperimentRunLink.store(self, context, self.experiment_id, run_id)
        if not self.wait_for_completion:
            return self.get_job_result(external_id, context)
        wait = self._new_wait(run_id)
        if self._run is not None and self._run.id == run_id:
            event, _ = wait.on_run(self._run)
            if event is not None:
                return self._finish(context, event)
        if self.deferrable:
            self.log.info("Deferring: the triggerer waits for run %s (timeout %.0f s)", run_id, self.timeout)
            self.defer(**self.wait_settings.defer_kwargs(wait))
        self.log.info("Waiting for run %s in the worker (timeout %.0f s)", run_id, self.timeout)
        return self._finish(context, wait_in_worker(self.poll_hook, wait))

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        run_id = str(cast("dict", external_id)["run_id"])
        if self._final is not None and self._final.get("id") == run_id:
            return run_id
        GipExperimentRunLink.store(self, context, self.experiment_id, run_id)
        run = self._run if self._run is not None and self._run.id == run_id else None
        run = run or self.hook.get_experiment_run(self.experiment_id, run_id)
        context["ti"].xcom_push(key="run", value=run.model_dump(mode="json"))
        return run_id

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resume after the trigger: return the run id, or raise for failure, timeout or errors."""
        GipExperimentRunLink.store(self, context, self.experiment_id, str(event.get("run_id")))
        return self._finish(context, event)

    # -- helpers --------------------------------------------------------------------------------

    def _new_wait(self, run_id: str) -> RunWait:
        now = time.time()
        return self.wait_settings.new_wait(
            self.experiment_id, run_id, deadline=now + self.timeout, started_at=now, log=self.log
        )

    def _finish(self, context: Context, event: dict[str, Any]) -> str:
        if isinstance(event.get("run"), Mapping):
            context["ti"].xcom_push(key="run", value=dict(event["run"]))
        run = self._settle(context, event)  # raise_for_event, recorded in the ledger
        self._final = run
        usage = (run.get("aggregated_result") or {}).get("total_usage") or {}
        self.log.info(
            "Experiment run %s finished with status %s (%s tokens); result: %s",
            run.get("id"),
            run.get("status"),
            usage.get("total_tokens", "?"),
            run.get("result_path"),
        )
        return str(run.get("id") or event.get("run_id"))

    # -- OpenLineage (called by apache-airflow-providers-openlineage; see gip_airflow.openlineage) -----

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        from gip_airflow.openlineage import experiment_run_lineage

        return experiment_run_lineage(self.gip_conn_id, self.experiment_id, self.evaluator_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        from gip_airflow.openlineage import experiment_run_lineage

        run = self._final or (self._run.model_dump(mode="json") if self._run else None)
        return experiment_run_lineage(self.gip_conn_id, self.experiment_id, self.evaluator_id, run)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        return self.get_openlineage_facets_on_complete(task_instance)
