"""A scriptable HTTP server on loopback for hostile-answer tests: each test says what every request gets.

Records every request (method, raw path, headers, body). A reply chooses its body framing:
``length`` (Content-Length), ``chunked``, or ``close`` (no length: the body ends when the connection
closes, as HTTP/1.1 allows), so truncation and framing faults can be played exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gip_airflow.hooks.gip import GipHook


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    framing: Literal["length", "chunked", "close"] = "length"

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        self.headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode()


Route = Callable[[Seen], Reply]


class HostileServer:
    """``route`` decides the reply to each request; ``seen`` lists the requests in order."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                outer.seen.append(seen)
                reply = outer.route(seen)
                payload = reply.payload()
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.framing == "length":
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                elif reply.framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(payload), 1000):
                        chunk = payload[start : start + 1000]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self, method: str | None = None) -> list[str]:
        return [s.path for s in self.seen if method is None or s.method == method]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A result CSV whose rows hold quoted newlines (so a cut can fall inside a record).
CSV = (
    "passed,score,rationale\n" + "".join(f'true,{i},"line {i}\nwith a newline"\n' for i in range(2000))
).encode()
DONE = {"id": "run-1", "status": "DONE", "aggregated_result": {"error": None}}


def hook_for(monkeypatch: Any, server: HostileServer, **extra: Any) -> GipHook:
    """A GipHook on ``server`` (connection ``gip_hostile``; ``extra`` become connection extras)."""
    from gip_airflow.hooks.gip import GipHook

    monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, **extra))
    return GipHook("gip_hostile", retry_backoff=0.01)


def gip_conn(server: HostileServer, **extra: Any) -> str:
    """A ``gip`` connection (JSON form) pointing at ``server``; ``auth_type="cognito"`` logs in there."""
    auth_type = extra.pop("auth_type", "api_key")
    conn: dict[str, Any] = {
        "conn_type": "gip",
        "host": server.url,
        "extra": {"workspace_id": "ws-1", "auth_type": auth_type, "max_retries": 0, **extra},
    }
    if auth_type == "cognito":
        conn.update(login="alice", password="cognito-pass\\word-123")
        conn["extra"].update(cognito_endpoint=server.url + "/_cognito/", cognito_client_id="client-1")
    else:
        conn["password"] = "gip-key\\with-backslash-9"
    return json.dumps(conn)
