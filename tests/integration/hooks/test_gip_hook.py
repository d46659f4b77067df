"""GipHook / GipAsyncHook against the emulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import psutil
import pytest

from gip_airflow import api
from gip_airflow.exceptions import GipApiError, GipAuthError, GipConnectionError, GipError, GipNotFoundError
from gip_airflow.hooks import _auth as transport
from gip_airflow.hooks.gip import GipAsyncHook, GipConnectionConfig, GipHook

SECRET_LANGFUSE_KEY = "sk-lf-HOOKTEST-do-not-log-7f3a"


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog, gip_emulator):
    """Every hook test: capture all loggers at DEBUG and grep for the key, password and any JWT."""
    caplog.set_level(logging.DEBUG)
    transport._TOKENS.clear()
    yield
    tokens = [token for token, _ in transport._TOKENS.values()]
    text = caplog.text
    for secret in [gip_emulator.api_key, gip_emulator.password, SECRET_LANGFUSE_KEY, *tokens]:
        assert secret not in text, "a secret reached the logs"


def make_hook(monkeypatch, conn: str, **kwargs) -> GipHook:
    monkeypatch.setenv("AIRFLOW_CONN_GIP_TEST", conn)
    return GipHook("gip_test", **kwargs)


@pytest.fixture
def hook(gip_conn):
    with GipHook(retry_backoff=0.01) as h:
        yield h


@pytest.fixture
def cognito_hook(monkeypatch, gip_emulator):
    with make_hook(monkeypatch, gip_emulator.conn_json(auth_type="cognito"), retry_backoff=0.01) as h:
        yield h


def dataset_experiment(cred_id: str, name: str = "hook-test-dataset") -> dict:
    return {
        "name": name,
        "type": "langfuse_dataset",
        "config": {
            "integrated_service_credential_id": cred_id,
            "dataset_name": "JSONL_samples-plan_suggestion_dataset_v2",
        },
    }


BOOL_EVALUATOR = {
    "name": "hook-test-bool",
    "metric": {"type": "bool"},
    "evaluation_config": {
        "judge_model_seq_id": 19,
        "judge_model_public_id": "openai/gpt-4",
        "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
        "judge_prompt": "Answer true or false.",
    },
}


@pytest.fixture
def credential_id(hook, gip_emulator) -> str:
    return hook.create_langfuse_credential(
        {
            "alias": "hook-tests",
            "base_url": gip_emulator.base_url,
            "public_key": gip_emulator.langfuse_public_key,
            "private_key": gip_emulator.langfuse_secret_key,
        }
    ).id


def wait_done(hook: GipHook, experiment_id: str, run_id: str, limit: float = 60) -> api.ExperimentRun:
    deadline = time.time() + limit
    while time.time() < deadline:
        run = hook.get_experiment_run(experiment_id, run_id)
        if run.status in api.TERMINAL_STATUSES:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} not finished after {limit}s")


# --- connection forms ------------------------------------------------------------------------------


def test_connection_json_uri_and_http(monkeypatch, gip_emulator):
    for conn in (gip_emulator.conn_json(), gip_emulator.conn_uri()):
        with make_hook(monkeypatch, conn) as h:
            assert h.config.base_url == gip_emulator.base_url
            assert h.config.workspace_id == gip_emulator.workspace_id
            assert h.list_models(), "emulator lists models"


def test_host_without_scheme_uses_schema_and_port(monkeypatch, gip_emulator):
    host, port = gip_emulator.base_url.removeprefix("http://").split(":")
    conn = json.dumps(
        {
            "conn_type": "gip",
            "host": host,
            "port": int(port),
            "schema": "http",
            "password": gip_emulator.api_key,
            "extra": {"workspace_id": gip_emulator.workspace_id},
        }
    )
    with make_hook(monkeypatch, conn) as h:
        assert h.config.base_url == gip_emulator.base_url
        assert h.test_connection()[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": ""}, "host is empty; set it to the GIP console API URL"),
        ({"password": ""}, "password is empty; set it to the enterprise API key"),
        ({"extra": {}}, "extra 'workspace_id' is missing"),
        ({"extra": {"workspace_id": "w", "auth_type": "oauth"}}, "auth_type 'oauth' is unknown"),
        (
            {"extra": {"workspace_id": "w", "auth_type": "cognito"}, "login": "u"},
            "'cognito_client_id' is missing",
        ),
    ],
)
def test_bad_connection_names_the_field(monkeypatch, gip_emulator, change, message):
    conn = {**json.loads(gip_emulator.conn_json()), **change}
    h = make_hook(monkeypatch, json.dumps(conn))
    with pytest.raises(GipError, match=message):
        h.list_models()


def test_repr_and_config_hide_secrets(hook, gip_emulator):
    assert gip_emulator.api_key not in repr(hook.config)
    assert gip_emulator.api_key not in repr(hook.client.auth)


# --- auth ---------------------------------------------------------------------------------------


def test_wrong_api_key_fails_fast_without_retries(monkeypatch, gip_emulator):
    before = gip_emulator.stats()["requests_by_group"]["gip"]
    conn = {**json.loads(gip_emulator.conn_json()), "password": "wrong-key"}
    with make_hook(monkeypatch, json.dumps(conn)) as h, pytest.raises(GipAuthError) as err:
        h.list_models()
    assert "HTTP 401" in str(err.value) and "API key" in str(err.value)
    assert "wrong-key" not in str(err.value)
    assert gip_emulator.stats()["requests_by_group"]["gip"] - before == 1


def test_cognito_token_is_cached_and_used(cognito_hook, gip_emulator):
    before = gip_emulator.stats()
    for _ in range(3):
        cognito_hook.list_models()
    after = gip_emulator.stats()
    assert after["tokens_issued"] - before["tokens_issued"] == 1
    assert len(transport._TOKENS) == 1


def test_cognito_token_renewed_once_on_401(cognito_hook, gip_emulator):
    cognito_hook.list_models()
    key = next(iter(transport._TOKENS))
    transport._TOKENS[key] = ("revoked-or-expired-token", time.time() + 3600)
    before = gip_emulator.stats()["tokens_issued"]
    assert cognito_hook.list_models()
    assert gip_emulator.stats()["tokens_issued"] - before == 1
    assert transport._TOKENS[key][0] != "revoked-or-expired-token"


def test_cognito_wrong_password(monkeypatch, gip_emulator):
    conn = {**json.loads(gip_emulator.conn_json(auth_type="cognito")), "password": "nope-password"}
    with make_hook(monkeypatch, json.dumps(conn)) as h, pytest.raises(GipAuthError) as err:
        h.list_models()
    assert "Cognito login" in str(err.value) and "nope-password" not in str(err.value)


def test_async_hook_with_cognito(monkeypatch, gip_emulator):
    monkeypatch.setenv("AIRFLOW_CONN_GIP_ASYNC", gip_emulator.conn_json(auth_type="cognito"))

    async def main() -> list[str]:
        async with await GipAsyncHook.from_conn_id("gip_async") as h:
            with pytest.raises(GipNotFoundError):
                await h.get_experiment_run("00000000-0000-0000-0000-000000000000", "missing")
            return [t for t, _ in transport._TOKENS.values()]

    assert asyncio.run(main())


def test_async_hooks_share_the_process_tls_context(monkeypatch, gip_emulator):
    """Every async client (one per trigger) uses the one TLS context; building one loads the CA bundle."""
    monkeypatch.setenv("AIRFLOW_CONN_GIP_TLS", gip_emulator.conn_json())

    async def main() -> list[Any]:
        hooks = [await GipAsyncHook.from_conn_id("gip_tls") for _ in range(3)]
        try:
            return [h.client._transport._pool._ssl_context for h in hooks]
        finally:
            for h in hooks:
                await h.client.aclose()

    contexts = asyncio.run(main())
    assert all(c is transport.shared_ssl_context(True) for c in contexts)


# --- endpoints ---------------------------------------------------------------------------------


def test_full_flow_create_run_download(hook, credential_id, tmp_path):
    experiment = hook.create_experiment(dataset_experiment(credential_id))
    evaluator = hook.create_evaluator(BOOL_EVALUATOR)
    assert hook.get_experiment(experiment.id).name == "hook-test-dataset"
    assert hook.find_experiment("hook-test-dataset").id == experiment.id
    assert hook.get_evaluator(evaluator.id).parsed_metric().type == "bool"
    assert hook.find_evaluator("hook-test-bool").id == evaluator.id
    run = hook.create_experiment_run(
        experiment.id, {"evaluator_id": evaluator.id, "display_name": "hook-run-1"}
    )
    assert hook.find_experiment_run(experiment.id, "hook-run-1").id == run.id
    assert hook.find_experiment_run(experiment.id, "no-such-run") is None
    done = wait_done(hook, experiment.id, run.id)
    assert done.status == "DONE" and done.aggregated_result.total_usage.total_tokens > 0
    size = hook.download_run_result(experiment.id, run.id, tmp_path / "r.csv")
    header = (tmp_path / "r.csv").read_bytes().split(b"\n", 1)[0].decode().strip()
    assert size == (tmp_path / "r.csv").stat().st_size
    assert header.split(",")[: len(api.RESULT_CSV_COLUMNS)] == list(api.RESULT_CSV_COLUMNS)


def test_auto_evaluation_create_list_disable(hook, credential_id):
    experiment = hook.create_experiment(dataset_experiment(credential_id, "hook-auto"))
    evaluator = hook.create_evaluator(BOOL_EVALUATOR)
    config = hook.create_auto_evaluation(
        experiment.id,
        {"evaluator_id": evaluator.id, "name": "nightly", "schedule": "0 23 * * *", "timezone": "Asia/Seoul"},
    )
    assert [c.id for c in hook.list_auto_evaluations(experiment.id)] == [config.id]
    assert hook.update_auto_evaluation(experiment.id, config.id, {"enabled": False}).enabled is False


def test_invalid_body_rejected_before_any_request(hook, gip_emulator):
    before = gip_emulator.stats()["requests_by_group"].get("gip", 0)
    with pytest.raises(api.GipRequestError, match=r"config\.dataset_name"):
        hook.create_experiment(
            {
                "name": "x",
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": "c", "dataset_name": "has space"},
            }
        )
    assert gip_emulator.stats()["requests_by_group"].get("gip", 0) == before


def test_unknown_ids_are_404(hook):
    with pytest.raises(GipNotFoundError, match="HTTP 404"):
        hook.get_experiment_run("00000000-0000-0000-0000-000000000000", "nope")


def test_server_side_422_message_names_field_and_hides_secret(hook):
    # Bypass client-side validation to see how a server rejection is reported.
    with pytest.raises(GipApiError) as err:
        hook._request(
            "POST",
            hook._path(api.Paths.credentials),
            json={
                "service_name": "LANGFUSE",
                "alias": "",
                "base_url": "x",
                "private_key": SECRET_LANGFUSE_KEY,
            },
        )
    assert err.value.http_status == 422
    assert SECRET_LANGFUSE_KEY not in str(err.value)


# --- transport: retries, Retry-After, dead hosts ------------------------------------------------


def test_reads_retry_through_5xx(hook, gip_emulator):
    gip_emulator.set_faults(error_rate=0.3, seed=7)
    try:
        for _ in range(10):
            assert hook.list_models()
    finally:
        gip_emulator.clear_faults()
    assert gip_emulator.stats()["faults"].get("error", 0) > 0


def test_creating_post_is_not_retried_on_5xx(hook, credential_id, gip_emulator):
    experiment = hook.create_experiment(dataset_experiment(credential_id, "hook-no-retry"))
    evaluator = hook.create_evaluator(BOOL_EVALUATOR)
    errors_before = gip_emulator.stats()["faults"]["error"]
    gip_emulator.set_faults(error_rate=1.0)
    try:
        with pytest.raises(GipApiError, match="HTTP 5"):
            hook.create_experiment_run(experiment.id, {"evaluator_id": evaluator.id, "display_name": "once"})
    finally:
        gip_emulator.clear_faults()
    assert gip_emulator.stats()["faults"]["error"] - errors_before == 1, "the POST was sent exactly once"
    assert gip_emulator.runs(experiment.id) == []


def test_retry_after_is_honoured(hook, gip_emulator, caplog):
    gip_emulator.set_faults(rate_limit_rate=1.0, retry_after=1, max_faults=2)
    try:
        started = time.monotonic()
        assert hook.list_models()
        elapsed = time.monotonic() - started
    finally:
        gip_emulator.clear_faults()
    waits = [
        r.getMessage() for r in caplog.records if "retry" in r.getMessage() and "in 1.0 s" in r.getMessage()
    ]
    assert len(waits) == 2, [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert elapsed >= 2.0  # behaviour, not speed: the hook slept what the server asked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_port_gives_one_clear_message(monkeypatch, gip_emulator):
    conn = {**json.loads(gip_emulator.conn_json()), "host": f"http://127.0.0.1:{_free_port()}"}
    conn["extra"] = {**conn["extra"], "max_retries": 2, "retry_backoff": 0.01}
    with make_hook(monkeypatch, json.dumps(conn)) as h, pytest.raises(GipConnectionError) as err:
        h.list_models()
    message = str(err.value)
    assert (
        "after 3 attempts" in message
        and "ConnectError" in message
        and "check the host, port" in message.lower()
    )


def test_tls_to_plain_http_port_says_tls(monkeypatch, gip_emulator):
    conn = {
        **json.loads(gip_emulator.conn_json()),
        "host": gip_emulator.base_url.replace("http://", "https://"),
    }
    conn["extra"] = {**conn["extra"], "max_retries": 0}
    with make_hook(monkeypatch, json.dumps(conn)) as h, pytest.raises(GipConnectionError) as err:
        h.list_models()
    assert "TLS" in str(err.value) or "SSL" in str(err.value)


# --- streaming download -------------------------------------------------------------------------


def _peak_rss_during(fn) -> tuple[object, int]:
    proc = psutil.Process(os.getpid())
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    baseline = proc.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        stop.set()
        thread.join()
    return result, peak[0] - baseline


def test_download_over_100_mb_with_flat_memory(hook, gip_emulator, tmp_path):
    synthetic = gip_emulator.synthetic_run(rows=70_000, row_bytes=1_600)
    dest = tmp_path / "big.csv"
    size, growth = _peak_rss_during(
        lambda: hook.download_run_result(synthetic["experiment_id"], synthetic["id"], dest)
    )
    print(f"downloaded {size / 1e6:.1f} MB, RSS growth {growth / 1e6:.1f} MB")
    assert size > 100_000_000 and dest.stat().st_size == size
    assert growth < 40_000_000


def test_download_dropped_mid_csv_is_retried_to_identical_bytes(hook, gip_emulator, tmp_path):
    synthetic = gip_emulator.synthetic_run(rows=3_000, row_bytes=1_500)
    clean = tmp_path / "clean.csv"
    hook.download_run_result(synthetic["experiment_id"], synthetic["id"], clean)
    gip_emulator.set_faults(drop_rate=1.0, max_faults=2, seed=3)
    try:
        with open(tmp_path / "faulty.csv", "wb") as out:
            hook.download_run_result(synthetic["experiment_id"], synthetic["id"], out)
    finally:
        gip_emulator.clear_faults()
    assert gip_emulator.stats()["faults"].get("drop", 0) >= 1
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (clean, tmp_path / "faulty.csv")]
    assert digest[0] == digest[1]


# --- Airflow integration ------------------------------------------------------------------------


def test_config_from_connection_object(gip_emulator):
    from airflow.sdk import Connection

    conn = Connection.from_json(gip_emulator.conn_json(), conn_id="x")
    config = GipConnectionConfig.from_connection(conn, timeout=5)
    assert config.timeout == 5 and config.auth_type == "api_key"
