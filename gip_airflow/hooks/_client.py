"""The HTTP transport both GIP hooks share: error mapping and the retry policy.

Reads are always retried; creating POSTs only when the request provably never reached GIP (connection
refused, connect timeout) or was rejected with 429 — a blindly retried POST could start a second paid
evaluation. TLS setup failures (untrusted certificate, https to a plain-http port) are never retried.
"""

from __future__ import annotations

import email.utils
import logging
import ssl
import time
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
from gip_airflow.hooks._auth import error_text, redirect_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from gip_airflow.hooks._config import GipConnectionConfig

log = logging.getLogger(__name__)

#: Upper bound for a server-requested ``Retry-After`` wait, so a bad header cannot park a task for hours.
MAX_RETRY_AFTER_SECONDS = 120.0

# ---------------------------------------------------------------------------------------------
# Errors and retries
# ---------------------------------------------------------------------------------------------


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


class RetryableStatus(GipApiError):
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
    if isinstance(exc, RetryableStatus):
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
                describe_failure(exc),
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
        detail = error_text(response, self.config.secrets())
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
            raise RetryableStatus(f"{where}: {detail}", retry_after=_retry_after(response), **kwargs)
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
            f"{describe_failure(exc)}. {advice}"
        )

    def _final(self, exc: GipApiError, attempts: int = 1, idempotent: bool = True) -> GipApiError:
        if isinstance(exc, RetryableStatus):
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


def describe_failure(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, GipApiError):
        return str(exc).split(": ", 1)[-1] if exc.http_status else str(exc)
    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, httpx.ConnectError) and "SSL" in text.upper():
        return f"TLS handshake failed ({text}); check the scheme and certificates (verify_ssl extra)"
    return f"{name}: {text}"
