"""Waiting for a GIP experiment run: the trigger (triggerer) and the wait policy it shares with workers.

One policy, :class:`RunWait`, decides after every status poll whether the run is finished, still going,
or hopeless. The deferrable path (:class:`GipExperimentRunTrigger`, async, in the triggerer) and the
worker path (:func:`wait_in_worker`, sync) drive the same policy, so both modes end with the same event
for the same history of answers:

* every poll is ONE request (hook retries off); the loop owns backoff and honours ``Retry-After``;
* transient errors (timeouts, connection errors, 408/425/429, 5xx, garbled answers, including a non-JSON
  200 from a proxy: the same in the worker, a sensor poke and the triggerer) are waited out with
  exponential backoff; after ``max_consecutive_errors`` failed polls in a row the wait gives up;
* auth errors, a missing run or a broken connection end the wait at once;
* waits that start together (a triggerer restart picking up all its triggers, a backfill, a mapped
  task) must not poll in lockstep: the trigger's first poll comes a random part of one interval after
  it starts (the task checked the run just before deferring), and every later sleep is drawn within
  ``POLL_JITTER`` of its nominal length;
* the deadline is wall-clock epoch seconds, so a trigger resumed in another triggerer process keeps it.

Nothing here may block the triggerer's event loop, including the imports. Airflow imports this module
on the loop (by the trigger's class path) when the first GIP trigger of a triggerer process starts, so it
imports only what a triggerer has loaded anyway; :mod:`gip_airflow.api` (pydantic models) and the hook
module are imported by :meth:`GipExperimentRunTrigger.run` in a worker thread.

:class:`WaitSettings` is the one place that turns a task's wait options into a :class:`RunWait` and a
:class:`GipExperimentRunTrigger`; the start-run operator and the sensor both use it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from gip_airflow.exceptions import GipApiError, GipAuthError, GipBadResponseError, GipConnectionError

if TYPE_CHECKING:
    import logging
    from collections.abc import AsyncIterator, Collection

    from gip_airflow import api
    from gip_airflow.hooks.gip import GipAsyncHook, GipHook

#: Failed polls in a row before a wait gives up.
DEFAULT_MAX_CONSECUTIVE_ERRORS = 10
#: Upper bound of the backoff between failed polls (a ``Retry-After`` may ask for up to the hook's cap).
MAX_ERROR_BACKOFF_SECONDS = 120.0
#: HTTP statuses below 500 that are worth polling again after.
_TRANSIENT_4XX = frozenset({408, 425, 429})
#: Longest a poller keeps an idle connection: under the 60 s idle timeout of common load balancers (AWS
#: ALB), so that GIP, not a closing server, ends the connection only rarely.
MAX_POLL_KEEPALIVE_SECONDS = 55.0
#: Each sleep between polls is the nominal one times a factor drawn from [1 - POLL_JITTER, 1 + POLL_JITTER].
POLL_JITTER = 0.2
#: The defer timeout is this much later than the trigger's own deadline, so the trigger's timeout event
#: (which says how long it waited and the last status) wins over Airflow's bare TaskDeferralTimeout.
DEFER_GRACE_SECONDS = 60.0

Event = dict[str, Any]


def _success_statuses() -> frozenset[str]:
    from gip_airflow.api import SUCCESS_STATUSES

    return SUCCESS_STATUSES


def _failure_statuses() -> frozenset[str]:
    from gip_airflow.api import FAILURE_STATUSES

    return FAILURE_STATUSES


def _load_async_hook() -> type[GipAsyncHook]:
    """Import the async hook with what it needs (run in a worker thread; see the module docstring).

    Also imports the task SDK's ``Connection``, which ``BaseHook.aget_connection`` would import on the loop.
    """
    from airflow.sdk import Connection  # noqa: F401

    from gip_airflow.hooks.gip import GipAsyncHook

    return GipAsyncHook


def poll_keepalive(poll_interval: float) -> float:
    """How long a poller keeps its idle connection: past the next poll, so polls reuse one connection."""
    return min(poll_interval + 10.0, MAX_POLL_KEEPALIVE_SECONDS)


def is_transient(exc: BaseException) -> bool:
    """True for errors a later poll can get past; False for ones that need a human (auth, 404, config)."""
    if isinstance(exc, GipAuthError):
        return False
    if isinstance(exc, GipBadResponseError):  # a proxy's page instead of the answer: same in every mode
        return True
    if isinstance(exc, GipApiError):
        status = exc.http_status
        return status is None or status >= 500 or status in _TRANSIENT_4XX
    # ValueError covers non-JSON bodies and pydantic.ValidationError (a garbled answer from a proxy).
    return isinstance(exc, GipConnectionError | httpx.TransportError | TimeoutError | OSError | ValueError)


def _poll_error_text(exc: BaseException) -> str:
    """A one-line description of a failed status poll for events and logs."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "the status request timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class RunWait:
    """The wait policy for one run: pure decisions from answers and errors, no I/O.

    ``on_run`` / ``on_error`` return ``(event, delay)``: a final event (plain JSON-able dict) or ``None``
    plus the seconds to sleep before the next poll.
    """

    experiment_id: str
    run_id: str
    deadline: float
    poll_interval: float = 30.0
    success_statuses: frozenset[str] = field(default_factory=_success_statuses)
    failure_statuses: frozenset[str] = field(default_factory=_failure_statuses)
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    started_at: float = field(default_factory=time.time)
    jitter: float = POLL_JITTER
    log: logging.Logger | Any = None
    errors: int = 0
    last_status: str | None = None
    last_error: str | None = None
    _reported: set[str] = field(default_factory=set)

    @property
    def what(self) -> str:
        return f"GIP experiment run {self.run_id} (experiment {self.experiment_id})"

    def _jittered(self, delay: float) -> float:
        return delay * random.uniform(1.0 - self.jitter, 1.0 + self.jitter) if self.jitter else delay

    def first_delay(self) -> float:
        """Before the trigger's first poll: a random part of one interval, so that waits started together
        spread over it. None with ``jitter=0``."""
        return random.uniform(0.0, self.poll_interval) if self.jitter else 0.0

    def event(self, status: str, message: str) -> Event:
        """A final event for this run: ``status`` plus the ids, the last run status and ``message``."""
        return {
            "status": status,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "run_status": self.last_status,
            "message": message,
        }

    def on_run(self, run: api.ExperimentRun) -> tuple[Event | None, float]:
        from gip_airflow.api import IN_PROGRESS_STATUSES

        self.errors = 0
        status = run.status or ""
        if status != self.last_status and self.log is not None:
            self.log.info("%s: status %s", self.what, status or "(none)")
        self.last_status = status
        if status in self.success_statuses:
            event = self.event("success", f"{self.what} finished with status {status}")
            event["run"] = run.model_dump(mode="json")
            return event, 0.0
        if status in self.failure_statuses:
            reason = run.error or "GIP gave no error message (aggregated_result.error is empty)"
            event = self.event("failure", f"{self.what} ended with status {status}: {reason}")
            event.update(error=run.error, run=run.model_dump(mode="json"))
            return event, 0.0
        known = IN_PROGRESS_STATUSES | self.success_statuses | self.failure_statuses
        if status not in known and status not in self._reported and self.log is not None:
            self._reported.add(status)
            self.log.warning(
                "%s reports status %r, which is neither a success status (%s) nor a failure status (%s); "
                "treating it as still in progress",
                self.what,
                status,
                ", ".join(sorted(self.success_statuses)),
                ", ".join(sorted(self.failure_statuses)),
            )
        return None, self._jittered(self.poll_interval)

    def on_error(self, exc: BaseException) -> tuple[Event | None, float]:
        self.last_error = _poll_error_text(exc)
        if not is_transient(exc):
            reason = "auth" if isinstance(exc, GipAuthError) else "error"
            event = self.event("error", f"Stopped waiting for {self.what}: {self.last_error}")
            event["reason"] = reason
            return event, 0.0
        self.errors += 1
        if self.errors >= self.max_consecutive_errors:
            event = self.event(
                "error",
                f"Gave up waiting for {self.what}: {self.errors} status polls in a row failed; last error: "
                f"{self.last_error}. The run may still be going on GIP; a task retry reconnects to it.",
            )
            event["reason"] = "gave_up"
            return event, 0.0
        backoff = self._jittered(
            min(self.poll_interval * 2 ** (self.errors - 1), max(MAX_ERROR_BACKOFF_SECONDS, 1.0))
        )
        server_wait = getattr(exc, "retry_after", None)
        delay = max(backoff, float(server_wait)) if server_wait is not None else backoff
        if self.log is not None:
            self.log.warning(
                "Status poll %d/%d of %s failed (%s); polling again in %.1f s",
                self.errors,
                self.max_consecutive_errors,
                self.what,
                self.last_error,
                delay,
            )
        return None, delay

    def timeout_event(self, now: float | None = None) -> Event:
        waited = (now or time.time()) - self.started_at
        allowed = self.deadline - self.started_at
        event = self.event(
            "timeout",
            f"{self.what} did not finish within the timeout of {allowed:.0f} s (waited {waited:.0f} s; "
            f"last status {self.last_status or 'unknown'}). The run keeps going on GIP; a task retry "
            "reconnects to it instead of starting another.",
        )
        event["waited_seconds"] = round(waited, 3)
        return event

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (now or time.time())

    def sleep_for(self, delay: float, now: float | None = None) -> float:
        """The delay clipped to the deadline (so the timeout event is not late by a whole interval)."""
        return max(0.0, min(delay, self.remaining(now)))


def wait_in_worker(hook: GipHook, wait: RunWait) -> Event:
    """Poll with the sync hook until ``wait`` produces a final event (the worker-side wait)."""
    while True:
        now = time.time()
        if now >= wait.deadline:
            return wait.timeout_event(now)
        try:
            event, delay = wait.on_run(hook.get_experiment_run(wait.experiment_id, wait.run_id))
        except Exception as exc:
            event, delay = wait.on_error(exc)
        if event is not None:
            return event
        time.sleep(wait.sleep_for(delay))


class GipExperimentRunTrigger(BaseTrigger):
    """Poll a GIP experiment run from the triggerer until it finishes; yield exactly one event.

    The event payload is a plain dict with ``status`` one of ``success`` (with ``run``, the run as JSON),
    ``failure`` (with ``run_status`` and ``error``, GIP's ``aggregated_result.error``), ``timeout`` (with
    ``waited_seconds``) or ``error`` (``reason`` ``auth``, ``error`` or ``gave_up``), and always
    ``experiment_id``, ``run_id``, ``run_status`` and a human-readable ``message``.

    :param experiment_id: the experiment the run belongs to.
    :param run_id: the run to wait for.
    :param end_time: wall-clock deadline in epoch seconds; at it the trigger yields a ``timeout`` event.
    :param gip_conn_id: the ``gip`` connection (read with ``BaseHook.aget_connection``).
    :param poll_interval: seconds between status polls, on average (each sleep within ``POLL_JITTER``).
    :param success_statuses: statuses that end the wait successfully (default ``DONE``).
    :param failure_statuses: statuses that end it as failed (default ``FAILED``, ``ERROR``, ``CANCELLED``).
    :param max_consecutive_errors: failed polls in a row before giving up.
    :param started_at: epoch seconds the wait began (for the "waited N s" message); defaults to now.
    """

    def __init__(
        self,
        *,
        experiment_id: str,
        run_id: str,
        end_time: float,
        gip_conn_id: str = "gip_default",
        poll_interval: float = 30.0,
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.end_time = float(end_time)
        self.gip_conn_id = gip_conn_id
        self.poll_interval = float(poll_interval)
        # The triggerer always passes both (serialize() writes them): it never imports gip_airflow.api here.
        self.success_statuses = sorted(success_statuses or _success_statuses())
        self.failure_statuses = sorted(failure_statuses or _failure_statuses())
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.started_at = float(started_at) if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "experiment_id": self.experiment_id,
                "run_id": self.run_id,
                "end_time": self.end_time,
                "gip_conn_id": self.gip_conn_id,
                "poll_interval": self.poll_interval,
                "success_statuses": list(self.success_statuses),
                "failure_statuses": list(self.failure_statuses),
                "max_consecutive_errors": self.max_consecutive_errors,
                "started_at": self.started_at,
            },
        )

    def _wait(self) -> RunWait:
        settings = WaitSettings(
            gip_conn_id=self.gip_conn_id,
            poll_interval=self.poll_interval,
            success_statuses=frozenset(self.success_statuses),
            failure_statuses=frozenset(self.failure_statuses),
            max_consecutive_errors=self.max_consecutive_errors,
        )
        return settings.new_wait(
            self.experiment_id, self.run_id, deadline=self.end_time, started_at=self.started_at, log=self.log
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async_hook = await asyncio.to_thread(_load_async_hook)
        wait = self._wait()
        try:
            hook = await async_hook.from_conn_id(
                self.gip_conn_id, max_retries=0, keepalive_expiry=poll_keepalive(self.poll_interval)
            )
        except Exception as exc:  # missing or invalid connection: no poll can succeed
            failed = wait.event(
                "error",
                f"Cannot wait for {wait.what}: connection {self.gip_conn_id!r}: {_poll_error_text(exc)}",
            )
            failed["reason"] = "auth" if isinstance(exc, GipAuthError) else "error"
            yield TriggerEvent(failed)
            return
        async with hook:
            await asyncio.sleep(wait.sleep_for(wait.first_delay()))
            while True:
                now = time.time()
                if now >= self.end_time:
                    yield TriggerEvent(wait.timeout_event(now))
                    return
                try:
                    run = await asyncio.wait_for(
                        hook.get_experiment_run(self.experiment_id, self.run_id),
                        timeout=max(wait.remaining(now), 0.5),
                    )
                except Exception as exc:
                    event, delay = wait.on_error(exc)
                else:
                    event, delay = wait.on_run(run)
                if event is not None:
                    yield TriggerEvent(event)
                    return
                await asyncio.sleep(wait.sleep_for(delay))


class WaitingTask(Protocol):
    """What :meth:`WaitSettings.of` reads of a task: the start-run operator or the sensor."""

    task_id: str
    gip_conn_id: str
    max_consecutive_errors: int


@dataclass(frozen=True)
class WaitSettings:
    """How a task waits for a run; builds the :class:`RunWait` and the trigger for it.

    Raises ValueError for settings no wait can use (a status both success and failure, no polls).
    """

    gip_conn_id: str = "gip_default"
    poll_interval: float = 30.0
    success_statuses: frozenset[str] = field(default_factory=_success_statuses)
    failure_statuses: frozenset[str] = field(default_factory=_failure_statuses)
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS

    def __post_init__(self) -> None:
        if both := self.success_statuses & self.failure_statuses:
            raise ValueError(f"statuses {sorted(both)} are both success and failure")
        if self.max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be at least 1")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval!r}")

    @classmethod
    def of(
        cls,
        task: WaitingTask,
        poll_interval: float,
        success_statuses: Collection[str] | None,
        failure_statuses: Collection[str] | None,
    ) -> WaitSettings:
        """The wait settings of a task (its connection and error limit; default statuses for None).

        A setting no wait can use raises ValueError naming the task.
        """
        try:
            return cls(
                gip_conn_id=task.gip_conn_id,
                poll_interval=float(poll_interval),
                success_statuses=frozenset(success_statuses or _success_statuses()),
                failure_statuses=frozenset(failure_statuses or _failure_statuses()),
                max_consecutive_errors=int(task.max_consecutive_errors),
            )
        except ValueError as exc:
            raise ValueError(f"Task {task.task_id!r}: {exc}") from None

    def new_wait(
        self,
        experiment_id: str,
        run_id: str,
        *,
        deadline: float = float("inf"),
        started_at: float | None = None,
        log: logging.Logger | Any = None,
    ) -> RunWait:
        """A fresh wait policy for one run (``deadline`` in epoch seconds; none by default)."""
        return RunWait(
            experiment_id=experiment_id,
            run_id=run_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            success_statuses=self.success_statuses,
            failure_statuses=self.failure_statuses,
            max_consecutive_errors=self.max_consecutive_errors,
            started_at=time.time() if started_at is None else started_at,
            log=log,
        )

    def trigger(self, wait: RunWait) -> GipExperimentRunTrigger:
        """The trigger that continues ``wait`` in the triggerer, with its deadline and start time."""
        return GipExperimentRunTrigger(
            experiment_id=wait.experiment_id,
            run_id=wait.run_id,
            end_time=wait.deadline,
            gip_conn_id=self.gip_conn_id,
            poll_interval=self.poll_interval,
            success_statuses=sorted(self.success_statuses),
            failure_statuses=sorted(self.failure_statuses),
            max_consecutive_errors=self.max_consecutive_errors,
            started_at=wait.started_at,
        )

    def defer_kwargs(self, wait: RunWait) -> dict[str, Any]:
        """Arguments for ``BaseOperator.defer``: the trigger, ``execute_complete`` and a graced timeout."""
        return {
            "trigger": self.trigger(wait),
            "method_name": "execute_complete",
            "timeout": dt.timedelta(seconds=wait.deadline - wait.started_at + DEFER_GRACE_SECONDS),
        }


def raise_for_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the finished run (plain dict) of a success event; raise the matching error otherwise."""
    from gip_airflow.exceptions import GipError, GipRunFailedError, GipRunTimeoutError

    status = event.get("status")
    if status == "success":
        return dict(event.get("run") or {})
    message = str(event.get("message") or f"unexpected event from the GIP run trigger: {event!r}")
    if status == "failure":
        raise GipRunFailedError(
            message,
            run_id=str(event.get("run_id")),
            status=event.get("run_status"),
            error=event.get("error"),
        )
    if status == "timeout":
        raise GipRunTimeoutError(message)
    if event.get("reason") == "auth":
        raise GipAuthError(message)
    raise GipError(message)
