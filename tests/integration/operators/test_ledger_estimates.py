"""Cost estimates before a run, against what the run then uses (``dag.test()``, emulator, SQLite ledger).

The estimate counts the targets through the emulator's Langfuse API and takes tokens per item from the
ledger's history of the same evaluator: the first task of each DAG makes that history on another window
(or dataset version), the second is estimated and then run.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from airflow.sdk import DAG

from gip_airflow.hooks.gip import GipHook
from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator
from tests.integration.operators.conftest import BOOL_METRIC, EVALUATION_CONFIG
from tests.integration.operators.helpers import run_dag, runs_named, ti_states, unique_dag_id, xcom

START = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
DAY_MS = 86_400_000


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )


@pytest.fixture
def gip(gip_env):
    with GipHook() as hook:
        cred = hook.create_langfuse_credential(
            {
                "alias": "estimates",
                "base_url": gip_env.base_url,
                "public_key": gip_env.langfuse_public_key,
                "private_key": gip_env.langfuse_secret_key,
            }
        )
        evaluator = hook.create_evaluator(
            {
                "name": unique_dag_id("est-judge"),
                "metric": BOOL_METRIC,
                "evaluation_config": EVALUATION_CONFIG,
            }
        )

        def experiment(kind, **config):
            return hook.create_experiment(
                {
                    "name": unique_dag_id("est-exp"),
                    "type": kind,
                    "config": {"integrated_service_credential_id": cred.id, **config},
                }
            ).id

        yield experiment, evaluator.id


def windows():
    """Two halves of the emulator's 14 days of traces: history on the first, estimate on the second."""
    now = int(time.time() * 1000)
    return (now - 15 * DAY_MS, now - 7 * DAY_MS), (now - 7 * DAY_MS, now + DAY_MS)


def experiments_for(kind, experiment, gip_env):
    (a0, a1), (b0, b1) = windows()
    if kind == "trace":
        make = lambda s, e: experiment(  # noqa: E731
            "langfuse_trace", trace_filter_request={"from_timestamp": s, "to_timestamp": e}
        )
        return make(a0, a1), make(b0, b1)
    if kind == "observation":
        make = lambda s, e: experiment(  # noqa: E731
            "langfuse_observation",
            observation_filter_request={"name": "llm-call", "from_start_time": s, "to_start_time": e},
        )
        return make(a0, a1), make(b0, b1)
    names = unique_dag_id("est-ds-a"), unique_dag_id("est-ds-b")
    gip_env.create_dataset(names[0], 60)
    gip_env.create_dataset(names[1], 150)
    return tuple(experiment("langfuse_dataset", dataset_name=n) for n in names)


def estimate_dag(dag_id, first, second, evaluator_id, load=False, **second_kwargs):
    common = {
        "evaluator_id": evaluator_id,
        "ledger_conn_id": "warehouse",
        "langfuse_conn_id": "langfuse_default",
        "poll_interval": 0.2,
        "timeout": 60,
    }
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        history = GipStartExperimentRunOperator(task_id="history", experiment_id=first, **common)
        estimated = GipStartExperimentRunOperator(
            task_id="estimated", experiment_id=second, **common, **second_kwargs
        )
        history >> estimated
        if load:  # as the docs show it: the experiment the DAG asked for, the ledger beside the results
            GipToSqlOperator(
                task_id="load",
                experiment_id=second,
                run_id=estimated.output,
                conn_id="warehouse",
                table="results",
                ledger_conn_id="warehouse",
            )
    return dag


@pytest.mark.parametrize("kind", ["trace", "observation", "dataset"])
def test_estimate_is_within_ten_percent_of_actual_tokens(gip_env, warehouse, gip, kind):
    experiment, evaluator_id = gip
    first, second = experiments_for(kind, experiment, gip_env)
    dag_run = run_dag(estimate_dag(unique_dag_id(f"estimate_{kind}"), first, second, evaluator_id))
    assert dag_run.state == "success", ti_states(dag_run)

    cold = xcom(dag_run, "history", key="estimate")
    estimate = xcom(dag_run, "estimated", key="estimate")
    actual = xcom(dag_run, "estimated", key="cost")
    assert cold["tokens_source"] == "default" and estimate["tokens_source"] == "history"
    assert estimate["matching_targets"] > 0
    error = estimate["total_tokens"] / actual["total_tokens"] - 1
    print(
        f"\n[measure] {kind}: {estimate['matching_targets']} targets, estimate {estimate['total_tokens']} "
        f"tokens, actual {actual['total_tokens']} ({error:+.1%}); cost estimate ${estimate['cost']:.4f}, "
        f"actual ${actual['cost']:.4f}"
    )
    assert abs(error) <= 0.10


def test_downsample_lowers_the_sampling_rate_so_the_run_fits(gip_env, warehouse, gip):
    experiment, evaluator_id = gip
    (a0, a1), (_, b1) = windows()
    history = experiment("langfuse_trace", trace_filter_request={"from_timestamp": a0, "to_timestamp": a1})
    everything = experiment("langfuse_trace", trace_filter_request={"from_timestamp": a0, "to_timestamp": b1})
    dag_id = unique_dag_id("downsample")
    max_cost = 0.3  # about a fifth of the whole window's cost
    dag_run = run_dag(
        estimate_dag(
            dag_id, history, everything, evaluator_id, load=True, max_cost=max_cost, over_limit="downsample"
        )
    )
    assert dag_run.state == "success", ti_states(dag_run)
    estimate = xcom(dag_run, "estimated", key="estimate")
    actual = xcom(dag_run, "estimated", key="cost")
    print(
        f"\n[measure] downsample: sampling_rate {estimate['requested_sampling_rate']} -> "
        f"{estimate['sampling_rate']}, estimate ${estimate['cost']:.4f}, actual ${actual['cost']:.4f} "
        f"(limit ${max_cost})"
    )
    assert estimate["requested_sampling_rate"] == 1.0 and 0 < estimate["sampling_rate"] < 1.0
    assert actual["cost"] <= max_cost
    [run] = runs_named(gip_env, f"airflow/{dag_id}/estimated/")
    with GipHook() as hook:
        used = hook.get_experiment(run["experiment_id"]).config
    assert used["sampling_rate"] == estimate["sampling_rate"]
    # The load finds the run under the downsampled copy the ledger recorded, not the experiment asked for.
    loaded = xcom(dag_run, "load")
    assert loaded["experiment_id"] == run["experiment_id"] != everything
    assert loaded["rows"] > 0


def test_over_the_limit_with_fail_policy_fails_without_a_run(gip_env, warehouse, gip):
    experiment, evaluator_id = gip
    (a0, _), (_, b1) = windows()
    exp = experiment("langfuse_trace", trace_filter_request={"from_timestamp": a0, "to_timestamp": b1})
    dag_id = unique_dag_id("limit_fail")
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GipStartExperimentRunOperator(
            task_id="run",
            experiment_id=exp,
            evaluator_id=evaluator_id,
            langfuse_conn_id="langfuse_default",
            max_tokens=1000,
            poll_interval=0.2,
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "failed"
    assert runs_named(gip_env, f"airflow/{dag_id}/") == []
