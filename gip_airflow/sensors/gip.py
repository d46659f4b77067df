"""Sensor that waits for a GIP experiment run started elsewhere (another task, GIP's own schedule)."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from gip_airflow.hooks.gip import GipHook
from gip_airflow.links import GipExperimentRunLink
from gip_airflow.triggers.gip import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    RunWait,
    WaitSettings,
    poll_keepalive,
    raise_for_event,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

__all__ = ["GipExperimentRunSensor"]


class GipExperimentRunSensor(BaseSensorOperator):
    """Wait until a GIP experiment run reaches a success status (``DONE``); return the run as XCom.

    Works in ``poke`` and ``reschedule`` mode and with ``deferrable=True`` (the triggerer polls; the worker
    slot is free). A failure status fails the task naming the run, its status and GIP's
    ``aggregated_result.error``; unknown statuses are logged and waited on. Transient API errors are
    tolerated up to ``max_consecutive_errors`` polls in a row (in ``reschedule`` mode the count restarts
    with every poke; each poke's request is still retried by the hook). ``timeout`` (seconds) bounds the
    wait and ends with ``AirflowSensorTimeout`` (``soft_fail`` skips instead).

    :param experiment_id: the experiment the run belongs to.
    :param run_id: the run to wait for (e.g. ``start_run.output``).
    :param gip_conn_id: the ``gip`` connection.
    :param success_statuses: statuses that end the wait successfully (default ``DONE``).
    :param failure_statuses: statuses that fail it (default ``FAILED``, ``ERROR``, ``CANCELLED``).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param max_consecutive_errors: failed polls in a row before giving up.
    """

    template_fields: Sequence[str] = ("experiment_id", "run_id")
    operator_extra_links = (GipExperimentRunLink(),)
    ui_color = "#d6e6fb"

    def __init__(
        self,
        *,
        experiment_id: str,
        run_id: str,
        gip_conn_id: str = GipHook.default_conn_name,
        success_statuses: Collection[str] | None = None,
        failure_statuses: Collection[str] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gip_conn_id = gip_conn_id
        self.max_consecutive_errors = max_consecutive_errors
        self.wait_settings = WaitSettings.of(self, self.poke_interval, success_statuses, failure_statuses)
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.deferrable = deferrable
        self._wait: RunWait | None = None
        #: The run's console URL once known ("" without ``console_url``); read by the extra link.
        self.gip_run_url: str | None = None
        self._final_run: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> GipHook:
        # Pokes of one try (poke mode) reuse one connection.
        return GipHook(self.gip_conn_id, keepalive_expiry=poll_keepalive(self.poke_interval))

    def _policy(self) -> RunWait:
        if self._wait is None:
            self._wait = self.wait_settings.new_wait(self.experiment_id, self.run_id, log=self.log)
        return self._wait

    def execute(self, context: Context) -> Any:
        GipExperimentRunLink.store(self, context, self.experiment_id, self.run_id)
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)  # a finished run needs no trip through the triggerer
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        now = time.time()
        wait = self.wait_settings.new_wait(
            self.experiment_id, self.run_id, deadline=now + self.timeout, started_at=now, log=self.log
        )
        self.defer(**self.wait_settings.defer_kwargs(wait))

    def poke(self, context: Context) -> PokeReturnValue | bool:
        wait = self._policy()
        try:
            event, _ = wait.on_run(self.hook.get_experiment_run(self.experiment_id, self.run_id))
        except Exception as exc:
            event, _ = wait.on_error(exc)
        if event is None:
            return False
        self._final_run = raise_for_event(event)
        return PokeReturnValue(is_done=True, xcom_value=self._final_run)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: return the run, or raise (a trigger timeout is a sensor timeout)."""
        GipExperimentRunLink.store(self, context, self.experiment_id, self.run_id)
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(str(event.get("message")))
        self._final_run = raise_for_event(event)
        return self._final_run

    # -- OpenLineage (called by apache-airflow-providers-openlineage; see gip_airflow.openlineage) -----

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        from gip_airflow.openlineage import experiment_run_lineage

        return experiment_run_lineage(self.gip_conn_id, self.experiment_id, run={"id": self.run_id})

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        from gip_airflow.openlineage import experiment_run_lineage

        run = self._final_run or {"id": self.run_id}
        return experiment_run_lineage(self.gip_conn_id, self.experiment_id, run=run)
