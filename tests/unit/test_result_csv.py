"""The result-CSV reader: the strict grammar, block boundaries, both modes, every kind of bad input."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gip_airflow.api import RESULT_CSV_COLUMNS, BoolMetric, CategoryMetric, NumericMetric
from gip_airflow.transfers._result_csv import (
    ResultCsvError,
    ResultCsvReader,
    ScoreDeriver,
    first_error,
    inner_text,
    parse_passed,
    unquote,
)

HEADER = ",".join(RESULT_CSV_COLUMNS)
CATEGORY = CategoryMetric(
    config=[{"index": 0, "name": "bad"}, {"index": 1, "name": "neutral"}, {"index": 2, "name": "good"}]
)


def csv_bytes(rows, *, header=RESULT_CSV_COLUMNS, terminator="\r\n", quoting=csv.QUOTE_MINIMAL, bom=False):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=terminator, quoting=quoting)
    writer.writerow(header)
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def row(**values):
    base = dict.fromkeys(RESULT_CSV_COLUMNS, "")
    base.update(passed="True", score="good")
    base.update(values)
    return [base[c] for c in RESULT_CSV_COLUMNS]


def read(data: bytes, *, text: bool, block_size: int = 1 << 20, metric=None, **kwargs):
    """Every record's values (None for empty), plus the reader."""
    csv.field_size_limit(1 << 30)  # the raw-mode check below re-parses huge records with csv
    reader = ResultCsvReader(io.BytesIO(data), metric=metric, text=text, block_size=block_size, **kwargs)
    values, passed, scores, first_rows = [], [], [], []
    for batch in reader.batches():
        first_rows.append(batch.first_row)
        passed += batch.passed
        scores += batch.score_values
        for m in batch.matches:
            if text:
                values.append([unquote(f) for f in m.groups()[: reader.width]])
            else:  # raw mode: the record's bytes must be one complete CSV record
                raw = batch.data[m.start() : m.start(reader.eol_group)]
                (parsed,) = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
                values.append([v or None for v in parsed])
    return reader, values, passed, scores


HOSTILE = [
    row(
        input_data_from_experiment='[{"role": "user", "content": "요금제 \\"추천\\", 부탁해요"}]',
        output_data_from_experiment="line one\r\nline two\nline three\rend",
        rationale='<rationale>큰따옴표 "" 와 쉼표, 그리고\n줄바꿈</rationale>',
        error_message="\\.",
    ),
    row(passed="False", score="", error_message='judge said: "no"\n\\.\nend', rationale="\ufeffBOM inside"),
    row(score="neutral", input_data_from_experiment="  leading and trailing spaces  ", rationale="tab\there"),
    row(score="bad", rationale="emoji 🎉 and 中文 and ✓", output_data_from_experiment_run=","),
]


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
@pytest.mark.parametrize("block_size", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("terminator", ["\r\n", "\n"], ids=["crlf", "lf"])
def test_values_survive_any_block_size(text, block_size, terminator):
    data = csv_bytes(HOSTILE * 5, terminator=terminator, bom=True)
    reader, values, passed, scores = read(data, text=text, block_size=block_size, metric=CATEGORY)
    assert reader.header == list(RESULT_CSV_COLUMNS)
    assert values == [[v or None for v in r] for r in HOSTILE * 5]
    assert passed == [True, False, True, True] * 5
    assert scores == [2.0, None, 1.0, 0.0] * 5
    assert reader.stats.rows == 20 and reader.stats.passed == 15 and reader.stats.failed == 5
    assert reader.stats.bytes_read == len(data)


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
def test_quote_all_blank_lines_and_no_final_newline(text):
    data = csv_bytes(HOSTILE, quoting=csv.QUOTE_ALL)
    data = data.replace(b"\r\n", b"\r\n\r\n", 1) + b"\r\n"  # blank lines after the header and at the end
    data += csv_bytes([row(score="bad")], header=[]).lstrip(b"\r\n").rstrip(b"\r\n")
    reader, values, _, _ = read(data, text=text, block_size=64)
    assert len(values) == 5
    assert values[-1][RESULT_CSV_COLUMNS.index("score")] == "bad"
    assert reader.stats.blank_lines == 2


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
def test_header_only_is_zero_rows(text):
    reader, values, _, _ = read(HEADER.encode(), text=text)
    assert values == [] and reader.stats.rows == 0 and reader.stats.pass_rate is None


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
def test_extra_columns_and_any_column_order(text):
    header = ["custom_1", *reversed(RESULT_CSV_COLUMNS), "trace_id"]
    rows = [["x", *reversed(row(score="neutral")), "t-1"]]
    reader, values, _, scores = read(csv_bytes(rows, header=header), text=text, metric=CATEGORY)
    assert reader.extra_columns == ["custom_1", "trace_id"]
    assert reader.documented == list(reversed(RESULT_CSV_COLUMNS))
    assert values[0][0] == "x" and values[0][-1] == "t-1"
    assert scores == [1.0]


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
def test_huge_field(text):
    big = '{"content": "' + ('한국어 텍스트, "따옴표"\n' * 200_000) + '"}'  # ~5 MB
    _, values, _, _ = read(
        csv_bytes([row(input_data_from_experiment=big)] * 2), text=text, block_size=1 << 16
    )
    assert [v[0] for v in values] == [big, big]


fields = st.text(alphabet=st.sampled_from(list('ab ,"\r\n\t\\.한é\ufeff🎉')), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(fields, min_size=8, max_size=8), max_size=6),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    terminator=st.sampled_from(["\r\n", "\n"]),
    block_size=st.sampled_from([1, 3, 16, 1 << 20]),
    text=st.booleans(),
)
def test_property_reads_what_csv_writer_wrote(rows, quoting, terminator, block_size, text):
    passed_col = RESULT_CSV_COLUMNS.index("passed")
    for r in rows:
        r[passed_col] = "true"
        if quoting == csv.QUOTE_MINIMAL and terminator == "\n":
            # csv.writer then leaves a field holding "\r" unquoted: that output is broken CSV
            r[:] = [f.replace("\r", "") for f in r]
    data = csv_bytes(rows, terminator=terminator, quoting=quoting)
    _, values, _, _ = read(data, text=text, block_size=block_size)
    assert values == [[v or None for v in r] for r in rows]


# -- bad input -------------------------------------------------------------------------------------

GOOD = ",".join(['"[{""role"": ""user""}]"', "b", "c", "d", "True", "", "good", '"multi\nline"'])

BAD_CASES = {
    "empty file": (b"", "the file is empty", None, 1),
    "bom only": (b"\xef\xbb\xbf", "the file is empty", None, 1),
    "missing column": (
        ",".join(RESULT_CSV_COLUMNS[:-1]).encode() + b"\r\n",
        "lacks the documented column(s) rationale",
        None,
        1,
    ),
    "renamed column": (
        HEADER.replace("score", "scores", 1).encode() + b"\n",
        "lacks the documented column(s) score",
        None,
        1,
    ),
    "duplicate column": ((HEADER + ",passed").encode() + b"\n", "names column 'passed' twice", None, 1),
    "unnamed column": ((HEADER + ",").encode() + b"\n", "header column 9 has no name", None, 1),
    "nul in header": (b"\x00" + HEADER.encode() + b",x\n", "header column 1 contains a NUL byte", None, 1),
    "header not utf-8": (HEADER.encode() + b",caf\xe9\n", "the header is not valid UTF-8", None, 1),
    "too many fields": (
        f"{HEADER}\n{GOOD}\n{GOOD},extra\n".encode(),
        "expected 8 fields as in the header, found 9; the first unexpected field starts with b'extra'",
        2,
        4,
    ),
    "too few fields": (f"{HEADER}\n{GOOD}\n{GOOD}\na,b,c\n".encode(), "expected 8 fields", 3, 6),
    "unterminated quote": (
        f'{HEADER}\n{GOOD}\n"never closed,b,c,d,True,,good,x\n'.encode(),
        "field 1 ('input_data_from_experiment'): quoted field is never closed",
        2,
        4,
    ),
    "text after closing quote": (
        f'{HEADER}\n{GOOD}\na,b,c,d,True,,"good"ish,x\n'.encode(),
        "field 7 ('score'): unexpected b'i' after the closing quote",
        2,
        4,
    ),
    "quote in unquoted field": (
        f'{HEADER}\na,b,c,d,True,,good,he said "hi"\n'.encode(),
        "field 8 ('rationale'): double quote inside an unquoted field",
        1,
        2,
    ),
    "bare carriage return": (
        f"{HEADER}\na,b\rc,c,d,True,,good,x\n".encode(),
        "field 2 ('input_data_from_experiment_run'): carriage return outside quotes",
        1,
        2,
    ),
    "invalid utf-8": (
        f"{HEADER}\n{GOOD}\n".encode() + b'a,b,c,d,True,,good,"caf\xe9\nau lait"\n',
        "invalid UTF-8 (byte 0xe9) in column 'rationale'",
        2,
        4,
    ),
    "nul byte": (
        f"{HEADER}\n{GOOD}\na,b,c,d,True,,good,x\x00y\n".encode(),
        "NUL byte in column 'rationale'",
        2,
        4,
    ),
    "bad passed": (
        f"{HEADER}\n{GOOD}\n{GOOD}\na,b,c,d,maybe,,good,x\n".encode(),
        "passed must be true or false, got 'maybe'",
        3,
        6,
    ),
}


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
@pytest.mark.parametrize("block_size", [5, 1 << 20])
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_names_row_line_and_problem(case, block_size, text):
    data, message, bad_row, line = BAD_CASES[case]
    with pytest.raises(ResultCsvError) as err:
        read(data, text=text, block_size=block_size)
    assert message in str(err.value)
    assert err.value.row == bad_row
    assert err.value.line == line
    where = f"row {bad_row} (line {line})" if bad_row else f"line {line}"
    assert str(err.value).startswith(f"result CSV {where}: ")


@pytest.mark.parametrize("text", [False, True], ids=["raw", "text"])
def test_record_larger_than_the_limit(text):
    data = f'{HEADER}\n{GOOD}\n"{"x" * 5000}'.encode() + b"\n" * 10
    with pytest.raises(ResultCsvError, match=r"row 2 .*record is larger than 0 MiB; an unterminated"):
        read(data, text=text, block_size=256, max_record_bytes=1024)


def test_error_after_many_blocks_counts_lines_and_rows():
    rows = [row(rationale=f"line\n{i}") for i in range(2000)]
    data = csv_bytes(rows) + b"a,b,c,d,True,,good\r\n"
    with pytest.raises(ResultCsvError) as err:
        read(data, text=False, block_size=4096)
    assert (err.value.row, err.value.line) == (2001, 4002)


# -- derived values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("True", True),
        ("false", False),
        (" YES ", True),
        ("n", False),
        ("1", True),
        ("0", False),
        ("off", False),
        (None, None),
        ("  ", None),
    ],
)
def test_parse_passed(text, expected):
    assert parse_passed(text) is expected


def test_parse_passed_rejects_other_words():
    with pytest.raises(ValueError, match="passed must be true or false"):
        parse_passed("passed")


@pytest.mark.parametrize(
    ("metric", "score", "value"),
    [
        (CATEGORY, "good", 2.0),
        (CATEGORY, " Neutral ", 1.0),
        (CATEGORY, "1", 1.0),
        (CATEGORY, "7", None),
        (CATEGORY, "excellent", None),
        (NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}}), "0.75", 0.75),
        (NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}}), " 1e-1 ", 0.1),
        (NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}}), "nan", None),
        (NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}}), "inf", None),
        (NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}}), "high", None),
        (BoolMetric(), "true", 1.0),
        (BoolMetric(), "False", 0.0),
        (BoolMetric(), "maybe", None),
        (None, "0.5", 0.5),
        (None, "true", 1.0),
        (None, "good", None),
        (CATEGORY, "", None),
        (CATEGORY, None, None),
    ],
)
def test_score_value_per_metric(metric, score, value):
    assert ScoreDeriver(metric).value(score) == value


def test_score_memo_keys_raw_fields():
    scores = ScoreDeriver(CATEGORY)
    assert scores.from_raw(b'"good"') == 2.0
    assert scores.from_raw('"neutral"') == 1.0
    assert scores.from_raw(b"") is None


def test_raw_mode_can_leave_utf8_to_the_database():
    data = csv_bytes([row(rationale="ok")]) + b'a,b,c,d,True,,good,"caf\xe9"\r\n'
    reader = ResultCsvReader(io.BytesIO(data))
    reader.check_utf8 = False
    assert sum(len(b.matches) for b in reader.batches()) == 2
    err = first_error(io.BytesIO(data))
    assert err is not None and "row 2 (line 3): invalid UTF-8 (byte 0xe9) in column 'rationale'" in str(err)
    assert first_error(io.BytesIO(csv_bytes([row()]))) is None


@pytest.mark.parametrize("column", ["passed", "score"])
def test_bad_utf8_in_derived_columns_without_the_block_check(column):
    values = {"passed": "True", "score": "good"}
    values[column] = "X"
    line = ",".join(["a", "b", "c", "d", values["passed"], "", values["score"], "r"]).encode()
    data = f"{HEADER}\n".encode() + line.replace(b"X", b"\xff") + b"\n"
    reader = ResultCsvReader(io.BytesIO(data))
    reader.check_utf8 = False
    with pytest.raises(ResultCsvError, match=rf"row 1 \(line 2\): invalid UTF-8 in column '{column}'"):
        list(reader.batches())


# -- inner captures (the SQLite path) --------------------------------------------------------------


def read_inner(data: bytes, *, block_size: int = 1 << 20, metric=None, **kwargs):
    """Like :func:`read` in raw mode with ``inner`` captures: every value from its captured content."""
    reader = ResultCsvReader(io.BytesIO(data), metric=metric, inner=True, block_size=block_size, **kwargs)
    values, passed, scores = [], [], []
    for batch in reader.batches():
        passed += batch.passed
        scores += batch.score_values
        for m in batch.matches:
            values.append([inner_text(m.group(reader.group[name])) for name in reader.header])
            assert m.end(reader.eol_group) == m.end()
    return reader, values, passed, scores


@pytest.mark.parametrize("block_size", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("terminator", ["\r\n", "\n"], ids=["crlf", "lf"])
def test_inner_captures_hold_every_value(block_size, terminator):
    data = csv_bytes(HOSTILE * 5, terminator=terminator, bom=True, quoting=csv.QUOTE_ALL)
    data += csv_bytes(HOSTILE, terminator=terminator, header=[]).lstrip(b"\r\n")
    reader, values, passed, scores = read_inner(data, block_size=block_size, metric=CATEGORY)
    assert values == [[v or None for v in r] for r in HOSTILE * 6]
    assert passed == [True, False, True, True] * 6
    assert scores == [2.0, None, 1.0, 0.0] * 6
    assert (reader.stats.rows, reader.stats.passed, reader.stats.failed) == (24, 18, 6)
    assert (reader.stats.scored, reader.stats.score_sum) == (18, 18.0)


def test_inner_captures_keep_inner_quotes_doubled_and_empty_fields_empty():
    data = csv_bytes([row(rationale='say "hi"', error_message="", score='"good"')], quoting=csv.QUOTE_ALL)
    reader = ResultCsvReader(io.BytesIO(data), metric=CATEGORY, inner=True)
    (batch,) = reader.batches()
    (m,) = batch.matches
    assert m.group(reader.group["rationale"]) == b'say ""hi""'
    assert m.group(reader.group["error_message"]) == b""
    assert m.group(reader.group["score"]) == b'""good""'
    assert batch.score_values == [None]  # the score is the text '"good"', not a category name


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(fields, min_size=8, max_size=8), max_size=6),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    block_size=st.sampled_from([1, 3, 16, 1 << 20]),
)
def test_property_inner_captures_read_what_csv_writer_wrote(rows, quoting, block_size):
    passed_col = RESULT_CSV_COLUMNS.index("passed")
    for r in rows:
        r[passed_col] = "true"
    data = csv_bytes(rows, quoting=quoting)
    _, values, _, _ = read_inner(data, block_size=block_size)
    assert values == [[v or None for v in r] for r in rows]


@pytest.mark.parametrize("block_size", [5, 1 << 20])
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_inner_captures_reject_bad_input_alike(case, block_size):
    data, message, bad_row, line = BAD_CASES[case]
    with pytest.raises(ResultCsvError) as err:
        read_inner(data, block_size=block_size)
    assert message in str(err.value)
    assert (err.value.row, err.value.line) == (bad_row, line)


def test_the_first_bad_row_is_reported_whichever_column_is_bad():
    # row 2 has a bad score byte, row 3 a bad passed word: the batch fails at row 2
    rows = [row(), row(score="X"), row(passed="maybe")]
    data = csv_bytes(rows).replace(b",X,", b",\xff,")
    for kwargs in ({}, {"inner": True}):
        reader = ResultCsvReader(io.BytesIO(data), **kwargs)
        reader.check_utf8 = False
        with pytest.raises(ResultCsvError, match=r"row 2 \(line 3\): invalid UTF-8 in column 'score'"):
            list(reader.batches())


def test_score_sum_adds_in_row_order():
    # 0.1 + 0.2 + 0.3 row by row is 0.6000000000000001; a compensated sum would give 0.6
    rows = [row(score=s) for s in ("0.1", "0.2", "0.3")]
    numeric = NumericMetric(config={"min": {"value": 0}, "max": {"value": 1}})
    reader, _, _, _ = read(csv_bytes(rows), text=False, metric=numeric)
    assert reader.stats.score_sum == 0.1 + 0.2 + 0.3 == 0.6000000000000001
