"""A warehouse like the demo's, filled through the provider's loader, for the Evaluations view tests."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from gip_airflow.api import RESULT_CSV_COLUMNS, CategoryMetric
from gip_airflow.transfers._sql import RunMeta, load_result_csv

TABLE = "gip_trace_results"
DAILY_DAG = "gip_daily_trace_evaluation"
COMPARISON_DAG = "gip_model_comparison"
OTHER_DAG = "gip_other_team_dag"
METRIC = CategoryMetric(
    config=[{"index": 0, "name": "bad"}, {"index": 1, "name": "neutral"}, {"index": 2, "name": "good"}]
)
FIRST = dt.datetime(2025, 3, 1, 14, tzinfo=dt.UTC)  # 23:00 Asia/Seoul, as the daily DAG fires
DAYS = 14
MISSING_DAY = 9  # a window without data: must show as a gap


@dataclass
class Filled:
    path: str
    table: str
    runs: dict[str, list[str]] = field(default_factory=dict)  # dag_id -> run ids
    gap: tuple[dt.datetime, dt.datetime] | None = None


def result_csv(rng: random.Random, items: int, pass_probability: float) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(RESULT_CSV_COLUMNS)
    for i in range(items):
        good = rng.random() < pass_probability
        score = "good" if good else rng.choice(["bad", "neutral"])
        values = dict.fromkeys(RESULT_CSV_COLUMNS, "")
        values.update(
            input_data_from_experiment_run=f"질문 {i}",
            output_data_from_experiment_run=f"answer {i}",
            passed=str(good),
            score=score,
            rationale="judge says so",
        )
        writer.writerow([values[c] for c in RESULT_CSV_COLUMNS])
    return buf.getvalue().encode("utf-8")


def fill(hook: Any, path: str, *, table: str = TABLE, seed: int = 21, gates: bool = True) -> Filled:
    """Daily runs (one window missing), a mapped model comparison, and another DAG; optional gate table."""
    rng = random.Random(seed)
    out = Filled(path, table)

    def load(run_id: str, dag_id: str, **meta: Any) -> None:
        items = rng.randint(20, 40)
        data = result_csv(rng, items, meta.pop("p", 0.8))
        usage = items * rng.randint(900, 1400)
        run = RunMeta(
            run_id=run_id,
            experiment_id=f"exp-{dag_id[:12]}",
            status="DONE",
            prompt_tokens=usage,
            completion_tokens=usage // 10,
            total_tokens=usage + usage // 10,
            dag_id=dag_id,
            **meta,
        )
        load_result_csv(hook, io.BytesIO(data), run, table=table, metric=METRIC, create_table=True)
        out.runs.setdefault(dag_id, []).append(run_id)

    for day in range(DAYS):
        start, end = FIRST + dt.timedelta(days=day - 1), FIRST + dt.timedelta(days=day)
        if day == MISSING_DAY:
            out.gap = (start, end)
            continue
        for evaluator, p in (("ev-helpfulness", 0.85), ("ev-safety", 0.95)):
            load(
                f"run-daily-{day:02d}-{evaluator}",
                DAILY_DAG,
                evaluator_id=evaluator,
                display_name=f"daily {start:%m-%d} {evaluator}",
                window_start=start,
                window_end=end,
                logical_date=end,
                task_id="load_results",
                map_index=-1,
                dag_run_id=f"scheduled__{end.isoformat()}",
                p=p - (0.25 if day == DAYS - 2 else 0.0),
            )
    for week in range(2):
        end = FIRST + dt.timedelta(days=7 * week + 6)
        for index, model in enumerate(["model-a", "model-b", "model-c"]):
            load(
                f"run-cmp-{week}-{model}",
                COMPARISON_DAG,
                evaluator_id="ev-helpfulness",
                display_name=f"{model} | week {week}",
                window_start=end - dt.timedelta(days=7),
                window_end=end,
                task_id="load",
                map_index=index,
                dag_run_id=f"manual__{end.isoformat()}",
                p=0.6 + 0.1 * index,
            )
    # a manual run without a data interval: a point at its load time, no window
    load("run-other-1", OTHER_DAG, evaluator_id="ev-x", task_id="load", dag_run_id="manual__x")
    if gates:
        with sqlite3.connect(path) as db:
            db.execute(f"CREATE TABLE {table}_gates (run_id TEXT, dag_id TEXT, metric TEXT, verdict TEXT)")
            last = [r for r in out.runs[DAILY_DAG] if "ev-helpfulness" in r][-2:]
            db.executemany(
                f"INSERT INTO {table}_gates VALUES (?, ?, ?, ?)",
                [(last[0], DAILY_DAG, "pass_rate", "FAIL"), (last[1], DAILY_DAG, "pass_rate", "PASS")],
            )
    return out


def sqlite_conn_json(path: str) -> str:
    """``AIRFLOW_CONN_<ID>`` value of a SQLite warehouse file."""
    return json.dumps({"conn_type": "sqlite", "host": path})


def sqlite_hook(conn_id: str) -> Any:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    return SqliteHook(sqlite_conn_id=conn_id)
