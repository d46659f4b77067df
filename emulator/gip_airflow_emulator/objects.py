"""GIP objects (credentials, evaluators, experiments): creation, validation and lookup.

Shared by the GIP router (:mod:`gip_airflow_emulator.gip`), the control API and start-up seeding,
so that seeded objects are validated exactly like client requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from croniter import croniter

from gip_airflow.api import Paths
from gip_airflow_emulator.contract import AutoEvaluationIn, CredentialIn, EvaluatorIn, ExperimentIn, RunIn
from gip_airflow_emulator.http import ApiError, validate
from gip_airflow_emulator.seed import iso_ms, substitute
from gip_airflow_emulator.state import now_ms

if TYPE_CHECKING:
    from gip_airflow_emulator.state import Emulator


def stamp(record: dict[str, Any]) -> dict[str, Any]:
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


def create_credential(emu: Emulator, data: dict[str, Any], *, seeded: bool = False) -> dict[str, Any]:
    obj_id = _seed_id(data, seeded, emu)
    body = validate(CredentialIn, data, "credential")
    record = stamp(
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
    record = stamp(
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


def create_evaluator(emu: Emulator, data: dict[str, Any], *, seeded: bool = False) -> dict[str, Any]:
    obj_id = _seed_id(data, seeded, emu)
    body = validate(EvaluatorIn, data, "evaluator")
    cfg = body.evaluation_config
    _check_model(
        emu, cfg.judge_model_seq_id, cfg.judge_model_public_id, "evaluation_config.judge_model", "evaluator"
    )
    record = stamp(
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


def check_run_request(emu: Emulator, body: RunIn | AutoEvaluationIn, what: str) -> None:
    """404 for an unknown evaluator, 422 for a converter model that is not listed."""
    evaluator_or_404(emu, body.evaluator_id)
    converter = body.target_data_converter
    if converter is not None:
        _check_model(
            emu, converter.model_seq_id, converter.model_public_id, "target_data_converter.model", what
        )


def check_schedule(schedule: str, what: str) -> None:
    if not croniter.is_valid(schedule):
        raise ApiError(422, f"Invalid {what}: schedule: {schedule!r} is not a valid cron expression")


def load_gip_seed(emu: Emulator) -> None:
    """Create the seed's preset GIP objects (validated like client requests)."""
    gip_seed = substitute(emu.seed.gip.model_dump(), emu.placeholders())
    for raw in gip_seed["credentials"]:
        create_credential(emu, dict(raw), seeded=True)
    for raw in gip_seed["evaluators"]:
        create_evaluator(emu, dict(raw), seeded=True)
    for raw in gip_seed["experiments"]:
        create_experiment(emu, dict(raw), seeded=True)
