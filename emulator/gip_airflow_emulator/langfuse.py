"""The Langfuse public API subset GIP uses, served under ``/api/public`` (HTTP Basic auth).

Shapes follow the generated client of the ``langfuse`` package 2.60.x: camelCase fields,
ISO-8601 timestamps, ``{"data": [...], "meta": {"page", "limit", "totalItems", "totalPages"}}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from gip_airflow_emulator.http import (
    ApiError,
    emulator_of,
    json_body,
    langfuse_page,
    page_params,
    parse_iso_ms,
    validate,
)
from gip_airflow_emulator.seed import iso_ms
from gip_airflow_emulator.state import Emulator, now_ms

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

router = APIRouter(prefix="/api/public")

LANGFUSE_VERSION = "2.60.2"  # the API generation the shapes follow


async def basic_auth(request: Request) -> Emulator:
    """Check HTTP Basic ``public key : secret key`` against the emulated Langfuse project."""
    emu = emulator_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise ApiError(
            401,
            "Unauthorized: send HTTP Basic auth with your Langfuse public key (user) "
            "and secret key (password)",
            error="UnauthorizedError",
        )
    try:
        user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "Unauthorized: malformed Basic auth header", error="UnauthorizedError") from None
    settings = emu.settings
    # Bytes: compare_digest refuses non-ASCII str, and a stranger's key may hold any character.
    ok_user = hmac.compare_digest(user.encode(), settings.langfuse_public_key.encode())
    ok_pass = hmac.compare_digest(password.encode(), settings.langfuse_secret_key.get_secret_value().encode())
    if not (ok_user and ok_pass):
        raise ApiError(
            401,
            "Invalid credentials. Confirm that you've configured the correct host "
            "and the public/secret key pair.",
            error="UnauthorizedError",
        )
    return emu


Auth = Depends(basic_auth)


def _bad(message: str) -> ApiError:
    return ApiError(400, message, error="InvalidRequestError")


def _not_found(message: str) -> ApiError:
    return ApiError(404, message, error="LangfuseNotFoundError")


def _paged(request: Request, rows: Iterable[dict[str, Any]], render: Callable[[dict[str, Any]], Any]) -> Any:
    """Page through ``rows`` (a filtered iterator), rendering only the requested page."""
    page, limit = page_params(request, 50, 400)
    start = (page - 1) * limit
    total = 0
    data = []
    for row in rows:
        if start <= total < start + limit:
            data.append(render(row))
        total += 1
    return langfuse_page(data, page, limit, total)


# ---------------------------------------------------------------------------------------------
# Health / project
# ---------------------------------------------------------------------------------------------


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "OK", "version": LANGFUSE_VERSION}


@router.get("/projects")
async def projects(emu: Emulator = Auth) -> dict[str, Any]:
    return {"data": [{"id": emu.langfuse.project_id, "name": "GIP emulator project", "metadata": {}}]}


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


@router.get("/v2/datasets")
async def list_datasets(request: Request, emu: Emulator = Auth) -> Any:
    return _paged(request, (d.record for d in emu.langfuse.datasets.values()), dict)


@router.get("/v2/datasets/{name:path}")
async def get_dataset(name: str, emu: Emulator = Auth) -> Any:
    ds = emu.langfuse.datasets.get(name)
    if ds is None:
        raise _not_found(f"Dataset not found: {name!r}")
    return ds.record


@router.get("/dataset-items")
async def list_dataset_items(request: Request, emu: Emulator = Auth) -> Any:
    q = request.query_params
    name = q.get("datasetName")
    trace_id, obs_id = q.get("sourceTraceId"), q.get("sourceObservationId")
    if name is not None:
        ds = emu.langfuse.datasets.get(name)
        if ds is None:
            raise _not_found(f"Dataset not found: {name!r}")
        sources = [ds.items]
    else:
        sources = [d.items for d in emu.langfuse.datasets.values()]
    if trace_id is None and obs_id is None and len(sources) == 1:
        page, limit = page_params(request, 50, 400)
        items = sources[0]
        start = (page - 1) * limit
        return langfuse_page(list(items[start : start + limit]), page, limit, len(items))

    def rows() -> Iterator[dict[str, Any]]:
        for items in sources:
            for item in items:
                if trace_id is not None and item.get("sourceTraceId") != trace_id:
                    continue
                if obs_id is not None and item.get("sourceObservationId") != obs_id:
                    continue
                yield item

    return _paged(request, rows(), dict)


@router.get("/dataset-items/{item_id}")
async def get_dataset_item(item_id: str, emu: Emulator = Auth) -> Any:
    for ds in emu.langfuse.datasets.values():
        if isinstance(ds.items, list):
            for item in ds.items:
                if item["id"] == item_id:
                    return item
        elif item_id.startswith(ds.record["id"][:8] + "-item-"):
            index = item_id.rsplit("-", 1)[1]
            if index.isdigit() and int(index) < len(ds.items):
                return ds.items[int(index)]
    raise _not_found(f"Dataset item not found: {item_id!r}")


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------

_TRACE_ORDER_FIELDS = {"id", "timestamp", "name", "userId", "release", "version", "sessionId", "public"}


def _order(request: Request, allowed: set[str], default: str) -> tuple[str, bool]:
    raw = request.query_params.get("orderBy") or f"{default}.desc"
    field, _, direction = raw.partition(".")
    if field not in allowed or direction.lower() not in ("asc", "desc"):
        raise _bad(
            f"Invalid query: orderBy: {raw!r}; use <field>.<asc|desc> with field one of {sorted(allowed)}"
        )
    return field, direction.lower() == "desc"


def trace_json(emu: Emulator, trace: dict[str, Any]) -> dict[str, Any]:
    """A TraceWithDetails."""
    out: dict[str, Any] = {
        "id": trace["id"],
        "timestamp": trace["timestamp"],
        "name": None,
        "input": None,
        "output": None,
        "sessionId": None,
        "release": None,
        "version": None,
        "userId": None,
        "metadata": None,
        "tags": [],
        "public": False,
        "environment": "default",
    }
    out.update({k: v for k, v in trace.items() if not k.startswith("_")})
    out["htmlPath"] = f"/project/{emu.langfuse.project_id}/traces/{trace['id']}"
    out.setdefault("latency", 0.0)
    out.setdefault("totalCost", 0.0)
    out["observations"] = list(emu.langfuse.observation_ids_by_trace.get(trace["id"], []))
    out["scores"] = list(emu.langfuse.scores_by_trace.get(trace["id"], []))
    out.setdefault("createdAt", trace["timestamp"])
    out.setdefault("updatedAt", trace["timestamp"])
    out["projectId"] = emu.langfuse.project_id
    return out


@router.get("/traces")
async def list_traces(request: Request, emu: Emulator = Auth) -> Any:
    q = request.query_params
    tags = [t for t in q.getlist("tags") if t]
    environments = [e for e in q.getlist("environment") if e]
    from_ms = parse_iso_ms(q["fromTimestamp"], "fromTimestamp") if q.get("fromTimestamp") else None
    to_ms = parse_iso_ms(q["toTimestamp"], "toTimestamp") if q.get("toTimestamp") else None
    exact = {k: q[k] for k in ("name", "userId", "sessionId", "version", "release") if q.get(k) is not None}
    field, desc = _order(request, _TRACE_ORDER_FIELDS, "timestamp")

    def match(t: dict[str, Any]) -> bool:
        if any(t.get(k) != v for k, v in exact.items()):
            return False
        if tags and not set(tags) <= set(t.get("tags") or ()):
            return False
        if environments and (t.get("environment") or "default") not in environments:
            return False
        ms = t["_timestamp_ms"]
        return (from_ms is None or ms >= from_ms) and (to_ms is None or ms < to_ms)

    rows: Iterable[dict[str, Any]] = filter(match, emu.langfuse.traces)  # stored newest first
    if (field, desc) != ("timestamp", True):
        if field == "timestamp":
            rows = sorted(rows, key=lambda t: t["_timestamp_ms"], reverse=desc)
        else:
            rows = sorted(
                rows, key=lambda t: str(t.get(field) if t.get(field) is not None else ""), reverse=desc
            )
    return _paged(request, rows, lambda t: trace_json(emu, t))


@router.get("/traces/{trace_id}")
async def get_trace(trace_id: str, emu: Emulator = Auth) -> Any:
    trace = emu.langfuse.trace_by_id.get(trace_id)
    if trace is None:
        raise _not_found(f"Trace not found: {trace_id!r}")
    out = trace_json(emu, trace)
    out["observations"] = [observation_json(emu.langfuse.observation_by_id[o]) for o in out["observations"]]
    out["scores"] = [score_json(emu.langfuse.scores[s]) for s in out["scores"]]
    return out


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------

_OBSERVATION_DEFAULTS: dict[str, Any] = {
    "traceId": None,
    "name": None,
    "endTime": None,
    "completionStartTime": None,
    "model": None,
    "modelParameters": None,
    "input": None,
    "output": None,
    "metadata": None,
    "version": None,
    "level": "DEFAULT",
    "statusMessage": None,
    "parentObservationId": None,
    "promptId": None,
    "environment": "default",
    "usage": None,
    "usageDetails": None,
    "costDetails": None,
    "promptName": None,
    "promptVersion": None,
    "modelId": None,
    "inputPrice": None,
    "outputPrice": None,
    "totalPrice": None,
    "calculatedInputCost": None,
    "calculatedOutputCost": None,
    "calculatedTotalCost": None,
}


def observation_json(obs: dict[str, Any]) -> dict[str, Any]:
    """An ObservationsView."""
    out = dict(_OBSERVATION_DEFAULTS)
    out.update({k: v for k, v in obs.items() if not k.startswith("_")})
    start = obs["_startTime_ms"]
    end = obs.get("_endTime_ms")
    first = obs.get("_completionStartTime_ms")
    out.setdefault("latency", round((end - start) / 1000, 3) if end is not None else None)
    out.setdefault("timeToFirstToken", round((first - start) / 1000, 3) if first is not None else None)
    if out.get("costDetails") and out.get("calculatedTotalCost") is None:
        out["calculatedTotalCost"] = out["costDetails"].get("total")
    return out


@router.get("/observations")
async def list_observations(request: Request, emu: Emulator = Auth) -> Any:
    q = request.query_params
    obs_type = q.get("type")
    if obs_type is not None and obs_type not in ("GENERATION", "SPAN", "EVENT"):
        raise _bad(f"Invalid query: type: {obs_type!r}; use GENERATION, SPAN or EVENT")
    from_ms = parse_iso_ms(q["fromStartTime"], "fromStartTime") if q.get("fromStartTime") else None
    to_ms = parse_iso_ms(q["toStartTime"], "toStartTime") if q.get("toStartTime") else None
    exact = {
        k: q[k] for k in ("name", "type", "traceId", "parentObservationId", "version") if q.get(k) is not None
    }
    environments = [e for e in q.getlist("environment") if e]
    user_id = q.get("userId")

    def match(o: dict[str, Any]) -> bool:
        if any(o.get(k) != v for k, v in exact.items()):
            return False
        if environments and (o.get("environment") or "default") not in environments:
            return False
        if user_id is not None:
            trace = emu.langfuse.trace_by_id.get(o.get("traceId") or "")
            if trace is None or trace.get("userId") != user_id:
                return False
        ms = o["_startTime_ms"]
        return (from_ms is None or ms >= from_ms) and (to_ms is None or ms < to_ms)

    return _paged(request, filter(match, emu.langfuse.observations), observation_json)


@router.get("/observations/{observation_id}")
async def get_observation(observation_id: str, emu: Emulator = Auth) -> Any:
    obs = emu.langfuse.observation_by_id.get(observation_id)
    if obs is None:
        raise _not_found(f"Observation not found: {observation_id!r}")
    return observation_json(obs)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


class CreateScore(BaseModel):
    """CreateScoreRequest (v1): ``traceId`` required; same ``id`` again upserts."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1)
    traceId: str = Field(min_length=1)
    observationId: str | None = None
    name: str = Field(min_length=1)
    value: float | str
    dataType: str | None = Field(default=None, pattern="^(NUMERIC|CATEGORICAL|BOOLEAN)$")
    comment: str | None = None
    configId: str | None = None
    environment: str | None = None
    metadata: Any = None


def score_json(score: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in score.items() if not k.startswith("_")}


@router.post("/scores")
async def create_score(request: Request, emu: Emulator = Auth) -> Any:
    body = validate(CreateScore, await json_body(request, "score"), "score", status=400)
    data_type = body.dataType or ("CATEGORICAL" if isinstance(body.value, str) else "NUMERIC")
    value: float | None
    string_value: str | None = None
    if data_type == "CATEGORICAL":
        if not isinstance(body.value, str):
            raise _bad("Invalid score: value: a CATEGORICAL score needs a string value")
        value, string_value = None, body.value
    elif isinstance(body.value, str):
        raise _bad(f"Invalid score: value: a {data_type} score needs a number, got {body.value!r}")
    elif data_type == "BOOLEAN":
        if body.value not in (0, 1):
            raise _bad("Invalid score: value: a BOOLEAN score must be 1 or 0")
        value, string_value = float(body.value), "True" if body.value == 1 else "False"
    else:
        value = float(body.value)
    stamp_ms = now_ms()
    score_id = body.id or emu.ids.new()
    previous = emu.langfuse.scores.get(score_id)
    stamp = iso_ms(stamp_ms)
    score = {
        "id": score_id,
        "traceId": body.traceId,
        "observationId": body.observationId,
        "name": body.name,
        "value": value,
        "stringValue": string_value,
        "dataType": data_type,
        "comment": body.comment,
        "configId": body.configId,
        "source": "API",
        "environment": body.environment or "default",
        "metadata": body.metadata,
        "timestamp": previous["timestamp"] if previous else stamp,
        "createdAt": previous["createdAt"] if previous else stamp,
        "updatedAt": stamp,
        "_ms": previous["_ms"] if previous else stamp_ms,
    }
    emu.langfuse.put_score(score)
    emu.stats.scores_written += 1
    return {"id": score_id}


@router.get("/scores")
async def list_scores(request: Request, emu: Emulator = Auth) -> Any:
    q = request.query_params
    from_ms = parse_iso_ms(q["fromTimestamp"], "fromTimestamp") if q.get("fromTimestamp") else None
    to_ms = parse_iso_ms(q["toTimestamp"], "toTimestamp") if q.get("toTimestamp") else None
    exact = {
        k: q[k]
        for k in ("name", "dataType", "source", "configId", "traceId", "observationId", "environment")
        if q.get(k) is not None
    }
    ids = {i.strip() for i in q.get("scoreIds", "").split(",") if i.strip()}
    user_id = q.get("userId")
    op = q.get("operator")
    target = q.get("value")
    if (op is None) != (target is None):
        raise _bad("Invalid query: give both operator and value, or neither")
    comparisons: dict[str, Callable[[float, float], bool]] = {
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<>": lambda a, b: a != b,
    }
    if op is not None and op not in comparisons:
        raise _bad(f"Invalid query: operator: {op!r}; use one of {sorted(comparisons)}")
    try:
        threshold = float(target) if target is not None else None
    except ValueError:
        raise _bad(f"Invalid query: value: {target!r} is not a number") from None

    def match(s: dict[str, Any]) -> bool:
        if any(s.get(k) != v for k, v in exact.items()):
            return False
        if ids and s["id"] not in ids:
            return False
        if user_id is not None:
            trace = emu.langfuse.trace_by_id.get(s["traceId"])
            if trace is None or trace.get("userId") != user_id:
                return False
        if (
            op is not None
            and threshold is not None
            and (s.get("value") is None or not comparisons[op](s["value"], threshold))
        ):
            return False
        ms = s["_ms"]
        return (from_ms is None or ms >= from_ms) and (to_ms is None or ms < to_ms)

    rows = sorted(
        filter(match, emu.langfuse.scores.values()), key=lambda s: (s["_ms"], s["id"]), reverse=True
    )
    return _paged(request, rows, score_json)


@router.get("/scores/{score_id}")
async def get_score(score_id: str, emu: Emulator = Auth) -> Any:
    score = emu.langfuse.scores.get(score_id)
    if score is None:
        raise _not_found(f"Score not found: {score_id!r}")
    return score_json(score)
