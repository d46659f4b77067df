"""Reliability tests (``pytest -m chaos``): shared sizes, a dedicated emulator and a figures report.

CI sizes by default; ``GIP_RELIABILITY_FULL=1`` runs the full sizes named in README.md ("Reliability
and security"). Every test records its measured figures with ``reliability_report``; they are printed at the end of the pytest run (and attached to the JUnit XML as properties).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gip_airflow_emulator.pytest_plugin import GipEmulator, start_emulator

_FIGURES: list[tuple[str, dict[str, Any]]] = []


FULL = os.environ.get("GIP_RELIABILITY_FULL", "").strip().lower() in ("1", "true", "yes")


def size(ci: int, full: int) -> int:
    """The CI size, or the full one with GIP_RELIABILITY_FULL=1."""
    return full if FULL else ci


@pytest.fixture
def reliability_report(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    """Record (and print at once) the figures a test measured."""

    def report(figures: dict[str, Any]) -> None:
        _FIGURES.append((request.node.name, figures))
        for key, value in figures.items():
            request.node.user_properties.append((key, value))
        print(f"\n[reliability] {request.node.name}: {json.dumps(figures, default=str)}")

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, figures in _FIGURES:
        parts = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{name}: {parts}")


@pytest.fixture(scope="module")
def own_emulator() -> Iterator[GipEmulator]:
    """An emulator for this module alone: its faults and request counts are not shared with others."""
    emu = start_emulator("--run-seconds", "0.5")
    try:
        yield emu
    finally:
        emu.stop()
