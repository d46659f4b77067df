"""HTTP helpers shared by the emulator's routers: errors, bodies, pagination, timestamps."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from gip_airflow.api import format_validation_error

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fastapi import Request

    from gip_airflow_emulator.state import Emulator

M = TypeVar("M", bound=BaseModel)


def emulator_of(request: Request) -> Emulator:
    """The :class:`~gip_airflow_emulator.state.Emulator` serving this request."""
    return request.app.state.emulator


#: Langfuse caps page sizes; GIP's cap is [assumed] the same (the provider asks for 100).
MAX_PAGE_SIZE = 100


class ApiError(Exception):
    """An error answer: ``status`` with a JSON body ``{"message": ..., **extra}``."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"message": self.message, **self.extra}, status_code=self.status, headers=self.headers
        )


#: Deepest nesting of arrays and objects accepted in a request body (GIP's deepest body has six levels).
MAX_JSON_DEPTH = 64


class BodyTooDeep(ValueError):
    """A JSON body nested deeper than the emulator accepts."""


def _depth_exceeds(raw: bytes | str, limit: int) -> bool:
    """Does the JSON text nest arrays/objects deeper than ``limit``? (Brackets inside strings skipped.)"""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses nesting beyond ``max_depth`` (BodyTooDeep) before parsing it."""
    if _depth_exceeds(raw, max_depth):
        raise BodyTooDeep(f"the JSON body is nested more than {max_depth} levels deep")
    try:
        return json.loads(raw)
    except RecursionError:  # belt and braces: never a 500
        raise BodyTooDeep(f"the JSON body is nested more than {max_depth} levels deep") from None


async def json_body(request: Request, what: str) -> Any:
    """The request's JSON body, or a 422 saying it is not JSON (or nested too deeply)."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(422, f"Invalid {what}: body: a JSON object is required")
    try:
        return parse_json(raw)
    except BodyTooDeep as exc:
        raise ApiError(422, f"Invalid {what}: body: {exc}") from None
    except ValueError as exc:
        raise ApiError(422, f"Invalid {what}: body: not valid JSON ({exc})") from None


def validate(model: type[M], data: Any, what: str, status: int = 422) -> M:
    """``data`` validated into ``model``; otherwise an error whose message names every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise ApiError(status, format_validation_error(exc, what), detail=detail) from None


def int_param(request: Request, name: str, *, default: int, low: int, high: int | None, status: int) -> int:
    """An integer query parameter in [low, high], or an error naming the parameter."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(status, f"Invalid query: {name}: {raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(status, f"Invalid query: {name}: must be {bound}, got {value}")
    return value


def page_params(request: Request, default_limit: int, status: int) -> tuple[int, int]:
    """``(page, limit)`` from ``?page=N&limit=M``; pages start at 1."""
    page = int_param(request, "page", default=1, low=1, high=None, status=status)
    limit = int_param(request, "limit", default=default_limit, low=1, high=MAX_PAGE_SIZE, status=status)
    return page, limit


T = TypeVar("T")


def page_of(items: Sequence[T], page: int, limit: int) -> tuple[Sequence[T], int, int]:
    """The slice for ``page`` plus ``(total_items, total_pages)``; only the slice is materialised."""
    total = len(items)
    start = (page - 1) * limit
    return items[start : start + limit], total, math.ceil(total / limit) if total else 0


def gip_page(items: Sequence[Any], page: int, limit: int) -> dict[str, Any]:
    """A GIP list answer (snake_case meta). [assumed]"""
    data, total, pages = page_of(items, page, limit)
    return {
        "data": list(data),
        "meta": {"page": page, "limit": limit, "total_items": total, "total_pages": pages},
    }


def langfuse_page(data: list[Any], page: int, limit: int, total: int) -> dict[str, Any]:
    """A Langfuse list answer (camelCase meta)."""
    return {
        "data": data,
        "meta": {
            "page": page,
            "limit": limit,
            "totalItems": total,
            "totalPages": math.ceil(total / limit) if total else 0,
        },
    }


def parse_iso_ms(value: str, name: str) -> int:
    """Epoch ms of an ISO-8601 query value, or a 400 naming the parameter."""
    text = value.strip()
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ApiError(
            400, f"Invalid query: {name}: {value!r} is not an ISO-8601 datetime", error="InvalidRequestError"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return round(stamp.timestamp() * 1000)
