"""Benchmark GipToSqlOperator's load path against ``psql \\copy`` and common.sql's ``insert_rows``.

Generates realistic result CSVs (chat-message JSON, Korean, embedded newlines, ~1.5k characters a row)
and loads each into the local PostgreSQL (db ``test``) with, in the same run and in turn:

* ``psql \\copy`` of the raw file into a plain 8-column text table (the anchor);
* this operator's load step (``load_result_csv``: validate + COPY, one transaction, full table layout
  with its primary key), then the same run again (a reload: delete + insert);
* ``DbApiHook.insert_rows(..., executemany=True)`` of the csv module's rows into the 8-column table;
* this operator's load step into SQLite, and its anchor: the csv module's rows into a plain
  8-column SQLite table with ``sqlite3``'s ``executemany`` (one transaction);
* optionally (``--emulator``) the download of a synthetic run of the same size from the GIP emulator.

Every measurement runs in a fresh child process, so its peak RSS is its own; the baseline is a child
that only does ``import airflow.sdk``. Prints rows/s, MB/s, peak RSS, RSS above the baseline and the
ratio to ``\\copy``, then checks the ratios against :data:`TARGETS`; the exit status is 1 when one is
missed (ratios within one run, never absolute times).

    python -m tests.perf.benchmarks.bench_gip_to_sql --rows 100000 1000000 --repeat 1 --emulator
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PG = {"host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": "test"}
PSQL = [
    "psql",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-h",
    PG["host"],
    "-p",
    str(PG["port"]),
    "-U",
    PG["login"],
    "-d",
    PG["schema"],
]
ANCHOR_COLUMNS = (
    "input_data_from_experiment",
    "input_data_from_experiment_run",
    "output_data_from_experiment",
    "output_data_from_experiment_run",
    "passed",
    "error_message",
    "score",
    "rationale",
)

ANCHOR_DDL = ", ".join(f"{c} text" for c in ANCHOR_COLUMNS)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child processes (one measurement each) -------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    if kind == "baseline":
        import airflow.sdk  # noqa: F401

        return {"rss_mb": _peak_rss_mb()}
    from airflow.sdk import BaseHook

    if kind in ("operator", "operator-reload"):
        from gip_airflow.api import CategoryMetric
        from gip_airflow.transfers._sql import RunMeta, load_result_csv

        hook = BaseHook.get_connection(spec["conn_id"]).get_hook()
        metric = CategoryMetric(
            config=[
                {"index": 0, "name": "bad"},
                {"index": 1, "name": "neutral"},
                {"index": 2, "name": "good"},
            ]
        )
        out: dict[str, Any] = {}
        for attempt in ("load", "reload") if kind == "operator-reload" else ("load",):
            cpu = time.process_time()
            result = load_result_csv(
                hook,
                spec["path"],
                RunMeta(run_id="bench-run", experiment_id="bench", evaluator_id="bench", dag_id="bench"),
                table=spec["table"],
                metric=metric,
                create_table=True,
            )
            out[attempt] = {
                "seconds": result.seconds,
                "rows": result.stats.rows,
                "method": result.method,
                "cpu_seconds": time.process_time() - cpu,  # this process (not the database server)
            }
        out["rss_mb"] = _peak_rss_mb()
        return out
    if kind == "insert_rows":
        import csv

        csv.field_size_limit(1 << 30)
        hook = BaseHook.get_connection(spec["conn_id"]).get_hook()
        with open(spec["path"], encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            rows = (tuple(v or None for v in r) for r in reader)
            started, cpu = time.monotonic(), time.process_time()
            hook.insert_rows(
                spec["table"], rows, target_fields=list(ANCHOR_COLUMNS), commit_every=1000, executemany=True
            )
            seconds = time.monotonic() - started
        return {
            "load": {"seconds": seconds, "cpu_seconds": time.process_time() - cpu},
            "rss_mb": _peak_rss_mb(),
        }
    if kind == "sqlite_plain":
        import csv
        import sqlite3

        csv.field_size_limit(1 << 30)
        started, cpu = time.monotonic(), time.process_time()
        con = sqlite3.connect(spec["db"])
        con.execute(f"CREATE TABLE anchor ({ANCHOR_DDL})")
        with open(spec["path"], encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            con.executemany(f"INSERT INTO anchor VALUES ({', '.join('?' * len(ANCHOR_COLUMNS))})", reader)
        con.commit()
        con.close()
        return {
            "load": {"seconds": time.monotonic() - started, "cpu_seconds": time.process_time() - cpu},
            "rss_mb": _peak_rss_mb(),
        }
    if kind == "download":
        from gip_airflow.hooks.gip import GipHook

        hook = GipHook()
        started = time.monotonic()
        size = hook.download_run_result(spec["experiment_id"], spec["run_id"], spec["path"])
        return {"load": {"seconds": time.monotonic() - started, "bytes": size}, "rss_mb": _peak_rss_mb()}
    raise ValueError(kind)


def run_child(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.perf.benchmarks.bench_gip_to_sql", "--child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark child {spec['kind']} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent: data, anchors, report -------------------------------------------------------------


def psql(sql: str) -> None:
    subprocess.run([*PSQL, "-c", sql], check=True, capture_output=True)


def copy_anchor(path: Path, table: str) -> float:
    psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({ANCHOR_DDL})")
    psql("CHECKPOINT")
    started = time.monotonic()
    psql(f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)")
    return time.monotonic() - started


def measure(
    args: argparse.Namespace, rows: int, workdir: Path, env: dict[str, str], emulator: Any
) -> list[dict[str, Any]]:
    from tests.perf.benchmarks.result_csv import write_result_csv

    path = workdir / f"result-{rows}.csv"
    started = time.monotonic()
    size = write_result_csv(path, rows, row_chars=args.row_chars)
    took = time.monotonic() - started
    print(
        f"\n== {rows:,} rows, {size / 1e6:.0f} MB ({size / rows:.0f} B/row), generated in {took:.0f} s",
        flush=True,
    )
    schema = f"gip_bench_{uuid.uuid4().hex[:8]}"
    psql(f"CREATE SCHEMA {schema}")
    samples: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()[0]
    baseline = run_child({"kind": "baseline"}, env)["rss_mb"]
    try:
        synthetic = None
        if emulator is not None:
            synthetic = emulator.synthetic_run(
                rows=rows, row_bytes=int(size / rows), display_name=f"bench {rows}"
            )
        for rep in range(args.repeat):
            anchor = f"{schema}.anchor"
            seconds = copy_anchor(path, anchor)
            samples.setdefault("psql \\copy (anchor)", []).append({"seconds": seconds, "rss_mb": None})
            psql(f"DROP TABLE {anchor}")

            table = f"{schema}.results"
            psql("CHECKPOINT")
            out = run_child(
                {"kind": "operator-reload", "conn_id": "bench_pg", "path": str(path), "table": table}, env
            )
            samples.setdefault("GipToSqlOperator load (COPY)", []).append(
                {
                    "seconds": out["load"]["seconds"],
                    "rss_mb": out["rss_mb"],
                    "cpu": out["load"]["cpu_seconds"],
                }
            )
            samples.setdefault("  same run again (reload)", []).append(
                {"seconds": out["reload"]["seconds"], "rss_mb": None}
            )
            psql(f"DROP TABLE {table}; DROP TABLE {table}_runs")

            if not args.skip_insert_rows:
                psql(f"CREATE TABLE {anchor} ({ANCHOR_DDL})")
                psql("CHECKPOINT")
                out = run_child(
                    {"kind": "insert_rows", "conn_id": "bench_pg", "path": str(path), "table": anchor}, env
                )
                samples.setdefault("DbApiHook.insert_rows", []).append(
                    {
                        "seconds": out["load"]["seconds"],
                        "rss_mb": out["rss_mb"],
                        "cpu": out["load"]["cpu_seconds"],
                    }
                )
                psql(f"DROP TABLE {anchor}")

            if not args.skip_sqlite:
                anchor_db = workdir / f"anchor-{rep}.db"
                os.sync()
                out = run_child({"kind": "sqlite_plain", "path": str(path), "db": str(anchor_db)}, env)
                samples.setdefault("sqlite3 executemany (SQLite anchor)", []).append(
                    {
                        "seconds": out["load"]["seconds"],
                        "rss_mb": out["rss_mb"],
                        "cpu": out["load"]["cpu_seconds"],
                    }
                )
                anchor_db.unlink(missing_ok=True)
                db = workdir / f"bench-{rep}.db"
                os.sync()
                env_lite = {
                    **env,
                    "AIRFLOW_CONN_BENCH_LITE": json.dumps({"conn_type": "sqlite", "host": str(db)}),
                }
                out = run_child(
                    {"kind": "operator", "conn_id": "bench_lite", "path": str(path), "table": "results"},
                    env_lite,
                )
                samples.setdefault("GipToSqlOperator load (SQLite)", []).append(
                    {
                        "seconds": out["load"]["seconds"],
                        "rss_mb": out["rss_mb"],
                        "cpu": out["load"]["cpu_seconds"],
                    }
                )
                db.unlink(missing_ok=True)
                Path(str(db) + "-journal").unlink(missing_ok=True)

            if synthetic is not None:
                dest = workdir / "download.csv"
                env_gip = {**env, "AIRFLOW_CONN_GIP_DEFAULT": emulator.conn_json()}
                out = run_child(
                    {
                        "kind": "download",
                        "experiment_id": synthetic["experiment_id"],
                        "run_id": synthetic["id"],
                        "path": str(dest),
                    },
                    env_gip,
                )
                samples.setdefault("download from emulator (synthetic)", []).append(
                    {
                        "seconds": out["load"]["seconds"],
                        "rss_mb": out["rss_mb"],
                        "bytes": out["load"]["bytes"],
                    }
                )
                dest.unlink(missing_ok=True)
    finally:
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        path.unlink(missing_ok=True)

    anchor_rps = rows / statistics.median(s["seconds"] for s in samples["psql \\copy (anchor)"])
    insert_rps = None
    if "DbApiHook.insert_rows" in samples:
        insert_rps = rows / statistics.median(s["seconds"] for s in samples["DbApiHook.insert_rows"])
    report = []
    header = ("method", "rows/s", "MB/s", "x \\copy", "client CPU", "peak RSS", "+baseline")
    print(
        f"{header[0]:<38} {header[1]:>9} {header[2]:>7} {header[3]:>8} {header[4]:>10} {header[5]:>9} "
        f"{header[6]:>10}"
    )
    print(f"{'bare import airflow.sdk':<38} {'':>9} {'':>7} {'':>8} {'':>10} {baseline:>7.0f}MB")
    for name, runs in samples.items():
        seconds = statistics.median(s["seconds"] for s in runs)
        rps = rows / seconds
        mbs = (runs[0].get("bytes") or size) / 1e6 / seconds
        rss = max((s["rss_mb"] for s in runs if s["rss_mb"] is not None), default=None)
        cpus = [s["cpu"] for s in runs if s.get("cpu") is not None]
        cpu = statistics.median(cpus) if cpus else None
        entry = {
            "method": name.strip(),
            "rows": rows,
            "seconds": [round(s["seconds"], 3) for s in runs],
            "rows_per_s": round(rps),
            "mb_per_s": round(mbs, 1),
            "ratio_to_copy": round(rps / anchor_rps, 2),
            "peak_rss_mb": None if rss is None else round(rss, 1),
            "rss_above_baseline_mb": None if rss is None else round(rss - baseline, 1),
            "client_cpu_s": None if cpu is None else round(cpu, 2),
        }
        if insert_rps and name.startswith("GipToSqlOperator load (COPY)"):
            entry["ratio_to_insert_rows"] = round(rps / insert_rps, 2)
        report.append(entry)
        cpu_text = f"{cpu:9.2f}s" if cpu is not None else f"{'':>10}"
        rss_text = "" if rss is None else f"{rss:7.0f}MB {rss - baseline:+9.0f}MB"
        print(f"{name:<38} {rps:>9,.0f} {mbs:>7.1f} {rps / anchor_rps:>7.2f}x {cpu_text} {rss_text}")
    if insert_rps:
        ours = rows / statistics.median(s["seconds"] for s in samples["GipToSqlOperator load (COPY)"])
        print(f"GipToSqlOperator COPY / insert_rows: {ours / insert_rps:.2f}x")
    if "sqlite3 executemany (SQLite anchor)" in samples:
        lite = statistics.median(s["seconds"] for s in samples["sqlite3 executemany (SQLite anchor)"])
        ours_lite = statistics.median(s["seconds"] for s in samples["GipToSqlOperator load (SQLite)"])
        print(f"GipToSqlOperator SQLite / sqlite3 executemany: {lite / ours_lite:.2f}x")
        for entry in report:
            if entry["method"] == "GipToSqlOperator load (SQLite)":
                entry["ratio_to_sqlite_anchor"] = round(lite / ours_lite, 2)
    print(
        f"(median of {args.repeat} run(s); baseline peak RSS {baseline:.0f} MB; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs)",
        flush=True,
    )
    return report


#: (method, figure, lowest acceptable value) for ratios, (method, figure, highest) for memory.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("GipToSqlOperator load (COPY)", "ratio_to_copy", ">=", 0.75),
    ("GipToSqlOperator load (COPY)", "ratio_to_insert_rows", ">=", 1.8),
    ("GipToSqlOperator load (COPY)", "rss_above_baseline_mb", "<=", 60.0),
    ("GipToSqlOperator load (SQLite)", "ratio_to_sqlite_anchor", ">=", 0.65),
)


def missed_targets(report: list[dict[str, Any]]) -> list[str]:
    """The targets a report misses, one line each (empty when all are met or not measured)."""
    missed = []
    for method, figure, op, limit in TARGETS:
        for entry in report:
            value = entry.get(figure) if entry["method"] == method else None
            if value is None:
                continue
            if (op == ">=" and value < limit) or (op == "<=" and value > limit):
                missed.append(f"{method} at {entry['rows']} rows: {figure} {value} (target {op} {limit})")
    return missed


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000], help="CSV sizes to measure")
    parser.add_argument("--row-chars", type=int, default=1500, help="characters per row (Korean: ~2 KB)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method (median reported)")
    parser.add_argument("--emulator", action="store_true", help="also measure the download from the emulator")
    parser.add_argument("--skip-insert-rows", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    if shutil.which("psql") is None:
        raise SystemExit("psql is needed for the \\copy anchor")
    workdir = Path(tempfile.mkdtemp(prefix="gip-bench-"))
    home = workdir / "airflow"
    home.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME", str(home)),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_BENCH_PG": json.dumps({"conn_type": "postgres", **PG}),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    emulator = None
    if args.emulator:
        from gip_airflow_emulator.pytest_plugin import start_emulator

        emulator = start_emulator()
    report: list[dict[str, Any]] = []
    try:
        for rows in args.rows:
            report += measure(args, rows, workdir, env, emulator)
    finally:
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    if missed := missed_targets(main()):
        print("Missed targets:\n  " + "\n  ".join(missed), file=sys.stderr)
        sys.exit(1)
