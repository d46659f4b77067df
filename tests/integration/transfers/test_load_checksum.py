"""The loaded content is pinned by a checksum: the same rows, score_value and summary, whatever the layout.

The expected value was computed from the loads of the original single-table layout (run-level columns in
every result row) and committed before the layout changed. Every warehouse gives the same checksum.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from typing import Any

from gip_airflow.api import NumericMetric
from gip_airflow.transfers._sql import RunMeta, load_result_csv
from tests.perf.benchmarks.result_csv import write_result_csv
from tests.unit.test_result_csv import CATEGORY, HOSTILE, csv_bytes

#: sha256 of the canonical JSON of both runs' rows and summary rows (see :func:`content`).
EXPECTED = "9445d9f7dcdf2825281e64403f979119f78f2ae179623e0731be48240d852ed8"

#: What a query of the results sees per row (``loaded_at`` is compared separately: it changes every load).
ROW_COLUMNS = (
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
)
SUMMARY_COLUMNS = (
    "run_id",
    "experiment_id",
    "evaluator_id",
    "status",
    "display_name",
    "item_count",
    "passed_count",
    "failed_count",
    "pass_rate",
    "scored_count",
    "mean_score_value",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "window_start",
    "window_end",
    "dag_id",
    "logical_date",
    "result_table",
)

T0 = dt.datetime(2025, 3, 18, tzinfo=dt.UTC)


def run_meta(run_id: str, logical: dt.datetime | None) -> RunMeta:
    return RunMeta(
        run_id=run_id,
        experiment_id="exp-ck",
        evaluator_id=f"ev-{run_id}",
        status="DONE",
        display_name="체크섬 run",
        prompt_tokens=1000,
        completion_tokens=200,
        total_tokens=1200,
        dag_id="gip_checksum",
        logical_date=logical,
        data_interval_start=T0,
        data_interval_end=T0 + dt.timedelta(days=1),
        window_start=T0 - dt.timedelta(hours=1),
        window_end=T0 + dt.timedelta(days=1, hours=1),
    )


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, float):
        return repr(value)
    return value


def content(wh: Any) -> str:
    """The checksum of what the warehouse holds, with the table name replaced by a placeholder."""
    rows = wh.rows()
    summaries = wh.summaries()
    loaded = {s["run_id"]: s["loaded_at"] for s in summaries}
    assert [r["loaded_at"] for r in rows] == [loaded[r["run_id"]] for r in rows]
    doc = {
        "rows": [{c: _canonical(r[c]) for c in ROW_COLUMNS} for r in rows],
        "summaries": [
            {c: _canonical(s[c] if c != "result_table" else "<table>") for c in SUMMARY_COLUMNS}
            for s in summaries
        ],
    }
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_content_checksum(warehouse, tmp_path):
    wh = warehouse
    path = tmp_path / "fixed.csv"
    write_result_csv(path, 240, row_chars=400, seed=23, pool=50, extra_columns=("trace_id",))
    hook = wh.hook()
    common = {"table": wh.table, "create_table": True, "fast_path": wh.fast_path}
    load_result_csv(hook, path, run_meta("run-ck-1", T0), metric=CATEGORY, **common)
    load_result_csv(
        hook,
        io.BytesIO(csv_bytes(HOSTILE * 4, bom=True)),
        run_meta("run-ck-2", None),
        metric=None,
        **common,
    )
    numeric = csv_bytes([[*r[:6], s, *r[7:]] for r, s in zip(HOSTILE, ["0.5", "", "7", "x"], strict=True)])
    load_result_csv(
        hook,
        io.BytesIO(numeric),
        run_meta("run-ck-3", T0),
        metric=NumericMetric(config={"min": {"value": 0}, "max": {"value": 10}}),
        **common,
    )
    assert content(wh) == EXPECTED
