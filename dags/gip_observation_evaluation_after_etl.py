"""
### Observation evaluation, sampled, chained after an ETL task

Every six hours an upstream ETL task runs first (here a stand-in that reports what it processed); only when
it succeeds does the DAG evaluate a **sample** of the LLM generations (Langfuse observations) of exactly
that six-hour data interval: `sampling_rate` and `max_observation_count` bound the judge's cost, the window
is the data interval as explicit epoch-ms `from_start_time`/`to_start_time` (backfillable), and the results
land in the warehouse.

Settings: the constants below and the DAG params.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, Param, task

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
RESULTS_TABLE = "gip_observation_results"

JUDGE_PROMPT = """You are an impartial AI judge. Rate the **output** of this LLM call for the **input**.
Answer with <rationale>...</rationale> and <rating>...</rating>: bad, neutral or good."""

with DAG(
    dag_id="gip_observation_evaluation_after_etl",
    description="After the ETL, evaluate a sample of the window's LLM generations with GIP",
    schedule=CronTriggerTimetable("0 */6 * * *", timezone="UTC", interval=pendulum.duration(hours=6)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gip", "evaluation", "example"],
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "observation_name": Param(None, type=["null", "string"], description="Only this observation name"),
        "sampling_rate": Param(0.5, type="number", minimum=0, maximum=1),
        "max_observation_count": Param(50, type="integer", minimum=1),
        "evaluator_name": Param("generation-quality", type="string"),
    },
):

    @task
    def etl(data_interval_start=None, data_interval_end=None) -> dict:
        """Stand-in for your pipeline step (e.g. loading the window's traces into the lake)."""
        return {"window_start": str(data_interval_start), "window_end": str(data_interval_end)}

    credential = GipCreateLangfuseCredentialOperator(
        task_id="register_langfuse_credential",
        alias="airflow-observations",
        langfuse_conn_id=LANGFUSE_CONN_ID,
        gip_conn_id=GIP_CONN_ID,
    )

    experiment = GipCreateExperimentOperator(
        task_id="create_experiment",
        name="observations {{ data_interval_start.isoformat() }}/{{ data_interval_end.isoformat() }}",
        experiment_type="langfuse_observation",
        config={
            "integrated_service_credential_id": credential.output,
            "sampling_rate": "{{ params.sampling_rate }}",
            "max_observation_count": "{{ params.max_observation_count }}",
            "observation_filter_request": {"name": "{{ params.observation_name }}"},
        },
        window="data_interval",
        gip_conn_id=GIP_CONN_ID,
    )

    evaluator = GipCreateEvaluatorOperator(
        task_id="create_evaluator",
        name="{{ params.evaluator_name }}",
        metric={
            "type": "category",
            "config": [
                {"index": 0, "name": "bad"},
                {"index": 1, "name": "neutral"},
                {"index": 2, "name": "good"},
            ],
        },
        evaluation_config={
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
            "judge_prompt": JUDGE_PROMPT,
        },
        gip_conn_id=GIP_CONN_ID,
    )

    run = GipStartExperimentRunOperator(
        task_id="evaluate",
        experiment_id=experiment.output,
        evaluator_id=evaluator.output,
        deferrable=True,
        poll_interval=5,
        timeout=pendulum.duration(hours=3),
        gip_conn_id=GIP_CONN_ID,
    )

    etl() >> credential
    GipToSqlOperator(
        task_id="load_results",
        experiment_id=experiment.output,
        run_id=run.output,
        conn_id=WAREHOUSE_CONN_ID,
        table=RESULTS_TABLE,
        gip_conn_id=GIP_CONN_ID,
    )
