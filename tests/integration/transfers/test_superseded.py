"""One current summary row per evaluation: a later run of the same evaluation supersedes the earlier ones.

Loads into real PostgreSQL (COPY and executemany) and SQLite through ``load_result_csv``, with the
evaluation key the transfer computes (tests/integration/operators/test_ledger_dags.py runs the DAGs).
"""

from __future__ import annotations

import io
import re
import threading
import time

import psycopg
import pytest

from gip_airflow.transfers._sql import (
    FLAVOURS,
    SUMMARY_ADDED_COLUMNS,
    SUMMARY_TABLE,
    VIEW_COLUMNS,
    create_table_sql,
    create_view_sql,
    ddl,
    load_result_csv,
)
from tests.integration.transfers.conftest import PG, make_sqlite
from tests.integration.transfers.test_load_sql import meta
from tests.unit.test_result_csv import CATEGORY, HOSTILE, csv_bytes

KEY = "a" * 64


def load(wh, run_id: str, key: str | None = KEY, *, create_table: bool = True, progress=None, **values):
    return load_result_csv(
        wh.hook(),
        io.BytesIO(csv_bytes(HOSTILE)),
        meta(run_id, evaluation_key=key, **values),
        table=wh.table,
        metric=CATEGORY,
        create_table=create_table,
        fast_path=wh.fast_path,
        progress=progress,
    )


def superseded(wh) -> dict[str, str | None]:
    """run_id -> superseded_by, from the summary table."""
    return {r["run_id"]: r["superseded_by"] for r in wh.query(f"SELECT * FROM {wh.summary_table}")}


def test_a_later_run_supersedes_and_a_reload_of_the_older_one_keeps_it(warehouse):
    wh = warehouse
    load(wh, "run-1", cost=0.25)
    assert superseded(wh) == {"run-1": None}
    load(wh, "run-2", cost=0.5)  # the same window evaluated again
    assert superseded(wh) == {"run-1": "run-2", "run-2": None}
    (current,) = wh.query(f"SELECT * FROM {wh.summary_table} WHERE superseded_by IS NULL")
    assert (current["run_id"], current["evaluation_key"], current["cost"]) == ("run-2", KEY, 0.5)

    load(wh, "run-1")  # a cleared load of the earlier DAG run: still history, the newer run stays current
    assert superseded(wh) == {"run-1": "run-2", "run-2": None}
    load(wh, "run-2")  # the current run loaded again: nothing changes
    assert superseded(wh) == {"run-1": "run-2", "run-2": None}
    assert wh.count() == 2 * len(HOSTILE)  # both runs' rows are kept, once each
    view = {r["run_id"]: r["superseded_by"] for r in wh.rows()}
    assert view == {"run-1": "run-2", "run-2": None}  # the view's last column says which rows are current

    load(wh, "run-3")
    assert superseded(wh) == {"run-1": "run-2", "run-2": "run-3", "run-3": None}


def test_other_evaluations_and_runs_without_a_key_are_left_alone(warehouse):
    wh = warehouse
    load(wh, "run-1")
    load(wh, "run-other", key="b" * 64)
    load(wh, "run-free-1", key=None)  # load_result_csv called without a key: a run of its own
    load(wh, "run-free-2", key=None)
    assert set(superseded(wh).values()) == {None}


def test_a_run_the_ledger_marked_superseded_is_loaded_as_history(warehouse):
    wh = warehouse
    load(wh, "run-2")
    load(wh, "run-1", superseded_by="run-2")  # the ledger says run-2 replaced it: loaded late, as history
    assert superseded(wh) == {"run-1": "run-2", "run-2": None}


def test_an_existing_summary_table_and_view_get_the_new_columns(warehouse):
    """Tables of the previous release: create_table=False loads without superseding, True migrates."""
    wh = warehouse
    flavour = FLAVOURS["postgresql" if wh.kind == "postgres" else "sqlite"]
    hook = wh.hook()
    previous = tuple(c for c in SUMMARY_TABLE if c[0] not in ("evaluation_key", "superseded_by", "cost"))
    hook.run(
        [
            ddl(wh.table, wh.summary_table, flavour)[0],
            create_table_sql(wh.summary_table, flavour, previous, ("run_id",)),
            re.sub(
                r",\n +s\.superseded_by +AS superseded_by",
                "",
                create_view_sql(wh.table, wh.summary_table, flavour),
            ),
        ]
    )
    load(wh, "run-1", create_table=False)
    load(wh, "run-2", create_table=False)  # no column to mark it in: both stay as they were
    assert "superseded_by" not in wh.summaries()[0] and len(wh.summaries()) == 2

    load(wh, "run-3")  # create_table=True adds the columns and the view's last column
    summary = wh.summaries()
    assert {c for c in SUMMARY_ADDED_COLUMNS} <= set(summary[0])
    assert list(wh.rows()[0]) == list(VIEW_COLUMNS)
    # run-1 and run-2 have no key (loaded before the column): only run-3's evaluation is current
    assert superseded(wh) == {"run-1": None, "run-2": None, "run-3": None}
    load(wh, "run-4")
    assert superseded(wh) == {"run-1": None, "run-2": None, "run-3": "run-4", "run-4": None}


def test_a_load_into_a_summary_table_with_a_custom_view_keeps_the_view(warehouse):
    """A view named <table>_v that this provider did not make is not replaced."""
    wh = warehouse
    hook = wh.hook()
    flavour = FLAVOURS["postgresql" if wh.kind == "postgres" else "sqlite"]
    statements = ddl(wh.table, wh.summary_table, flavour)[:2]
    statements.append(f"CREATE VIEW {wh.view} AS SELECT run_id FROM {wh.table}")
    hook.run(statements)
    load(wh, "run-1")
    load(wh, "run-2")
    assert list(wh.query(f"SELECT * FROM {wh.view}")[0]) == ["run_id"]
    assert superseded(wh) == {"run-1": "run-2", "run-2": None}


def blocked_load(wh, run_id: str, release: threading.Event, inside: threading.Event):
    """A load that stops inside its transaction (after its summary row) until ``release``."""

    def progress(_stats):
        inside.set()
        assert release.wait(60), "the test never released the first load"

    errors: list[BaseException] = []

    def work():
        try:
            load(wh, run_id, progress=progress)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, errors


def waiting_for_advisory_lock(app: str) -> int:
    """Connections of this test's loads (by application_name) waiting for an advisory lock."""
    with psycopg.connect(**PG, autocommit=True) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = %s",
            (app,),
        ).fetchone()
    return int(n)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_two_runs_of_one_evaluation_loaded_at_once_leave_one_current(kind, request, monkeypatch, tmp_path):
    wh = request.getfixturevalue("postgres") if kind == "postgres" else make_sqlite(monkeypatch, tmp_path)
    load(wh, "run-0")
    release, inside = threading.Event(), threading.Event()
    first, first_errors = blocked_load(wh, "run-1", release, inside)
    assert inside.wait(60)  # run-1 has written its summary row, uncommitted
    second_errors: list[BaseException] = []

    def second_load():
        try:
            load(wh, "run-2")
        except BaseException as exc:
            second_errors.append(exc)

    second = threading.Thread(target=second_load)
    second.start()
    try:
        if kind == "postgres":  # wait until the second load waits for the evaluation's lock (or is done)
            deadline = time.monotonic() + 30
            while second.is_alive() and not waiting_for_advisory_lock(wh.app) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:  # SQLite: the second load waits for the write lock (within the driver's 5 s busy timeout)
            time.sleep(0.5)
    finally:
        release.set()
    first.join(60)
    second.join(60)
    assert not first_errors and not second_errors, (first_errors, second_errors)
    assert superseded(wh) == {"run-0": "run-1", "run-1": "run-2", "run-2": None}
