"""Connection settings of a GIP hook, parsed once from an Airflow connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from gip_airflow import __version__, api
from gip_airflow.exceptions import GipError
from gip_airflow.hooks._auth import ApiKeyAuth, CognitoAuth, recent_tokens, shared_ssl_context

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Connection

AuthType = Literal["api_key", "cognito"]


@dataclass(frozen=True)
class GipConnectionConfig:
    """Everything a client needs, parsed once from an Airflow connection. Secrets stay in SecretStr."""

    base_url: str
    workspace_id: str
    auth_type: AuthType = "api_key"
    api_key: SecretStr | None = field(default=None, repr=False)
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    cognito_endpoint: str = api.DEFAULT_COGNITO_ENDPOINT
    cognito_client_id: str | None = None
    console_url: str | None = None
    timeout: float = 30.0
    max_retries: int = 5
    retry_backoff: float = 1.0
    verify_ssl: bool = True
    #: Seconds an idle pooled connection is kept for reuse (httpx's default). Pollers keep theirs longer
    #: than their poll interval (see ``triggers.gip.poll_keepalive``) so that polls reuse one connection.
    keepalive_expiry: float = 5.0
    #: Send requests to the [assumed] list and read-by-id endpoints (extra ``list_endpoints``). With
    #: False the hook sends only documented requests; lookups before creates are skipped, and retry
    #: safety rests on the task state store alone.
    list_endpoints: bool = True

    @classmethod
    def from_connection(cls, conn: Connection, **overrides: Any) -> GipConnectionConfig:
        """Read a ``gip`` connection (UI, JSON or URI form). Raises ValueError naming the missing field."""
        extra: Mapping[str, Any] = conn.extra_dejson or {}
        conn_id = conn.conn_id
        host = (conn.host or "").strip()
        if not host:
            raise ValueError(f"Connection {conn_id!r}: host is empty; set it to the GIP console API URL")
        if "://" not in host:
            scheme = (conn.schema or extra.get("scheme") or "https").strip()
            host = f"{scheme}://{host}"
        parts = urlsplit(host)
        if conn.port and not parts.port:
            host = f"{parts.scheme}://{parts.netloc}:{conn.port}{parts.path}"
        workspace_id = str(extra.get("workspace_id") or "").strip()
        if not workspace_id:
            raise ValueError(
                f"Connection {conn_id!r}: extra 'workspace_id' is missing; set it to your GIP workspace UUID"
            )
        auth_type = str(extra.get("auth_type") or "api_key").strip().lower()
        if auth_type not in ("api_key", "cognito"):
            raise ValueError(
                f"Connection {conn_id!r}: auth_type {auth_type!r} is unknown; use 'api_key' or 'cognito'"
            )
        secret = conn.password or extra.get("api_key")
        if not secret:
            what = "the enterprise API key" if auth_type == "api_key" else "the Cognito password"
            raise ValueError(f"Connection {conn_id!r}: password is empty; set it to {what}")
        settings: dict[str, Any] = {
            "base_url": host.rstrip("/"),
            "workspace_id": workspace_id,
            "auth_type": auth_type,
            "console_url": (extra.get("console_url") or None),
            "verify_ssl": _as_bool(extra.get("verify_ssl", True)),
            "list_endpoints": _as_bool(extra.get("list_endpoints", True)),
        }
        for key, cast in (("timeout", float), ("max_retries", int), ("retry_backoff", float)):
            if extra.get(key) not in (None, ""):
                settings[key] = cast(extra[key])
        if auth_type == "api_key":
            settings["api_key"] = SecretStr(secret)
        else:
            if not conn.login:
                raise ValueError(f"Connection {conn_id!r}: login is empty; set it to the Cognito username")
            client_id = extra.get("cognito_client_id")
            if not client_id:
                raise ValueError(
                    f"Connection {conn_id!r}: extra 'cognito_client_id' is missing (auth_type cognito); "
                    f"the dev client id is {api.DEV_COGNITO_CLIENT_ID}"
                )
            settings.update(
                username=conn.login,
                password=SecretStr(secret),
                cognito_client_id=client_id,
                cognito_endpoint=extra.get("cognito_endpoint") or api.DEFAULT_COGNITO_ENDPOINT,
            )
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)

    def secrets(self) -> list[str]:
        """The secret strings a message must never contain: key, password, current and previous IdToken."""
        values = [s.get_secret_value() for s in (self.api_key, self.password) if s is not None]
        if self.auth_type == "cognito" and self.username and self.cognito_client_id:
            values += recent_tokens(self.cognito_endpoint, self.cognito_client_id, self.username)
        return values

    def auth(self) -> httpx.Auth:
        """The httpx auth for this connection's ``auth_type``."""
        if self.auth_type == "cognito":
            if not (self.username and self.password and self.cognito_client_id):
                raise GipError(
                    "auth_type 'cognito' needs username, password and cognito_client_id in the connection "
                    "config"
                )
            return CognitoAuth(self.cognito_endpoint, self.cognito_client_id, self.username, self.password)
        if self.api_key is None:
            raise GipError("auth_type 'api_key' needs api_key in the connection config")
        return ApiKeyAuth(self.api_key)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client``/``AsyncClient``: base URL, auth, timeouts, TLS, pool."""
        return {
            "base_url": self.base_url,
            "auth": self.auth(),
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            "headers": {"User-Agent": f"gip-airflow/{__version__}", "Accept": "application/json"},
            "verify": shared_ssl_context(self.verify_ssl),
            "limits": httpx.Limits(  # httpx's default pool sizes, with our keep-alive
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=self.keepalive_expiry
            ),
            "follow_redirects": False,
        }


def _as_bool(value: Any) -> bool:
    return str(value).strip().lower() not in ("false", "0", "no", "off")
