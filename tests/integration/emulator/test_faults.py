"""Fault injection: 5xx, 429 + Retry-After, latency, dropped connections (also mid-CSV), run failures."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from gip_airflow.api import Paths


def models(gip):
    return gip.http.get(Paths.models(gip.ws))


def test_error_rate_with_a_budget(gip):
    before = gip.emu.stats()["faults"]["error"]
    gip.emu.set_faults(error_rate=1.0, max_faults=2)
    statuses = [models(gip).status_code for _ in range(4)]
    assert statuses[0] in (500, 502, 503) and statuses[1] in (500, 502, 503)
    assert statuses[2:] == [200, 200]
    assert gip.emu.stats()["faults"]["error"] == before + 2
    gip.emu.set_faults(error_rate=1.0, error_statuses=[504])
    answer = models(gip)
    assert answer.status_code == 504 and "emulated fault" in answer.json()["message"]


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_rate_limit_with_retry_after(gip, fmt):
    gip.emu.set_faults(rate_limit_rate=1.0, retry_after=3, retry_after_format=fmt, max_faults=1)
    answer = models(gip)
    assert answer.status_code == 429
    retry_after = answer.headers["retry-after"]
    if fmt == "seconds":
        assert retry_after == "3"
    else:
        assert email.utils.parsedate_to_datetime(retry_after).timestamp() > time.time()
    assert models(gip).status_code == 200


def test_latency_is_added_and_counted(gip):
    before = gip.emu.stats()["faults"]["latency"]
    gip.emu.set_faults(latency_ms=150)
    started = time.perf_counter()
    assert models(gip).status_code == 200
    elapsed = time.perf_counter() - started
    gip.emu.clear_faults()
    started = time.perf_counter()
    models(gip)
    plain = time.perf_counter() - started
    print(f"request with a 150 ms latency fault: {elapsed * 1000:.0f} ms; without: {plain * 1000:.0f} ms")
    assert gip.emu.stats()["faults"]["latency"] == before + 1


def test_dropped_connection_mid_json(gip):
    gip.emu.set_faults(drop_rate=1.0, max_faults=1)
    with pytest.raises(httpx.RemoteProtocolError):
        models(gip)
    assert models(gip).status_code == 200
    assert gip.emu.stats()["faults"]["drop"] >= 1


def test_dropped_connection_mid_csv(gip):
    run = gip.emu.synthetic_run(rows=2000, row_bytes=1000)
    gip.emu.set_faults(drop_rate=1.0, drop_after_bytes=100_000, path_pattern="/download$", max_faults=1)
    assert models(gip).status_code == 200  # other paths are not faulted
    received = 0
    with pytest.raises(httpx.RemoteProtocolError), gip.http.stream("GET", run["download_path"]) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert received == 100_000
    complete = gip.http.get(run["download_path"])
    assert complete.status_code == 200 and len(complete.content) > 1_900_000


def test_path_pattern_and_control_api_is_never_faulted(gip):
    gip.emu.set_faults(error_rate=1.0, path_pattern="^/api/public/")
    assert models(gip).status_code == 200
    assert gip.lf.get("/api/public/traces").status_code >= 500
    gip.emu.set_faults(error_rate=1.0, path_pattern=".*")
    assert gip.emu.stats()["requests"] > 0  # the control API still answers


def test_faults_are_deterministic_with_a_seed(gip):
    def sequence(seed):
        gip.emu.set_faults(error_rate=0.3, rate_limit_rate=0.2, seed=seed)
        return [models(gip).status_code for _ in range(30)]

    first, again, other = sequence(7), sequence(7), sequence(8)
    assert first == again
    assert first != other
    assert {200, 429} <= set(first)


def test_invalid_fault_config_is_rejected(gip):
    with pytest.raises(RuntimeError, match="error_rate"):
        gip.emu.set_faults(error_rate=2)
    with pytest.raises(RuntimeError, match="eror_rate"):
        gip.emu.set_faults(eror_rate=0.5)
    with pytest.raises(RuntimeError, match="path_pattern"):
        gip.emu.set_faults(path_pattern="(")


def test_langfuse_faults_are_retried_by_the_run_or_fail_it(gip):
    exp = gip.trace_experiment(max_trace_count=3)
    ev = gip.evaluator()
    gip.emu.set_faults(error_rate=1.0, path_pattern="^/api/public/", max_faults=2)
    assert gip.run_done(exp, ev)["aggregated_result"]["error"] is None
    gip.emu.set_faults(error_rate=1.0, path_pattern="^/api/public/", error_statuses=[503])
    run = gip.wait(exp, gip.start_run(exp, ev)["id"])
    assert run["status"] == "FAILED" and "503" in run["aggregated_result"]["error"]


def test_run_failure_rate(gip):
    exp, ev = gip.dataset_experiment(), gip.evaluator()
    before = gip.emu.stats()["faults"]["run_failure"]
    gip.emu.set_faults(run_failure_rate=1.0)
    failed = gip.wait(exp, gip.start_run(exp, ev)["id"])
    assert failed["status"] == "FAILED"
    assert (
        "openai/gpt-4" in failed["aggregated_result"]["error"]
        or "worker" in failed["aggregated_result"]["error"]
    )
    assert gip.emu.stats()["faults"]["run_failure"] == before + 1
    gip.emu.set_faults(run_failure_rate=0.5, seed=3)
    started = [gip.start_run(exp, ev)["id"] for _ in range(8)]
    outcomes = [gip.wait(exp, run_id)["status"] for run_id in started]
    assert set(outcomes) == {"DONE", "FAILED"}


def test_never_finish_and_forced_statuses(gip):
    exp, ev = gip.dataset_experiment(), gip.evaluator()
    gip.emu.set_run_speed(never_finish=True)
    run_id = gip.start_run(exp, ev)["id"]
    deadline = time.monotonic() + 10
    while gip.emu.run(run_id)["target_count"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # well past run_seconds: it would be DONE by now
    assert gip.ok(gip.http.get(Paths.run(gip.ws, exp, run_id)))["status"] == "RUNNING"

    gip.emu.force_run_status(run_id, "QUEUED_FOR_GPU")
    assert gip.ok(gip.http.get(Paths.run(gip.ws, exp, run_id)))["status"] == "QUEUED_FOR_GPU"
    gip.emu.force_run_status(run_id, "CANCELLED", error="cancelled by an operator")
    run = gip.ok(gip.http.get(Paths.run(gip.ws, exp, run_id)))
    assert run["status"] == "CANCELLED" and run["aggregated_result"]["error"] == "cancelled by an operator"
    gip.emu.force_run_status(run_id, "DONE")
    assert gip.csv_bytes(exp, run_id).count(b"\n") > 20  # complete CSV although the run is held
    gip.emu.force_run_status(run_id, None)
    assert gip.ok(gip.http.get(Paths.run(gip.ws, exp, run_id)))["status"] == "RUNNING"
    gip.emu.set_run_speed(never_finish=False)
    assert gip.wait(exp, run_id)["status"] == "DONE"


def test_stats_count_requests_routes_and_runs(gip):
    exp, ev = gip.dataset_experiment(), gip.evaluator()
    before = gip.emu.stats()
    run = gip.run_done(exp, ev)
    gip.csv_bytes(exp, run["id"])
    after = gip.emu.stats()
    assert after["runs_created"] == before["runs_created"] + 1
    route = "GET /api/workspaces/{ws}/evals/experiments/{exp}/runs/{run}"
    assert after["requests_by_route"][route] > before["requests_by_route"].get(route, 0)
    assert after["requests_by_group"]["langfuse"] > before["requests_by_group"].get("langfuse", 0)
    assert after["download_bytes"] > before["download_bytes"]
    assert after["runs_by_status"]["DONE"] >= 1
    assert after["responses_by_status"]["200"] > before["responses_by_status"]["200"]
