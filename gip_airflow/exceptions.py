"""Errors raised by the GIP provider. Messages never contain API keys, passwords or tokens."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class GipError(AirflowException):
    """Base class of every GIP provider error."""


class GipInvalidRequestError(GipError, AirflowFailException):
    """A request cannot be sent as given (e.g. an id that is not one URL path segment); no retry helps."""


class GipEndpointDisabledError(GipError, AirflowFailException):
    """An [assumed] (undocumented) endpoint was needed, but the connection sets ``list_endpoints: false``."""


class GipApiError(GipError):
    """GIP answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.http_status = http_status
        self.method = method
        self.path = path
        #: Seconds the server asked to wait (``Retry-After`` of a 429/503), for callers that poll again.
        self.retry_after = retry_after


class GipBadResponseError(GipApiError):
    """GIP answered with a success status but a body that is not JSON (e.g. a proxy's HTML page).

    Waits treat it as transient, in every mode: a later poll may get the real answer.
    """


class GipAuthError(GipApiError, AirflowFailException):
    """GIP (or Cognito) rejected the credentials; retrying the task will not help until they are fixed."""


class GipNotFoundError(GipApiError):
    """The workspace, experiment, evaluator or run does not exist (HTTP 404)."""


class GipConnectionError(GipError):
    """GIP could not be reached (DNS, refused connection, TLS, timeout) after all retries."""


class GipRunFailedError(GipError):
    """An experiment run ended in a failure status."""

    def __init__(self, message: str, *, run_id: str, status: str | None, error: str | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.error = error


class GipRunTimeoutError(GipError):
    """An experiment run did not finish within the allowed time."""
