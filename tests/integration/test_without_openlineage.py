"""Without apache-airflow-providers-openlineage nothing breaks: imports, DAG parsing, operators, provider info.

The absence is simulated in a subprocess whose import system refuses ``openlineage`` and
``airflow.providers.openlineage`` and whose package metadata hides their distributions (as if the extra
were not installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoOpenLineage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "openlineage" or name.startswith(("openlineage.", "airflow.providers.openlineage")):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, NoOpenLineage())

    # ... and their distributions, so Airflow's provider discovery does not find the entry point either.
    import importlib.metadata, importlib_metadata

    def _hide(original):
        def distributions(**kwargs):
            for dist in original(**kwargs):
                name = (dist.metadata["Name"] or "").lower().replace("_", "-")
                if not name.startswith(("openlineage-", "apache-airflow-providers-openlineage")):
                    yield dist
        return distributions

    for module in (importlib.metadata, importlib_metadata):
        module.distributions = _hide(module.distributions)
    """
)

CHECKS = textwrap.dedent(
    """
    import importlib, json, pkgutil
    import gip_airflow

    modules = [m.name for m in pkgutil.walk_packages(gip_airflow.__path__, "gip_airflow.")
               if ".emulator" not in m.name
               and m.name not in ("gip_airflow.openlineage", "gip_airflow.transfers._lineage")]
    for name in modules:
        importlib.import_module(name)
    try:
        importlib.import_module("gip_airflow.openlineage")
        lineage_module = "imported"
    except ImportError:
        lineage_module = "ImportError"

    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=DAGS)

    from gip_airflow.operators.gip import GipStartExperimentRunOperator
    from gip_airflow.sensors.gip import GipExperimentRunSensor
    from gip_airflow.transfers.gip_to_sql import GipToSqlOperator
    GipStartExperimentRunOperator(task_id="a", experiment_id="e", evaluator_id="v")
    GipExperimentRunSensor(task_id="b", experiment_id="e", run_id="r")
    load = GipToSqlOperator(task_id="c", experiment_id="e", run_id="r", conn_id="wh", table="t")

    from airflow.providers_manager import ProvidersManager
    manager = ProvidersManager()
    print(json.dumps({
        "modules": len(modules),
        "lineage_module": lineage_module,
        "import_errors": {k: str(v)[-300:] for k, v in bag.import_errors.items()},
        "dags": len(bag.dag_ids),
        "outlets": [o.name for o in load.outlets],
        "provider": "gip-airflow" in manager.providers,
        "openlineage_provider": "apache-airflow-providers-openlineage" in manager.providers,
        "link": "gip_airflow.links.GipExperimentRunLink" in manager.extra_links_class_names,
        "openlineage_loaded": any(m.startswith("airflow.providers.openlineage") for m in sys.modules),
    }))
    """
)


def test_everything_works_without_the_openlineage_provider(airflow_db):
    code = BLOCKER + f"DAGS = {str(REPO / 'dags')!r}\n" + CHECKS
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] >= 10
    assert (
        result["lineage_module"] == "ImportError"
    )  # the blocker works: the facets module needs the provider
    assert result["import_errors"] == {}
    assert result["dags"] >= 5
    assert result["outlets"] == ["gip-results/wh/t", "gip-results/wh/t_runs"]
    assert result["provider"] and result["link"]
    assert not result["openlineage_provider"]
    assert not result["openlineage_loaded"]
