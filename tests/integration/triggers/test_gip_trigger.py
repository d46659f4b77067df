"""GipExperimentRunTrigger and the shared wait policy: serialization, decisions, and real polling."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from airflow.triggers.base import TriggerEvent

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
from gip_airflow.hooks.gip import GipHook
from gip_airflow.triggers.gip import (
    MAX_POLL_KEEPALIVE_SECONDS,
    POLL_JITTER,
    GipExperimentRunTrigger,
    RunWait,
    is_transient,
    poll_keepalive,
    raise_for_event,
)
from gip_airflow_emulator.defaults import DEFAULT_RUN_SECONDS
from tests.conftest import REPO


def make_trigger(**overrides) -> GipExperimentRunTrigger:
    kwargs = {
        "experiment_id": "exp-1",
        "run_id": "run-1",
        "end_time": time.time() + 30,
        "gip_conn_id": "gip_default",
        "poll_interval": 0.05,
        "max_consecutive_errors": 3,
    }
    kwargs.update(overrides)
    return GipExperimentRunTrigger(**kwargs)


def collect(trigger: GipExperimentRunTrigger, limit: float = 60) -> list[TriggerEvent]:
    async def run() -> list[TriggerEvent]:
        return [e async for e in trigger.run()]

    return asyncio.run(asyncio.wait_for(run(), limit))


def run_answer(status: str | None, error: str | None = None) -> api.ExperimentRun:
    return api.ExperimentRun.model_validate(
        {
            "id": "run-1",
            "status": status,
            "aggregated_result": {"error": error, "total_usage": {"total_tokens": 10}},
            "result_path": "workspaces/w/experiment_runs/run-1.csv",
        }
    )


# --- serialization ---------------------------------------------------------------------------------


def test_serialization():
    trigger = make_trigger(
        success_statuses={"DONE", "FINISHED"}, failure_statuses=["FAILED"], started_at=12.5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "gip_airflow.triggers.gip.GipExperimentRunTrigger"
    # Only plain values: what the triggerer table stores and another process re-instantiates from.
    json.dumps(kwargs)
    assert all(isinstance(v, str | int | float | list) for v in kwargs.values())
    assert kwargs["success_statuses"] == ["DONE", "FINISHED"]
    assert kwargs["end_time"] == trigger.end_time and kwargs["started_at"] == 12.5
    module, name = classpath.rsplit(".", 1)
    clone = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert clone.serialize() == (classpath, kwargs)


def test_defaults_serialize_documented_statuses():
    _, kwargs = make_trigger().serialize()
    assert kwargs["success_statuses"] == sorted(api.SUCCESS_STATUSES)
    assert kwargs["failure_statuses"] == sorted(api.FAILURE_STATUSES)


# --- the wait policy -------------------------------------------------------------------------------


def policy(**overrides) -> RunWait:
    kwargs = {
        "experiment_id": "exp-1",
        "run_id": "run-1",
        "deadline": time.time() + 100,
        "poll_interval": 2.0,
        "jitter": 0.0,  # exact delays; test_sleeps_are_jittered covers the jitter
    }
    kwargs.update(overrides)
    return RunWait(**kwargs)


def test_sleeps_are_jittered_so_waits_started_together_spread_out():
    wait = policy(jitter=POLL_JITTER)
    polls = [wait.on_run(run_answer("RUNNING"))[1] for _ in range(400)]
    assert all(2.0 * (1 - POLL_JITTER) <= d <= 2.0 * (1 + POLL_JITTER) for d in polls)
    assert 1.9 < sum(polls) / len(polls) < 2.1, "the mean stays the poll interval"
    assert max(polls) - min(polls) > 2.0 * POLL_JITTER, "spread over most of the jitter window"
    backoffs = []
    for _ in range(200):
        wait.errors = 0
        backoffs.append(wait.on_error(GipApiError("boom", http_status=503))[1])
    assert all(1.6 <= d <= 2.4 for d in backoffs) and len(set(backoffs)) > 100
    firsts = [wait.first_delay() for _ in range(200)]
    assert all(0.0 <= d <= 2.0 for d in firsts) and max(firsts) - min(firsts) > 1.5, "over one interval"
    assert policy().first_delay() == 0.0, "no jitter, no delay"
    # Retry-After is a floor, not jittered below
    assert wait.on_error(GipApiError("slow down", http_status=429, retry_after=30))[1] >= 30


def test_success_event_carries_plain_run():
    event, _ = policy().on_run(run_answer("DONE"))
    assert event["status"] == "success" and event["run"]["result_path"].endswith("run-1.csv")
    json.dumps(event)
    assert raise_for_event(event)["id"] == "run-1"


def test_failure_event_names_run_status_and_error():
    event, _ = policy().on_run(run_answer("FAILED", "judge model quota exceeded"))
    assert event["status"] == "failure" and event["error"] == "judge model quota exceeded"
    with pytest.raises(GipRunFailedError) as info:
        raise_for_event(event)
    assert "run-1" in str(info.value) and "FAILED" in str(info.value) and "quota exceeded" in str(info.value)
    assert info.value.status == "FAILED" and info.value.error == "judge model quota exceeded"


def test_custom_status_sets():
    wait = policy(success_statuses=frozenset({"COMPLETED"}), failure_statuses=frozenset({"BROKEN"}))
    assert wait.on_run(run_answer("DONE"))[0] is None, "DONE is no success when the user says so"
    assert wait.on_run(run_answer("COMPLETED"))[0]["status"] == "success"
    assert wait.on_run(run_answer("BROKEN"))[0]["status"] == "failure"


def test_unknown_status_is_logged_once_and_waited_on(caplog):
    log = logging.getLogger("test.wait")
    wait = policy(log=log)
    with caplog.at_level(logging.INFO, logger="test.wait"):
        for _ in range(3):
            event, delay = wait.on_run(run_answer("QUEUED_FOR_JUDGE"))
            assert event is None and delay == 2.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "QUEUED_FOR_JUDGE" in warnings[0].getMessage()


def test_transient_errors_back_off_and_honour_retry_after():
    wait = policy(max_consecutive_errors=5)
    delays = [wait.on_error(GipApiError("boom", http_status=503))[1] for _ in range(3)]
    assert delays == [2.0, 4.0, 8.0]
    assert wait.on_error(GipApiError("slow down", http_status=429, retry_after=30))[1] == 30
    wait.on_run(run_answer("RUNNING"))
    assert wait.errors == 0, "a good answer resets the count"


def test_gives_up_after_consecutive_failures():
    wait = policy(max_consecutive_errors=3)
    assert wait.on_error(GipConnectionError("refused"))[0] is None
    assert wait.on_error(TimeoutError())[0] is None
    event, _ = wait.on_error(GipApiError("bad gateway", http_status=502))
    assert event["status"] == "error" and event["reason"] == "gave_up"
    assert "3 status polls in a row failed" in event["message"] and "bad gateway" in event["message"]


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (GipApiError("x", http_status=500), True),
        (GipApiError("x", http_status=502), True),
        (GipApiError("x", http_status=503), True),
        (GipApiError("x", http_status=504), True),
        (GipApiError("x", http_status=429), True),
        (GipApiError("x", http_status=408), True),
        (GipConnectionError("x"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ValueError("not JSON"), True),
        (GipAuthError("x", http_status=401), False),
        (GipAuthError("x", http_status=403), False),
        (GipNotFoundError("x", http_status=404), False),
        (GipApiError("x", http_status=400), False),
        (GipError("connection 'x': host is empty"), False),
        (KeyError("x"), False),
    ],
)
def test_error_classification(exc, transient):
    assert is_transient(exc) is transient


def test_auth_error_ends_at_once():
    event, _ = policy().on_error(GipAuthError("rejected", http_status=401))
    assert event["status"] == "error" and event["reason"] == "auth"
    with pytest.raises(GipAuthError):
        raise_for_event(event)


def test_timeout_event_says_how_long():
    now = time.time()
    wait = policy(started_at=now - 42, deadline=now - 2)
    wait.on_run(run_answer("RUNNING"))
    event = wait.timeout_event(now)
    assert event["status"] == "timeout" and event["waited_seconds"] == pytest.approx(42, abs=0.01)
    assert "timeout of 40 s" in event["message"] and "waited 42 s" in event["message"]
    assert "RUNNING" in event["message"]
    with pytest.raises(GipRunTimeoutError, match="waited 42 s"):
        raise_for_event(event)


def test_sleep_is_clipped_to_the_deadline():
    now = time.time()
    wait = policy(deadline=now + 1.5)
    assert wait.sleep_for(30, now) == pytest.approx(1.5)
    assert wait.sleep_for(30, now + 5) == 0


# --- run() without an emulator: connection problems ---------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conn_json(host: str) -> str:
    return json.dumps({"conn_type": "gip", "host": host, "password": "k", "extra": {"workspace_id": "ws"}})


def test_missing_connection_ends_with_clear_event():
    (event,) = collect(make_trigger(gip_conn_id="gip_does_not_exist"))
    assert event.payload["status"] == "error"
    assert "gip_does_not_exist" in event.payload["message"]


def test_unreachable_api_gives_up_after_n_polls(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GIP_CLOSED", conn_json(f"http://127.0.0.1:{closed_port()}"))
    (event,) = collect(make_trigger(gip_conn_id="gip_closed", poll_interval=0.01))
    assert event.payload["reason"] == "gave_up"
    assert "3 status polls in a row failed" in event.payload["message"]


def test_deadline_beats_error_budget(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GIP_CLOSED", conn_json(f"http://127.0.0.1:{closed_port()}"))
    trigger = make_trigger(
        gip_conn_id="gip_closed", poll_interval=0.2, max_consecutive_errors=1000, end_time=time.time() + 1.0
    )
    (event,) = collect(trigger)
    assert event.payload["status"] == "timeout"


# --- run() against the emulator --------------------------------------------------------------------------

SEED_EXPERIMENT = "0195a8c0-0000-7000-8000-000000000002"
SEED_EVALUATOR = "0195a8c0-0000-7000-8000-000000000003"


@pytest.fixture
def emu(gip_conn):
    gip_conn.set_run_speed(run_seconds=0.3, never_finish=False)
    yield gip_conn
    gip_conn.clear_faults()
    gip_conn.set_run_speed(run_seconds=DEFAULT_RUN_SECONDS, never_finish=False)


def start_run(name: str) -> str:
    with GipHook() as hook:
        return hook.create_experiment_run(
            SEED_EXPERIMENT, {"evaluator_id": SEED_EVALUATOR, "display_name": f"trigger-test {name}"}
        ).id


def seed_trigger(run_id: str, **overrides) -> GipExperimentRunTrigger:
    return make_trigger(experiment_id=SEED_EXPERIMENT, run_id=run_id, **overrides)


def test_run_success(emu):
    (event,) = collect(seed_trigger(start_run("success")))
    payload = event.payload
    assert payload["status"] == "success" and payload["run_status"] == "DONE"
    assert (
        payload["run"]["result_path"] and payload["run"]["aggregated_result"]["total_usage"]["total_tokens"]
    )
    json.dumps(payload)


def test_run_failure_carries_gip_error(emu):
    run_id = start_run("failure")
    emu.force_run_status(run_id, "FAILED", error="judge model quota exceeded")
    (event,) = collect(seed_trigger(run_id))
    assert event.payload["status"] == "failure" and event.payload["run_status"] == "FAILED"
    assert event.payload["error"] == "judge model quota exceeded"
    assert run_id in event.payload["message"] and "quota exceeded" in event.payload["message"]


def test_run_emulated_failure(emu):
    emu.set_faults(run_failure_rate=1.0)
    (event,) = collect(seed_trigger(start_run("failure-rate")))
    assert event.payload["status"] == "failure" and event.payload["error"]


def test_run_timeout(emu):
    emu.set_run_speed(never_finish=True)
    started = time.time()
    (event,) = collect(seed_trigger(start_run("timeout"), end_time=started + 1.0, started_at=started))
    assert event.payload["status"] == "timeout" and event.payload["run_status"] in api.IN_PROGRESS_STATUSES
    assert event.payload["waited_seconds"] >= 1.0


def test_unknown_status_is_waited_on(emu):
    emu.set_run_speed(never_finish=True)
    run_id = start_run("unknown")
    emu.force_run_status(run_id, "JUDGING")

    async def scenario():
        async def later():
            await asyncio.sleep(0.5)
            await asyncio.to_thread(emu.force_run_status, run_id, "DONE")

        helper = asyncio.create_task(later())
        events = [e async for e in seed_trigger(run_id).run()]
        await helper
        return events

    (event,) = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert event.payload["status"] == "success"


def test_polls_reuse_one_connection_beyond_the_default_keepalive(emu):
    """Polls 5.6-8.4 s apart (7 s +-20 %; httpx keeps idle connections 5 s by default) share one TCP
    connection."""
    run = emu.synthetic_run(rows=1, row_bytes=200, display_name="trigger-test keepalive")  # reads no Langfuse
    run_id = run["id"]
    emu.force_run_status(run_id, "RUNNING")
    assert poll_keepalive(6.0) == 16.0 and poll_keepalive(600.0) == MAX_POLL_KEEPALIVE_SECONDS
    assert 7.0 * (1 - POLL_JITTER) > 5.0, "every sleep must outlast httpx's default keep-alive"

    def status_polls() -> int:
        return emu.stats()["requests_by_route"].get(
            "GET /api/workspaces/{ws}/evals/experiments/{exp}/runs/{run}", 0
        )

    polls_before, connections_before = status_polls(), emu.stats()["client_connections"]

    async def scenario():
        async def later():
            # two polls: RUNNING at the first (a random part of an interval after the start), DONE at the next
            while await asyncio.to_thread(status_polls) == polls_before:
                await asyncio.sleep(0.1)
            await asyncio.to_thread(emu.force_run_status, run_id, None)  # its real status: DONE

        helper = asyncio.create_task(later())
        trigger = make_trigger(experiment_id=run["experiment_id"], run_id=run_id, poll_interval=7.0)
        events = [e async for e in trigger.run()]
        await helper
        return events

    (event,) = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert event.payload["status"] == "success" and status_polls() - polls_before == 2
    assert emu.stats()["client_connections"] - connections_before == 1


@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 1.0, "error_statuses": [500, 502, 503, 504]},
        {"rate_limit_rate": 1.0, "retry_after": 0},
        {"drop_rate": 1.0, "drop_after_bytes": 0},
    ],
    ids=["5xx", "429", "dropped"],
)
def test_transient_errors_are_waited_out(emu, faults):
    run_id = start_run("transient")
    before = emu.stats()["faults"]
    emu.set_faults(path_pattern=r"/runs/[^/]+$", max_faults=2, **faults)
    (event,) = collect(seed_trigger(run_id, poll_interval=0.05, max_consecutive_errors=5))
    assert event.payload["status"] == "success"
    after = emu.stats()["faults"]
    assert sum(after.values()) - sum(before.values()) >= 2, "the faults really happened"


def test_read_timeouts_are_waited_out(emu, monkeypatch):
    # A 0.3 s request timeout turns 2 s of latency into read timeouts, until GIP is fast again.
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", emu.conn_json(timeout=0.3))
    run_id = start_run("read-timeout")
    emu.set_faults(path_pattern=r"/runs/[^/]+$", latency_ms=2000)

    async def scenario():
        async def recover():
            await asyncio.sleep(1.0)
            await asyncio.to_thread(emu.clear_faults)

        helper = asyncio.create_task(recover())
        events = [e async for e in seed_trigger(run_id, poll_interval=0.05, max_consecutive_errors=10).run()]
        await helper
        return events

    (event,) = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert event.payload["status"] == "success"


def test_run_gives_up_after_consecutive_failures(emu):
    run_id = start_run("give-up")
    emu.set_faults(error_rate=1.0, path_pattern=r"/runs/[^/]+$")
    (event,) = collect(seed_trigger(run_id, poll_interval=0.01, max_consecutive_errors=3))
    assert event.payload["status"] == "error" and event.payload["reason"] == "gave_up"
    assert "3 status polls in a row failed" in event.payload["message"]


def test_auth_error_ends_immediately(emu, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GIP_BADKEY", emu.conn_json(password="not-the-key"))
    run_id = start_run("auth")
    (event,) = collect(seed_trigger(run_id, gip_conn_id="gip_badkey", max_consecutive_errors=100))
    assert event.payload["status"] == "error" and event.payload["reason"] == "auth"
    assert "not-the-key" not in event.payload["message"]


def test_unknown_run_ends_immediately(emu):
    (event,) = collect(seed_trigger("0195a8c0-ffff-7000-8000-00000000ffff", max_consecutive_errors=100))
    assert event.payload["status"] == "error" and event.payload["reason"] == "error"
    assert "404" in event.payload["message"]


# --- the triggerer's event loop: no imports on it -----------------------------------------------------

# Run in a fresh interpreter holding what a triggerer has loaded before its first GIP trigger. Airflow
# imports the trigger by class path ON the event loop, then runs it there: any module imported on the
# loop thread (without bytecode caches, gip_airflow.api alone is ~50 ms of CPU) blocks every other trigger.
_LOOP_IMPORTS_SCRIPT = """
import asyncio, importlib, json, sys, threading, time
import airflow.triggers.base, airflow.sdk.exceptions, httpx, pydantic

loop_thread = threading.main_thread().name
imported = []  # (module file, thread): every module body importlib runs, however it was imported

def on_audit(event, args):
    if event == "exec" and getattr(args[0], "co_name", "") == "<module>":
        imported.append((args[0].co_filename, threading.current_thread().name))

sys.addaudithook(on_audit)
classpath, kwargs = json.loads(sys.argv[1])
module, name = classpath.rsplit(".", 1)
trigger_class = getattr(importlib.import_module(module), name)
trigger = trigger_class(**kwargs)
at_class_import = sorted({m for m, _ in imported})
imported.clear()

async def main():
    return [e.payload["status"] async for e in trigger.run()]

events = asyncio.run(main())
print(json.dumps({
    "events": events,
    "at_class_import": at_class_import,
    "on_loop": sorted({m for m, thread in imported if thread == loop_thread}),
    "in_threads": sorted({m for m, thread in imported if thread != loop_thread}),
}))
"""


def test_trigger_imports_nothing_heavy_on_the_event_loop(emu):
    """Loading the trigger class pulls in no pydantic models or hook; run() imports them in a worker thread."""
    run_id = start_run("loop-imports")
    emu.wait_for_run(run_id)
    classpath, kwargs = seed_trigger(run_id).serialize()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", _LOOP_IMPORTS_SCRIPT, json.dumps([classpath, kwargs])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["events"] == ["success"], report
    ours = str(REPO / "gip_airflow") + os.sep

    def gip_modules(files: list[str]) -> set[str]:
        return {f.removeprefix(ours) for f in files if f.startswith(ours)}

    assert gip_modules(report["at_class_import"]) <= {
        "__init__.py",
        "triggers/__init__.py",
        "triggers/gip.py",
        "exceptions.py",
    }, report
    assert not gip_modules(report["on_loop"]), report
    assert not [f for f in report["on_loop"] if f"{os.sep}tenacity{os.sep}" in f], report
    assert {"api.py", "hooks/gip.py"} <= gip_modules(report["in_threads"]), report
