"""Chaos: a DAG evaluating N windows against an emulator that fails a third of its answers.

The emulator answers 20 % of GIP requests with 5xx, 10 % with 429 + ``Retry-After``, cuts 5 % of the
connections (JSON answers half-way, result CSVs after 4 KiB: mid-CSV) and adds latency to every GIP
request. The same DAG first runs fault-free, then under faults, on the same emulator (same seed data,
same windows). The promise checked: exactly one GIP run per window, every result row loaded exactly
once, and per-window warehouse contents identical to the fault-free run's.

Creating POSTs are not retried by the hook on 5xx or a cut connection (a retried POST could pay for a
second evaluation): the operators' lookups (display name for runs, name + definition for experiments
and evaluators) plus Airflow task retries must still end with one run per window.

CI: 6 windows; ``GIP_RELIABILITY_FULL=1``: 20.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from typing import Any

import httpx
import pendulum
import pytest
from airflow.sdk import DAG, task

from gip_airflow.operators.gip import (
    GipCreateEvaluatorOperator,
    GipCreateExperimentOperator,
    GipCreateLangfuseCredentialOperator,
    GipStartExperimentRunOperator,
)
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator
from gip_airflow.triggers.gip import RunWait
from tests.integration.operators.helpers import run_dag, ti_states, try_numbers, unique_dag_id, xcom
from tests.integration.reliability.conftest import size
from tests.integration.reliability.helpers import RecordCounter, pg_warehouse, retry_kinds

pytestmark = pytest.mark.chaos

WINDOWS = size(6, 20)
CHAOS = {
    "error_rate": 0.20,
    "error_statuses": [500, 502, 503],
    "rate_limit_rate": 0.10,
    "retry_after": 1,
    "drop_rate": 0.05,
    "drop_after_bytes": 4096,
    "latency_ms": 25,
    "seed": 20260101,
}
#: Re-loading under cuts: half of the result-CSV downloads break after 4 KiB (every CSV is larger).
MID_CSV_CUTS = {"drop_rate": 0.5, "drop_after_bytes": 4096, "path_pattern": r"/download$", "seed": 7}
CATEGORY_METRIC = {
    "type": "category",
    "config": [{"index": 0, "name": "bad"}, {"index": 1, "name": "neutral"}, {"index": 2, "name": "good"}],
}
EVALUATION_CONFIG = {
    "judge_model_seq_id": 19,
    "judge_model_public_id": "openai/gpt-4",
    "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
    "judge_prompt": "Rate the answer. <rationale>...</rationale><rating>bad|neutral|good</rating>",
}


def trace_windows(emu: Any, count: int) -> list[tuple[int, int]]:
    """``count`` equal epoch-ms windows that together cover every seeded trace."""
    stamps: list[int] = []
    with httpx.Client(base_url=emu.base_url, auth=emu.langfuse_auth, timeout=30) as client:
        page = 1
        while True:
            data = client.get("/api/public/traces", params={"page": page, "limit": 100}).json()["data"]
            stamps += [int(pendulum.parse(t["timestamp"]).timestamp() * 1000) for t in data]
            if len(data) < 100:
                break
            page += 1
    start, end = min(stamps), max(stamps) + 1
    step = -(-(end - start) // count)
    return [(start + i * step, min(start + (i + 1) * step, end)) for i in range(count)]


def chaos_dag(dag_id: str, windows: list[tuple[int, int]], table: str, conn_id: str) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        catchup=False,
        default_args={"retries": 8, "retry_delay": dt.timedelta(seconds=0)},
    ) as dag:
        credential = GipCreateLangfuseCredentialOperator(
            task_id="credential", alias=dag_id, langfuse_conn_id="langfuse_default"
        )
        judge = GipCreateEvaluatorOperator(
            task_id="evaluator",
            name=dag_id + "-judge {{ run_id }}",
            metric=CATEGORY_METRIC,
            evaluation_config=EVALUATION_CONFIG,
        )

        @task
        def window_experiments(credential_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
            return [
                {
                    "name": f"{dag_id} w{i:02d} {run_id}",
                    "config": {
                        "integrated_service_credential_id": credential_id,
                        "trace_filter_request": {"from_timestamp": start, "to_timestamp": end},
                    },
                }
                for i, (start, end) in enumerate(windows)
            ]

        experiments = GipCreateExperimentOperator.partial(
            task_id="experiment", experiment_type="langfuse_trace"
        ).expand_kwargs(window_experiments(credential.output))
        runs = GipStartExperimentRunOperator.partial(
            task_id="evaluate",
            evaluator_id=judge.output,
            deferrable=True,
            poll_interval=0.3,
            timeout=180,
            max_consecutive_errors=10,
        ).expand(experiment_id=experiments.output)

        @task
        def pairs(experiment_ids: list[str], run_ids: list[str]) -> list[dict[str, str]]:
            return [{"experiment_id": e, "run_id": r} for e, r in zip(experiment_ids, run_ids, strict=True)]

        GipToSqlOperator.partial(task_id="load", conn_id=conn_id, table=table).expand_kwargs(
            pairs(experiments.output, runs.output)
        )
    return dag


def reload_loads_dag(dag_id: str, pairs: list[dict[str, str]], table: str, conn_id: str) -> DAG:
    """The load step alone, for runs that are already DONE (a re-run of the loads)."""
    with DAG(
        dag_id,
        schedule=None,
        start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        default_args={"retries": 8, "retry_delay": dt.timedelta(seconds=0)},
    ) as dag:
        GipToSqlOperator.partial(task_id="load", conn_id=conn_id, table=table).expand_kwargs(pairs)

        @task
        def pairs_again() -> list[dict[str, str]]:
            return pairs

        pairs_again()
    return dag


@pytest.fixture(scope="module")
def chaos_env(airflow_db, own_emulator):
    emu = own_emulator
    with pg_warehouse() as wh, pytest.MonkeyPatch.context() as mp:
        # Short client backoff keeps CI fast; Retry-After is still honoured as sent (1 s).
        mp.setenv("AIRFLOW_CONN_GIP_DEFAULT", emu.conn_json(retry_backoff=0.2, timeout=10))
        mp.setenv(
            "AIRFLOW_CONN_LANGFUSE_DEFAULT",
            json.dumps(
                {
                    "conn_type": "generic",
                    "host": emu.base_url,
                    "login": emu.langfuse_public_key,
                    "password": emu.langfuse_secret_key,
                }
            ),
        )
        for key, value in wh.env.items():
            mp.setenv(key, value)
        emu.set_run_speed(run_seconds=0.5)
        yield emu, wh
        emu.clear_faults()


class PollErrors:
    """Counts the status polls the wait policy retried (``RunWait.on_error`` that did not end the wait)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.retried = 0
        original = RunWait.on_error

        def on_error(wait: RunWait, exc: BaseException) -> Any:
            event, delay = original(wait, exc)
            self.retried += event is None
            return event, delay

        monkeypatch.setattr(RunWait, "on_error", on_error)


def _pass(emu: Any, wh: Any, dag: DAG, faults: dict[str, Any] | None) -> dict[str, Any]:
    """Run the DAG once (under ``faults``); return what happened, seen from GIP, Airflow and the warehouse."""
    before = emu.stats()
    if faults:
        emu.set_faults(**faults)
    else:
        emu.clear_faults()
    started = time.monotonic()
    with RecordCounter("gip_airflow") as logs, pytest.MonkeyPatch.context() as mp:
        polls = PollErrors(mp)
        dag_run = run_dag(dag)
    seconds = time.monotonic() - started
    emu.clear_faults()
    after = emu.stats()
    assert dag_run.state == "success", ti_states(dag_run)
    pairs = xcom(dag_run, "pairs") or xcom(dag_run, "pairs_again")
    tries = try_numbers(dag_run)
    prefix = f"airflow/{dag.dag_id}/evaluate/{dag_run.run_id}/"
    gip_runs = [r for r in emu.runs() if str(r.get("display_name", "")).startswith(prefix)]
    routes_before, routes_after = before["requests_by_route"], after["requests_by_route"]
    downloads = sum(n for r, n in routes_after.items() if r.endswith("/download")) - sum(
        n for r, n in routes_before.items() if r.endswith("/download")
    )
    run_posts = routes_after.get("POST " + _runs_route(routes_after), 0) - routes_before.get(
        "POST " + _runs_route(routes_after), 0
    )
    hook_retries = logs.matching(r"; retry \d+/\d+ in ")
    return {
        "dag_run": dag_run,
        "pairs": pairs,
        "gip_runs": gip_runs,
        "seconds": seconds,
        "requests": after["requests_by_group"]["gip"] - before["requests_by_group"]["gip"],
        "faults": {k: after["faults"][k] - before["faults"].get(k, 0) for k in after["faults"]},
        "task_retries": sum(t - 1 for t in tries.values()),
        "task_retries_by_task": dict(Counter(k[0] for k, t in tries.items() for _ in range(t - 1))),
        "hook_retries": len(hook_retries),
        "hook_retry_kinds": dict(retry_kinds(hook_retries)),
        "poll_retries": polls.retried,
        "csv_cut_mid_download": len(
            [m for m in hook_retries if "/download:" in m and "incomplete chunked read" in m]
        ),
        "downloads_served": downloads,
        "run_posts": run_posts,
    }


def _created(emu: Any, collection: str, marker: str, key: str = "name") -> int:
    """How many objects of a GIP collection carry ``marker`` in their name (or alias)."""
    with emu.client() as client:
        items = client.get(emu.ws_path(f"/{collection}"), params={"limit": 100}).json()["data"]
        pages = client.get(emu.ws_path(f"/{collection}"), params={"limit": 100}).json()["meta"]["total_pages"]
        for page in range(2, pages + 1):
            items += client.get(emu.ws_path(f"/{collection}"), params={"limit": 100, "page": page}).json()[
                "data"
            ]
    return sum(1 for item in items if marker in str(item.get(key, "")))


def _runs_route(routes: dict[str, int]) -> str:
    return next(
        (r.split(" ", 1)[1] for r in routes if r.startswith("POST ") and r.endswith("/runs")),
        "(none)",
    )


@pytest.mark.timeout(900)
def test_chaos_every_window_evaluated_and_loaded_exactly_once(chaos_env, reliability_report):
    emu, wh = chaos_env
    windows = trace_windows(emu, WINDOWS)
    dag = chaos_dag(unique_dag_id("chaos"), windows, wh.table, wh.conn_id)

    clean = _pass(emu, wh, dag, faults=None)
    chaos = _pass(emu, wh, dag, faults=CHAOS)

    loaded = wh.rows_per_run()
    for name, result in (("fault-free", clean), ("chaos", chaos)):
        # Exactly one GIP run per window, each DONE, and it is the one the DAG loaded.
        runs = result["gip_runs"]
        by_window = Counter(r["display_name"].rsplit("/", 1)[1] for r in runs)
        assert len(runs) == WINDOWS and set(by_window.values()) == {1}, (name, by_window)
        assert {r["status"] for r in runs} == {"DONE"}, name
        assert sorted(p["run_id"] for p in result["pairs"]) == sorted(r["id"] for r in runs), name
        # Every run's rows are in the warehouse (the primary key (run_id, row_number) forbids doubles).
        for r in runs:
            assert wh.summary_row(r["id"]) is not None, (name, r["id"])

    duplicates = rows_lost = 0
    differing = []
    for window, (c, x) in enumerate(zip(clean["pairs"], chaos["pairs"], strict=True)):
        clean_rows, chaos_rows = loaded.get(c["run_id"], 0), loaded.get(x["run_id"], 0)
        rows_lost += max(clean_rows - chaos_rows, 0)
        duplicates += max(chaos_rows - clean_rows, 0)
        item_count = wh.summary_row(x["run_id"])[0]
        duplicates += max(chaos_rows - item_count, 0)
        if wh.content_hash(c["run_id"]) != wh.content_hash(x["run_id"]) or wh.summary_row(
            c["run_id"]
        ) != wh.summary_row(x["run_id"]):
            differing.append(window)
    other_runs = set(loaded) - {p["run_id"] for p in clean["pairs"] + chaos["pairs"]}
    duplicates += sum(loaded[r] for r in other_runs)

    # Loading the same runs again while half of the CSV downloads are cut after 4 KiB leaves one copy.
    reload_dag = reload_loads_dag(unique_dag_id("reload"), chaos["pairs"], wh.table, wh.conn_id)
    hashes_before = {p["run_id"]: wh.content_hash(p["run_id"]) for p in chaos["pairs"]}
    reload = _pass(emu, wh, reload_dag, faults=MID_CSV_CUTS)
    assert wh.rows_per_run() == loaded, "a reload changed row counts"
    assert {r: wh.content_hash(r) for r in hashes_before} == hashes_before, "a reload changed contents"

    rows = sum(loaded.get(p["run_id"], 0) for p in chaos["pairs"])
    figures = {
        "windows": WINDOWS,
        "rows_per_pass": rows,
        "gip_runs_chaos": len(chaos["gip_runs"]),
        "run_create_posts": chaos["run_posts"],
        "requests_clean": clean["requests"],
        "requests_chaos": chaos["requests"],
        "faults": {k: v for k, v in chaos["faults"].items() if v},
        "hook_retries": chaos["hook_retries"],
        "hook_retry_kinds": chaos["hook_retry_kinds"],
        "poll_retries": chaos["poll_retries"],
        "task_retries": chaos["task_retries"],
        "task_retries_by_task": chaos["task_retries_by_task"],
        "csv_downloads_served": chaos["downloads_served"],
        "csv_cut_mid_download": chaos["csv_cut_mid_download"],
        "duplicates": duplicates,
        "rows_lost": rows_lost,
        "windows_differing": len(differing),
        "experiments_created": _created(emu, "evals/experiments", chaos["dag_run"].run_id),
        "evaluators_created": _created(emu, "evals/evaluators", chaos["dag_run"].run_id),
        "credentials_registered_both_passes": _created(
            emu, "integrated-services/credentials", dag.dag_id, key="alias"
        ),
        "reload_csv_cuts_mid_download": reload["csv_cut_mid_download"],
        "reload_hook_retries": reload["hook_retry_kinds"],
        "reload_task_retries": reload["task_retries"],
        "seconds_clean": round(clean["seconds"], 1),
        "seconds_chaos": round(chaos["seconds"], 1),
    }
    reliability_report(figures)
    assert rows > 0
    assert chaos["faults"]["error"] and chaos["faults"]["rate_limit"] and chaos["faults"]["drop"], figures
    assert duplicates == 0 and rows_lost == 0, figures
    assert not differing, f"windows {differing} differ from the fault-free run: {figures}"
    assert reload["csv_cut_mid_download"] > 0, figures
    assert figures["experiments_created"] == WINDOWS and figures["evaluators_created"] == 1, figures


@pytest.mark.timeout(300)
def test_evaluator_read_failure_never_changes_loaded_scores(chaos_env, reliability_report):
    """The load reads the evaluator's metric to derive ``score_value``. When GIP fails that read for a
    whole task try, the try must fail (and Airflow's retry load the right values), not load the rows
    with ``score_value`` missing."""
    emu, wh = chaos_env
    emu.clear_faults()
    from gip_airflow.hooks.gip import GipHook

    with GipHook() as hook:
        cred = hook.create_langfuse_credential(
            {
                "alias": "metric-read",
                "base_url": emu.base_url,
                "public_key": emu.langfuse_public_key,
                "private_key": emu.langfuse_secret_key,
            }
        )
        exp = hook.create_experiment(
            {
                "name": unique_dag_id("metric-read"),
                "type": "langfuse_trace",
                "config": {"integrated_service_credential_id": cred.id, "max_trace_count": 20},
            }
        )
        judge = hook.create_evaluator(
            {
                "name": unique_dag_id("metric-judge"),
                "metric": CATEGORY_METRIC,
                "evaluation_config": EVALUATION_CONFIG,
            }
        )
        run = hook.create_experiment_run(exp.id, {"evaluator_id": judge.id, "display_name": "metric-read"})
    assert emu.wait_for_run(run.id)["status"] == "DONE"

    def load_dag(dag_id: str) -> DAG:
        with DAG(
            dag_id,
            schedule=None,
            start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
            default_args={"retries": 1, "retry_delay": dt.timedelta(0)},
        ) as dag:
            GipToSqlOperator(
                task_id="load", experiment_id=exp.id, run_id=run.id, conn_id=wh.conn_id, table=wh.table
            )
        return dag

    assert run_dag(load_dag(unique_dag_id("metric_clean"))).state == "success"
    clean_hash = wh.content_hash(run.id)
    scored = wh.query(f"SELECT count(score_value) FROM {wh.table} WHERE run_id = %s", (run.id,))[0][0]
    assert scored > 0

    # Every attempt of the first try's evaluator read fails (1 + 5 hook retries), then GIP recovers.
    faults_before = emu.stats()["faults"]["error"]
    emu.set_faults(error_rate=1.0, path_pattern=rf"/evals/evaluators/{judge.id}$", max_faults=6)
    dag_run = run_dag(load_dag(unique_dag_id("metric_faulty")))
    faults = emu.stats()["faults"]["error"] - faults_before
    emu.clear_faults()
    tries = try_numbers(dag_run)[("load", -1)]
    reliability_report(
        {"evaluator_read_faults": faults, "load_tries": tries, "rows": wh.rows_per_run()[run.id]}
    )
    assert dag_run.state == "success", ti_states(dag_run)
    assert wh.content_hash(run.id) == clean_hash, "score_value changed because the evaluator read failed"
    assert tries == 2
