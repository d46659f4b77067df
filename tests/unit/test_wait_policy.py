"""The run wait: RunWait's decisions, WaitSettings (the one factory), the trigger's serialization and
event loop over a mock transport, the worker-side wait, and how events become task results or errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from gip_airflow import api
from gip_airflow.exceptions import (
    GipApiError,
    GipAuthError,
    GipConnectionError,
    GipError,
    GipNotFoundError,
    GipRunFailedError,
    GipRunTimeoutError,
)
from gip_airflow.triggers import gip as triggers
from gip_airflow.triggers.gip import (
    DEFER_GRACE_SECONDS,
    GipExperimentRunTrigger,
    RunWait,
    WaitSettings,
    is_transient,
    poll_keepalive,
    raise_for_event,
    wait_in_worker,
)
from tests.unit.test_hook_transport import Recorder, async_hook, sync_hook


def run(status: str | None, error: str | None = None) -> api.ExperimentRun:
    aggregated = {"error": error} if error else None
    return api.ExperimentRun(id="run-1", status=status, aggregated_result=aggregated)


def new_wait(**overrides: Any) -> RunWait:
    settings = {"poll_interval": 10.0, "max_consecutive_errors": 3, "jitter": 0.0}
    settings.update(overrides)
    return RunWait(experiment_id="exp-1", run_id="run-1", deadline=time.time() + 3600, **settings)


# ---------------------------------------------------------------------------------------------
# RunWait: decisions from answers and errors
# ---------------------------------------------------------------------------------------------


def test_done_ends_the_wait_with_the_run():
    event, delay = new_wait().on_run(run("DONE"))
    assert event is not None and delay == 0.0
    assert event["status"] == "success" and event["run"]["id"] == "run-1" and event["run_status"] == "DONE"


def test_a_failure_status_ends_it_with_gips_error():
    event, _ = new_wait().on_run(run("FAILED", error="judge model quota exceeded"))
    assert event is not None and event["status"] == "failure"
    assert event["error"] == "judge model quota exceeded"
    assert "ended with status FAILED: judge model quota exceeded" in event["message"]


def test_in_progress_and_unknown_statuses_keep_polling_and_unknown_ones_are_logged_once(caplog):
    import logging

    log = logging.getLogger("unit.wait")
    wait = new_wait(log=log)
    with caplog.at_level(logging.WARNING, logger="unit.wait"):
        assert wait.on_run(run("RUNNING")) == (None, 10.0)
        assert wait.on_run(run("QUEUED_FOR_GPU")) == (None, 10.0)
        assert wait.on_run(run("QUEUED_FOR_GPU")) == (None, 10.0)
    warnings = [r for r in caplog.records if "QUEUED_FOR_GPU" in r.getMessage()]
    assert len(warnings) == 1 and "treating it as still in progress" in warnings[0].getMessage()


def test_custom_statuses_decide():
    wait = new_wait(success_statuses=frozenset({"EXPORTED"}), failure_statuses=frozenset({"DONE"}))
    assert wait.on_run(run("DONE"))[0]["status"] == "failure"
    assert wait.on_run(run("EXPORTED"))[0]["status"] == "success"


def test_transient_errors_back_off_exponentially_then_give_up():
    wait = new_wait()
    first = wait.on_error(GipApiError("busy", http_status=503))
    second = wait.on_error(httpx.ReadTimeout("slow"))
    assert first == (None, 10.0) and second == (None, 20.0)
    event, _ = wait.on_error(GipConnectionError("refused"))
    assert event is not None and event["status"] == "error" and event["reason"] == "gave_up"
    assert "3 status polls in a row failed" in event["message"]


def test_an_answer_resets_the_error_count():
    wait = new_wait()
    wait.on_error(GipApiError("busy", http_status=503))
    wait.on_error(GipApiError("busy", http_status=503))
    wait.on_run(run("RUNNING"))
    assert wait.on_error(GipApiError("busy", http_status=503)) == (None, 10.0)


def test_retry_after_lengthens_the_backoff():
    wait = new_wait()
    assert wait.on_error(GipApiError("slow down", http_status=429, retry_after=45.0)) == (None, 45.0)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (GipAuthError("key revoked", http_status=401), "auth"),
        (GipNotFoundError("no such run", http_status=404), "error"),
        (GipApiError("bad request", http_status=400), "error"),
    ],
)
def test_errors_a_later_poll_cannot_fix_end_the_wait_at_once(exc, reason):
    event, _ = new_wait().on_error(exc)
    assert event is not None and event["status"] == "error" and event["reason"] == reason


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (GipApiError("x", http_status=408), True),
        (GipApiError("x", http_status=425), True),
        (GipApiError("x", http_status=500), True),
        (GipApiError("x"), True),
        (GipApiError("x", http_status=409), False),
        (ValueError("garbled JSON"), True),
        (TimeoutError(), True),
        (GipAuthError("x", http_status=403), False),
        (KeyError("bug"), False),
    ],
)
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_timeout_event_says_how_long_and_the_last_status():
    wait = new_wait()
    wait.on_run(run("RUNNING"))
    event = wait.timeout_event(now=wait.started_at + 42)
    assert event["status"] == "timeout" and event["waited_seconds"] == 42
    assert "last status RUNNING" in event["message"]


def test_sleeps_are_clipped_to_the_deadline_and_jittered_within_bounds():
    wait = new_wait(jitter=0.2)
    assert wait.sleep_for(100.0, now=wait.deadline - 5) == 5.0
    assert wait.sleep_for(100.0, now=wait.deadline + 5) == 0.0
    delays = {wait.on_run(run("RUNNING"))[1] for _ in range(200)}
    assert all(8.0 <= d <= 12.0 for d in delays) and len(delays) > 100
    assert all(0.0 <= wait.first_delay() <= 10.0 for _ in range(50))
    assert new_wait(jitter=0.0).first_delay() == 0.0


def test_poll_keepalive_outlasts_the_interval_but_not_load_balancer_idle_timeouts():
    assert poll_keepalive(30.0) > 30.0
    assert poll_keepalive(600.0) == triggers.MAX_POLL_KEEPALIVE_SECONDS


# ---------------------------------------------------------------------------------------------
# WaitSettings: the one factory of waits and triggers
# ---------------------------------------------------------------------------------------------


def test_settings_default_to_the_api_statuses():
    settings = WaitSettings()
    assert settings.success_statuses == api.SUCCESS_STATUSES
    assert settings.failure_statuses == api.FAILURE_STATUSES


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"success_statuses": ["DONE"], "failure_statuses": ["DONE", "FAILED"]}, r"\['DONE'\] are both"),
        ({"max_consecutive_errors": 0}, "max_consecutive_errors must be at least 1"),
        ({"poll_interval": 0}, "poll_interval must be positive"),
    ],
)
def test_settings_for_a_task_reject_unusable_values_naming_the_task(overrides, message):
    options: dict[str, Any] = {"poll_interval": 30.0, "success_statuses": None, "failure_statuses": None}
    options.update(overrides)
    task = SimpleNamespace(
        task_id="wait_task",
        gip_conn_id="gip_default",
        max_consecutive_errors=options.pop("max_consecutive_errors", 5),
    )
    with pytest.raises(ValueError, match=rf"Task 'wait_task': .*{message}"):
        WaitSettings.of(task, **options)


def test_the_trigger_continues_the_wait_with_its_deadline_and_start():
    settings = WaitSettings(gip_conn_id="gip_x", poll_interval=7.0, max_consecutive_errors=4)
    wait = settings.new_wait("exp-1", "run-1", deadline=2000.0, started_at=1000.0)
    kwargs = settings.defer_kwargs(wait)
    trigger = kwargs["trigger"]
    assert kwargs["method_name"] == "execute_complete"
    assert kwargs["timeout"] == dt.timedelta(seconds=1000.0 + DEFER_GRACE_SECONDS)
    assert (trigger.end_time, trigger.started_at, trigger.gip_conn_id) == (2000.0, 1000.0, "gip_x")
    again = trigger._wait()
    for name in ("deadline", "started_at", "poll_interval", "success_statuses", "failure_statuses"):
        assert getattr(again, name) == getattr(wait, name), name
    assert again.max_consecutive_errors == 4


def test_trigger_serialization_round_trips_as_plain_json():
    trigger = WaitSettings().trigger(WaitSettings().new_wait("e", "r", deadline=99.0, started_at=1.0))
    path, kwargs = trigger.serialize()
    assert path == "gip_airflow.triggers.gip.GipExperimentRunTrigger"
    assert isinstance(kwargs["success_statuses"], list) and isinstance(kwargs["failure_statuses"], list)
    assert GipExperimentRunTrigger(**kwargs).serialize() == (path, kwargs)


# ---------------------------------------------------------------------------------------------
# The trigger's loop over a mock transport
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def trigger_hook(monkeypatch):
    """Make the trigger poll through a MockTransport-backed async hook; returns the request recorder."""
    holder: dict[str, Recorder] = {}

    class StubAsyncHook:
        @classmethod
        async def from_conn_id(cls, gip_conn_id: str, **overrides: Any):
            return async_hook(holder["recorder"], **overrides)

    monkeypatch.setattr(triggers, "_load_async_hook", lambda: StubAsyncHook)
    return holder


def events_of(trigger: GipExperimentRunTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def make_trigger(**overrides: Any) -> GipExperimentRunTrigger:
    kwargs: dict[str, Any] = {
        "experiment_id": "exp-1",
        "run_id": "run-1",
        "end_time": time.time() + 30,
        "poll_interval": 0.01,
        "max_consecutive_errors": 3,
    }
    kwargs.update(overrides)
    return GipExperimentRunTrigger(**kwargs)


def test_trigger_polls_through_errors_until_done_and_yields_one_event(trigger_hook):
    trigger_hook["recorder"] = recorder = Recorder(
        httpx.Response(200, json={"id": "run-1", "status": "RUNNING"}),
        httpx.Response(503, json={"message": "busy"}),
        httpx.Response(200, json={"id": "run-1", "status": "DONE", "result_path": "s3://r.csv"}),
    )
    (event,) = events_of(make_trigger())
    assert event["status"] == "success" and event["run"]["result_path"] == "s3://r.csv"
    assert len(recorder.requests) == 3  # one request per poll: the hook's own retries are off


def test_trigger_stops_at_once_on_auth_errors(trigger_hook):
    trigger_hook["recorder"] = recorder = Recorder(httpx.Response(401, json={"message": "revoked"}))
    (event,) = events_of(make_trigger())
    assert (event["status"], event["reason"]) == ("error", "auth")
    assert len(recorder.requests) == 1


def test_trigger_times_out_at_its_deadline(trigger_hook):
    trigger_hook["recorder"] = Recorder(httpx.Response(200, json={"id": "run-1", "status": "RUNNING"}))
    (event,) = events_of(make_trigger(end_time=time.time() + 0.2, started_at=time.time()))
    assert event["status"] == "timeout" and event["run_status"] == "RUNNING"


def test_trigger_without_a_usable_connection_yields_an_error(monkeypatch):
    class NoConnection:
        @classmethod
        async def from_conn_id(cls, gip_conn_id: str, **overrides: Any):
            raise GipError(f"Connection {gip_conn_id!r}: host is empty")

    monkeypatch.setattr(triggers, "_load_async_hook", lambda: NoConnection)
    (event,) = events_of(make_trigger(gip_conn_id="broken"))
    assert event["status"] == "error" and "connection 'broken'" in event["message"]


# ---------------------------------------------------------------------------------------------
# The worker-side wait and the event -> result mapping
# ---------------------------------------------------------------------------------------------


def test_worker_wait_follows_the_same_policy():
    recorder = Recorder(
        httpx.Response(500, json={"message": "oops"}),
        httpx.Response(200, json={"id": "run-1", "status": "FAILED", "aggregated_result": {"error": "bad"}}),
    )
    hook = sync_hook(recorder, max_retries=0)
    event = wait_in_worker(hook, new_wait(poll_interval=0.001))
    assert event["status"] == "failure" and event["error"] == "bad"
    assert len(recorder.requests) == 2


def test_raise_for_event_returns_the_run_or_raises_the_matching_error():
    assert raise_for_event({"status": "success", "run": {"id": "r"}}) == {"id": "r"}
    with pytest.raises(GipRunFailedError) as failed:
        raise_for_event(
            {"status": "failure", "message": "m", "run_id": "r", "run_status": "FAILED", "error": "e"}
        )
    assert (failed.value.run_id, failed.value.status, failed.value.error) == ("r", "FAILED", "e")
    with pytest.raises(GipRunTimeoutError):
        raise_for_event({"status": "timeout", "message": "late"})
    with pytest.raises(GipAuthError):
        raise_for_event({"status": "error", "reason": "auth", "message": "revoked"})
    with pytest.raises(GipError, match="unexpected event"):
        raise_for_event({"status": "weird"})
