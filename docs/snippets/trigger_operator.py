"""A custom deferrable operator that waits for a GIP run with GipExperimentRunTrigger.

Included by docs/sensor-trigger.md; tests/integration/operators/test_docs_snippets.py runs the DAG against the
emulator.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import pendulum
from airflow.sdk import DAG, BaseOperator, Context

from gip_airflow.operators.gip import GipStartExperimentRunOperator

# [START howto_trigger_gip_experiment_run]
from gip_airflow.triggers.gip import GipExperimentRunTrigger, raise_for_event


class WaitForGipRunOperator(BaseOperator):
    """Defer until a GIP run finishes; return the finished run (a dict) as XCom."""

    template_fields: Sequence[str] = ("experiment_id", "run_id")

    def __init__(
        self,
        *,
        experiment_id: str,
        run_id: str,
        poll_interval: float = 30.0,
        timeout: float = 3600.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.poll_interval = poll_interval
        self.wait_seconds = timeout

    def execute(self, context: Context) -> None:
        self.defer(
            trigger=GipExperimentRunTrigger(
                experiment_id=self.experiment_id,
                run_id=self.run_id,
                end_time=time.time() + self.wait_seconds,  # wall-clock deadline, epoch seconds
                gip_conn_id="gip_default",
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
            # A little later than the trigger's deadline, so that its "timeout" event says what happened.
            timeout=dt.timedelta(seconds=self.wait_seconds + 60),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        # The run on "success"; GipRunFailedError, GipRunTimeoutError or GipAuthError otherwise.
        return raise_for_event(event)


# [END howto_trigger_gip_experiment_run]

EXPERIMENT_ID = "0195a8c0-0000-7000-8000-000000000002"

with DAG(
    dag_id="gip_custom_wait",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):
    start = GipStartExperimentRunOperator(
        task_id="start_run",
        experiment_id=EXPERIMENT_ID,
        evaluator_id="0195a8c0-0000-7000-8000-000000000003",
        wait_for_completion=False,
    )
    WaitForGipRunOperator(task_id="wait_for_run", experiment_id=EXPERIMENT_ID, run_id=start.output)
