"""The emulator under hostile input: forged refresh tokens, deeply nested JSON, non-ASCII credentials."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from gip_airflow.api import COGNITO_CONTENT_TYPE, COGNITO_TARGET, Paths

COGNITO_HEADERS = {"Content-Type": COGNITO_CONTENT_TYPE, "X-Amz-Target": COGNITO_TARGET}


def _initiate(emu, flow: str, params: dict) -> httpx.Response:
    body = {"AuthParameters": params, "AuthFlow": flow, "ClientId": emu.cognito_client_id}
    return httpx.post(emu.cognito_endpoint, headers=COGNITO_HEADERS, content=json.dumps(body))


def test_forged_refresh_token_is_refused(gip_emulator):
    # The username is public (GET /_emulator/info); a refresh token must not be derivable from it.
    forged = f"emulator-refresh.{gip_emulator.username}.{'0' * 32}"
    answer = _initiate(gip_emulator, "REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": forged})
    assert answer.status_code == 400, answer.text
    assert answer.json()["__type"] == "NotAuthorizedException"
    assert "IdToken" not in answer.text


def test_issued_refresh_token_still_works_and_is_not_an_id_token(gip_emulator):
    login = _initiate(
        gip_emulator,
        "USER_PASSWORD_AUTH",
        {"USERNAME": gip_emulator.username, "PASSWORD": gip_emulator.password},
    )
    result = login.json()["AuthenticationResult"]
    refreshed = _initiate(gip_emulator, "REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": result["RefreshToken"]})
    assert refreshed.status_code == 200, refreshed.text
    id_token = refreshed.json()["AuthenticationResult"]["IdToken"]
    models = gip_emulator.base_url + Paths.models(gip_emulator.workspace_id)
    assert httpx.get(models, headers={"Authorization": f"Bearer {id_token}"}).status_code == 200
    # The refresh token itself is no bearer token for GIP, and an IdToken is no refresh token.
    assert httpx.get(models, headers={"Authorization": f"Bearer {result['RefreshToken']}"}).status_code == 401
    again = _initiate(gip_emulator, "REFRESH_TOKEN_AUTH", {"REFRESH_TOKEN": result["IdToken"]})
    assert again.status_code == 400


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_deeply_nested_json_is_a_422_not_a_500(gip_emulator, depth):
    body = "[" * depth + "]" * depth
    with gip_emulator.client() as client:
        answer = client.post(
            gip_emulator.ws_path("/evals/experiments"),
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 422, answer.text[:300]
    assert "nest" in answer.json()["message"]


def test_deeply_nested_json_to_cognito_is_a_400_not_a_500(gip_emulator):
    body = '{"AuthParameters": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = httpx.post(gip_emulator.cognito_endpoint, headers=COGNITO_HEADERS, content=body)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["__type"] == "SerializationException"


@pytest.mark.parametrize("credentials", ["pk-lf-ünïcode:sk-lf-x", "pk-lf-x:geheimes-wört", "ключ:секрет"])
def test_non_ascii_basic_auth_on_langfuse_is_a_401(gip_emulator, credentials):
    token = base64.b64encode(credentials.encode()).decode()
    answer = httpx.get(
        gip_emulator.base_url + "/api/public/projects", headers={"Authorization": f"Basic {token}"}
    )
    assert answer.status_code == 401, answer.text[:300]


def test_non_ascii_bearer_token_is_a_401(gip_emulator):
    models = gip_emulator.base_url + Paths.models(gip_emulator.workspace_id)
    raw = "Bearer a.b.cé".encode("latin-1")
    answer = httpx.get(models, headers=[(b"Authorization", raw)])
    assert answer.status_code == 401, answer.text[:300]
