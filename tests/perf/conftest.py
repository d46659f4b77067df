"""The performance layer: benchmarks and load harnesses, outside the default run (``make perf``).

Every test here is marked ``benchmark`` (deselected by the default ``-m 'not benchmark'``); each checks
its stated target ratio, measured against an anchor in the same run, through its exit status.
"""

from __future__ import annotations

import pytest

from tests.integration.emulator.conftest import _gip_client, emu, fast_emulator, gip  # noqa: F401
from tests.integration.operators.conftest import gip_env  # noqa: F401
from tests.integration.reliability.conftest import own_emulator, reliability_report  # noqa: F401


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/perf/" in str(item.path):
            item.add_marker(pytest.mark.benchmark)
