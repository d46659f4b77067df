"""Secrets echoed back by a hostile GIP or proxy never reach exceptions or logs (issue 18, items 1-2)."""

from __future__ import annotations

import json
import logging

import pytest
from airflow.sdk._shared.secrets_masker import redact

from gip_airflow.exceptions import GipApiError, GipError
from gip_airflow.hooks import _auth as transport
from gip_airflow.hooks.gip import GipHook
from tests.integration.hostile_http import HostileServer, Reply, Seen, gip_conn

API_KEY = "gip-key\\with-backslash-9"
PASSWORD = "cognito-pass\\word-123"


class TokenIssuer:
    """Cognito look-alike: every login returns a new IdToken (with a backslash-free, JWT-like shape)."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    def login(self) -> Reply:
        token = f"eyJhbGciOi.eyJzdWIiOi{len(self.issued)}x.c2lnbmF0dXJl{len(self.issued)}"
        self.issued.append(token)
        return Reply(200, {"AuthenticationResult": {"IdToken": token, "ExpiresIn": 3600}})


def _all_text(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join([str(exc), repr(exc), caplog.text])


@pytest.fixture(autouse=True)
def _fresh_tokens(caplog):
    caplog.set_level(logging.DEBUG)
    transport._TOKENS.clear()
    yield
    transport._TOKENS.clear()


def test_echoed_id_token_is_scrubbed_from_error_and_retry_warning(monkeypatch, caplog):
    issuer = TokenIssuer()

    def route(seen: Seen) -> Reply:
        if seen.path.startswith("/_cognito"):
            return issuer.login()
        # A proxy that echoes the request headers in its error body, as text and as JSON.
        auth = seen.headers.get("Authorization", "")
        return Reply(
            503, {"message": f"upstream down; request had Authorization: {auth}", "headers": seen.headers}
        )

    with HostileServer(route) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, auth_type="cognito", max_retries=1))
        with GipHook("gip_hostile", retry_backoff=0.01) as hook, pytest.raises(GipApiError) as info:
            hook.list_models()
    assert issuer.issued
    text = _all_text(info.value, caplog)
    assert "retry 1/1" in caplog.text  # the retry warning was logged (and is checked below)
    for token in issuer.issued:
        assert token not in text
    assert PASSWORD not in text


def test_previous_token_is_scrubbed_after_a_renewal(monkeypatch, caplog):
    issuer = TokenIssuer()
    gip_calls: list[str] = []

    def route(seen: Seen) -> Reply:
        if seen.path.startswith("/_cognito"):
            return issuer.login()
        gip_calls.append(seen.headers.get("Authorization", ""))
        if len(gip_calls) == 1:
            return Reply(401, {"message": "expired"})
        # After the renewal: an error naming both the new and the earlier token.
        return Reply(400, {"message": f"got {gip_calls[-1]}, earlier {gip_calls[0]}"})

    with HostileServer(route) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, auth_type="cognito"))
        with GipHook("gip_hostile") as hook, pytest.raises(GipApiError) as info:
            hook.list_models()
    assert len(issuer.issued) == 2
    text = _all_text(info.value, caplog)
    for token in issuer.issued:
        assert token not in text
    assert text.count("***") >= 2


def test_tokens_are_registered_with_airflows_masker(monkeypatch):
    issuer = TokenIssuer()

    def route(seen: Seen) -> Reply:
        return issuer.login() if seen.path.startswith("/_cognito") else Reply(200, [])

    with HostileServer(route) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, auth_type="cognito"))
        with GipHook("gip_hostile") as hook:
            hook.list_models()
    (token,) = issuer.issued
    assert token not in str(redact(f"the header was Bearer {token}"))


@pytest.mark.parametrize("shape", ["dict-message", "text-json", "nested-list"])
def test_escaped_api_key_is_scrubbed(monkeypatch, caplog, shape):
    def route(seen: Seen) -> Reply:
        key = seen.headers.get("X-Gipc-Api-Key", "")
        if shape == "dict-message":  # str(dict) escapes the backslash before any replace
            return Reply(400, {"message": {"received": {"X-Gipc-Api-Key": key}}})
        if shape == "text-json":  # a JSON echo sent as text: the key appears JSON-escaped
            return Reply(400, json.dumps({"echo": key}), headers={"Content-Type": "text/plain"})
        return Reply(400, {"detail": [{"loc": ["header", key], "msg": repr({"k": key})}]})

    with HostileServer(route) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server))
        with GipHook("gip_hostile") as hook, pytest.raises(GipError) as info:
            hook.list_models()
    text = _all_text(info.value, caplog)
    for form in (API_KEY, json.dumps(API_KEY)[1:-1], repr(API_KEY)[1:-1], "with-backslash-9"):
        assert form not in text, f"{form!r} leaked: {text[:400]}"


def test_escaped_cognito_password_is_scrubbed_from_a_failed_login(monkeypatch, caplog):
    def route(seen: Seen) -> Reply:
        body = json.loads(seen.body)
        return Reply(400, {"message": {"rejected": body["AuthParameters"]}})

    with HostileServer(route) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, auth_type="cognito"))
        with GipHook("gip_hostile") as hook, pytest.raises(GipError) as info:
            hook.list_models()
    text = _all_text(info.value, caplog)
    assert "word-123" not in text, text[:400]
