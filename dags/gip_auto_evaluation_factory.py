"""DAGs for former GIP auto evaluations, built from a JSON spec (``gip-airflow migrate-auto-evaluations``).

Reads ``$GIP_AUTO_EVALUATIONS_SPEC`` or ``gip_auto_evaluations.json`` next to this file. A missing or
empty spec gives no DAGs (and no import error); building the DAGs makes no call to GIP. See
``gip_auto_evaluations.example.json`` for the format and docs/migrate.md for the migration.
"""

from __future__ import annotations

from pathlib import Path

from gip_airflow.dag_factory import build_dags, default_spec_path

# Airflow's DAG discovery (safe mode) only parses files that mention both "airflow" and "DAG".
globals().update(build_dags(default_spec_path(Path(__file__).parent)))
