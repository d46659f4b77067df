"""The GIP hooks over ``httpx.MockTransport``: requests on the wire, error mapping, the retry policy, auth.

Each test answers with a small handler and checks what the hook sent and what it made of the answer.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from airflow.sdk import Connection
from pydantic import SecretStr

from gip_airflow import api
from gip_airflow.exceptions import (
    GipApiError,
    GipAuthError,
    GipConnectionError,
    GipError,
    GipNotFoundError,
)
from gip_airflow.hooks import _auth
from gip_airflow.hooks.gip import GipAsyncHook, GipConnectionConfig, GipHook

WS = "ws-1"
KEY = "gipc-secret-api-key-0123456789"
BASE = "http://gip.test"
Handler = Callable[[httpx.Request], httpx.Response]


def config(**overrides: Any) -> GipConnectionConfig:
    settings: dict[str, Any] = {
        "base_url": BASE,
        "workspace_id": WS,
        "api_key": SecretStr(KEY),
        "max_retries": 3,
        "retry_backoff": 0.0,  # no sleeping between retries
    }
    settings.update(overrides)
    return GipConnectionConfig(**settings)


class Recorder:
    """A MockTransport handler that answers from a list (the last answer repeats) and records requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def sync_hook(handler: Handler, **overrides: Any) -> GipHook:
    hook = GipHook("gip_unit")
    hook.__dict__["config"] = cfg = config(**overrides)
    kwargs = {k: v for k, v in cfg.client_kwargs().items() if k not in ("verify", "limits")}
    hook.__dict__["client"] = httpx.Client(transport=httpx.MockTransport(handler), **kwargs)
    return hook


def run_json(run_id: str = "run-1", status: str = "DONE", **extra: Any) -> dict[str, Any]:
    return {"id": run_id, "status": status, **extra}


EXPERIMENT = {
    "name": "qa",
    "type": "langfuse_dataset",
    "config": {"integrated_service_credential_id": "cred-1", "dataset_name": "qa-set"},
}


# ---------------------------------------------------------------------------------------------
# Requests on the wire
# ---------------------------------------------------------------------------------------------


def test_requests_carry_the_api_key_user_agent_and_workspace_path():
    recorder = Recorder(httpx.Response(200, json=[{"seq_id": 1, "public_id": "openai/gpt-4"}]))
    models = sync_hook(recorder).list_models()
    assert [m.public_id for m in models] == ["openai/gpt-4"]
    (request,) = recorder.requests
    assert request.url.path == f"/api/workspaces/{WS}/models"
    assert request.headers[api.API_KEY_HEADER] == KEY
    assert request.headers["User-Agent"].startswith("gip-airflow/")


def test_create_experiment_sends_the_validated_wire_body():
    recorder = Recorder(httpx.Response(201, json={"id": "exp-1", **EXPERIMENT}))
    experiment = sync_hook(recorder).create_experiment(EXPERIMENT)
    assert experiment.id == "exp-1"
    (request,) = recorder.requests
    assert request.method == "POST" and request.url.path == api.Paths.experiments(WS)
    sent = json.loads(request.content)
    assert sent["config"] == {**EXPERIMENT["config"], "include_archived_items": False}


def test_an_invalid_body_fails_before_any_request():
    recorder = Recorder(httpx.Response(201, json={"id": "never"}))
    bad = {**EXPERIMENT, "config": {**EXPERIMENT["config"], "dataset_name": "has space"}}
    with pytest.raises(api.GipRequestError, match=r"config\.dataset_name: .*whitespace"):
        sync_hook(recorder).create_experiment(bad)
    assert recorder.requests == []


def test_credential_private_key_reaches_gip_but_not_the_repr():
    recorder = Recorder(httpx.Response(201, json={"id": "cred-1"}))
    body = api.LangfuseCredentialCreate(
        alias="lf", base_url="https://lf.test", public_key="pk-lf-1", private_key="sk-lf-secret"
    )
    assert sync_hook(recorder).create_langfuse_credential(body).id == "cred-1"
    assert json.loads(recorder.requests[0].content)["private_key"] == "sk-lf-secret"
    assert "sk-lf-secret" not in repr(body)


def test_list_pages_until_a_short_page():
    page_size = api.LIST_PAGE_SIZE

    def pages(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        count = page_size if page < 3 else 7
        return httpx.Response(200, json={"data": [{"id": f"e{page}-{i}"} for i in range(count)]})

    recorder = Recorder(pages)
    experiments = sync_hook(recorder).list_experiments()
    assert len(experiments) == 2 * page_size + 7
    assert [r.url.params["page"] for r in recorder.requests] == ["1", "2", "3"]
    assert {r.url.params["limit"] for r in recorder.requests} == {str(page_size)}


def test_find_experiment_run_picks_the_display_name():
    runs = [run_json("r1", display_name="a"), run_json("r2", display_name="b")]
    hook = sync_hook(Recorder(httpx.Response(200, json=runs)))
    assert hook.find_experiment_run("exp-1", "b").id == "r2"
    assert hook.find_experiment_run("exp-1", "c") is None


def test_non_json_answer_is_an_api_error_naming_the_content_type():
    recorder = Recorder(httpx.Response(200, text="<html>proxy</html>", headers={"content-type": "text/html"}))
    with pytest.raises(GipApiError, match=r"non-JSON content.*text/html"):
        sync_hook(recorder).get_experiment_run("exp-1", "run-1")


# ---------------------------------------------------------------------------------------------
# Error mapping and retries
# ---------------------------------------------------------------------------------------------


def test_reads_are_retried_on_5xx_and_honour_retry_after():
    recorder = Recorder(
        httpx.Response(503, json={"message": "busy"}, headers={"Retry-After": "0"}),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json=run_json()),
    )
    assert sync_hook(recorder).get_experiment_run("exp-1", "run-1").status == "DONE"
    assert len(recorder.requests) == 3


def test_reads_give_up_after_max_retries_saying_how_often():
    recorder = Recorder(httpx.Response(500, json={"message": "boom"}))
    with pytest.raises(GipApiError, match=r"HTTP 500: boom \(after 3 attempts\)") as info:
        sync_hook(recorder, max_retries=2).get_experiment_run("exp-1", "run-1")
    assert info.value.http_status == 500
    assert len(recorder.requests) == 3


def test_a_create_is_not_repeated_after_a_5xx():
    recorder = Recorder(httpx.Response(503, json={"message": "overloaded"}))
    body = {"evaluator_id": "ev-1", "display_name": "airflow/d/t/r"}
    with pytest.raises(GipApiError, match="not repeated"):
        sync_hook(recorder).create_experiment_run("exp-1", body)
    assert len(recorder.requests) == 1


def test_a_create_is_repeated_after_429_and_a_refused_connection():
    recorder = Recorder(
        httpx.Response(429, json={"message": "slow down"}, headers={"Retry-After": "0"}),
        httpx.ConnectError("connection refused"),
        httpx.Response(201, json=run_json(status="PENDING")),
    )
    run = sync_hook(recorder).create_experiment_run("exp-1", {"evaluator_id": "e", "display_name": "n"})
    assert run.status == "PENDING"
    assert len(recorder.requests) == 3


def test_a_create_cut_after_sending_is_not_repeated():
    recorder = Recorder(httpx.ReadTimeout("read timed out"))
    with pytest.raises(GipConnectionError, match="broke after the request was sent"):
        sync_hook(recorder).create_experiment_run("exp-1", {"evaluator_id": "e", "display_name": "n"})
    assert len(recorder.requests) == 1


def test_unreachable_gip_names_the_attempts_and_what_to_check():
    recorder = Recorder(httpx.ConnectError("connection refused"))
    with pytest.raises(GipConnectionError, match=r"after 4 attempts: ConnectError.*Check the host, port"):
        sync_hook(recorder).list_models()
    assert len(recorder.requests) == 4


@pytest.mark.parametrize(
    ("status", "error", "fix"),
    [
        (401, GipAuthError, "rejected the API key"),
        (403, GipAuthError, "gip_unit"),
        (404, GipNotFoundError, "ids"),
    ],
)
def test_auth_and_missing_objects_are_not_retried(status, error, fix):
    recorder = Recorder(httpx.Response(status, json={"detail": "nope"}))
    with pytest.raises(error, match=fix):
        sync_hook(recorder).get_experiment("exp-1")
    assert len(recorder.requests) == 1


def test_an_echoed_secret_is_scrubbed_from_the_error():
    recorder = Recorder(httpx.Response(400, json={"message": f"bad key {KEY}"}))
    with pytest.raises(GipApiError) as info:
        sync_hook(recorder).get_experiment("exp-1")
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_validation_details_keep_field_paths_not_inputs():
    detail = [{"loc": ["body", "config", "dataset_name"], "msg": "bad name", "input": "sk-lf-echoed"}]
    recorder = Recorder(httpx.Response(422, json={"detail": detail}))
    with pytest.raises(GipApiError, match=r"config\.dataset_name: bad name") as info:
        sync_hook(recorder).get_experiment("exp-1")
    assert "sk-lf-echoed" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


class Chunks(httpx.SyncByteStream):
    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self):
        yield from (self.data[i : i + 64] for i in range(0, len(self.data), 64))


def streamed(data: bytes, length: int) -> Handler:
    """An answer whose body arrives as a stream (``length`` may claim more than ``data``)."""
    return lambda request: httpx.Response(200, headers={"Content-Length": str(length)}, stream=Chunks(data))


def test_download_streams_the_csv_and_restarts_a_cut_download():
    body = b"a,b\n" + b"1,2\n" * 1000
    recorder = Recorder(streamed(body[:100], len(body)), streamed(body, len(body)))
    out = io.BytesIO(b"kept-prefix:")
    out.seek(0, io.SEEK_END)
    written = sync_hook(recorder).download_run_result("exp-1", "run-1", out)
    assert written == len(body)
    assert out.getvalue() == b"kept-prefix:" + body
    assert recorder.requests[0].headers["Accept"] == "text/csv"
    assert recorder.requests[0].url.path.endswith("/runs/run-1/download")


def test_download_error_answer_maps_like_other_requests():
    recorder = Recorder(httpx.Response(409, json={"message": "run is not DONE"}))
    with pytest.raises(GipApiError, match="HTTP 409: run is not DONE"):
        sync_hook(recorder).download_run_result("exp-1", "run-1", io.BytesIO())


# ---------------------------------------------------------------------------------------------
# Cognito
# ---------------------------------------------------------------------------------------------

COGNITO = "http://cognito.test/"


@pytest.fixture
def no_cached_tokens():
    _auth._TOKENS.clear()
    yield
    _auth._TOKENS.clear()


def cognito_config() -> dict[str, Any]:
    return {
        "auth_type": "cognito",
        "api_key": None,
        "username": "alice",
        "password": SecretStr("cognito-pass"),
        "cognito_client_id": "client-1",
        "cognito_endpoint": COGNITO,
    }


def test_cognito_logs_in_once_and_renews_on_401(no_cached_tokens):
    issued: list[str] = []
    accepted = {"token": ""}

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == COGNITO:
            body = json.loads(request.content)
            assert request.headers["X-Amz-Target"] == api.COGNITO_TARGET
            assert body["AuthParameters"] == {"USERNAME": "alice", "PASSWORD": "cognito-pass"}
            issued.append(f"token-{len(issued) + 1}")
            return httpx.Response(
                200, json={"AuthenticationResult": {"IdToken": issued[-1], "ExpiresIn": 3600}}
            )
        if request.headers.get("Authorization") != f"Bearer {accepted['token']}":
            return httpx.Response(401, json={"message": "expired"})
        return httpx.Response(200, json=[])

    accepted["token"] = "token-1"
    hook = sync_hook(handler, **cognito_config())
    hook.list_models()
    hook.list_models()
    assert issued == ["token-1"]  # the token is cached between requests
    accepted["token"] = "token-2"  # GIP stops accepting the cached token
    hook.list_models()
    assert issued == ["token-1", "token-2"]


def test_cognito_rejection_names_the_user_and_hides_the_password(no_cached_tokens):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": "Incorrect username or password: cognito-pass"})

    with pytest.raises(GipAuthError, match="Cognito login for user 'alice' failed") as info:
        sync_hook(handler, **cognito_config()).list_models()
    assert "cognito-pass" not in str(info.value)


def test_auth_settings_without_their_secret_raise_a_clear_error():
    with pytest.raises(GipError, match="needs api_key"):
        config(api_key=None).auth()
    with pytest.raises(GipError, match="needs username, password and cognito_client_id"):
        config(auth_type="cognito", username="alice").auth()


# ---------------------------------------------------------------------------------------------
# Async hook (the triggerer's)
# ---------------------------------------------------------------------------------------------


def async_hook(handler: Handler, **overrides: Any) -> GipAsyncHook:
    cfg = config(**overrides)
    hook = GipAsyncHook(cfg, "gip_unit")
    kwargs = {k: v for k, v in cfg.client_kwargs().items() if k not in ("verify", "limits")}
    hook.client = httpx.AsyncClient(transport=httpx.MockTransport(handler), **kwargs)
    return hook


def test_async_hook_reads_a_run_and_retries_a_5xx():
    recorder = Recorder(
        httpx.Response(502, text="gateway"), httpx.Response(200, json=run_json(status="RUNNING"))
    )

    async def read() -> api.ExperimentRun:
        async with async_hook(recorder) as hook:
            return await hook.get_experiment_run("exp-1", "run-1")

    assert asyncio.run(read()).status == "RUNNING"
    assert recorder.paths == [f"GET {api.Paths.run(WS, 'exp-1', 'run-1')}"] * 2


def test_async_hook_without_retries_makes_one_request_per_poll():
    recorder = Recorder(httpx.Response(503, json={"message": "busy"}))

    async def read() -> None:
        async with async_hook(recorder, max_retries=0) as hook:
            await hook.get_experiment_run("exp-1", "run-1")

    with pytest.raises(GipApiError, match="HTTP 503"):
        asyncio.run(read())
    assert len(recorder.requests) == 1


# ---------------------------------------------------------------------------------------------
# Connection settings
# ---------------------------------------------------------------------------------------------


def conn(**fields: Any) -> Connection:
    extra = fields.pop("extra", {"workspace_id": WS})
    values: dict[str, Any] = {"conn_id": "gip_unit", "conn_type": "gip", "host": "gip.test", "password": KEY}
    values.update(fields)
    return Connection(**values, extra=json.dumps(extra))


def test_connection_settings_from_a_bare_host_port_and_extras():
    cfg = GipConnectionConfig.from_connection(
        conn(
            port=8443, extra={"workspace_id": WS, "timeout": "12", "max_retries": "2", "verify_ssl": "false"}
        )
    )
    assert cfg.base_url == "https://gip.test:8443"
    assert (cfg.timeout, cfg.max_retries, cfg.verify_ssl) == (12.0, 2, False)
    assert cfg.api_key is not None and cfg.api_key.get_secret_value() == KEY
    assert KEY not in repr(cfg)
    assert cfg.secrets() == [KEY]


def test_connection_overrides_win_over_extras():
    cfg = GipConnectionConfig.from_connection(conn(extra={"workspace_id": WS, "timeout": "12"}), timeout=3.0)
    assert cfg.timeout == 3.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": ""}, "host is empty"),
        ({"extra": {}}, "extra 'workspace_id' is missing"),
        ({"extra": {"workspace_id": WS, "auth_type": "oauth"}}, "auth_type 'oauth' is unknown"),
        ({"password": None}, "password is empty; set it to the enterprise API key"),
        ({"extra": {"workspace_id": WS, "auth_type": "cognito"}}, "login is empty"),
        ({"login": "alice", "extra": {"workspace_id": WS, "auth_type": "cognito"}}, "cognito_client_id"),
    ],
)
def test_connection_errors_name_the_field_and_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        GipConnectionConfig.from_connection(conn(**fields))


def test_console_run_url_only_with_console_url():
    assert sync_hook(Recorder()).console_run_url("e", "r") is None
    hook = sync_hook(Recorder(), console_url="https://console.test/")
    assert hook.console_run_url("e", "r") == (
        f"https://console.test/workspaces/{WS}/evals/experiments/e/runs/r"
    )
