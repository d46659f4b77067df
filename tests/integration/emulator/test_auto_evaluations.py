"""Auto evaluation configs: cron firing in a time zone, scheduler ticks, runs they create."""

from __future__ import annotations

import datetime as dt
import time

from gip_airflow.api import Paths

from .conftest import PLAN_DATASET


def create_config(gip, exp, ev, **overrides):
    body = {
        "evaluator_id": ev,
        "enabled": True,
        "name": "auto",
        "schedule": "*/30 * * * *",
        "timezone": "Etc/UTC",
        **overrides,
    }
    return gip.ok(gip.http.post(Paths.auto_evaluations(gip.ws, exp), json=body))


def test_firing_instants_honour_the_time_zone(gip):
    firings = gip.emu.schedule_firings(
        "0 23 * * *", "Asia/Seoul", "2025-03-01T00:00:00Z", "2025-03-04T00:00:00Z"
    )
    assert firings == ["2025-03-01T14:00:00.000Z", "2025-03-02T14:00:00.000Z", "2025-03-03T14:00:00.000Z"]
    # Europe/London moves to summer time on 2025-03-30: 09:00 local is 09:00Z before, 08:00Z after.
    london = gip.emu.schedule_firings(
        "0 9 * * *", "Europe/London", "2025-03-29T00:00:00Z", "2025-04-01T00:00:00Z"
    )
    assert london == ["2025-03-29T09:00:00.000Z", "2025-03-30T08:00:00.000Z", "2025-03-31T08:00:00.000Z"]
    exp, ev = gip.dataset_experiment(PLAN_DATASET), gip.evaluator()
    config = create_config(gip, exp, ev, schedule="0 23 * * *", timezone="Asia/Seoul")
    assert gip.emu.firings(config["id"], "2025-03-01T14:00:00Z", "2025-03-02T14:00:00Z") == [
        "2025-03-01T14:00:00.000Z"
    ]


def test_scheduler_tick_creates_runs_at_each_firing(gip):
    exp, ev = gip.dataset_experiment(PLAN_DATASET), gip.evaluator()
    meta = {"langfuse_integration_config": {"score_name": "auto_eval_score", "sync_score": False}}
    config = create_config(gip, exp, ev, name="every half hour", metadata=meta)
    created_ms = int(
        dt.datetime.fromisoformat(config["created_at"].replace("Z", "+00:00")).timestamp() * 1000
    )
    until = created_ms + 2 * 3600 * 1000 + 1
    expected = gip.emu.firings(config["id"], created_ms + 1, until + 1)
    assert len(expected) == 4
    runs = gip.emu.scheduler_tick(until)
    mine = [r for r in runs if r["auto_evaluation_id"] == config["id"]]
    assert sorted(r["executes_at"] for r in mine) == expected
    assert all(r["display_name"].startswith("every half hour @ ") for r in mine)
    assert all(r["metadata"] == meta and r["experiment_id"] == exp for r in mine)
    assert gip.emu.scheduler_tick(until) == []  # already processed
    assert gip.emu.scheduler_tick(created_ms) == []  # ticks never go back
    for run in mine:
        assert gip.wait(exp, run["id"])["status"] == "DONE"
    listed = gip.ok(gip.http.get(Paths.runs(gip.ws, exp)))["data"]
    assert {r["id"] for r in mine} <= {r["id"] for r in listed}
    assert gip.emu.stats()["auto_evaluation_firings"] >= 4


def test_the_background_loop_fires_due_configs(gip):
    exp, ev = gip.dataset_experiment(PLAN_DATASET), gip.evaluator()
    config = create_config(gip, exp, ev, schedule="* * * * *", name="every minute")
    gip.emu.rewind_schedules(60, config_id=config["id"])  # exactly one minute boundary is now due
    deadline = time.monotonic() + 20
    while not (
        mine := [r for r in gip.emu.runs(experiment_id=exp) if r["auto_evaluation_id"] == config["id"]]
    ):
        assert time.monotonic() < deadline, "the scheduler loop did not fire"
        time.sleep(0.1)
    assert len(mine) == 1 and mine[0]["executes_at"].endswith(":00.000Z")
    assert gip.http.delete(Paths.auto_evaluation(gip.ws, exp, config["id"])).status_code == 204


def test_disabled_configs_do_not_fire(gip):
    exp, ev = gip.dataset_experiment(PLAN_DATASET), gip.evaluator()
    off = create_config(gip, exp, ev, enabled=False)
    on = create_config(gip, exp, ev)
    gip.ok(gip.http.patch(Paths.auto_evaluation(gip.ws, exp, on["id"]), json={"enabled": False}))
    assert [
        r for r in gip.emu.scheduler_tick("now+PT3H") if r["auto_evaluation_id"] in (off["id"], on["id"])
    ] == []


def test_relative_window_is_taken_at_the_firing_instant(gip):
    exp = gip.trace_experiment(trace_filter_request={"relative_time_range": "PT12H"})
    ev = gip.evaluator()
    config = create_config(gip, exp, ev, schedule="0 * * * *")
    runs = [r for r in gip.emu.scheduler_tick("now+PT1H") if r["auto_evaluation_id"] == config["id"]]
    assert len(runs) == 1
    run = gip.wait(exp, runs[0]["id"])
    assert run["status"] == "DONE"
    at = gip.emu.run(run["id"])["executes_at"]
    expected = gip.emu.preview_targets(exp, at=at)
    assert gip.emu.run(run["id"])["target_count"] == len(expected) > 0
