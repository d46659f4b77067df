"""A small read-only client of the Langfuse public API, used to count evaluation targets before a run.

The connection is the one the credential operator registers with GIP (type ``generic`` or ``http``):
host = Langfuse base URL, login = public key, password = secret key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

import httpx
from airflow.sdk import BaseHook

from gip_airflow import api
from gip_airflow.exceptions import GipError

__all__ = ["LangfuseHook"]

Query = Sequence[tuple[str, Any]]


class LangfuseHook(BaseHook):
    """Count and page through Langfuse list endpoints with the keys of an Airflow connection."""

    conn_name_attr = "langfuse_conn_id"
    default_conn_name = "langfuse_default"
    hook_name = "Langfuse"

    def __init__(self, langfuse_conn_id: str = default_conn_name, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.langfuse_conn_id = langfuse_conn_id
        self.timeout = timeout

    @cached_property
    def base_url(self) -> str:
        conn = self.get_connection(self.langfuse_conn_id)
        host = (conn.host or "").strip()
        if not host:
            raise GipError(
                f"Connection {self.langfuse_conn_id!r} has no host: set it to the Langfuse base URL"
            )
        if "://" not in host:
            host = f"{(conn.schema or 'https').strip() or 'https'}://{host}"
            if conn.port:
                host = f"{host}:{conn.port}"
        return host.rstrip("/")

    @cached_property
    def client(self) -> httpx.Client:
        conn = self.get_connection(self.langfuse_conn_id)
        if not conn.login or not conn.password:
            raise GipError(
                f"Connection {self.langfuse_conn_id!r} needs the Langfuse public key as login and the "
                "secret key as password"
            )
        return httpx.Client(
            base_url=self.base_url,
            auth=(conn.login, conn.password),
            timeout=httpx.Timeout(self.timeout, connect=5.0),
            transport=httpx.HTTPTransport(retries=2),
            headers={"User-Agent": "gip-airflow-cost-estimate"},
        )

    @cached_property
    def public_key(self) -> str | None:
        return self.get_connection(self.langfuse_conn_id).login

    def get_conn(self) -> httpx.Client:
        return self.client

    def _get(self, path: str, query: Query) -> Mapping[str, Any]:
        try:
            response = self.client.get(path, params=list(query))
        except httpx.HTTPError as exc:
            raise GipError(
                f"Langfuse at {self.base_url} could not be reached ({type(exc).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise GipError(
                f"Langfuse at {self.base_url} rejected the keys of connection {self.langfuse_conn_id!r} "
                f"(HTTP {response.status_code}); check its login (public key) and password (secret key)"
            )
        if response.status_code >= 400:
            raise GipError(
                f"Langfuse answered HTTP {response.status_code} to GET {path}: {response.text[:200]}"
            )
        body = response.json()
        if not isinstance(body, Mapping):
            raise GipError(f"Langfuse answered GET {path} with {type(body).__name__}, not a page")
        return body

    def count(self, path: str, query: Query) -> int:
        """How many items a list endpoint holds for ``query`` (one request: ``meta.totalItems``)."""
        body = self._get(path, [*query, ("page", 1), ("limit", 1)])
        total = (body.get("meta") or {}).get("totalItems")
        if isinstance(total, int):
            return total
        return sum(len(page) for page in self.pages(path, query))  # no total: page through

    def pages(self, path: str, query: Query) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list endpoint, in order."""
        page, limit = 1, api.LangfusePaths.page_limit
        while True:
            body = self._get(path, [*query, ("page", page), ("limit", limit)])
            data = list(body.get("data") or [])
            yield data
            total_pages = (body.get("meta") or {}).get("totalPages")
            if len(data) < limit or (isinstance(total_pages, int) and page >= total_pages):
                return
            page += 1
