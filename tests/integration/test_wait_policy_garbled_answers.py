"""A garbled (non-JSON) 200 during a wait is waited out in every mode (issue 18, item 7)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gip_airflow.exceptions import GipApiError
from gip_airflow.hooks.gip import GipAsyncHook
from gip_airflow.sensors.gip import GipExperimentRunSensor
from gip_airflow.triggers.gip import GipExperimentRunTrigger, RunWait, wait_in_worker
from tests.integration.hostile_http import DONE, HostileServer, Reply, Seen, gip_conn, hook_for

# -- item 7: one wait policy for a garbled 200 in every mode ------------------------------------------


def garbled_then_done():
    answers = iter([Reply(200, "<html>gateway warming up</html>", {"Content-Type": "text/html"})])

    def route(seen: Seen) -> Reply:
        return next(answers, Reply(200, DONE))

    return route


def _wait() -> RunWait:
    return RunWait(experiment_id="exp-1", run_id="run-1", deadline=1e12, poll_interval=0.05, jitter=0)


def test_garbled_200_is_waited_out_in_the_worker(monkeypatch):
    with HostileServer(garbled_then_done()) as server, hook_for(monkeypatch, server) as hook:
        event = wait_in_worker(hook, _wait())
    assert event["status"] == "success", event


def test_garbled_200_is_waited_out_by_a_poking_sensor(monkeypatch):
    with HostileServer(garbled_then_done()) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server))
        sensor = GipExperimentRunSensor(
            task_id="wait", experiment_id="exp-1", run_id="run-1", gip_conn_id="gip_hostile", poke_interval=1
        )
        assert sensor.poke({}) is False  # the garbled answer: poke again, do not fail
        done = sensor.poke({})
        sensor.hook.close()
    assert done and done.xcom_value["status"] == "DONE"


def test_garbled_200_is_waited_out_by_the_trigger(monkeypatch):
    with HostileServer(garbled_then_done()) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server))
        trigger = GipExperimentRunTrigger(
            experiment_id="exp-1",
            run_id="run-1",
            end_time=1e12,
            gip_conn_id="gip_hostile",
            poll_interval=0.05,
        )

        async def first():
            async for event in trigger.run():
                return event

        event = asyncio.run(asyncio.wait_for(first(), 30))
    assert event.payload["status"] == "success", event.payload


def test_garbled_200_raises_the_same_error_from_both_hooks(monkeypatch):
    garbled = Reply(200, "<html>proxy</html>", {"Content-Type": "text/html"})
    with HostileServer(lambda seen: garbled) as server:
        with hook_for(monkeypatch, server) as hook, pytest.raises(GipApiError) as sync_info:
            hook.get_experiment_run("exp-1", "run-1")

        async def read():
            async with await GipAsyncHook.from_conn_id("gip_hostile", max_retries=0) as ahook:
                await ahook.get_experiment_run("exp-1", "run-1")

        with pytest.raises(GipApiError) as async_info:
            asyncio.run(read())
    assert type(sync_info.value) is type(async_info.value)
    assert "non-JSON" in str(sync_info.value) and "non-JSON" in str(async_info.value)
    _ = json  # keep the import for readers of the CSV helper
