"""Build Airflow DAGs that replace GIP auto evaluation configs, from a small JSON spec.

One spec entry (:class:`AutoEvaluationDagSpec`) describes one former auto evaluation: cron schedule and
time zone, evaluator, experiment, target data converter, score-sync metadata, and optionally a warehouse
table to load results into. ``gip-airflow migrate-auto-evaluations`` writes these entries; the shipped
``dags/gip_auto_evaluation_factory.py`` turns a spec file into DAGs with :func:`build_dags`.

Each DAG runs ``[create_window_experiment] >> start_run [>> load_to_warehouse]``:

* The schedule is ``CronTriggerTimetable(cron, timezone=..., interval=window)``: it fires at the same
  local wall-clock times as GIP's cron in that zone.
* An experiment that used ``relative_time_range`` (``PT12H`` = "the last 12 hours when the run starts")
  becomes an explicit window: the timetable's ``interval`` is the relative range, and each run creates
  (or reuses, by name) a copy of the experiment whose from/to are the run's data interval in epoch ms.
  So the firing at ``T`` evaluates ``[T - range, T)`` — the same items GIP would have picked at ``T`` —
  but a re-run or backfill evaluates exactly the same window again.
* Other experiments (datasets, fixed filters) run the same experiment at every firing, as GIP did.

Building a DAG makes no API call: the factory file imports without GIP being reachable.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gip_airflow import api
from gip_airflow.transfers.tables import check_table_name

if TYPE_CHECKING:
    from airflow.sdk import DAG, CronTriggerTimetable

log = logging.getLogger(__name__)

SPEC_VERSION = 1
#: File name the shipped factory DAG reads when ``GIP_AUTO_EVALUATIONS_SPEC`` is not set.
DEFAULT_SPEC_FILENAME = "gip_auto_evaluations.json"
#: Environment variable naming the spec file the factory DAG reads.
SPEC_ENV_VAR = "GIP_AUTO_EVALUATIONS_SPEC"
DEFAULT_WAREHOUSE_TABLE = "gip_evaluation_results"

#: Airflow's own limit for DAG ids is 250 characters of ``[A-Za-z0-9_.-]``.
DAG_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
#: GIP's limit for experiment names (``ExperimentCreate.name``).
_MAX_EXPERIMENT_NAME = 255

# Task ids of a generated DAG (tests and docs refer to them).
WINDOW_TASK_ID = "create_window_experiment"
RUN_TASK_ID = "start_run"
LOAD_TASK_ID = "load_to_warehouse"


class SpecError(ValueError):
    """A spec entry cannot be turned into a DAG; the message names the DAG and the field."""


class SourceRef(BaseModel):
    """Where an entry came from (kept so a re-migration replaces its own entry, and for the docs)."""

    model_config = ConfigDict(extra="forbid")

    origin: str = "api"
    auto_evaluation_id: str | None = None
    experiment_id: str | None = None
    name: str | None = None

    @property
    def key(self) -> str | None:
        """Identity of the GIP config this entry replaces (None when the source had no ids)."""
        if self.auto_evaluation_id:
            return f"{self.experiment_id or ''}/{self.auto_evaluation_id}"
        if self.experiment_id and self.name:
            return f"{self.experiment_id}/name:{self.name}"
        return None


class AutoEvaluationDagSpec(BaseModel):
    """One DAG that replaces one GIP auto evaluation config.

    Exactly one of ``experiment_id`` (run that experiment at every firing) and ``experiment`` (an
    ``ExperimentCreate`` body the DAG creates, or reuses by name) is set. With ``window`` (an ISO-8601
    duration) the experiment's filter gets the run's data interval as explicit from/to timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    dag_id: str
    description: str | None = None
    schedule: str
    timezone: str = "Etc/UTC"
    window: str | None = None
    start_date: dt.datetime | None = None
    catchup: bool = False
    paused_on_creation: bool = True
    max_active_runs: int | None = Field(default=None, ge=1)
    retries: int = Field(default=2, ge=0)
    poll_interval: float = Field(default=30.0, gt=0)
    evaluator_id: str = Field(min_length=1)
    experiment_id: str | None = None
    experiment: dict[str, Any] | None = None
    run_name: str = Field(min_length=1, max_length=200)
    target_data_converter: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    gip_conn_id: str = "gip_default"
    warehouse_conn_id: str | None = None
    warehouse_table: str | None = None
    tags: list[str] = Field(default_factory=list)
    source: SourceRef | None = None

    @field_validator("dag_id")
    @classmethod
    def _dag_id(cls, v: str) -> str:
        if not DAG_ID_PATTERN.match(v):
            raise ValueError(f"{v!r} is not a valid DAG id (1-250 characters of letters, digits, _ . -)")
        return v

    _timezone = field_validator("timezone")(lambda cls, v: api.check_timezone(v))

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            api.TraceFilterRequest(relative_time_range=v)
        except ValidationError:
            raise ValueError(f"{v!r} is not an ISO-8601 duration such as 'PT12H'") from None
        return v

    @field_validator("start_date")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("start_date needs a UTC offset, e.g. '2025-03-18T14:00:00+00:00'")
        return v

    @field_validator("target_data_converter")
    @classmethod
    def _converter(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            api.build(api.TargetDataConverter, v, "target_data_converter")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            api.build(api.RunMetadata, v, "metadata")
        return v

    @field_validator("warehouse_table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        return v if v is None else check_table_name(v, "table")

    @model_validator(mode="after")
    def _consistent(self) -> AutoEvaluationDagSpec:
        if (self.experiment_id is None) == (self.experiment is None):
            raise ValueError("give exactly one of experiment_id (existing experiment) and experiment (body)")
        if self.experiment is not None:
            body = api.build(api.ExperimentCreate, self.experiment, "experiment")
            window = body.window_fields
            flt = _filter_of(body)
            if flt is not None and flt.relative_time_range:
                raise ValueError(
                    "experiment still has relative_time_range; remove it and set window instead "
                    "(the DAG passes its data interval as explicit from/to)"
                )
            if self.window is not None:
                if window is None:
                    raise ValueError(f"window is set but a {body.type.value} experiment has no time filter")
                if flt is not None and any(getattr(flt, f) is not None for f in window):
                    raise ValueError(
                        f"with window set, leave {window[0]}/{window[1]} empty (the DAG fills them)"
                    )
        elif self.window is not None:
            raise ValueError("window needs an experiment body (the DAG creates one experiment per window)")
        if self.catchup and self.start_date is None:
            raise ValueError("catchup needs a start_date")
        return self

    # -- derived values ----------------------------------------------------------------------------

    @property
    def interval(self) -> dt.timedelta:
        """The timetable's data interval length (zero without a window)."""
        if self.window is None:
            return dt.timedelta()
        return dt.timedelta(seconds=api.relative_range_seconds(self.window))

    def timetable(self) -> CronTriggerTimetable:
        """``CronTriggerTimetable`` firing like GIP's cron; raises :class:`SpecError` for a bad cron."""
        from airflow.sdk import CronTriggerTimetable

        timetable = CronTriggerTimetable(self.schedule, timezone=self.timezone, interval=self.interval)
        try:
            timetable.validate()
        except Exception as exc:
            raise SpecError(
                f"DAG {self.dag_id}: schedule {self.schedule!r} is not a valid cron: {exc}"
            ) from None
        return timetable

    def experiment_body(self) -> api.ExperimentCreate | None:
        return None if self.experiment is None else api.build(api.ExperimentCreate, self.experiment)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)


def _filter_of(body: api.ExperimentCreate) -> api.TraceFilterRequest | api.ObservationFilterRequest | None:
    """The time filter of a trace or observation experiment; None for a dataset experiment."""
    window = api.WINDOW_FILTER_BY_TYPE.get(body.type)
    return getattr(body.config, window[0]) if window else None


# ---------------------------------------------------------------------------------------------
# Spec files
# ---------------------------------------------------------------------------------------------


def parse_spec(data: Any, where: str = "spec") -> list[AutoEvaluationDagSpec]:
    """Validate a spec document (``{"version": 1, "dags": [...]}`` or a bare list) into entries.

    Raises :class:`SpecError` naming the entry and field; duplicate DAG ids are an error.
    """
    if data is None:
        return []
    if isinstance(data, Mapping):
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(f"{where}: spec version {version!r} is not supported (expected {SPEC_VERSION})")
        data = data.get("dags") or []
    if not isinstance(data, list):
        raise SpecError(f"{where}: expected a list of DAG entries under 'dags'")
    specs: list[AutoEvaluationDagSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        label = entry.get("dag_id", f"#{index}") if isinstance(entry, Mapping) else f"#{index}"
        try:
            spec = AutoEvaluationDagSpec.model_validate(entry)
        except ValidationError as exc:
            raise SpecError(api.format_validation_error(exc, f"entry {label} of {where}")) from None
        except api.GipRequestError as exc:
            raise SpecError(f"{where}, entry {label}: {exc}") from None
        if spec.dag_id in seen:
            raise SpecError(f"{where}: DAG id {spec.dag_id!r} appears twice")
        seen.add(spec.dag_id)
        specs.append(spec)
    return specs


def load_spec(path: str | os.PathLike[str]) -> list[AutoEvaluationDagSpec]:
    """Read a spec file; a missing or empty file means no DAGs."""
    file = Path(path)
    if not file.is_file():
        return []
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{file}: not valid JSON: {exc}") from None
    return parse_spec(data, str(file))


def default_spec_path(dags_dir: str | os.PathLike[str]) -> Path:
    """The spec the factory DAG reads: ``$GIP_AUTO_EVALUATIONS_SPEC``, else ``gip_auto_evaluations.json``
    in ``dags_dir``."""
    configured = os.environ.get(SPEC_ENV_VAR)
    return Path(configured) if configured else Path(dags_dir) / DEFAULT_SPEC_FILENAME


# ---------------------------------------------------------------------------------------------
# DAG building
# ---------------------------------------------------------------------------------------------


def _as_spec(spec: AutoEvaluationDagSpec | Mapping[str, Any]) -> AutoEvaluationDagSpec:
    if isinstance(spec, AutoEvaluationDagSpec):
        return spec
    (parsed,) = parse_spec([dict(spec)])
    return parsed


def dag_kwargs(spec: AutoEvaluationDagSpec) -> dict[str, Any]:
    """Arguments of the ``DAG`` (without ``schedule``, see :meth:`AutoEvaluationDagSpec.timetable`).

    The builder passes them as they are; the standalone DAG files print them as Python literals, so both
    output formats produce the same DAG.
    """
    kwargs: dict[str, Any] = {
        "dag_id": spec.dag_id,
        "description": spec.description or f"GIP auto evaluation {spec.run_name!r}, migrated to Airflow",
        "start_date": spec.start_date,
        "catchup": spec.catchup,
        "is_paused_upon_creation": spec.paused_on_creation,
        "default_args": {"retries": spec.retries, "retry_delay": dt.timedelta(minutes=5)},
        "tags": ["gip", "gip-auto-evaluation", *spec.tags],
        "doc_md": _doc_md(spec),
    }
    if spec.max_active_runs is not None:
        kwargs["max_active_runs"] = spec.max_active_runs
    return kwargs


def window_experiment_kwargs(spec: AutoEvaluationDagSpec) -> dict[str, Any] | None:
    """Arguments of the ``GipCreateExperimentOperator`` (None when the DAG runs a fixed experiment id).

    With a window the operator fills the filter's from/to with the run's data interval
    (``window="data_interval"``), and the name carries the interval, so a retry or a re-run of the same
    interval reuses the experiment (the operator reuses same-name, same-definition experiments).
    """
    body = spec.experiment_body()
    if body is None:
        return None
    wire = body.to_wire()
    kwargs: dict[str, Any] = {
        "task_id": WINDOW_TASK_ID if spec.window else "ensure_experiment",
        "gip_conn_id": spec.gip_conn_id,
        "experiment_type": wire["type"],
        "config": wire["config"],
        "description": wire.get("description"),
    }
    if spec.window:
        suffix = " [{{ data_interval_start }}, {{ data_interval_end }})"
        kwargs["name"] = body.name[: _MAX_EXPERIMENT_NAME - 60] + suffix
        kwargs["window"] = "data_interval"
        kwargs["window_fallback"] = spec.interval
    else:
        kwargs["name"] = body.name
    return kwargs


def run_kwargs(spec: AutoEvaluationDagSpec) -> dict[str, Any]:
    """Arguments of the ``GipStartExperimentRunOperator`` (``experiment_id`` added by the caller when the
    experiment is created by an upstream task)."""
    kwargs: dict[str, Any] = {
        "task_id": RUN_TASK_ID,
        "gip_conn_id": spec.gip_conn_id,
        "evaluator_id": spec.evaluator_id,
        "display_name": spec.run_name[:180] + " / {{ run_id }}",
        "deferrable": True,
        "poll_interval": spec.poll_interval,
    }
    if spec.experiment_id:
        kwargs["experiment_id"] = spec.experiment_id
    if spec.target_data_converter:
        kwargs["target_data_converter"] = spec.target_data_converter
    if spec.metadata:
        kwargs["metadata"] = spec.metadata
    return kwargs


def load_kwargs(spec: AutoEvaluationDagSpec) -> dict[str, Any] | None:
    """Arguments of the ``GipToSqlOperator`` (None without a warehouse connection)."""
    if not spec.warehouse_conn_id:
        return None
    return {
        "task_id": LOAD_TASK_ID,
        "gip_conn_id": spec.gip_conn_id,
        "conn_id": spec.warehouse_conn_id,
        "table": spec.warehouse_table or DEFAULT_WAREHOUSE_TABLE,
        "evaluator_id": spec.evaluator_id,
    }


def build_dag(spec: AutoEvaluationDagSpec | Mapping[str, Any]) -> DAG:
    """Build the DAG for one spec entry. Makes no API call."""
    spec = _as_spec(spec)
    from airflow.sdk import DAG

    from gip_airflow.operators.gip import GipCreateExperimentOperator, GipStartExperimentRunOperator

    with DAG(schedule=spec.timetable(), **dag_kwargs(spec)) as dag:
        create = window_experiment_kwargs(spec)
        run = run_kwargs(spec)
        if create is not None:
            run["experiment_id"] = GipCreateExperimentOperator(**create).output
        start_run = GipStartExperimentRunOperator(**run)
        load = load_kwargs(spec)
        if load is not None:
            from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

            load["experiment_id"] = run["experiment_id"]
            load["run_id"] = start_run.output
            GipToSqlOperator(**load)
    return dag


def build_dags(path: str | os.PathLike[str]) -> dict[str, DAG]:
    """All DAGs of a spec file, by DAG id (empty for a missing or empty file)."""
    return {spec.dag_id: build_dag(spec) for spec in load_spec(path)}


def _doc_md(spec: AutoEvaluationDagSpec) -> str:
    lines = [
        f"Replaces the GIP auto evaluation **{spec.run_name}**",
        "",
        f"* schedule `{spec.schedule}` in `{spec.timezone}`",
        f"* evaluator `{spec.evaluator_id}`",
    ]
    if spec.experiment_id:
        lines.append(f"* experiment `{spec.experiment_id}` (the same experiment at every firing)")
    elif spec.window:
        lines.append(
            f"* a copy of the experiment per run with the explicit window [data_interval_start, "
            f"data_interval_end) = the last `{spec.window}` before each firing (was relative_time_range)"
        )
    else:
        lines.append("* the experiment is created once (reused by name) and run at every firing")
    if spec.source and spec.source.auto_evaluation_id:
        lines.append(
            f"* source: auto evaluation `{spec.source.auto_evaluation_id}` of experiment "
            f"`{spec.source.experiment_id}`"
        )
    if spec.warehouse_conn_id:
        lines.append(f"* results loaded into `{spec.warehouse_table}` via `{spec.warehouse_conn_id}`")
    return "\n".join(lines)
