"""An AWS Cognito ``InitiateAuth`` look-alike at ``POST /_cognito/`` (USER_PASSWORD_AUTH, REFRESH_TOKEN_AUTH).

Errors have Cognito's shape: status 400 and ``{"__type": "NotAuthorizedException", "message": ...}``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gip_airflow.api import COGNITO_CONTENT_TYPE, COGNITO_TARGET
from gip_airflow_emulator.defaults import COGNITO_PATH
from gip_airflow_emulator.http import BodyTooDeep, emulator_of, parse_json
from gip_airflow_emulator.state import TokenError

if TYPE_CHECKING:
    from gip_airflow_emulator.state import Emulator

router = APIRouter()

#: Lifetime of an emulated refresh token (Cognito's default is 30 days).
REFRESH_TOKEN_SECONDS = 30 * 24 * 3600
#: Deepest JSON nesting accepted in a request body; Cognito's bodies are two levels deep.
MAX_BODY_DEPTH = 32


def _error(kind: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"__type": kind, "message": message}, status_code=status, media_type=COGNITO_CONTENT_TYPE
    )


def _result(emu: Emulator, username: str, refresh: bool) -> JSONResponse:
    seconds = emu.auth.token_seconds
    result: dict[str, Any] = {
        "AccessToken": emu.tokens.issue(username, "access", seconds),
        "ExpiresIn": seconds,
        "IdToken": emu.tokens.issue(username, "id", seconds),
        "TokenType": "Bearer",
    }
    if not refresh:
        result["RefreshToken"] = emu.tokens.issue(username, "refresh", REFRESH_TOKEN_SECONDS)
    emu.stats.tokens_issued += 1
    return JSONResponse(
        {"AuthenticationResult": result, "ChallengeParameters": {}}, media_type=COGNITO_CONTENT_TYPE
    )


@router.post(COGNITO_PATH)
@router.post(COGNITO_PATH.rstrip("/"), include_in_schema=False)
async def initiate_auth(request: Request) -> JSONResponse:
    emu = emulator_of(request)
    target = request.headers.get("x-amz-target", "")
    if target != COGNITO_TARGET:
        return _error(
            "UnknownOperationException", f"Unsupported X-Amz-Target {target!r}; use {COGNITO_TARGET}"
        )
    try:
        body = parse_json(await request.body(), MAX_BODY_DEPTH)
    except BodyTooDeep as exc:
        return _error("SerializationException", str(exc))
    except ValueError:
        return _error("SerializationException", "The request body is not valid JSON")
    if not isinstance(body, dict):
        return _error("SerializationException", "The request body must be a JSON object")
    client_id = body.get("ClientId")
    if client_id != emu.settings.cognito_client_id:
        return _error("ResourceNotFoundException", f"User pool client {client_id} does not exist.")
    params = body.get("AuthParameters")
    if not isinstance(params, dict):
        return _error("InvalidParameterException", "Missing required parameter AuthParameters")
    flow = body.get("AuthFlow")
    if flow == "USER_PASSWORD_AUTH":
        username, password = params.get("USERNAME"), params.get("PASSWORD")
        if not isinstance(username, str) or not isinstance(password, str):
            return _error("InvalidParameterException", "Missing required parameter USERNAME or PASSWORD")
        good_user = hmac.compare_digest(username.encode(), emu.settings.username.encode())
        good_pass = hmac.compare_digest(password.encode(), emu.settings.password.get_secret_value().encode())
        if not (good_user and good_pass):
            return _error("NotAuthorizedException", "Incorrect username or password.")
        return _result(emu, username, refresh=False)
    if flow == "REFRESH_TOKEN_AUTH":
        token = params.get("REFRESH_TOKEN")
        try:  # signed by this emulator, of kind "refresh", not expired or revoked
            claims = emu.tokens.verify(token, "refresh") if isinstance(token, str) else None
        except TokenError:
            claims = None
        if not claims or claims.get("username") != emu.settings.username:
            return _error("NotAuthorizedException", "Invalid Refresh Token")
        return _result(emu, str(claims["username"]), refresh=True)
    return _error(
        "InvalidParameterException",
        f"AuthFlow {flow!r} is not supported by the emulator; use USER_PASSWORD_AUTH or REFRESH_TOKEN_AUTH",
    )
