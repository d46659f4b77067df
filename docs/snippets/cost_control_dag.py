"""A daily trace evaluation that never pays twice for a window and stays within a team's monthly budget.

Shown in docs/cost-control.md; tests/integration/operators/test_docs_snippets.py runs it against
the emulator with a SQLite warehouse.
"""

from __future__ import annotations

# [START cost_control_dag]
import pendulum
from airflow.sdk import DAG

from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
)
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

with DAG(
    dag_id="gip_daily_traces_on_a_budget",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"force": False},  # trigger with {"force": true} to pay for a window again
):
    credential = GipCreateLangfuseCredentialOperator(
        task_id="credential",
        alias="prod-langfuse",
        langfuse_conn_id="langfuse_default",
        remember_in_variable="gip_prod_langfuse_credential",
    )
    experiment = GipCreateExperimentOperator(
        task_id="experiment",
        name="chat traces {{ data_interval_start | ds }}",
        experiment_type="langfuse_trace",
        config={"integrated_service_credential_id": credential.output, "sampling_rate": 1.0},
        window="data_interval",  # one reproducible window per DAG run
    )
    evaluator = GipCreateEvaluatorOperator(
        task_id="evaluator",
        name="helpfulness judge",
        metric={"type": "bool"},
        evaluation_config={
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_model_parameters": {"temperature": 0.0, "max_tokens": 50},
            "judge_prompt": "Is the answer helpful? <rationale>...</rationale><rating>true|false</rating>",
        },
    )
    evaluate = GipStartExperimentRunOperator(
        task_id="evaluate",
        experiment_id=experiment.output,
        evaluator_id=evaluator.output,
        ledger_conn_id="gip_warehouse",  # the ledger table lives next to the results
        langfuse_conn_id="langfuse_default",  # count the window's traces for the estimate
        force="{{ params.force }}",
        max_cost=5.0,  # US dollars per run, priced with the price table
        over_limit="downsample",  # lower sampling_rate instead of failing
        budget={"name": "search-team", "amount": 100.0, "period": "month"},
    )
    GipToSqlOperator(
        task_id="load",
        run_id=evaluate.output,
        experiment_id=experiment.output,
        conn_id="gip_warehouse",
        table="gip_trace_results",
        ledger_conn_id="gip_warehouse",  # the same ledger: one current summary row per window, with its cost
    )
# [END cost_control_dag]
