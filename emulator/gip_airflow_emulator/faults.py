"""Fault injection and request statistics, as one pure ASGI middleware around the whole emulator.

Faults apply to requests whose path matches the live :class:`~.settings.FaultConfig`'s
``path_pattern`` (GIP API paths by default) and never to the control API. A dropped connection
sends the status line, the headers and part of the body, then the server closes the socket: the
client sees an incomplete body, as after a network cut in the middle of a CSV download.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from gip_airflow_emulator.defaults import COGNITO_PATH, CONTROL_PREFIX

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from gip_airflow_emulator.state import Emulator

_INCOMPLETE = "ASGI callable returned without completing response."


class _Dropped(Exception):
    """Raised from inside ``send`` to stop the application after a deliberately partial body."""


class _ExpectedIncomplete(logging.Filter):
    """Hide uvicorn's "returned without completing response" error for connections we cut on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.expected = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.expected and record.getMessage() == _INCOMPLETE:
            self.expected -= 1
            return False
        return True


_filter = _ExpectedIncomplete()
logging.getLogger("uvicorn.error").addFilter(_filter)


def request_group(path: str) -> str:
    if path.startswith("/api/workspaces/"):
        return "gip"
    if path.startswith("/api/public/"):
        return "langfuse"
    if path.startswith(COGNITO_PATH.rstrip("/")):
        return "cognito"
    if path.startswith(CONTROL_PREFIX):
        return "control"
    return "other"


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class FaultMiddleware:
    """Counts every request; injects latency, 5xx, 429 and dropped connections when configured."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emu = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        emu = self.emu
        path: str = scope["path"]
        group = request_group(path)
        emu.stats.requests[group] += 1
        status_seen: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
            await send(message)

        fault = None
        faults = emu.faults
        cfg = faults.config
        if group != "control" and cfg.any_request_fault and faults.pattern.search(path):
            if cfg.latency_ms:
                emu.stats.faults["latency"] += 1
                await asyncio.sleep(cfg.latency_ms / 1000)
            if faults.budget_left():
                draw = faults.rng.random()
                if draw < cfg.error_rate:
                    fault = "error"
                elif draw < cfg.error_rate + cfg.rate_limit_rate:
                    fault = "rate_limit"
                elif draw < cfg.error_rate + cfg.rate_limit_rate + cfg.drop_rate:
                    fault = "drop"
                if fault:
                    faults.injected += 1
                    emu.stats.faults[fault] += 1
        try:
            if fault == "error":
                status = faults.rng.choice(cfg.error_statuses)
                phrase = (
                    HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Server Error"
                )
                await _send_json(
                    counting_send, status, {"message": f"{status} {phrase} (emulated fault)"}, []
                )
            elif fault == "rate_limit":
                if cfg.retry_after_format == "http-date":
                    retry = email.utils.formatdate(time.time() + cfg.retry_after, usegmt=True)
                else:
                    retry = str(cfg.retry_after)
                await _send_json(
                    counting_send,
                    429,
                    {"message": "Too Many Requests (emulated fault); retry later"},
                    [(b"retry-after", retry.encode())],
                )
            elif fault == "drop":
                await self.app(scope, receive, self._dropping(counting_send, cfg.drop_after_bytes))
            else:
                await self.app(scope, receive, counting_send)
        except _Dropped:
            _filter.expected += 1
        finally:
            route = scope.get("route")
            method = scope.get("method", "")
            emu.stats.routes[f"{method} {getattr(route, 'path', '(no route)')}"] += 1
            emu.stats.statuses[str(status_seen[0]) if status_seen else "none"] += 1
            if group != "control" and (client := scope.get("client")):
                emu.stats.connections.add((client[0], client[1]))

    @staticmethod
    def _dropping(send: Send, after: int) -> Send:
        """A ``send`` that forwards at most ``after`` body bytes (or half a shorter body), then stops."""
        sent = 0

        async def dropping_send(message: Message) -> None:
            nonlocal sent
            if message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if sent + len(body) > after:
                await send({"type": "http.response.body", "body": body[: after - sent], "more_body": True})
                raise _Dropped
            if not more:
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                raise _Dropped
            sent += len(body)
            await send(message)

        return dropping_send
