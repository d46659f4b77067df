"""Fixtures of the example-DAG tests (emulator environment, warehouses), shared with the system tests."""

from tests.integration.operators.conftest import gip_env  # noqa: F401
from tests.system.dags.test_example_dags import (  # noqa: F401
    dagbag,
    example_env,
    postgres_warehouse,
    sqlite_warehouse,
)
