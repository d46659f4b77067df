"""The smallest useful DAG: run an evaluator over an experiment every night, load the results.

Shown in README.md and docs/getting-started.md; tests/integration/operators/test_docs_snippets.py runs
it against the emulator (whose seed has this experiment and evaluator) and checks README.md shows it verbatim.
"""

from __future__ import annotations

# [START readme_minimal_dag]
import pendulum
from airflow.sdk import DAG

from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

EXPERIMENT_ID = "0195a8c0-0000-7000-8000-000000000002"  # what to evaluate (a GIP experiment)
EVALUATOR_ID = "0195a8c0-0000-7000-8000-000000000003"  # how to judge it (a GIP evaluator)

with DAG(
    dag_id="gip_nightly_evaluation",
    schedule="0 23 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Seoul"),
    catchup=False,
):
    evaluate = GipStartExperimentRunOperator(
        task_id="evaluate",
        experiment_id=EXPERIMENT_ID,
        evaluator_id=EVALUATOR_ID,
        deferrable=True,  # wait for the run in the triggerer, not in a worker slot
    )
    GipToSqlOperator(
        task_id="load",
        experiment_id=EXPERIMENT_ID,
        run_id=evaluate.output,
        conn_id="gip_warehouse",  # any common.sql database: PostgreSQL, SQLite, MySQL, ...
        table="gip_results",  # one row per evaluated item; one summary row per run in gip_results_runs
    )
# [END readme_minimal_dag]
