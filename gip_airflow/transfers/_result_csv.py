"""Streaming reader and validator of a GIP run's result CSV.

The reader works in blocks of about 1 MiB, so memory stays flat however large the file. Each record is
matched by one compiled regular expression of the strict RFC 4180 grammar with exactly as many fields
as the header; a record that does not match is walked field by field to say what is wrong (and where),
or to find that it merely continues in the next block. Because the grammar is the strict one, a valid
record means the same to Python and to PostgreSQL's ``COPY ... (FORMAT csv)``, so the COPY path can pass
validated records on as raw bytes (see ``_sql.py``).

Two modes, one grammar:

* raw (``text=False``): matches run over the raw bytes and capture only ``passed`` and ``score``
  (captures cost time); each block is decoded once only to validate UTF-8. For the COPY path. With
  ``inner``, every field is captured as its content between the quotes (inner quotes still doubled),
  for a database that undoubles them in SQL (SQLite).
* text (``text=True``): blocks are decoded incrementally and matches run over the text, capturing
  every field, so values need no second parse. For the row-by-row (executemany) path.

Validated before anything is committed: the header (every documented column, no duplicates), the field
count, quoting, UTF-8, NUL bytes, and the ``passed`` values. Derived per row: ``passed`` as a bool and a
numeric ``score_value`` from the evaluator's metric.
"""

from __future__ import annotations

import codecs
import math
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import reduce
from operator import add, methodcaller
from typing import IO, TYPE_CHECKING, Any, AnyStr

from airflow.sdk.exceptions import AirflowFailException

from gip_airflow.api import RESULT_CSV_COLUMNS, BoolMetric, CategoryMetric, NumericMetric
from gip_airflow.exceptions import GipError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    Metric = CategoryMetric | NumericMetric | BoolMetric

#: Read size. Records larger than this simply take several reads.
BLOCK_SIZE = 1 << 20
#: Default upper bound of one record (guards memory against an unterminated quote in a huge file).
MAX_RECORD_BYTES = 256 << 20

_BOM = b"\xef\xbb\xbf"
# A field: quoted (inner quotes doubled) or unquoted (no quote, comma, CR or LF). The unrolled form
# ``[^"]*(?:""[^"]*)*`` keeps the regex engine in its fast single-character loops, and the possessive
# quantifiers (the grammar is unambiguous: a closing quote is never followed by a quote) save it from
# recording backtracking points.
_FIELD = r'(?:"[^"]*+(?:""[^"]*+)*+"|[^,"\r\n]*+)'
# The same field, captured without its enclosing quotes: group {q} is the opening quote (if any), the
# next group the content; a conditional picks the quoted or the unquoted grammar.
_INNER_FIELD = r'(")?((?({q})[^"]*+(?:""[^"]*+)*+|[^,"\r\n]*+))(?({q})")'
_EOL = r"(\r?\n|\r?\Z)"
_UNQUOTED = re.compile(rb'[^,"\r\n]*')

_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


class ResultCsvError(GipError, AirflowFailException):
    """The result CSV is malformed. Says which row (and physical line) and what is wrong.

    Not retried: downloading the same file again gives the same error.
    """

    def __init__(self, message: str, *, row: int | None = None, line: int | None = None):
        where = ""
        if row is not None:
            where = f"row {row}" + (f" (line {line})" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(f"result CSV {where}{message}")
        self.row = row
        self.line = line


def unquote(raw: AnyStr) -> AnyStr | None:
    """The value of one raw CSV field (bytes or text); an empty field is None (SQL NULL)."""
    if raw[:1] in ('"', b'"'):
        raw = raw[1:-1].replace(raw[:1] * 2, raw[:1])
    return raw or None


def parse_passed(text: str | None) -> bool | None:
    """``passed`` as a bool: true/false, t/f, yes/no, y/n, on/off, 1/0 (any case); empty is None.

    Exactly the words PostgreSQL's boolean input accepts, so the COPY path may pass the raw field on.
    """
    if text is None:
        return None
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    if not word:
        return None
    raise ValueError(f"passed must be true or false, got {text[:40]!r}")


def field_text(raw: bytes | str) -> str | None:
    """The value of one raw CSV field as text; an empty field is None."""
    if isinstance(raw, bytes):
        value = unquote(raw)
        return value.decode("utf-8") if value is not None else None
    return unquote(raw)


def inner_text(content: bytes | str) -> str | None:
    """The value of a field captured without its enclosing quotes (inner quotes doubled); empty is None."""
    if isinstance(content, bytes):
        return content.replace(b'""', b'"').decode("utf-8") or None
    return content.replace('""', '"') or None


class ScoreDeriver:
    """Derive ``score_value`` from the ``score`` text, using the evaluator's metric when known.

    numeric: the number (finite only); bool: 1/0; category: the category's index (by name, then by
    case-insensitive name, then a number equal to an index). Without a metric: a number, else a
    true/false word, else None. Results are memoised by raw field (scores repeat a lot).
    """

    _MEMO_LIMIT = 100_000

    def __init__(self, metric: Metric | None):
        self.metric = metric
        self._categories: dict[str, int] = {}
        self._categories_folded: dict[str, int] = {}
        if isinstance(metric, CategoryMetric):
            for item in metric.config:
                self._categories[item.name] = item.index
                self._categories_folded.setdefault(item.name.strip().casefold(), item.index)
        self._memo: dict[bytes | str, float | None] = {}

    def from_raw(self, raw: bytes | str, text_of: Callable[[Any], str | None] = field_text) -> float | None:
        try:
            return self._memo[raw]
        except KeyError:
            pass
        value = self.value(text_of(raw))
        if len(self._memo) >= self._MEMO_LIMIT:
            self._memo.clear()
        self._memo[raw] = value
        return value

    def from_raws(
        self, raws: Sequence[Any], text_of: Callable[[Any], str | None] = field_text
    ) -> list[float | None]:
        """:meth:`from_raw` of many fields at once (the distinct new ones derived, the rest looked up)."""
        memo = self._memo
        new = set(raws).difference(memo)
        if new:
            if len(memo) + len(new) > self._MEMO_LIMIT:
                memo.clear()
                new = set(raws)
            for raw in new:
                memo[raw] = self.value(text_of(raw))
        return list(map(memo.__getitem__, raws))

    def value(self, score: str | None) -> float | None:
        if score is None or not score.strip():
            return None
        text = score.strip()
        metric = self.metric
        if isinstance(metric, CategoryMetric):
            index = self._categories.get(score, self._categories_folded.get(text.casefold()))
            if index is not None:
                return float(index)
            number = _number(text)
            if number is not None and number in self._categories.values():
                return number
            return None
        if isinstance(metric, NumericMetric):
            return _number(text)
        if isinstance(metric, BoolMetric):
            return _bool_number(text)
        number = _number(text)
        return number if number is not None else _bool_number(text)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bool_number(text: str) -> float | None:
    word = text.lower()
    if word in _TRUE:
        return 1.0
    if word in _FALSE:
        return 0.0
    return None


@dataclass
class Stats:
    """Running totals of one load, for the log and the per-run summary row."""

    rows: int = 0
    passed: int = 0
    failed: int = 0
    scored: int = 0
    score_sum: float = 0.0
    blank_lines: int = 0
    bytes_read: int = 0

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.rows if self.rows else None

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None


@dataclass
class Batch:
    """Complete, validated records of one block: ``matches[i]`` is row ``first_row + i``.

    A match spans one record of ``data`` (bytes in raw mode, text in text mode). When every field is
    captured, group ``k + 1`` is the raw field of header column ``k``; :attr:`ResultCsvReader.group`
    maps captured column names to groups and :attr:`ResultCsvReader.eol_group` is the line terminator.
    ``passed`` and ``score_values`` are the derived values, in row order.
    """

    data: bytes | str
    matches: list[re.Match[Any]]
    first_row: int
    passed: list[bool | None] = field(default_factory=list)
    score_values: list[float | None] = field(default_factory=list)


class _Incomplete(Exception):
    """The record continues beyond the data read so far."""


class ResultCsvReader:
    """Read and validate a result CSV from a binary file, one :class:`Batch` per block.

    :param f: binary file positioned at the start of the CSV.
    :param metric: the evaluator's metric, for ``score_value``.
    :param text: text mode (every field captured, values as ``str``) or raw mode (bytes).
    :param capture_all: raw mode: capture every field (else only ``passed`` and ``score``, faster).
    :param inner: raw mode: capture every field without its enclosing quotes (inner quotes still
        doubled, an empty field empty). The modes can be changed until :meth:`batches` starts
        (:meth:`configure`).
    :param max_record_bytes: fail instead of buffering a larger record (e.g. an unterminated quote).
    """

    def __init__(
        self,
        f: IO[bytes],
        *,
        metric: Metric | None = None,
        text: bool = False,
        capture_all: bool = False,
        inner: bool = False,
        max_record_bytes: int = MAX_RECORD_BYTES,
        block_size: int = BLOCK_SIZE,
    ):
        self._f = f
        self._block_size = block_size
        self._max_record_bytes = max_record_bytes
        self.scores = ScoreDeriver(metric)
        self.stats = Stats()
        self._lines = 0  # text mode: physical lines consumed before the current block
        self._offset = 0  # raw mode: file offset of the current block (lines are counted on error only)
        self._eof = False
        self.header, self._carry = self._read_header()
        names = self.header
        self.width = len(names)
        self.index = {name: i for i, name in enumerate(names)}
        self.documented = [name for name in names if name in RESULT_CSV_COLUMNS]
        self.extra_columns = [name for name in names if name not in RESULT_CSV_COLUMNS]
        self._passed_memo: dict[bytes | str, bool | None] = {}
        #: raw mode: decode each block to check UTF-8 (the COPY path leaves that to PostgreSQL)
        self.check_utf8 = True
        self.configure(text=text, capture_all=capture_all, inner=inner)

    def configure(self, *, text: bool, capture_all: bool = False, inner: bool = False) -> None:
        """Choose the mode (text implies capturing every field); compiles the record expression."""
        if inner and text:
            raise ValueError("inner captures are for raw mode (text=False)")
        self.text = text
        self.inner = inner
        self.capture_all = capture_all = capture_all or text or inner
        #: the value of a captured field as text (None when empty)
        self.text_of: Callable[[Any], str | None] = inner_text if inner else field_text
        names = self.header
        captured = [i for i in range(self.width) if capture_all or names[i] in ("passed", "score")]
        per_field = 2 if inner else 1
        #: column name -> match group number (of the field, or of its content with ``inner``)
        self.group = {names[i]: k * per_field for k, i in enumerate(captured, 1)}
        self.eol_group = len(captured) * per_field + 1
        fields = []
        for i in range(self.width):
            if i not in captured:
                fields.append(_FIELD)
            elif inner:
                fields.append(_INNER_FIELD.format(q=self.group[names[i]] - 1))
            else:
                fields.append(f"({_FIELD})")
        source = ",".join(fields) + _EOL
        self._record: re.Pattern[Any] = re.compile(source if text else source.encode())
        full = ",".join([f"({_FIELD})"] * self.width) + _EOL
        self._full_record: re.Pattern[Any] = re.compile(full if text else full.encode())

    # -- header -------------------------------------------------------------------------------

    def _read_header(self) -> tuple[list[str], bytes]:
        data = b""
        while len(data) < len(_BOM) and not self._eof:
            chunk = self._f.read(self._block_size)
            self._eof = not chunk
            self.stats.bytes_read += len(chunk)
            data += chunk
        if data.startswith(_BOM):  # a UTF-8 byte order mark is not part of the first column name
            data = data[len(_BOM) :]
        while True:
            if not data and self._eof:
                raise ResultCsvError("the file is empty; expected a header line", line=1)
            try:
                spans, end = _walk(data, 0, self._eof)
                break
            except _Incomplete:
                if len(data) > self._max_record_bytes:
                    raise ResultCsvError("the header line is not terminated", line=1) from None
                chunk = self._f.read(max(self._block_size, len(data)))
                self._eof = not chunk
                self.stats.bytes_read += len(chunk)
                data += chunk
            except _Malformed as exc:
                raise ResultCsvError(f"header: {exc.describe(None)}", line=1) from None
        try:
            names = [field_text(data[s:e]) or "" for s, e in spans]
        except UnicodeDecodeError:
            raise ResultCsvError("the header is not valid UTF-8", line=1) from None
        self._lines = data.count(b"\n", 0, end)
        self._offset = self.stats.bytes_read - len(data) + end
        _check_header(names)
        return names, data[end:]

    # -- records ------------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        """Yield validated batches until the end of the file; raise :class:`ResultCsvError` on bad data."""
        text = self.text
        lf: Any = "\n" if text else b"\n"
        cr: Any = "\r" if text else b"\r"
        crlf, blank = cr + lf, (lf, cr)
        decoder = codecs.getincrementaldecoder("utf-8")("strict") if text else None
        data: Any = "" if text else b""
        raw: bytes | None = self._carry  # what the header left over comes first
        scanner = self._record.scanner  # type: ignore[attr-defined]  # undocumented, stable since 2.x
        eol = self.eol_group
        bad_utf8: UnicodeDecodeError | None = None
        while True:
            if raw is None and not self._eof:
                raw = self._f.read(max(self._block_size, len(data)))  # grows for huge records
                self._eof = not raw
                self.stats.bytes_read += len(raw)
            if raw is not None:
                chunk: Any = raw
                if decoder is not None:
                    try:
                        chunk = decoder.decode(raw, final=self._eof)
                    except UnicodeDecodeError as exc:  # keep the valid part; fail at the next record
                        bad_utf8 = exc
                        chunk = raw[: exc.start].decode("utf-8", "replace")
                data = data + chunk if data else chunk
                raw = None
            # With an undecodable byte ahead, the data ends inside the record that holds it.
            more = not self._eof or bad_utf8 is not None
            n = len(data)
            pos = 0
            matches: list[re.Match[Any]] = []
            while pos < n:
                # Every record that follows contiguously, matched by the scanner without a Python loop.
                found = list(iter(scanner(data, pos).match, None))
                if found:
                    m = found[-1]
                    if m.end() == n and more and not m.group(eol).endswith(lf):  # may continue
                        matches += found[:-1]
                        pos = m.start()
                        try:
                            self._diagnose(data, pos, matches, eof=False)
                        except _Incomplete:
                            break
                        matches.append(m)
                    else:
                        matches += found
                    pos = m.end()
                    continue
                if data.startswith(blank, pos):  # a blank line: skipped, counted
                    if data.startswith(cr, pos) and pos + 1 == n and more:
                        break
                    pos += 2 if data.startswith(crlf, pos) else 1
                    self.stats.blank_lines += 1
                    continue
                try:
                    self._diagnose(data, pos, matches, eof=not more)
                except _Incomplete:
                    break
                raise self._error(data, pos, matches, "record does not parse")  # pragma: no cover
            if matches:
                yield self._validate(data, pos, matches)
            if text:
                self._lines += data.count(lf, 0, pos)
            else:
                self._offset += pos
            data = data[pos:]
            if bad_utf8 is not None:
                raise self._utf8_error(data, bad_utf8)
            if not data and not self._eof:
                data = "" if text else b""
            if self._eof:
                return
            if len(data) > self._max_record_bytes:
                raise self._error(
                    data,
                    0,
                    [],
                    f"record is larger than {self._max_record_bytes >> 20} MiB; an unterminated quoted "
                    "field? (raise max_record_bytes if records really are this large)",
                )

    def _diagnose(self, data: Any, pos: int, matches: list[re.Match[Any]], *, eof: bool) -> None:
        """Raise :class:`_Incomplete` or a :class:`ResultCsvError` for the record at ``pos``."""
        raw = data[pos:].encode("utf-8") if isinstance(data, str) else data
        try:
            spans, _end = _walk(raw, 0 if raw is not data else pos, eof)
        except _Malformed as exc:
            raise self._error(data, pos, matches, exc.describe(self.header)) from None
        if len(spans) != self.width:
            extra = ""
            if len(spans) > self.width:
                s, e = spans[self.width]
                extra = f"; the first unexpected field starts with {raw[s : min(e, s + 40)]!r}"
            raise self._error(
                data,
                pos,
                matches,
                f"expected {self.width} fields as in the header, found {len(spans)}{extra}",
            )

    def _error(self, data: Any, pos: int, matches: list[re.Match[Any]], message: str) -> ResultCsvError:
        row = self.stats.rows + len(matches) + 1
        if isinstance(data, str):
            line: int | None = self._lines + data.count("\n", 0, pos) + 1
        else:
            line = self._line_at(self._offset + pos)
        return ResultCsvError(message, row=row, line=line)

    def _line_at(self, offset: int) -> int | None:
        """The physical line of a file offset, by reading the file again (on errors only)."""
        try:
            here = self._f.tell()
            self._f.seek(0)
            lines, left = 1, offset
            while left > 0 and (chunk := self._f.read(min(left, 1 << 22))):
                lines += chunk.count(b"\n")
                left -= len(chunk)
            self._f.seek(here)
        except (OSError, ValueError):  # not seekable: no line number
            return None
        return lines

    def _utf8_error(self, rest: str, exc: UnicodeDecodeError) -> ResultCsvError:
        """Text mode: the undecodable byte lies in the record after the last complete one."""
        column = "?"
        try:
            spans, _ = _walk(rest.encode("utf-8"), 0, True)
            column = self.header[min(len(spans), self.width) - 1]
        except _Malformed as malformed:
            column = self.header[min(malformed.field_no, self.width) - 1]
        bad = exc.object[exc.start : exc.start + 1].hex()
        return self._error(rest, 0, [], f"invalid UTF-8 (byte 0x{bad}) in column {column!r}")

    def _validate(self, data: Any, end: int, matches: list[re.Match[Any]]) -> Batch:
        """Check UTF-8 (raw mode), NUL bytes and ``passed``; derive values; update the totals."""
        if isinstance(data, bytes) and self.check_utf8:
            try:
                str(memoryview(data)[:end], "utf-8")
            except UnicodeDecodeError as exc:
                i = bisect_right([m.start() for m in matches], exc.start) - 1
                bad = data[exc.start : exc.start + 1].hex()
                raise self._error(
                    data,
                    matches[i].start(),
                    matches[:i],
                    f"invalid UTF-8 (byte 0x{bad}) in column {self._column_at(matches[i], exc.start)!r}",
                ) from None
        nul = data.find("\x00" if isinstance(data, str) else b"\x00", 0, end)
        if nul >= 0:
            i = bisect_right([m.start() for m in matches], nul) - 1
            raise self._error(
                data,
                matches[i].start(),
                matches[:i],
                f"NUL byte in column {self._column_at(matches[i], nul)!r} (databases cannot store it)",
            )
        batch = Batch(data, matches, self.stats.rows + 1)
        raw_passed = list(map(methodcaller("group", self.group["passed"]), matches))
        raw_scores = list(map(methodcaller("group", self.group["score"]), matches))
        text_of = self.text_of
        try:  # whole-batch: each distinct raw value is derived once, the rest are C-level lookups
            passed_memo = self._passed_memo
            for raw in set(raw_passed).difference(passed_memo):
                passed_memo[raw] = parse_passed(text_of(raw))
            batch.passed = passed = list(map(passed_memo.__getitem__, raw_passed))
            batch.score_values = scores = self.scores.from_raws(raw_scores, text_of)
        except (ValueError, UnicodeDecodeError):  # UnicodeDecodeError is a ValueError too
            self._raise_at_row(data, matches, raw_passed, raw_scores)
            raise  # pragma: no cover - the row-by-row pass raises
        stats = self.stats
        stats.rows += len(matches)
        stats.passed += passed.count(True)
        stats.failed += passed.count(False)
        stats.scored += len(scores) - scores.count(None)
        # summed in row order, as a loop would (zeros change nothing); sum() may compensate (3.12+)
        stats.score_sum += reduce(add, filter(None, scores), 0.0)
        return batch

    def _raise_at_row(
        self, data: Any, matches: list[re.Match[Any]], raw_passed: Sequence[Any], raw_scores: Sequence[Any]
    ) -> None:
        """Find the first row whose ``passed`` or ``score`` cannot be derived, and raise its error."""
        text_of = self.text_of
        for i, (raw, raw_score) in enumerate(zip(raw_passed, raw_scores, strict=True)):
            where = (data, matches[i].start(), matches[:i])
            try:
                parse_passed(text_of(raw))
            except UnicodeDecodeError:
                raise self._error(*where, "invalid UTF-8 in column 'passed'") from None
            except ValueError as exc:
                raise self._error(*where, str(exc)) from None
            try:
                self.scores.from_raw(raw_score, text_of)
            except UnicodeDecodeError:
                raise self._error(*where, "invalid UTF-8 in column 'score'") from None

    def _column_at(self, m: re.Match[Any], offset: int) -> str:
        full = self._full_record.match(m.string, m.start())
        for g in range(1, self.width + 1):
            if full and full.start(g) <= offset < full.end(g):
                return self.header[g - 1]
        return "?"


def _check_header(names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        if "\x00" in name:
            raise ResultCsvError(f"header column {i} contains a NUL byte", line=1)
        if not name.strip():
            raise ResultCsvError(f"header column {i} has no name", line=1)
        if name in seen:
            raise ResultCsvError(f"header names column {name!r} twice", line=1)
        seen.add(name)
    missing = [c for c in RESULT_CSV_COLUMNS if c not in seen]
    if missing:
        raise ResultCsvError(
            f"header lacks the documented column(s) {', '.join(missing)}; found {', '.join(names)[:300]}. "
            "Is this a GIP result CSV?",
            line=1,
        )


_QUOTE, _COMMA, _CR, _LF = 0x22, 0x2C, 0x0D, 0x0A


class _Malformed(Exception):
    def __init__(self, field_no: int, what: str):
        super().__init__(what)
        self.field_no = field_no
        self.what = what

    def describe(self, header: list[str] | None) -> str:
        name = f" ({header[self.field_no - 1]!r})" if header and self.field_no <= len(header) else ""
        return f"field {self.field_no}{name}: {self.what}"


def _walk(data: bytes, pos: int, eof: bool) -> tuple[list[tuple[int, int]], int]:
    """Walk one record field by field (the slow, precise twin of the record regex).

    Return the fields' spans and the position after the line terminator; raise :class:`_Incomplete`
    when the record may continue beyond ``data`` and :class:`_Malformed` when it is not valid CSV.
    """
    n = len(data)
    spans: list[tuple[int, int]] = []
    i = pos
    while True:
        start = i
        field_no = len(spans) + 1
        if i < n and data[i] == _QUOTE:
            j = i + 1
            while True:
                q = data.find(b'"', j)
                if q < 0:
                    if not eof:
                        raise _Incomplete
                    raise _Malformed(field_no, "quoted field is never closed (unterminated quote)")
                if q + 1 < n and data[q + 1] == _QUOTE:
                    j = q + 2
                    continue
                if q + 1 == n and not eof:
                    raise _Incomplete
                i = q + 1
                break
        else:
            i = _UNQUOTED.match(data, i).end()  # type: ignore[union-attr]  # always matches
        spans.append((start, i))
        if i == n:
            if not eof:
                raise _Incomplete
            return spans, i
        c = data[i]
        if c == _COMMA:
            i += 1
            continue
        if c == _LF:
            return spans, i + 1
        if c == _CR:
            if i + 1 < n and data[i + 1] == _LF:
                return spans, i + 2
            if i + 1 == n:
                if not eof:
                    raise _Incomplete
                return spans, i + 1
            raise _Malformed(field_no, "carriage return outside quotes that does not end the line")
        if c == _QUOTE:
            raise _Malformed(
                field_no,
                "double quote inside an unquoted field; a field containing quotes must be enclosed "
                'in quotes, with inner quotes doubled ("")',
            )
        raise _Malformed(
            field_no,
            f"unexpected {bytes([c])!r} after the closing quote; inner quotes must be doubled "
            '("") and a quoted field must end at a comma or the end of the line',
        )


def first_error(f: IO[bytes], **reader_kwargs: Any) -> ResultCsvError | None:
    """Read a whole CSV again in text mode (which checks everything) and return its first error."""
    f.seek(0)
    try:
        reader = ResultCsvReader(f, text=True, **reader_kwargs)
        for _ in reader.batches():
            pass
    except ResultCsvError as exc:
        return exc
    return None
