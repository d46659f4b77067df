"""
### Dataset evaluation with score sync — runs when the dataset is refreshed

Two DAGs:

* `gip_refresh_dataset` stands for your upstream job that refreshes a Langfuse dataset; its task declares
  the dataset as an Airflow **Asset** outlet.
* `gip_dataset_evaluation_on_asset` is **scheduled on that Asset**: every refresh triggers an evaluation of
  the dataset with an evaluator created in the DAG (bool metric), with **score sync**
  (`metadata.langfuse_integration_config`): GIP writes each item's score and rationale back to Langfuse
  under `score_name` (items without `sourceTraceId`/`sourceObservationId` are skipped, as GIP documents).
  Results and a summary row go to the warehouse, whose table is itself an Asset for further consumers.

Settings: the constants below and the DAG params.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
)
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

GIP_CONN_ID = "gip_default"
LANGFUSE_CONN_ID = "langfuse_default"
WAREHOUSE_CONN_ID = "gip_warehouse"
RESULTS_TABLE = "gip_dataset_results"
DATASET_NAME = "JSONL_samples-plan_suggestion_dataset_v2"
DATASET = Asset(f"langfuse://datasets/{DATASET_NAME}", extra={"dataset_name": DATASET_NAME})

JUDGE_PROMPT = """You are an impartial AI judge. Decide whether the **output** correctly answers the
**input**. Answer with <rationale>...</rationale> and <rating>true</rating> or <rating>false</rating>."""

with DAG(
    dag_id="gip_refresh_dataset",
    description="Stand-in for the upstream job that refreshes a Langfuse dataset",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gip", "example"],
):

    @task(outlets=[DATASET])
    def refresh_dataset() -> str:
        """Your ETL would (re)write the dataset's items here; emitting the Asset event triggers evaluation."""
        return DATASET_NAME

    refresh_dataset()


with DAG(
    dag_id="gip_dataset_evaluation_on_asset",
    description="Evaluate a Langfuse dataset whenever it is refreshed, syncing scores back to Langfuse",
    schedule=[DATASET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gip", "evaluation", "example"],
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "dataset_name": Param(DATASET_NAME, type="string", description="No whitespace (GIP limitation)"),
        "include_archived_items": Param(False, type="boolean"),
        "evaluator_name": Param("dataset-answer-is-correct", type="string"),
        "score_name": Param("gip_airflow_correct_v1", type="string", description="Langfuse score name"),
    },
):
    credential = GipCreateLangfuseCredentialOperator(
        task_id="register_langfuse_credential",
        alias="airflow-dataset-evaluation",
        langfuse_conn_id=LANGFUSE_CONN_ID,
        gip_conn_id=GIP_CONN_ID,
    )

    experiment = GipCreateExperimentOperator(
        task_id="create_experiment",
        name="dataset {{ params.dataset_name }}"
        "{{ ' (with archived)' if params.include_archived_items else '' }}",
        experiment_type="langfuse_dataset",
        config={
            "integrated_service_credential_id": credential.output,
            "dataset_name": "{{ params.dataset_name }}",
            "include_archived_items": "{{ params.include_archived_items }}",
        },
        gip_conn_id=GIP_CONN_ID,
    )

    evaluator = GipCreateEvaluatorOperator(
        task_id="create_evaluator",
        name="{{ params.evaluator_name }}",
        metric={"type": "bool"},
        evaluation_config={
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
            "judge_prompt": JUDGE_PROMPT,
        },
        gip_conn_id=GIP_CONN_ID,
    )

    # [START howto_operator_gip_start_experiment_run_score_sync]
    run = GipStartExperimentRunOperator(
        task_id="evaluate",
        experiment_id=experiment.output,
        evaluator_id=evaluator.output,
        score_name="{{ params.score_name }}",
        deferrable=True,
        poll_interval=5,
        timeout=pendulum.duration(hours=6),
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_operator_gip_start_experiment_run_score_sync]

    GipToSqlOperator(
        task_id="load_results",
        experiment_id=experiment.output,
        run_id=run.output,
        conn_id=WAREHOUSE_CONN_ID,
        table=RESULTS_TABLE,
        gip_conn_id=GIP_CONN_ID,
    )
