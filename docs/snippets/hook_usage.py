"""Using the hooks directly: GipHook in a task, GipAsyncHook in async code (a trigger, a script).

Included by docs/hook.md; tests/integration/operators/test_docs_snippets.py runs both functions against the
emulator.
"""

from __future__ import annotations

# [START howto_hook_gip]
import time

from gip_airflow import api
from gip_airflow.hooks.gip import GipHook


def evaluate_and_download(experiment_id: str, evaluator_id: str, display_name: str, dest: str) -> str:
    """Start a run (or find the one started earlier under this name), wait for it, download its CSV."""
    with GipHook("gip_default") as hook:
        # None when GIP cannot list runs (any 4xx but 401, or the list_endpoints: false extra)
        found = hook.lookup(
            "runs by display name",
            lambda: filter(None, [hook.find_experiment_run(experiment_id, display_name)]),
        )
        run = found[0] if found else None
        if run is None or run.status in api.FAILURE_STATUSES:
            run = hook.create_experiment_run(
                experiment_id, {"evaluator_id": evaluator_id, "display_name": display_name}
            )
        while run.status not in api.TERMINAL_STATUSES:
            time.sleep(5)
            run = hook.get_experiment_run(experiment_id, run.id)
        if run.status not in api.SUCCESS_STATUSES:
            raise RuntimeError(f"run {run.id} ended with status {run.status}: {run.error}")
        hook.download_run_result(experiment_id, run.id, dest)  # streamed to disk in 1 MiB chunks
        return run.id


# [END howto_hook_gip]

# [START howto_hook_gip_async]
from gip_airflow.hooks.gip import GipAsyncHook


async def run_status(experiment_id: str, run_id: str) -> str:
    """Read a run's status without blocking the event loop (the connection is fetched asynchronously)."""
    hook = await GipAsyncHook.from_conn_id("gip_default")
    async with hook:
        run = await hook.get_experiment_run(experiment_id, run_id)
    return run.status or "unknown"


# [END howto_hook_gip_async]
