"""Request checks the operators run before any API call, and the comparison used to reuse GIP objects.

* :func:`check_at_parse_time` validates a request when the DAG is parsed, skipping the parts only known
  at run time (Jinja templates, XComArgs);
* :func:`fingerprint` and :func:`differences` tell whether an object found on GIP is the one we would
  create.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from gip_airflow import api

__all__ = ["check_at_parse_time", "differences", "fingerprint", "is_dynamic"]


def is_dynamic(value: Any) -> bool:
    """True when a value is only known at run time: a Jinja template or an XComArg (``task.output``)."""
    if hasattr(value, "resolve") and hasattr(value, "iter_references"):
        return True
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_dynamic(k) or is_dynamic(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(is_dynamic(v) for v in value)
    return False


def _dynamic_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The locations (pydantic ``loc`` style) of the run-time-only parts of a request dict."""
    if isinstance(value, Mapping) and not is_dynamic(list(value.keys())):
        return [p for k, v in value.items() for p in _dynamic_paths(v, (*path, k))]
    if isinstance(value, list | tuple) and not (hasattr(value, "resolve")):
        return [p for i, v in enumerate(value) for p in _dynamic_paths(v, (*path, i))]
    return [path] if is_dynamic(value) else []


def _under(loc: tuple[Any, ...], dynamic: tuple[Any, ...]) -> bool:
    """Is an error location inside a dynamic part? (Union tags may sit between the path items.)"""
    if not dynamic:
        return True
    if not loc or loc[0] != dynamic[0]:
        return False
    it = iter(loc)
    return all(any(part == item for item in it) for part in dynamic)


class _FilteredErrors:
    """Duck-typed stand-in for a ValidationError holding only some of its errors."""

    def __init__(self, errors: list[Any]):
        self._errors = errors

    def errors(self, **_: Any) -> list[Any]:
        return self._errors


def check_at_parse_time(model: type[BaseModel], data: dict[str, Any], what: str) -> None:
    """Validate a request when the DAG is parsed: templated/XCom parts are skipped, the rest is checked."""
    dynamic = _dynamic_paths(data)
    if not dynamic:
        api.build(model, data, what)
        return
    try:
        model.model_validate(_with_placeholders(data, dynamic))
    except ValidationError as exc:
        kept = [
            e
            for e in exc.errors(include_url=False, include_input=False)
            if not any(_under(tuple(e["loc"]), d) for d in dynamic)
        ]
        if kept:
            message = api.format_validation_error(cast("ValidationError", _FilteredErrors(kept)), what)
            raise api.GipRequestError(message) from None


def _with_placeholders(data: Any, dynamic: list[tuple[Any, ...]], path: tuple[Any, ...] = ()) -> Any:
    if path in dynamic:
        return None
    if isinstance(data, Mapping):
        return {k: _with_placeholders(v, dynamic, (*path, k)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_with_placeholders(v, dynamic, (*path, i)) for i, v in enumerate(data)]
    return data


def fingerprint(wire: Mapping[str, Any]) -> str:
    """A digest of a request body: equal digests mean an equivalent object (secrets are only hashed)."""
    return hashlib.sha256(json.dumps(wire, sort_keys=True, default=str).encode()).hexdigest()


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Fields where an existing GIP object differs from what we would create (GIP may add fields)."""
    here = path or "(root)"
    if isinstance(ours, Mapping):
        if not isinstance(theirs, Mapping):
            return [] if not any(v is not None for v in ours.values()) and theirs is None else [here]
        return [d for k, v in ours.items() for d in differences(v, theirs.get(k), f"{path}.{k}".strip("."))]
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            return [here]
        return [
            d
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for d in differences(a, b, f"{here}[{i}]")
        ]
    if ours is None:
        return [] if theirs is None else [here]
    return [] if ours == theirs else [here]
