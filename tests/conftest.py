"""Shared test set-up: a throw-away AIRFLOW_HOME (set before Airflow is imported) and a migrated DB."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
AIRFLOW_HOME = pathlib.Path(tempfile.mkdtemp(prefix="gip-airflow-test-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)

# The emulator fixtures (gip_emulator, gip_conn) come from the gip-airflow-emulator distribution's
# pytest11 entry point; naming the plugin here as well would register it twice.


@pytest.fixture(scope="session")
def airflow_db() -> pathlib.Path:
    """Migrate the SQLite metadata DB once per pytest run; return AIRFLOW_HOME."""
    from airflow.utils.db import initdb

    initdb()
    return AIRFLOW_HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
