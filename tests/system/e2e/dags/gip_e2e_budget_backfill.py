"""Budget backfill DAG: one daily UTC window per run, its GIP run started under a shared monthly budget.

``tests/system/e2e/test_budget_backfill_topology.py`` backfills it over 30 days, 4 DAG runs at a time.
A budget is fixed when the DAG is parsed, so the test passes it (and the ledger table) in the
environment variable ``GIP_E2E_BUDGET_BACKFILL`` (JSON: ``amount``, ``name``, ``ledger_table``) before
the topology starts; the credential and evaluator ids come in the backfill's ``dag_run_conf``. Without
that variable the DAG still parses (other topologies load this folder) and is never run.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from gip_airflow.operators.gip import GipCreateExperimentOperator, GipStartExperimentRunOperator

GIP_CONN_ID = "gip_budget"  # its own emulator: 30 days of equal traces
LANGFUSE_CONN_ID = "langfuse_budget"  # the same emulator's Langfuse, for counting targets
LEDGER_CONN_ID = "gip_warehouse"
SETTINGS = json.loads(os.environ.get("GIP_E2E_BUDGET_BACKFILL") or "{}")

with DAG(
    dag_id="gip_e2e_budget_backfill",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # [00:00, 24:00) UTC windows
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),
    catchup=False,
    tags=["gip", "e2e"],
    # Retries are allowed: a refused budget must not use them (it fails without retrying).
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    params={"credential_id": Param("", type="string"), "evaluator_id": Param("", type="string")},
):
    experiment = GipCreateExperimentOperator(
        task_id="experiment",
        gip_conn_id=GIP_CONN_ID,
        name="budget backfill {{ data_interval_start | ds }}",
        experiment_type="langfuse_trace",
        config={"integrated_service_credential_id": "{{ params.credential_id }}"},
        window="data_interval",
    )
    GipStartExperimentRunOperator(
        task_id="evaluate",
        gip_conn_id=GIP_CONN_ID,
        experiment_id=experiment.output,
        evaluator_id="{{ params.evaluator_id }}",
        ledger_conn_id=LEDGER_CONN_ID,
        ledger_table=SETTINGS.get("ledger_table", "gip_evaluation_ledger"),
        langfuse_conn_id=LANGFUSE_CONN_ID,
        budget={
            "amount": float(SETTINGS.get("amount", 1.0)),
            "period": "month",
            "name": SETTINGS.get("name", "e2e-backfill"),
        },
        poll_interval=1.0,
    )
