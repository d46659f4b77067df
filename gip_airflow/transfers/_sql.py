"""Load a validated result CSV into SQL tables: table layout, DDL, and the one database seam.

Everything database-specific lives here, in two small places:

* :data:`FLAVOURS` — column types, how timestamps and text are bound, and set-up statements, keyed
  by the hook's ``dialect_name`` (``postgresql``, ``sqlite``, anything else gets ``generic``);
* :func:`open_sink` — how rows get in, chosen by what the DB-API cursor can do: PostgreSQL's
  ``COPY ... FROM STDIN`` when the driver offers it (psycopg 3 ``cursor.copy``, psycopg2
  ``cursor.copy_expert``), else batched ``executemany`` with the INSERT statement built by the hook's
  common.sql dialect (identifiers quoted by it too).

:func:`load_result_csv` runs the whole load in ONE transaction on one connection: delete the run's
previous rows and summary row, stream the new rows in, write the summary row, commit. Any failure
(bad row, lost connection, killed process) rolls back and leaves the previous state as it was.

Result rows hold only row-level data; the run's facts live once, in the summary table, and the view
``<table>_v`` joins the two. :func:`prepare_tables` creates what is missing and migrates tables of the
earlier layout (run-level columns in every row) in one transaction.

Why not ``DbApiHook.insert_rows(..., executemany=True)``: it opens its own connection and commits
every ``commit_every`` rows (or, with ``commit_every=0``, builds one list of all rows in memory), so it
cannot share a transaction with the delete and cannot be both streaming and atomic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import re
import threading
import time
from contextlib import closing, suppress
from dataclasses import dataclass
from itertools import repeat
from operator import methodcaller
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from gip_airflow.api import RESULT_CSV_COLUMNS
from gip_airflow.exceptions import GipError
from gip_airflow.transfers._result_csv import (
    Batch,
    ResultCsvReader,
    Stats,
    first_error,
    unquote,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from gip_airflow.transfers._result_csv import Metric

log = logging.getLogger(__name__)
T = TypeVar("T")

# -------------------------------------------------------------------------------------------------
# Table layout
# -------------------------------------------------------------------------------------------------

#: Results table: (column, kind, NOT NULL). Kinds map to types per flavour. Only row-level data: the
#: CSV's columns plus the run they belong to, their position, and the values derived from them.
RESULT_TABLE: tuple[tuple[str, str, bool], ...] = (
    ("run_id", "id", True),
    ("row_number", "int", True),
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
)

#: Per-run summary table, one row per run (primary key run_id): the run-level facts live here only.
SUMMARY_TABLE: tuple[tuple[str, str, bool], ...] = (
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
    ("data_interval_start", "ts", False),
    ("data_interval_end", "ts", False),
    ("result_table", "id", False),
    ("loaded_at", "ts", True),
    ("task_id", "id", False),
    ("map_index", "int", False),
    ("dag_run_id", "id", False),
    ("evaluation_key", "id", False),
    ("superseded_by", "id", False),
    ("cost", "float", False),
)

#: Summary columns added after the first release: added to an existing table by ``create_table=True``,
#: and left out of the INSERT when a table created by hand lacks them.
SUMMARY_ADDED_COLUMNS = ("task_id", "map_index", "dag_run_id", "evaluation_key", "superseded_by", "cost")
#: What superseding needs; without them a load writes its row and supersedes nothing.
SUPERSEDE_COLUMNS = ("evaluation_key", "superseded_by")

#: Run-level facts that earlier versions repeated in every result row; the view adds them back.
RUN_LEVEL_COLUMNS = (
    "experiment_id",
    "evaluator_id",
    "dag_id",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "loaded_at",
)

#: Columns of the view ``<table>_v``: every result row with its run's facts, in the order of the
#: earlier single-table layout (so ``SELECT *`` queries written for it keep working), then
#: ``superseded_by`` (NULL for the current run of an evaluation).
VIEW_COLUMNS: tuple[str, ...] = (
    "run_id",
    "row_number",
    "experiment_id",
    "evaluator_id",
    "input_data_from_experiment",
    "input_data_from_experiment_run",
    "output_data_from_experiment",
    "output_data_from_experiment_run",
    "passed",
    "error_message",
    "score",
    "score_value",
    "rationale",
    "extra",
    "dag_id",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "loaded_at",
    "superseded_by",
)
#: The summary columns of the view (the run-level facts, then whether the run is current).
VIEW_SUMMARY_COLUMNS = (*RUN_LEVEL_COLUMNS, "superseded_by")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,57}(?:\.[A-Za-z_][A-Za-z0-9_]{0,57})?")

#: Words that PostgreSQL, SQLite or MySQL reserve (or the SQL standard does): refused as table names,
#: which go into SQL text unquoted.
_RESERVED = """
abort action add after all alter analyse analyze and any array as asc asymmetric attach
authorization autoincrement before begin between binary both by cascade case cast check collate
collation column commit concurrently conflict constraint create cross current current_catalog
current_date current_role current_schema current_time current_timestamp current_user database
databases default deferrable deferred delete desc describe detach distinct do drop each else end
escape except exclusive exists explain false fetch for foreign freeze from full glob grant group
having if ignore ilike immediate in index indexed initially inner insert instead intersect into is
isnull join key keys lateral leading left like limit localtime localtimestamp match natural no not
nothing notnull null of offset on only or order outer over overlaps partition placing plan pragma
primary query raise range rank recursive references regexp reindex release rename replace restrict
returning revoke right rollback row rows row_number savepoint schema select session_user set similar
some symmetric system_user table tablesample temp temporary then to trailing transaction trigger
true union unique update usage user using vacuum values variadic verbose view virtual when where
window with
"""
RESERVED_WORDS = frozenset(_RESERVED.split())


def check_table_name(name: str, what: str = "table") -> str:
    """Accept ``table`` or ``schema.table`` of plain identifiers (they go into SQL text unquoted)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not a plain [schema.]table name: letters, digits and _ only (no spaces, "
            "quotes or line breaks), at most 58 characters per part, not starting with a digit"
        )
    reserved = [part for part in name.split(".") if part.lower() in RESERVED_WORDS]
    if reserved:
        raise ValueError(
            f"{what} {name!r} is not a plain [schema.]table name: {reserved[0]!r} is an SQL reserved word; "
            f"choose another name, e.g. {reserved[0] + '_results'!r}"
        )
    return name


@dataclass(frozen=True)
class Flavour:
    """Column types of one database family, and how parameters are passed.

    ``bytes_as_text``: an SQL expression storing a bound ``bytes`` parameter (such as ``?5``) as text:
    a CSV field's validated UTF-8 bytes between its quotes, inner quotes still doubled. Where a flavour
    has one, the CSV's fields are passed on so, which spares decoding them into ``str``, the driver
    encoding them back, and any per-field Python.
    ``setup``: statements run before ``CREATE TABLE`` (SQLite: 16 KiB pages for a *new* database file,
    so that result rows of a few KB pack several to a page; SQLite ignores it for an existing one).
    ``create_view``: how the view's statement starts (idempotent where the database has a form for it).
    ``begin``: a statement opening the DDL transaction where the driver would not open one itself
    (Python's sqlite3 runs DDL outside a transaction unless one is open).
    """

    name: str
    types: dict[str, str]
    timestamp: Callable[[dt.datetime], Any]
    bytes_as_text: Callable[[str], str] | None = None
    setup: tuple[str, ...] = ()
    create_view: str = "CREATE VIEW"
    begin: str | None = None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


FLAVOURS: dict[str, Flavour] = {
    "postgresql": Flavour(
        "postgresql",
        {
            "id": "text",
            "text": "text",
            "int": "bigint",
            "float": "double precision",
            "bool": "boolean",
            "json": "jsonb",
            "ts": "timestamptz",
        },
        _utc,
        create_view="CREATE OR REPLACE VIEW",
    ),
    "sqlite": Flavour(
        "sqlite",
        {
            "id": "TEXT",
            "text": "TEXT",
            "int": "INTEGER",
            "float": "REAL",
            "bool": "BOOLEAN",
            "json": "TEXT",
            "ts": "TEXT",  # ISO 8601 with offset; works with SQLite's date functions
        },
        lambda v: _utc(v).isoformat(),
        bytes_as_text=lambda param: f"replace(CAST({param} AS TEXT), '\"\"', '\"')",
        setup=("PRAGMA page_size = 16384",),
        create_view="CREATE VIEW IF NOT EXISTS",
        begin="BEGIN IMMEDIATE",
    ),
    "generic": Flavour(
        "generic",
        {
            "id": "VARCHAR(255)",
            "text": "TEXT",
            "int": "BIGINT",
            "float": "DOUBLE PRECISION",
            "bool": "BOOLEAN",
            "json": "TEXT",
            "ts": "TIMESTAMP",  # UTC, without time zone
        },
        lambda v: _utc(v).replace(tzinfo=None),
    ),
}


def flavour_of(hook: DbApiHook) -> Flavour:
    try:
        name = hook.dialect_name
    except Exception:
        name = "generic"
    return FLAVOURS.get(name, FLAVOURS["generic"])


def _unquoted(word: str) -> str:
    return word


def quoter(hook: DbApiHook) -> Callable[[str], str]:
    """The hook dialect's identifier escaping: quotes reserved words (e.g. MySQL's ``row_number``)."""
    try:
        escape = hook.dialect.escape_word
        escape("run_id")
    except Exception:
        return _unquoted
    return escape


def create_table_sql(
    table: str,
    flavour: Flavour,
    layout: tuple[tuple[str, str, bool], ...],
    key: tuple[str, ...],
    quote: Callable[[str], str] = _unquoted,
) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a layout; the primary key doubles as the run_id index."""
    width = max(len(quote(c)) for c, _, _ in layout)
    cols = [
        f"    {quote(c).ljust(width)} {flavour.types[kind]}{' NOT NULL' if not_null else ''}"
        for c, kind, not_null in layout
    ]
    cols.append(f"    PRIMARY KEY ({', '.join(map(quote, key))})")
    return f"CREATE TABLE IF NOT EXISTS {table} (\n" + ",\n".join(cols) + "\n)"


def view_name(table: str) -> str:
    """The view joining each result row to its run's facts: ``<table>_v`` (same schema)."""
    return f"{table}_v"


def create_view_sql(
    table: str, summary_table: str, flavour: Flavour, quote: Callable[[str], str] = _unquoted
) -> str:
    """The view ``<table>_v``: result rows with their run's facts, columns as in the single-table layout,
    then ``superseded_by`` (NULL for the current run of its evaluation)."""
    run_level = set(VIEW_SUMMARY_COLUMNS)
    width = max(len(quote(c)) for c in VIEW_COLUMNS)
    cols = ",\n".join(
        f"    {'s' if c in run_level else 'r'}.{quote(c).ljust(width)} AS {quote(c)}" for c in VIEW_COLUMNS
    )
    return (
        f"{flavour.create_view} {view_name(table)} AS\nSELECT\n{cols}\n"
        f"FROM {table} r\nLEFT JOIN {summary_table} s ON s.{quote('run_id')} = r.{quote('run_id')}"
    )


def ddl(
    table: str, summary_table: str, flavour: Flavour, quote: Callable[[str], str] = _unquoted
) -> list[str]:
    """The statements ``create_table=True`` runs (also printed in the docs per database)."""
    return [
        create_table_sql(table, flavour, RESULT_TABLE, ("run_id", "row_number"), quote),
        create_table_sql(summary_table, flavour, SUMMARY_TABLE, ("run_id",), quote),
        create_view_sql(table, summary_table, flavour, quote),
    ]


# -------------------------------------------------------------------------------------------------
# What a load is about
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunMeta:
    """The run-level values written next to every row and into the summary row."""

    run_id: str
    experiment_id: str | None = None
    evaluator_id: str | None = None
    status: str | None = None
    display_name: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    dag_id: str | None = None
    logical_date: dt.datetime | None = None
    data_interval_start: dt.datetime | None = None
    data_interval_end: dt.datetime | None = None
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    task_id: str | None = None
    map_index: int | None = None
    dag_run_id: str | None = None
    #: The evaluation this run belongs to; None: a run of its own, which supersedes nothing.
    evaluation_key: str | None = None
    #: Set when the run is known to be replaced already (the ledger says so): its row stays history.
    superseded_by: str | None = None
    cost: float | None = None


@dataclass
class LoadResult:
    table: str
    summary_table: str
    method: str
    stats: Stats
    seconds: float
    loaded_at: dt.datetime

    @property
    def rows_per_second(self) -> float:
        return self.stats.rows / self.seconds if self.seconds > 0 else 0.0


# -------------------------------------------------------------------------------------------------
# The seam: how rows get into the database
# -------------------------------------------------------------------------------------------------


class Sink(Protocol):
    """Write all batches of one load through an open cursor (inside the caller's transaction)."""

    method: str

    def load(self, batches: Iterator[Batch]) -> None: ...


def open_sink(
    cursor: Any,
    *,
    hook: DbApiHook,
    table: str,
    reader: ResultCsvReader,
    meta: RunMeta,
    loaded_at: dt.datetime,
    fast_path: bool,
    batch_rows: int,
) -> Sink:
    """Choose the loading strategy by the driver's capabilities (the only database branch)."""
    if fast_path and (hasattr(cursor, "copy") or hasattr(cursor, "copy_expert")):
        return CopySink(cursor, table, reader, meta=meta, loaded_at=loaded_at, quote=quoter(hook))
    return ExecuteManySink(
        cursor, hook, table, reader, meta=meta, loaded_at=loaded_at, batch_rows=batch_rows, quote=quoter(hook)
    )


def _csv_cell(value: Any) -> bytes:
    """One CSV field for COPY: None -> empty (NULL); text always quoted."""
    if value is None:
        return b""
    if isinstance(value, dt.datetime):
        value = _utc(value).isoformat()
    text = str(value)
    return b'"' + text.replace('"', '""').encode("utf-8") + b'"'


class CopySink:
    """PostgreSQL ``COPY ... FROM STDIN (FORMAT csv)`` fed with ~1 MiB blocks.

    A validated record is passed on as its raw bytes (the reader's grammar is the strict one, which
    PostgreSQL reads the same way), with its line terminator replaced by the per-row columns
    (row_number, score_value) and the run-level constants. With unknown extra columns a record is
    rebuilt from its field values instead: the documented ones, then the extras as one JSON field.
    """

    method = "COPY"

    def __init__(
        self,
        cursor: Any,
        table: str,
        reader: ResultCsvReader,
        *,
        meta: RunMeta,
        loaded_at: dt.datetime,
        quote: Callable[[str], str] = _unquoted,
    ):
        self.cursor = cursor
        self.reader = reader
        self.rebuild = bool(reader.extra_columns)
        reader.configure(text=self.rebuild)  # raw pass-through reads bytes; rebuilding needs every field
        # PostgreSQL checks the encoding of COPY input itself (ENCODING 'UTF8'): no need to decode every
        # block here too. load_result_csv turns its error back into the row and column (first_error).
        reader.check_utf8 = False
        raw_columns = reader.documented
        suffix = ["row_number", "score_value", *(["extra"] if self.rebuild else []), "run_id"]
        const = _csv_cell(meta.run_id)
        self._suffix = (
            b",%d,%b" + (b",%b" if self.rebuild else b"") + b"," + const.replace(b"%", b"%%") + b"\n"
        )
        self.sql = (
            f"COPY {table} ({', '.join(map(quote, [*raw_columns, *suffix]))}) FROM STDIN WITH "
            f"(FORMAT csv, FORCE_NULL ({', '.join(map(quote, raw_columns))}), ENCODING 'UTF8')"
        )

    def blocks(self, batches: Iterator[Batch]) -> Iterator[bytes]:
        """The COPY input: one block of CSV lines per batch."""
        suffix = self._suffix
        eol = self.reader.eol_group
        sv_cache: dict[float | None, bytes] = {None: b""}
        for batch in batches:
            data: Any = batch.data
            parts: list[bytes] = []
            append = parts.append
            row = batch.first_row
            scores = batch.score_values
            records = self._rebuilt(batch) if self.rebuild else None
            for i, m in enumerate(batch.matches):
                v = scores[i]
                try:
                    svb = sv_cache[v]
                except KeyError:
                    svb = repr(v).encode()
                    if len(sv_cache) < 100_000:
                        sv_cache[v] = svb
                if records is None:
                    append(data[m.start() : m.start(eol)])
                    append(suffix % (row, svb))
                else:
                    record, extra = records[i]
                    append(record)
                    append(suffix % (row, svb, extra))
                row += 1
            yield b"".join(parts)

    def _rebuilt(self, batch: Batch) -> list[tuple[bytes, bytes]]:
        """Text mode: the documented fields as they were (valid CSV), the extras as a JSON object."""
        index = self.reader.index
        documented = [index[c] for c in self.reader.documented]
        extras = [(c, index[c]) for c in self.reader.extra_columns]
        out = []
        for m in batch.matches:
            fields = m.groups()
            record = ",".join([fields[i] for i in documented]).encode("utf-8")
            extra = {c: unquote(fields[i]) for c, i in extras}
            out.append((record, _csv_cell(json.dumps(extra, ensure_ascii=False))))
        return out

    def load(self, batches: Iterator[Batch]) -> None:
        # Wide rows get TOAST-compressed; lz4 costs a fraction of the default pglz's CPU. Transaction-local,
        # only where the server supports it, and columns with an explicit COMPRESSION keep theirs.
        self.cursor.execute(_LZ4)
        blocks = in_background(self.blocks(batches))
        if hasattr(self.cursor, "copy"):  # psycopg 3
            with self.cursor.copy(self.sql) as copy:
                for block in blocks:
                    copy.write(block)
        else:  # psycopg2 pulls from a file-like object
            self.cursor.copy_expert(self.sql, _BlockReader(blocks))


_LZ4 = (
    "SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings "
    "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
)


class _BlockReader:
    """A read()-able view of an iterator of byte blocks (for psycopg2's ``copy_expert``)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._buf = b""

    def read(self, size: int = -1) -> bytes:
        while not self._buf:
            try:
                self._buf = next(self._blocks)
            except StopIteration:
                return b""
        if size is None or size < 0 or size >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out

    readline = read


class ExecuteManySink:
    """Batched ``executemany`` of the INSERT the hook's common.sql dialect generates; any DB-API driver.

    Runs in the calling thread: executemany gives the GIL up and takes it back once per row, which a
    reading thread holding it would turn into a convoy.
    Parameters are ordered for cheap tuple building (the CSV's text fields first, then the per-row
    values, then the run-level constants); the column list says where each goes.
    """

    method = "executemany"

    #: the CSV's text columns, in parameter order
    TEXT_COLUMNS = tuple(c for c in RESULT_CSV_COLUMNS if c != "passed")

    def __init__(
        self,
        cursor: Any,
        hook: DbApiHook,
        table: str,
        reader: ResultCsvReader,
        *,
        meta: RunMeta,
        loaded_at: dt.datetime,
        batch_rows: int,
        quote: Callable[[str], str] = _unquoted,
    ):
        self.cursor = cursor
        self.reader = reader
        flavour = flavour_of(hook)
        self.postgres = flavour.name == "postgresql"
        self.raw = flavour.bytes_as_text is not None
        # every field captured: where the database takes bytes as text, the validated UTF-8 bytes between
        # the quotes (the SQL undoubles inner quotes), else the text
        reader.configure(text=not self.raw, capture_all=True, inner=self.raw)
        self.batch_rows = batch_rows
        self.run_id = meta.run_id
        #: the columns of the parameters, in order (``extra`` only when the CSV has extra columns)
        self.fields = [
            *self.TEXT_COLUMNS,
            "row_number",
            "passed",
            "score_value",
            *(["extra"] if reader.extra_columns else []),
            "run_id",
        ]
        if flavour.bytes_as_text is not None:
            n_text = len(self.TEXT_COLUMNS)
            # an empty field is NULL (nullif before the cast is the cheapest place to say so)
            values = [flavour.bytes_as_text(f"nullif(?{i}, x'')") for i in range(1, n_text + 1)]
            values += [f"?{i}" for i in range(n_text + 1, len(self.fields) + 1)]
            columns = ", ".join(map(quote, self.fields))
            self.sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(values)})"
        else:
            self.sql = insert_sql(hook, table, self.fields)

    def rows(self, batches: Iterator[Batch]) -> Iterator[list[Sequence[Any]]]:
        """Parameter rows in :attr:`fields` order, about ``batch_rows`` per list (text mode, or extra
        columns: the common raw case streams :meth:`_joined` instead)."""
        reader = self.reader
        groups = tuple(reader.group[c] for c in self.TEXT_COLUMNS)
        fields_of = methodcaller("group", *groups)
        extras = [(c, reader.group[c]) for c in reader.extra_columns]
        run_id = self.run_id
        text_of = reader.text_of
        pending: list[Sequence[Any]] = []
        for batch in batches:
            row = batch.first_row
            per_row = zip(
                range(row, row + len(batch.matches)), batch.passed, batch.score_values, repeat(run_id)
            )
            for m, (number, passed, score_value, _) in zip(batch.matches, per_row, strict=True):
                # Unquoted inline: a call per field would cost more than the rest.
                values: list[Any]
                if self.raw:
                    values = list(fields_of(m))
                else:
                    values = [
                        (x[1:-1].replace('""', '"') if x[:1] == '"' else x) or None for x in fields_of(m)
                    ]
                if extras:
                    extra = {c: text_of(m.group(g)) for c, g in extras}
                    values += (number, passed, score_value, json.dumps(extra, ensure_ascii=False), run_id)
                else:
                    values += (number, passed, score_value, run_id)
                pending.append(values)
            if len(pending) >= self.batch_rows:
                yield pending
                pending = []
        if pending:
            yield pending

    def _joined(self, batch: Batch, run_id: str) -> Iterator[tuple[Any, ...]]:
        """Raw mode without extra columns: the fields as captured (the SQL makes empty ones NULL and
        undoubles inner quotes) and the per-row values, joined tuple by tuple in C (no Python per row)."""
        fields_of = methodcaller("group", *(self.reader.group[c] for c in self.TEXT_COLUMNS))
        first = batch.first_row
        per_row = zip(
            range(first, first + len(batch.matches)), batch.passed, batch.score_values, repeat(run_id)
        )
        return map(tuple.__add__, map(fields_of, batch.matches), per_row)

    def load(self, batches: Iterator[Batch]) -> None:
        if self.postgres:  # as the COPY path does (see CopySink.load)
            self.cursor.execute(_LZ4)
        if self.raw and not self.reader.extra_columns:
            # Streamed: each row's tuple is built as the driver binds it and freed right after, so the
            # garbage collector is not triggered by thousands of pending rows.
            for batch in batches:
                self.cursor.executemany(self.sql, self._joined(batch, self.run_id))
            return
        for chunk in self.rows(batches):
            self.cursor.executemany(self.sql, chunk)


_DONE = object()


def in_background(items: Iterator[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``items`` in a worker thread, a few items ahead (bounded: memory stays flat).

    Reading and validating the CSV (CPU) then overlaps the database call of the previous block, which
    releases the GIL while it waits for the server or for SQLite's storage engine. Exceptions of the
    worker are re-raised here; leaving this generator early stops the worker.
    """
    channel: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:
            put(_Failure(exc))

    worker = threading.Thread(target=work, name="gip-result-csv-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = channel.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


@dataclass
class _Failure:
    exc: BaseException


def insert_sql(hook: DbApiHook, table: str, fields: list[str]) -> str:
    """The INSERT statement from the hook's common.sql dialect (placeholder, quoting, format)."""
    try:
        return hook.dialect.generate_insert_sql(table, fields, fields)
    except Exception:  # a hook without a usable dialect: plain SQL with the hook's placeholder
        placeholders = ", ".join([hook.placeholder] * len(fields))
        return f"INSERT INTO {table} ({', '.join(map(quoter(hook), fields))}) VALUES ({placeholders})"


# -------------------------------------------------------------------------------------------------
# The load
# -------------------------------------------------------------------------------------------------


def load_result_csv(
    hook: DbApiHook,
    source: str | Path | IO[bytes],
    meta: RunMeta,
    *,
    table: str,
    summary_table: str | None = None,
    metric: Metric | None = None,
    create_table: bool = False,
    fast_path: bool = True,
    batch_rows: int = 1000,
    max_record_bytes: int | None = None,
    progress: Callable[[Stats], None] | None = None,
    progress_seconds: float = 10.0,
) -> LoadResult:
    """Replace the rows of ``meta.run_id`` in ``table`` (and its summary row) with the CSV's, atomically.

    ``source`` is a path or a binary file (seekable for line numbers in error messages). Raises
    :class:`~gip_airflow.transfers._result_csv.ResultCsvError` for bad CSV — nothing is committed then.
    """
    table = check_table_name(table)
    summary_table = check_table_name(summary_table or f"{table}_runs", "summary_table")
    flavour = flavour_of(hook)
    quote = quoter(hook)
    ph = hook.placeholder
    loaded_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    with _open(source) as f, closing(hook.get_conn()) as conn:
        try:
            if getattr(hook, "supports_autocommit", False):
                hook.set_autocommit(conn, False)
            with closing(conn.cursor()) as cur:
                missing = prepare_tables(
                    conn, cur, flavour, table, summary_table, quote=quote, create=create_table
                )
                reader_kwargs: dict[str, Any] = {"metric": metric}
                if max_record_bytes:
                    reader_kwargs["max_record_bytes"] = max_record_bytes
                reader = ResultCsvReader(f, **reader_kwargs)
                sink = open_sink(
                    cur,
                    hook=hook,
                    table=table,
                    reader=reader,
                    meta=meta,
                    loaded_at=loaded_at,
                    fast_path=fast_path,
                    batch_rows=batch_rows,
                )
                _start_summary(
                    cur,
                    ph,
                    summary_table,
                    table=table,
                    meta=meta,
                    flavour=flavour,
                    loaded_at=loaded_at,
                    quote=quote,
                    skip=missing,
                )
                cur.execute(f"DELETE FROM {table} WHERE {quote('run_id')} = {ph}", (meta.run_id,))
                try:
                    sink.load(_with_progress(reader, progress, progress_seconds, started, table))
                except Exception as exc:
                    if _is_encoding_error(exc):  # PostgreSQL found bad UTF-8: say where, as we would
                        found = first_error(f, **reader_kwargs)
                        if found is not None:
                            raise found from None
                    raise
                _finish_summary(cur, ph, summary_table, run_id=meta.run_id, stats=reader.stats, quote=quote)
            conn.commit()
        except BaseException:
            with suppress(Exception):
                conn.rollback()
            raise
    return LoadResult(table, summary_table, sink.method, reader.stats, time.monotonic() - started, loaded_at)


class TableLayoutError(GipError, AirflowFailException):
    """The target table has an earlier layout and may not be migrated here; says how to migrate it."""


#: Columns that the summary table of an earlier version lacks.
_NEW_SUMMARY_COLUMNS = ("data_interval_start", "data_interval_end")


def prepare_tables(
    conn: Any,
    cur: Any,
    flavour: Flavour,
    table: str,
    summary_table: str,
    *,
    quote: Callable[[str], str] = _unquoted,
    create: bool,
) -> tuple[str, ...]:
    """Make the tables and the view ready for a load, in a transaction of its own.

    Returns the :data:`SUMMARY_ADDED_COLUMNS` that a summary table created by hand lacks (without
    ``create``), which the load then leaves out.

    With ``create``: create what is missing and migrate tables of the earlier layout (run-level columns
    in every row). Without: only check the layout, and refuse an earlier one with a message that says
    how to migrate. DDL is serialised between concurrent first loads: ``CREATE TABLE IF NOT EXISTS`` is
    not safe against itself on PostgreSQL (two sessions both see no table, and one fails on the
    catalog's unique index), so sessions take a transaction-scoped advisory lock on the table name
    first; elsewhere a failed attempt is retried once, when the concurrent creator has committed.
    """
    for attempt in (1, 2):
        try:
            if create:
                for statement in flavour.setup:
                    cur.execute(statement)
                if flavour.begin:
                    cur.execute(flavour.begin)
                if flavour.name == "postgresql":
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gip_airflow.ddl:{table.lower()}",)
                    )
            results = table_columns(conn, cur, flavour, table)
            summary = table_columns(conn, cur, flavour, summary_table)
            old = [c for c in RUN_LEVEL_COLUMNS if results is not None and c in results]
            summary_old = summary is not None and any(c not in summary for c in _NEW_SUMMARY_COLUMNS)
            if old or summary_old:
                _migrate(
                    cur,
                    flavour,
                    table,
                    summary_table,
                    quote=quote,
                    results=results or [],
                    summary=summary,
                    create=create,
                )
                summary = table_columns(conn, cur, flavour, summary_table)  # migrated: read its columns again
            elif create:
                if results is None:
                    cur.execute(
                        create_table_sql(table, flavour, RESULT_TABLE, ("run_id", "row_number"), quote)
                    )
                if summary is None:
                    cur.execute(create_table_sql(summary_table, flavour, SUMMARY_TABLE, ("run_id",), quote))
            # a summary table created here has them all; one that predates them may lack some
            missing = tuple(c for c in SUMMARY_ADDED_COLUMNS if summary is not None and c not in summary)
            if missing and create:
                for statement in _add_columns_sql(summary_table, flavour, missing, quote):
                    cur.execute(statement)
                missing = ()
            if create:  # after the summary columns, which the view reads
                view = table_columns(conn, cur, flavour, view_name(table))
                if view is None:
                    cur.execute(create_view_sql(table, summary_table, flavour, quote))
                elif view == list(VIEW_COLUMNS[:-1]):  # this provider's view before superseded_by
                    for statement in _view_upgrade_sql(table, summary_table, flavour, quote):
                        cur.execute(statement)
            conn.commit()
            return missing
        except BaseException as exc:
            with suppress(Exception):
                conn.rollback()
            if (
                attempt == 2
                or not create
                or not isinstance(exc, Exception)
                or isinstance(exc, TableLayoutError)
            ):
                raise
    return ()  # not reached: the second attempt returns or raises


def _add_columns_sql(
    summary_table: str, flavour: Flavour, columns: Sequence[str], quote: Callable[[str], str]
) -> list[str]:
    kinds = {c: k for c, k, _ in SUMMARY_TABLE}
    return [f"ALTER TABLE {summary_table} ADD COLUMN {quote(c)} {flavour.types[kinds[c]]}" for c in columns]


def _view_upgrade_sql(
    table: str, summary_table: str, flavour: Flavour, quote: Callable[[str], str]
) -> list[str]:
    """Add ``superseded_by`` at the end of an existing view (PostgreSQL replaces it in place)."""
    create = create_view_sql(table, summary_table, flavour, quote)
    if flavour.name == "postgresql":
        return [create]
    return [f"DROP VIEW {view_name(table)}", create]


def table_columns(conn: Any, cur: Any, flavour: Flavour, name: str) -> list[str] | None:
    """The column names of a table or view, lower case; None when it does not exist."""
    if flavour.name == "postgresql":
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        (exists,) = cur.fetchone()
        if not exists:
            return None
    try:
        cur.execute(f"SELECT * FROM {name} WHERE 1 = 0")
    except Exception:
        if flavour.name == "postgresql":
            raise
        if flavour.begin is None:  # a failed statement may have ended the transaction; nothing is done yet
            with suppress(Exception):
                conn.rollback()
        return None
    names = [d[0].lower() for d in cur.description]
    with suppress(Exception):
        cur.fetchall()
    return names


def migration_sql(
    table: str,
    summary_table: str,
    flavour: Flavour,
    quote: Callable[[str], str] = _unquoted,
    *,
    result_columns: Sequence[str] = VIEW_COLUMNS,
    summary_columns: Sequence[str] | None = (),
) -> tuple[list[str], list[str]]:
    """Statements moving tables of the earlier layout to the current one: (fill, change).

    ``fill`` gives every run a summary row that holds its run-level facts; ``change`` drops those columns
    from the results table and creates the view. Both run in one transaction. ``result_columns`` and
    ``summary_columns`` are what the tables have now (``None``: no summary table yet).
    """
    q = quote
    old = [c for c in RUN_LEVEL_COLUMNS if c in result_columns]
    fill: list[str] = []
    if summary_columns is None:
        fill.append(create_table_sql(summary_table, flavour, SUMMARY_TABLE, ("run_id",), quote))
    else:  # every column the view reads must exist before it is created
        added = [c for c in (*_NEW_SUMMARY_COLUMNS, *SUMMARY_ADDED_COLUMNS) if c not in summary_columns]
        fill.extend(_add_columns_sql(summary_table, flavour, added, quote))
    if old:
        loaded = f"MAX(r.{q('loaded_at')})" if "loaded_at" in old else "CURRENT_TIMESTAMP"
        facts = [c for c in old if c != "loaded_at"]
        names = ", ".join(q(c) for c in ["run_id", *facts, "result_table", "item_count", "loaded_at"])
        values = ", ".join(
            [f"r.{q('run_id')}", *(f"MAX(r.{q(c)})" for c in facts), f"'{table}'", "COUNT(*)", loaded]
        )
        fill.append(
            f"INSERT INTO {summary_table} ({names})\nSELECT {values}\nFROM {table} r\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {summary_table} s WHERE s.{q('run_id')} = r.{q('run_id')})\n"
            f"GROUP BY r.{q('run_id')}"
        )
        intervals = [c for c in _NEW_SUMMARY_COLUMNS if c in old]
        if intervals:
            sets = ", ".join(
                f"{q(c)} = (SELECT MAX(r.{q(c)}) FROM {table} r "
                f"WHERE r.{q('run_id')} = {summary_table}.{q('run_id')})"
                for c in intervals
            )
            nulls = " AND ".join(f"{q(c)} IS NULL" for c in intervals)
            fill.append(f"UPDATE {summary_table} SET {sets}\nWHERE {nulls}")
    change = [f"ALTER TABLE {table} DROP COLUMN {q(c)}" for c in old]
    change.append(create_view_sql(table, summary_table, flavour, quote))
    return fill, change


def _disagreements_sql(table: str, summary_table: str, old: list[str], quote: Callable[[str], str]) -> str:
    """Count result rows whose run-level values differ from their summary row's (they would be lost)."""
    q = quote
    differ = " OR ".join(f"NOT (r.{q(c)} = s.{q(c)} OR (r.{q(c)} IS NULL AND s.{q(c)} IS NULL))" for c in old)
    return (
        f"SELECT COUNT(*) FROM {table} r JOIN {summary_table} s ON s.{q('run_id')} = r.{q('run_id')} "
        f"WHERE {differ}"
    )


def _migrate(
    cur: Any,
    flavour: Flavour,
    table: str,
    summary_table: str,
    *,
    quote: Callable[[str], str],
    results: list[str],
    summary: list[str] | None,
    create: bool,
) -> None:
    """Move tables of the earlier layout to the current one (the caller commits), or say how to."""
    fill, change = migration_sql(
        table, summary_table, flavour, quote, result_columns=results, summary_columns=summary
    )
    old = [c for c in RUN_LEVEL_COLUMNS if c in results]
    if not create:
        if old:
            repeated = ", ".join(old)
            what = f"{table} has the layout of an earlier gip-airflow version (every row repeats {repeated})"
        else:
            what = (
                f"{summary_table} has the layout of an earlier gip-airflow version (no data_interval columns)"
            )
        raise TableLayoutError(
            f"{what}. Run-level facts now live only in {summary_table}, and the view {view_name(table)} "
            "joins them to the rows. Load once with create_table=True, which migrates the tables in one "
            "transaction and loses nothing, or run these statements in one transaction:\n"
            + ";\n".join([*fill, *change])
            + ";"
        )
    log.info("Migrating %s and %s: run-level columns move to the summary table", table, summary_table)
    try:
        for statement in fill:
            cur.execute(statement)
        if old:
            cur.execute(_disagreements_sql(table, summary_table, old, quote))
            (n,) = cur.fetchone()
            if n:
                raise TableLayoutError(
                    f"cannot migrate {table} to the current layout: {n} of its rows hold run-level values "
                    f"({', '.join(old)}) that differ from their run's row in {summary_table}, and dropping "
                    "those columns would lose them. Nothing was changed. Make them agree (or copy the table "
                    "away) and load again"
                )
        for statement in change:
            cur.execute(statement)
    except TableLayoutError:
        raise
    except Exception as exc:
        raise TableLayoutError(
            f"migrating {table} and {summary_table} to the current layout failed, nothing was changed: {exc}"
        ) from exc


def _is_encoding_error(exc: BaseException) -> bool:
    """PostgreSQL's "invalid byte sequence for encoding" (SQLSTATE 22021), from psycopg 3 or psycopg2."""
    return "22021" in (getattr(exc, "sqlstate", None), getattr(exc, "pgcode", None))


def _open(source: str | Path | IO[bytes]) -> Any:
    if isinstance(source, str | Path):
        return open(source, "rb")
    return _NoClose(source)


class _NoClose:
    def __init__(self, f: IO[bytes]):
        self.f = f

    def __enter__(self) -> IO[bytes]:
        return self.f

    def __exit__(self, *exc: object) -> None:
        return None


def _with_progress(
    reader: ResultCsvReader,
    progress: Callable[[Stats], None] | None,
    every: float,
    started: float,
    table: str,
) -> Iterator[Batch]:
    next_log = started + every
    for batch in reader.batches():
        yield batch
        if progress is not None:
            progress(reader.stats)
        now = time.monotonic()
        if now >= next_log:
            next_log = now + every
            s = reader.stats
            log.info(
                "Loaded %s rows (%.0f MB) into %s so far, %.0f rows/s",
                f"{s.rows:,}",
                s.bytes_read / 1e6,
                table,
                s.rows / (now - started),
            )


def _start_summary(
    cur: Any,
    ph: str,
    summary_table: str,
    *,
    table: str,
    meta: RunMeta,
    flavour: Flavour,
    loaded_at: dt.datetime,
    quote: Callable[[str], str],
    skip: tuple[str, ...] = (),
) -> None:
    """Replace the run's summary row first (after superseding the evaluation's other rows): its primary
    key also serialises concurrent loads of a run."""
    superseded_by = _supersede(cur, ph, summary_table, meta=meta, flavour=flavour, quote=quote, skip=skip)
    ts = flavour.timestamp
    values = {
        "run_id": meta.run_id,
        "experiment_id": meta.experiment_id,
        "evaluator_id": meta.evaluator_id,
        "status": meta.status,
        "display_name": meta.display_name,
        "prompt_tokens": meta.prompt_tokens,
        "completion_tokens": meta.completion_tokens,
        "total_tokens": meta.total_tokens,
        "window_start": meta.window_start and ts(meta.window_start),
        "window_end": meta.window_end and ts(meta.window_end),
        "dag_id": meta.dag_id,
        "logical_date": meta.logical_date and ts(meta.logical_date),
        "data_interval_start": meta.data_interval_start and ts(meta.data_interval_start),
        "data_interval_end": meta.data_interval_end and ts(meta.data_interval_end),
        "result_table": table,
        "loaded_at": ts(loaded_at),
        "task_id": meta.task_id,
        "map_index": meta.map_index,
        "dag_run_id": meta.dag_run_id,
        "evaluation_key": meta.evaluation_key,
        "superseded_by": superseded_by,
        "cost": meta.cost,
    }
    for column in skip:
        del values[column]
    cur.execute(f"DELETE FROM {summary_table} WHERE {quote('run_id')} = {ph}", (meta.run_id,))
    cur.execute(
        f"INSERT INTO {summary_table} ({', '.join(map(quote, values))}) "
        f"VALUES ({', '.join([ph] * len(values))})",
        tuple(values.values()),
    )


def _supersede(
    cur: Any,
    ph: str,
    summary_table: str,
    *,
    meta: RunMeta,
    flavour: Flavour,
    quote: Callable[[str], str],
    skip: tuple[str, ...],
) -> str | None:
    """Keep one current summary row per evaluation; returns the run's own ``superseded_by``.

    The loaded run becomes current and supersedes the other current runs of its evaluation, unless it
    is known to be replaced already: by the ledger (``meta.superseded_by``) or by an earlier load of it
    that was marked superseded. So reloading an older run leaves the newer one current. Loads of one
    evaluation are serialised first (PostgreSQL: an advisory lock on the key until commit; SQLite: the
    write lock, taken before reading), so two of them never both stay current.
    """
    key = meta.evaluation_key
    if key is None or any(c in skip for c in SUPERSEDE_COLUMNS):
        return None
    q = quote
    if flavour.name == "postgresql":
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"gip_airflow.evaluation:{summary_table.lower()}:{key}",),
        )
    elif flavour.begin and not getattr(getattr(cur, "connection", None), "in_transaction", True):
        cur.execute(flavour.begin)
    if meta.superseded_by:
        return meta.superseded_by
    cur.execute(
        f"SELECT {q('superseded_by')} FROM {summary_table} WHERE {q('run_id')} = {ph}", (meta.run_id,)
    )
    earlier = cur.fetchall()
    if earlier and earlier[0][0] is not None:
        return str(earlier[0][0])
    cur.execute(
        f"UPDATE {summary_table} SET {q('superseded_by')} = {ph} WHERE {q('evaluation_key')} = {ph} "
        f"AND {q('superseded_by')} IS NULL AND {q('run_id')} <> {ph}",
        (meta.run_id, key, meta.run_id),
    )
    return None


def _finish_summary(
    cur: Any, ph: str, summary_table: str, *, run_id: str, stats: Stats, quote: Callable[[str], str]
) -> None:
    values = {
        "item_count": stats.rows,
        "passed_count": stats.passed,
        "failed_count": stats.failed,
        "pass_rate": stats.pass_rate,
        "scored_count": stats.scored,
        "mean_score_value": stats.mean_score,
    }
    assignments = ", ".join(f"{quote(c)} = {ph}" for c in values)
    cur.execute(
        f"UPDATE {summary_table} SET {assignments} WHERE {quote('run_id')} = {ph}", (*values.values(), run_id)
    )
