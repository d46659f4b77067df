"""The main job, run as a new user would: `make demo`, then its summary checked against the warehouse."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_make_demo_summary_matches_the_warehouse():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    proc = subprocess.run(
        ["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    out = proc.stdout
    print(out[-3000:])
    match = re.search(r"Warehouse \(SQLite\): (\S+)", out)
    assert match, proc.stderr[-3000:]
    warehouse = Path(match.group(1))
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (
            "Demo finished: every DAG run succeeded, and the regression gate failed the degraded window."
            in out
        )
        assert out.count("      ok   window ") == 3
        # the degraded window: its DAG run fails at the regression gate, with the numbers
        assert out.count("      FAIL degraded window ") == 1
        gate = re.findall(r"^  (\d{4}-\d\d-\d\d \d\d:\d\d)  (\w+)\s+(.*)$", out, re.M)
        assert [g[1] for g in gate] == ["INCONCLUSIVE", "PASS", "PASS", "REGRESSION"]
        assert "pass_rate fell from" in gate[-1][2] and "one-sided p=" in gate[-1][2]
        daily = re.findall(r"^  (\d{4}-\d\d-\d\d \d\d:\d\d) → (\S+ \S+)\s+(\d+)\s+(\d+)\s+(\d+)%", out, re.M)
        models = re.findall(r"^  ([a-z]+/[\w.-]+)\s+(\d+)\s+(\d+)%\s+([\d.]+)\s+(\d+)$", out, re.M)
        with sqlite3.connect(warehouse) as db:
            runs = db.execute(
                "SELECT item_count, passed_count, window_start FROM gip_trace_results_runs"
                " ORDER BY window_start"
            ).fetchall()
            rows = db.execute("SELECT COUNT(*) FROM gip_trace_results").fetchone()[0]
            compared = db.execute(
                "SELECT display_name, item_count, total_tokens FROM gip_model_comparison_results_runs"
            ).fetchall()
        assert [(int(d[2]), int(d[3])) for d in daily] == [(r[0], r[1]) for r in runs]
        assert len({d[0] for d in daily}) == 4, "three windows and the degraded one"
        assert rows == sum(r[0] for r in runs)
        assert sorted((m[0], int(m[1]), int(m[4])) for m in models) == sorted(
            (name.split(" | ")[0], items, tokens) for name, items, tokens in compared
        )
    finally:
        shutil.rmtree(warehouse.parent, ignore_errors=True)
