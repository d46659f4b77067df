"""A handle on a running emulator: start it as a subprocess, reach it, drive its control API.

Used by the pytest plugin (:mod:`gip_airflow_emulator.pytest_plugin`) and the demo; needs no
pytest. Only the standard library and httpx are imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from gip_airflow_emulator import defaults

if TYPE_CHECKING:
    from collections.abc import Sequence

TERMINAL = frozenset({"DONE", "FAILED", "ERROR", "CANCELLED"})


@dataclass
class GipEmulator:
    """A running emulator: where it is, who to log in as, and its control API as methods.

    Secrets (API key, password, Langfuse secret key) are kept out of ``repr``.
    """

    base_url: str
    workspace_id: str = defaults.DEFAULT_WORKSPACE_ID
    api_key: str = field(default=defaults.DEFAULT_API_KEY, repr=False)
    cognito_client_id: str = defaults.DEFAULT_COGNITO_CLIENT_ID
    username: str = defaults.DEFAULT_USERNAME
    password: str = field(default=defaults.DEFAULT_PASSWORD, repr=False)
    langfuse_public_key: str = defaults.DEFAULT_LANGFUSE_PUBLIC_KEY
    langfuse_secret_key: str = field(default=defaults.DEFAULT_LANGFUSE_SECRET_KEY, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)

    # -- where things are --------------------------------------------------------------------

    @property
    def cognito_endpoint(self) -> str:
        return self.base_url + defaults.COGNITO_PATH

    @property
    def langfuse_base_url(self) -> str:
        """Base URL of the emulated Langfuse (register it as a GIP credential's ``base_url``)."""
        return self.base_url

    @property
    def langfuse_auth(self) -> tuple[str, str]:
        return self.langfuse_public_key, self.langfuse_secret_key

    def headers(self, auth: str = "api_key") -> dict[str, str]:
        """Request headers for the GIP API: ``api_key`` or ``cognito`` (logs in for an IdToken)."""
        if auth == "cognito":
            return {"Authorization": f"Bearer {self.id_token()}"}
        return {"X-Gipc-Api-Key": self.api_key}

    def id_token(self) -> str:
        """A fresh Cognito IdToken for the default user."""
        answer = self._control().post(
            self.cognito_endpoint,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
            },
            content=json.dumps(
                {
                    "AuthParameters": {"USERNAME": self.username, "PASSWORD": self.password},
                    "AuthFlow": "USER_PASSWORD_AUTH",
                    "ClientId": self.cognito_client_id,
                }
            ),
        )
        answer.raise_for_status()
        return str(answer.json()["AuthenticationResult"]["IdToken"])

    def client(self, auth: str = "api_key", **kwargs: Any) -> httpx.Client:
        """An httpx client on the emulator with GIP auth headers (close it, or use ``with``)."""
        return httpx.Client(base_url=self.base_url, headers=self.headers(auth), **kwargs)

    def ws_path(self, suffix: str = "") -> str:
        """``/api/workspaces/{workspace_id}`` + ``suffix``."""
        return f"/api/workspaces/{self.workspace_id}{suffix}"

    # -- Airflow connection ------------------------------------------------------------------

    def _conn(self, extra: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            k: extra.pop(k) for k in ("host", "login", "password", "port", "schema") if k in extra
        }
        auth_type = extra.get("auth_type", "api_key")
        extras = {
            "workspace_id": self.workspace_id,
            "auth_type": auth_type,
            "cognito_endpoint": self.cognito_endpoint,
            "cognito_client_id": self.cognito_client_id,
            "console_url": self.base_url,
            **extra,
        }
        conn: dict[str, Any] = {"conn_type": "gip", "host": self.base_url, "extra": extras}
        if auth_type == "cognito":
            conn["login"] = self.username
            conn["password"] = self.password
        else:
            conn["password"] = self.api_key
        conn.update(fields)
        return conn

    def conn_json(self, **extra: Any) -> str:
        """A ``gip`` Airflow connection in JSON form (for ``AIRFLOW_CONN_*``).

        Keyword arguments become extras (``auth_type="cognito"``, ``timeout=5``, ...), except
        ``host``, ``login``, ``password``, ``port``, ``schema``, which set those fields.
        """
        return json.dumps(self._conn(dict(extra)))

    def conn_uri(self, **extra: Any) -> str:
        """The same connection in Airflow's URI form."""
        from airflow.sdk import Connection

        conn = self._conn(dict(extra))
        return str(
            Connection(
                conn_id="gip_default",
                conn_type=conn["conn_type"],
                host=conn.get("host"),
                login=conn.get("login"),
                password=conn.get("password"),
                port=conn.get("port"),
                schema=conn.get("schema"),
                extra=json.dumps(conn["extra"]),
            ).get_uri()
        )

    # -- control API -------------------------------------------------------------------------

    def _control(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=60.0)
        return self._http

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self._control().request(method, defaults.CONTROL_PREFIX + path, **kwargs)
        if answer.status_code >= 400:
            raise RuntimeError(
                f"emulator control {method} {path} answered {answer.status_code}: {answer.text}"
            )
        return answer.json()

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault configuration (kinds not named are off).

        Example: ``set_faults(error_rate=1.0, max_faults=2)`` = the next two GIP calls answer 5xx.

        Fields: error_rate, error_statuses, rate_limit_rate, retry_after, retry_after_format,
        latency_ms, drop_rate, drop_after_bytes, path_pattern, max_faults, run_failure_rate, seed.
        """
        return self._call("POST", "/faults", json=faults)

    def update_faults(self, **changes: Any) -> dict[str, Any]:
        """Change some fault settings, keep the rest."""
        return self._call("PATCH", "/faults", json=changes)

    def clear_faults(self) -> dict[str, Any]:
        return self._call("DELETE", "/faults")

    def degrade(
        self,
        *,
        model: str | None = None,
        fail_rate: float = 0.0,
        score_shift: float = 0.0,
        start: Any = "now",
        until: Any = None,
    ) -> list[dict[str, Any]]:
        """Make the judge regress for runs created from ``start`` (``now``, ISO-8601, epoch ms) on.

        ``model``: only runs judged by or re-generated with this model. ``fail_rate``: extra share of
        items that fail; ``score_shift``: added to the judged quality (0-1 units). Cleared by reset.
        """
        body = {
            "model": model,
            "fail_rate": fail_rate,
            "score_shift": score_shift,
            "from": start,
            "until": until,
        }
        return self._call("POST", "/degrade", json=body)["data"]

    def add_traces(self, per_day: int, days: int = 14, name: str | None = None) -> dict[str, Any]:
        """Add ``per_day`` traces in each of the last ``days`` days (seed trace copies; reset drops them)."""
        return self._call("POST", "/traces", json={"per_day": per_day, "days": days, "name": name})

    def remove_added_traces(self) -> None:
        self._call("DELETE", "/traces")

    def clear_degradations(self) -> None:
        self._call("DELETE", "/degrade")

    def reset(self) -> None:
        """Drop runs and objects clients created; restore start-up faults, run speed, tokens, stats."""
        self._call("POST", "/reset")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def runs(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """All runs (newest first) with experiment ids, display names and the emulator's bookkeeping."""
        params = {"experiment_id": experiment_id} if experiment_id else None
        return self._call("GET", "/runs", params=params)["data"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/runs/{run_id}")

    def wait_for_run(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll (the control API, not the GIP API) until the run's status is final; return it."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout}s")
            time.sleep(0.05)

    def synthetic_run(self, rows: int, row_bytes: int = 1024, **kwargs: Any) -> dict[str, Any]:
        """A DONE run whose CSV has ``rows`` rows of ~``row_bytes`` bytes, generated while streaming.

        The answer is the run plus ``download_path`` (relative to ``base_url``).
        """
        body = {"rows": rows, "row_bytes": row_bytes, **kwargs}
        return self._call("POST", "/synthetic-run", json=body)

    def create_dataset(self, name: str, count: int, **kwargs: Any) -> dict[str, Any]:
        """A Langfuse dataset of ``count`` generated items (made on demand; removed by reset)."""
        return self._call("POST", "/datasets", json={"name": name, "count": count, **kwargs})

    def set_run_speed(
        self,
        run_seconds: float | None = None,
        items_per_second: float | None = None,
        never_finish: bool | None = None,
    ) -> dict[str, Any]:
        """How long new runs take; ``never_finish=True`` keeps every run from reaching a final status."""
        body = {
            k: v
            for k, v in {
                "run_seconds": run_seconds,
                "items_per_second": items_per_second,
                "never_finish": never_finish,
            }.items()
            if v is not None
        }
        return self._call("POST", "/run-behaviour", json=body)

    def force_run_status(self, run_id: str, status: str | None, error: str | None = None) -> dict[str, Any]:
        """Show ``status`` (any string) for a run from now on; ``None`` goes back to the real status."""
        return self._call("POST", f"/runs/{run_id}/status", json={"status": status, "error": error})

    def set_token_seconds(self, seconds: int) -> dict[str, Any]:
        """Lifetime of Cognito tokens issued from now on."""
        return self._call("POST", "/auth", json={"token_seconds": seconds})

    def expire_tokens(self) -> None:
        """Make every Cognito token issued so far count as expired (401)."""
        self._call("POST", "/auth", json={"expire_tokens": True})

    def firings(self, config_id: str, start: Any, end: Any) -> list[str]:
        """ISO instants in ``[start, end)`` at which an auto evaluation config fires."""
        answer = self._call(
            "GET", f"/auto-evaluations/{config_id}/firings", params={"start": start, "end": end}
        )
        return answer["firings"]

    def schedule_firings(self, schedule: str, timezone: str, start: Any, end: Any) -> list[str]:
        """ISO instants in ``[start, end)`` of any cron schedule in a time zone."""
        params = {"schedule": schedule, "timezone": timezone, "start": start, "end": end}
        return self._call("GET", "/firings", params=params)["firings"]

    def scheduler_tick(self, now: Any = None) -> list[dict[str, Any]]:
        """Fire auto evaluations due up to ``now`` (ISO, epoch ms or ``now+P1D``); the runs created."""
        return self._call("POST", "/scheduler/tick", json={"now": now})["runs"]

    def rewind_schedules(self, seconds: float, config_id: str | None = None) -> None:
        """Move auto evaluation schedule marks back; the emulator's scheduler loop fires what is now due."""
        self._call("POST", "/scheduler/rewind", json={"seconds": seconds, "config_id": config_id})

    def preview_targets(self, experiment_id: str, at: Any = None) -> list[str]:
        """Target ids a run of the experiment would select if it executed at ``at`` (default now)."""
        answer = self._call("POST", "/preview-targets", json={"experiment_id": experiment_id, "at": at})
        return answer["target_ids"]

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.log_path is not None:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def output(self) -> str:
        """What the emulator process printed so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


def _flag_value(args: Sequence[str], flag: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return default


def start_emulator(*args: str, timeout: float = 30.0) -> GipEmulator:
    """Start ``python -m gip_airflow_emulator`` on a free loopback port with extra CLI ``args``.

    Identities passed in ``args`` (``--api-key`` etc.) are reflected in the returned handle.
    Stop it with :meth:`GipEmulator.stop`.
    """
    workdir = Path(tempfile.mkdtemp(prefix="gip-emulator-fixture-"))
    port_file = workdir / "port"
    log_path = workdir / "emulator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gip_airflow_emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    handle = GipEmulator(
        base_url="",
        workspace_id=_flag_value(args, "--workspace-id", defaults.DEFAULT_WORKSPACE_ID),
        api_key=_flag_value(args, "--api-key", defaults.DEFAULT_API_KEY),
        cognito_client_id=_flag_value(args, "--cognito-client-id", defaults.DEFAULT_COGNITO_CLIENT_ID),
        username=_flag_value(args, "--username", defaults.DEFAULT_USERNAME),
        password=_flag_value(args, "--password", defaults.DEFAULT_PASSWORD),
        langfuse_public_key=_flag_value(args, "--langfuse-public-key", defaults.DEFAULT_LANGFUSE_PUBLIC_KEY),
        langfuse_secret_key=_flag_value(args, "--langfuse-secret-key", defaults.DEFAULT_LANGFUSE_SECRET_KEY),
        process=proc,
        log_path=log_path,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the GIP emulator exited with code {proc.returncode}:\n{handle.output()}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                handle.base_url = f"http://127.0.0.1:{int(text)}"
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        httpx.get(
                            handle.base_url + defaults.CONTROL_PREFIX + "/health", timeout=2
                        ).status_code
                        == 200
                    ):
                        return handle
            if time.monotonic() > deadline:
                raise RuntimeError(f"the GIP emulator did not become ready in {timeout}s:\n{handle.output()}")
            time.sleep(0.05)
    except BaseException:
        handle.stop()
        raise
    finally:
        port_file.unlink(missing_ok=True)


def attach_emulator(base_url: str) -> GipEmulator:
    """A handle on an emulator started elsewhere (default identities), e.g. ``gip-emulator --port 8089``."""
    handle = GipEmulator(base_url=base_url.rstrip("/"))
    handle.info()
    return handle
