"""The compose file publishes no unauthenticated service beyond the host's loopback interface."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "docker-compose.yaml"
#: Services without auth of their own (the emulator's control API can reset state and inject faults).
UNAUTHENTICATED = ("gip-emulator",)


def _published(port: object) -> tuple[str | None, str]:
    """(host IP or None for all interfaces, the rest) of a short or long compose port entry."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published"))
    parts = str(port).split(":")
    return (parts[0], ":".join(parts[1:])) if len(parts) == 3 else (None, str(port))


def test_emulator_port_is_bound_to_loopback():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in UNAUTHENTICATED:
        ports = services[name].get("ports") or []
        assert ports, f"{name} publishes no port; the test needs updating"
        for port in ports:
            host_ip, rest = _published(port)
            assert host_ip == "127.0.0.1", (
                f"{name} publishes {port!r} on every interface; its control API has no auth. "
                f"Publish it as '127.0.0.1:{rest}'"
            )
