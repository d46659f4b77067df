"""Start a run without waiting, do other work, then wait for the run with the sensor.

Included by docs/sensor-trigger.md; tests/integration/operators/test_docs_snippets.py runs it against
the emulator.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from gip_airflow.operators.gip import GipStartExperimentRunOperator
from gip_airflow.sensors.gip import GipExperimentRunSensor

EXPERIMENT_ID = "0195a8c0-0000-7000-8000-000000000002"
EVALUATOR_ID = "0195a8c0-0000-7000-8000-000000000003"

with DAG(
    dag_id="gip_start_then_wait",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):
    # [START howto_sensor_gip_experiment_run]
    start = GipStartExperimentRunOperator(
        task_id="start_run",
        experiment_id=EXPERIMENT_ID,
        evaluator_id=EVALUATOR_ID,
        wait_for_completion=False,  # return the run id as soon as the run is created
    )

    @task
    def meanwhile() -> None:
        """Anything that does not need the results yet."""

    wait = GipExperimentRunSensor(
        task_id="wait_for_run",
        experiment_id=EXPERIMENT_ID,
        run_id=start.output,
        deferrable=True,  # the triggerer polls; no worker slot is held while the run is going
        poke_interval=60,
        timeout=6 * 3600,
    )
    start >> meanwhile() >> wait
    # [END howto_sensor_gip_experiment_run]
