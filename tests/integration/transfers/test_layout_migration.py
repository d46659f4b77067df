"""Tables of the earlier layout (run-level facts in every row) are migrated in one transaction, or refused
with the statements that migrate them; either way nothing is lost."""

from __future__ import annotations

import datetime as dt
import io

import pytest

from gip_airflow.transfers._sql import (
    FLAVOURS,
    RESULT_TABLE,
    VIEW_COLUMNS,
    TableLayoutError,
    create_table_sql,
    load_result_csv,
)
from tests.integration.transfers.test_load_sql import END, START, meta
from tests.unit.test_result_csv import CATEGORY, HOSTILE, csv_bytes

#: The earlier layout, as released before the run-level columns moved to the summary table.
OLD_RESULT_TABLE = (
    ("run_id", "id", True),
    ("row_number", "int", True),
    ("experiment_id", "id", False),
    ("evaluator_id", "id", False),
    ("input_data_from_experiment", "text", False),
    ("input_data_from_experiment_run", "text", False),
    ("output_data_from_experiment", "text", False),
    ("output_data_from_experiment_run", "text", False),
    ("passed", "bool", False),
    ("error_message", "text", False),
    ("score", "text", False),
    ("score_value", "float", False),
    ("rationale", "text", False),
    ("extra", "json", False),
    ("dag_id", "id", False),
    ("logical_date", "ts", False),
    ("data_interval_start", "ts", False),
    ("data_interval_end", "ts", False),
    ("loaded_at", "ts", True),
)
OLD_SUMMARY_TABLE = (
    ("run_id", "id", True),
    ("experiment_id", "id", False),
    ("evaluator_id", "id", False),
    ("status", "id", False),
    ("display_name", "text", False),
    ("item_count", "int", False),
    ("passed_count", "int", False),
    ("failed_count", "int", False),
    ("pass_rate", "float", False),
    ("scored_count", "int", False),
    ("mean_score_value", "float", False),
    ("prompt_tokens", "int", False),
    ("completion_tokens", "int", False),
    ("total_tokens", "int", False),
    ("window_start", "ts", False),
    ("window_end", "ts", False),
    ("dag_id", "id", False),
    ("logical_date", "ts", False),
    ("result_table", "id", False),
    ("loaded_at", "ts", True),
)
LOADED = dt.datetime(2025, 3, 19, 1, 2, 3, 456789, tzinfo=dt.UTC)


def flavour(wh):
    return FLAVOURS["postgresql" if wh.kind == "postgres" else "sqlite"]


def old_tables(wh, *, summary_dag_id: str = "gip_nightly") -> list[dict]:
    """Create and fill tables of the earlier layout: run-old-1 with its summary row, run-old-2 without."""
    fl = flavour(wh)
    ts = fl.timestamp
    ph = wh.hook().placeholder
    statements: list[tuple[str, tuple]] = [
        (create_table_sql(wh.table, fl, OLD_RESULT_TABLE, ("run_id", "row_number")), ()),
        (create_table_sql(wh.summary_table, fl, OLD_SUMMARY_TABLE, ("run_id",)), ()),
    ]
    names = [c for c, _, _ in OLD_RESULT_TABLE]
    insert = f"INSERT INTO {wh.table} ({', '.join(names)}) VALUES ({', '.join([ph] * len(names))})"
    for run, logical in (("run-old-1", START), ("run-old-2", None)):
        for n in (1, 2, 3):
            values = {
                "run_id": run,
                "row_number": n,
                "experiment_id": f"exp-{run}",
                "evaluator_id": "ev-1",
                "input_data_from_experiment": f'[{{"role": "user", "content": "질문 {n}"}}]',
                "passed": n != 2,
                "score": "good" if n != 2 else None,
                "score_value": 2.0 if n != 2 else None,
                "rationale": f"because {n}",
                "extra": f'{{"trace_id": "t-{n}"}}' if run == "run-old-2" else None,
                "dag_id": "gip_nightly",
                "logical_date": logical and ts(logical),
                "data_interval_start": ts(START),
                "data_interval_end": ts(END),
                "loaded_at": ts(LOADED),
            }
            statements.append((insert, tuple(values.get(c) for c in names)))
    summary = {
        "run_id": "run-old-1",
        "experiment_id": "exp-run-old-1",
        "evaluator_id": "ev-1",
        "status": "DONE",
        "item_count": 3,
        "dag_id": summary_dag_id,
        "logical_date": ts(START),
        "result_table": wh.table,
        "loaded_at": ts(LOADED),
    }
    statements.append(
        (
            f"INSERT INTO {wh.summary_table} ({', '.join(summary)}) VALUES ({', '.join([ph] * len(summary))})",
            tuple(summary.values()),
        )
    )
    hook = wh.hook()
    conn = hook.get_conn()
    try:
        cur = conn.cursor()
        for sql, params in statements:
            cur.execute(sql, params)
        conn.commit()
    finally:
        conn.close()
    return wh.query(f"SELECT * FROM {wh.table} ORDER BY run_id, row_number")


def columns(wh, name: str) -> list[str]:
    conn = wh.hook().get_conn()
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {name} WHERE 1 = 0")
        return [d[0] for d in cur.description]
    finally:
        conn.close()


def old_view_rows(wh) -> list[dict]:
    """The old runs' rows through the view, without its last column (superseded_by: all current)."""
    rows = [r for r in wh.rows() if r["run_id"] != "run-new"]
    assert [r.pop("superseded_by") for r in rows] == [None] * len(rows)
    return rows


def new_load(wh, **kwargs):
    return load_result_csv(
        wh.hook(),
        io.BytesIO(csv_bytes(HOSTILE)),
        meta("run-new"),
        table=wh.table,
        metric=CATEGORY,
        fast_path=wh.fast_path,
        **kwargs,
    )


def test_a_load_migrates_the_earlier_layout_and_loses_nothing(warehouse):
    wh = warehouse
    before = old_tables(wh)
    new_load(wh, create_table=True)

    assert columns(wh, wh.table) == [c for c, _, _ in RESULT_TABLE]
    assert columns(wh, wh.view) == list(VIEW_COLUMNS)
    old_rows = old_view_rows(wh)
    assert old_rows == before  # every value of every old row, run-level ones through the view
    summaries = {s["run_id"]: s for s in wh.summaries()}
    assert set(summaries) == {"run-old-1", "run-old-2", "run-new"}
    made = summaries["run-old-2"]  # had no summary row: one was made from its rows
    assert (made["experiment_id"], made["item_count"], made["result_table"]) == ("exp-run-old-2", 3, wh.table)
    assert made["logical_date"] is None and made["loaded_at"] == LOADED
    for run in ("run-old-1", "run-old-2"):
        assert (summaries[run]["data_interval_start"], summaries[run]["data_interval_end"]) == (START, END)
    assert summaries["run-old-1"]["status"] == "DONE"  # the existing summary row kept its values
    assert wh.count("run-new") == len(HOSTILE)

    new_load(wh, create_table=True)  # the next load finds the current layout: nothing to migrate
    assert columns(wh, wh.table) == [c for c, _, _ in RESULT_TABLE]
    assert old_view_rows(wh) == before


def test_without_create_table_the_earlier_layout_is_refused_with_the_way_to_migrate(warehouse):
    wh = warehouse
    before = old_tables(wh)
    with pytest.raises(TableLayoutError) as caught:
        new_load(wh, create_table=False)
    message = str(caught.value)
    assert f"{wh.table} has the layout of an earlier gip-airflow version" in message
    assert "create_table=True" in message and f"ALTER TABLE {wh.table} DROP COLUMN loaded_at" in message
    assert columns(wh, wh.table) == [c for c, _, _ in OLD_RESULT_TABLE]  # untouched
    assert wh.query(f"SELECT * FROM {wh.table} ORDER BY run_id, row_number") == before

    # The statements in the message do the migration by hand; then the load works as it is.
    statements = message.split("one transaction:\n", 1)[1].rstrip(";").split(";\n")
    hook = wh.hook()
    conn = hook.get_conn()
    try:
        cur = conn.cursor()
        if wh.kind == "sqlite":
            cur.execute("BEGIN")
        for statement in statements:
            cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
    new_load(wh, create_table=False)
    assert old_view_rows(wh) == before
    assert wh.count("run-new") == len(HOSTILE)


def test_migration_that_would_lose_values_changes_nothing(warehouse):
    """A summary row that disagrees with its rows' run-level values: dropping those would lose data."""
    wh = warehouse
    before = old_tables(wh, summary_dag_id="another_dag")
    with pytest.raises(TableLayoutError, match=r"3 of its rows hold run-level values .* Nothing was changed"):
        new_load(wh, create_table=True)
    assert columns(wh, wh.table) == [c for c, _, _ in OLD_RESULT_TABLE]
    assert wh.query(f"SELECT * FROM {wh.table} ORDER BY run_id, row_number") == before
    assert [s["run_id"] for s in wh.summaries()] == ["run-old-1"]
    assert "data_interval_start" not in columns(wh, wh.summary_table)
