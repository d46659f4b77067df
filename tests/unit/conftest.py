"""The unit layer: no network socket and no subprocess. A test that tries either fails at once.

HTTP is served by ``httpx.MockTransport`` handlers; SQLite runs in-process (``:memory:``).
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest


class NotInUnitTests(RuntimeError):
    """Raised when a unit test reaches for the network or a subprocess."""


@pytest.fixture(autouse=True)
def _no_network_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NotInUnitTests(f"unit tests may not open network connections (to {address!r})")
        return real_connect(self, address)  # AF_UNIX socket pairs (asyncio's self-pipe) stay allowed

    def popen(*args: Any, **kwargs: Any) -> Any:
        raise NotInUnitTests(f"unit tests may not start subprocesses ({args[1] if len(args) > 1 else ''})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
