"""
### Release on a passed regression gate

Scheduled on the **Asset of the daily DAG's regression gate** (`GipEvaluationGateOperator` emits it only
when the gate passes: a regression fails the gate task, and a failed task emits no asset event). Every
event carries the verdict in its `extra` (`run_id`, `verdict`, `passed`, `baseline`, per-metric results),
so the release task can say which evaluation run it trusts, and refuse an `inconclusive` verdict.

Replace the `release` task with your deployment step (a model promotion, a config push, a tag).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from gip_airflow.operators.gate import gate_asset

WAREHOUSE_CONN_ID = "gip_warehouse"
RESULTS_TABLE = "gip_trace_results"  # the daily DAG's results table; its gate writes <table>_gates

# [START gip_release_on_gate]
with DAG(
    dag_id="gip_release_on_gate",
    description="Release once the daily evaluation's regression gate has passed",
    # the canonical Asset of gip_trace_results_gates: one event per passed (or warned) gate run
    schedule=[gate_asset(WAREHOUSE_CONN_ID, RESULTS_TABLE)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gip", "evaluation", "example"],
) as dag:

    @task
    def release() -> dict:
        """Release for the latest passing gate verdict among the events that triggered this run."""
        events = get_current_context().get("triggering_asset_events") or {}
        verdicts = [dict(e.extra or {}) for evs in events.values() for e in evs]
        passed = [v for v in verdicts if v.get("verdict") == "pass"]  # strict: not "inconclusive"
        if not passed:
            raise AirflowSkipException(
                f"no passing gate verdict among {len(verdicts)} event(s): nothing to release"
            )
        print(f"Releasing: evaluation run {passed[-1]['run_id']} passed its regression gate")
        return passed[-1]

    release()
# [END gip_release_on_gate]
