"""Emulator settings: identities, run behaviour and fault injection (start-up values and live values).

The same models validate the CLI flags and the bodies of the control endpoints, so a typo in a
test's ``set_faults(...)`` fails loudly instead of silently injecting nothing.
"""

from __future__ import annotations

import re
from pathlib import Path  # noqa: TC003 (pydantic needs it at runtime)

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gip_airflow_emulator import defaults


class FaultConfig(BaseModel):
    """What goes wrong, and how often. Everything is off by default.

    Each request whose path matches ``path_pattern`` draws one number from a generator seeded with
    ``seed``: below ``error_rate`` it is answered 5xx, in the next ``rate_limit_rate`` slice 429,
    in the next ``drop_rate`` slice its connection is cut after ``drop_after_bytes`` body bytes
    (or half of a shorter body). ``latency_ms`` delays every matching request. ``max_faults``
    bounds how many requests are faulted in total (``None`` = no bound), which makes "the first
    two calls fail, then it works" tests exact. ``run_failure_rate`` makes runs end FAILED.
    """

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503])
    rate_limit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    retry_after: int = Field(default=1, ge=0)
    retry_after_format: str = Field(default="seconds", pattern="^(seconds|http-date)$")
    latency_ms: float = Field(default=0.0, ge=0.0, le=600_000)
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_after_bytes: int = Field(default=1024, ge=0)
    path_pattern: str = r"^/api/workspaces/"
    max_faults: int | None = Field(default=None, ge=0)
    run_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0

    @field_validator("path_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"{v!r} is not a valid regular expression: {exc}") from None
        return v

    @field_validator("error_statuses")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        if not v or any(not 500 <= s <= 599 for s in v):
            raise ValueError("give one or more status codes between 500 and 599")
        return v

    @property
    def any_request_fault(self) -> bool:
        """Whether any per-request fault is on (the middleware's fast path skips the rest)."""
        return bool(self.error_rate or self.rate_limit_rate or self.drop_rate or self.latency_ms)


class RunBehaviour(BaseModel):
    """How long runs take. A run lasts ``run_seconds`` plus ``items / items_per_second`` (0 = no
    per-item time); while ``never_finish`` is set no run reaches a final status (timeout tests)."""

    model_config = ConfigDict(extra="forbid")

    run_seconds: float = Field(default=defaults.DEFAULT_RUN_SECONDS, ge=0.0, le=86_400)
    items_per_second: float = Field(default=0.0, ge=0.0)
    never_finish: bool = False


class AuthBehaviour(BaseModel):
    """Token lifetime of the emulated Cognito."""

    model_config = ConfigDict(extra="forbid")

    token_seconds: int = Field(default=defaults.DEFAULT_TOKEN_SECONDS, ge=1)


class EmulatorSettings(BaseModel):
    """Everything fixed at start-up. Secrets are :class:`SecretStr` so they never show in a repr."""

    model_config = ConfigDict(extra="forbid")

    host: str = defaults.DEFAULT_HOST
    port: int = defaults.DEFAULT_PORT
    workspace_id: str = defaults.DEFAULT_WORKSPACE_ID
    api_key: SecretStr = SecretStr(defaults.DEFAULT_API_KEY)
    username: str = defaults.DEFAULT_USERNAME
    password: SecretStr = SecretStr(defaults.DEFAULT_PASSWORD)
    cognito_client_id: str = defaults.DEFAULT_COGNITO_CLIENT_ID
    langfuse_public_key: str = defaults.DEFAULT_LANGFUSE_PUBLIC_KEY
    langfuse_secret_key: SecretStr = SecretStr(defaults.DEFAULT_LANGFUSE_SECRET_KEY)
    langfuse_project_id: str = defaults.DEFAULT_LANGFUSE_PROJECT_ID
    seed_path: Path | None = None
    data_dir: Path | None = None
    auth: AuthBehaviour = Field(default_factory=AuthBehaviour)
    runs: RunBehaviour = Field(default_factory=RunBehaviour)
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @property
    def base_url(self) -> str:
        """The emulator's own URL (GIP API, Langfuse API and Cognito all live here)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
