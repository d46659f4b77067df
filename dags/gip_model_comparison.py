"""
### Model comparison — the same dataset, several models, side by side

GIP's `target_data_converter` re-generates each dataset item's output with another model before the judge
scores it. This DAG maps one experiment run per model over **the same dataset experiment and evaluator**
(dynamic task mapping), loads every run into the warehouse, and a final task reports the models side by
side — pass rate, mean score and tokens — read back from the warehouse summary table. A paired gate
compares every model with the first one item by item (exact McNemar on pass/fail, a seeded paired
bootstrap on scores) and reports which is significantly better or worse (`GipEvaluationGateOperator`).

Settings: the constants below and the DAG params (`models`: a list of `{seq_id, public_id}`; the dataset;
the prompt template). Trigger manually or put it on a schedule.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import DAG, BaseHook, Param, task

from gip_airflow.operators.gate import GipEvaluationGateOperator, gate_asset
from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
)
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator, result_alias

GIP_CONN_ID = "gip_default"
LANGFUSE_CONN_ID = "langfuse_default"
WAREHOUSE_CONN_ID = "gip_warehouse"
RESULTS_TABLE = "gip_model_comparison_results"

JUDGE_PROMPT = """You are an impartial AI judge. Compare the **output** with the expected answer for the
**input**. Answer with <rationale>...</rationale> and <rating>...</rating>; the rating is a number between
0.0 (wrong) and 1.0 (fully correct and helpful)."""

with DAG(
    dag_id="gip_model_comparison",
    description="Evaluate several models on one Langfuse dataset with GIP and compare them",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gip", "evaluation", "example"],
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "dataset_name": Param("JSONL_samples-plan_suggestion_dataset_v2", type="string"),
        "models": Param(
            [
                {"seq_id": 6, "public_id": "anthropic/claude-3-sonnet-20240229"},
                {"seq_id": 5, "public_id": "anthropic/claude-3-opus-20240229"},
                {"seq_id": 19, "public_id": "openai/gpt-4"},
            ],
            type="array",
            description="Models to compare: [{seq_id, public_id}]",
        ),
        "system_prompt": Param("You are an AI assistant that answers questions", type="string"),
        "evaluator_name": Param("answer-correctness-0-to-1", type="string"),
    },
) as dag:
    credential = GipCreateLangfuseCredentialOperator(
        task_id="register_langfuse_credential",
        alias="airflow-model-comparison",
        langfuse_conn_id=LANGFUSE_CONN_ID,
        gip_conn_id=GIP_CONN_ID,
    )

    # [START howto_operator_gip_create_experiment_dataset]
    experiment = GipCreateExperimentOperator(
        task_id="create_experiment",
        name="model-comparison {{ params.dataset_name }}",
        experiment_type="langfuse_dataset",
        config={
            "integrated_service_credential_id": credential.output,
            "dataset_name": "{{ params.dataset_name }}",
            "include_archived_items": False,
        },
        gip_conn_id=GIP_CONN_ID,
    )
    # [END howto_operator_gip_create_experiment_dataset]

    evaluator = GipCreateEvaluatorOperator(
        task_id="create_evaluator",
        name="{{ params.evaluator_name }}",
        metric={"type": "numeric", "config": {"min": {"value": 0.0}, "max": {"value": 1.0}}},
        evaluation_config={
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
            "judge_prompt": JUDGE_PROMPT,
        },
        gip_conn_id=GIP_CONN_ID,
    )

    # [START howto_operator_gip_start_experiment_run_mapped]
    @task
    def runs_per_model(params: dict, run_id: str) -> list[dict]:
        """One run definition per model: its converter and a display name that names the model."""
        return [
            {
                "display_name": f"{model['public_id']} | model comparison | {run_id}"[:255],
                "target_data_converter": {
                    "model_seq_id": model["seq_id"],
                    "model_public_id": model["public_id"],
                    "model_parameters": {"top_p": 0.5, "temperature": 0.6, "max_tokens": 50},
                    "input_prompt_trajectory_template": {
                        "messages": [
                            {"role": "system", "content": params["system_prompt"]},
                            {"role": "user", "content": "{item.input}"},
                        ]
                    },
                },
            }
            for model in params["models"]
        ]

    runs = GipStartExperimentRunOperator.partial(
        task_id="evaluate_model",
        experiment_id=experiment.output,
        evaluator_id=evaluator.output,
        deferrable=True,
        poll_interval=5,
        timeout=pendulum.duration(hours=6),
        gip_conn_id=GIP_CONN_ID,
    ).expand_kwargs(runs_per_model())
    # [END howto_operator_gip_start_experiment_run_mapped]

    # [START howto_transfer_gip_to_sql_mapped]
    loads = GipToSqlOperator.partial(
        task_id="load_results",
        experiment_id=experiment.output,
        conn_id=WAREHOUSE_CONN_ID,
        table=RESULTS_TABLE,
        gip_conn_id=GIP_CONN_ID,
        # [START mapped_load_aliases]
        # A mapped operator is built at run time: declare its Asset aliases here (known at parse time);
        # each load adds its tables' canonical Assets (postgres://host:port/db/schema/table) to them.
        outlets=[
            result_alias(WAREHOUSE_CONN_ID, RESULTS_TABLE),
            result_alias(WAREHOUSE_CONN_ID, f"{RESULTS_TABLE}_runs"),
        ],
        # [END mapped_load_aliases]
    ).expand(run_id=runs.output)
    # [END howto_transfer_gip_to_sql_mapped]

    @task
    def report(run_ids: list[str]) -> list[dict]:
        """Read the models' summary rows back from the warehouse and log them side by side."""
        hook = BaseHook.get_connection(WAREHOUSE_CONN_ID).get_hook()
        assert isinstance(hook, DbApiHook)
        ids = list(run_ids)
        placeholders = ", ".join([hook.placeholder] * len(ids))
        rows = hook.get_records(
            f"SELECT display_name, item_count, pass_rate, mean_score_value, total_tokens "
            f"FROM {RESULTS_TABLE}_runs WHERE run_id IN ({placeholders}) ORDER BY mean_score_value DESC",
            parameters=ids,
        )
        lines = [f"{'model run':<60} {'items':>5} {'pass':>6} {'mean':>6} {'tokens':>8}"]
        table = []
        for name, items, pass_rate, mean, tokens in rows:
            lines.append(
                f"{name[:60]:<60} {items:>5} {pass_rate or 0:>6.0%} {mean or 0:>6.2f} {tokens or 0:>8}"
            )
            table.append(
                {"run": name, "items": items, "pass_rate": pass_rate, "mean_score": mean, "tokens": tokens}
            )
        print("\n".join(lines))
        return table

    loads >> report(runs.output)

    # [START gip_paired_gate]
    @task
    def pair_with_first(run_ids: list[str]) -> list[dict]:
        """Every model's run against the first model's run (the baseline)."""
        ids = list(run_ids)
        return [{"run_id": run_id, "baseline_run_id": ids[0]} for run_id in ids[1:]]

    compare = GipEvaluationGateOperator.partial(
        task_id="compare_with_first_model",
        conn_id=WAREHOUSE_CONN_ID,
        table=RESULTS_TABLE,
        baseline="paired",  # the same dataset items, paired by input and expected output
        pair_by=["input_data_from_experiment", "output_data_from_experiment"],
        metrics=["pass_rate", "mean_score"],
        alpha=0.05,
        min_samples=10,
        fail_on_regression=False,  # report better / worse, do not fail the comparison
        outlets=[gate_asset(WAREHOUSE_CONN_ID, RESULTS_TABLE)],
    ).expand_kwargs(pair_with_first(runs.output))
    # [END gip_paired_gate]
    loads >> compare
