"""Bad connections and wrong credentials: one clear message at the task level, a bounded number of
attempts (counted at the server), every retry explained in the log, no retry storm.

Each case runs a real task (``dag.test()``) whose first call reaches GIP; the task's own exception (as
Airflow's failure callback receives it) is checked, and attempts are counted by the endpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from airflow.sdk import DAG

from gip_airflow.exceptions import GipAuthError, GipConnectionError, GipError
from gip_airflow.operators.gip import GipCreateExperimentOperator, GipStartExperimentRunOperator
from tests.integration.operators.helpers import run_dag, ti_states, try_numbers, unique_dag_id
from tests.integration.reliability.fake_servers import FakeServer, free_port
from tests.integration.reliability.helpers import RecordCounter

pytestmark = pytest.mark.chaos

#: The connection's retry settings in these tests: the default count, a short backoff for CI.
MAX_RETRIES = 5
TRANSPORT = {"max_retries": MAX_RETRIES, "retry_backoff": 0.05, "timeout": 1}


def _fail_once(conn_json: str, monkeypatch: pytest.MonkeyPatch, *, task_retries: int = 0) -> dict[str, Any]:
    """Run a one-task DAG (start a run on GIP) with this connection; return the task's failure."""
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", conn_json)
    failures: list[BaseException] = []

    def on_failure(context: Any) -> None:
        failures.append(context["exception"])

    with DAG(
        unique_dag_id("badconn"), schedule=None, start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    ) as dag:
        GipStartExperimentRunOperator(
            task_id="run",
            experiment_id="0195a8c0-0000-7000-8000-000000000002",
            evaluator_id="0195a8c0-0000-7000-8000-000000000003",
            poll_interval=0.2,
            timeout=30,
            retries=task_retries,
            retry_delay=dt.timedelta(0),
            on_failure_callback=on_failure,
        )
    started = time.monotonic()
    with RecordCounter("gip_airflow") as logs:
        dag_run = run_dag(dag)
    seconds = time.monotonic() - started
    assert dag_run.state == "failed", ti_states(dag_run)
    assert failures, "the failure callback saw no exception"
    return {
        "exception": failures[-1],
        "message": str(failures[-1]),
        "retry_logs": logs.matching(r"; retry \d+/\d+ in "),
        "tries": try_numbers(dag_run)[("run", -1)],
        "seconds": seconds,
    }


def _conn(emu: Any, host: str, **extra: Any) -> str:
    return emu.conn_json(host=host, **{**TRANSPORT, **extra})


def _check_one_clear_message(result: dict[str, Any], *, host: str, words: tuple[str, ...]) -> None:
    message = result["message"]
    assert isinstance(result["exception"], GipConnectionError), repr(result["exception"])
    assert "\n" not in message and len(message) < 700, message
    assert host in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    # Every retry said why it happened.
    for line in result["retry_logs"]:
        assert "retry" in line and ":" in line.split("; retry")[0], line


@pytest.fixture
def emu(gip_emulator, airflow_db):
    gip_emulator.clear_faults()
    return gip_emulator


def test_dead_host(emu, monkeypatch, reliability_report):
    host = "http://gip-reliability-dead-host.invalid"
    result = _fail_once(_conn(emu, host), monkeypatch)
    _check_one_clear_message(result, host=host, words=("ConnectError", "check the host"))
    reliability_report(_figures(result, attempts=len(result["retry_logs"]) + 1))


def test_dead_port(emu, monkeypatch, reliability_report):
    host = f"http://127.0.0.1:{free_port()}"
    result = _fail_once(_conn(emu, host), monkeypatch)
    _check_one_clear_message(result, host=host, words=("Connection refused", "check the host, port"))
    assert len(result["retry_logs"]) == MAX_RETRIES  # never reached GIP: safe to retry, and bounded
    reliability_report(_figures(result, attempts=len(result["retry_logs"]) + 1))


def test_wrong_port_speaking_another_protocol(emu, monkeypatch, reliability_report):
    with FakeServer("garbage") as server:
        result = _fail_once(_conn(emu, server.url), monkeypatch)
    _check_one_clear_message(result, host=server.url, words=("RemoteProtocolError",))
    assert server.connections == len(result["retry_logs"]) + 1 <= MAX_RETRIES + 1
    reliability_report(_figures(result, attempts=server.connections))


def test_hung_server_times_out(emu, monkeypatch, reliability_report):
    with FakeServer("hang") as server:
        result = _fail_once(_conn(emu, server.url), monkeypatch)
    _check_one_clear_message(result, host=server.url, words=("ReadTimeout",))
    assert server.connections <= MAX_RETRIES + 1
    reliability_report(_figures(result, attempts=server.connections))


def test_untrusted_tls_certificate(emu, monkeypatch, tmp_path, reliability_report):
    with FakeServer("tls", tmp_path) as server:
        result = _fail_once(_conn(emu, server.url), monkeypatch)
    _check_one_clear_message(result, host=server.url, words=("TLS", "certificate", "not retried"))
    # A certificate problem does not heal by retrying: one handshake, no backoff.
    assert server.connections == 1 and result["retry_logs"] == [], result
    reliability_report(_figures(result, attempts=server.connections))


def test_https_to_a_plain_http_port(emu, monkeypatch, reliability_report):
    host = emu.base_url.replace("http://", "https://")
    before = emu.stats()["requests_by_group"]["gip"]
    result = _fail_once(_conn(emu, host), monkeypatch)
    _check_one_clear_message(result, host=host, words=("TLS", "not retried"))
    assert result["retry_logs"] == [], result
    assert emu.stats()["requests_by_group"]["gip"] == before  # never got through as HTTP
    reliability_report(_figures(result, attempts=len(result["retry_logs"]) + 1))


def _figures(result: dict[str, Any], attempts: int) -> dict[str, Any]:
    return {
        "attempts": attempts,
        "retries_logged": len(result["retry_logs"]),
        "task_tries": result["tries"],
        "seconds": round(result["seconds"], 2),
        "message": result["message"][:240],
    }


# --- wrong credentials: fail fast, no retry storm ------------------------------------------------------


@pytest.mark.parametrize("auth", ["api_key", "cognito_password", "cognito_client_id"])
def test_wrong_credentials_fail_fast_without_retries(emu, monkeypatch, auth, reliability_report):
    if auth == "api_key":
        conn = emu.conn_json(password="gip-WRONG-key", **TRANSPORT)
    elif auth == "cognito_password":
        conn = emu.conn_json(auth_type="cognito", password="WRONG-password", **TRANSPORT)
    else:
        conn = emu.conn_json(auth_type="cognito", cognito_client_id="wrong-client", **TRANSPORT)
    before = emu.stats()["requests_by_group"]
    # Three task retries allowed: an auth failure must not use them.
    result = _fail_once(conn, monkeypatch, task_retries=3)
    after = emu.stats()["requests_by_group"]
    requests = {g: after[g] - before.get(g, 0) for g in ("gip", "cognito")}
    message = result["message"]
    assert isinstance(result["exception"], GipAuthError), repr(result["exception"])
    assert result["tries"] == 1, "an auth error must not be retried by Airflow"
    assert result["retry_logs"] == []
    assert sum(requests.values()) == 1, requests
    assert "WRONG" not in message and ".." not in message
    if auth == "api_key":
        assert "API key" in message and "gip_default" in message, message
    else:
        assert "Cognito login" in message and "cognito_client_id" in message, message
    reliability_report({"requests": requests, "task_tries": result["tries"], "message": message[:240]})


def test_wrong_workspace_fails_fast(emu, monkeypatch, reliability_report):
    conn = emu.conn_json(workspace_id="00000000-0000-0000-0000-000000000000", **TRANSPORT)
    before = emu.stats()["requests_by_group"]["gip"]
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", conn)
    failures: list[BaseException] = []
    with DAG(unique_dag_id("badws"), schedule=None, start_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC)) as dag:
        GipCreateExperimentOperator(
            task_id="experiment",
            name="x",
            experiment_type="langfuse_dataset",
            config={"integrated_service_credential_id": "c", "dataset_name": "d"},
            retries=0,
            on_failure_callback=lambda ctx: failures.append(ctx["exception"]),
        )
    dag_run = run_dag(dag)
    requests = emu.stats()["requests_by_group"]["gip"] - before
    assert dag_run.state == "failed"
    assert isinstance(failures[-1], GipError)
    assert "workspace" in str(failures[-1]).lower(), str(failures[-1])
    assert requests <= 2, requests
    reliability_report({"requests": requests, "message": str(failures[-1])[:240]})


def test_auth_json_is_not_echoed(emu):
    """The connection JSON we use in these tests really carries the wrong key (guards the test itself)."""
    assert json.loads(emu.conn_json(password="gip-WRONG-key"))["password"] == "gip-WRONG-key"
