"""Hatch build hook: ship the repository's example DAGs inside the package, for the demo.

Built from the repository, the DAGs come from ``../dags``; built from the sdist (which holds them
already, as ``gip_airflow_emulator/example_dags``), there is nothing to add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = "gip_airflow_emulator/example_dags"


class ExampleDagsHook(BuildHookInterface):  # type: ignore[type-arg]
    """Force-include ``../dags/*.py`` and ``*.json`` as ``gip_airflow_emulator/example_dags/``."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        dags = Path(self.root).parent / "dags"
        if not (dags / "gip_daily_trace_evaluation.py").is_file():
            return
        for path in sorted(dags.iterdir()):
            if path.is_file() and path.suffix in {".py", ".json"}:
                build_data["force_include"][str(path)] = f"{TARGET}/{path.name}"
