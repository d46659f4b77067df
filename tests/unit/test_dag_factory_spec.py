"""The DAG factory's spec: validation that names the entry and field, and the DAGs a spec builds."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from gip_airflow import dag_factory
from gip_airflow.dag_factory import SpecError, build_dag, load_spec, parse_spec

TRACE_EXPERIMENT = {
    "name": "chat quality",
    "type": "langfuse_trace",
    "config": {"integrated_service_credential_id": "cred-1", "trace_filter_request": {"tags": ["prod"]}},
}


def entry(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dag_id": "gip_chat_quality",
        "schedule": "0 9 * * *",
        "timezone": "Asia/Seoul",
        "window": "PT24H",
        "evaluator_id": "ev-1",
        "experiment": TRACE_EXPERIMENT,
        "run_name": "chat quality daily",
    }
    spec.update(overrides)
    return spec


def test_a_spec_with_a_window_builds_create_run_and_load_tasks():
    (spec,) = parse_spec(
        {"version": 1, "dags": [entry(warehouse_conn_id="wh", warehouse_table="gip.results")]}
    )
    dag = build_dag(spec)
    assert [t.task_id for t in dag.topological_sort()] == [
        dag_factory.WINDOW_TASK_ID,
        dag_factory.RUN_TASK_ID,
        dag_factory.LOAD_TASK_ID,
    ]
    create = dag.get_task(dag_factory.WINDOW_TASK_ID)
    assert create.window == "data_interval" and create.window_fallback == dt.timedelta(hours=24)
    assert create.name.endswith("[{{ data_interval_start }}, {{ data_interval_end }})")
    run = dag.get_task(dag_factory.RUN_TASK_ID)
    assert run.deferrable and run.display_name == "chat quality daily / {{ run_id }}"
    assert dag.get_task(dag_factory.LOAD_TASK_ID).table == "gip.results"


def test_a_fixed_experiment_needs_no_create_task():
    dag = build_dag(entry(experiment=None, experiment_id="exp-1", window=None))
    assert [t.task_id for t in dag.tasks] == [dag_factory.RUN_TASK_ID]
    assert dag.get_task(dag_factory.RUN_TASK_ID).experiment_id == "exp-1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timezone": "Seoul"}, "timezone: 'Seoul' is not an IANA time zone name"),
        ({"window": "24h"}, "window: '24h' is not an ISO-8601 duration"),
        ({"experiment_id": "exp-1"}, "exactly one of experiment_id"),
        ({"start_date": "2025-03-18T14:00:00"}, "start_date needs a UTC offset"),
        ({"catchup": True}, "catchup needs a start_date"),
        ({"warehouse_table": "results; drop"}, r"is not a plain \[schema.\]table name"),
        ({"warehouse_table": "results\n"}, r"is not a plain \[schema.\]table name"),
        ({"warehouse_table": "select"}, r"is an SQL reserved word"),
        ({"unknown_key": 1}, "unknown_key: unknown field"),
        (
            {"experiment": {**TRACE_EXPERIMENT, "type": "langfuse_dataset"}},
            r"config\.dataset_name: required field is missing",
        ),
        (
            {
                "experiment": {
                    **TRACE_EXPERIMENT,
                    "config": {
                        **TRACE_EXPERIMENT["config"],
                        "trace_filter_request": {"relative_time_range": "PT1H"},
                    },
                }
            },
            "still has relative_time_range",
        ),
    ],
)
def test_bad_entries_name_the_entry_and_the_field(overrides, message):
    with pytest.raises(SpecError, match=rf"^Invalid entry gip_chat_quality of dags\.json: .*{message}"):
        parse_spec([entry(**overrides)], "dags.json")


def test_a_bad_dag_id_is_named():
    with pytest.raises(
        SpecError, match=r"^Invalid entry bad id! of spec: dag_id: 'bad id!' is not a valid DAG id"
    ):
        parse_spec([entry(dag_id="bad id!")])


def test_duplicate_ids_and_unknown_versions_are_refused():
    with pytest.raises(SpecError, match="appears twice"):
        parse_spec([entry(), entry()])
    with pytest.raises(SpecError, match="spec version 2 is not supported"):
        parse_spec({"version": 2, "dags": []})


def test_a_bad_cron_is_reported_when_the_timetable_is_built():
    (spec,) = parse_spec([entry(schedule="0 25 * * *")])
    with pytest.raises(SpecError, match="schedule '0 25 \\* \\* \\*' is not a valid cron"):
        spec.timetable()


def test_spec_files_missing_empty_or_broken(tmp_path):
    assert load_spec(tmp_path / "absent.json") == []
    broken = tmp_path / "dags.json"
    broken.write_text("{not json")
    with pytest.raises(SpecError, match=r"dags\.json: not valid JSON"):
        load_spec(broken)
    broken.write_text(json.dumps([entry()]))
    assert [s.dag_id for s in load_spec(broken)] == ["gip_chat_quality"]
