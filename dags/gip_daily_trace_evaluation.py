"""
### Daily trace evaluation — a GIP auto evaluation, done by Airflow

Replaces a GIP auto evaluation config such as
`{"schedule": "0 23 * * *", "timezone": "Asia/Seoul", ...}` over a `langfuse_trace` experiment.

* **Same firing times** as the cron config: `CronTriggerTimetable("0 23 * * *", timezone="Asia/Seoul")`.
* **Exactly the traces of the data interval** (`interval=1 day`: the 24 hours before each firing), passed
  to GIP as an explicit epoch-ms window — not `relative_time_range` — so a backfill of last week
  evaluates last week's traces, each day once, and a re-run evaluates the same traces again.
* **Manual runs** (no logical date in Airflow 3) get the data interval the timetable infers: the 24 hours
  before the moment you trigger; the `create_experiment` task logs the window it used.

Tasks: register the Langfuse credential → create the day's experiment (idempotent by name) and the
evaluator (idempotent by name) → start the run and wait in the triggerer (deferrable) → load the result
CSV and a summary row into the warehouse → quality gates on pass rate and mean score
(`SQLThresholdCheckOperator` on the summary table) → a regression gate that compares the window with the
trailing 7 windows and fails only on a statistically significant drop (`GipEvaluationGateOperator`).

Settings: the block of constants below (connection ids, schedule) and the DAG params (names, sampling,
judge model, threshold) — trigger with other params, or copy this file and change the defaults.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLThresholdCheckOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param

from gip_airflow.operators.gate import GipEvaluationGateOperator
from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
)
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

# --- settings that cannot be templated --------------------------------------------------------------
GIP_CONN_ID = "gip_default"  # type gip: console API URL, API key, workspace_id
LANGFUSE_CONN_ID = "langfuse_default"  # host = Langfuse URL, login = public key, password = secret key
WAREHOUSE_CONN_ID = "gip_warehouse"  # any common.sql database (PostgreSQL fast path, SQLite, ...)
RESULTS_TABLE = "gip_trace_results"  # the per-run summary goes to f"{RESULTS_TABLE}_runs"
SCHEDULE = "0 23 * * *"  # the auto evaluation config's "schedule"
TIMEZONE = "Asia/Seoul"  # the auto evaluation config's "timezone"

JUDGE_PROMPT = """You are an impartial AI judge. Evaluate whether the **output** answers the **input**
correctly and helpfully. Answer with <rationale>...</rationale> and then <rating>...</rating>, where the
rating is one of: bad, neutral, good."""

with DAG(
    dag_id="gip_daily_trace_evaluation",
    description="Evaluate yesterday's Langfuse traces with a GIP LLM judge, load results, gate on pass rate",
    schedule=CronTriggerTimetable(SCHEDULE, timezone=TIMEZONE, interval=pendulum.duration(days=1)),
    start_date=pendulum.datetime(2026, 1, 1, tz=TIMEZONE),
    catchup=False,
    max_active_runs=3,
    doc_md=__doc__,
    tags=["gip", "evaluation", "example"],
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "experiment_prefix": Param("daily-traces", type="string", description="Experiment name prefix"),
        "trace_name": Param(None, type=["null", "string"], description="Only traces with this name"),
        "trace_tags": Param(None, type=["null", "array"], description="Only traces having all these tags"),
        "sampling_rate": Param(1.0, type="number", minimum=0, maximum=1),
        "max_trace_count": Param(200, type="integer", minimum=1),
        "evaluator_name": Param("daily-trace-quality", type="string"),
        "judge_model_seq_id": Param(19, type="integer"),
        "judge_model_public_id": Param("openai/gpt-4", type="string"),
        "min_pass_rate": Param(0.9, type="number", minimum=0, maximum=1, description="Gate: items judged OK"),
        "min_mean_score": Param(
            0.5,
            type="number",
            description="Gate: mean score_value (category index: bad=0, neutral=1, good=2)",
        ),
    },
) as dag:
    # [START howto_operator_gip_create_langfuse_credential]
    credential = GipCreateLangfuseCredentialOperator(
        task_id="register_langfuse_credential",
        alias="airflow-daily-traces",
        langfuse_conn_id=LANGFUSE_CONN_ID,
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_operator_gip_create_langfuse_credential]

    # [START howto_operator_gip_create_experiment]
    experiment = GipCreateExperimentOperator(
        task_id="create_experiment",
        # One experiment per window; the name makes a retry or re-run reuse it instead of creating another.
        name="{{ params.experiment_prefix }} {{ data_interval_start.isoformat() }}"
        "/{{ data_interval_end.isoformat() }}",
        experiment_type="langfuse_trace",
        config={
            "integrated_service_credential_id": credential.output,
            "sampling_rate": "{{ params.sampling_rate }}",
            "max_trace_count": "{{ params.max_trace_count }}",
            "trace_filter_request": {"name": "{{ params.trace_name }}", "tags": "{{ params.trace_tags }}"},
        },
        window="data_interval",
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_operator_gip_create_experiment]

    # [START howto_operator_gip_create_evaluator]
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
            "judge_model_seq_id": "{{ params.judge_model_seq_id }}",
            "judge_model_public_id": "{{ params.judge_model_public_id }}",
            "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
            "judge_prompt": JUDGE_PROMPT,
        },
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_operator_gip_create_evaluator]

    # [START howto_operator_gip_start_experiment_run]
    run = GipStartExperimentRunOperator(
        task_id="evaluate",
        experiment_id=experiment.output,
        evaluator_id=evaluator.output,
        deferrable=True,
        poll_interval=5,
        timeout=pendulum.duration(hours=6),
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_operator_gip_start_experiment_run]

    # [START howto_transfer_gip_to_sql]
    load = GipToSqlOperator(
        task_id="load_results",
        experiment_id=experiment.output,
        run_id=run.output,
        conn_id=WAREHOUSE_CONN_ID,
        table=RESULTS_TABLE,
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_transfer_gip_to_sql]

    # [START howto_quality_gate]
    pass_rate_gate = SQLThresholdCheckOperator(
        task_id="gate_pass_rate",
        conn_id=WAREHOUSE_CONN_ID,
        # A window without traces has no pass rate: COALESCE makes the gate fail saying "0", not crash.
        sql=f"SELECT COALESCE(pass_rate, 0) FROM {RESULTS_TABLE}_runs"
        " WHERE run_id = '{{ ti.xcom_pull(task_ids='evaluate') }}'",
        min_threshold="{{ params.min_pass_rate }}",
        max_threshold=1.0,
        retries=0,  # a deterministic check: retrying cannot change its answer
    )
    # [END howto_quality_gate]

    mean_score_gate = SQLThresholdCheckOperator(
        task_id="gate_mean_score",
        conn_id=WAREHOUSE_CONN_ID,
        sql=f"SELECT COALESCE(mean_score_value, 0) FROM {RESULTS_TABLE}_runs"
        " WHERE run_id = '{{ ti.xcom_pull(task_ids='evaluate') }}'",
        min_threshold="{{ params.min_mean_score }}",
        max_threshold=2.0,
        retries=0,
    )

    # [START gip_regression_gate]
    regression_gate = GipEvaluationGateOperator(
        task_id="regression_gate",
        conn_id=WAREHOUSE_CONN_ID,
        table=RESULTS_TABLE,
        run_id=run.output,
        baseline="trailing",  # the 7 latest earlier windows of this DAG (same evaluator), pooled
        trailing_windows=7,
        metrics=["pass_rate", "mean_score"],
        tolerance={"pass_rate": 0.02, "mean_score": 0.05},  # drops smaller than this never fail
        alpha=0.05,  # at most 5 % false alarms per window, both metrics together
        min_samples=30,
        inconclusive="warn",  # the first windows have no baseline yet: log it, do not fail
    )
    # [END gip_regression_gate]

    run >> load >> [pass_rate_gate, mean_score_gate, regression_gate]
