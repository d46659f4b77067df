"""Move GIP auto evaluation configs to Airflow DAGs without skipping or doubling an evaluation.

The steps (``gip-airflow migrate-auto-evaluations`` drives them; each is a plain function):

1. **Read** configs: from the API (:func:`read_from_api`: every experiment, then its auto evaluations)
   or from a JSON file (:func:`read_from_file`) holding the documented request bodies plus the
   experiment id and/or definition.
2. **Plan** (:func:`plan_migration`): per config either a :class:`PlannedDag` (a validated
   :class:`~gip_airflow.dag_factory.AutoEvaluationDagSpec`) or an :class:`Unsupported` with the reason.
   Nothing is half-migrated: a config that fails any check produces no DAG.
3. **Write** (:func:`write_outputs`): one spec file for the factory DAG (default) or one DAG file per
   config, each written atomically; on any failure every file is restored.
4. **Verify** (:func:`verify_outputs`): load what was written the way Airflow does (``DagBag``, plus
   serialization) and check every planned DAG id is there. A failure restores the old files.
5. **Switch** (:func:`disable_in_gip`, only with ``--disable-in-gip``): disable each GIP config, after
   the files are verified and after every GIP firing before the *handover instant* has passed.

The handover instant ``H`` of a config is its first firing at least ``handover_margin`` after planning.
The DAG's ``start_date`` is ``H``: GIP owns firings before ``H``, Airflow owns ``H`` and later. With
``--disable-in-gip`` the DAG also gets ``catchup=True`` and is unpaused on creation, so a DAG that is
deployed late catches up from ``H`` instead of skipping firings. Without it the DAG is written paused
(``is_paused_upon_creation``) and GIP keeps running: nothing is doubled until a human switches.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import pendulum

from gip_airflow import api
from gip_airflow.dag_factory import (
    DEFAULT_WAREHOUSE_TABLE,
    SPEC_VERSION,
    AutoEvaluationDagSpec,
    SourceRef,
    SpecError,
    parse_spec,
)
from gip_airflow.exceptions import GipError, GipNotFoundError
from gip_airflow.transfers.tables import check_table_name

if TYPE_CHECKING:
    from gip_airflow.hooks.gip import GipHook

log = logging.getLogger(__name__)

OutputFormat = Literal["factory", "dag"]

DEFAULT_DAG_ID_PREFIX = "gip_auto_eval_"
#: Minimum time between planning and the first firing Airflow takes over.
DEFAULT_HANDOVER_MARGIN = dt.timedelta(minutes=2)
#: [assumed] How long after a firing GIP may take to create its run; we disable only after that.
GIP_FIRING_GRACE = dt.timedelta(seconds=30)
#: Marker line at the top of generated DAG files: identifies the source on re-migration.
DAG_FILE_MARKER = "# gip-airflow-migrated:"
_MAX_DAG_ID = 250
#: What a GIP id may look like here (UUIDs in practice). Ids go into URL paths: no "/" or "..".
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.\-]{0,127}$")


def _bad_id(value: str | None) -> bool:
    return value is not None and (not _ID_PATTERN.match(value) or ".." in value)


# ---------------------------------------------------------------------------------------------
# Reading configs
# ---------------------------------------------------------------------------------------------


@dataclass
class ConfigSource:
    """One auto evaluation config as read, before any validation."""

    origin: str
    auto_evaluation: dict[str, Any]
    auto_evaluation_id: str | None = None
    experiment_id: str | None = None
    experiment: dict[str, Any] | None = None
    #: Set when reading already showed the config cannot be migrated (e.g. experiment missing).
    problem: str | None = None

    @property
    def name(self) -> str:
        return str(self.auto_evaluation.get("name") or self.auto_evaluation_id or "(unnamed)")

    @property
    def enabled(self) -> bool:
        return self.auto_evaluation.get("enabled") is not False

    def ref(self) -> SourceRef:
        return SourceRef(
            origin=self.origin,
            auto_evaluation_id=self.auto_evaluation_id,
            experiment_id=self.experiment_id,
            name=self.name,
        )


def _experiment_dict(experiment: api.Experiment) -> dict[str, Any]:
    return {
        "name": experiment.name,
        "description": experiment.description,
        "type": experiment.type,
        "config": experiment.config,
    }


def read_from_api(
    hook: GipHook,
    *,
    experiment_ids: Sequence[str] = (),
    auto_evaluation_ids: Sequence[str] = (),
) -> list[ConfigSource]:
    """Every auto evaluation config of the workspace (optionally only some experiments / configs).

    [assumed] endpoints: list experiments, list an experiment's auto evaluations, get an experiment.
    """
    if experiment_ids:
        experiments: list[api.Experiment] = []
        for exp_id in experiment_ids:
            try:
                experiments.append(hook.get_experiment(exp_id))
            except GipNotFoundError:
                raise GipError(f"experiment {exp_id} does not exist in the GIP workspace") from None
    else:
        experiments = hook.list_experiments()
    sources: list[ConfigSource] = []
    for experiment in experiments:
        configs = hook.list_auto_evaluations(experiment.id)
        if not configs:
            continue
        definition: dict[str, Any] | None = None
        problem = None
        if experiment.type and experiment.config is not None:
            definition = _experiment_dict(experiment)
        else:
            try:
                definition = _experiment_dict(hook.get_experiment(experiment.id))
            except GipNotFoundError:
                problem = f"experiment {experiment.id} is missing in GIP"
        for config in configs:
            if auto_evaluation_ids and config.id not in auto_evaluation_ids:
                continue
            body = config.model_dump(mode="json", exclude={"id", "experiment_id"})
            sources.append(
                ConfigSource(
                    origin="api",
                    auto_evaluation=body,
                    auto_evaluation_id=config.id,
                    experiment_id=config.experiment_id or experiment.id,
                    experiment=definition,
                    problem=problem,
                )
            )
    return sources


def read_from_file(path: str | os.PathLike[str], hook: GipHook | None = None) -> list[ConfigSource]:
    """Configs from a JSON file: a list (or ``{"auto_evaluations": [...]}``) of entries like

    ``{"id": ..., "experiment_id": ..., "experiment": {...}, "auto_evaluation": {...}}``

    where ``experiment`` is an ``ExperimentCreate`` body and ``auto_evaluation`` an
    ``AutoEvaluationCreate`` body.
    ``auto_evaluation`` may also be given inline (its fields next to ``experiment_id``). An entry with
    an ``experiment_id`` but no ``experiment`` body is completed from GIP when a hook is given.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GipError(f"cannot read auto evaluation configs from {file}: {exc}") from None
    if isinstance(data, Mapping):
        data = data.get("auto_evaluations", [data])
    if not isinstance(data, list):
        raise GipError(f"{file}: expected a list of auto evaluation entries")
    sources: list[ConfigSource] = []
    for index, item in enumerate(data):
        origin = f"file:{file.name}#{index}"
        if not isinstance(item, Mapping):
            sources.append(ConfigSource(origin, {}, problem=f"entry {index} is not a JSON object"))
            continue
        entry = dict(item)
        experiment_id = entry.pop("experiment_id", None)
        experiment = entry.pop("experiment", None)
        config_id = entry.pop("auto_evaluation_id", None) or entry.pop("id", None)
        body = entry.pop("auto_evaluation", None)
        if body is None:
            body = entry
        elif entry:
            body = {**entry, **body}
        source = ConfigSource(
            origin=origin,
            auto_evaluation=dict(body) if isinstance(body, Mapping) else {},
            auto_evaluation_id=str(config_id) if config_id else None,
            experiment_id=str(experiment_id) if experiment_id else None,
            experiment=dict(experiment) if isinstance(experiment, Mapping) else None,
        )
        bad = [i for i in (source.auto_evaluation_id, source.experiment_id) if _bad_id(i)]
        if not isinstance(body, Mapping):
            source.problem = "'auto_evaluation' is not a JSON object"
        elif bad:
            source.problem = f"{bad[0]!r} is not a valid GIP id (letters, digits, - _ . :)"
        elif source.experiment is None:
            if source.experiment_id and hook is not None:
                try:
                    source.experiment = _experiment_dict(hook.get_experiment(source.experiment_id))
                except GipNotFoundError:
                    source.problem = f"experiment {source.experiment_id} is missing in GIP"
            elif source.experiment_id:
                source.problem = (
                    f"experiment {source.experiment_id} has no definition in the file and GIP was not "
                    "asked (give 'experiment' or a reachable --conn-id)"
                )
            else:
                source.problem = (
                    "experiment missing: give 'experiment_id' and/or 'experiment' (the create body)"
                )
        sources.append(source)
    return sources


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@dataclass
class Unsupported:
    """A config that is not migrated, and why."""

    origin: str
    name: str
    auto_evaluation_id: str | None
    experiment_id: str | None
    reason: str


@dataclass
class PlannedDag:
    """One config's DAG, with what the switch does for it."""

    spec: AutoEvaluationDagSpec
    source: ConfigSource
    handover: dt.datetime
    #: GIP firings between planning and the handover instant (GIP still runs these).
    gip_firings: list[dt.datetime] = field(default_factory=list)
    next_firings: list[dt.datetime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def can_disable(self) -> bool:
        return bool(self.source.auto_evaluation_id and self.source.experiment_id)


@dataclass
class MigrationOptions:
    """What to write and where."""

    output_format: OutputFormat = "factory"
    spec_file: Path = Path("dags/gip_auto_evaluations.json")
    dag_dir: Path = Path("dags")
    dag_id_prefix: str = DEFAULT_DAG_ID_PREFIX
    gip_conn_id: str = "gip_default"
    warehouse_conn_id: str | None = None
    warehouse_table: str = DEFAULT_WAREHOUSE_TABLE
    include_disabled: bool = False
    disable_in_gip: bool = False
    handover_margin: dt.timedelta = DEFAULT_HANDOVER_MARGIN
    poll_interval: float = 30.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{0,100}", self.dag_id_prefix):
            raise ValueError(f"DAG id prefix {self.dag_id_prefix!r} may only hold letters, digits, _ . -")
        check_table_name(self.warehouse_table, "warehouse table")
        if self.handover_margin < dt.timedelta(0) or self.poll_interval <= 0:
            raise ValueError("handover margin must be >= 0 and poll interval > 0")


@dataclass
class MigrationPlan:
    planned_at: dt.datetime
    options: MigrationOptions
    dags: list[PlannedDag] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    skipped: list[Unsupported] = field(default_factory=list)


def sanitize_dag_id(name: str, prefix: str = DEFAULT_DAG_ID_PREFIX) -> str:
    """``prefix`` + the name lower-cased, runs of other characters replaced by ``_`` (ASCII only)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unnamed"
    return (prefix + slug)[:_MAX_DAG_ID]


def _unique_dag_id(base: str, source: ConfigSource, taken: set[str]) -> str:
    if base not in taken:
        return base
    tag = re.sub(r"[^a-z0-9]", "", (source.auto_evaluation_id or "").lower())[:8]
    candidates = [f"{base[: _MAX_DAG_ID - 9]}_{tag}"] if tag else []
    candidates += [f"{base[: _MAX_DAG_ID - 4]}_{n}" for n in range(2, 1000)]
    return next(c for c in candidates if c not in taken)


def _clean_experiment(definition: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, list[str]]:
    """An ``ExperimentCreate`` body from a stored experiment (unknown keys dropped) and its relative range."""
    notes: list[str] = []
    body = {k: definition.get(k) for k in ("name", "description", "type") if definition.get(k) is not None}
    config = dict(definition.get("config") or {})
    exp_type = str(definition.get("type") or "")
    known = exp_type in set(api.ExperimentType)
    model = api.CONFIG_BY_TYPE.get(api.ExperimentType(exp_type)) if known else None
    relative: str | None = None
    if model is not None:
        dropped = sorted(set(config) - set(model.model_fields))
        config = {k: v for k, v in config.items() if k in model.model_fields}
        if dropped:
            notes.append(f"experiment config fields not in the create body dropped: {', '.join(dropped)}")
        for filter_key, filter_model in (
            ("trace_filter_request", api.TraceFilterRequest),
            ("observation_filter_request", api.ObservationFilterRequest),
        ):
            flt = config.get(filter_key)
            if isinstance(flt, Mapping):
                flt = {k: v for k, v in flt.items() if k in filter_model.model_fields}
                relative = flt.get("relative_time_range") or None
                if relative:
                    start, end = filter_model.WINDOW_FIELDS
                    if flt.get(start) is not None or flt.get(end) is not None:
                        notes.append(f"{start}/{end} ignored: GIP lets relative_time_range override them")
                    flt.update({start: None, end: None, "relative_time_range": None})
                config[filter_key] = flt
    body["config"] = config
    return body, relative, notes


def firings(
    spec: AutoEvaluationDagSpec, after: dt.datetime, *, count: int = 10_000, until: dt.datetime | None = None
) -> list[dt.datetime]:
    """Instants (UTC) at or after ``after`` (and not after ``until``) at which the DAG's timetable fires:
    its ``next_dagrun_info`` sequence, as the scheduler computes it."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    # The DAG's timetable is the task SDK's definition; the scheduler computes with its core counterpart.
    timetable = coerce_to_core_timetable(spec.timetable())
    result: list[dt.datetime] = []
    last: DataInterval | None = None
    latest = pendulum.instance(until) if until is not None else None
    restriction = TimeRestriction(earliest=pendulum.instance(after), latest=latest, catchup=True)
    while len(result) < count:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.data_interval is None or info.run_after is None:
            break
        result.append(info.run_after)
        last = info.data_interval
    return result


def gip_firings(schedule: str, timezone: str, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """[assumed] GIP's firings in ``[after, until]``: croniter iterated from a zone-aware start.

    This is what the emulator does; the GIP documents say only "cron expression" and "IANA time zone".
    """
    from croniter import croniter

    tz = ZoneInfo(timezone)
    it = croniter(schedule, (after - dt.timedelta(microseconds=1)).astimezone(tz))
    out: list[dt.datetime] = []
    while len(out) < 10_000:
        instant = it.get_next(dt.datetime).astimezone(dt.UTC)
        if instant > until:
            break
        out.append(instant)
    return out


def dst_differences(spec: AutoEvaluationDagSpec, start: dt.datetime, *, days: int = 366) -> list[str]:
    """Days with a DST change in the next ``days`` on which GIP's cron and the timetable disagree.

    Both fire at the same local wall-clock times on every other day. Around a change they can differ:
    for a local time that does not exist (spring forward) Airflow fires one wall-clock hour later
    (02:30 -> 03:30) while croniter fires at the change (03:00); for a local time that happens twice
    (fall back) croniter fires twice and Airflow once (the second occurrence).
    """
    tz = ZoneInfo(spec.timezone)
    first = start.astimezone(tz).date()
    notes: list[str] = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        midnight = dt.datetime.combine(day, dt.time(), tz)
        next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
        if midnight.utcoffset() == next_midnight.utcoffset():
            continue
        lo = midnight.astimezone(dt.UTC) - dt.timedelta(hours=3)
        hi = next_midnight.astimezone(dt.UTC) + dt.timedelta(hours=3)
        ours = {pendulum.instance(f).in_timezone("UTC") for f in firings(spec, lo, until=hi)}
        theirs = {
            pendulum.instance(f).in_timezone("UTC") for f in gip_firings(spec.schedule, spec.timezone, lo, hi)
        }
        if ours != theirs:
            only_gip = ", ".join(_iso(f, spec.timezone) for f in sorted(theirs - ours))
            only_airflow = ", ".join(_iso(f, spec.timezone) for f in sorted(ours - theirs))
            if only_gip and only_airflow:
                what = f"GIP's cron (croniter, assumed) fires at {only_gip}, Airflow at {only_airflow}"
            elif only_gip:
                what = f"GIP's cron (croniter, assumed) also fires at {only_gip}; Airflow does not"
            else:
                what = f"Airflow also fires at {only_airflow}; GIP's cron (croniter, assumed) does not"
            notes.append(f"DST change on {day}: {what}")
    return notes


def plan_migration(
    sources: Iterable[ConfigSource],
    options: MigrationOptions,
    *,
    now: dt.datetime | None = None,
    hook: GipHook | None = None,
    existing: Sequence[AutoEvaluationDagSpec] = (),
    reserved: Iterable[str] = (),
) -> MigrationPlan:
    """Validate every config and turn it into a DAG spec, or report why it cannot be migrated.

    ``existing`` are entries already in the output (a previous migration): an entry for the same GIP
    config keeps its DAG id; other entries' DAG ids are not reused.
    """
    planned_at = pendulum.instance(now or pendulum.now("UTC")).in_timezone("UTC")
    plan = MigrationPlan(planned_at=planned_at, options=options)
    by_key = {s.source.key: s for s in existing if s.source and s.source.key}
    taken = {s.dag_id for s in existing} | set(reserved)
    evaluator_cache: dict[str, str | None] = {}
    for source in sources:
        ref = source.ref()
        previous = by_key.get(ref.key) if ref.key else None
        if previous is not None:
            taken.discard(previous.dag_id)

        def unsupported(reason: str, source: ConfigSource = source) -> Unsupported:
            return Unsupported(
                source.origin, source.name, source.auto_evaluation_id, source.experiment_id, reason
            )

        if not source.enabled and not options.include_disabled:
            already = f"; already migrated to DAG {previous.dag_id}" if previous else ""
            plan.skipped.append(unsupported(f"disabled in GIP (use --include-disabled){already}"))
            if previous is not None:
                taken.add(previous.dag_id)
            continue
        try:
            entry = _plan_one(
                source,
                options=options,
                planned_at=planned_at,
                hook=hook,
                evaluator_cache=evaluator_cache,
                previous=previous,
                taken=taken,
            )
        except (SpecError, api.GipRequestError, ValueError) as exc:
            plan.unsupported.append(unsupported(str(exc)))
            if previous is not None:
                taken.add(previous.dag_id)
            continue
        taken.add(entry.spec.dag_id)
        plan.dags.append(entry)
    return plan


_AUTO_EVAL_FIELDS = set(api.AutoEvaluationCreate.model_fields)


def _plan_one(
    source: ConfigSource,
    *,
    options: MigrationOptions,
    planned_at: dt.datetime,
    hook: GipHook | None,
    evaluator_cache: dict[str, str | None],
    previous: AutoEvaluationDagSpec | None,
    taken: set[str],
) -> PlannedDag:
    if source.problem:
        raise ValueError(source.problem)
    notes: list[str] = []
    raw = {k: v for k, v in source.auto_evaluation.items() if k in _AUTO_EVAL_FIELDS}
    if source.origin == "api":
        # Stored configs: fill the documented default, ignore nulls the server may echo.
        raw = {k: v for k, v in raw.items() if v is not None}
    elif unknown := sorted(set(source.auto_evaluation) - _AUTO_EVAL_FIELDS):
        raise ValueError(f"unknown auto evaluation field(s) {', '.join(unknown)}; check the spelling")
    config = api.build(api.AutoEvaluationCreate, raw, "auto evaluation config")
    if source.experiment is None:
        raise ValueError(
            "the auto evaluation config has no experiment definition; export it with its experiment"
        )
    experiment_body, relative, exp_notes = _clean_experiment(source.experiment)
    notes += exp_notes
    experiment = api.build(api.ExperimentCreate, experiment_body, "experiment")

    if _bad_id(config.evaluator_id):
        raise ValueError(f"evaluator_id {config.evaluator_id!r} is not a valid GIP id")
    if hook is not None and config.evaluator_id not in evaluator_cache:
        try:
            evaluator_cache[config.evaluator_id] = hook.get_evaluator(config.evaluator_id).name
        except GipNotFoundError:
            evaluator_cache[config.evaluator_id] = None
        except GipError as exc:
            notes.append(f"evaluator not checked: {exc}")
            evaluator_cache[config.evaluator_id] = config.evaluator_id
    if hook is not None and evaluator_cache.get(config.evaluator_id) is None:
        raise ValueError(f"evaluator {config.evaluator_id} is missing in GIP")

    if previous is not None:
        dag_id = previous.dag_id
    else:
        dag_id = _unique_dag_id(sanitize_dag_id(config.name, options.dag_id_prefix), source, taken)
    spec_fields: dict[str, Any] = {
        "dag_id": dag_id,
        "schedule": config.schedule,
        "timezone": config.timezone,
        "evaluator_id": config.evaluator_id,
        "run_name": config.name[:200],
        "target_data_converter": (
            config.target_data_converter.model_dump(mode="json", exclude_unset=True)
            if config.target_data_converter
            else None
        ),
        "metadata": config.metadata.model_dump(mode="json", exclude_unset=True) if config.metadata else None,
        "gip_conn_id": options.gip_conn_id,
        "poll_interval": options.poll_interval,
        "source": source.ref(),
    }
    if options.warehouse_conn_id:
        spec_fields["warehouse_conn_id"] = options.warehouse_conn_id
        spec_fields["warehouse_table"] = options.warehouse_table
    if relative:
        spec_fields["window"] = relative
        spec_fields["experiment"] = experiment.to_wire()
        notes.append(
            f"relative_time_range {relative} -> explicit window [data_interval_start, data_interval_end) "
            f"= [fire - {relative}, fire); one experiment per window, created or reused by name"
        )
    elif source.experiment_id:
        spec_fields["experiment_id"] = source.experiment_id
    else:
        spec_fields["experiment"] = experiment.to_wire()
        notes.append("experiment is created once by name (it has no id in the input) and reused")

    probe = AutoEvaluationDagSpec.model_validate(spec_fields)
    upcoming = firings(probe, planned_at + options.handover_margin, count=1)
    if not upcoming:
        raise ValueError(f"schedule {config.schedule!r} never fires again")
    handover = upcoming[0]
    gip_firings = [f for f in firings(probe, planned_at, count=50) if f < handover]
    switching = options.disable_in_gip and source.enabled
    spec_fields.update(start_date=handover, catchup=switching, paused_on_creation=not switching)
    if previous is not None and not switching and previous.catchup:
        # Already switched by an earlier run: keep its handover, do not pause it again.
        spec_fields.update(
            start_date=previous.start_date, catchup=True, paused_on_creation=previous.paused_on_creation
        )
        handover = previous.start_date or handover
        notes.append("keeps the handover of the earlier migration")
    spec = AutoEvaluationDagSpec.model_validate(spec_fields)
    notes += dst_differences(spec, planned_at)
    if not source.enabled:
        notes.append("disabled in GIP: the DAG is written paused")
    return PlannedDag(
        spec=spec,
        source=source,
        handover=handover,
        gip_firings=gip_firings,
        next_firings=firings(spec, handover, count=3),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# Dry-run output
# ---------------------------------------------------------------------------------------------


def _iso(value: dt.datetime, tz: str | None = None) -> str:
    moment = pendulum.instance(value)
    return moment.in_timezone(tz).isoformat() if tz else moment.in_timezone("UTC").isoformat()


def render_plan(plan: MigrationPlan) -> str:
    """Human-readable plan: per config its source, DAG id, schedule, window mapping and GIP effect."""
    opts = plan.options
    out = [f"Plan made at {_iso(plan.planned_at)}"]
    if opts.output_format == "factory":
        out.append(f"Output: factory spec {opts.spec_file} (read by dags/gip_auto_evaluation_factory.py)")
    else:
        out.append(f"Output: one DAG file per config in {opts.dag_dir}")
    out.append(
        f"{len(plan.dags)} to migrate, {len(plan.unsupported)} unsupported, {len(plan.skipped)} skipped"
    )
    for entry in plan.dags:
        spec, src = entry.spec, entry.source
        out.append("")
        out.append(f"* {src.name!r} -> DAG {spec.dag_id}")
        where = (
            f"auto evaluation {src.auto_evaluation_id} of experiment {src.experiment_id}"
            if src.auto_evaluation_id
            else f"experiment {src.experiment_id or '(new)'}"
        )
        out.append(f"    source:    {src.origin}, {where}")
        out.append(
            f"    schedule:  CronTriggerTimetable({spec.schedule!r}, timezone={spec.timezone!r}, "
            f"interval={spec.window or '0'})"
        )
        if spec.window:
            out.append(
                f"    window:    relative_time_range {spec.window} -> explicit from/to = the run's data "
                f"interval [fire - {spec.window}, fire)"
            )
        elif spec.experiment_id:
            out.append(f"    window:    none; every firing runs experiment {spec.experiment_id}")
        else:
            out.append("    window:    none; the experiment is created once by name and run at every firing")
        out.append(f"    evaluator: {spec.evaluator_id}")
        extras = [
            name
            for name, value in (
                ("target_data_converter", spec.target_data_converter),
                ("metadata (score sync)", spec.metadata),
            )
            if value
        ]
        if extras:
            out.append(f"    carries:   {', '.join(extras)}")
        if spec.warehouse_conn_id:
            out.append(f"    load:      results into {spec.warehouse_table} via {spec.warehouse_conn_id}")
        tz = spec.timezone
        out.append(
            f"    handover:  Airflow owns firings from {_iso(entry.handover, tz)} ({_iso(entry.handover)})"
        )
        if entry.next_firings:
            out.append("    fires at:  " + ", ".join(_iso(f, tz) for f in entry.next_firings) + ", ...")
        if opts.disable_in_gip and src.enabled:
            if entry.can_disable:
                gip = "GIP config disabled after the files are written and verified"
                if entry.gip_firings:
                    gip += f" and after its firing(s) at {', '.join(_iso(f, tz) for f in entry.gip_firings)}"
                out.append(f"    GIP:       {gip}; DAG unpaused on creation, catchup from the handover")
            else:
                out.append("    GIP:       cannot disable (no auto evaluation id); disable it by hand")
        else:
            out.append(
                "    GIP:       left untouched; DAG written paused (run with --disable-in-gip to switch)"
            )
        for note in entry.notes:
            out.append(f"    note:      {note}")
    for title, items in (("Unsupported (not migrated)", plan.unsupported), ("Skipped", plan.skipped)):
        if items:
            out.append("")
            out.append(f"{title}:")
            for item in items:
                ident = item.auto_evaluation_id or item.experiment_id or "-"
                out.append(f"  - {item.name!r} ({item.origin}, {ident}): {item.reason}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Standalone DAG files
# ---------------------------------------------------------------------------------------------


def _py(value: Any, indent: int = 0) -> str:
    """``value`` as Python source (JSON-like values, datetimes and timedeltas)."""
    pad = " " * (indent + 4)
    if isinstance(value, dt.datetime):
        return f"datetime.datetime.fromisoformat({_py(pendulum.instance(value).isoformat())})"
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
        return f"datetime.timedelta(seconds={int(seconds) if seconds.is_integer() else seconds!r})"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{pad}{_py(str(k))}: {_py(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{pad}{_py(v, indent + 4)}," for v in value]
        return "[\n" + "\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid Python string literal
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    raise TypeError(f"cannot render {type(value).__name__} as Python source")


def _call(name: str, kwargs: Mapping[str, Any], extra: Mapping[str, str], indent: int) -> str:
    """``name(key=value, ...)`` over several lines; ``extra`` holds ready-made source (references)."""
    pad = " " * (indent + 4)
    first = {k: v for k, v in kwargs.items() if k in ("task_id", "dag_id")}
    rest = {k: v for k, v in kwargs.items() if k not in first}
    lines = [f"{pad}{key}={_py(value, indent + 4)}," for key, value in first.items()]
    lines += [f"{pad}{key}={source}," for key, source in extra.items()]
    lines += [f"{pad}{key}={_py(value, indent + 4)}," for key, value in rest.items()]
    return f"{name}(\n" + "\n".join(lines) + "\n" + " " * indent + ")"


def render_dag_file(spec: AutoEvaluationDagSpec) -> str:
    """A standalone DAG file for one spec: plain operators and ``CronTriggerTimetable``, no spec file.

    Its arguments come from the same functions the factory uses, so both formats build the same DAG.
    The first line records the spec (used to keep DAG ids stable when migrating again).
    """
    from gip_airflow.dag_factory import dag_kwargs, load_kwargs, run_kwargs, window_experiment_kwargs

    record = json.dumps(spec.to_json_dict(), ensure_ascii=False, separators=(",", ":"))
    src = spec.source
    origin = (
        f"auto evaluation {src.auto_evaluation_id} of experiment {src.experiment_id}"
        if src and src.auto_evaluation_id
        else "an auto evaluation config"
    )
    create = window_experiment_kwargs(spec)
    run = run_kwargs(spec)
    load = load_kwargs(spec)
    imports = ["GipStartExperimentRunOperator"] + (["GipCreateExperimentOperator"] if create else [])
    timetable = (
        f"CronTriggerTimetable({_py(spec.schedule)}, timezone={_py(spec.timezone)}, "
        f"interval={_py(spec.interval)})"
    )
    about = f"Replaces {origin}: schedule {spec.schedule!r} in {spec.timezone}."
    if spec.window:
        about += (
            f" The experiment's relative_time_range {spec.window} became an explicit window: every run "
            f"evaluates [data_interval_start, data_interval_end) = the last {spec.window} before its "
            "firing, so re-runs and backfills are reproducible."
        )
    title = json.dumps(spec.run_name, ensure_ascii=False)  # escapes quotes and backslashes
    lines = [
        f"{DAG_FILE_MARKER} {record}",
        f'"""GIP auto evaluation {title} as an Airflow DAG (gip-airflow migrate-auto-evaluations).',
        "",
        *textwrap.wrap(about.replace("\\", "/").replace('"', "'"), width=100),
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import datetime",
        "",
        "from airflow.sdk import DAG, CronTriggerTimetable",
        "",
        f"from gip_airflow.operators.gip import {', '.join(sorted(imports))}",
    ]
    if load:
        lines.append("from gip_airflow.transfers.gip_to_sql import GipToSqlOperator")
    lines += ["", f"with {_call('DAG', dag_kwargs(spec), {'schedule': timetable}, 0)} as dag:"]
    experiment_ref = _py(spec.experiment_id)
    if create:
        var = create["task_id"]
        lines.append(f"    {var} = {_call('GipCreateExperimentOperator', create, {}, 4)}")
        experiment_ref = f"{var}.output"
    run.pop("experiment_id", None)
    lines.append(
        f"    start_run = {_call('GipStartExperimentRunOperator', run, {'experiment_id': experiment_ref}, 4)}"
    )
    if load:
        refs = {"experiment_id": experiment_ref, "run_id": "start_run.output"}
        lines.append(f"    load_to_warehouse = {_call('GipToSqlOperator', load, refs, 4)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Writing and verifying
# ---------------------------------------------------------------------------------------------


@dataclass
class _Backup:
    path: Path
    content: bytes | None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def restore(backups: Sequence[_Backup]) -> None:
    """Put every written path back as it was (delete files that did not exist)."""
    for backup in reversed(backups):
        try:
            if backup.content is None:
                backup.path.unlink(missing_ok=True)
            else:
                _atomic_write(backup.path, backup.content.decode("utf-8"))
        except OSError as exc:  # pragma: no cover - best effort, reported
            log.error("Could not restore %s: %s", backup.path, exc)


def read_existing(options: MigrationOptions) -> list[AutoEvaluationDagSpec]:
    """Entries a previous migration wrote to the same output (so DAG ids stay stable)."""
    if options.output_format == "factory":
        from gip_airflow.dag_factory import load_spec

        return load_spec(options.spec_file)
    specs = []
    if options.dag_dir.is_dir():
        for file in sorted(options.dag_dir.glob("*.py")):
            spec = spec_of_dag_file(file)
            if spec is not None:
                specs.append(spec)
    return specs


def spec_of_dag_file(path: Path) -> AutoEvaluationDagSpec | None:
    """The spec recorded in a generated DAG file's marker line, or None for other files."""
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith(DAG_FILE_MARKER):
        return None
    try:
        (spec,) = parse_spec([json.loads(first[len(DAG_FILE_MARKER) :])], str(path))
    except (ValueError, SpecError):
        return None
    return spec


def spec_document(specs: Iterable[AutoEvaluationDagSpec]) -> str:
    """The factory spec file text."""
    doc = {
        "version": SPEC_VERSION,
        "generated_by": "gip-airflow migrate-auto-evaluations",
        "dags": [s.to_json_dict() for s in specs],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_outputs(plan: MigrationPlan, existing: Sequence[AutoEvaluationDagSpec] = ()) -> list[_Backup]:
    """Write the plan's DAGs; return backups of every touched path. Restores everything on failure."""
    opts = plan.options
    backups: list[_Backup] = []

    def backup(path: Path) -> None:
        backups.append(_Backup(path, path.read_bytes() if path.is_file() else None))

    try:
        if opts.output_format == "factory":
            replaced = {p.spec.dag_id for p in plan.dags}
            keep = [s for s in existing if s.dag_id not in replaced]
            backup(opts.spec_file)
            _atomic_write(opts.spec_file, spec_document([*keep, *(p.spec for p in plan.dags)]))
        else:
            for entry in plan.dags:
                path = opts.dag_dir / f"{entry.spec.dag_id}.py"
                backup(path)
                _atomic_write(path, render_dag_file(entry.spec))
    except BaseException:
        restore(backups)
        raise
    return backups


class VerificationError(GipError):
    """The written DAGs do not load the way Airflow would load them."""


def verify_outputs(plan: MigrationPlan) -> None:
    """Load the written output with ``DagBag`` (as the DAG processor does) and serialize every DAG.

    Raises :class:`VerificationError` when a file has import errors or a planned DAG id is missing.
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    opts = plan.options
    expected = {p.spec.dag_id for p in plan.dags}
    if opts.output_format == "factory":
        with tempfile.TemporaryDirectory(prefix="gip-verify-") as tmp:
            probe = Path(tmp) / "gip_auto_evaluation_factory_probe.py"
            probe.write_text(
                "from gip_airflow.dag_factory import build_dags\n"
                f"globals().update(build_dags({str(opts.spec_file.resolve())!r}))\n",
                encoding="utf-8",
            )
            bag = DagBag(dag_folder=str(probe), safe_mode=False)
            dags, errors = dict(bag.dags), dict(bag.import_errors)
    else:
        dags, errors = {}, {}
        for dag_id in sorted(expected):
            bag = DagBag(dag_folder=str(opts.dag_dir / f"{dag_id}.py"), safe_mode=False)
            dags.update(bag.dags)
            errors.update(bag.import_errors)
    if errors:
        detail = "; ".join(f"{path}: {str(err).strip().splitlines()[-1]}" for path, err in errors.items())
        raise VerificationError(f"written DAGs do not import: {detail}")
    missing = sorted(expected - set(dags))
    if missing:
        raise VerificationError(f"written output does not define DAG(s) {', '.join(missing)}")
    for dag_id in sorted(expected):
        try:
            DagSerialization.to_dict(dags[dag_id])
        except Exception as exc:
            raise VerificationError(f"DAG {dag_id} does not serialize: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Switching GIP off
# ---------------------------------------------------------------------------------------------


@dataclass
class DisableResult:
    dag_id: str
    auto_evaluation_id: str | None
    disabled: bool
    message: str


def disable_in_gip(
    hook: GipHook,
    plan: MigrationPlan,
    *,
    clock: Callable[[], dt.datetime] = lambda: pendulum.now("UTC"),
    sleep: Callable[[float], None] = time.sleep,
    grace: dt.timedelta = GIP_FIRING_GRACE,
) -> list[DisableResult]:
    """Disable each migrated config in GIP (``PATCH {"enabled": false}``). Call only after verifying.

    A config whose GIP firing falls between planning and its handover instant is disabled only after
    that firing (+ ``grace``), so GIP still runs it; a disable that lands after the handover instant
    is reported (that firing may have run twice).
    """
    results: list[DisableResult] = []
    for entry in sorted(plan.dags, key=lambda e: e.gip_firings[-1] if e.gip_firings else plan.planned_at):
        spec, src = entry.spec, entry.source
        if not src.enabled:
            continue
        if not entry.can_disable:
            results.append(
                DisableResult(
                    spec.dag_id, None, False, "no auto evaluation id in the input; disable it by hand"
                )
            )
            continue
        experiment_id, config_id = str(src.experiment_id), str(src.auto_evaluation_id)
        if entry.gip_firings:
            wait_until = entry.gip_firings[-1] + grace
            pause = (wait_until - clock()).total_seconds()
            if pause > 0:
                log.info(
                    "Waiting %.0f s for GIP's firing of %r at %s before disabling it",
                    pause,
                    src.name,
                    _iso(entry.gip_firings[-1]),
                )
                sleep(pause)
        try:
            hook.update_auto_evaluation(experiment_id, config_id, {"enabled": False})
        except GipError as exc:
            results.append(DisableResult(spec.dag_id, config_id, False, f"not disabled: {exc}"))
            continue
        done_at = clock()
        message = f"disabled at {_iso(done_at)}; Airflow owns firings from {_iso(entry.handover)}"
        if done_at >= entry.handover:
            message += " — WARNING: disabled after the handover instant; that firing may have run in both"
        results.append(DisableResult(spec.dag_id, config_id, True, message))
    return results


# ---------------------------------------------------------------------------------------------
# The whole migration
# ---------------------------------------------------------------------------------------------


@dataclass
class MigrationResult:
    plan: MigrationPlan
    written: list[Path] = field(default_factory=list)
    verified: bool = False
    disabled: list[DisableResult] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0: all done; 1: nothing changed or a step failed; 3: done, but some configs were not migrated
        or not disabled."""
        if self.error:
            return 1
        if self.plan.unsupported or any(not d.disabled for d in self.disabled):
            return 3
        return 0


def run_migration(
    sources: Sequence[ConfigSource],
    options: MigrationOptions,
    *,
    hook: GipHook | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    echo: Callable[[str], None] = print,
    clock: Callable[[], dt.datetime] = lambda: pendulum.now("UTC"),
    sleep: Callable[[float], None] = time.sleep,
) -> MigrationResult:
    """Plan, then (unless ``dry_run``) write, verify and optionally disable the GIP configs.

    The GIP configs are touched only after the output was written *and* verified; any failure before
    that restores the output files and leaves GIP as it was.
    """
    try:
        existing = read_existing(options)
    except SpecError as exc:
        raise GipError(f"cannot merge into the existing output: {exc}") from None
    reserved: set[str] = set()
    if options.output_format == "dag" and options.dag_dir.is_dir():
        ours = {s.dag_id for s in existing}
        reserved = {p.stem for p in options.dag_dir.glob("*.py")} - ours
    plan = plan_migration(sources, options, now=now, hook=hook, existing=existing, reserved=reserved)
    result = MigrationResult(plan)
    echo(render_plan(plan))
    if dry_run:
        echo("\nDry run: nothing written, GIP untouched.")
        return result
    if not plan.dags:
        echo("\nNothing to migrate.")
        return result
    if options.disable_in_gip and hook is None:
        result.error = "--disable-in-gip needs a GIP connection"
        echo(f"\nERROR: {result.error}")
        return result
    try:
        backups = write_outputs(plan, existing)
    except OSError as exc:
        result.error = f"writing the output failed ({exc}); nothing written, GIP configs left enabled"
        echo(f"\nERROR: {result.error}")
        return result
    result.written = [b.path for b in backups]
    try:
        verify_outputs(plan)
    except VerificationError as exc:
        restore(backups)
        result.written = []
        result.error = f"{exc}; output restored, GIP configs left enabled"
        echo(f"\nERROR: {result.error}")
        return result
    result.verified = True
    echo("\nWrote and verified: " + ", ".join(str(p) for p in result.written))
    if options.output_format == "factory":
        echo(_factory_hint(options.spec_file))
    if not options.disable_in_gip:
        echo("GIP configs left untouched; the DAGs are paused on creation. Run again with --disable-in-gip")
        echo("to switch (the DAGs then take over from each config's handover instant).")
        return result
    if hook is None:  # checked before writing; kept for callers that skip that path
        raise GipError("--disable-in-gip needs a GIP connection")
    result.disabled = disable_in_gip(hook, plan, clock=clock, sleep=sleep)
    for item in result.disabled:
        echo(f"  {item.dag_id}: {item.message}")
    failed = {d.dag_id for d in result.disabled if not d.disabled}
    if failed:
        _pause_unswitched(plan, failed, existing, echo)
    echo(
        "If a DAG already existed paused in Airflow (from an earlier migration without --disable-in-gip), "
        "unpause it: airflow dags unpause <dag_id>; it catches up from its handover instant."
    )
    return result


def _factory_hint(spec_file: Path) -> str:
    """Where the factory DAG looks for the spec, when ``spec_file`` is not obviously read by one."""
    from gip_airflow.dag_factory import DEFAULT_SPEC_FILENAME, SPEC_ENV_VAR

    configured = os.environ.get(SPEC_ENV_VAR)
    if configured and Path(configured).resolve() == spec_file.resolve():
        return f"The factory DAG reads it (${SPEC_ENV_VAR})."
    if (
        spec_file.name == DEFAULT_SPEC_FILENAME
        and (spec_file.parent / "gip_auto_evaluation_factory.py").is_file()
    ):
        return "The factory DAG next to it reads it."
    return (
        f"Deploy it where the factory DAG (dags/gip_auto_evaluation_factory.py) reads it: as "
        f"{DEFAULT_SPEC_FILENAME} next to that file, or point ${SPEC_ENV_VAR} at it."
    )


def _pause_unswitched(
    plan: MigrationPlan,
    failed: set[str],
    existing: Sequence[AutoEvaluationDagSpec],
    echo: Callable[[str], None],
) -> None:
    """Rewrite the DAGs whose GIP config stayed enabled as paused, without catchup (no doubled runs)."""
    for entry in plan.dags:
        if entry.spec.dag_id in failed:
            entry.spec = entry.spec.model_copy(update={"catchup": False, "paused_on_creation": True})
    try:
        write_outputs(plan, existing)
        verify_outputs(plan)
    except (OSError, VerificationError) as exc:
        echo(f"ERROR: could not rewrite {', '.join(sorted(failed))} as paused: {exc}")
        return
    echo(
        f"WARNING: {', '.join(sorted(failed))} still enabled in GIP; their DAGs were rewritten paused. If "
        "Airflow already loaded them unpaused, pause them (airflow dags pause <dag_id>) or disable the GIP "
        "configs by hand before their handover instant, or both will evaluate."
    )
