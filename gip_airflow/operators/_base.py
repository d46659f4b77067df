"""What the GIP operators share: the create-or-reuse base class and small run-time helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from pydantic import BaseModel

from gip_airflow import api
from gip_airflow.hooks.gip import GipHook
from gip_airflow.operators._validation import check_at_parse_time, differences, fingerprint, is_dynamic

if TYPE_CHECKING:
    from airflow.sdk import Connection, Context

#: Default of ``window_fallback``: the window evaluated when a run has no usable data interval.
DEFAULT_WINDOW_FALLBACK = dt.timedelta(hours=24)
#: GIP's limit on a run's display name.
MAX_DISPLAY_NAME = 255


def as_dict(value: Any) -> Any:
    """Typed request models become plain dicts, so Jinja can render strings inside them like any dict."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


def state_store(context: Context) -> Any:
    """The task state store of this task instance (Airflow >= 3.3), or None."""
    return context.get("task_state_store")


def url_of(conn: Connection) -> str | None:
    """Base URL of an http/generic connection: ``host`` may be a full URL or a bare host name."""
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" not in host:
        scheme = (conn.schema or "https").strip() or "https"
        host = f"{scheme}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    return host.rstrip("/")


def to_seconds(value: dt.timedelta | float, name: str) -> float:
    """Seconds of a positive duration given as seconds or a timedelta; ValueError naming ``name``."""
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return seconds


class GipCreateOperatorBase(BaseOperator):
    """Shared logic: validate, reuse what this task instance (or an equivalent task) created, else create."""

    what: ClassVar[str]
    state_key: ClassVar[str]
    ui_color = "#e3ecfa"

    def __init__(
        self, *, gip_conn_id: str = GipHook.default_conn_name, reuse_existing: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.gip_conn_id = gip_conn_id
        self.reuse_existing = reuse_existing

    @cached_property
    def hook(self) -> GipHook:
        return GipHook(self.gip_conn_id)

    # -- to implement ---------------------------------------------------------------------------

    def request_data(self, context: Context | None) -> dict[str, Any]:
        """The request as a dict (``context`` None: at parse time)."""
        raise NotImplementedError

    model: ClassVar[type[api.RequestModel]]

    def list_same_name(self, name: str) -> list[Any]:
        """Existing objects with this name, or raise GipApiError when listing is not possible."""
        return []

    def create(self, request: Any) -> Any:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    def _what(self) -> str:
        return f"{self.what} for task {self.task_id!r}"

    def _check_at_parse_time(self) -> None:
        check_at_parse_time(self.model, self.request_data(None), self._what())

    def build_request(self, context: Context) -> Any:
        """Validate the rendered request; a bad request fails the task without retries."""
        try:
            return api.build(self.model, self.request_data(context), self._what())
        except api.GipRequestError as exc:
            raise AirflowFailException(str(exc)) from None

    def execute(self, context: Context) -> str:
        request = self.build_request(context)
        wire = request.to_wire()
        digest = fingerprint(wire)
        store = state_store(context) if self.reuse_existing else None
        stored = self._stored(store)
        if stored.get("fingerprint") == digest and stored.get("id"):
            self.log.info(
                "Reusing %s %s registered by an earlier try of this task instance (same definition)",
                self.what,
                stored["id"],
            )
            return str(stored["id"])
        if self.reuse_existing:
            # Compare every field, defaults included: an object with settings the user left out
            # (e.g. a top_p) is not the same definition, although those fields stay off the wire.
            full = request.model_dump(mode="json", by_alias=True, context={"reveal_secrets": True})
            existing = self._find_equivalent(full, digest)
            if existing is not None:
                self._store_created(store, existing.id, digest)
                return str(existing.id)
        created = self.create(request)
        self._store_created(store, created.id, digest)
        self._created(created.id, digest)
        return str(created.id)

    def _created(self, object_id: str, fingerprint: str) -> None:
        """Called after a new object was created (subclasses may record it elsewhere)."""

    def _stored(self, store: Any) -> dict[str, Any]:
        if store is None:
            return {}
        try:
            value = store.get(self.state_key)
        except Exception as exc:
            self.log.warning("Cannot read the task state store (%s); not reusing earlier tries", exc)
            return {}
        return dict(value) if isinstance(value, Mapping) else {}

    def _store_created(self, store: Any, object_id: str, fingerprint: str) -> None:
        if store is None:
            return
        try:
            store.set(self.state_key, {"id": object_id, "fingerprint": fingerprint})
        except Exception as exc:
            self.log.warning("Cannot write the task state store (%s); a retry may create another", exc)

    def _find_equivalent(self, wire: Mapping[str, Any], fingerprint: str) -> Any:
        name = str(wire.get("name"))
        candidates = self.hook.lookup(f"{self.what}s named {name!r}", lambda: self.list_same_name(name))
        if candidates is None:  # no lookup available (logged by the hook)
            return None
        others: list[str] = []
        for candidate in candidates:
            diffs = differences(dict(wire), candidate.model_dump(mode="json"))
            if not diffs:
                self.log.info(
                    "A %s named %r with the same definition already exists (%s); reusing it",
                    self.what,
                    name,
                    candidate.id,
                )
                return candidate
            others.append(f"{candidate.id} (differs in {', '.join(diffs[:5])})")
        if others:
            self.log.info(
                "%d %s(s) named %r exist with another definition: %s; creating a new one",
                len(others),
                self.what,
                name,
                "; ".join(others[:5]),
            )
        return None


def data_interval_window(
    context: Context, fallback: dt.timedelta, log: Any = None
) -> tuple[dt.datetime, dt.datetime]:
    """The run's data interval, or ``fallback`` before ``run_after`` (manual runs) / the interval's end."""
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return start, end
    anchor: dt.datetime
    if end is not None:
        anchor, why = end, "the data interval is empty (e.g. CronTriggerTimetable without interval=)"
    else:
        dag_run = context.get("dag_run")
        anchor = getattr(dag_run, "run_after", None) or dt.datetime.now(dt.UTC)
        why = "this run has no data interval (a manual or API-triggered run in Airflow 3)"
    if log is not None:
        log.warning(
            "window='data_interval': %s; evaluating the %s before %s instead (window_fallback)",
            why,
            fallback,
            anchor,
        )
    return anchor - fallback, anchor


def fill_window(
    task_id: str, data: dict[str, Any], context: Context | None, fallback: dt.timedelta, log: Any
) -> None:
    """Set an experiment request's window fields to the run's data interval (``window="data_interval"``).

    At parse time (``context`` None) only checks that the type has a window and the config sets none.
    """
    etype = data["type"]
    if is_dynamic(etype):
        return
    try:
        filter_key, (start_field, end_field) = api.WINDOW_FILTER_BY_TYPE[api.ExperimentType(etype)]
    except (KeyError, ValueError):
        raise api.GipRequestError(
            f"Task {task_id!r}: window='data_interval' needs a langfuse_trace or "
            f"langfuse_observation experiment; type {etype!r} has no time window"
        ) from None
    config = data["config"]
    if not isinstance(config, dict):
        return
    filters = dict(config.get(filter_key) or {})
    taken = [f for f in (start_field, end_field, "relative_time_range") if filters.get(f) is not None]
    if taken:
        raise api.GipRequestError(
            f"Task {task_id!r}: window='data_interval' sets config.{filter_key}.{start_field}/"
            f"{end_field}, but the config already sets {', '.join(taken)}; remove them or drop window="
        )
    if context is None:
        return
    start, end = data_interval_window(context, fallback, log)
    filters[start_field], filters[end_field] = start, end
    config[filter_key] = filters
    log.info("Experiment window (%s, %s): %s to %s", start_field, end_field, start, end)


def default_display_name(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> str:
    """``airflow/<dag>/<task>/<run>[/<map index>]``: unique and stable per task instance, <= 255 chars."""
    name = f"airflow/{dag_id}/{task_id}/{run_id}"
    if map_index is not None and map_index >= 0:
        name += f"/{map_index}"
    if len(name) > MAX_DISPLAY_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[: MAX_DISPLAY_NAME - len(digest) - 1]}~{digest}"
    return name


def mask_secret(secret: str) -> None:
    """Register a secret with Airflow's secrets masker, so logs show ``***`` instead."""
    from airflow.sdk.log import mask_secret as airflow_mask_secret

    airflow_mask_secret(secret)
