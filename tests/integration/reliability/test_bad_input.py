"""Bad input, property-based (hypothesis).

* Request models (``gip_airflow.api``): any input either validates or raises ``GipRequestError``
  whose message names the field(s) at fault — never another exception, never a message without a
  place, never the secret it was given.
* The result-CSV loader: random and hostile CSV bytes either load completely (every record, the same
  values Python's strict ``csv`` reader sees) or fail with ``ResultCsvError`` naming the row (or the
  header line) — and then the table still holds exactly what it held before: never a partial run.
  Checked on SQLite (``executemany``) and PostgreSQL (``COPY``).

CI: a few hundred examples; ``GIP_RELIABILITY_FULL=1``: thousands.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from gip_airflow import api
from tests.integration.reliability.conftest import size

pytestmark = pytest.mark.chaos

SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SECRET = "sk-lf-HYPOTHESIS-secret-9d1e"
VALIDATOR_TAG = re.compile(r"^function-(after|before|wrap|plain)\[")

# ---------------------------------------------------------------------------------------------
# Request models
# ---------------------------------------------------------------------------------------------

#: One valid body per request model: the seeds of the mutations.
VALID: dict[type[BaseModel], dict[str, Any]] = {
    api.LangfuseCredentialCreate: {
        "alias": "lf",
        "base_url": "https://cloud.langfuse.com",
        "public_key": "pk-lf-1",
        "private_key": SECRET,
    },
    api.ExperimentCreate: {
        "name": "traces",
        "type": "langfuse_trace",
        "config": {
            "integrated_service_credential_id": "c-1",
            "sampling_rate": 0.5,
            "max_trace_count": 10,
            "trace_filter_request": {
                "name": "chat",
                "tags": ["prod"],
                "from_timestamp": 1742293735000,
                "to_timestamp": "2025-03-19T10:28:55+00:00",
            },
        },
    },
    api.EvaluatorCreate: {
        "name": "judge",
        "metric": {"type": "category", "config": [{"index": 0, "name": "bad"}, {"index": 1, "name": "good"}]},
        "evaluation_config": {
            "judge_model_seq_id": 19,
            "judge_model_public_id": "openai/gpt-4",
            "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
            "judge_prompt": "Judge it.",
        },
    },
    api.ExperimentRunCreate: {
        "evaluator_id": "ev-1",
        "display_name": "run",
        "target_data_converter": {
            "model_seq_id": 21,
            "model_public_id": "openai/gpt-4o",
            "input_prompt_trajectory_template": {"messages": [{"role": "user", "content": "{item.input}"}]},
        },
        "metadata": {"langfuse_integration_config": {"score_name": "s", "sync_score": True}},
    },
    api.AutoEvaluationCreate: {
        "evaluator_id": "ev-1",
        "name": "nightly",
        "schedule": "0 23 * * *",
        "timezone": "Asia/Seoul",
    },
    api.AutoEvaluationUpdate: {"enabled": False},
    api.TraceFilterRequest: {"relative_time_range": "PT12H"},
    api.ObservationFilterRequest: {"from_start_time": 1, "to_start_time": 2},
    api.DatasetExperimentConfig: {"integrated_service_credential_id": "c", "dataset_name": "ds"},
    api.NumericMetric: {"config": {"min": {"value": 0.0}, "max": {"value": 1.0}}},
}
MODELS = sorted(VALID, key=lambda m: m.__name__)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "",
            " ",
            "None",
            "PT0S",
            "P1D",
            "PT-1H",
            "P99999999999999Y",
            "2025-03-18",
            "2025-03-18T10:00:00",
            "2025-02-30T00:00:00Z",
            "{{ data_interval_start }}",
            "9" * 40,
            "-1",
            "a b",
            "https://x",
            "ftp://x",
            "0 0 * * *",
            "* * *",
            "Mars/Olympus",
            "../../etc/passwd",
            "\x00",
            "langfuse_dataset",
            "langfuse_trace",
            "langfuse_observation",
            "category",
            "numeric",
            "bool",
            "llm_judge",
            "function-after[x]",
        ]
    )
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.dates()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _field_names(model: type[BaseModel]) -> set[str]:
    """Every field name of a model and of the models inside it (what a message may name)."""
    names: set[str] = set()
    todo: list[Any] = [model]
    seen: set[Any] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, info in getattr(current, "model_fields", {}).items():
            names.add(name)
            todo += _models_in(info.annotation)
    return names


def _models_in(annotation: Any) -> list[Any]:
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    return found


def check_outcome(model: type[BaseModel], data: Any) -> str:
    """Build; return "ok" or "error". Fail on any other outcome or on a message that names no field.

    Every error pydantic reports must be in the message under its field path; an error of the whole
    object (no path) must name a field in its text, unless the input is not an object at all.
    """
    try:
        built = api.build(model, data)
    except api.GipRequestError as exc:
        message = str(exc)
        note(message)
        assert message.startswith(f"Invalid {model.__name__}: "), message
        assert SECRET not in message, "the secret reached the error message"
        parsed = data
        if isinstance(data, str | bytes):
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
        fields = _field_names(model)
        keys = {str(k) for path in _paths(parsed) for k in path} if isinstance(parsed, dict) else set()
        try:
            model.model_validate_json(data) if isinstance(data, str | bytes) else model.model_validate(data)
        except ValidationError as raw:
            errors = raw.errors(include_url=False, include_input=False)
        else:  # pragma: no cover - build() raised, so pydantic must too
            raise AssertionError("GipRequestError without a validation error") from None
        assert errors
        for error in errors:
            loc = [str(p) for p in error["loc"] if not VALIDATOR_TAG.match(str(p))]
            if loc:
                assert ".".join(p or "''" for p in loc) in message, (loc, message)
                assert loc[0] in fields or loc[0] in keys, (loc, message)
            else:
                assert not isinstance(parsed, dict) or any(f in error["msg"] for f in fields), message
        return "error"
    assert isinstance(built, model)
    wire = built.to_wire() if isinstance(built, api.RequestModel) else built.model_dump()
    # What would be sent is plain JSON and valid when read back (no NaN or infinity quietly sent as null).
    sent = json.loads(json.dumps(wire, allow_nan=False))
    again = api.build(model, sent)
    assert (again.to_wire() if isinstance(again, api.RequestModel) else again.model_dump()) == sent
    return "ok"


@st.composite
def mutated(draw: st.DrawFn) -> tuple[type[BaseModel], Any]:
    """A valid body with one to three random changes: a value replaced, a key dropped or added."""
    model = draw(st.sampled_from(MODELS))
    data = copy.deepcopy(VALID[model])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if not paths:
            action = "add"
        if action == "add":
            targets = [p for p in _paths(data) if isinstance(_get(data, p), dict)]
            target = _get(data, draw(st.sampled_from(targets)))
            target[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _get(data, path[:-1])
        if action == "drop" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(_similar(parent[path[-1]]) | json_values)
    return model, data


def _similar(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same JSON type as ``value`` (mutations that often still validate)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-(2**40), max_value=2**45)
    if isinstance(value, float):
        return st.floats(min_value=-3, max_value=3)
    if isinstance(value, str):
        return st.text(max_size=20) | scalars.filter(lambda v: isinstance(v, str))
    if isinstance(value, list):
        return st.lists(st.just(value[0]) if value else scalars, max_size=3)
    return st.just(copy.deepcopy(value))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


@settings(SETTINGS, max_examples=size(300, 5000))
@given(case=mutated())
def test_mutated_requests_validate_or_name_the_field(case: tuple[type[BaseModel], Any]) -> None:
    model, data = case
    note(f"{model.__name__}: {data!r}")
    event(f"{model.__name__}: {check_outcome(model, data)}")


@settings(SETTINGS, max_examples=size(150, 3000))
@given(
    model=st.sampled_from(MODELS),
    data=st.dictionaries(st.text(max_size=12), json_values, max_size=6) | json_values,
)
def test_arbitrary_requests_validate_or_name_the_field(model: type[BaseModel], data: Any) -> None:
    check_outcome(model, data)


@settings(SETTINGS, max_examples=size(100, 2000))
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_request_json_text_validates_or_names_the_field(text: str | bytes) -> None:
    """Requests given as JSON text (e.g. from a DAG param) behave the same, even when it is not JSON."""
    check_outcome(api.ExperimentRunCreate, text)


# ---------------------------------------------------------------------------------------------
# The result-CSV loader
# ---------------------------------------------------------------------------------------------

field_text_st = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
) | st.sampled_from(
    ["", " ", ",", '"', '""', "a,b", 'say "hi"', "line\nbreak", "crlf\r\nx", "안녕하세요", "🙂"]
)
PASSED_OK = ["true", "false", "True", "FALSE", "t", "f", "yes", "no", "1", "0", ""]


@st.composite
def result_csvs(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A result CSV written by Python's csv module, and the first row whose ``passed`` is invalid."""
    extras = draw(st.lists(st.sampled_from(["model", "latency_ms", "tags"]), unique=True, max_size=2))
    header = draw(st.permutations([*api.RESULT_CSV_COLUMNS, *extras]))
    rows, first_bad = [], None
    for number in range(1, draw(st.integers(0, 12)) + 1):
        row = {name: draw(field_text_st) for name in header}
        invalid = draw(st.integers(0, 29)) == 0
        row["passed"] = draw(st.sampled_from(["maybe", "2", "nope"] if invalid else PASSED_OK))
        row["score"] = draw(st.sampled_from(["good", "0.7", "1", "", "NaN", "inf"]) | field_text_st)
        if row["passed"].strip().lower() not in {p.lower() for p in PASSED_OK} and first_bad is None:
            first_bad = number
        rows.append(row)
    out = io.StringIO(newline="")
    # Python's writer leaves a bare CR unquoted when the line terminator is "\n" (ambiguous CSV that the
    # loader rightly refuses): quote everything then, and sometimes anyway.
    bare_cr = any("\r" in v for row in rows for v in row.values())
    quoting = csv.QUOTE_ALL if bare_cr or draw(st.integers(0, 4)) == 0 else csv.QUOTE_MINIMAL
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    writer = csv.DictWriter(out, header, lineterminator=terminator, quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    text = out.getvalue()
    if rows and draw(st.booleans()):
        text = text.rstrip("\r\n")  # no newline after the last record
    data = text.encode()
    if draw(st.integers(0, 5)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data, first_bad


@st.composite
def hostile_csvs(draw: st.DrawFn) -> bytes:
    """A valid CSV with a few bytes inserted, deleted, cut off or repeated; or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(draw(result_csvs())[0])
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "insert", "delete", "truncate", "repeat"]))
        if action == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b'"', b",", b"\r", b"\n", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b'""'])
                | st.binary(min_size=1, max_size=3)
            )
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[max(0, pos - 20) : pos]
    return bytes(data)


def reference_rows(data: bytes) -> list[dict[str, str]] | None:
    """What Python's strict csv reader makes of the bytes (None when it refuses them)."""
    try:
        text = data.decode("utf-8-sig")
        if "\x00" in text:
            return None
        records = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    except (UnicodeDecodeError, csv.Error):
        return None
    if not records or any(len(r) != len(records[0]) for r in records):
        return None
    header = records[0]
    return [dict(zip(header, r, strict=True)) for r in records[1:]]


class CsvTarget:
    """One warehouse the loader writes to, with the run's rows as the test expects them."""

    RUN = "hostile-run"

    def __init__(self, kind: str, hook: Any, table: str) -> None:
        self.kind, self.hook, self.table = kind, hook, table
        self.expected: list[tuple[Any, ...]] = []
        self.loads = self.errors = 0

    def load(self, data: bytes) -> Any:
        from gip_airflow.transfers._sql import RunMeta, load_result_csv

        return load_result_csv(
            self.hook, io.BytesIO(data), RunMeta(run_id=self.RUN), table=self.table, create_table=True
        )

    def stored(self) -> list[tuple[Any, ...]]:
        """The run's rows (and a check that its summary row agrees), read without the hook's logging."""
        cols = ", ".join(api.RESULT_CSV_COLUMNS)
        ph = self.hook.placeholder
        conn = self.hook.get_conn()
        try:
            cur = conn.cursor()
            cur.execute(
                f"SELECT row_number, {cols} FROM {self.table} WHERE run_id = {ph} ORDER BY row_number",
                (self.RUN,),
            )
            rows = cur.fetchall()
            cur.execute(f"SELECT item_count FROM {self.table}_runs WHERE run_id = {ph}", (self.RUN,))
            summary = cur.fetchall()
        finally:
            conn.close()
        normal = [tuple(bool(v) if i == 5 and v is not None else v for i, v in enumerate(r)) for r in rows]
        assert [tuple(s) for s in summary] == ([(len(rows),)] if rows or summary else []), summary
        return normal

    @staticmethod
    def as_stored(reference: list[dict[str, str]]) -> list[tuple[Any, ...]]:
        from gip_airflow.transfers._result_csv import parse_passed

        out = []
        for number, row in enumerate(reference, 1):
            values = [row[c] or None for c in api.RESULT_CSV_COLUMNS]
            values[4] = parse_passed(values[4])
            out.append((number, *values))
        return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def csv_target(request, tmp_path_factory) -> Iterator[CsvTarget]:
    from airflow.sdk import BaseHook

    from tests.integration.reliability.helpers import pg_warehouse, postgres_conn

    with pytest.MonkeyPatch.context() as mp:
        if request.param == "sqlite":
            path = tmp_path_factory.mktemp("csvprop") / "warehouse.db"
            mp.setenv("AIRFLOW_CONN_CSVPROP_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
            yield CsvTarget("sqlite", BaseHook.get_connection("csvprop_sqlite").get_hook(), "results")
        else:
            with pg_warehouse() as wh:
                mp.setenv("AIRFLOW_CONN_CSVPROP_PG", json.dumps(postgres_conn()))
                yield CsvTarget("postgres", BaseHook.get_connection("csvprop_pg").get_hook(), wh.table)


def _load_and_check(target: CsvTarget, data: bytes, first_bad: int | None = None, valid: bool = False) -> str:
    """Load; a refusal must name a row (or the header line) and leave the table as it was; a load must
    hold every record with the values Python's strict csv reader sees. ``valid``: the CSV was written by
    Python's csv module, so only a bad ``passed`` value (row ``first_bad``) may be refused."""
    from gip_airflow.transfers._result_csv import ResultCsvError

    before = target.stored() if target.loads else []
    target.loads += 1
    try:
        result = target.load(data)
    except ResultCsvError as exc:
        target.errors += 1
        note(str(exc))
        assert exc.row is not None or exc.line is not None, str(exc)
        assert re.match(r"result CSV (row \d+ \(line \d+\)|line \d+): ", str(exc)), str(exc)
        if valid:
            assert first_bad is not None, f"refused a valid CSV: {exc}"
            assert exc.row == first_bad and "passed must be true or false" in str(exc), (first_bad, str(exc))
        assert target.stored() == before, "a failed load changed the table"
        return "refused"
    reference = reference_rows(data)
    assert reference is not None, "loaded bytes that Python's strict csv reader refuses"
    assert first_bad is None, f"row {first_bad} has an invalid passed value but the load succeeded"
    stored = target.stored()
    assert result.stats.rows == len(stored) == len(reference)
    assert stored == CsvTarget.as_stored(reference), "loaded values differ from the CSV's"
    return "loaded"


@settings(SETTINGS, max_examples=size(80, 1500))
@given(case=result_csvs())
def test_generated_csv_loads_completely_or_names_the_bad_row(csv_target, case) -> None:
    data, first_bad = case
    event(f"{csv_target.kind}: {_load_and_check(csv_target, data, first_bad, valid=True)}")


@settings(SETTINGS, max_examples=size(120, 3000))
@given(data=hostile_csvs())
def test_hostile_csv_loads_completely_or_fails_with_a_row_and_changes_nothing(csv_target, data) -> None:
    event(f"{csv_target.kind}: {_load_and_check(csv_target, data)}")
