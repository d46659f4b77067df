"""The transfer benchmark at a small size (``make perf``): every method measured, and the ratios of
the operator's load paths to their anchors in the same run meet ``TARGETS``."""

from __future__ import annotations

import os

from tests.perf.benchmarks.bench_gip_to_sql import _server_has_lz4, main, missed_targets


def test_transfer_benchmark_meets_its_target_ratios():
    rows = int(os.environ.get("GIP_BENCH_ROWS", "20000"))
    report = main(["--rows", str(rows), "--emulator"])
    reference = {"psql \\copy (lz4, reference)"} if _server_has_lz4() else set()
    assert {r["method"] for r in report} == reference | {
        "psql \\copy (anchor)",
        "GipToSqlOperator load (COPY)",
        "same run again (reload)",
        "DbApiHook.insert_rows",
        "sqlite3 executemany (SQLite anchor)",
        "GipToSqlOperator load (SQLite)",
        "download from emulator (synthetic)",
    }
    assert all(r["rows"] == rows for r in report)
    assert missed_targets(report) == []
