"""Benchmark (``make perf``): waiting in the worker vs deferring, for the same 4 s GIP run.

Prints wall time per mode and the status requests GIP saw. Target: deferring costs at most
``MAX_DEFER_RATIO`` times the worker wait's wall time in the same run, and polls no more often.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.operators.helpers import run_dag, unique_dag_id
from tests.integration.operators.test_operators_dags import chain

pytestmark = pytest.mark.benchmark

MAX_DEFER_RATIO = 1.5


def status_gets(emu) -> int:
    routes = emu.stats()["requests_by_route"]
    return sum(n for route, n in routes.items() if route.startswith("GET ") and route.endswith("/runs/{run}"))


def test_worker_vs_deferrable_wait(gip_env):
    run_dag(chain(unique_dag_id("warmup"), wait_for_completion=False))  # pay the first-call warm-up
    gip_env.set_run_speed(run_seconds=4.0)
    results = {}
    for deferrable in (False, True, False, True):
        before = status_gets(gip_env)
        started = time.perf_counter()
        dag_run = run_dag(chain(unique_dag_id("bench"), deferrable=deferrable, poll_interval=0.5))
        assert dag_run.state == "success"
        results.setdefault(deferrable, []).append(
            (time.perf_counter() - started, status_gets(gip_env) - before)
        )
    worker = min(t for t, _ in results[False])
    deferred = min(t for t, _ in results[True])
    print(
        f"\n[benchmark] 4 s run, poll 0.5 s, dag.test(): worker wait {worker:.1f} s, "
        f"deferrable {deferred:.1f} s "
        f"(ratio {deferred / worker:.2f}); status GETs worker {results[False]}, deferrable {results[True]}"
    )
    assert deferred / worker <= MAX_DEFER_RATIO
    assert max(n for _, n in results[True]) <= max(n for _, n in results[False]) + 2
