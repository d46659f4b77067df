"""Canonical Asset URIs of warehouse tables: the URI the database's own provider uses for a table.

A DAG scheduled on ``Asset("postgres://db.example:5432/warehouse/public/gip_results")`` runs after a
:class:`~gip_airflow.transfers.gip_to_sql.GipToSqlOperator` load into that table, because the load emits
its asset events under exactly that URI:

* PostgreSQL: ``postgres://<host>:<port>/<database>/<schema>/<table>`` (the postgres provider's scheme;
  port 5432 and schema ``public`` when not given);
* SQLite: ``sqlite:///<path of the database file>/<table>``;
* any other database: ``<conn type>://<host>[:<port>]/<database>/<table>`` (``<schema>/<table>`` when
  the table is given as ``schema.table``).

Host names are lower-cased (as OpenLineage names them); credentials never appear in a URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["TableLocation", "table_location"]

POSTGRES_DEFAULT_PORT = 5432
POSTGRES_DEFAULT_SCHEMA = "public"
_POSTGRES_TYPES = frozenset({"postgres", "postgresql"})


@dataclass(frozen=True)
class TableLocation:
    """Where a warehouse table lives, in the terms Asset URIs and OpenLineage datasets use."""

    scheme: str
    authority: str
    database: str | None
    schema: str | None
    table: str

    @property
    def uri(self) -> str:
        """The table's canonical Asset URI."""
        parts = [p for p in (self.database, self.schema, self.table) if p]
        if self.scheme == "sqlite":
            return f"sqlite:///{self.authority.lstrip('/')}/{self.table}"
        return f"{self.scheme}://{self.authority}/{'/'.join(parts)}"

    @property
    def namespace(self) -> str:
        """OpenLineage dataset namespace (``scheme://authority``)."""
        if self.scheme == "sqlite":
            return f"sqlite:///{self.authority.lstrip('/')}"
        return f"{self.scheme}://{self.authority}"

    @property
    def name(self) -> str:
        """OpenLineage dataset name (``database.schema.table``)."""
        return ".".join(p for p in (self.database, self.schema, self.table) if p)


def table_location(conn: Connection | Any, table: str, *, database: str | None = None) -> TableLocation:
    """Locate ``table`` (``name`` or ``schema.name``) in the database of an Airflow SQL connection.

    ``database`` overrides the connection's (e.g. a ``PostgresHook(database=...)``).
    """
    conn_type = str(conn.conn_type or "").lower()
    schema, _, name = table.rpartition(".")
    host = str(conn.host or "").strip()
    if conn_type == "sqlite":
        return TableLocation("sqlite", host or ":memory:", None, None, name)
    if conn_type in _POSTGRES_TYPES:
        authority = f"{host.lower()}:{conn.port or POSTGRES_DEFAULT_PORT}"
        return TableLocation(
            "postgres", authority, database or conn.schema or None, schema or POSTGRES_DEFAULT_SCHEMA, name
        )
    authority = host.lower() + (f":{conn.port}" if conn.port else "")
    return TableLocation(conn_type or "sql", authority, database or conn.schema or None, schema or None, name)
