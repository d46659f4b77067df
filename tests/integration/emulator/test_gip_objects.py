"""GIP objects over HTTP: create / list / get, 404s, 422s that name the field, pagination."""

from __future__ import annotations

import pytest

from gip_airflow.api import Paths

from .conftest import BOOL_METRIC, NUMERIC_METRIC, PLAN_DATASET


def test_models_list(gip):
    answer = gip.ok(gip.http.get(Paths.models(gip.ws)))
    by_seq = {m["seq_id"]: m["public_id"] for m in answer["data"]}
    assert by_seq[19] == "openai/gpt-4"
    assert by_seq[6] == "anthropic/claude-3-sonnet-20240229"
    assert by_seq[5] == "anthropic/claude-3-opus-20240229"
    assert "quality" not in answer["data"][0]
    assert answer["meta"]["total_items"] == len(answer["data"])


def test_credential_experiment_evaluator_roundtrip(gip):
    cred = gip.credential(alias="roundtrip")
    creds = gip.ok(gip.http.get(Paths.credentials(gip.ws)))["data"]
    mine = next(c for c in creds if c["id"] == cred)
    assert mine["alias"] == "roundtrip" and "private_key" not in mine
    assert gip.emu.langfuse_secret_key not in str(creds)

    exp = gip.trace_experiment(
        credential=cred,
        sampling_rate=0.5,
        max_trace_count=5,
        trace_filter_request={"name": "plan-suggestion"},
    )
    got = gip.ok(gip.http.get(Paths.experiment(gip.ws, exp)))
    assert got["type"] == "langfuse_trace"
    assert got["config"]["trace_filter_request"]["name"] == "plan-suggestion"
    assert got["config"]["sampling_rate"] == 0.5
    assert got["workspace_id"] == gip.ws

    ev = gip.evaluator(NUMERIC_METRIC)
    got = gip.ok(gip.http.get(Paths.evaluator(gip.ws, ev)))
    assert got["metric"] == NUMERIC_METRIC
    assert got["evaluation_config"]["judge_model_public_id"] == "openai/gpt-4"
    assert got["workspace_id"] == gip.ws
    ids = [e["id"] for e in gip.ok(gip.http.get(Paths.evaluators(gip.ws), params={"limit": 100}))["data"]]
    assert ev in ids


def test_unknown_ids_are_404(gip):
    exp = gip.dataset_experiment()
    ev = gip.evaluator()
    missing = "01900000-0000-7000-8000-000000000000"
    for path in (
        Paths.experiment(gip.ws, missing),
        Paths.evaluator(gip.ws, missing),
        Paths.runs(gip.ws, missing),
        Paths.run(gip.ws, exp, missing),
        Paths.run_download(gip.ws, exp, missing),
        Paths.auto_evaluation(gip.ws, exp, missing),
    ):
        answer = gip.http.get(path)
        assert answer.status_code == 404, path
        assert missing in answer.json()["message"]
    answer = gip.http.post(Paths.runs(gip.ws, exp), json={"evaluator_id": missing, "display_name": "x"})
    assert answer.status_code == 404 and "evaluator_id" in answer.json()["message"]
    body = {
        "name": "x",
        "type": "langfuse_dataset",
        "config": {"integrated_service_credential_id": missing, "dataset_name": "d"},
    }
    answer = gip.http.post(Paths.experiments(gip.ws), json=body)
    assert answer.status_code == 404 and "integrated_service_credential_id" in answer.json()["message"]
    # A run of another experiment is not found under this one.
    run = gip.start_run(exp, ev)
    other = gip.dataset_experiment()
    assert gip.http.get(Paths.run(gip.ws, other, run["id"])).status_code == 404
    assert gip.http.get("/api/workspaces/x/nothing-here").status_code in (401, 404)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {
                "name": "x",
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": "c", "dataset_name": "plan suggestion v3"},
            },
            ["config.dataset_name", "whitespace"],
        ),
        (
            {
                "name": "x",
                "type": "langfuse_trace",
                "config": {"integrated_service_credential_id": "c", "sampling_rate": 1.5},
            },
            ["config.sampling_rate"],
        ),
        (
            {
                "name": "x",
                "type": "langfuse_trace",
                "config": {
                    "integrated_service_credential_id": "c",
                    "trace_filter_request": {"from_timestamp": 2000, "to_timestamp": 1000},
                },
            },
            ["from_timestamp", "to_timestamp"],
        ),
        (
            {
                "name": "x",
                "type": "langfuse_observation",
                "config": {
                    "integrated_service_credential_id": "c",
                    "observation_filter_request": {"relative_time_range": "12 hours"},
                },
            },
            ["relative_time_range"],
        ),
        ({"name": "x", "type": "langfuse_datasets", "config": {}}, ["type"]),
        (
            {
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": "c", "dataset_name": "d"},
            },
            ["name", "missing"],
        ),
        (
            {
                "name": "x",
                "type": "langfuse_dataset",
                "config": {
                    "integrated_service_credential_id": "c",
                    "dataset_name": "d",
                    "include_archived": True,
                },
            },
            ["config.include_archived", "unknown field"],
        ),
    ],
)
def test_invalid_experiment_is_422_naming_the_field(gip, body, fields):
    answer = gip.http.post(Paths.experiments(gip.ws), json=body)
    assert answer.status_code == 422
    message = answer.json()["message"]
    for field in fields:
        assert field in message
    assert answer.json()["detail"]


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"metric": {"type": "stars", "config": None}}, ["metric", "stars"]),
        (
            {"metric": {"type": "numeric", "config": {"min": {"value": 1.0}, "max": {"value": 0.0}}}},
            ["metric", "min"],
        ),
        ({"metric": {"type": "category", "config": []}}, ["metric"]),
        (
            {
                "evaluation_config": {
                    "judge_model_seq_id": 19,
                    "judge_model_public_id": "openai/gpt-4o",
                    "judge_prompt": "p",
                }
            },
            ["judge_model_public_id", "openai/gpt-4"],
        ),
        (
            {
                "evaluation_config": {
                    "judge_model_seq_id": 999,
                    "judge_model_public_id": "x/y",
                    "judge_prompt": "p",
                }
            },
            ["judge_model_seq_id"],
        ),
        (
            {"evaluation_config": {"judge_model_seq_id": 19, "judge_model_public_id": "openai/gpt-4"}},
            ["evaluation_config.judge_prompt"],
        ),
    ],
)
def test_invalid_evaluator_is_422_naming_the_field(gip, change, fields):
    body = {
        "name": "bad",
        "metric": BOOL_METRIC,
        "evaluation_config": {
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_prompt": "p",
        },
        **change,
    }
    answer = gip.http.post(Paths.evaluators(gip.ws), json=body)
    assert answer.status_code == 422, answer.text
    for field in fields:
        assert field in answer.json()["message"]


def test_invalid_run_and_body_errors(gip):
    exp = gip.dataset_experiment()
    ev = gip.evaluator()
    answer = gip.http.post(Paths.runs(gip.ws, exp), json={"evaluator_id": ev})
    assert answer.status_code == 422 and "display_name" in answer.json()["message"]
    converter = {
        "model_seq_id": 6,
        "model_public_id": "anthropic/claude-3-opus-20240229",
        "input_prompt_trajectory_template": {"messages": [{"role": "user", "content": "{item.input}"}]},
    }
    answer = gip.http.post(
        Paths.runs(gip.ws, exp),
        json={"evaluator_id": ev, "display_name": "x", "target_data_converter": converter},
    )
    assert answer.status_code == 422 and "target_data_converter.model_public_id" in answer.json()["message"]
    answer = gip.http.post(
        Paths.runs(gip.ws, exp), content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422 and "JSON" in answer.json()["message"]
    answer = gip.http.post(
        Paths.runs(gip.ws, exp),
        json={
            "evaluator_id": ev,
            "display_name": "x",
            "metadata": {"langfuse_integration_config": {"sync_score": True}},
        },
    )
    assert (
        answer.status_code == 422
        and "metadata.langfuse_integration_config.score_name" in answer.json()["message"]
    )


def test_pagination_meta_and_newest_first(gip):
    exp = gip.dataset_experiment()
    ev = gip.evaluator()
    gip.emu.set_run_speed(never_finish=True)
    run_ids = [gip.start_run(exp, ev, display_name=f"run {i}")["id"] for i in range(5)]
    first = gip.ok(gip.http.get(Paths.runs(gip.ws, exp), params={"page": 1, "limit": 2}))
    assert first["meta"] == {"page": 1, "limit": 2, "total_items": 5, "total_pages": 3}
    pages = [first] + [
        gip.ok(gip.http.get(Paths.runs(gip.ws, exp), params={"page": p, "limit": 2})) for p in (2, 3, 4)
    ]
    listed = [r["id"] for page in pages for r in page["data"]]
    assert listed == list(reversed(run_ids))
    assert pages[-1]["data"] == []
    names = [r["display_name"] for r in pages[0]["data"]]
    assert names == ["run 4", "run 3"]
    for params, field in (({"page": 0}, "page"), ({"limit": 101}, "limit"), ({"limit": "x"}, "limit")):
        answer = gip.http.get(Paths.runs(gip.ws, exp), params=params)
        assert answer.status_code == 422 and field in answer.json()["message"]
    running = gip.ok(gip.http.get(Paths.runs(gip.ws, exp), params={"status": "DONE"}))
    assert running["meta"]["total_items"] == 0


def test_run_fields(gip):
    exp = gip.dataset_experiment()
    ev = gip.evaluator()
    run = gip.start_run(exp, ev, display_name="fields")
    assert run["status"] == "PENDING"
    assert run["result_path"] is None
    for key in (
        "id",
        "status",
        "aggregated_result",
        "result_path",
        "display_name",
        "evaluator_id",
        "experiment_id",
        "created_at",
    ):
        assert key in run
    assert run["aggregated_result"]["error"] is None
    done = gip.wait(exp, run["id"])
    assert done["result_path"] == f"workspaces/{gip.ws}/experiment_runs/{run['id']}.csv"
    usage = done["aggregated_result"]["total_usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert "prompt_tokens_details" in usage and "completion_tokens_details" in usage
    assert run["id"][14] == "7"  # UUIDv7-like


def test_auto_evaluation_crud(gip):
    exp = gip.dataset_experiment(PLAN_DATASET)
    ev = gip.evaluator()
    path = Paths.auto_evaluations(gip.ws, exp)
    body = {
        "evaluator_id": ev,
        "enabled": True,
        "name": "nightly",
        "schedule": "0 23 * * *",
        "timezone": "Asia/Seoul",
    }
    created = gip.ok(gip.http.post(path, json=body))
    assert created["experiment_id"] == exp and created["schedule"] == "0 23 * * *"
    one = Paths.auto_evaluation(gip.ws, exp, created["id"])
    assert gip.ok(gip.http.get(one))["name"] == "nightly"
    assert [c["id"] for c in gip.ok(gip.http.get(path))["data"]] == [created["id"]]
    patched = gip.ok(gip.http.patch(one, json={"enabled": False}))
    assert patched["enabled"] is False and patched["schedule"] == "0 23 * * *"
    bad = gip.http.patch(one, json={"schedule": "61 * * * *"})
    assert bad.status_code == 422 and "schedule" in bad.json()["message"]
    bad = gip.http.patch(one, json={"timezone": "Mars/Olympus"})
    assert bad.status_code == 422 and "timezone" in bad.json()["message"]
    bad = gip.http.post(path, json={**body, "schedule": "every day"})
    assert bad.status_code == 422 and "schedule" in bad.json()["message"]
    assert gip.http.delete(one).status_code == 204
    assert gip.http.get(one).status_code == 404
