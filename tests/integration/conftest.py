"""Integration tests share the operator tests' emulator set-up (``gip_default`` + ``langfuse_default``)."""

from __future__ import annotations

from tests.operators.conftest import gip_env

__all__ = ["gip_env"]
