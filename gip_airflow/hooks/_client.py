"""The HTTP transport both GIP hooks share: auth (API key, Cognito JWT), TLS context, error mapping, retries.

Reads are always retried; creating POSTs only when the request provably never reached GIP (connection
refused, connect timeout) or was rejected with 429 — a blindly retried POST could start a second paid
evaluation. TLS setup failures (untrusted certificate, https to a plain-http port) are never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import tenacity

from gip_airflow import api
from gip_airflow.exceptions import (
    GipApiError,
    GipAuthError,
    GipBadResponseError,
    GipConnectionError,
    GipInvalidRequestError,
    GipNotFoundError,
)

if TYPE_CHECKING:
    from pydantic import SecretStr

    from gip_airflow.hooks.gip import GipConnectionConfig

log = logging.getLogger(__name__)

#: Upper bound for a server-requested ``Retry-After`` wait, so a bad header cannot park a task for hours.
MAX_RETRY_AFTER_SECONDS = 120.0

# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------

_SSL_CONTEXTS: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}
_SSL_LOCK = threading.Lock()


def shared_ssl_context(verify: bool) -> ssl.SSLContext:
    """The process's TLS context for a ``verify_ssl`` setting, built once (as httpx builds it).

    Loading the CA bundle costs ~0.1 s of CPU and ~0.8 MB per copy. A client per hook used to build its
    own: in the triggerer, every GIP trigger then blocked the event loop while starting (150 waits
    starting together stalled it for seconds) and held its own copy of the bundle.
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
            detail = _error_text(response, self.secrets())
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
# Errors and retries
# ---------------------------------------------------------------------------------------------


def _error_text(response: httpx.Response, secrets: list[str]) -> str:
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class _RetryableStatus(GipApiError):
    """Internal: an answer worth retrying (429/5xx); carries the server's ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: float | None, **kwargs: Any):
        super().__init__(message, retry_after=retry_after, **kwargs)


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: TLS errors that can come from a network cut during the handshake (worth retrying, unlike the rest).
_TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
_NOT_REPEATED = (
    "not repeated: GIP may have acted on it, and a repeated create could start a second evaluation "
    "(the operators look up what an earlier try created before creating again)"
)


def _is_tls_failure(exc: BaseException | None) -> bool:
    """A TLS handshake refused by the server or by our trust store: a setup problem, not a blip."""
    for _ in range(10):  # the cause chain of an httpx error is short; guard against cycles anyway
        if exc is None:
            return False
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, _TLS_TRANSIENT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_retryable(exc: BaseException, idempotent: bool) -> bool:
    if _is_tls_failure(exc):
        return False  # certificates and http/https mix-ups do not heal by retrying
    if isinstance(exc, _NOT_SENT):
        return True
    if isinstance(exc, _RetryableStatus):
        return idempotent or exc.http_status == 429
    return idempotent and isinstance(exc, httpx.TransportError)


# ---------------------------------------------------------------------------------------------
# Shared request logic
# ---------------------------------------------------------------------------------------------


class GipClientMixin:
    """Request building, error mapping and retry policy shared by the sync and async hooks."""

    config: GipConnectionConfig
    gip_conn_id: str

    def _path(self, kind: Callable[..., str], *ids: str) -> str:
        """The request path; an id that is not one safe path segment fails here, before any request."""
        try:
            return kind(self.config.workspace_id, *ids)
        except api.GipRequestError as exc:
            raise GipInvalidRequestError(str(exc)) from None

    def _retrying_kwargs(self, method: str, path: str, idempotent: bool) -> dict[str, Any]:
        backoff = tenacity.wait_random_exponential(multiplier=self.config.retry_backoff, max=30)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            server_wait = getattr(exc, "retry_after", None)
            return float(server_wait) if server_wait is not None else float(backoff(state))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait_s = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "GIP %s %s: %s; retry %d/%d in %.1f s",
                method,
                path,
                _describe(exc),
                state.attempt_number,
                self.config.max_retries,
                wait_s,
            )

        return {
            "stop": tenacity.stop_after_attempt(self.config.max_retries + 1),
            "wait": wait,
            "retry": tenacity.retry_if_exception(lambda e: _is_retryable(e, idempotent)),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def _check(self, response: httpx.Response, method: str, path: str) -> None:
        """Raise the matching provider error for an error answer; secrets are scrubbed from the text."""
        status = response.status_code
        if status < 300:
            return
        where = f"GIP {method} {path} answered HTTP {status}"
        kwargs: dict[str, Any] = {"http_status": status, "method": method, "path": path}
        if status < 400:
            raise GipApiError(f"{where}: {redirect_text(response, self.config.secrets())}", **kwargs)
        detail = _error_text(response, self.config.secrets())
        if status in (401, 403):
            what = "API key" if self.config.auth_type == "api_key" else "Cognito token"
            raise GipAuthError(
                f"{where}: {detail}. GIP rejected the {what} for workspace {self.config.workspace_id}; "
                f"check connection {self.gip_conn_id!r}.",
                **kwargs,
            )
        if status == 404:
            raise GipNotFoundError(f"{where}: {detail}. Check the ids and the workspace_id.", **kwargs)
        if status == 429 or status >= 500:
            raise _RetryableStatus(f"{where}: {detail}", retry_after=_retry_after(response), **kwargs)
        raise GipApiError(f"{where}: {detail}", **kwargs)

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        """The answer's JSON (None for an empty body); :class:`GipBadResponseError` when it is not JSON."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise GipBadResponseError(
                f"GIP {method} {path} answered HTTP {response.status_code} with non-JSON content "
                f"({response.headers.get('content-type') or 'no content type'})",
                http_status=response.status_code,
                method=method,
                path=path,
            ) from None

    def _unreachable(
        self, exc: httpx.TransportError, method: str, path: str, attempts: int, idempotent: bool = True
    ) -> GipConnectionError:
        """One message for a transport failure: what failed, how often it was tried, what to check."""
        where = f"connection {self.gip_conn_id!r}"
        if _is_tls_failure(exc):
            advice = f"Not retried: a TLS setup problem does not go away by itself. Check {where}."
        elif not idempotent and not isinstance(exc, _NOT_SENT):
            advice = f"The connection broke after the request was sent; it was {_NOT_REPEATED}."
        else:
            advice = (
                f"Check the host, port and scheme (http/https) of {where}, and that GIP is reachable "
                "from this worker."
            )
        return GipConnectionError(
            f"Cannot complete GIP {method} {path} at {self.config.base_url} after {_attempts(attempts)}: "
            f"{_describe(exc)}. {advice}"
        )

    def _final(self, exc: GipApiError, attempts: int = 1, idempotent: bool = True) -> GipApiError:
        if isinstance(exc, _RetryableStatus):
            if idempotent or exc.http_status == 429:
                note = f" (after {_attempts(attempts)})"
            else:
                note = f" ({_NOT_REPEATED})"
            return GipApiError(
                str(exc) + note,
                http_status=exc.http_status,
                method=exc.method,
                path=exc.path,
                retry_after=exc.retry_after,
            )
        return exc

    def console_run_url(self, experiment_id: str, run_id: str) -> str | None:
        """[assumed] Link to a run in the GIP web console, when the connection has ``console_url``."""
        if not self.config.console_url:
            return None
        return (
            f"{self.config.console_url.rstrip('/')}/workspaces/{self.config.workspace_id}"
            f"/evals/experiments/{experiment_id}/runs/{run_id}"
        )


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"


def tried(retrying: tenacity.BaseRetrying | None) -> int:
    """How many attempts a tenacity loop made (its statistics), at least one; one without a loop."""
    if retrying is None:
        return 1
    return max(int(retrying.statistics.get("attempt_number", 1)), 1)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, GipApiError):
        return str(exc).split(": ", 1)[-1] if exc.http_status else str(exc)
    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, httpx.ConnectError) and "SSL" in text.upper():
        return f"TLS handshake failed ({text}); check the scheme and certificates (verify_ssl extra)"
    return f"{name}: {text}"
