"""pytest fixtures for the GIP emulator: ``gip_emulator`` (session) and ``gip_conn`` (per test).

Installing gip-airflow-emulator registers this plugin through its ``pytest11`` entry point
(``gip_emulator``; turn it off with ``-p no:gip_emulator``). ``gip_emulator`` starts
``python -m gip_airflow_emulator`` as a subprocess on a free loopback port and stops it after the
session; ``gip_conn`` clears faults and points ``AIRFLOW_CONN_GIP_DEFAULT`` at it. Set
``GIP_EMULATOR_URL`` to use an emulator you started yourself (with default identities) instead.

Only the standard library, httpx and pytest are imported here: the plugin loads in every test session.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from gip_airflow_emulator.handle import GipEmulator, attach_emulator, start_emulator

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["GipEmulator", "attach_emulator", "gip_conn", "gip_emulator", "start_emulator"]


@pytest.fixture(scope="session")
def gip_emulator() -> Iterator[GipEmulator]:
    """One emulator subprocess for the whole test session (or ``$GIP_EMULATOR_URL`` when set)."""
    url = os.environ.get("GIP_EMULATOR_URL")
    handle = attach_emulator(url) if url else start_emulator()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def gip_conn(gip_emulator: GipEmulator, monkeypatch: pytest.MonkeyPatch) -> GipEmulator:
    """Faults cleared and ``AIRFLOW_CONN_GIP_DEFAULT`` set to the emulator (API key auth)."""
    gip_emulator.clear_faults()
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", gip_emulator.conn_json())
    return gip_emulator
