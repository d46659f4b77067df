"""Hatch build hook: take what the emulator needs from the rest of the repository.

* the example DAGs (``../dags``) go into the package as ``gip_airflow_emulator/example_dags``, for
  the demo, in the sdist and the wheel;
* the emulator's tests (``../tests/integration/emulator``) go into the sdist at the same path.

Built from the sdist (or from a copy of this folder alone, as in the Docker image) there is no
``../dags``: the sdist already holds both, and there is nothing to add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXAMPLE_DAGS = "gip_airflow_emulator/example_dags"
TESTS = "tests/integration/emulator"


class RepositoryFilesHook(BuildHookInterface):  # type: ignore[type-arg]
    """Force-include the example DAGs (sdist and wheel) and the emulator's tests (sdist)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        repo = Path(self.root).parent
        dags = repo / "dags"
        if not (dags / "gip_daily_trace_evaluation.py").is_file():
            return
        include = build_data["force_include"]
        for path in sorted(dags.iterdir()):
            if path.is_file() and path.suffix in {".py", ".json"}:
                include[str(path)] = f"{EXAMPLE_DAGS}/{path.name}"
        if self.target_name == "sdist":
            tests = repo / TESTS
            if not (tests / "conftest.py").is_file():
                raise FileNotFoundError(f"{tests}: the emulator's tests moved; update {__file__}")
            for package in ("tests", "tests/integration"):
                include[str(repo / package / "__init__.py")] = f"{package}/__init__.py"
            include[str(tests)] = TESTS
