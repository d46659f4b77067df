"""The GIP evaluation API: every documented and assumed endpoint, on the paths of :class:`Paths`.

Request bodies are validated with the emulator's own server-side rules (:mod:`.contract`, written from
the GIP seed documents, not the provider's client-side models); an invalid body is a 422 whose
``message`` names each bad field.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from gip_airflow.api import API_KEY_HEADER, Paths, RunStatus
from gip_airflow_emulator import runner
from gip_airflow_emulator.contract import AutoEvaluationIn, AutoEvaluationPatchIn, RunIn
from gip_airflow_emulator.http import ApiError, emulator_of, gip_page, json_body, page_params, validate
from gip_airflow_emulator.objects import (
    check_run_request,
    check_schedule,
    create_credential,
    create_evaluator,
    create_experiment,
    experiment_or_404,
    stamp,
)
from gip_airflow_emulator.state import Emulator, Run, TokenError, now_ms

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


def _newest_first(records: Any) -> list[Any]:
    return sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)


# ---------------------------------------------------------------------------------------------
# Models and credentials
# ---------------------------------------------------------------------------------------------


@router.get(Paths.models(WS))
async def list_models(request: Request, emu: Emulator = Workspace) -> Any:
    page, limit = page_params(request, 100, 422)
    return gip_page(emu.models, page, limit)


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
    check_schedule(body.schedule, what)
    check_run_request(emu, body, what)
    record = stamp(
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
    check_schedule(full.schedule, what)
    was_enabled = record["enabled"]
    record.update(full.to_wire())
    stamp(record)
    if record["enabled"] and (not was_enabled or "schedule" in changes or "timezone" in changes):
        emu.schedule_marks[config_id] = now_ms()  # no catch-up for the time it was off
    return record


@router.delete(Paths.auto_evaluation(WS, EXP, AUTO), status_code=204)
async def delete_auto_evaluation(exp: str, config_id: str, emu: Emulator = Workspace) -> Response:
    auto_evaluation_or_404(emu, exp, config_id)
    del emu.auto_evaluations[config_id]
    emu.schedule_marks.pop(config_id, None)
    return Response(status_code=204)
