"""Auth: the enterprise API key, the emulated Cognito login, bearer tokens, Langfuse basic auth."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from gip_airflow.api import COGNITO_CONTENT_TYPE, COGNITO_TARGET, Paths

COGNITO_HEADERS = {"Content-Type": COGNITO_CONTENT_TYPE, "X-Amz-Target": COGNITO_TARGET}


def login(emu, username=None, password=None, client_id=None, flow="USER_PASSWORD_AUTH", headers=None):
    body = {
        "AuthParameters": {"USERNAME": username or emu.username, "PASSWORD": password or emu.password},
        "AuthFlow": flow,
        "ClientId": client_id or emu.cognito_client_id,
    }
    return httpx.post(emu.cognito_endpoint, headers=headers or COGNITO_HEADERS, content=json.dumps(body))


def models(emu, headers):
    return httpx.get(emu.base_url + Paths.models(emu.workspace_id), headers=headers)


def test_api_key_accepted_and_rejected(emu):
    assert models(emu, {"X-Gipc-Api-Key": emu.api_key}).status_code == 200
    wrong = models(emu, {"X-Gipc-Api-Key": "not-the-key"})
    assert wrong.status_code == 401
    assert "X-Gipc-Api-Key" in wrong.json()["message"]
    missing = models(emu, {})
    assert missing.status_code == 401
    assert "Bearer" in missing.json()["message"]
    assert emu.api_key not in wrong.text


def test_cognito_login_gives_a_working_id_token(emu):
    answer = login(emu)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(COGNITO_CONTENT_TYPE)
    result = answer.json()["AuthenticationResult"]
    assert result["TokenType"] == "Bearer"
    assert result["ExpiresIn"] == 3600
    claims = json.loads(base64.urlsafe_b64decode(result["IdToken"].split(".")[1] + "=="))
    assert claims["token_use"] == "id" and claims["aud"] == emu.cognito_client_id
    assert claims["exp"] > time.time()
    assert models(emu, {"Authorization": f"Bearer {result['IdToken']}"}).status_code == 200
    # The AccessToken is not what GIP takes.
    access = models(emu, {"Authorization": f"Bearer {result['AccessToken']}"})
    assert access.status_code == 401 and "IdToken" in access.json()["message"]


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"password": "wrong"}, "NotAuthorizedException"),
        ({"username": "nobody"}, "NotAuthorizedException"),
        ({"client_id": "4dm722bemutkce2500cck1bbk4"}, "ResourceNotFoundException"),
        ({"flow": "CUSTOM_AUTH"}, "InvalidParameterException"),
        ({"headers": {"Content-Type": COGNITO_CONTENT_TYPE}}, "UnknownOperationException"),
    ],
)
def test_cognito_errors_look_like_cognito(emu, kwargs, kind):
    answer = login(emu, **kwargs)
    assert answer.status_code == 400
    assert answer.json()["__type"] == kind
    assert answer.json()["message"]


def test_refresh_token_flow(emu):
    refresh = login(emu).json()["AuthenticationResult"]["RefreshToken"]
    body = {
        "AuthParameters": {"REFRESH_TOKEN": refresh},
        "AuthFlow": "REFRESH_TOKEN_AUTH",
        "ClientId": emu.cognito_client_id,
    }
    answer = httpx.post(emu.cognito_endpoint, headers=COGNITO_HEADERS, content=json.dumps(body))
    assert answer.status_code == 200
    token = answer.json()["AuthenticationResult"]["IdToken"]
    assert models(emu, {"Authorization": f"Bearer {token}"}).status_code == 200


def test_expired_token_is_401(emu):
    emu.set_token_seconds(2)
    try:
        result = login(emu).json()["AuthenticationResult"]
        assert result["ExpiresIn"] == 2
        token = result["IdToken"]
        assert models(emu, {"Authorization": f"Bearer {token}"}).status_code == 200
        expires = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
        time.sleep(max(0.0, expires - time.time()) + 0.05)
        expired = models(emu, {"Authorization": f"Bearer {token}"})
        assert expired.status_code == 401
        assert "expired" in expired.json()["message"]
    finally:
        emu.set_token_seconds(3600)


def test_expire_tokens_control_and_forged_tokens(emu):
    token = emu.id_token()
    emu.expire_tokens()
    assert models(emu, {"Authorization": f"Bearer {token}"}).status_code == 401
    fresh = emu.id_token()
    assert models(emu, {"Authorization": f"Bearer {fresh}"}).status_code == 200
    head, payload, sig = fresh.split(".")
    forged = models(emu, {"Authorization": f"Bearer {head}.{payload}.{sig[::-1]}"})
    assert forged.status_code == 401 and "signature" in forged.json()["message"]
    assert models(emu, {"Authorization": "Bearer not-a-jwt"}).status_code == 401


def test_unknown_workspace_is_404_after_auth(emu):
    other = "00000000-0000-7000-8000-000000000000"
    answer = httpx.get(emu.base_url + Paths.models(other), headers=emu.headers())
    assert answer.status_code == 404
    assert other in answer.json()["message"]
    assert httpx.get(emu.base_url + Paths.models(other)).status_code == 401


def test_langfuse_basic_auth(emu):
    url = emu.base_url + "/api/public/traces"
    assert httpx.get(url, auth=emu.langfuse_auth).status_code == 200
    assert httpx.get(url, auth=(emu.langfuse_public_key, "sk-lf-wrong")).status_code == 401
    assert httpx.get(url).status_code == 401
    assert httpx.get(emu.base_url + "/api/public/health").json()["status"] == "OK"


def test_handle_repr_hides_secrets(emu):
    text = repr(emu)
    assert emu.base_url in text
    for secret in (emu.api_key, emu.password, emu.langfuse_secret_key):
        assert secret not in text
