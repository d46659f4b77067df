"""On Airflow < 3.3 (no ``airflow.sdk.ResumableJobMixin``) the run operator still works: every try
submits, and the display-name lookup is what keeps a retry from paying twice."""

from __future__ import annotations

import importlib.util
import sys

import airflow.sdk
import pytest

from gip_airflow.operators import gip as real_module
from tests.integration.operators.helpers import run_dag, runs_named, try_numbers, unique_dag_id, xcom
from tests.integration.operators.test_operators_dags import RETRY, chain, display_name


@pytest.fixture
def module_without_mixin(monkeypatch):
    lazy = vars(airflow.sdk)["_" + "_lazy_imports"]
    monkeypatch.delitem(lazy, "ResumableJobMixin")
    monkeypatch.delitem(vars(airflow.sdk), "ResumableJobMixin", raising=False)
    spec = importlib.util.spec_from_file_location("gip_operators_old_airflow", real_module.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module.HAS_RESUMABLE_JOB_MIXIN is False
    return module


def test_retry_without_task_state_store_reuses_run_by_display_name(gip_env, module_without_mixin):
    class CrashAfterCreate(module_without_mixin.GipStartExperimentRunOperator):
        def submit_job(self, context):
            ref = super().submit_job(context)
            if context["ti"].try_number == 1:
                raise RuntimeError("worker died after creating the run")
            return ref

    gip_env.set_run_speed(run_seconds=1.0)
    dag_run = run_dag(chain(unique_dag_id("old_airflow"), run_cls=CrashAfterCreate, **RETRY))
    assert dag_run.state == "success"
    assert try_numbers(dag_run)[("run", -1)] == 2
    (run,) = runs_named(gip_env, display_name(dag_run))
    assert xcom(dag_run, "run") == run["id"]
