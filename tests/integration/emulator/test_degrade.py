"""The control that makes a judge regress: extra failures and shifted scores, by model and instant."""

from __future__ import annotations

import statistics

import httpx
import pytest

from gip_airflow_emulator.defaults import CONTROL_PREFIX

from .conftest import NUMERIC_METRIC, QA_DATASET


@pytest.fixture
def clean(gip):
    gip.emu.clear_degradations()
    yield gip
    gip.emu.clear_degradations()


def summary(gip, exp, run_id):
    rows = gip.rows(exp, run_id)
    passed = [r for r in rows if r["passed"] == "true"]
    return len(passed) / len(rows), statistics.mean(float(r["score"]) for r in passed)


def test_degrade_one_judge_model_from_now(clean):
    gip = clean
    exp = gip.dataset_experiment(QA_DATASET)
    ev = gip.evaluator(metric=NUMERIC_METRIC)
    before = summary(gip, exp, gip.run_done(exp, ev)["id"])
    # another judge model: no effect on this evaluator's runs
    gip.emu.degrade(model="someone/else", fail_rate=0.5)
    assert summary(gip, exp, gip.run_done(exp, ev)["id"]) == before
    gip.emu.clear_degradations()
    gip.emu.degrade(model="openai/gpt-4", fail_rate=0.3, score_shift=-0.2)
    after = summary(gip, exp, gip.run_done(exp, ev)["id"])
    assert after[0] < before[0] - 0.15  # ~30 % more items fail
    assert after[1] < before[1] - 0.1  # scores shifted down
    gip.emu.clear_degradations()
    assert summary(gip, exp, gip.run_done(exp, ev)["id"]) == before  # deterministic again


def test_degrade_from_a_later_instant_and_validation(clean):
    gip = clean
    exp = gip.dataset_experiment(QA_DATASET)
    ev = gip.evaluator(metric=NUMERIC_METRIC)
    before = summary(gip, exp, gip.run_done(exp, ev)["id"])
    gip.emu.degrade(fail_rate=1.0, start="now+PT1H")  # not yet in force
    assert summary(gip, exp, gip.run_done(exp, ev)["id"]) == before
    gip.emu.degrade(fail_rate=1.0, start="now-PT1H", until="now-PT1M")  # already over
    assert summary(gip, exp, gip.run_done(exp, ev)["id"]) == before
    with httpx.Client(base_url=gip.emu.base_url) as http:
        bad = http.post(CONTROL_PREFIX + "/degrade", json={"model": "x"})
        assert bad.status_code == 422 and "fail_rate" in bad.text
        bad = http.post(CONTROL_PREFIX + "/degrade", json={"fail_rate": 2})
        assert bad.status_code == 422
        listed = http.get(CONTROL_PREFIX + "/degrade").json()["data"]
        assert len(listed) == 2 and listed[1]["until_ms"] > listed[1]["from_ms"]


def test_add_traces_for_bigger_windows(gip):
    before = gip.emu.info()["seed"]["traces"]
    added = gip.emu.add_traces(per_day=50, days=3, name="customer-support")
    try:
        assert added["added"] == 150 and added["traces"] == before + 150
        day = gip.langfuse_all(
            "/api/public/traces", name="customer-support", fromTimestamp=_iso_ago(hours=24)
        )
        assert len(day) >= 50
        outputs = {str(t["output"]) for t in day}
        assert len(outputs) == len(day)  # distinct outputs: the judge sees distinct items
    finally:
        gip.emu.remove_added_traces()
    assert gip.emu.info()["seed"]["traces"] == before


def _iso_ago(hours: int) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
