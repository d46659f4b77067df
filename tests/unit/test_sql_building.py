"""The SQL the transfer writes: table-name checks, DDL per database flavour, identifier quoting, the
INSERT fallback, COPY cells, SQLite's raw-field unquoting and the read-ahead thread. SQLite runs in
memory (no file, no server)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gip_airflow.transfers import _sql
from gip_airflow.transfers._sql import (
    FLAVOURS,
    RESULT_TABLE,
    SUMMARY_TABLE,
    check_table_name,
    ddl,
    in_background,
    insert_sql,
    quoter,
)


@pytest.mark.parametrize("name", ["results", "analytics.gip_results", "_t1", "a" * 58 + "." + "b" * 58])
def test_plain_table_names_pass(name):
    assert check_table_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "1results", "results; DROP TABLE x", 'res"ults', "a.b.c", "a" * 59, "gip-results", None, 42],
)
def test_table_names_that_would_need_quoting_are_refused_naming_the_rule(name):
    with pytest.raises(ValueError, match=r"summary table .* is not a plain \[schema\.\]table name"):
        check_table_name(name, "summary table")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_ddl_declares_every_column_with_its_flavours_type_and_key(flavour):
    results, summary, view = ddl("r", "s", FLAVOURS[flavour])
    assert results.startswith("CREATE TABLE IF NOT EXISTS r (")
    assert view.startswith(FLAVOURS[flavour].create_view) and " r_v AS" in view
    assert "PRIMARY KEY (run_id, row_number)" in results
    assert "PRIMARY KEY (run_id)" in summary
    types = FLAVOURS[flavour].types
    for column, kind, not_null in RESULT_TABLE:
        line = next(ln.strip().rstrip(",") for ln in results.splitlines() if ln.strip().split()[0] == column)
        assert line.split()[1] == types[kind].split()[0], line
        assert line.endswith("NOT NULL") is not_null, line


def test_sqlite_ddl_creates_the_tables_it_describes():
    db = sqlite3.connect(":memory:")
    for statement in ddl("results", "summary", FLAVOURS["sqlite"]):
        db.execute(statement)
        db.execute(statement)  # IF NOT EXISTS: a second load does not fail
    columns = [row[1] for row in db.execute("PRAGMA table_info(results)")]
    assert columns == [c for c, _, _ in RESULT_TABLE]
    keys = {row[1]: row[5] for row in db.execute("PRAGMA table_info(summary)")}
    assert [c for c, k in keys.items() if k] == ["run_id"] and list(keys) == [c for c, _, _ in SUMMARY_TABLE]


def test_quoting_follows_the_hooks_dialect():
    mysql = SimpleNamespace(
        dialect=SimpleNamespace(escape_word=lambda w: f"`{w}`" if w == "row_number" else w)
    )
    assert quoter(mysql)("row_number") == "`row_number`"
    results, _, _ = ddl("r", "s", FLAVOURS["generic"], quoter(mysql))
    assert "PRIMARY KEY (run_id, `row_number`)" in results
    assert quoter(SimpleNamespace())("row_number") == "row_number"  # no dialect: names stay plain


def test_insert_sql_uses_the_dialect_or_falls_back_to_the_placeholder():
    class Dialect:
        def generate_insert_sql(self, table, values, target_fields):
            return f"INSERT INTO {table} <dialect> {','.join(target_fields)}"

    with_dialect = SimpleNamespace(dialect=Dialect(), placeholder="%s")
    assert insert_sql(with_dialect, "t", ["a", "b"]) == "INSERT INTO t <dialect> a,b"

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("no dialect for this driver")

    fallback = SimpleNamespace(dialect=Broken(), placeholder="?")
    assert insert_sql(fallback, "t", ["a", "b", "c"]) == "INSERT INTO t (a, b, c) VALUES (?, ?, ?)"


def test_copy_cells_quote_text_and_leave_null_empty():
    assert _sql._csv_cell(None) == b""
    assert _sql._csv_cell('say "hi", ok') == b'"say ""hi"", ok"'
    assert _sql._csv_cell("한국어") == '"한국어"'.encode()
    seoul = dt.timezone(dt.timedelta(hours=9))
    assert _sql._csv_cell(dt.datetime(2025, 1, 1, 9, tzinfo=seoul)) == b'"2025-01-01T00:00:00+00:00"'


def test_timestamps_are_stored_in_utc_per_flavour():
    moment = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert FLAVOURS["postgresql"].timestamp(moment) == dt.datetime(2025, 3, 1, 0, 30, tzinfo=dt.UTC)
    assert FLAVOURS["sqlite"].timestamp(moment) == "2025-03-01T00:30:00+00:00"
    assert FLAVOURS["generic"].timestamp(moment) == dt.datetime(2025, 3, 1, 0, 30)


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")))
def test_sqlite_stores_a_csv_fields_inner_bytes_as_its_text(text):
    # The loader strips a quoted field's outer quotes; SQLite undoubles the inner ones.
    db = sqlite3.connect(":memory:")
    expression = FLAVOURS["sqlite"].bytes_as_text("?1")
    inner = text.replace('"', '""').encode()
    assert db.execute(f"SELECT {expression}", (inner,)).fetchone()[0] == text


def test_read_ahead_keeps_order_and_reraises_the_readers_error():
    assert list(in_background(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad CSV record 2")

    items = in_background(failing())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad CSV record 2"):
        next(items)


def test_leaving_the_read_ahead_early_stops_its_thread():
    produced: list[int] = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    items = in_background(endless(), depth=2)
    assert next(items) == 0
    items.close()
    time.sleep(0.05)
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count  # nothing read after the consumer left
    assert threading.active_count() == before


def test_the_transfer_operator_checks_its_settings_when_the_dag_is_parsed():
    from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

    op = GipToSqlOperator(
        task_id="load", run_id="r", conn_id="wh", table="gip.results", metric={"type": "bool"}
    )
    assert op.metric.type == "bool"
    assert [a.name for a in op.outlets][-1].endswith("/wh/gip.results_runs")
    templated = GipToSqlOperator(task_id="load2", run_id="r", conn_id="wh", table="{{ params.table }}")
    assert templated.outlets == []  # no asset for a table only known at run time
    for kwargs, message in (
        ({"table": "results; drop"}, r"table 'results; drop' is not a plain"),
        ({"table": "t", "summary_table": "s-1"}, r"summary_table 's-1' is not a plain"),
        ({"table": "t", "metric": {"type": "stars"}}, "is not a GIP metric"),
        ({"table": "t", "batch_rows": 0}, "batch_rows must be at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            GipToSqlOperator(task_id="bad", run_id="r", conn_id="wh", **kwargs)


def test_the_derived_evaluation_key_is_the_window_of_one_task():
    """Without a ledger, a re-run of a window has the same key; another window, task or evaluator not."""
    import dataclasses
    import datetime as dt

    from gip_airflow.transfers._sql import RunMeta
    from gip_airflow.transfers.gip_to_sql import derived_evaluation_key

    start = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    base = RunMeta(
        run_id="r1",
        experiment_id="exp",
        evaluator_id="ev",
        dag_id="dag",
        task_id="load",
        map_index=-1,
        window_start=start,
        window_end=start + dt.timedelta(days=1),
        dag_run_id="scheduled__1",
    )
    key = derived_evaluation_key(base)
    assert len(key) == 64
    same = dataclasses.replace(base, run_id="r2", dag_run_id="manual__2", status="DONE")
    assert derived_evaluation_key(same) == key  # a new DAG run of the same window
    kst = dt.timezone(dt.timedelta(hours=9))
    assert derived_evaluation_key(dataclasses.replace(base, window_start=start.astimezone(kst))) == key
    for change in (
        {"window_start": start + dt.timedelta(days=1)},
        {"task_id": "load_2"},
        {"map_index": 1},
        {"evaluator_id": "ev-2"},
        {"experiment_id": "exp-2"},
        {"dag_id": "other"},
    ):
        assert derived_evaluation_key(dataclasses.replace(base, **change)) != key, change
    windowless = dataclasses.replace(base, window_start=None, window_end=None)
    assert derived_evaluation_key(windowless) != derived_evaluation_key(
        dataclasses.replace(windowless, dag_run_id="manual__2")
    )  # without a window, each DAG run is its own evaluation
