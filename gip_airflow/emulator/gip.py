"""The GIP evaluation API: every documented and assumed endpoint, on the paths of :class:`Paths`.

Request bodies are validated with the emulator's own server-side rules (:mod:`.contract`, written from
the GIP seed documents, not the provider's client-side models); an invalid body is a 422 whose
``message`` names each bad field.
"""

from __future__ import annotations

import hmac
from typing import Any

from croniter import croniter
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from gip_airflow.api import API_KEY_HEADER, Paths, RunStatus
from gip_airflow.emulator import runner
from gip_airflow.emulator.contract import (
    AutoEvaluationIn,
    AutoEvaluationPatchIn,
    CredentialIn,
    EvaluatorIn,
    ExperimentIn,
    RunIn,
)
from gip_airflow.emulator.http import ApiError, emulator_of, gip_page, json_body, page_params, validate
from gip_airflow.emulator.seed import iso_ms
from gip_airflow.emulator.state import Emulator, Run, TokenError, now_ms

router = APIRouter()
WS, EXP, RUN, EVAL, AUTO = "{ws}", "{exp}", "{run}", "{evaluator}", "{config_id}"


async def workspace(request: Request, ws: str) -> Emulator:
    """Authenticate (API key or Cognito IdToken), then check the workspace exists."""
    emu = emulator_of(request)
    key = request.headers.get(API_KEY_HEADER)
    auth = request.headers.get("authorization", "")
    if key is not None:
        if not hmac.compare_digest(key.encode(), emu.settings.api_key.get_secret_value().encode()):
            raise ApiError(401, f"Unauthorized: the {API_KEY_HEADER} API key is not valid")
    elif auth[:7].lower() == "bearer " and auth[7:].strip():
        try:
            emu.tokens.verify(auth[7:].strip())
        except TokenError as exc:
            raise ApiError(401, str(exc)) from None
    else:
        raise ApiError(
            401, f"Unauthorized: send an {API_KEY_HEADER} header or 'Authorization: Bearer <Cognito IdToken>'"
        )
    if ws != emu.settings.workspace_id:
        raise ApiError(404, f"workspace {ws} not found (or not accessible with these credentials)")
    return emu


Workspace = Depends(workspace)


def _stamp(record: dict[str, Any]) -> dict[str, Any]:
    stamp = iso_ms(now_ms())
    record.setdefault("created_at", stamp)
    record["updated_at"] = stamp
    return record


def _register(emu: Emulator, table: dict[str, dict[str, Any]], record: dict[str, Any], seeded: bool) -> None:
    table[record["id"]] = record
    if seeded:
        emu.seeded_ids.add(record["id"])


def _seed_id(data: dict[str, Any], seeded: bool, emu: Emulator) -> str:
    if seeded:
        if not data.get("id"):
            raise ApiError(422, "seed objects in the 'gip' part need an 'id'")
        return str(data.pop("id"))
    return emu.ids.new()


def _newest_first(records: Any) -> list[Any]:
    return sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)


def _check_model(emu: Emulator, seq_id: int, public_id: str, prefix: str, what: str) -> None:
    """422 unless ``seq_id`` and ``public_id`` name the same listed model."""
    model = emu.model_by_seq.get(seq_id)
    if model is None:
        raise ApiError(
            422,
            f"Invalid {what}: {prefix}_seq_id: no model has seq_id {seq_id}; "
            f"GET {Paths.models(emu.settings.workspace_id)} lists the models",
        )
    if model["public_id"] != public_id:
        raise ApiError(
            422,
            f"Invalid {what}: {prefix}_public_id: model seq_id {seq_id} is {model['public_id']!r}, "
            f"not {public_id!r}",
        )


# ---------------------------------------------------------------------------------------------
# Models and credentials
# ---------------------------------------------------------------------------------------------


@router.get(Paths.models(WS))
async def list_models(request: Request, emu: Emulator = Workspace) -> Any:
    page, limit = page_params(request, 100, 422)
    return gip_page(emu.models, page, limit)


def create_credential(emu: Emulator, data: dict[str, Any], *, seeded: bool = False) -> dict[str, Any]:
    obj_id = _seed_id(data, seeded, emu)
    body = validate(CredentialIn, data, "credential")
    record = _stamp(
        {
            "id": obj_id,
            "workspace_id": emu.settings.workspace_id,
            "service_name": body.service_name,
            "alias": body.alias,
            "base_url": body.base_url,
            "public_key": body.public_key,
        }
    )
    emu.credential_secrets[obj_id] = body.private_key.get_secret_value()
    _register(emu, emu.credentials, record, seeded)
    return record


@router.post(Paths.credentials(WS), status_code=201)
async def post_credential(request: Request, emu: Emulator = Workspace) -> Any:
    return create_credential(emu, await json_body(request, "credential"))


@router.get(Paths.credentials(WS))
async def list_credentials(request: Request, emu: Emulator = Workspace) -> Any:
    page, limit = page_params(request, 20, 422)
    return gip_page(_newest_first(emu.credentials.values()), page, limit)


# ---------------------------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------------------------


def create_experiment(emu: Emulator, data: dict[str, Any], *, seeded: bool = False) -> dict[str, Any]:
    obj_id = _seed_id(data, seeded, emu)
    body = validate(ExperimentIn, data, "experiment").root
    cred_id = body.config.integrated_service_credential_id
    if cred_id not in emu.credentials:
        raise ApiError(
            404,
            f"config.integrated_service_credential_id: credential {cred_id} not found in this workspace; "
            f"register it with POST {Paths.credentials(emu.settings.workspace_id)}",
        )
    record = _stamp(
        {
            "id": obj_id,
            "workspace_id": emu.settings.workspace_id,
            "name": body.name,
            "description": body.description,
            "type": body.type,
            "config": body.config.to_wire(),
        }
    )
    _register(emu, emu.experiments, record, seeded)
    return record


def experiment_or_404(emu: Emulator, exp: str) -> dict[str, Any]:
    record = emu.experiments.get(exp)
    if record is None:
        raise ApiError(404, f"experiment {exp} not found")
    return record


@router.post(Paths.experiments(WS), status_code=201)
async def post_experiment(request: Request, emu: Emulator = Workspace) -> Any:
    return create_experiment(emu, await json_body(request, "experiment"))


@router.get(Paths.experiments(WS))
async def list_experiments(request: Request, emu: Emulator = Workspace) -> Any:
    page, limit = page_params(request, 20, 422)
    return gip_page(_newest_first(emu.experiments.values()), page, limit)


@router.get(Paths.experiment(WS, EXP))
async def get_experiment(exp: str, emu: Emulator = Workspace) -> Any:
    return experiment_or_404(emu, exp)


# ---------------------------------------------------------------------------------------------
# Evaluators
# ---------------------------------------------------------------------------------------------


def create_evaluator(emu: Emulator, data: dict[str, Any], *, seeded: bool = False) -> dict[str, Any]:
    obj_id = _seed_id(data, seeded, emu)
    body = validate(EvaluatorIn, data, "evaluator")
    cfg = body.evaluation_config
    _check_model(
        emu, cfg.judge_model_seq_id, cfg.judge_model_public_id, "evaluation_config.judge_model", "evaluator"
    )
    record = _stamp(
        {
            "id": obj_id,
            "workspace_id": emu.settings.workspace_id,
            "name": body.name,
            "type": body.type,
            "metric": body.metric.to_wire(),
            "evaluation_config": cfg.to_wire(),
        }
    )
    _register(emu, emu.evaluators, record, seeded)
    return record


def evaluator_or_404(emu: Emulator, evaluator: str, field: str = "evaluator_id") -> dict[str, Any]:
    record = emu.evaluators.get(evaluator)
    if record is None:
        raise ApiError(404, f"{field}: evaluator {evaluator} not found in this workspace")
    return record


@router.post(Paths.evaluators(WS), status_code=201)
async def post_evaluator(request: Request, emu: Emulator = Workspace) -> Any:
    return create_evaluator(emu, await json_body(request, "evaluator"))


@router.get(Paths.evaluators(WS))
async def list_evaluators(request: Request, emu: Emulator = Workspace) -> Any:
    page, limit = page_params(request, 20, 422)
    return gip_page(_newest_first(emu.evaluators.values()), page, limit)


@router.get(Paths.evaluator(WS, EVAL))
async def get_evaluator(evaluator: str, emu: Emulator = Workspace) -> Any:
    record = emu.evaluators.get(evaluator)
    if record is None:
        raise ApiError(404, f"evaluator {evaluator} not found")
    return record


# ---------------------------------------------------------------------------------------------
# Experiment runs
# ---------------------------------------------------------------------------------------------


def check_run_request(emu: Emulator, body: RunIn | AutoEvaluationIn, what: str) -> None:
    """404 for an unknown evaluator, 422 for a converter model that is not listed."""
    evaluator_or_404(emu, body.evaluator_id)
    converter = body.target_data_converter
    if converter is not None:
        _check_model(
            emu, converter.model_seq_id, converter.model_public_id, "target_data_converter.model", what
        )


def run_or_404(emu: Emulator, exp: str, run_id: str) -> Run:
    experiment_or_404(emu, exp)
    run = emu.runs.get(run_id)
    if run is None or run.experiment_id != exp:
        raise ApiError(404, f"experiment run {run_id} not found in experiment {exp}")
    return run


@router.post(Paths.runs(WS, EXP), status_code=201)
async def post_run(exp: str, request: Request, emu: Emulator = Workspace) -> Any:
    experiment = experiment_or_404(emu, exp)
    body = validate(RunIn, await json_body(request, "experiment run"), "experiment run")
    check_run_request(emu, body, "experiment run")
    return runner.new_run(emu, experiment, body).to_json()


@router.get(Paths.runs(WS, EXP))
async def list_runs(exp: str, request: Request, emu: Emulator = Workspace) -> Any:
    experiment_or_404(emu, exp)
    page, limit = page_params(request, 20, 422)
    status = request.query_params.get("status")
    runs = [
        r
        for r in emu.runs.values()
        if r.experiment_id == exp and (status is None or r.visible_status == status)
    ]
    runs.sort(key=lambda r: (r.created_ms, r.id), reverse=True)
    answer = gip_page(runs, page, limit)
    answer["data"] = [r.to_json() for r in answer["data"]]
    return answer


@router.get(Paths.run(WS, EXP, RUN))
async def get_run(exp: str, run: str, emu: Emulator = Workspace) -> Any:
    return run_or_404(emu, exp, run).to_json()


@router.get(Paths.run_download(WS, EXP, RUN))
async def download_run(exp: str, run: str, emu: Emulator = Workspace) -> Response:
    record = run_or_404(emu, exp, run)
    status = record.visible_status
    if status != RunStatus.DONE:
        raise ApiError(
            409,
            f"experiment run {run} is {status}; its result CSV can be downloaded once the status is DONE",
            run_status=status,
        )
    return StreamingResponse(
        runner.csv_chunks(emu, record),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{record.id}.csv"'},
    )


# ---------------------------------------------------------------------------------------------
# Auto evaluations
# ---------------------------------------------------------------------------------------------


def _check_schedule(schedule: str, what: str) -> None:
    if not croniter.is_valid(schedule):
        raise ApiError(422, f"Invalid {what}: schedule: {schedule!r} is not a valid cron expression")


def auto_evaluation_or_404(emu: Emulator, exp: str, config_id: str) -> dict[str, Any]:
    experiment_or_404(emu, exp)
    record = emu.auto_evaluations.get(config_id)
    if record is None or record["experiment_id"] != exp:
        raise ApiError(404, f"auto evaluation config {config_id} not found in experiment {exp}")
    return record


@router.post(Paths.auto_evaluations(WS, EXP), status_code=201)
async def post_auto_evaluation(exp: str, request: Request, emu: Emulator = Workspace) -> Any:
    experiment_or_404(emu, exp)
    what = "auto evaluation config"
    body = validate(AutoEvaluationIn, await json_body(request, what), what)
    _check_schedule(body.schedule, what)
    check_run_request(emu, body, what)
    record = _stamp(
        {
            "id": emu.ids.new(),
            "workspace_id": emu.settings.workspace_id,
            "experiment_id": exp,
            **body.to_wire(),
        }
    )
    emu.auto_evaluations[record["id"]] = record
    emu.schedule_marks[record["id"]] = now_ms()
    return record


@router.get(Paths.auto_evaluations(WS, EXP))
async def list_auto_evaluations(exp: str, request: Request, emu: Emulator = Workspace) -> Any:
    experiment_or_404(emu, exp)
    page, limit = page_params(request, 20, 422)
    records = [r for r in emu.auto_evaluations.values() if r["experiment_id"] == exp]
    return gip_page(_newest_first(records), page, limit)


@router.get(Paths.auto_evaluation(WS, EXP, AUTO))
async def get_auto_evaluation(exp: str, config_id: str, emu: Emulator = Workspace) -> Any:
    return auto_evaluation_or_404(emu, exp, config_id)


@router.patch(Paths.auto_evaluation(WS, EXP, AUTO))
async def patch_auto_evaluation(exp: str, config_id: str, request: Request, emu: Emulator = Workspace) -> Any:
    record = auto_evaluation_or_404(emu, exp, config_id)
    what = "auto evaluation update"
    patch = validate(AutoEvaluationPatchIn, await json_body(request, what), what)
    changes = patch.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        nulls = ", ".join(k for k, v in changes.items() if v is None)
        raise ApiError(422, f"Invalid {what}: {nulls}: may not be null; leave the field out to keep it")
    merged = {k: v for k, v in record.items() if k in AutoEvaluationIn.model_fields} | changes
    full = validate(AutoEvaluationIn, merged, what)
    _check_schedule(full.schedule, what)
    was_enabled = record["enabled"]
    record.update(full.to_wire())
    _stamp(record)
    if record["enabled"] and (not was_enabled or "schedule" in changes or "timezone" in changes):
        emu.schedule_marks[config_id] = now_ms()  # no catch-up for the time it was off
    return record


@router.delete(Paths.auto_evaluation(WS, EXP, AUTO), status_code=204)
async def delete_auto_evaluation(exp: str, config_id: str, emu: Emulator = Workspace) -> Response:
    auto_evaluation_or_404(emu, exp, config_id)
    del emu.auto_evaluations[config_id]
    emu.schedule_marks.pop(config_id, None)
    return Response(status_code=204)
