"""Run DAGs built inside tests with ``dag.test()`` and read back what Airflow stored."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select

_COUNTER = itertools.count()
_SYNCED: list[bool] = []


def unique_dag_id(prefix: str) -> str:
    return f"{prefix}_{next(_COUNTER)}"


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """Register a DAG built in a test (dag.test() needs it in the DB) and run it; returns the DagRun."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    if not _SYNCED:
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        DagBundlesManager().sync_bundles_to_db()
        _SYNCED.append(True)
    bag = DagBag(dag_folder="/nonexistent", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(**kwargs)


def ti_states(dag_run: Any) -> dict[tuple[str, int], str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state)) for ti in tis}


def try_numbers(dag_run: Any) -> dict[tuple[str, int], int]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(ti.task_id, ti.map_index): ti.try_number for ti in tis}


def xcoms(dag_run: Any) -> dict[tuple[str, int, str], Any]:
    """Every XCom of the run: (task_id, map_index, key) -> deserialized value."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id)
        ).all()
        return {(r.task_id, r.map_index, r.key): XComModel.deserialize_value(r) for r in rows}


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    return xcoms(dag_run).get((task_id, map_index, key))


def rendered_fields(dag_run: Any) -> dict[tuple[str, int], dict[str, Any]]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            select(RTIF).where(RTIF.dag_id == dag_run.dag_id, RTIF.run_id == dag_run.run_id)
        ).all()
        return {(r.task_id, r.map_index): r.rendered_fields for r in rows}


# --- the emulator handle, in one place (adapt here if its API changes) --------------------------------


def emulator_runs(emu: Any) -> list[dict[str, Any]]:
    return list(emu.runs())


def runs_named(emu: Any, display_name_prefix: str) -> list[dict[str, Any]]:
    return [r for r in emulator_runs(emu) if str(r.get("display_name", "")).startswith(display_name_prefix)]
