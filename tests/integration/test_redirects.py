"""A 3xx answer is an error naming the redirect target and is never followed (issue 18, item 8)."""

from __future__ import annotations

import io

import pytest

from gip_airflow.exceptions import GipApiError
from tests.integration.hostile_http import CSV, HostileServer, Reply, hook_for

# -- item 8: redirects are errors that name the target, never followed ------------------------------


def test_redirect_on_a_json_call_names_the_target(monkeypatch):
    with HostileServer(lambda seen: Reply(200, [])) as elsewhere:
        target = elsewhere.url + "/login?next=models"
        with HostileServer(lambda seen: Reply(302, b"", {"Location": target})) as server:
            with hook_for(monkeypatch, server) as hook, pytest.raises(GipApiError) as info:
                hook.list_models()
    assert info.value.http_status == 302
    assert target in str(info.value) and "redirect" in str(info.value).lower()
    assert elsewhere.seen == []  # never followed: httpx would carry X-Gipc-Api-Key to another origin


def test_redirect_on_download_names_the_target_and_writes_nothing(monkeypatch):
    with HostileServer(lambda seen: Reply(200, CSV)) as elsewhere:
        target = elsewhere.url + "/bucket/result.csv"
        with HostileServer(lambda seen: Reply(302, b"", {"Location": target})) as server:
            out = io.BytesIO()
            with hook_for(monkeypatch, server, max_retries=2) as hook, pytest.raises(GipApiError) as info:
                hook.download_run_result("exp-1", "run-1", out)
    assert target in str(info.value)
    assert "empty" not in str(info.value)
    assert len(server.seen) == 1  # a redirect is not retried
    assert elsewhere.seen == []
    assert out.getvalue() == b""


def test_redirect_on_the_cognito_login_names_the_target(monkeypatch):
    with HostileServer(lambda seen: Reply(200, {})) as elsewhere:
        target = elsewhere.url + "/oauth2/login"
        with HostileServer(lambda seen: Reply(307, b"", {"Location": target})) as server:
            with (
                hook_for(monkeypatch, server, auth_type="cognito") as hook,
                pytest.raises(GipApiError) as info,
            ):
                hook.list_models()
    assert target in str(info.value) and "cognito_endpoint" in str(info.value)
    assert elsewhere.seen == []  # the password is never sent to the redirect target
