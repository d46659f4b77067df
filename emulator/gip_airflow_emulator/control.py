"""The control API under ``/_emulator`` (no auth, never faulted): faults, speed, stats, reset, helpers.

Tests and users drive the emulator's behaviour here; the pytest fixture's handle wraps each call.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from gip_airflow.api import ExperimentType, Paths, RunStatus
from gip_airflow_emulator import objects, scheduler
from gip_airflow_emulator.defaults import COGNITO_PATH, CONTROL_PREFIX
from gip_airflow_emulator.http import ApiError, emulator_of, json_body, validate
from gip_airflow_emulator.judge import Degradation
from gip_airflow_emulator.runner import RunFailure, preview_targets
from gip_airflow_emulator.seed import SyntheticItemsSpec, iso_ms, resolve_time
from gip_airflow_emulator.settings import AuthBehaviour, FaultConfig, RunBehaviour
from gip_airflow_emulator.state import Emulator, Run, now_ms
from gip_airflow_emulator.synthetic import SyntheticCsv, SyntheticItems

router = APIRouter(prefix=CONTROL_PREFIX)

SYNTHETIC_EXPERIMENT = "synthetic load test"


async def _body(request: Request, model: type[BaseModel], what: str, default: Any = None) -> Any:
    raw = await request.body()
    data = default if not raw.strip() and default is not None else await json_body(request, what)
    return validate(model, data, what)


def _instant(value: Any, name: str) -> int:
    try:
        return resolve_time(value, now_ms())
    except ValueError as exc:
        raise ApiError(422, f"Invalid request: {name}: {exc}") from None


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "runs": len(emulator_of(request).runs)}


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    """Non-secret facts about this emulator (keys and passwords are not shown)."""
    emu = emulator_of(request)
    s = emu.settings
    lf = emu.langfuse
    return {
        "base_url": s.base_url,
        "workspace_id": s.workspace_id,
        "cognito_endpoint": s.base_url + COGNITO_PATH,
        "cognito_client_id": s.cognito_client_id,
        "username": s.username,
        "langfuse_base_url": s.base_url,
        "langfuse_public_key": s.langfuse_public_key,
        "data_dir": str(emu.data_dir),
        "faults": emu.faults.config.model_dump(),
        "run_behaviour": emu.behaviour.model_dump(),
        "auth": emu.auth.model_dump(),
        "seed": {
            "path": str(s.seed_path) if s.seed_path else "(default)",
            "models": len(emu.models),
            "datasets": {name: len(ds.items) for name, ds in lf.datasets.items()},
            "traces": len(lf.traces),
            "observations": len(lf.observations),
            "credentials": sorted(i for i in emu.seeded_ids if i in emu.credentials),
            "experiments": sorted(i for i in emu.seeded_ids if i in emu.experiments),
            "evaluators": sorted(i for i in emu.seeded_ids if i in emu.evaluators),
        },
    }


# -- faults, speed, tokens ---------------------------------------------------------------------


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    emu = emulator_of(request)
    return {**emu.faults.config.model_dump(), "injected": emu.faults.injected}


@router.post("/faults")
async def set_faults(request: Request) -> dict[str, Any]:
    """Replace the fault configuration (fields not given are off); re-seeds the generator."""
    emu = emulator_of(request)
    emu.faults.set(await _body(request, FaultConfig, "fault config", default={}))
    return emu.faults.config.model_dump()


@router.patch("/faults")
async def patch_faults(request: Request) -> dict[str, Any]:
    """Change some fault settings, keep the others."""
    emu = emulator_of(request)
    changes = await json_body(request, "fault config")
    if not isinstance(changes, dict):
        raise ApiError(422, "Invalid fault config: body: a JSON object is required")
    emu.faults.set(validate(FaultConfig, emu.faults.config.model_dump() | changes, "fault config"))
    return emu.faults.config.model_dump()


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    emu = emulator_of(request)
    emu.faults.set(FaultConfig())
    return emu.faults.config.model_dump()


@router.get("/run-behaviour")
async def get_run_behaviour(request: Request) -> dict[str, Any]:
    return emulator_of(request).behaviour.model_dump()


@router.post("/run-behaviour")
async def set_run_behaviour(request: Request) -> dict[str, Any]:
    """Change ``run_seconds`` / ``items_per_second`` (new runs) and ``never_finish`` (all runs, at once)."""
    emu = emulator_of(request)
    changes = await json_body(request, "run behaviour")
    if not isinstance(changes, dict):
        raise ApiError(422, "Invalid run behaviour: body: a JSON object is required")
    emu.behaviour = validate(RunBehaviour, emu.behaviour.model_dump() | changes, "run behaviour")
    return emu.behaviour.model_dump()


class AuthControl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token_seconds: int | None = Field(default=None, ge=1)
    expire_tokens: bool = False


@router.post("/auth")
async def auth_control(request: Request) -> dict[str, Any]:
    """Set the lifetime of new Cognito tokens; ``expire_tokens`` makes every token issued so far expired."""
    emu = emulator_of(request)
    body: AuthControl = await _body(request, AuthControl, "auth control")
    if body.token_seconds is not None:
        emu.auth = AuthBehaviour(token_seconds=body.token_seconds)
    if body.expire_tokens:
        emu.tokens.invalid_before = time.time()
    return emu.auth.model_dump()


class DegradeRequest(BaseModel):
    """Make a judge regress: from ``from`` (default now) until ``until``, for ``model`` (or all)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str | None = Field(default=None, min_length=1)
    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    score_shift: float = Field(default=0.0, ge=-1.0, le=1.0)
    start: Any = Field(default="now", alias="from")
    until: Any = None


class TracesRequest(BaseModel):
    """More traces, ``per_day`` in each of the last ``days`` days, copied from the seed's with new ids."""

    model_config = ConfigDict(extra="forbid")

    per_day: int = Field(ge=1, le=10_000)
    days: int = Field(default=14, ge=1, le=366)
    name: str | None = None


@router.post("/traces")
async def add_traces(request: Request) -> dict[str, Any]:
    """Add traces spread evenly over the last days (removed by reset): bigger evaluation windows."""
    emu = emulator_of(request)
    body: TracesRequest = await _body(request, TracesRequest, "traces request")
    lf = emu.langfuse
    models = [t for t in lf.traces if t["id"] not in lf.runtime_traces and body.name in (None, t.get("name"))]
    if not models:
        raise ApiError(422, f"Invalid traces request: the seed has no trace named {body.name!r}")
    now = now_ms()
    made: list[dict[str, Any]] = []
    for day in range(body.days):
        for i in range(body.per_day):
            model = models[(day * body.per_day + i) % len(models)]
            at = now - int((day + (i + 0.5) / body.per_day) * 86_400_000)
            trace = {k: v for k, v in model.items() if k != "id"}
            trace["id"] = emu.ids.new()
            trace["_timestamp_ms"] = at
            trace["timestamp"] = iso_ms(at)
            output = model.get("output")
            if isinstance(output, dict) and isinstance(output.get("content"), str):
                trace["output"] = {**output, "content": f"{output['content']} (#{len(made) + 1})"}
            made.append(trace)
    lf.add_traces(made)
    return {"added": len(made), "traces": len(lf.traces)}


@router.delete("/traces")
async def remove_traces(request: Request) -> dict[str, Any]:
    """Remove the traces added through ``POST /traces``."""
    lf = emulator_of(request).langfuse
    lf.remove_added_traces()
    return {"traces": len(lf.traces)}


@router.get("/degrade")
async def get_degradations(request: Request) -> dict[str, Any]:
    return {"data": [d.to_json() for d in emulator_of(request).degradations]}


@router.post("/degrade")
async def degrade(request: Request) -> dict[str, Any]:
    """Add a judge regression for runs created from ``from`` on: extra failures and/or shifted scores."""
    emu = emulator_of(request)
    body: DegradeRequest = await _body(request, DegradeRequest, "degradation")
    if not body.fail_rate and not body.score_shift:
        raise ApiError(422, "Invalid degradation: set fail_rate (0-1) and/or score_shift (-1 to 1)")
    start = _instant(body.start, "from")
    until = None if body.until is None else _instant(body.until, "until")
    if until is not None and until <= start:
        raise ApiError(422, "Invalid degradation: until must be after from")
    emu.degradations.append(Degradation(body.model, body.fail_rate, body.score_shift, start, until))
    return {"data": [d.to_json() for d in emu.degradations]}


@router.delete("/degrade")
async def clear_degradations(request: Request) -> dict[str, Any]:
    emulator_of(request).degradations = []
    return {"data": []}


# -- stats, reset, runs ------------------------------------------------------------------------


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    emu = emulator_of(request)
    return emu.stats.to_json(emu.runs.values())


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    """Drop everything clients created (runs, objects, scores); restore start-up faults, speed, stats."""
    await emulator_of(request).reset()
    return {"status": "reset"}


def _run(emu: Emulator, run_id: str) -> Run:
    run = emu.runs.get(run_id)
    if run is None:
        raise ApiError(404, f"run {run_id} not found")
    return run


@router.get("/runs")
async def list_runs(request: Request) -> dict[str, Any]:
    """Every run (all experiments), newest first, with the emulator's bookkeeping."""
    emu = emulator_of(request)
    exp = request.query_params.get("experiment_id")
    runs = sorted(
        (r for r in emu.runs.values() if exp is None or r.experiment_id == exp),
        key=lambda r: (r.created_ms, r.id),
        reverse=True,
    )
    return {"data": [r.to_control_json() for r in runs], "total": len(runs)}


@router.get("/runs/{run_id}")
async def get_run(run_id: str, request: Request) -> dict[str, Any]:
    return _run(emulator_of(request), run_id).to_control_json()


class ForceStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(min_length=1)
    error: str | None = None


@router.post("/runs/{run_id}/status")
async def force_status(run_id: str, request: Request) -> dict[str, Any]:
    """Show ``status`` (any string, also unknown ones) from now on; ``null`` returns to the real status.

    A run forced to DONE still serves its complete CSV once its processing has finished.
    """
    emu = emulator_of(request)
    run = _run(emu, run_id)
    body: ForceStatus = await _body(request, ForceStatus, "forced status")
    run.override = (body.status, body.error) if body.status else None
    run.updated_ms = now_ms()
    return run.to_control_json()


class SyntheticRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=0, le=100_000_000)
    row_bytes: int = Field(default=1024, ge=1, le=10_000_000)
    seed: int = 0
    display_name: str = Field(default="synthetic run", min_length=1, max_length=255)
    experiment_id: str | None = None
    evaluator_id: str | None = None


def _synthetic_experiment(emu: Emulator) -> dict[str, Any]:
    """The experiment synthetic runs hang under by default (created on first use)."""
    for exp in emu.experiments.values():
        if exp["name"] == SYNTHETIC_EXPERIMENT:
            return exp
    cred = objects.create_credential(
        emu,
        {
            "alias": "synthetic",
            "base_url": emu.settings.base_url,
            "public_key": emu.settings.langfuse_public_key,
            "private_key": emu.settings.langfuse_secret_key.get_secret_value(),
        },
    )
    return objects.create_experiment(
        emu,
        {
            "name": SYNTHETIC_EXPERIMENT,
            "type": ExperimentType.LANGFUSE_DATASET.value,
            "config": {"integrated_service_credential_id": cred["id"], "dataset_name": "synthetic-chat-100k"},
        },
    )


def _synthetic_evaluator(emu: Emulator) -> dict[str, Any]:
    """The evaluator synthetic runs name by default (created on first use)."""
    for evaluator in emu.evaluators.values():
        if evaluator["name"] == SYNTHETIC_EXPERIMENT:
            return evaluator
    categories = [{"index": i, "name": n} for i, n in enumerate(("bad", "neutral", "good"))]
    return objects.create_evaluator(
        emu,
        {
            "name": SYNTHETIC_EXPERIMENT,
            "metric": {"type": "category", "config": categories},
            "evaluation_config": {
                "judge_model_seq_id": emu.models[0]["seq_id"],
                "judge_model_public_id": emu.models[0]["public_id"],
                "judge_prompt": "Rate the answer as bad, neutral or good.",
            },
        },
    )


@router.post("/synthetic-run")
async def synthetic_run(request: Request) -> dict[str, Any]:
    """A DONE run whose CSV has ``rows`` rows of about ``row_bytes`` bytes, generated while streaming."""
    emu = emulator_of(request)
    body: SyntheticRunRequest = await _body(request, SyntheticRunRequest, "synthetic run")
    if body.experiment_id:
        experiment = objects.experiment_or_404(emu, body.experiment_id)
    else:
        experiment = _synthetic_experiment(emu)
    if body.evaluator_id:
        evaluator = objects.evaluator_or_404(emu, body.evaluator_id)
    else:
        evaluator = _synthetic_evaluator(emu)
    created = now_ms()
    run = Run(
        id=emu.ids.new(),
        workspace_id=emu.settings.workspace_id,
        experiment_id=experiment["id"],
        evaluator_id=evaluator["id"],
        display_name=body.display_name,
        target_data_converter=None,
        metadata=None,
        created_ms=created,
        executes_at_ms=created,
        run_seconds=0.0,
        items_per_second=0.0,
        status=RunStatus.DONE,
        synthetic=SyntheticCsv(body.rows, body.row_bytes, body.seed),
        target_count=body.rows,
        updated_ms=created,
    )
    run.usage.add(body.rows * (body.row_bytes // 4 + 250), body.rows * 60)
    run.processed.set()
    emu.runs[run.id] = run
    emu.stats.runs_created += 1
    ws = emu.settings.workspace_id
    return {
        **run.to_json(),
        "download_path": Paths.run_download(ws, run.experiment_id, run.id),
        "rows": body.rows,
        "approx_bytes": body.rows * body.row_bytes,
    }


class SyntheticDatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    count: int = Field(ge=0, le=50_000_000)
    archived_every: int = Field(default=0, ge=0)
    source_traces: bool = True


@router.post("/datasets")
async def synthetic_dataset(request: Request) -> dict[str, Any]:
    """Add a Langfuse dataset of ``count`` generated items (items are made on demand; reset removes it)."""
    emu = emulator_of(request)
    body: SyntheticDatasetRequest = await _body(request, SyntheticDatasetRequest, "synthetic dataset")
    if body.name in emu.langfuse.datasets:
        raise ApiError(409, f"dataset {body.name!r} already exists")
    created = now_ms()
    record: dict[str, Any] = {
        "id": emu.ids.new(),
        "name": body.name,
        "description": f"{body.count} generated items",
        "metadata": {"synthetic": True},
        "projectId": emu.langfuse.project_id,
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(created),
    }
    spec = SyntheticItemsSpec(
        count=body.count, archived_every=body.archived_every, source_traces=body.source_traces
    )
    items = SyntheticItems(record["id"], body.name, spec, [t["id"] for t in emu.langfuse.traces], created)
    emu.langfuse.add_synthetic_dataset(body.name, items, record)
    return {**record, "items": body.count}


# -- auto evaluations and target previews ------------------------------------------------------


def _firings_answer(schedule: str, timezone: str, request: Request) -> dict[str, Any]:
    q = request.query_params
    if "start" not in q or "end" not in q:
        raise ApiError(422, "Invalid query: start and end are required (ISO-8601, epoch ms, or now-P1D)")
    try:
        tz = ZoneInfo(timezone)
    except (ValueError, KeyError):
        raise ApiError(422, f"Invalid query: timezone: {timezone!r} is not an IANA time zone") from None
    start, end = _instant(q["start"], "start"), _instant(q["end"], "end")
    if end <= start:
        raise ApiError(422, "Invalid query: end must be after start")
    instants = scheduler.firings(schedule, timezone, start - 1, end - 1)
    return {
        "schedule": schedule,
        "timezone": timezone,
        "start": iso_ms(start),
        "end": iso_ms(end),
        "firings": [iso_ms(ms) for ms in instants],
        "firings_local": [dt.datetime.fromtimestamp(ms / 1000, tz).isoformat() for ms in instants],
        "firings_ms": instants,
    }


@router.get("/auto-evaluations/{config_id}/firings")
async def config_firings(config_id: str, request: Request) -> dict[str, Any]:
    """The instants in ``[start, end)`` at which this config fires."""
    config = emulator_of(request).auto_evaluations.get(config_id)
    if config is None:
        raise ApiError(404, f"auto evaluation config {config_id} not found")
    return _firings_answer(config["schedule"], config["timezone"], request)


@router.get("/firings")
async def schedule_firings(request: Request) -> dict[str, Any]:
    """Like the above for any ``schedule`` and ``timezone`` given as query parameters."""
    q = request.query_params
    schedule, timezone = q.get("schedule", ""), q.get("timezone", "Etc/UTC")
    objects.check_schedule(schedule, "query")
    return _firings_answer(schedule, timezone, request)


class TickRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: Any = None


@router.post("/scheduler/tick")
async def scheduler_tick(request: Request) -> dict[str, Any]:
    """Fire every enabled config's due instants up to ``now`` (default: the real now)."""
    emu = emulator_of(request)
    body: TickRequest = await _body(request, TickRequest, "tick", default={})
    until = _instant(body.now, "now") if body.now is not None else now_ms()
    runs = scheduler.tick(emu, until)
    return {"now": iso_ms(until), "runs": [r.to_control_json() for r in runs]}


class RewindRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=366 * 86_400)
    config_id: str | None = None


@router.post("/scheduler/rewind")
async def scheduler_rewind(request: Request) -> dict[str, Any]:
    """Move schedule marks ``seconds`` back: the background loop then fires what fell in that span.

    Shows auto evaluations firing in real time without waiting for the next cron instant.
    """
    emu = emulator_of(request)
    body: RewindRequest = await _body(request, RewindRequest, "rewind")
    ids = [body.config_id] if body.config_id else list(emu.auto_evaluations)
    for config_id in ids:
        if config_id not in emu.auto_evaluations:
            raise ApiError(404, f"auto evaluation config {config_id} not found")
        mark = emu.schedule_marks.get(config_id, now_ms())
        emu.schedule_marks[config_id] = mark - int(body.seconds * 1000)
    return {"rewound": ids, "seconds": body.seconds}


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    at: Any = None


@router.post("/preview-targets")
async def preview(request: Request) -> dict[str, Any]:
    """Which target ids a run of the experiment would select if it executed at ``at`` (default now)."""
    emu = emulator_of(request)
    body: PreviewRequest = await _body(request, PreviewRequest, "preview")
    experiment = objects.experiment_or_404(emu, body.experiment_id)
    at = _instant(body.at, "at") if body.at is not None else now_ms()
    try:
        ids = await preview_targets(emu, experiment, at)
    except RunFailure as exc:
        raise ApiError(424, f"reading targets failed: {exc}") from None
    return {"experiment_id": experiment["id"], "at": iso_ms(at), "target_ids": ids, "count": len(ids)}
