"""Authentication and TLS for the GIP transport: API-key and Cognito auth, one shared TLS context.

Also the secret-free error text both the auth flow and the transport use for error answers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from gip_airflow import api
from gip_airflow.exceptions import GipAuthError

if TYPE_CHECKING:
    import ssl

    from pydantic import SecretStr

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------

_SSL_CONTEXTS: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}
_SSL_LOCK = threading.Lock()


def shared_ssl_context(verify: bool) -> ssl.SSLContext:
    """The process's TLS context for a ``verify_ssl`` setting, built once (as httpx builds it).

    Loading the CA bundle is slow and memory-hungry; one shared copy keeps trigger start-up off the
    triggerer's event loop and the bundle in memory once.
    """
    key = (verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _SSL_LOCK:
        context = _SSL_CONTEXTS.get(key)
        if context is None:
            context = _SSL_CONTEXTS[key] = httpx.create_ssl_context(verify=verify)
        return context


# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------


class ApiKeyAuth(httpx.Auth):
    """``X-Gipc-Api-Key`` header auth. [doc]"""

    def __init__(self, api_key: SecretStr):
        self._key = api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[api.API_KEY_HEADER] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=**********)"


_TOKENS: dict[tuple[str, str, str], tuple[str, float]] = {}
_TOKENS_LOCK = threading.Lock()


class CognitoAuth(httpx.Auth):
    """Cognito ``USER_PASSWORD_AUTH`` → ``Authorization: Bearer <IdToken>``. [doc]

    The IdToken is cached per process until shortly before it expires and renewed once on a 401.
    """

    def __init__(self, endpoint: str, client_id: str, username: str, password: SecretStr):
        self.endpoint = endpoint
        self._client_id = client_id
        self._username = username
        self._password = password
        self._key = (endpoint, client_id, username)

    def __repr__(self) -> str:
        return f"CognitoAuth(endpoint={self.endpoint!r}, username={self._username!r}, password=**********)"

    def _cached(self) -> str | None:
        with _TOKENS_LOCK:
            token, valid_until = _TOKENS.get(self._key, ("", 0.0))
        return token if token and time.time() < valid_until else None

    def _forget(self) -> None:
        with _TOKENS_LOCK:
            _TOKENS.pop(self._key, None)

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.endpoint,
            headers={"Content-Type": api.COGNITO_CONTENT_TYPE, "X-Amz-Target": api.COGNITO_TARGET},
            json={
                "AuthParameters": {"USERNAME": self._username, "PASSWORD": self._password.get_secret_value()},
                "AuthFlow": "USER_PASSWORD_AUTH",
                "ClientId": self._client_id,
            },
        )

    def _store(self, response: httpx.Response) -> str:
        if response.status_code >= 400:
            detail = error_text(response, [self._password.get_secret_value()])
            raise GipAuthError(
                f"Cognito login for user {self._username!r} failed (HTTP {response.status_code}): "
                f"{detail.rstrip('.')}. "
                "Check the connection's login, password and cognito_client_id.",
                http_status=response.status_code,
                method="POST",
                path=self.endpoint,
            )
        try:
            result = response.json()["AuthenticationResult"]
            token = str(result["IdToken"])
        except (ValueError, KeyError, TypeError):
            raise GipAuthError(
                "Cognito answered without AuthenticationResult.IdToken; check cognito_endpoint and the auth "
                "flow (USER_PASSWORD_AUTH must be enabled for the client id)",
                http_status=response.status_code,
            ) from None
        lifetime = float(result.get("ExpiresIn") or api.DEFAULT_TOKEN_LIFETIME_SECONDS)
        valid_until = time.time() + lifetime - min(60.0, lifetime / 5)
        with _TOKENS_LOCK:
            _TOKENS[self._key] = (token, valid_until)
        log.info("Obtained a GIP console token from Cognito for %s (valid %.0f s)", self._username, lifetime)
        return token

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        if token is None:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            log.info("GIP rejected the cached token (HTTP 401); logging in to Cognito again")
            self._forget()
            token = self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    # httpx reads intermediate bodies only after the flow moves on; the token answer is needed at once.
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing.url == httpx.URL(self.endpoint):
                response.read()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing.url == httpx.URL(self.endpoint):
                await response.aread()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return


# ---------------------------------------------------------------------------------------------
# Error text
# ---------------------------------------------------------------------------------------------


def error_text(response: httpx.Response, secrets: list[str]) -> str:
    """A short, secret-free description of an error answer (``message``/``detail`` when JSON)."""
    try:
        body: Any = response.json()
    except Exception:
        body = response.text
    text: str
    if isinstance(body, Mapping):
        detail = body.get("message") or body.get("detail") or body.get("error") or body
        if isinstance(detail, list):
            # FastAPI-style validation details: keep the field path and message, never the echoed input.
            text = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}"
                if isinstance(d, Mapping)
                else str(d)
                for d in detail
            )
        else:
            text = str(detail)
    else:
        text = str(body)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text[:500] + ("…" if len(text) > 500 else "") or response.reason_phrase
