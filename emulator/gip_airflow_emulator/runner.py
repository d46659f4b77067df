"""How experiment runs execute: read targets from Langfuse over HTTP, judge them, write the CSV.

A run is an asyncio task. It reads its targets page by page through the experiment's Langfuse
credential (the emulator itself or any Langfuse-compatible URL), exactly as GIP does, applies
sampling and the count limit, judges each page, appends rows to the result CSV on disk and,
when asked, writes scores back to Langfuse. Memory stays flat however large the run: nothing
per-item is kept, and request handlers never do per-item work.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from gip_airflow.api import RESULT_CSV_COLUMNS, ExperimentType, RunStatus, relative_range_seconds
from gip_airflow_emulator.judge import ItemResult, Judge
from gip_airflow_emulator.seed import iso_ms
from gip_airflow_emulator.state import Emulator, Run, now_ms
from gip_airflow_emulator.synthetic import unit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gip_airflow_emulator.contract import RunIn

log = logging.getLogger("gip_airflow_emulator")

PAGE_SIZE = 100
SCORE_SYNC_CONCURRENCY = 8
_ATTEMPTS = 4
_BACKOFF = 0.05  # seconds; doubled per attempt (Retry-After wins, capped at 2 s)
_FAILURE_REASONS = (
    "judge model {judge} returned 503 Service Unavailable after 3 retries",
    "evaluation worker lost: the run exceeded its memory limit",
    "judge model {judge} rate limit exceeded (429) after 3 retries",
)


class RunFailure(Exception):
    """The run ends FAILED with this message as ``aggregated_result.error``."""


class _NotFound(Exception):
    pass


class LangfuseReader:
    """Langfuse API calls for one run, through one registered credential (HTTP Basic auth)."""

    def __init__(self, credential: dict[str, Any], secret: str) -> None:
        self.alias = credential.get("alias")
        self.base_url = credential["base_url"]
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            auth=(credential["public_key"], secret),
            timeout=httpx.Timeout(30.0, connect=5.0),
            headers={"User-Agent": "gip-emulator-evaluator"},
        )

    async def __aenter__(self) -> LangfuseReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                if attempt == _ATTEMPTS:
                    raise RunFailure(
                        f"could not reach Langfuse at {self.base_url} ({method} {path}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                await asyncio.sleep(_BACKOFF * 2**attempt)
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if attempt == _ATTEMPTS:
                    raise RunFailure(
                        f"Langfuse at {self.base_url} answered {status} to {method} {path} "
                        f"{_ATTEMPTS} times: {_message(response)}"
                    )
                retry_after = response.headers.get("retry-after", "")
                backoff = _BACKOFF * 2**attempt
                delay = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else backoff
                await asyncio.sleep(min(delay, 2.0))
                continue
            if status in (401, 403):
                raise RunFailure(
                    f"Langfuse at {self.base_url} rejected credential {self.alias!r} ({status}: "
                    f"{_message(response)}); check the credential's public_key and private_key"
                )
            if status == 404:
                raise _NotFound(_message(response))
            if status >= 400:
                raise RunFailure(f"Langfuse answered {status} to {method} {path}: {_message(response)}")
            try:
                return response.json()
            except ValueError:
                raise RunFailure(f"Langfuse answered {method} {path} with a body that is not JSON") from None
        raise AssertionError("unreachable")

    async def get(self, path: str, params: Any = None) -> Any:
        return await self._call("GET", path, params=params)

    async def post(self, path: str, body: Any) -> Any:
        return await self._call("POST", path, json=body)

    async def pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of a Langfuse list endpoint, in order."""
        page = 1
        while True:
            query = [(k, v) for k, v in params.items() if v is not None and not isinstance(v, list)]
            query += [(k, item) for k, v in params.items() if isinstance(v, list) for item in v]
            answer = await self.get(path, [*query, ("page", page), ("limit", PAGE_SIZE)])
            data = answer.get("data") or []
            yield data
            total_pages = (answer.get("meta") or {}).get("totalPages")
            if len(data) < PAGE_SIZE or (total_pages is not None and page >= total_pages):
                return
            page += 1


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:300]
    return str(body)[:300]


# ---------------------------------------------------------------------------------------------
# Target selection
# ---------------------------------------------------------------------------------------------


def window(flt: dict[str, Any], start_key: str, end_key: str, at_ms: int) -> tuple[int | None, int | None]:
    """The ``[from, to)`` epoch-ms window of a filter; ``relative_time_range`` overrides it. [doc]"""
    relative = flt.get("relative_time_range")
    if relative:
        return at_ms - int(relative_range_seconds(relative) * 1000), at_ms
    return flt.get(start_key), flt.get(end_key)


def sampled(target_id: str, rate: float) -> bool:
    """Deterministic sampling: a target is in when the hash of its (run-independent) id is below rate."""
    return rate >= 1.0 or unit("sample", target_id) < rate


def _iso(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


async def select_batches(
    reader: LangfuseReader, experiment: dict[str, Any], at_ms: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """The experiment's targets, a Langfuse page at a time, exactly as configured."""
    cfg = experiment["config"]
    kind = ExperimentType(experiment["type"])
    if kind == ExperimentType.LANGFUSE_DATASET:
        name = cfg["dataset_name"]
        try:
            await reader.get(f"/api/public/v2/datasets/{quote(name, safe='')}")
        except _NotFound:
            raise RunFailure(f"Langfuse dataset {name!r} not found at {reader.base_url}") from None
        include_archived = cfg.get("include_archived_items", False)
        async for page in reader.pages("/api/public/dataset-items", {"datasetName": name}):
            batch = [i for i in page if include_archived or i.get("status") != "ARCHIVED"]
            if batch:
                yield batch
        return
    if kind == ExperimentType.LANGFUSE_TRACE:
        flt = cfg.get("trace_filter_request") or {}
        start, end = window(flt, "from_timestamp", "to_timestamp", at_ms)
        path, limit = "/api/public/traces", cfg.get("max_trace_count")
        params: dict[str, Any] = {
            "name": flt.get("name"),
            "tags": flt.get("tags") or None,
            "version": flt.get("version"),
            "release": flt.get("release"),
            "fromTimestamp": _iso(start),
            "toTimestamp": _iso(end),
            "orderBy": "timestamp.desc",
        }
    else:
        flt = cfg.get("observation_filter_request") or {}
        start, end = window(flt, "from_start_time", "to_start_time", at_ms)
        path, limit = "/api/public/observations", cfg.get("max_observation_count")
        params = {
            "name": flt.get("name"),
            "version": flt.get("version"),
            "fromStartTime": _iso(start),
            "toStartTime": _iso(end),
        }
    rate = float(cfg.get("sampling_rate", 1.0))
    taken = 0
    async for page in reader.pages(path, params):
        batch = []
        for target in page:
            if not sampled(str(target["id"]), rate):
                continue
            batch.append(target)
            taken += 1
            if limit and taken >= limit:
                break
        if batch:
            yield batch
        if limit and taken >= limit:
            return


def _reader(emu: Emulator, experiment: dict[str, Any]) -> LangfuseReader:
    cred_id = experiment["config"]["integrated_service_credential_id"]
    credential = emu.credentials.get(cred_id)
    if credential is None:
        raise RunFailure(f"integrated service credential {cred_id} no longer exists")
    return LangfuseReader(credential, emu.credential_secrets[cred_id])


async def preview_targets(emu: Emulator, experiment: dict[str, Any], at_ms: int) -> list[str]:
    """The ids a run of ``experiment`` executing at ``at_ms`` would evaluate (read over HTTP)."""
    ids: list[str] = []
    async with _reader(emu, experiment) as reader:
        async for batch in select_batches(reader, experiment, at_ms):
            ids.extend(str(t["id"]) for t in batch)
    return ids


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def new_run(
    emu: Emulator,
    experiment: dict[str, Any],
    body: RunIn,
    *,
    auto_evaluation_id: str | None = None,
    executes_at_ms: int | None = None,
) -> Run:
    """Register a run (PENDING) and start executing it in the background."""
    created = now_ms()
    fail_with = None
    faults = emu.faults
    if faults.config.run_failure_rate and faults.run_rng.random() < faults.config.run_failure_rate:
        judge = emu.evaluators[body.evaluator_id]["evaluation_config"]["judge_model_public_id"]
        fail_with = faults.run_rng.choice(_FAILURE_REASONS).format(judge=judge)
        emu.stats.faults["run_failure"] += 1
    run = Run(
        id=emu.ids.new(),
        workspace_id=experiment["workspace_id"],
        experiment_id=experiment["id"],
        evaluator_id=body.evaluator_id,
        display_name=body.display_name,
        target_data_converter=body.target_data_converter.to_wire() if body.target_data_converter else None,
        metadata=body.metadata.to_wire() if body.metadata else None,
        created_ms=created,
        executes_at_ms=executes_at_ms if executes_at_ms is not None else created,
        run_seconds=emu.behaviour.run_seconds,
        items_per_second=emu.behaviour.items_per_second,
        fail_with=fail_with,
        auto_evaluation_id=auto_evaluation_id,
    )
    emu.runs[run.id] = run
    emu.stats.runs_created += 1
    run.task = emu.spawn(execute(emu, run))
    return run


def _set(run: Run, status: str, error: str | None = None) -> None:
    run.status = status
    run.error = error
    run.updated_ms = now_ms()


async def _hold(emu: Emulator) -> None:
    while emu.behaviour.never_finish:
        await asyncio.sleep(0.05)


async def execute(emu: Emulator, run: Run) -> None:
    """PENDING → RUNNING → DONE (or FAILED), taking ``run_seconds`` (+ items / items_per_second)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.sleep(min(run.run_seconds * 0.25, 1.0))
        _set(run, RunStatus.RUNNING)
        if run.fail_with:
            await asyncio.sleep(run.run_seconds * 0.25)
            raise RunFailure(run.fail_with)
        await _process(emu, run)
        run.processed.set()  # the CSV is complete, even if the status is held back below
        per_item = run.target_count / run.items_per_second if run.items_per_second else 0.0
        await asyncio.sleep(max(0.0, started + run.run_seconds + per_item - loop.time()))
        await _hold(emu)
        _set(run, RunStatus.DONE)
    except RunFailure as exc:
        run.processed.set()
        await _hold(emu)
        _set(run, RunStatus.FAILED, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug in the emulator: make it visible, keep serving
        log.exception("run %s failed inside the emulator", run.id)
        _set(run, RunStatus.FAILED, f"internal emulator error: {type(exc).__name__}: {exc}")
    finally:
        run.processed.set()


async def _process(emu: Emulator, run: Run) -> None:
    experiment = emu.experiments[run.experiment_id]
    evaluator = emu.evaluators[run.evaluator_id]
    judge = Judge(
        experiment["type"],
        evaluator,
        run.target_data_converter,
        emu.model_quality,
        degradations=emu.degradations,
        created_ms=run.created_ms,
    )
    sync = ((run.metadata or {}).get("langfuse_integration_config") or {}) if run.metadata else {}
    score_name = sync.get("score_name") if sync.get("sync_score") else None
    path = emu.data_dir / run.result_path
    path.parent.mkdir(parents=True, exist_ok=True)
    run.csv_path = path
    async with _reader(emu, experiment) as reader:
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(RESULT_CSV_COLUMNS)
            async for batch in select_batches(reader, experiment, run.executes_at_ms):
                results = [judge.evaluate(target) for target in batch]
                writer.writerows(r.values for r in results)
                for r in results:
                    run.usage.add(r.prompt_tokens, r.completion_tokens)
                    run.items_failed += not r.passed
                run.target_count += len(batch)
                if score_name:
                    await _sync_scores(
                        reader,
                        run=run,
                        experiment=experiment,
                        evaluator=evaluator,
                        batch=batch,
                        results=results,
                        score_name=score_name,
                    )


# ---------------------------------------------------------------------------------------------
# Score sync
# ---------------------------------------------------------------------------------------------

_DATA_TYPES = {"category": "CATEGORICAL", "numeric": "NUMERIC", "bool": "BOOLEAN"}


async def _score_target(
    reader: LangfuseReader, kind: ExperimentType, target: dict[str, Any]
) -> tuple[str | None, str | None]:
    """``(traceId, observationId)`` a target's score belongs to; no trace id = cannot be synced."""
    if kind == ExperimentType.LANGFUSE_TRACE:
        return str(target["id"]), None
    if kind == ExperimentType.LANGFUSE_OBSERVATION:
        return target.get("traceId"), str(target["id"])
    trace_id, obs_id = target.get("sourceTraceId"), target.get("sourceObservationId")
    if not trace_id and obs_id:  # the v1 scores API needs the trace: look the observation up
        try:
            observation = await reader.get(f"/api/public/observations/{quote(obs_id, safe='')}")
        except _NotFound:
            return None, obs_id
        trace_id = observation.get("traceId")
    return trace_id, obs_id  # [doc] dataset items without a source trace/observation are not synced


async def _sync_scores(
    reader: LangfuseReader,
    *,
    run: Run,
    experiment: dict[str, Any],
    evaluator: dict[str, Any],
    batch: list[dict[str, Any]],
    results: list[ItemResult],
    score_name: str,
) -> None:
    kind = ExperimentType(experiment["type"])
    data_type = _DATA_TYPES[evaluator["metric"]["type"]]
    gate = asyncio.Semaphore(SCORE_SYNC_CONCURRENCY)

    async def one(target: dict[str, Any], result: ItemResult) -> bool:
        if not result.passed:
            return False
        async with gate:
            trace_id, observation_id = await _score_target(reader, kind, target)
            if not trace_id:
                return False
            value: Any = result.score
            if data_type == "BOOLEAN":
                value = 1 if result.score else 0
            body = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"gip-run:{run.id}:{target['id']}:{score_name}")),
                "traceId": trace_id,
                "observationId": observation_id,
                "name": score_name,
                "value": value,
                "dataType": data_type,
                "comment": result.rationale,
            }
            await reader.post("/api/public/scores", body)
            return True

    try:
        done = await asyncio.gather(*(one(t, r) for t, r in zip(batch, results, strict=True)))
    except RunFailure as exc:
        raise RunFailure(f"score sync to Langfuse failed: {exc}") from None
    run.scores_synced += sum(done)
    run.scores_skipped += len(done) - sum(done)


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------


async def csv_chunks(emu: Emulator, run: Run, chunk_bytes: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The result CSV, streamed: generated on the fly for synthetic runs, else read from disk."""
    if run.synthetic is not None:
        for chunk in run.synthetic.chunks(chunk_bytes):
            emu.stats.download_bytes += len(chunk)
            yield chunk
        return
    await run.processed.wait()  # a run forced to DONE early still serves its complete file
    if run.csv_path is None or not run.csv_path.exists():
        yield ",".join(RESULT_CSV_COLUMNS).encode() + b"\n"
        return
    with run.csv_path.open("rb") as source:
        while chunk := source.read(chunk_bytes):
            emu.stats.download_bytes += len(chunk)
            yield chunk
