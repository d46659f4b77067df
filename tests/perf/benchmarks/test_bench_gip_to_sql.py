"""``pytest -m benchmark``: the transfer benchmark at a small size (reports numbers, asserts none)."""

from __future__ import annotations

import os

import pytest

from tests.perf.benchmarks.bench_gip_to_sql import main


@pytest.mark.benchmark
def test_transfer_benchmark_small():
    rows = int(os.environ.get("GIP_BENCH_ROWS", "5000"))
    report = main(["--rows", str(rows), "--emulator"])
    methods = {r["method"] for r in report}
    assert methods == {
        "psql \\copy (anchor)",
        "GipToSqlOperator load (COPY)",
        "same run again (reload)",
        "DbApiHook.insert_rows",
        "sqlite3 executemany (SQLite anchor)",
        "GipToSqlOperator load (SQLite)",
        "download from emulator (synthetic)",
    }
    assert all(r["rows"] == rows and r["rows_per_s"] > 0 for r in report)
