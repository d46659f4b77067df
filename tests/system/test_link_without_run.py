"""A task that fails before a GIP run exists logs no "XCom not found" error for its extra link."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

DAG_FILE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from gip_airflow.operators.gip import GipStartExperimentRunOperator

    with DAG("gip_link_without_run", schedule=None, start_date=pendulum.datetime(2025, 1, 1)):
        GipStartExperimentRunOperator(
            task_id="run", experiment_id="{{ params.nothing }}", evaluator_id="v", params={"nothing": ""}
        )
    """
)


def test_failed_task_without_a_run_logs_no_xcom_error(airflow_db, gip_conn, tmp_path):
    (tmp_path / "link_dag.py").write_text(DAG_FILE)
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "gip_link_without_run"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path)},
    )
    output = done.stdout + done.stderr
    assert "experiment_id is empty" in output, output[-3000:]  # it failed where intended
    assert done.returncode != 0
    assert "XCom not found" not in output
    assert "Failed to push an xcom for task operator extra link" not in output
