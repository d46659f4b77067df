"""OpenLineage of a warehouse load (GipToSqlOperator); needs the openlineage extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.sdk import BaseHook

from gip_airflow.hooks.gip import GipHook
from gip_airflow.openlineage import result_dataset, table_dataset
from gip_airflow.transfers._sql import RESULT_TABLE, SUMMARY_TABLE, check_table_name, flavour_of

if TYPE_CHECKING:
    from gip_airflow.transfers.gip_to_sql import GipToSqlOperator


def load_lineage(op: GipToSqlOperator, *, complete: bool) -> OperatorLineage:
    """A load: the GIP run's result in, the results and summary tables out (with row counts once done)."""
    run_id, experiment_id = op._ids()
    table = check_table_name(op.table)
    summary_table = check_table_name(op.summary_table or f"{table}_runs", "summary_table")
    db_hook = op.get_db_hook()
    conn = op._db_conn or BaseHook.get_connection(op.conn_id)
    types = flavour_of(db_hook).types
    stats = op._load_stats if complete else None
    outputs = [
        table_dataset(
            db_hook,
            conn,
            op.table_location(db_hook, name),
            columns=[(column, types[kind]) for column, kind, _ in layout],
            rows=(stats["rows"] if stats else None) if name == table else (1 if stats else None),
            size=stats["bytes"] if stats and name == table else None,
        )
        for name, layout in ((table, RESULT_TABLE), (summary_table, SUMMARY_TABLE))
    ]
    with GipHook(op.gip_conn_id) as hook:
        inputs = [result_dataset(hook, experiment_id, run_id)]
    return OperatorLineage(inputs=inputs, outputs=outputs)
