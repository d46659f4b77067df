"""Authentication and TLS for the GIP transport: API-key and Cognito auth, one shared TLS context.

Also the secret-free error text both the auth flow and the transport use for error answers, and the
scrubbing of secrets (in every escaped form) from any text built from an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Generator, Iterable, Mapping
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
#: The current and the previous IdToken per login, kept (even after a 401) so error texts can be scrubbed.
_RECENT_TOKENS: dict[tuple[str, str, str], list[str]] = {}
_TOKENS_LOCK = threading.Lock()


def recent_tokens(endpoint: str, client_id: str, username: str) -> list[str]:
    """The current and previous Cognito IdTokens of a login (secrets to scrub from any message)."""
    with _TOKENS_LOCK:
        return list(_RECENT_TOKENS.get((endpoint, client_id, username), ()))


def mask(secret: str) -> None:
    """Register a secret with Airflow's masker, so log lines that contain it show ``***``.

    On an event loop (the triggerer) only the local masker learns it: telling the supervisor there
    needs the async channel, and a blocking send could stall the loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with contextlib.suppress(Exception):
            from airflow.sdk.log import mask_secret

            mask_secret(secret)
        return
    with contextlib.suppress(Exception):
        from airflow.sdk._shared.secrets_masker import mask_secret as mask_locally

        mask_locally(secret)


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

    def secrets(self) -> list[str]:
        """The password and the current and previous IdToken: what no message may contain."""
        return [self._password.get_secret_value(), *recent_tokens(*self._key)]

    def _store(self, response: httpx.Response) -> str:
        if 300 <= response.status_code < 400:
            raise GipAuthError(
                f"Cognito login at {self.endpoint} answered HTTP {response.status_code}: "
                + redirect_text(response, self.secrets(), "the connection's cognito_endpoint extra"),
                http_status=response.status_code,
                method="POST",
                path=self.endpoint,
            )
        if response.status_code >= 400:
            detail = error_text(response, self.secrets())
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
                method="POST",
                path=self.endpoint,
            ) from None
        lifetime = float(result.get("ExpiresIn") or api.DEFAULT_TOKEN_LIFETIME_SECONDS)
        valid_until = time.time() + lifetime - min(60.0, lifetime / 5)
        mask(token)
        with _TOKENS_LOCK:
            _TOKENS[self._key] = (token, valid_until)
            recent = _RECENT_TOKENS.setdefault(self._key, [])
            if token not in recent:
                recent.append(token)
                del recent[:-2]
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
    text = " ".join(scrub(text, secrets).split())
    return text[:500] + ("…" if len(text) > 500 else "") or response.reason_phrase


def _secret_forms(secret: str) -> set[str]:
    """A secret as it may appear in a built text: plain, JSON-escaped, repr-escaped, and both nested."""
    as_json = json.dumps(secret)[1:-1]
    forms = {secret, as_json, json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms |= {repr(form)[1:-1] for form in list(forms)}
    forms.add(secret.encode("unicode_escape").decode("ascii"))
    return {form for form in forms if form}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, in every escaped form, replaced by ``***`` (longest forms first)."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= _secret_forms(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def redirect_text(
    response: httpx.Response, secrets: list[str], setting: str = "the connection's host"
) -> str:
    """Why a 3xx is an error, naming its target: redirects are never followed (httpx would carry the
    ``X-Gipc-Api-Key`` header to another origin; it strips only ``Authorization``)."""
    target = scrub(response.headers.get("Location", ""), secrets).strip() or "(no Location header)"
    return (
        f"a redirect to {target}, which is not followed: the request carries the GIP credentials. "
        f"If the service moved, set {setting} to its new URL"
    )
