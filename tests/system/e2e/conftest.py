"""e2e helpers: skip when PostgreSQL/Redis are missing, and a summary of measured numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.system.e2e.topology import services_unavailable

_METRICS: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def local_services() -> None:
    """Skip (with the reason) when the local PostgreSQL or Redis the topology needs is not reachable."""
    reason = services_unavailable()
    if reason:
        pytest.skip(f"e2e topology needs local PostgreSQL and Redis: {reason}")


@pytest.fixture
def e2e_report(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    """Record measured numbers of a test; printed at the end of the pytest run."""

    def report(numbers: dict[str, Any]) -> None:
        _METRICS.append((request.node.name, numbers))
        for key, value in numbers.items():
            request.node.user_properties.append((key, value))

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _METRICS:
        return
    terminalreporter.section("e2e topology measurements")
    for name, numbers in _METRICS:
        parts = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
        terminalreporter.write_line(f"{name}: {parts}")
