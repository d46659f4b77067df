"""Topology smoke DAG: a task on a Celery worker, a wait deferred to the triggerer, a warehouse write.

Same shape as the daily evaluation DAG (work on a worker, a long wait that must not hold a worker
slot, results into PostgreSQL) without needing GIP. ``conf`` ``{"wait_seconds": N}`` sets the wait.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator, dag, task, timezone

WAREHOUSE_CONN_ID = "gip_warehouse"


class WaitSeconds(BaseOperator):
    """Wait N seconds in the triggerer: defer at once, finish when the trigger fires."""

    template_fields = ("seconds",)

    def __init__(self, *, seconds: float | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def execute(self, context: Any) -> None:
        moment = timezone.utcnow() + dt.timedelta(seconds=float(self.seconds))
        self.defer(
            trigger=DateTimeTrigger(moment=moment),
            method_name="execute_complete",
            timeout=dt.timedelta(minutes=5),
        )

    def execute_complete(self, context: Any, event: Any = None) -> float:
        return float(self.seconds)


@dag(
    dag_id="gip_e2e_topology_smoke",
    schedule=None,
    catchup=False,
    params={"wait_seconds": 6},
    tags=["gip", "e2e"],
)
def gip_e2e_topology_smoke() -> None:
    @task
    def start(**context: Any) -> dict[str, Any]:
        import os

        from airflow.utils.net import get_hostname

        return {"host": get_hostname(), "pid": os.getpid()}

    wait = WaitSeconds(
        task_id="wait",
        seconds="{{ dag_run.conf.get('wait_seconds', params.wait_seconds) }}",
    )

    @task
    def record(started: dict[str, Any], **context: Any) -> int:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from airflow.utils.net import get_hostname

        hook = PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID)
        hook.run(
            "CREATE TABLE IF NOT EXISTS e2e_smoke_results ("
            " run_id text PRIMARY KEY, logical_date timestamptz, start_host text, record_host text,"
            " waited_seconds double precision, recorded_at timestamptz DEFAULT now())"
        )
        waited = context["ti"].xcom_pull(task_ids="wait")
        hook.run(
            "INSERT INTO e2e_smoke_results (run_id, logical_date, start_host, record_host, waited_seconds)"
            " VALUES (%s, %s, %s, %s, %s)",
            parameters=(
                context["run_id"],
                context.get("logical_date"),
                started["host"],
                get_hostname(),
                waited,
            ),
        )
        return 1

    started = start()
    started >> wait >> record(started)


gip_e2e_topology_smoke()
