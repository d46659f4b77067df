"""Runs: lifecycle, target selection (windows, sampling, limits), templates, metrics, CSV, score sync."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time

import pytest

from gip_airflow.api import RESULT_CSV_COLUMNS, Paths

from .conftest import BOOL_METRIC, CATEGORY_METRIC, NUMERIC_METRIC, PLAN_DATASET, QA_DATASET


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def converter(model: tuple[int, str], content: str = "{item.input}", **params):
    return {
        "model_seq_id": model[0],
        "model_public_id": model[1],
        "model_parameters": {"top_p": 0.5, "temperature": 0.6, "max_tokens": 200, **params},
        "input_prompt_trajectory_template": {
            "messages": [
                {"role": "system", "content": "You are an AI assistant that answers questions"},
                {"role": "user", "content": content},
            ]
        },
    }


def test_lifecycle_and_download(gip):
    gip.emu.set_run_speed(run_seconds=1.0)
    exp, ev = gip.dataset_experiment(), gip.evaluator()
    run = gip.start_run(exp, ev)
    seen = [run["status"]]
    early = gip.http.get(Paths.run_download(gip.ws, exp, run["id"]))
    assert early.status_code == 409 and "DONE" in early.json()["message"]
    while seen[-1] not in ("DONE", "FAILED"):
        time.sleep(0.02)
        status = gip.ok(gip.http.get(Paths.run(gip.ws, exp, run["id"])))["status"]
        if status != seen[-1]:
            seen.append(status)
    assert seen == ["PENDING", "RUNNING", "DONE"]
    response = gip.http.get(Paths.run_download(gip.ws, exp, run["id"]))
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "content-length" not in response.headers  # streamed
    lines = response.content.decode("utf-8").splitlines()
    assert lines[0].split(",") == list(RESULT_CSV_COLUMNS)


def test_dataset_run_excludes_archived_unless_asked(gip):
    items = gip.langfuse_all("/api/public/dataset-items", datasetName=PLAN_DATASET)
    active = [i for i in items if i["status"] == "ACTIVE"]
    ev = gip.evaluator()
    exp = gip.dataset_experiment(PLAN_DATASET)
    run = gip.run_done(exp, ev)
    rows = gip.rows(exp, run["id"])
    assert [r["input_data_from_experiment"] for r in rows] == [
        json.dumps(i["input"], ensure_ascii=False) for i in active
    ]
    assert rows[0]["output_data_from_experiment"] == json.dumps(
        active[0]["expectedOutput"], ensure_ascii=False
    )
    assert rows[0]["input_data_from_experiment_run"] == rows[0]["input_data_from_experiment"]
    with_archived = gip.dataset_experiment(PLAN_DATASET, include_archived_items=True)
    assert len(gip.rows(with_archived, gip.run_done(with_archived, ev)["id"])) == len(items) == 24


def test_trace_window_is_from_inclusive_to_exclusive(gip):
    traces = gip.langfuse_all("/api/public/traces", name="plan-suggestion")
    newer, older = traces[2], traces[9]
    exp = gip.trace_experiment(
        trace_filter_request={
            "name": "plan-suggestion",
            "from_timestamp": ms(older["timestamp"]),
            "to_timestamp": ms(newer["timestamp"]),
        }
    )
    selected = gip.emu.preview_targets(exp)
    assert selected == [t["id"] for t in traces[3:10]]
    run = gip.run_done(exp, gip.evaluator())
    assert gip.emu.run(run["id"])["target_count"] == 7
    assert len(gip.rows(exp, run["id"])) == 7


def test_trace_filters_tags_version_release(gip):
    traces = gip.langfuse_all("/api/public/traces")
    exp = gip.trace_experiment(
        trace_filter_request={"tags": ["prod", "plan"], "version": "v2", "release": "2025.03.1"}
    )
    expected = [
        t["id"]
        for t in traces
        if {"prod", "plan"} <= set(t["tags"]) and t["version"] == "v2" and t["release"] == "2025.03.1"
    ]
    assert expected and gip.emu.preview_targets(exp) == expected


def test_relative_time_range_is_measured_from_the_run_instant(gip):
    traces = gip.langfuse_all("/api/public/traces")
    exp = gip.trace_experiment(trace_filter_request={"relative_time_range": "PT24H"})
    at = ms(traces[20]["timestamp"]) + 1
    expected = [t["id"] for t in traces if at - 86_400_000 <= ms(t["timestamp"]) < at]
    assert gip.emu.preview_targets(exp, at=at) == expected
    now_ids = gip.emu.preview_targets(exp)
    assert now_ids == [t["id"] for t in traces if ms(t["timestamp"]) >= time.time() * 1000 - 86_400_000]
    assert set(now_ids) != set(expected)


def test_sampling_is_deterministic_and_proportional(gip):
    traces = gip.langfuse_all("/api/public/traces")
    half = gip.emu.preview_targets(gip.trace_experiment(sampling_rate=0.5))
    again = gip.emu.preview_targets(gip.trace_experiment(sampling_rate=0.5))
    assert half == again
    assert 0.3 * len(traces) < len(half) < 0.7 * len(traces)
    quarter = gip.emu.preview_targets(gip.trace_experiment(sampling_rate=0.25))
    assert set(quarter) < set(half)
    assert gip.emu.preview_targets(gip.trace_experiment(sampling_rate=0.0)) == []
    limited = gip.emu.preview_targets(gip.trace_experiment(sampling_rate=0.5, max_trace_count=5))
    assert limited == half[:5]


def test_observation_selection(gip):
    observations = gip.langfuse_all("/api/public/observations", name="llm-call")
    newer, older = observations[1], observations[30]
    exp = gip.observation_experiment(
        max_observation_count=10,
        observation_filter_request={
            "name": "llm-call",
            "from_start_time": ms(older["startTime"]),
            "to_start_time": ms(newer["startTime"]),
        },
    )
    assert gip.emu.preview_targets(exp) == [o["id"] for o in observations[2:12]]
    versioned = gip.observation_experiment(
        observation_filter_request={"version": "v3", "relative_time_range": "P7D"}
    )
    now = time.time() * 1000
    everything = gip.langfuse_all("/api/public/observations", version="v3")
    assert gip.emu.preview_targets(versioned) == [
        o["id"] for o in everything if ms(o["startTime"]) >= now - 7 * 86_400_000
    ]


def test_templates_render_nested_fields_and_report_missing_ones(gip):
    exp = gip.dataset_experiment(QA_DATASET)
    ev = gip.evaluator()
    template = "Q: {item.input.0.content}\nlang={item.metadata.lang} {not a placeholder}"
    run = gip.run_done(exp, ev, target_data_converter=converter((21, "openai/gpt-4o"), template))
    rows = gip.rows(exp, run["id"])
    items = [
        i
        for i in gip.langfuse_all("/api/public/dataset-items", datasetName=QA_DATASET)
        if i["status"] == "ACTIVE"
    ]
    assert len(rows) == len(items)
    for item, row in zip(items, rows):
        if item["metadata"] is None:
            assert row["passed"] == "false"
            assert "{item.metadata.lang}" in row["error_message"] and "DatasetItem" in row["error_message"]
            assert row["score"] == ""
        else:
            messages = json.loads(row["input_data_from_experiment_run"])
            assert (
                messages[1]["content"]
                == f"Q: {item['input'][0]['content']}\nlang={item['metadata']['lang']} {{not a placeholder}}"
            )
            assert json.loads(row["output_data_from_experiment_run"])["content"].startswith("[openai/gpt-4o]")
    assert sum(r["passed"] == "false" and "metadata.lang" in r["error_message"] for r in rows) == 2
    # an item without expectedOutput and no converter: nothing to judge
    plain = gip.rows(exp, gip.run_done(exp, ev)["id"])
    assert any(r["passed"] == "false" and "empty" in r["error_message"] for r in plain)


def test_trace_template_fields(gip):
    exp = gip.trace_experiment(max_trace_count=3, trace_filter_request={"name": "translate-ko-en"})
    run = gip.run_done(
        exp,
        gip.evaluator(),
        target_data_converter=converter(
            (7, "anthropic/claude-3-haiku-20240307"), "{item.name}/{item.version}: {item.output.content}"
        ),
    )
    rows = gip.rows(exp, run["id"])
    assert len(rows) == 3 and all(r["passed"] == "true" for r in rows)
    assert json.loads(rows[0]["input_data_from_experiment_run"])[1]["content"].startswith("translate-ko-en/v")


def test_stronger_model_scores_higher(gip):
    exp = gip.dataset_experiment(PLAN_DATASET)
    ev = gip.evaluator(NUMERIC_METRIC)

    def mean_score(model):
        rows = gip.rows(exp, gip.run_done(exp, ev, target_data_converter=converter(model))["id"])
        return statistics.mean(float(r["score"]) for r in rows if r["passed"] == "true")

    opus = mean_score((5, "anthropic/claude-3-opus-20240229"))
    haiku = mean_score((7, "anthropic/claude-3-haiku-20240307"))
    sonnet = mean_score((6, "anthropic/claude-3-sonnet-20240229"))
    print(f"mean numeric score: opus {opus:.3f}, sonnet {sonnet:.3f}, haiku {haiku:.3f}")
    assert opus > sonnet > haiku


@pytest.mark.parametrize(
    ("metric", "check"),
    [
        (CATEGORY_METRIC, lambda s: s in {"bad", "neutral", "good"}),
        (
            {"type": "category", "config": [{"index": 1, "name": "pass"}, {"index": 0, "name": "fail"}]},
            lambda s: s in {"pass", "fail"},
        ),
        (
            {"type": "numeric", "config": {"min": {"value": 1.0}, "max": {"value": 5.0}}},
            lambda s: 1.0 <= float(s) <= 5.0,
        ),
        (BOOL_METRIC, lambda s: s in {"true", "false"}),
    ],
)
def test_every_metric_type(gip, metric, check):
    exp = gip.trace_experiment(max_trace_count=40)
    run = gip.run_done(exp, gip.evaluator(metric))
    rows = gip.rows(exp, run["id"])
    passed = [r for r in rows if r["passed"] == "true"]
    assert len(rows) == 40 and len(passed) >= 35
    assert all(check(r["score"]) for r in passed)
    assert len({r["score"] for r in passed}) > 1  # not a constant judge
    assert all(r["rationale"] and r["error_message"] == "" for r in passed)
    assert any("\n" in r["rationale"] for r in passed)


def test_same_inputs_same_csv_bytes(gip):
    exp = gip.dataset_experiment(PLAN_DATASET)
    ev = gip.evaluator(NUMERIC_METRIC)
    conv = converter((6, "anthropic/claude-3-sonnet-20240229"))
    first = gip.run_done(exp, ev, target_data_converter=conv)
    second = gip.run_done(exp, ev, target_data_converter=conv)
    assert first["id"] != second["id"]
    assert gip.csv_bytes(exp, first["id"]) == gip.csv_bytes(exp, second["id"])
    assert first["aggregated_result"]["total_usage"] == second["aggregated_result"]["total_usage"]
    other_judge = gip.evaluator(NUMERIC_METRIC, model=(30, "google/gemini-1.5-pro"))
    third = gip.run_done(exp, other_judge, target_data_converter=conv)
    assert gip.csv_bytes(exp, third["id"]) != gip.csv_bytes(exp, first["id"])


def scores_named(gip, name):
    return gip.langfuse_all("/api/public/scores", name=name)


def sync(name):
    return {"langfuse_integration_config": {"score_name": name, "sync_score": True}}


def test_score_sync_for_a_dataset_with_source_links(gip):
    exp = gip.dataset_experiment(PLAN_DATASET)
    name = f"sync_dataset_{time.time_ns()}"
    run = gip.run_done(exp, gip.evaluator(CATEGORY_METRIC), metadata=sync(name))
    rows = gip.rows(exp, run["id"])
    scores = scores_named(gip, name)
    passed = [r for r in rows if r["passed"] == "true"]
    assert len(scores) == len(passed) > 0
    assert all(
        s["dataType"] == "CATEGORICAL" and s["stringValue"] in {"bad", "neutral", "good"} for s in scores
    )
    assert {s["comment"] for s in scores} <= {r["rationale"] for r in passed}
    assert sum(1 for s in scores if s["observationId"]) == 2  # items linked to an observation only
    items = {
        i["sourceTraceId"] for i in gip.langfuse_all("/api/public/dataset-items", datasetName=PLAN_DATASET)
    }
    traces = {t["id"]: t for t in gip.langfuse_all("/api/public/traces")}
    assert all(s["traceId"] in traces for s in scores)
    assert {s["traceId"] for s in scores if not s["observationId"]} <= items
    info = gip.emu.run(run["id"])
    assert info["scores_synced"] == len(scores)


def test_score_sync_skips_items_without_source(gip):
    exp = gip.dataset_experiment(QA_DATASET)
    name = f"sync_qa_{time.time_ns()}"
    run = gip.run_done(exp, gip.evaluator(), metadata=sync(name))
    assert scores_named(gip, name) == []
    info = gip.emu.run(run["id"])
    assert info["scores_synced"] == 0 and info["scores_skipped"] == info["target_count"]
    off = f"sync_off_{time.time_ns()}"
    gip.run_done(
        gip.trace_experiment(max_trace_count=3),
        gip.evaluator(),
        metadata={"langfuse_integration_config": {"score_name": off, "sync_score": False}},
    )
    assert scores_named(gip, off) == []


def test_score_sync_for_traces_and_observations(gip):
    name = f"sync_traces_{time.time_ns()}"
    exp = gip.trace_experiment(max_trace_count=10)
    rows = gip.rows(exp, gip.run_done(exp, gip.evaluator(BOOL_METRIC), metadata=sync(name))["id"])
    scores = scores_named(gip, name)
    assert len(scores) == sum(r["passed"] == "true" for r in rows)
    assert {s["dataType"] for s in scores} == {"BOOLEAN"}
    assert {s["value"] for s in scores} <= {0.0, 1.0}
    assert set(gip.emu.preview_targets(exp)) >= {s["traceId"] for s in scores}
    trace = gip.ok(gip.lf.get(f"/api/public/traces/{scores[0]['traceId']}"))
    assert scores[0]["id"] in [s["id"] for s in trace["scores"]]

    name = f"sync_obs_{time.time_ns()}"
    exp = gip.observation_experiment(max_observation_count=5, observation_filter_request={"name": "llm-call"})
    gip.run_done(exp, gip.evaluator(NUMERIC_METRIC), metadata=sync(name))
    scores = scores_named(gip, name)
    assert {s["dataType"] for s in scores} == {"NUMERIC"}
    assert set(gip.emu.preview_targets(exp)) >= {s["observationId"] for s in scores}
    assert all(0.0 <= s["value"] <= 1.0 and s["traceId"] for s in scores)


def test_wrong_langfuse_key_fails_the_run_clearly(gip):
    cred = gip.credential(alias="wrong-key", private_key="sk-lf-not-the-secret")
    exp = gip.trace_experiment(credential=cred)
    run = gip.wait(exp, gip.start_run(exp, gip.evaluator())["id"])
    assert run["status"] == "FAILED"
    error = run["aggregated_result"]["error"]
    assert "401" in error and "wrong-key" in error and "private_key" in error
    assert "sk-lf-not-the-secret" not in error
    assert gip.http.get(Paths.run_download(gip.ws, exp, run["id"])).status_code == 409


def test_missing_dataset_and_unreachable_langfuse_fail_the_run(gip):
    exp = gip.dataset_experiment("no-such-dataset")
    run = gip.wait(exp, gip.start_run(exp, gip.evaluator())["id"])
    assert run["status"] == "FAILED" and "no-such-dataset" in run["aggregated_result"]["error"]
    cred = gip.credential(alias="nowhere", base_url="http://127.0.0.1:9")
    exp = gip.trace_experiment(credential=cred)
    run = gip.wait(exp, gip.start_run(exp, gip.evaluator())["id"])
    assert run["status"] == "FAILED" and "could not reach Langfuse" in run["aggregated_result"]["error"]
