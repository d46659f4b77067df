"""Sensor that waits for a GIP experiment run started elsewhere (another task, GIP's own schedule)."""

from __future__ import annotations

import datetime as dt
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from gip_airflow import api
from gip_airflow.hooks.gip import GipHook
from gip_airflow.links import GipExperimentRunLink
from gip_airflow.triggers.gip import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    GipExperimentRunTrigger,
    RunWait,
    poll_keepalive,
    raise_for_event,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

#: Same margin as the operator: the trigger's own timeout event arrives before Airflow's.
DEFER_GRACE_SECONDS = 60.0


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
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.gip_conn_id = gip_conn_id
        self.success_statuses = frozenset(success_statuses or api.SUCCESS_STATUSES)
        self.failure_statuses = frozenset(failure_statuses or api.FAILURE_STATUSES)
        if both := self.success_statuses & self.failure_statuses:
            raise ValueError(f"Task {self.task_id!r}: statuses {sorted(both)} are both success and failure")
        self.deferrable = deferrable
        self.max_consecutive_errors = max_consecutive_errors
        self._wait: RunWait | None = None
        self._gip_run_url: str | None = None
        self._final_run: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> GipHook:
        # Pokes of one try (poke mode) reuse one connection.
        return GipHook(self.gip_conn_id, keepalive_expiry=poll_keepalive(self.poke_interval))

    def _policy(self) -> RunWait:
        if self._wait is None:
            self._wait = RunWait(
                experiment_id=self.experiment_id,
                run_id=self.run_id,
                deadline=float("inf"),
                poll_interval=self.poke_interval,
                success_statuses=self.success_statuses,
                failure_statuses=self.failure_statuses,
                max_consecutive_errors=self.max_consecutive_errors,
                log=self.log,
            )
        return self._wait

    def execute(self, context: Context) -> Any:
        self._remember(context)
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)  # a finished run needs no trip through the triggerer
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        now = time.time()
        self.defer(
            trigger=GipExperimentRunTrigger(
                experiment_id=self.experiment_id,
                run_id=self.run_id,
                end_time=now + self.timeout,
                gip_conn_id=self.gip_conn_id,
                poll_interval=self.poke_interval,
                success_statuses=sorted(self.success_statuses),
                failure_statuses=sorted(self.failure_statuses),
                max_consecutive_errors=self.max_consecutive_errors,
                started_at=now,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout + DEFER_GRACE_SECONDS),
        )

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
        self._remember(context)
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

    def _remember(self, context: Context) -> None:
        if self._gip_run_url is not None:
            return
        try:
            url = self.hook.console_run_url(self.experiment_id, self.run_id)
        except Exception as exc:
            self.log.debug("No console link for run %s: %s", self.run_id, exc)
            return
        self._gip_run_url = url or ""
        GipExperimentRunLink.persist(context, url)
