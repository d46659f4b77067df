"""In-memory state of one emulator: the Langfuse project, GIP objects, runs, tokens, faults, stats.

Everything lives on one asyncio event loop, so handlers mutate plain dicts without locks (they
never await in the middle of a change). Objects loaded from the seed are remembered so that
``POST /_emulator/reset`` can drop exactly what clients created.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gip_airflow.api import RunStatus
from gip_airflow_emulator.seed import SeedData, iso_ms
from gip_airflow_emulator.synthetic import SyntheticItems

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from gip_airflow_emulator.judge import Degradation
    from gip_airflow_emulator.settings import EmulatorSettings, FaultConfig


def now_ms() -> int:
    return int(time.time() * 1000)


class IdFactory:
    """UUIDv7-style ids: 48-bit ms timestamp, version 7, a per-ms sequence, random tail.

    Ids sort in creation order, which is how list endpoints order "newest first".
    """

    def __init__(self) -> None:
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            ms = now_ms()
            if ms <= self._last_ms:
                ms = self._last_ms
                self._seq += 1
                if self._seq > 0xFFF:
                    ms, self._seq = ms + 1, 0
            else:
                self._seq = 0
            self._last_ms = ms
            tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
            value = (ms << 80) | (0x7 << 76) | (self._seq << 64) | (0b10 << 62) | tail
        return str(uuid.UUID(int=value))


# ---------------------------------------------------------------------------------------------
# Langfuse project
# ---------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    record: dict[str, Any]
    items: Sequence[dict[str, Any]]


class LangfuseProject:
    """The Langfuse data served under ``/api/public``: seeded records plus scores written by clients."""

    def __init__(self, seed: SeedData, project_id: str, ids: IdFactory) -> None:
        self.project_id = project_id
        self.traces: list[dict[str, Any]] = sorted(
            seed.traces, key=lambda t: t["_timestamp_ms"], reverse=True
        )
        self.trace_by_id = {t["id"]: t for t in self.traces}
        self.observations: list[dict[str, Any]] = sorted(
            seed.observations, key=lambda o: o["_startTime_ms"], reverse=True
        )
        self.observation_by_id = {o["id"]: o for o in self.observations}
        self.observation_ids_by_trace: dict[str, list[str]] = {}
        for obs in sorted(self.observations, key=lambda o: o["_startTime_ms"]):
            if obs.get("traceId"):
                self.observation_ids_by_trace.setdefault(obs["traceId"], []).append(obs["id"])
        self.datasets: dict[str, Dataset] = {}
        trace_ids = [t["id"] for t in self.traces]
        for raw in seed.datasets:
            ds_id = raw.get("id") or ids.new()
            stamp = raw["createdAt"]
            record = {
                "id": ds_id,
                "name": raw["name"],
                "description": raw.get("description"),
                "metadata": raw.get("metadata"),
                "projectId": project_id,
                "createdAt": stamp,
                "updatedAt": stamp,
            }
            items: Sequence[dict[str, Any]]
            if raw.get("synthetic") is not None:
                items = SyntheticItems(ds_id, raw["name"], raw["synthetic"], trace_ids, raw["_createdAt_ms"])
            else:
                items = [self._item(i, record) for i in raw["items"]]
            self.datasets[raw["name"]] = Dataset(record, items)
        self._seed_scores = [self._score_from_seed(s) for s in seed.scores]
        self.scores: dict[str, dict[str, Any]] = {}
        self.scores_by_trace: dict[str, list[str]] = {}
        self.runtime_datasets: set[str] = set()
        self.runtime_traces: set[str] = set()
        self.reset()

    @staticmethod
    def _item(raw: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
        item = {k: v for k, v in raw.items() if not k.startswith("_")}
        item.setdefault("updatedAt", item["createdAt"])
        item["datasetId"] = dataset["id"]
        item["datasetName"] = dataset["name"]
        return item

    def _score_from_seed(self, raw: dict[str, Any]) -> dict[str, Any]:
        score = {k: v for k, v in raw.items() if not k.startswith("_")}
        data_type = score.get("dataType") or ("CATEGORICAL" if isinstance(score["value"], str) else "NUMERIC")
        score["dataType"] = data_type
        if data_type == "CATEGORICAL":
            score.setdefault("stringValue", score["value"])
            score["value"] = None
        score.setdefault("observationId", None)
        score.setdefault("source", "API")
        score.setdefault("comment", None)
        score.setdefault("createdAt", score["timestamp"])
        score.setdefault("updatedAt", score["timestamp"])
        score["_ms"] = raw["_timestamp_ms"]
        return score

    def reset(self) -> None:
        """Back to the seed: client scores and runtime datasets go."""
        self.scores = {}
        self.scores_by_trace = {}
        for name in self.runtime_datasets:
            self.datasets.pop(name, None)
        self.runtime_datasets = set()
        self.remove_added_traces()
        for score in self._seed_scores:
            self.put_score(dict(score))

    def put_score(self, score: dict[str, Any]) -> None:
        """Insert or replace (same id = upsert, as Langfuse does)."""
        old = self.scores.pop(score["id"], None)
        if old is not None and old.get("traceId") in self.scores_by_trace:
            ids = self.scores_by_trace[old["traceId"]]
            if score["id"] in ids:
                ids.remove(score["id"])
        self.scores[score["id"]] = score
        self.scores_by_trace.setdefault(score["traceId"], []).append(score["id"])

    def add_traces(self, traces: list[dict[str, Any]]) -> None:
        """Add traces made through the control API (removed by reset)."""
        self.traces = sorted([*self.traces, *traces], key=lambda t: t["_timestamp_ms"], reverse=True)
        for trace in traces:
            self.trace_by_id[trace["id"]] = trace
            self.runtime_traces.add(trace["id"])

    def remove_added_traces(self) -> None:
        if self.runtime_traces:
            self.traces = [t for t in self.traces if t["id"] not in self.runtime_traces]
            for trace_id in self.runtime_traces:
                self.trace_by_id.pop(trace_id, None)
        self.runtime_traces = set()

    def add_synthetic_dataset(self, name: str, items: SyntheticItems, record: dict[str, Any]) -> None:
        self.datasets[name] = Dataset(record, items)
        self.runtime_datasets.add(name)


# ---------------------------------------------------------------------------------------------
# GIP objects and runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Usage:
    """Token usage in GIP's ``total_usage`` shape."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "web_grounding_requests": 0,
            "completion_tokens_details": {
                "audio_tokens": 0,
                "reasoning_tokens": 0,
                "text_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0, "text_tokens": 0},
        }


@dataclass
class Run:
    """An experiment run and everything the emulator tracks about its execution."""

    id: str
    workspace_id: str
    experiment_id: str
    evaluator_id: str
    display_name: str
    target_data_converter: dict[str, Any] | None
    metadata: dict[str, Any] | None
    created_ms: int
    #: The instant a relative_time_range is measured from (creation, or an auto evaluation's firing).
    executes_at_ms: int
    run_seconds: float
    items_per_second: float
    fail_with: str | None = None
    auto_evaluation_id: str | None = None
    status: str = RunStatus.PENDING
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    csv_path: Path | None = None
    synthetic: Any = None  # SyntheticCsv for synthetic runs
    override: tuple[str, str | None] | None = None
    target_count: int = 0
    items_failed: int = 0
    scores_synced: int = 0
    scores_skipped: int = 0
    updated_ms: int = 0
    processed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def visible_status(self) -> str:
        return self.override[0] if self.override else self.status

    @property
    def visible_error(self) -> str | None:
        return self.override[1] if self.override else self.error

    @property
    def result_path(self) -> str:
        return f"workspaces/{self.workspace_id}/experiment_runs/{self.id}.csv"

    def to_json(self) -> dict[str, Any]:
        """The run as GIP answers it."""
        status = self.visible_status
        return {
            "id": self.id,
            "experiment_id": self.experiment_id,
            "evaluator_id": self.evaluator_id,
            "display_name": self.display_name,
            "status": status,
            "aggregated_result": {"error": self.visible_error, "total_usage": self.usage.to_json()},
            "result_path": self.result_path if status == RunStatus.DONE else None,
            "target_data_converter": self.target_data_converter,
            "metadata": self.metadata,
            "created_at": iso_ms(self.created_ms),
            "updated_at": iso_ms(self.updated_ms or self.created_ms),
        }

    def to_control_json(self) -> dict[str, Any]:
        """The run with the emulator's bookkeeping (for ``GET /_emulator/runs``)."""
        return {
            **self.to_json(),
            "actual_status": self.status,
            "overridden": self.override is not None,
            "auto_evaluation_id": self.auto_evaluation_id,
            "executes_at": iso_ms(self.executes_at_ms),
            "synthetic": self.synthetic is not None,
            "target_count": self.target_count,
            "items_failed": self.items_failed,
            "scores_synced": self.scores_synced,
            "scores_skipped": self.scores_skipped,
        }


class Stats:
    """Counters served by ``GET /_emulator/stats``."""

    def __init__(self) -> None:
        self.started_ms = now_ms()
        self.requests: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        #: client (address, port) pairs of GIP and Langfuse requests: one per TCP connection opened
        self.connections: set[tuple[str, int]] = set()
        self.runs_created = 0
        self.auto_evaluation_firings = 0
        self.scores_written = 0
        self.tokens_issued = 0
        self.download_bytes = 0

    def to_json(self, runs: Iterable[Run]) -> dict[str, Any]:
        return {
            "since": iso_ms(self.started_ms),
            "requests": sum(self.requests.values()),
            "requests_by_group": {g: self.requests.get(g, 0) for g in (*REQUEST_GROUPS, *self.requests)},
            "requests_by_route": dict(self.routes),
            "responses_by_status": dict(self.statuses),
            "client_connections": len(self.connections),
            "faults": {kind: self.faults.get(kind, 0) for kind in FAULT_KINDS},
            "faults_total": sum(self.faults[k] for k in FAULT_KINDS if k not in ("latency", "run_failure")),
            "runs_created": self.runs_created,
            "runs_by_status": dict(Counter(r.visible_status for r in runs)),
            "auto_evaluation_firings": self.auto_evaluation_firings,
            "scores_written": self.scores_written,
            "tokens_issued": self.tokens_issued,
            "download_bytes": self.download_bytes,
        }


FAULT_KINDS = ("error", "rate_limit", "drop", "latency", "run_failure")
REQUEST_GROUPS = ("gip", "langfuse", "cognito", "control", "other")


class FaultState:
    """The live fault configuration with its seeded generator and its budget."""

    def __init__(self, config: FaultConfig) -> None:
        self.set(config)

    def set(self, config: FaultConfig) -> None:
        self.config = config
        self.pattern = re.compile(config.path_pattern)
        self.rng = random.Random(config.seed)
        self.run_rng = random.Random(config.seed + 1)
        self.injected = 0

    def budget_left(self) -> bool:
        return self.config.max_faults is None or self.injected < self.config.max_faults


# ---------------------------------------------------------------------------------------------
# Tokens (the emulated Cognito)
# ---------------------------------------------------------------------------------------------


class TokenError(Exception):
    """A bearer token that is not accepted; the message is safe to show (no token content)."""


class Tokens:
    """Issues and checks JWT-shaped Cognito tokens signed with a per-process secret (HS256)."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self._secret = os.urandom(32)
        self._issuer = settings.base_url + "/_cognito"
        self._client_id = settings.cognito_client_id
        self.invalid_before = 0.0

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def issue(self, username: str, token_use: str, seconds: int) -> str:
        now = time.time()
        header = {"alg": "HS256", "typ": "JWT", "kid": "gip-emulator"}
        payload = {
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, "gip-emulator-user:" + username)),
            "iss": self._issuer,
            "token_use": token_use,
            "auth_time": int(now),
            "iat": now,
            "exp": math.ceil(now + seconds),  # whole seconds, never shorter than asked
            "jti": str(uuid.uuid4()),
            ("aud" if token_use == "id" else "client_id"): self._client_id,
            ("cognito:username" if token_use == "id" else "username"): username,
        }
        signing_input = self._b64(json.dumps(header).encode()) + "." + self._b64(json.dumps(payload).encode())
        sig = hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + self._b64(sig)

    def verify(self, token: str, token_use: str = "id") -> dict[str, Any]:
        """The token's claims, or :class:`TokenError` (expired, revoked, forged, wrong kind)."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("Unauthorized: the bearer token is not a JWT")
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        expected = self._b64(hmac.new(self._secret, signing_input, hashlib.sha256).digest())
        if not hmac.compare_digest(expected.encode(), parts[2].encode("utf-8", "surrogateescape")):
            raise TokenError("Unauthorized: the bearer token was not issued by this GIP (bad signature)")
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            raise TokenError("Unauthorized: the bearer token payload is unreadable") from None
        now = time.time()
        if claims.get("exp", 0) <= now or claims.get("iat", 0) < self.invalid_before:
            raise TokenError("The incoming token has expired")
        if claims.get("token_use") != token_use:
            raise TokenError(
                f"Unauthorized: this is a Cognito {claims.get('token_use')} token; send the IdToken "
                "from AuthenticationResult.IdToken"
            )
        return claims


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------


class Emulator:
    """One emulator instance: settings, seed, state, and the background tasks it owns."""

    def __init__(self, settings: EmulatorSettings, seed: SeedData) -> None:
        self.settings = settings
        self.seed = seed
        self.ids = IdFactory()
        self.models = [{k: v for k, v in m.items() if k != "quality"} for m in seed.models]
        self.model_quality = {m["public_id"]: m["quality"] for m in seed.models if "quality" in m}
        self.model_by_seq = {m["seq_id"]: m for m in self.models}
        #: Judge regressions switched on through the control API (``/_emulator/degrade``).
        self.degradations: list[Degradation] = []
        self.langfuse = LangfuseProject(seed, settings.langfuse_project_id, self.ids)
        self.tokens = Tokens(settings)
        self.faults = FaultState(settings.faults.model_copy())
        self.behaviour = settings.runs.model_copy()
        self.auth = settings.auth.model_copy()
        self.stats = Stats()
        self.credentials: dict[str, dict[str, Any]] = {}
        self.credential_secrets: dict[str, str] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.evaluators: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, Run] = {}
        self.auto_evaluations: dict[str, dict[str, Any]] = {}
        #: Epoch ms up to which each auto evaluation's schedule has been processed.
        self.schedule_marks: dict[str, int] = {}
        self.seeded_ids: set[str] = set()
        self._own_data_dir = settings.data_dir is None
        self.data_dir = Path(settings.data_dir or tempfile.mkdtemp(prefix="gip-emulator-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def placeholders(self) -> dict[str, str]:
        return {
            "emulator_url": self.settings.base_url,
            "langfuse_public_key": self.settings.langfuse_public_key,
            "langfuse_secret_key": self.settings.langfuse_secret_key.get_secret_value(),
            "workspace_id": self.settings.workspace_id,
        }

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def reset(self) -> None:
        """Back to start-up: client objects, runs, scores, stats, faults, run speed and tokens."""
        for run in self.runs.values():
            if run.task and not run.task.done():
                run.task.cancel()
        await asyncio.gather(*(r.task for r in self.runs.values() if r.task), return_exceptions=True)
        for run in self.runs.values():
            if run.csv_path is not None:
                run.csv_path.unlink(missing_ok=True)
        self.runs = {}
        for table in (self.credentials, self.experiments, self.evaluators, self.auto_evaluations):
            for key in [k for k in table if k not in self.seeded_ids]:
                del table[key]
        for key in [k for k in self.credential_secrets if k not in self.seeded_ids]:
            del self.credential_secrets[key]
        self.schedule_marks = {}
        self.degradations = []
        self.langfuse.reset()
        self.stats = Stats()
        self.faults.set(self.settings.faults.model_copy())
        self.behaviour = self.settings.runs.model_copy()
        self.auth = self.settings.auth.model_copy()
        self.tokens.invalid_before = 0.0

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
