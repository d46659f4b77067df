"""Load synthetic runs into a warehouse through the real loader (``load_result_csv``), for gate tests."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import uuid
from typing import Any

from gip_airflow import api
from gip_airflow.transfers._sql import RunMeta, load_result_csv

METRIC = api.Evaluator(
    id="-", metric={"type": "numeric", "config": {"min": {"value": 0.0}, "max": {"value": 1.0}}}
).parsed_metric()
DAY0 = dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.UTC)


def csv_bytes(rows: list[dict[str, Any]], extra_columns: tuple[str, ...] = ()) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*api.RESULT_CSV_COLUMNS, *extra_columns])
    for r in rows:
        passed = r["passed"]
        score = "" if r.get("score") is None else repr(round(r["score"], 2))
        writer.writerow(
            [
                r["input"],
                "",
                "expected",
                "output",
                "true" if passed else "false",
                "" if passed else "judge failed",
                score if passed else "",
                "rationale",
                *(r.get(c, "") for c in extra_columns),
            ]
        )
    return out.getvalue().encode()


def load_run(
    hook: Any,
    table: str,
    rows: list[dict[str, Any]],
    *,
    dag_id: str = "daily",
    day: int = 0,
    evaluator_id: str = "ev-1",
    run_id: str | None = None,
    extra_columns: tuple[str, ...] = (),
    evaluation_key: str | None = None,
) -> str:
    run_id = run_id or f"run-{uuid.uuid4().hex[:10]}"
    start = DAY0 + dt.timedelta(days=day)
    meta = RunMeta(
        run_id=run_id,
        experiment_id=f"exp-{day}",
        evaluator_id=evaluator_id,
        status="DONE",
        dag_id=dag_id,
        data_interval_start=start,
        data_interval_end=start + dt.timedelta(days=1),
        window_start=start,
        window_end=start + dt.timedelta(days=1),
        evaluation_key=evaluation_key,
    )
    load_result_csv(
        hook, io.BytesIO(csv_bytes(rows, extra_columns)), meta, table=table, metric=METRIC, create_table=True
    )
    return run_id


def window(
    rng: random.Random, n: int, pass_rate: float, mean: float, *, tags: tuple[str, ...] = ("a",)
) -> list[dict]:
    """n items: passed with probability pass_rate; passed items scored around ``mean``."""
    rows = []
    for i in range(n):
        passed = rng.random() < pass_rate
        score = min(1.0, max(0.0, rng.gauss(mean, 0.15))) if passed else None
        rows.append({"input": f"q{i}", "passed": passed, "score": score, "tag": tags[i % len(tags)]})
    return rows
