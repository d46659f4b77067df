"""Operator and sensor logic with the hook on ``httpx.MockTransport``: create-or-reuse decisions, the
sensor's poke, the console link, and the helpers behind parse-time validation and reuse."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
from typing import Any

import httpx
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from gip_airflow import api
from gip_airflow.exceptions import GipRunFailedError
from gip_airflow.links import GipExperimentRunLink
from gip_airflow.operators._base import as_dict, to_seconds
from gip_airflow.operators._validation import check_at_parse_time, differences, fingerprint, is_dynamic
from gip_airflow.operators.gip import GipCreateEvaluatorOperator, GipCreateExperimentOperator
from gip_airflow.operators.gip import GipStartExperimentRunOperator as RunOperator
from gip_airflow.sensors.gip import GipExperimentRunSensor
from gip_airflow.triggers.gip import DEFER_GRACE_SECONDS
from tests.unit.test_hook_transport import EXPERIMENT, WS, Recorder, sync_hook


@pytest.fixture
def dag():
    with DAG("unit_ops", schedule=None, start_date=dt.datetime(2025, 1, 1)) as d:
        yield d


class StateStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


class TaskInstance:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def context(store: StateStore | None = None) -> dict[str, Any]:
    return {"task_state_store": store, "ti": TaskInstance()}


TASK_NUMBERS = itertools.count()
OPERATOR_ARGS = {"name": "qa", "experiment_type": "langfuse_dataset", "config": EXPERIMENT["config"]}


def experiment_operator(recorder: Recorder, **kwargs: Any) -> GipCreateExperimentOperator:
    """A create-experiment task whose hook answers from ``recorder`` and whose log pytest captures."""
    op = GipCreateExperimentOperator(
        task_id=f"experiment_{next(TASK_NUMBERS)}", **{**OPERATOR_ARGS, **kwargs}
    )
    op.state_key = "gip_experiment"
    op.__dict__["hook"] = sync_hook(recorder)
    op._cached_logger = logging.getLogger("unit.operator")
    return op


def listing(*experiments: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=list(experiments))


CREATED = httpx.Response(201, json={"id": "exp-new", **EXPERIMENT})


# ---------------------------------------------------------------------------------------------
# Create or reuse
# ---------------------------------------------------------------------------------------------


def test_creates_when_nothing_equivalent_exists_and_remembers_it(dag):
    recorder = Recorder(listing(), CREATED)
    store = StateStore()
    assert experiment_operator(recorder).execute(context(store)) == "exp-new"
    assert recorder.paths == [f"GET {api.Paths.experiments(WS)}", f"POST {api.Paths.experiments(WS)}"]
    assert store.values["gip_experiment"]["id"] == "exp-new"


def test_a_retry_reuses_what_the_first_try_created_without_any_request(dag):
    store = StateStore()
    experiment_operator(Recorder(listing(), CREATED)).execute(context(store))
    retry = Recorder(httpx.Response(500, json={"message": "must not be called"}))
    assert experiment_operator(retry).execute(context(store)) == "exp-new"
    assert retry.requests == []


def test_a_changed_definition_is_not_reused_from_the_state_store(dag):
    store = StateStore()
    experiment_operator(Recorder(listing(), CREATED)).execute(context(store))
    recorder = Recorder(listing(), httpx.Response(201, json={"id": "exp-2"}))
    assert experiment_operator(recorder, description="changed").execute(context(store)) == "exp-2"


def test_a_same_name_same_definition_object_on_gip_is_reused(dag):
    existing = {
        "id": "exp-old",
        **EXPERIMENT,
        "config": {**EXPERIMENT["config"], "include_archived_items": False},
    }
    recorder = Recorder(listing(existing, {"id": "other", "name": "another"}))
    assert experiment_operator(recorder).execute(context(StateStore())) == "exp-old"
    assert [r.method for r in recorder.requests] == ["GET"]


def test_a_same_name_other_definition_object_is_not_reused(dag, caplog):
    different = {"id": "exp-old", **EXPERIMENT, "config": {**EXPERIMENT["config"], "dataset_name": "other"}}
    recorder = Recorder(listing(different), CREATED)
    assert experiment_operator(recorder).execute(context(StateStore())) == "exp-new"
    assert "differs in config.dataset_name" in caplog.text


def test_without_a_list_endpoint_it_creates_and_says_why(dag, caplog):
    recorder = Recorder(httpx.Response(405, json={"message": "no"}), CREATED)
    assert experiment_operator(recorder).execute(context(None)) == "exp-new"
    assert "No lookup of experiments named 'qa' on GIP (GIP answered HTTP 405)" in caplog.text


def test_reuse_existing_false_always_creates(dag):
    recorder = Recorder(CREATED)
    assert experiment_operator(recorder, reuse_existing=False).execute(context(StateStore())) == "exp-new"
    assert [r.method for r in recorder.requests] == ["POST"]


def test_a_bad_rendered_request_fails_without_retries_or_requests(dag):
    recorder = Recorder(CREATED)
    op = GipCreateEvaluatorOperator(
        task_id="evaluator",
        name="{{ params.name }}",
        metric={"type": "bool"},
        evaluation_config="{{ params.config }}",
    )
    op.__dict__["hook"] = sync_hook(recorder)
    op.evaluation_config = {"judge_prompt": "x"}  # as rendered: the judge model ids are missing
    with pytest.raises(AirflowFailException, match=r"evaluation_config\.judge_model_seq_id: required"):
        op.execute(context(StateStore()))
    assert recorder.requests == []


# ---------------------------------------------------------------------------------------------
# Sensor and run operator: one wait factory
# ---------------------------------------------------------------------------------------------


def sensor(recorder: Recorder, **kwargs: Any) -> GipExperimentRunSensor:
    s = GipExperimentRunSensor(task_id="wait", experiment_id="exp-1", run_id="run-1", **kwargs)
    s.__dict__["hook"] = sync_hook(recorder)
    return s


def test_sensor_poke_returns_false_then_the_finished_run(dag):
    recorder = Recorder(
        httpx.Response(200, json={"id": "run-1", "status": "RUNNING"}),
        httpx.Response(200, json={"id": "run-1", "status": "DONE", "result_path": "s3://r.csv"}),
    )
    s = sensor(recorder)
    assert s.poke({}) is False
    done = s.poke({})
    assert done.is_done and done.xcom_value["result_path"] == "s3://r.csv"


def test_sensor_poke_raises_for_a_failed_run(dag):
    recorder = Recorder(
        httpx.Response(200, json={"id": "run-1", "status": "ERROR", "aggregated_result": {"error": "x"}})
    )
    with pytest.raises(GipRunFailedError, match="ended with status ERROR: x"):
        sensor(recorder).poke({})


@pytest.mark.parametrize("task", ["sensor", "operator"])
def test_sensor_and_operator_share_the_status_checks(dag, task):
    kwargs = {"experiment_id": "e", "success_statuses": ["DONE"], "failure_statuses": ["DONE"]}
    with pytest.raises(ValueError, match=r"Task 't': statuses \['DONE'\] are both success and failure"):
        if task == "sensor":
            GipExperimentRunSensor(task_id="t", run_id="r", **kwargs)
        else:
            RunOperator(task_id="t", evaluator_id="v", **kwargs)


def test_deferring_sensor_hands_the_trigger_its_settings(dag):
    s = sensor(
        Recorder(httpx.Response(200, json={"id": "run-1", "status": "RUNNING"})),
        deferrable=True,
        timeout=600,
        poke_interval=15,
        max_consecutive_errors=4,
        gip_conn_id="gip_unit",
    )
    captured: dict[str, Any] = {}
    s.defer = lambda **kwargs: captured.update(kwargs)
    s.execute(context())
    trigger = captured["trigger"]
    assert (trigger.poll_interval, trigger.max_consecutive_errors, trigger.gip_conn_id) == (
        15.0,
        4,
        "gip_unit",
    )
    assert trigger.end_time - trigger.started_at == 600
    assert captured["timeout"] == dt.timedelta(seconds=600 + DEFER_GRACE_SECONDS)


def test_the_console_link_is_computed_once_per_task(dag):
    s = sensor(Recorder())
    s.hook.__dict__["config"] = dataclasses.replace(s.hook.config, console_url="https://c.test")
    ctx = context()
    GipExperimentRunLink.store(s, ctx, "exp-1", "run-1")
    GipExperimentRunLink.store(s, ctx, "exp-1", "run-other")
    assert ctx["ti"].xcoms[GipExperimentRunLink().xcom_key].endswith("/experiments/exp-1/runs/run-1")
    assert s.gip_run_url.endswith("/runs/run-1")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def test_is_dynamic_finds_templates_and_xcom_args_anywhere(dag):
    op = GipCreateExperimentOperator(task_id="x", **OPERATOR_ARGS)
    assert is_dynamic("{{ ds }}") and is_dynamic({"a": ["{% if x %}"]}) and is_dynamic({"k": op.output})
    assert not is_dynamic({"a": [1, "plain", None]}) and not is_dynamic("{ not jinja }")


def test_parse_time_check_skips_only_the_dynamic_parts():
    config = {"integrated_service_credential_id": "{{ ti.xcom_pull('c') }}", "dataset_name": "ok"}
    check_at_parse_time(api.ExperimentCreate, {**EXPERIMENT, "config": config}, "experiment")
    with pytest.raises(api.GipRequestError, match=r"config\.sampling_rate: .*between 0\.0 and 1\.0"):
        check_at_parse_time(
            api.ExperimentCreate,
            {"name": "n", "type": "langfuse_trace", "config": {**config, "sampling_rate": 2}},
            "experiment",
        )


def test_fingerprint_ignores_key_order_and_sees_every_value():
    a = {"name": "x", "config": {"a": 1, "b": [1, 2]}}
    b = json.loads(json.dumps({"config": {"b": [1, 2], "a": 1}, "name": "x"}))
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "config": {"a": 1, "b": [2, 1]}})


def test_differences_name_the_paths():
    ours = {"name": "x", "config": {"f": {"from": 1, "to": None}}, "tags": ["a", "b"]}
    theirs = {"name": "x", "config": {"f": {"from": 2}}, "tags": ["a"], "id": "server-field"}
    assert differences(ours, theirs) == ["config.f.from", "tags"]


def test_typed_models_become_renderable_dicts():
    metric = api.CategoryMetric(
        config=[api.CategoryItem(index=0, name="bad"), api.CategoryItem(index=1, name="ok")]
    )
    assert as_dict(metric) == {
        "type": "category",
        "config": [{"index": 0, "name": "bad"}, {"index": 1, "name": "ok"}],
    }
    assert as_dict({"already": "dict"}) == {"already": "dict"}


def test_durations_must_be_positive():
    assert to_seconds(dt.timedelta(minutes=2), "timeout") == 120.0
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        to_seconds(0, "poll_interval")
