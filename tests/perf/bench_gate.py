"""Benchmark: the regression gate comparing two runs of N rows each (default 1M), PostgreSQL and SQLite.

``python -m tests.perf.bench_gate --rows 1000000``. For each database: two runs are loaded with the real
loader, then the gate runs in a fresh process (unpaired against a pinned run, then paired by item), and
the report prints its wall time, the ratio to an anchor measured in the same run (one plain
``COUNT(*)`` scan of both runs' rows: the least any gate reading rows must do), and its memory: peak RSS
above the same process just before the gate ran, and above a bare interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def write_csv(path: Path, rows: int, pass_rate: float, shift: float, seed: int) -> None:
    """A result CSV of ``rows`` items: chat-message inputs (the pairing key), pass/fail, 0-1 scores."""
    from gip_airflow.api import RESULT_CSV_COLUMNS

    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(RESULT_CSV_COLUMNS) + "\n")
        for i in range(rows):
            passed = rng.random() < pass_rate
            score = f"{min(1.0, max(0.0, rng.gauss(0.7 + shift, 0.15))):.2f}" if passed else ""
            key = f'"[{{""role"": ""user"", ""content"": ""question {i:07d}: which plan fits a family of four?""}}]"'
            out.write(
                f'{key},,"expected answer","model answer {i % 97}",{"true" if passed else "false"},'
                f'{"" if passed else "judge failed"},{score},"rationale"\n'
            )


def child(args: argparse.Namespace) -> None:
    """Run one gate in this (fresh) process; print JSON with seconds and memory."""
    import psutil

    from gip_airflow.operators.gate import GipEvaluationGateOperator

    op = GipEvaluationGateOperator(
        task_id="bench_gate",
        conn_id=args.conn_id,
        table=args.table,
        run_id=args.run_id,
        baseline=args.baseline,
        baseline_run_id=args.baseline_run_id,
        fail_on_regression=False,
        declare_asset=False,
    )
    op.get_db_hook().get_conn().close()  # connection set-up and driver imports before measuring
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    result = op.execute({})
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_above_start_mb": (peak - before) / 1e6,
                "peak_mb": peak / 1e6,
                "verdict": result["verdict"],
                "results": [
                    (r["metric"], r["method"], r["n_current"], r["verdict"]) for r in result["results"]
                ],
            }
        )
    )


def _peak_rss() -> int:
    """Peak RSS of this process image in bytes (VmHWM: unlike ru_maxrss, not carried over by exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _bare_interpreter_mb() -> float:
    code = "from tests.perf.bench_gate import _peak_rss; print(_peak_rss())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return int(out.stdout) / 1e6


def _warehouse(kind: str, tmp: Path) -> tuple[dict[str, Any], str, Any]:
    if kind == "sqlite":
        return {"conn_type": "sqlite", "host": str(tmp / "bench.db")}, "results", lambda: None
    import psycopg

    schema = f"gip_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(**PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    conn_json = {
        "conn_type": "postgres",
        "host": PG["host"],
        "port": PG["port"],
        "login": PG["user"],
        "schema": PG["dbname"],
    }
    return conn_json, f"{schema}.results", drop


def bench(kind: str, rows: int, tmp: Path) -> list[dict[str, Any]]:
    from airflow.sdk import BaseHook

    from gip_airflow import api
    from gip_airflow.transfers._sql import RunMeta, load_result_csv

    conn_json, table, drop = _warehouse(kind, tmp)
    conn_id = f"bench_{kind}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn_json)
    metric = api.Evaluator(
        id="-", metric={"type": "numeric", "config": {"min": {"value": 0.0}, "max": {"value": 1.0}}}
    ).parsed_metric()
    report = []
    try:
        hook = BaseHook.get_connection(conn_id).get_hook()
        ids = []
        for name, pass_rate, shift in (("baseline", 0.90, 0.0), ("current", 0.899, -0.002)):
            path = tmp / f"{name}.csv"
            write_csv(path, rows, pass_rate, shift, seed=len(ids))
            run_id = f"{name}-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            load_result_csv(
                hook,
                path,
                RunMeta(run_id=run_id, dag_id="bench"),
                table=table,
                metric=metric,
                create_table=True,
            )
            print(
                f"  [{kind}] loaded {rows:,} rows of {name} in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            path.unlink()
            ids.append(run_id)
        baseline_id, current_id = ids
        with hook.get_conn() as conn:
            cur = conn.cursor()
            ph = hook.placeholder
            started = time.perf_counter()
            cur.execute(
                f"SELECT COUNT(*) FROM {table} WHERE run_id IN ({ph}, {ph})", (baseline_id, current_id)
            )
            cur.fetchall()
            anchor = time.perf_counter() - started
        report.append({"db": kind, "what": "COUNT(*) of both runs (anchor)", "seconds": anchor})
        for baseline in ("run", "paired"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.perf.bench_gate",
                    "--child",
                    "--conn-id",
                    conn_id,
                    "--table",
                    table,
                    "--run-id",
                    current_id,
                    "--baseline",
                    baseline,
                    "--baseline-run-id",
                    baseline_id,
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
                env=os.environ.copy(),
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            report.append(
                {
                    "db": kind,
                    "what": f"gate, {baseline} baseline",
                    **result,
                    "ratio": result["seconds"] / anchor,
                }
            )
    finally:
        drop()
    return report


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--conn-id", "--table", "--run-id", "--baseline", "--baseline-run-id"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # a throw-away Airflow home unless the caller has one (connections come from AIRFLOW_CONN_*)
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="gip-gate-bench-home-"))
    if args.child:
        child(args)
        return []
    bare = _bare_interpreter_mb()
    report: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gip-gate-bench-") as tmp:
        for kind in ("postgres", "sqlite") if args.db == "both" else (args.db,):
            report += bench(kind, args.rows, Path(tmp))
    print(f"\nGate on two runs of {args.rows:,} rows each (bare interpreter peak RSS {bare:.0f} MB)")
    print(
        f"{'db':<9} {'what':<32} {'seconds':>8} {'x anchor':>9} {'RSS +gate MB':>12} {'above bare MB':>13}  verdict"
    )
    for r in report:
        if "ratio" not in r:
            print(f"{r['db']:<9} {r['what']:<32} {r['seconds']:>8.2f} {'1.0':>9}")
            continue
        print(
            f"{r['db']:<9} {r['what']:<32} {r['seconds']:>8.2f} {r['ratio']:>9.1f} "
            f"{r['peak_above_start_mb']:>12.1f} {r['peak_mb'] - bare:>13.0f}  {r['verdict']}"
        )
    return report


if __name__ == "__main__":
    main()
