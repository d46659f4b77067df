"""Operator extra link to an experiment run in the GIP web console.

The URL is computed in the worker (the connection's ``console_url`` extra is only readable there) and
stored as an XCom under :attr:`GipExperimentRunLink.xcom_key` as soon as the run id is known; the API
server only reads that XCom. Until a run exists there is no link and no XCom read (which would log an
error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey


class GipExperimentRunLink(BaseOperatorLink):
    """ "GIP experiment run" button on tasks that start or wait for a run."""

    name = "GIP experiment run"

    @classmethod
    def persist(cls, context: Context, url: str | None) -> None:
        """Store the run's console URL for this task instance (no-op without ``console_url``)."""
        if url:
            context["ti"].xcom_push(key=cls().xcom_key, value=url)

    @classmethod
    def store(cls, task: Any, context: Context, experiment_id: str, run_id: str) -> None:
        """Compute the run's console URL once per task object (with ``task.hook``) and persist it.

        Called as soon as the run id is known, so the link survives a crash of the worker.
        """
        if getattr(task, "gip_run_url", None) is not None:
            return
        try:
            url = task.hook.console_run_url(experiment_id, run_id)
        except Exception as exc:
            task.log.debug("No console link for run %s: %s", run_id, exc)
            return
        task.gip_run_url = url or ""
        cls.persist(context, url)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Called in the worker at the end of the task. The operator sets ``gip_run_url`` whenever it
        # learns the run id (also after resuming from a deferral), so no XCom has to be read here.
        return str(getattr(operator, "gip_run_url", None) or "")
