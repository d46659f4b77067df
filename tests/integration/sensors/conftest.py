"""Sensor tests share the operator tests' emulator set-up."""

from __future__ import annotations

from tests.integration.operators.conftest import gip_env

__all__ = ["gip_env"]
