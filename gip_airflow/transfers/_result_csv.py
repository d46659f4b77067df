"""Streaming reader and validator of a GIP run's result CSV.

The reader works in blocks of about 1 MiB, so memory stays flat however large the file. Each record is
matched by one compiled regular expression of the strict RFC 4180 grammar with exactly as many fields
as the header; a record that does not match is walked field by field to say what is wrong (and where),
or to find that it merely continues in the next block. Because the grammar is the strict one, a valid
record means the same to Python and to PostgreSQL's ``COPY ... (FORMAT csv)``, so the COPY path can pass
validated records on as raw bytes (see ``_sql.py``).

Two modes, one grammar:

* raw (``text=False``): matches run over the raw bytes and capture only ``passed`` and ``score``
  (captures cost time); each block is decoded once only to validate UTF-8. For the COPY path.
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
from typing import IO, TYPE_CHECKING, Any, AnyStr

from airflow.sdk.exceptions import AirflowFailException

from gip_airflow.api import RESULT_CSV_COLUMNS, BoolMetric, CategoryMetric, NumericMetric
from gip_airflow.exceptions import GipError

if TYPE_CHECKING:
    from collections.abc import Iterator

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

    def from_raw(self, raw: bytes | str) -> float | None:
        try:
            return self._memo[raw]
        except KeyError:
            pass
        value = self.value(field_text(raw))
        if len(self._memo) >= self._MEMO_LIMIT:
            self._memo.clear()
        self._memo[raw] = value
        return value

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
        Both can be changed until :meth:`batches` starts (:meth:`configure`).
    :param max_record_bytes: fail instead of buffering a larger record (e.g. an unterminated quote).
    """

    def __init__(
        self,
        f: IO[bytes],
        *,
        metric: Metric | None = None,
        text: bool = False,
        capture_all: bool = False,
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
        self.configure(text=text, capture_all=capture_all)

    def configure(self, *, text: bool, capture_all: bool = False) -> None:
        """Choose the mode (text implies capturing every field); compiles the record expression."""
        self.text = text
        self.capture_all = capture_all = capture_all or text
        names = self.header
        captured = [i for i in range(self.width) if capture_all or names[i] in ("passed", "score")]
        #: column name -> match group number
        self.group = {names[i]: g for g, i in enumerate(captured, 1)}
        self.eol_group = len(captured) + 1
        fields = [f"({_FIELD})" if i in captured else _FIELD for i in range(self.width)]
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
        match = self._record.match
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
                if data.startswith(blank, pos):  # a blank line: skipped, counted
                    if data.startswith(cr, pos) and pos + 1 == n and more:
                        break
                    pos += 2 if data.startswith(crlf, pos) else 1
                    self.stats.blank_lines += 1
                    continue
                m = match(data, pos)
                if m is None or (m.end() == n and more and not m.group(eol).endswith(lf)):
                    try:
                        self._diagnose(data, pos, matches, eof=not more)
                    except _Incomplete:
                        break
                    if m is None:  # pragma: no cover - the walker accepted what the regex did not
                        raise self._error(data, pos, matches, "record does not parse")
                matches.append(m)
                pos = m.end()
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
        passed_memo = self._passed_memo
        pg, sg = self.group["passed"], self.group["score"]
        score = self.scores.from_raw
        stats = self.stats
        passed_list = batch.passed
        score_list = batch.score_values
        n_passed = n_failed = n_scored = 0
        score_sum = 0.0
        for i, m in enumerate(matches):
            raw_passed, raw_score = m.group(pg, sg)
            try:
                p = passed_memo[raw_passed]
            except KeyError:
                try:
                    p = parse_passed(field_text(raw_passed))
                except UnicodeDecodeError:
                    raise self._error(
                        data, m.start(), matches[:i], "invalid UTF-8 in column 'passed'"
                    ) from None
                except ValueError as exc:
                    raise self._error(data, m.start(), matches[:i], str(exc)) from None
                passed_memo[raw_passed] = p
            if p is True:
                n_passed += 1
            elif p is False:
                n_failed += 1
            try:
                v = score(raw_score)
            except UnicodeDecodeError:
                raise self._error(data, m.start(), matches[:i], "invalid UTF-8 in column 'score'") from None
            if v is not None:
                n_scored += 1
                score_sum += v
            passed_list.append(p)
            score_list.append(v)
        stats.rows += len(matches)
        stats.passed += n_passed
        stats.failed += n_failed
        stats.scored += n_scored
        stats.score_sum += score_sum
        return batch

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
