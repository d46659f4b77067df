"""The warehouse tables :class:`~gip_airflow.transfers.gip_to_sql.GipToSqlOperator` writes: their layout,
DDL and name checks, for the readers of those tables (the regression gate, the Evaluations view)."""

from __future__ import annotations

from gip_airflow.transfers._sql import (
    RESULT_TABLE,
    SUMMARY_TABLE,
    Flavour,
    check_table_name,
    create_table_sql,
    flavour_of,
    quoter,
    table_columns,
)

__all__ = [
    "RESULT_TABLE",
    "SUMMARY_TABLE",
    "Flavour",
    "check_table_name",
    "create_table_sql",
    "flavour_of",
    "quoter",
    "table_columns",
]
