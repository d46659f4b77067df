"""Control API and fixtures: synthetic runs and datasets, run listing, reset, connections."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics

from gip_airflow.api import RESULT_CSV_COLUMNS, Paths

from .conftest import PLAN_DATASET


def test_synthetic_run_csv_is_realistic_and_sized(gip):
    run = gip.emu.synthetic_run(rows=3000, row_bytes=2000)
    assert run["status"] == "DONE" and run["rows"] == 3000
    got = gip.ok(gip.http.get(Paths.run(gip.ws, run["experiment_id"], run["id"])))
    assert got["status"] == "DONE" and got["result_path"]
    body = gip.http.get(run["download_path"]).content
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
    assert len(rows) == 3000
    assert list(rows[0]) == list(RESULT_CSV_COLUMNS)
    size = len(body) / 3000
    assert 1800 < size < 2200, size
    text = body.decode("utf-8")
    assert any("\uac00" <= ch <= "\ud7a3" for ch in text[:5000])
    assert any("\n" in r["rationale"] for r in rows) and any('"' in r["rationale"] for r in rows)
    assert {r["passed"] for r in rows} == {"true", "false"}
    assert json.loads(rows[7]["input_data_from_experiment"])[0]["role"] == "user"
    assert len({r["input_data_from_experiment"] for r in rows}) == 3000  # every row differs
    same = gip.emu.synthetic_run(rows=3000, row_bytes=2000)
    assert gip.http.get(same["download_path"]).content == body  # deterministic
    empty = gip.emu.synthetic_run(rows=0)
    assert gip.http.get(empty["download_path"]).content.decode().splitlines() == [
        ",".join(RESULT_CSV_COLUMNS)
    ]


def test_synthetic_run_under_a_given_experiment(gip):
    exp, ev = gip.dataset_experiment(), gip.evaluator()
    run = gip.emu.synthetic_run(
        rows=10, row_bytes=300, experiment_id=exp, evaluator_id=ev, display_name="load"
    )
    assert run["experiment_id"] == exp and run["evaluator_id"] == ev
    assert len(gip.rows(exp, run["id"])) == 10
    listed = [r for r in gip.emu.runs(experiment_id=exp) if r["id"] == run["id"]]
    assert listed[0]["synthetic"] is True and listed[0]["display_name"] == "load"


def test_run_over_a_large_synthetic_dataset(gip):
    name = f"synthetic-{os.getpid()}-5k"
    gip.emu.create_dataset(name, 5000, archived_every=10)
    exp = gip.dataset_experiment(name)
    run = gip.run_done(exp, gip.evaluator())
    info = gip.emu.run(run["id"])
    assert info["target_count"] == 4500
    assert len(gip.rows(exp, run["id"])) == 4500
    usage = run["aggregated_result"]["total_usage"]
    assert usage["total_tokens"] > 4500 * 50


def test_runs_listing(gip):
    exp, ev = gip.dataset_experiment(PLAN_DATASET), gip.evaluator()
    run = gip.run_done(exp, ev, display_name="listed")
    listed = gip.emu.runs()
    assert listed[0]["id"] == run["id"]
    assert listed[0]["experiment_id"] == exp and listed[0]["display_name"] == "listed"
    assert listed[0]["target_count"] == 21 and listed[0]["synthetic"] is False
    assert [r["id"] for r in gip.emu.runs(experiment_id=exp)] == [run["id"]]


def test_seeded_objects_run_out_of_the_box(gip):
    seeded = gip.emu.info()["seed"]
    exp, ev = seeded["experiments"][0], seeded["evaluators"][0]
    cred, page = [], 1
    while True:  # other tests add credentials; the seeded one is the oldest, on the last page
        data = gip.ok(gip.http.get(Paths.credentials(gip.ws), params={"page": page, "limit": 100}))["data"]
        cred += data
        if len(data) < 100:
            break
        page += 1
    assert any(c["id"] == seeded["credentials"][0] and c["base_url"] == gip.emu.base_url for c in cred)
    run = gip.run_done(exp, ev)
    assert len(gip.rows(exp, run["id"])) == 21


def test_info_has_no_secrets(gip):
    text = json.dumps(gip.emu.info())
    for secret in (gip.emu.api_key, gip.emu.password, gip.emu.langfuse_secret_key):
        assert secret not in text


def test_connection_json_and_uri(gip_conn):
    conn = json.loads(os.environ["AIRFLOW_CONN_GIP_DEFAULT"])
    assert conn["conn_type"] == "gip" and conn["host"] == gip_conn.base_url
    assert conn["password"] == gip_conn.api_key
    assert conn["extra"]["workspace_id"] == gip_conn.workspace_id and conn["extra"]["auth_type"] == "api_key"
    assert conn["extra"]["cognito_endpoint"] == gip_conn.cognito_endpoint
    assert conn["extra"]["console_url"] == gip_conn.base_url
    cognito = json.loads(gip_conn.conn_json(auth_type="cognito", timeout=5))
    assert cognito["login"] == gip_conn.username and cognito["password"] == gip_conn.password
    assert cognito["extra"]["timeout"] == 5
    assert json.loads(gip_conn.conn_json(password="wrong"))["password"] == "wrong"

    from airflow.models.connection import Connection

    parsed = Connection(conn_id="gip_default", uri=gip_conn.conn_uri(auth_type="cognito"))
    assert parsed.conn_type == "gip" and parsed.host == gip_conn.base_url
    assert parsed.login == gip_conn.username and parsed.password == gip_conn.password
    assert parsed.extra_dejson["workspace_id"] == gip_conn.workspace_id
    assert parsed.extra_dejson["cognito_client_id"] == gip_conn.cognito_client_id
    assert gip_conn.info()["faults"]["error_rate"] == 0.0


def test_firing_listing_errors(gip):
    import pytest

    with pytest.raises(RuntimeError, match="timezone"):
        gip.emu.schedule_firings("0 * * * *", "Mars/Base", "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z")
    with pytest.raises(RuntimeError, match="schedule"):
        gip.emu.schedule_firings("every hour", "Etc/UTC", "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z")
    hourly = gip.emu.schedule_firings("0 * * * *", "Etc/UTC", "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z")
    assert len(hourly) == 24 and statistics.mode(h[14:] for h in hourly) == "00:00.000Z"
