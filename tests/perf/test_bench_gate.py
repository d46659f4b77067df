"""``pytest -m benchmark``: the gate benchmark at a small size (reports numbers, asserts only sanity)."""

from __future__ import annotations

import os

import pytest

from tests.perf.bench_gate import main


@pytest.mark.benchmark
def test_gate_benchmark_small(airflow_db):
    rows = int(os.environ.get("GIP_BENCH_ROWS", "20000"))
    report = main(["--rows", str(rows)])
    gates = [r for r in report if "ratio" in r]
    assert {(r["db"], r["what"]) for r in gates} == {
        (db, f"gate, {kind} baseline") for db in ("postgres", "sqlite") for kind in ("run", "paired")
    }
    assert all(r["seconds"] > 0 and r["results"] for r in gates)
