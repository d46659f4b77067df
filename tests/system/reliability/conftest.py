from __future__ import annotations

from tests.integration.reliability.conftest import own_emulator, reliability_report  # noqa: F401
