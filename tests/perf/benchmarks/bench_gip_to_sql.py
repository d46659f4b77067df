"""Benchmark GipToSqlOperator's load path against ``psql \\copy`` and common.sql's ``insert_rows``.

Generates realistic result CSVs (chat-message JSON, Korean, embedded newlines, ~1.5k characters a row)
and loads each into the local PostgreSQL (db ``test``) with, in the same run and in turn:

* ``psql \\copy`` of the raw file into a plain 8-column text table (the anchor);
* the same ``\\copy`` with ``default_toast_compression = lz4`` (a reference, no target): the operator
  sets it in its transaction, so this row shows what part of its speed is the setting;
* this operator's load step (``load_result_csv``: validate + COPY, one transaction, full table layout
  with its primary key), then the same run again (a reload: delete + insert);
* ``DbApiHook.insert_rows(..., executemany=True)`` of the csv module's rows into the 8-column table;
* this operator's load step into SQLite, and its anchor: the csv module's rows into a plain
  8-column SQLite table with ``sqlite3``'s ``executemany`` (one transaction);
* optionally (``--emulator``) the download of a synthetic run of the same size from the GIP emulator.

Every measurement runs in a fresh child process, so its peak RSS is its own; the baseline is a child
that only does ``import airflow.sdk``. Prints rows/s, MB/s, peak RSS, RSS above the baseline and the
ratio to ``\\copy``. The methods run interleaved: in each round every method once, the order rotating
from round to round; ratios are taken within a round and reported as median (min-max). The exit status
is 1 when a target (:data:`TARGETS`, and the memory target at 1M rows) is missed. Not a timed test.

    python -m tests.perf.benchmarks.bench_gip_to_sql --rows 100000 1000000 --repeat 5
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


def _server_has_lz4() -> bool:
    """Whether the server can compress TOAST with lz4 (PostgreSQL 14+ built with it)."""
    proc = subprocess.run(
        [
            *PSQL,
            "-At",
            "-c",
            "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() == "1"


def copy_anchor(path: Path, table: str, compression: str | None = None) -> float:
    psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({ANCHOR_DDL})")
    psql("CHECKPOINT")
    env = (
        None
        if compression is None
        else {**os.environ, "PGOPTIONS": f"-c default_toast_compression={compression}"}
    )
    started = time.monotonic()
    subprocess.run(
        [*PSQL, "-c", f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)"],
        check=True,
        capture_output=True,
        env=env,
    )
    return time.monotonic() - started


#: Targets checked by the exit status: (method, anchor, minimum ratio of rows/s).
TARGETS = (
    ("GipToSqlOperator load (COPY)", "psql \\copy (anchor)", 0.97),
    ("GipToSqlOperator load (COPY)", "DbApiHook.insert_rows", 2.2),
    ("GipToSqlOperator load (SQLite)", "sqlite3 executemany (SQLite anchor)", 0.90),
)
#: Peak RSS above a bare ``import airflow.sdk``, checked at 1M rows and more.
MEMORY_TARGET_MB = 45.0
MEMORY_TARGET_ROWS = 1_000_000


def measure(
    args: argparse.Namespace, rows: int, workdir: Path, env: dict[str, str], emulator: Any
) -> list[dict[str, Any]]:
    """Run every method ``args.repeat`` times, interleaved (one of each per round, the order rotating)."""
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
    anchor = f"{schema}.anchor"

    def add(name: str, out: dict[str, Any], key: str = "load", rep: int = 0) -> None:
        samples.setdefault(name, []).append(
            {
                "rep": rep,
                "seconds": out[key]["seconds"],
                "rss_mb": out.get("rss_mb") if key == "load" else None,
                "cpu": out[key].get("cpu_seconds"),
                "bytes": out[key].get("bytes"),
            }
        )

    def copy_method(rep: int) -> None:
        seconds = copy_anchor(path, anchor)
        add("psql \\copy (anchor)", {"load": {"seconds": seconds}}, rep=rep)
        psql(f"DROP TABLE {anchor}")

    def copy_lz4(rep: int) -> None:
        seconds = copy_anchor(path, anchor, compression="lz4")
        add("psql \\copy (lz4, reference)", {"load": {"seconds": seconds}}, rep=rep)
        psql(f"DROP TABLE {anchor}")

    def operator_pg(rep: int) -> None:
        table = f"{schema}.results"
        psql("CHECKPOINT")
        out = run_child(
            {"kind": "operator-reload", "conn_id": "bench_pg", "path": str(path), "table": table}, env
        )
        add("GipToSqlOperator load (COPY)", out, rep=rep)
        add("  same run again (reload)", out, "reload", rep=rep)
        psql(f"DROP TABLE {table} CASCADE; DROP TABLE {table}_runs CASCADE")

    def insert_rows(rep: int) -> None:
        psql(f"CREATE TABLE {anchor} ({ANCHOR_DDL})")
        psql("CHECKPOINT")
        out = run_child(
            {"kind": "insert_rows", "conn_id": "bench_pg", "path": str(path), "table": anchor}, env
        )
        add("DbApiHook.insert_rows", out, rep=rep)
        psql(f"DROP TABLE {anchor}")

    def sqlite_anchor(rep: int) -> None:
        anchor_db = workdir / f"anchor-{rep}.db"
        os.sync()
        out = run_child({"kind": "sqlite_plain", "path": str(path), "db": str(anchor_db)}, env)
        add("sqlite3 executemany (SQLite anchor)", out, rep=rep)
        anchor_db.unlink(missing_ok=True)

    def operator_sqlite(rep: int) -> None:
        db = workdir / f"bench-{rep}.db"
        os.sync()
        env_lite = {**env, "AIRFLOW_CONN_BENCH_LITE": json.dumps({"conn_type": "sqlite", "host": str(db)})}
        out = run_child(
            {"kind": "operator", "conn_id": "bench_lite", "path": str(path), "table": "results"}, env_lite
        )
        add("GipToSqlOperator load (SQLite)", out, rep=rep)
        db.unlink(missing_ok=True)
        Path(str(db) + "-journal").unlink(missing_ok=True)

    methods: list[Any] = [copy_method, operator_pg]
    if _server_has_lz4():
        methods.append(copy_lz4)
    if not args.skip_insert_rows:
        methods.append(insert_rows)
    if not args.skip_sqlite:
        methods += [sqlite_anchor, operator_sqlite]
    try:
        synthetic = None
        if emulator is not None:
            synthetic = emulator.synthetic_run(
                rows=rows, row_bytes=int(size / rows), display_name=f"bench {rows}"
            )

            def download(rep: int) -> None:
                dest = workdir / "download.csv"
                env_gip = {**env, "AIRFLOW_CONN_GIP_DEFAULT": emulator.conn_json()}
                spec = {
                    "kind": "download",
                    "experiment_id": synthetic["experiment_id"],
                    "run_id": synthetic["id"],
                    "path": str(dest),
                }
                add("download from emulator (synthetic)", run_child(spec, env_gip), rep=rep)
                dest.unlink(missing_ok=True)

            methods.append(download)
        for rep in range(args.repeat):
            shift = rep % len(methods)
            for method in methods[shift:] + methods[:shift]:
                method(rep)
    finally:
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        path.unlink(missing_ok=True)
    return _report(args, rows, size, samples, baseline, load_before)


def _ratios(samples: dict[str, list[dict[str, Any]]], method: str, anchor: str) -> list[float]:
    """Per round: the method's rows/s over the anchor's in the same round (anchor seconds / method's)."""
    theirs = {s["rep"]: s["seconds"] for s in samples.get(anchor, [])}
    return [theirs[s["rep"]] / s["seconds"] for s in samples.get(method, []) if s["rep"] in theirs]


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _report(
    args: argparse.Namespace,
    rows: int,
    size: int,
    samples: dict[str, list[dict[str, Any]]],
    baseline: float,
    load_before: float,
) -> list[dict[str, Any]]:
    copy_name = "psql \\copy (anchor)"
    report = []
    header = ("method", "rows/s", "MB/s", "x \\copy (min-max)", "client CPU", "peak RSS", "+baseline")
    print(
        f"{header[0]:<38} {header[1]:>9} {header[2]:>7} {header[3]:>18} {header[4]:>10} {header[5]:>9} "
        f"{header[6]:>10}"
    )
    print(f"{'bare import airflow.sdk':<38} {'':>9} {'':>7} {'':>18} {'':>10} {baseline:>7.0f}MB")
    for name, runs in samples.items():
        seconds = statistics.median(s["seconds"] for s in runs)
        rps = rows / seconds
        mbs = (runs[0].get("bytes") or size) / 1e6 / seconds
        rss = max((s["rss_mb"] for s in runs if s["rss_mb"] is not None), default=None)
        cpus = [s["cpu"] for s in runs if s.get("cpu") is not None]
        cpu = statistics.median(cpus) if cpus else None
        to_copy = _ratios(samples, name, copy_name)
        entry: dict[str, Any] = {
            "method": name.strip(),
            "rows": rows,
            "seconds": [round(s["seconds"], 3) for s in runs],
            "rows_per_s": round(rps),
            "mb_per_s": round(mbs, 1),
            "ratio_to_copy": round(statistics.median(to_copy), 2) if to_copy else None,
            "ratio_to_copy_range": [round(min(to_copy), 2), round(max(to_copy), 2)] if to_copy else None,
            "peak_rss_mb": None if rss is None else round(rss, 1),
            "rss_above_baseline_mb": None if rss is None else round(rss - baseline, 1),
            "client_cpu_s": None if cpu is None else round(cpu, 2),
        }
        report.append(entry)
        cpu_text = f"{cpu:9.2f}s" if cpu is not None else f"{'':>10}"
        rss_text = "" if rss is None else f"{rss:7.0f}MB {rss - baseline:+9.0f}MB"
        print(f"{name:<38} {rps:>9,.0f} {mbs:>7.1f} {_spread(to_copy):>18} {cpu_text} {rss_text}")
    by_name = {e["method"]: e for e in report}
    for method, anchor, target in TARGETS:
        ratios = _ratios(samples, method, anchor)
        if not ratios:
            continue
        median = statistics.median(ratios)
        entry = by_name[method]
        entry.setdefault("targets", []).append(
            {
                "anchor": anchor.strip(),
                "target": target,
                "median": round(median, 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
                "met": median >= target,
            }
        )
        verdict = "ok" if median >= target else "MISSED"
        print(f"target {method} / {anchor}: {_spread(ratios)} (>= {target}) {verdict}")
    # What a loader exactly at \copy speed would score against insert_rows on this machine.
    ceiling = _ratios(samples, copy_name, "DbApiHook.insert_rows")
    if ceiling:
        print(f"for reference: {copy_name} / DbApiHook.insert_rows: {_spread(ceiling)}")
    if rows >= MEMORY_TARGET_ROWS:
        for method in ("GipToSqlOperator load (COPY)", "GipToSqlOperator load (SQLite)"):
            above = by_name.get(method, {}).get("rss_above_baseline_mb")
            if above is None:
                continue
            met = above <= MEMORY_TARGET_MB
            by_name[method].setdefault("targets", []).append(
                {
                    "anchor": "bare import airflow.sdk",
                    "target_mb": MEMORY_TARGET_MB,
                    "rss_mb": above,
                    "met": met,
                }
            )
            print(
                f"target {method} memory: {above:+.0f} MB (<= +{MEMORY_TARGET_MB:.0f}) {'ok' if met else 'MISSED'}"
            )
    print(
        f"(median of {args.repeat} interleaved round(s), min-max in brackets; baseline peak RSS {baseline:.0f} MB; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs)",
        flush=True,
    )
    return report


def missed_targets(report: list[dict[str, Any]]) -> list[str]:
    """The targets a report misses, as text (empty when all are met)."""
    return [
        f"{e['method']} at {e['rows']:,} rows: {t}"
        for e in report
        for t in e.get("targets", [])
        if not t["met"]
    ]


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
    if "--child" in sys.argv:
        main()
    else:
        missed = missed_targets(main())
        for line in missed:
            print(f"MISSED: {line}", file=sys.stderr)
        sys.exit(1 if missed else 0)
