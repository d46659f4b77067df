"""Loading result CSVs into real PostgreSQL and SQLite: create, load, reload, failures, content, summary."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from gip_airflow.api import RESULT_CSV_COLUMNS, BoolMetric, NumericMetric
from gip_airflow.transfers._result_csv import ResultCsvError
from gip_airflow.transfers._sql import FLAVOURS, RunMeta, ddl, load_result_csv
from tests.integration.transfers.conftest import PG, make_postgres
from tests.unit.test_result_csv import BAD_CASES, CATEGORY, HOSTILE, csv_bytes, row

UTC = dt.UTC
START = dt.datetime(2025, 3, 18, tzinfo=UTC)
END = dt.datetime(2025, 3, 19, tzinfo=UTC)


def meta(run_id: str = "run-a", **kwargs) -> RunMeta:
    values = {
        "experiment_id": "exp-1",
        "evaluator_id": "ev-1",
        "status": "DONE",
        "display_name": "nightly 평가",
        "prompt_tokens": 751295,
        "completion_tokens": 26534,
        "total_tokens": 777829,
        "dag_id": "gip_nightly",
        "logical_date": None,
        "data_interval_start": START,
        "data_interval_end": END,
        "window_start": START,
        "window_end": END,
    }
    values.update(kwargs)
    return RunMeta(run_id=run_id, **values)


def load(wh, data: bytes | str, run_id: str = "run-a", metric=CATEGORY, **kwargs):
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    kwargs.setdefault("create_table", True)
    kwargs.setdefault("fast_path", wh.fast_path)
    return load_result_csv(
        wh.hook(), source, meta(run_id, **kwargs.pop("meta", {})), table=wh.table, metric=metric, **kwargs
    )


def expected(rows):
    return [{c: (v or None) for c, v in zip(RESULT_CSV_COLUMNS, r)} for r in rows]


def documented(db_rows):
    return [{c: r[c] for c in RESULT_CSV_COLUMNS if c != "passed"} for r in db_rows]


def without_passed(rows):
    return [{k: v for k, v in r.items() if k != "passed"} for r in rows]


def test_create_load_and_summary(warehouse):
    wh = warehouse
    rows = HOSTILE * 3
    result = load(wh, csv_bytes(rows, bom=True))
    assert result.method == ("COPY" if wh.fast_path and wh.kind == "postgres" else "executemany")
    assert result.stats.rows == 12

    got = wh.rows()
    assert documented(got) == without_passed(expected(rows))  # byte-exact text, '' -> NULL
    assert [r["passed"] for r in got] == [True, False, True, True] * 3
    assert [r["score_value"] for r in got] == [2.0, None, 1.0, 0.0] * 3
    assert [r["row_number"] for r in got] == list(range(1, 13))
    first = got[0]
    assert (first["run_id"], first["experiment_id"], first["evaluator_id"], first["dag_id"]) == (
        "run-a",
        "exp-1",
        "ev-1",
        "gip_nightly",
    )
    assert first["logical_date"] is None and first["extra"] is None
    assert first["data_interval_start"] == START and first["data_interval_end"] == END
    assert first["loaded_at"] == result.loaded_at

    (summary,) = wh.summaries()
    assert summary == {
        "run_id": "run-a",
        "experiment_id": "exp-1",
        "evaluator_id": "ev-1",
        "status": "DONE",
        "display_name": "nightly 평가",
        "item_count": 12,
        "passed_count": 9,
        "failed_count": 3,
        "pass_rate": 0.75,
        "scored_count": 9,
        "mean_score_value": 1.0,
        "prompt_tokens": 751295,
        "completion_tokens": 26534,
        "total_tokens": 777829,
        "window_start": START,
        "window_end": END,
        "dag_id": "gip_nightly",
        "logical_date": None,
        "data_interval_start": START,
        "data_interval_end": END,
        "result_table": wh.table,
        "loaded_at": summary["loaded_at"],
        "task_id": None,
        "map_index": None,
        "dag_run_id": None,
        "evaluation_key": None,
        "superseded_by": None,
        "cost": None,
    }


def test_primary_key_is_the_run_id_index(warehouse):
    wh = warehouse
    load(wh, csv_bytes([row()]))
    if wh.kind == "postgres":
        schema, table = wh.table.split(".")
        defs = [
            r["indexdef"]
            for r in wh.query(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = ? AND tablename = ?", (schema, table)
            )
        ]
        assert any("(run_id, row_number)" in d for d in defs), defs
    else:
        (index,) = wh.query(f"SELECT name FROM pragma_index_list('{wh.table}')")
        cols = wh.query(f"SELECT name FROM pragma_index_info('{index['name']}')")
        assert [c["name"] for c in cols] == ["run_id", "row_number"]


def test_reload_replaces_the_run_and_keeps_others(warehouse):
    wh = warehouse
    load(wh, csv_bytes([row(rationale=f"a{i}") for i in range(10)]), "run-a")
    load(wh, csv_bytes([row(rationale=f"b{i}") for i in range(5)]), "run-b")
    load(wh, csv_bytes([row(rationale=f"a{i}") for i in range(10)]), "run-a")  # the same load again
    assert wh.count("run-a") == 10 and wh.count("run-b") == 5
    load(wh, csv_bytes([row(rationale=f"new{i}", passed="False") for i in range(3)]), "run-a")
    assert [r["rationale"] for r in wh.rows("run-a")] == ["new0", "new1", "new2"]
    assert wh.count("run-b") == 5
    summaries = {s["run_id"]: s for s in wh.summaries()}
    assert sorted(summaries) == ["run-a", "run-b"]
    assert summaries["run-a"]["item_count"] == 3 and summaries["run-a"]["pass_rate"] == 0.0


def big_file(rows: int, bad_at: int | None = None, marker: str = "v1") -> bytes:
    """A few MB over many 1 MiB blocks; optionally a broken row at ``bad_at``."""
    data = csv_bytes(
        [
            row(rationale=f"{marker} {i}\n" + "평가 근거 " * 150, input_data_from_experiment="x" * 300)
            for i in range(rows)
        ]
    )
    if bad_at is None:
        return data
    records = data.split(b"\r\n")  # the rationale's own newline is a bare LF
    records[bad_at] = b'a,b,c,d,True,,good,"unterminated'
    return b"\r\n".join(records)


def state(wh):
    return wh.rows(), wh.summaries()


def test_bad_row_half_way_leaves_the_previous_load(warehouse):
    wh = warehouse
    load(wh, big_file(3000, marker="v1"))
    before = state(wh)
    with pytest.raises(
        ResultCsvError,
        match=r"row 2900 \(line 5800\): field 8 \('rationale'\): unexpected b'v' after the closing",
    ):
        load(wh, big_file(3000, bad_at=2900, marker="v2"), meta={"display_name": "second"})
    assert state(wh) == before


def test_failure_between_blocks_rolls_back(warehouse):
    wh = warehouse
    load(wh, csv_bytes([row()] * 7))
    before = state(wh)
    calls = []

    def crash(stats):
        calls.append(stats.rows)
        if len(calls) == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        load(wh, big_file(2000), progress=crash)
    assert state(wh) == before


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_csv_commits_nothing(warehouse, case):
    wh = warehouse
    load(wh, csv_bytes([row(rationale="kept")]), "run-a")
    before = state(wh)
    data = BAD_CASES[case][0]
    with pytest.raises(ResultCsvError) as err:
        load(wh, data, "run-a")
    assert BAD_CASES[case][1] in str(err.value)
    with pytest.raises(ResultCsvError):
        load(wh, data, "run-new")
    assert state(wh) == before


def test_huge_fields_and_hostile_content_round_trip(warehouse):
    wh = warehouse
    huge = json.dumps(
        [{"role": "user", "content": '긴 대화 "인용"\r\n' * 150_000}], ensure_ascii=False
    )  # ~3.5 MB
    rows = [*HOSTILE, row(input_data_from_experiment=huge, rationale=huge[::-1]), *HOSTILE]
    load(wh, csv_bytes(rows, terminator="\n", quoting=csv.QUOTE_ALL, bom=True))
    got = wh.rows()
    assert documented(got) == without_passed(expected(rows))
    assert len(got[4]["input_data_from_experiment"].encode()) == len(huge.encode())


def test_extra_columns_go_to_json(warehouse):
    wh = warehouse
    header = ["trace_id", *RESULT_CSV_COLUMNS, "latency_ms", "note"]
    rows = [["t-1", *row(), "1200", ""], ["t-2", *row(score="bad"), "", 'say "hi", 안녕\n!']]
    load(wh, csv_bytes(rows, header=header))
    got = wh.rows()
    assert [r["extra"] for r in got] == [
        {"trace_id": "t-1", "latency_ms": "1200", "note": None},
        {"trace_id": "t-2", "latency_ms": None, "note": 'say "hi", 안녕\n!'},
    ]
    assert documented(got) == without_passed(expected([r[1:9] for r in rows]))
    assert [r["score_value"] for r in got] == [2.0, 0.0]


@pytest.mark.parametrize(
    ("metric", "scores", "values"),
    [
        (CATEGORY, ["good", "neutral", "bad", "GOOD", "other", ""], [2.0, 1.0, 0.0, 2.0, None, None]),
        (
            NumericMetric(config={"min": {"value": 0}, "max": {"value": 5}}),
            ["4.5", "0", "5", "1e0", "n/a", ""],
            [4.5, 0.0, 5.0, 1.0, None, None],
        ),
        (BoolMetric(), ["true", "false", "True", "0", "yes", "x"], [1.0, 0.0, 1.0, 0.0, 1.0, None]),
        (None, ["0.25", "true", "good", "", "-3", "false"], [0.25, 1.0, None, None, -3.0, 0.0]),
    ],
    ids=["category", "numeric", "bool", "no-metric"],
)
def test_score_value_per_metric_type(warehouse, metric, scores, values):
    wh = warehouse
    result = load(wh, csv_bytes([row(score=s) for s in scores]), metric=metric)
    got = wh.rows()
    assert [r["score"] for r in got] == [s or None for s in scores]
    assert [r["score_value"] for r in got] == values
    known = [v for v in values if v is not None]
    (summary,) = wh.summaries()
    assert summary["scored_count"] == len(known) == result.stats.scored
    assert summary["mean_score_value"] == pytest.approx(sum(known) / len(known))


def test_empty_run(warehouse):
    wh = warehouse
    load(wh, csv_bytes([row()] * 3))
    load(wh, csv_bytes([]))
    assert wh.count() == 0
    (summary,) = wh.summaries()
    assert summary["item_count"] == 0 and summary["pass_rate"] is None and summary["mean_score_value"] is None


def test_manual_run_without_logical_date_and_window(warehouse):
    wh = warehouse
    logical = dt.datetime(2025, 3, 18, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    load(
        wh,
        csv_bytes([row()]),
        meta={"logical_date": logical, "window_start": None, "window_end": None, "dag_id": None},
    )
    (r,) = wh.rows()
    assert r["logical_date"] == logical and r["dag_id"] is None
    (summary,) = wh.summaries()
    assert summary["window_start"] is None and summary["logical_date"] == logical


def test_table_names_are_checked(warehouse):
    wh = warehouse
    for bad in ("results; DROP TABLE x", "a.b.c", "1abc", "", "x" * 70):
        with pytest.raises(ValueError, match="is not a plain"):
            load_result_csv(wh.hook(), io.BytesIO(csv_bytes([row()])), meta(), table=bad)


def test_missing_table_without_create_table(warehouse):
    wh = warehouse
    with pytest.raises(Exception, match=r"(?i)(does not exist|no such table)"):
        load(wh, csv_bytes([row()]), create_table=False)


def test_existing_table_created_from_documented_ddl(warehouse):
    """A table created by hand from the documented DDL works with create_table=False."""
    wh = warehouse
    hook = wh.hook()
    for statement in ddl(
        wh.table, wh.summary_table, FLAVOURS["postgresql" if wh.kind == "postgres" else "sqlite"]
    ):
        hook.run(statement)
    load(wh, csv_bytes([row()] * 2), create_table=False)
    assert wh.count() == 2


# -- PostgreSQL specifics --------------------------------------------------------------------------


def test_dropped_connection_mid_load(postgres):
    import psycopg

    wh = postgres
    load(wh, csv_bytes([row(rationale="first")] * 5))
    before = state(wh)
    killed = []

    def drop_connection(stats):
        if not killed:
            with psycopg.connect(**PG, autocommit=True) as admin:
                killed.extend(
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                        (wh.app,),
                    ).fetchall()
                )

    with pytest.raises(psycopg.OperationalError):
        load(wh, big_file(3000), progress=drop_connection)
    assert killed == [(True,)]
    assert state(wh) == before
    load(wh, big_file(10))  # and the run can be loaded again at once
    assert wh.count() == 10


def test_concurrent_loads_of_one_run_leave_one_copy(postgres):
    wh = postgres
    load(wh, csv_bytes([row()]))
    errors: list[BaseException] = []

    def run_load(marker: str) -> None:
        try:
            load(wh, big_file(1500, marker=marker))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_load, args=(m,)) for m in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wh.count("run-a") == 1500
    assert len({r["rationale"].split()[0] for r in wh.rows()}) == 1  # one load's rows, not a mix
    assert len(errors) <= 1
    assert all("duplicate key" in str(e) for e in errors)


def test_concurrent_first_loads_into_a_new_table(postgres):
    """Mapped loads start together against a table nobody has created yet: every one of them succeeds."""
    wh = postgres
    hook = wh.hook()
    for attempt in range(4):
        table = f"{wh.table}_{attempt}"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run_load(i: int, table: str = table, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                load_result_csv(
                    hook,
                    io.BytesIO(csv_bytes([row()] * 3)),
                    meta(f"run-{i}"),
                    table=table,
                    metric=CATEGORY,
                    create_table=True,
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run_load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        (n,) = wh.query(f"SELECT count(*) AS n FROM {table}")
        assert n["n"] == 12


def test_psycopg2_connection_uses_copy_expert(monkeypatch):
    """The COPY seam also works with a psycopg2 connection (``copy_expert`` fed by the same blocks)."""
    import psycopg2
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    wh = make_postgres(monkeypatch)

    class Psycopg2Hook(DbApiHook):
        conn_name_attr = "conn_id"
        dialect_name = "postgresql"
        placeholder = "%s"

        def get_conn(self):
            return psycopg2.connect(**PG)

    try:
        result = load_result_csv(
            Psycopg2Hook(),
            io.BytesIO(csv_bytes(HOSTILE)),
            meta(),
            table=wh.table,
            metric=CATEGORY,
            create_table=True,
        )
        assert result.method == "COPY"
        assert documented(wh.rows()) == without_passed(expected(HOSTILE))
    finally:
        for fn in wh.cleanup:
            fn()


def test_generic_flavour_ddl_and_load(monkeypatch, tmp_path):
    """Another database gets the generic DDL (VARCHAR ids, UTC TIMESTAMP) and its dialect's quoting.

    Here a SQLite file poses as MySQL, where ``row_number`` is a reserved word: the hook's common.sql
    dialect quotes it in the DDL and in every statement.
    """
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    from tests.integration.transfers.conftest import make_sqlite

    wh = make_sqlite(monkeypatch, tmp_path)

    class MySqlLikeHook(SqliteHook):
        dialect_name = "mysql"

    hook = MySqlLikeHook(sqlite_conn_id=wh.conn_id)
    load_result_csv(
        hook, io.BytesIO(csv_bytes([row()] * 2)), meta(logical_date=START), table=wh.table, create_table=True
    )
    (table_sql,) = wh.query(f"SELECT sql FROM sqlite_master WHERE name = '{wh.table}'")
    sql = " ".join(table_sql["sql"].split())
    assert "run_id VARCHAR(255) NOT NULL" in sql and "logical_date" not in sql
    assert '"row_number" BIGINT NOT NULL' in sql and 'PRIMARY KEY (run_id, "row_number")' in sql
    (summary_sql,) = wh.query(f"SELECT sql FROM sqlite_master WHERE name = '{wh.summary_table}'")
    assert "logical_date TIMESTAMP," in " ".join(summary_sql["sql"].split())
    (view_sql,) = wh.query(f"SELECT sql FROM sqlite_master WHERE name = '{wh.view}'")
    assert view_sql["sql"].startswith(f"CREATE VIEW {wh.view} AS")  # the generic form
    assert 'r."row_number"' in view_sql["sql"]
    rows = wh.query(f"SELECT logical_date, passed, row_number FROM {wh.view}")
    assert rows[0]["logical_date"] == dt.datetime(2025, 3, 18)  # naive UTC, as the generic DDL says
    assert [r["row_number"] for r in rows] == [1, 2]


# -- a killed worker -------------------------------------------------------------------------------

KILLED_LOADER = textwrap.dedent(
    """
    import io, os, sys, time
    from airflow.sdk import BaseHook
    from gip_airflow.transfers._sql import RunMeta, load_result_csv

    conn_id, table, path, flag = sys.argv[1:5]
    hook = BaseHook.get_connection(conn_id).get_hook()

    def stall(stats):
        if stats.rows > 500:
            open(flag, "w").close()
            time.sleep(120)  # mid-transaction, until killed

    load_result_csv(hook, path, RunMeta(run_id="run-a"), table=table, progress=stall)
    """
)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_killed_worker_leaves_previous_state(kind, monkeypatch, tmp_path):
    from tests.integration.transfers.conftest import make_sqlite

    wh = make_postgres(monkeypatch) if kind == "postgres" else make_sqlite(monkeypatch, tmp_path)
    try:
        load(wh, csv_bytes([row(rationale="survivor")] * 4))
        before = state(wh)
        path = tmp_path / "big.csv"
        path.write_bytes(big_file(3000))
        flag = tmp_path / "mid-load"
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_LOADER, wh.conn_id, wh.table, str(path), str(flag)],
            env=os.environ.copy(),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not flag.exists():
                assert proc.poll() is None, "the loader exited early"
                assert time.monotonic() < deadline, "the loader never got half-way"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert state(wh) == before
        load(wh, csv_bytes([row()] * 2))  # no lock or journal left behind
        assert wh.count() == 2
    finally:
        for fn in wh.cleanup:
            fn()


def test_invalid_utf8_deep_in_a_big_file(warehouse):
    """On the COPY path PostgreSQL checks the encoding; the error still names the row and column."""
    wh = warehouse
    load(wh, csv_bytes([row(rationale="kept")]))
    before = state(wh)
    data = big_file(3000)
    records = data.split(b"\r\n")
    records[2500] = records[2500].replace("평가".encode(), b"\xed\xa0\x80", 1)  # a UTF-8-encoded surrogate
    with pytest.raises(
        ResultCsvError, match=r"row 2500 \(line 5000\): invalid UTF-8 \(byte 0xed\) in column 'rationale'"
    ):
        load(wh, b"\r\n".join(records))
    assert state(wh) == before


def test_summary_records_the_loading_task(warehouse):
    """task_id, map_index and the Airflow run id land in the summary row (the Evaluations view links them)."""
    wh = warehouse
    load(wh, csv_bytes([row()]), meta={"task_id": "load_results", "map_index": 2, "dag_run_id": "manual__1"})
    (summary,) = wh.summaries()
    assert (summary["task_id"], summary["map_index"], summary["dag_run_id"]) == (
        "load_results",
        2,
        "manual__1",
    )


def test_summary_table_without_the_task_columns(warehouse):
    """A summary table from before task_id/map_index/dag_run_id: loads without them, create_table adds them."""
    wh = warehouse
    kind = "postgresql" if wh.kind == "postgres" else "sqlite"
    from gip_airflow.transfers._sql import SUMMARY_ADDED_COLUMNS, SUMMARY_TABLE, create_table_sql

    hook = wh.hook()
    hook.run(ddl(wh.table, wh.summary_table, FLAVOURS[kind])[0])
    before = tuple(c for c in SUMMARY_TABLE if c[0] not in SUMMARY_ADDED_COLUMNS)
    hook.run(create_table_sql(wh.summary_table, FLAVOURS[kind], before, ("run_id",)))
    meta_values = {"task_id": "load", "map_index": None, "dag_run_id": "r1"}
    load(wh, csv_bytes([row()]), create_table=False, meta=meta_values)
    (summary,) = wh.summaries()
    assert "task_id" not in summary and summary["item_count"] == 1
    load(wh, csv_bytes([row()] * 2), create_table=True, meta=meta_values)
    (summary,) = wh.summaries()
    assert (summary["task_id"], summary["dag_run_id"], summary["item_count"]) == ("load", "r1", 2)


def _compressions(wh, column: str) -> dict[str | None, int]:
    rows = wh.query(
        f"SELECT pg_column_compression({column}) AS method, count(*) AS n FROM {wh.table} GROUP BY 1"
    )
    return {r["method"]: r["n"] for r in rows}


@pytest.mark.parametrize("fast_path", [True, False], ids=["copy", "executemany"])
def test_postgres_compresses_wide_rows_with_lz4_and_keeps_the_content(monkeypatch, tmp_path, fast_path):
    from tests.perf.benchmarks.result_csv import write_result_csv

    wh = make_postgres(monkeypatch, fast_path=fast_path)
    try:
        (lz4,) = wh.query(
            "SELECT count(*) AS n FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
        if not lz4["n"]:
            pytest.skip("this PostgreSQL has no lz4")
        path = tmp_path / "wide.csv"
        write_result_csv(path, 300, row_chars=1500, seed=5, pool=300)  # rows of about 2 KB
        load(wh, str(path))
        # about half the rows are over the TOAST threshold, and lz4 compresses some of their values
        methods = _compressions(wh, "rationale")
        assert methods.get("lz4", 0) > 30 and "pglz" not in methods, methods
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))[1:]
        got = wh.query(f"SELECT {', '.join(RESULT_CSV_COLUMNS)} FROM {wh.table} ORDER BY row_number")
        want = [{**e, "passed": e["passed"] == "True"} for e in expected(rows)]
        assert got == want
    finally:
        for fn in wh.cleanup:
            fn()


def test_postgres_column_with_its_own_compression_keeps_it(postgres, tmp_path):
    from tests.perf.benchmarks.result_csv import write_result_csv

    wh = postgres
    path = tmp_path / "wide.csv"
    write_result_csv(path, 300, row_chars=1500, seed=5, pool=300)
    load(wh, str(path))
    hook = wh.hook()
    conn = hook.get_conn()
    try:
        conn.cursor().execute(f"ALTER TABLE {wh.table} ALTER COLUMN rationale SET COMPRESSION pglz")
        conn.commit()
    finally:
        conn.close()
    load(wh, str(path))  # the same run again: every row written anew
    assert set(_compressions(wh, "rationale")) <= {"pglz", None}
    assert "pglz" in _compressions(wh, "rationale")
    assert "lz4" in _compressions(wh, "input_data_from_experiment")
