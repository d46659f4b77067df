"""Hooks for the GIP evaluation API: :class:`GipHook` (sync, workers) and :class:`GipAsyncHook` (triggerer).

Both share one transport policy (:mod:`gip_airflow.hooks._client`; auth in ``_auth``, settings in
``_config``): a pooled httpx client per hook, explicit timeouts, and retries with exponential backoff
and jitter on connection errors, 429 (honouring ``Retry-After``) and 5xx; reads always, creating POSTs
only when GIP provably never acted on them. The final error says how many attempts were made and, for
a create that was not repeated, why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from typing import IO, Any, TypeVar

import httpx
import tenacity
from airflow.sdk import BaseHook

from gip_airflow import api
from gip_airflow.exceptions import GipApiError, GipEndpointDisabledError, GipError
from gip_airflow.hooks._auth import shared_ssl_context
from gip_airflow.hooks._client import GipClientMixin, RetryableStatus, tried
from gip_airflow.hooks._config import AuthType, GipConnectionConfig

__all__ = ["AuthType", "GipAsyncHook", "GipConnectionConfig", "GipHook"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=api.RequestModel)
T = TypeVar("T")

_CHUNK = 1 << 20
#: Seconds the connection test waits per network step (connect, send, read) of its single attempt.
TEST_CONNECTION_TIMEOUT = 5.0


def _body(model: type[M], data: Any, what: str) -> dict[str, Any]:
    return api.build(model, data, what).to_wire()


# ---------------------------------------------------------------------------------------------
# Sync hook
# ---------------------------------------------------------------------------------------------


class _Sha256:
    """A write sink that hashes what passes through (and forwards it to ``out`` when given)."""

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self._out = out
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        if self._out is not None:
            self._out.write(data)

    def digest(self) -> bytes:
        return self._hash.digest()


class GipHook(GipClientMixin, BaseHook):
    """Interact with the GIP evaluation API from Airflow tasks.

    :param gip_conn_id: a connection of type ``gip`` (host = console API URL, password = API key or
        Cognito password, extras ``workspace_id``, ``auth_type``, ``cognito_*``, ``console_url``).
    :param timeout: request timeout in seconds (overrides the connection's ``timeout`` extra).
    :param max_retries: retries for retryable failures (overrides the ``max_retries`` extra).
    :param retry_backoff: base of the exponential backoff in seconds (overrides ``retry_backoff``).
    :param keepalive_expiry: seconds an idle connection stays pooled for reuse (default 5).
    """

    conn_name_attr = "gip_conn_id"
    default_conn_name = "gip_default"
    conn_type = "gip"
    hook_name = "GIP"

    def __init__(
        self,
        gip_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_backoff: float | None = None,
        keepalive_expiry: float | None = None,
    ) -> None:
        super().__init__()
        self.gip_conn_id = gip_conn_id
        self._overrides = {
            "timeout": timeout,
            "max_retries": max_retries,
            "retry_backoff": retry_backoff,
            "keepalive_expiry": keepalive_expiry,
        }

    @cached_property
    def config(self) -> GipConnectionConfig:  # type: ignore[override]
        try:
            return GipConnectionConfig.from_connection(
                self.get_connection(self.gip_conn_id), **self._overrides
            )
        except ValueError as exc:
            raise GipError(str(exc)) from None

    @cached_property
    def client(self) -> httpx.Client:
        """One pooled client per hook; closed by :meth:`close`."""
        return httpx.Client(**self.config.client_kwargs())

    def get_conn(self) -> httpx.Client:
        return self.client

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def __enter__(self) -> GipHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        retrying = tenacity.Retrying(**self._retrying_kwargs(method, path, idempotent))
        try:
            for attempt in retrying:
                with attempt:
                    response = self.client.request(method, path, json=json, params=params)
                    self._check(response, method, path)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, method, path, tried(retrying), idempotent) from None
        except GipApiError as exc:
            raise self._final(exc, tried(retrying), idempotent) from None
        return self._json(response, method, path)

    def _assumed(self, what: str) -> None:
        """Refuse, before sending, a request to an [assumed] endpoint when the connection turned them off."""
        if not self.config.list_endpoints:
            raise GipEndpointDisabledError(
                f"{what} needs an undocumented GIP endpoint, and connection {self.gip_conn_id!r} sets "
                "list_endpoints: false. Remove that extra (or set it to true) to allow it"
            )

    def lookup(self, what: str, listing: Callable[[], Iterable[T]]) -> list[T] | None:
        """The items of a lookup over an [assumed] list endpoint, or None when no lookup is available.

        None (logged once per hook and lookup) when the connection sets ``list_endpoints: false``, or
        when GIP answers the list request with any 4xx but 401, or 501: a key may be allowed to create but
        not to list. A 401, a failed Cognito login and every other error are raised.
        """
        if not self.config.list_endpoints:
            self._note_lookup(what, "the connection sets list_endpoints: false")
            return None
        try:
            return list(listing())
        except GipApiError as exc:
            status = exc.http_status
            cognito = self.config.auth_type == "cognito" and exc.path == self.config.cognito_endpoint
            if cognito or status is None or status == 401 or not (400 <= status < 500 or status == 501):
                raise
            self._note_lookup(what, f"GIP answered HTTP {status}")
            return None

    def _note_lookup(self, what: str, reason: str) -> None:
        noted: set[str] = self.__dict__.setdefault("_lookups_noted", set())
        if what in noted:
            return
        noted.add(what)
        log.warning(
            "No lookup of %s on GIP (%s); going on without it, so only the task state store protects "
            "a retry against creating a duplicate",
            what,
            reason,
        )

    def _list(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """[assumed] Page through a list endpoint until a short page."""
        self._assumed(f"Listing {path}")
        page = 1
        while True:
            payload = self._request(
                "GET", path, params={**(params or {}), "page": page, "limit": api.LIST_PAGE_SIZE}
            )
            items = api.list_items(payload)
            yield from items
            meta = payload.get("meta") if isinstance(payload, Mapping) else None
            total_pages = meta.get("total_pages") if isinstance(meta, Mapping) else None
            if len(items) < api.LIST_PAGE_SIZE or (total_pages is not None and page >= int(total_pages)):
                return
            page += 1

    # -- documented endpoints -------------------------------------------------------------------

    def list_models(self) -> list[api.GipModel]:
        """List the models of the workspace (``GET .../models``; also the connection test)."""
        payload = self._request("GET", self._path(api.Paths.models))
        return [api.GipModel.model_validate(m) for m in api.list_items(payload)]

    def list_credentials(self) -> list[api.Credential]:
        """[assumed] The workspace's registered Langfuse credentials (no secrets); GIP may not list them."""
        return [api.Credential.model_validate(c) for c in self._list(self._path(api.Paths.credentials))]

    def create_langfuse_credential(
        self, body: api.LangfuseCredentialCreate | Mapping[str, Any]
    ) -> api.Credential:
        """Register a Langfuse project's keys with GIP; returns the credential (its ``id``)."""
        wire = _body(api.LangfuseCredentialCreate, body, "Langfuse credential")
        data = self._request("POST", self._path(api.Paths.credentials), json=wire)
        credential = api.Credential.model_validate(data)
        log.info("Registered Langfuse credential %r as %s", wire["alias"], credential.id)
        return credential

    def create_experiment(self, body: api.ExperimentCreate | Mapping[str, Any]) -> api.Experiment:
        """Create an experiment (what to evaluate); returns it with its ``id``."""
        wire = _body(api.ExperimentCreate, body, "experiment")
        experiment = api.Experiment.model_validate(
            self._request("POST", self._path(api.Paths.experiments), json=wire)
        )
        log.info("Created %s experiment %r: %s", wire["type"], wire["name"], experiment.id)
        return experiment

    def create_evaluator(self, body: api.EvaluatorCreate | Mapping[str, Any]) -> api.Evaluator:
        """Create an evaluator (judge model, prompt, metric); returns it with its ``id``."""
        wire = _body(api.EvaluatorCreate, body, "evaluator")
        evaluator = api.Evaluator.model_validate(
            self._request("POST", self._path(api.Paths.evaluators), json=wire)
        )
        log.info("Created %s-metric evaluator %r: %s", wire["metric"]["type"], wire["name"], evaluator.id)
        return evaluator

    def create_experiment_run(
        self, experiment_id: str, body: api.ExperimentRunCreate | Mapping[str, Any]
    ) -> api.ExperimentRun:
        """Start a run (experiment x evaluator).

        Not retried on ambiguous failures (it may cost a second evaluation): see :meth:`find_experiment_run`.
        """
        wire = _body(api.ExperimentRunCreate, body, "experiment run")
        data = self._request("POST", self._path(api.Paths.runs, experiment_id), json=wire)
        run = api.ExperimentRun.model_validate(data)
        log.info(
            "Started experiment run %r of experiment %s: %s", wire["display_name"], experiment_id, run.id
        )
        return run

    def get_experiment_run(self, experiment_id: str, run_id: str) -> api.ExperimentRun:
        """Read a run's status, aggregated result and result path."""
        data = self._request("GET", self._path(api.Paths.run, experiment_id, run_id))
        return api.ExperimentRun.model_validate(data)

    def download_run_result(
        self, experiment_id: str, run_id: str, dest: str | os.PathLike[str] | IO[bytes]
    ) -> int:
        """Stream the result CSV to a path or seekable binary file in 1 MiB chunks; return bytes written.

        An interrupted download is retried from the start (the destination is truncated first). A body
        whose end cannot be verified (neither ``Content-Length`` nor chunked framing: it ends when the
        connection closes) is downloaded twice and kept only when both copies are byte-identical.
        """
        path = self._path(api.Paths.run_download, experiment_id, run_id)
        with contextlib.ExitStack() as stack:
            out: IO[bytes] = (
                stack.enter_context(open(dest, "wb")) if isinstance(dest, str | os.PathLike) else dest
            )
            start = out.tell()
            retrying = tenacity.Retrying(**self._retrying_kwargs("GET", path, idempotent=True))
            try:
                for attempt in retrying:
                    with attempt:
                        out.seek(start)
                        out.truncate()
                        written = self._download_verified(path, out)
            except httpx.TransportError as exc:
                raise self._unreachable(exc, "GET", path, tried(retrying)) from None
            except GipApiError as exc:
                raise self._final(exc, tried(retrying)) from None
        log.info("Downloaded result CSV of run %s: %.1f MB", run_id, written / 1e6)
        return written

    def _download_verified(self, path: str, out: IO[bytes]) -> int:
        first = _Sha256(out)
        written, framed = self._stream_to(path, first.write)
        if framed:
            return written
        log.info(
            "GIP sent the result CSV without Content-Length or chunked framing; downloading it a second "
            "time to check that the first copy is complete"
        )
        second = _Sha256()
        again, _ = self._stream_to(path, second.write)
        if again != written or second.digest() != first.digest():
            raise RetryableStatus(
                f"GIP GET {path} sent the result CSV without Content-Length or chunked framing, so a "
                f"complete body cannot be told from a cut one, and two downloads differ ({written:,} and "
                f"{again:,} bytes): not keeping a possibly truncated file",
                retry_after=None,
                http_status=200,
                method="GET",
                path=path,
            )
        return written

    def _stream_to(self, path: str, write: Callable[[bytes], Any]) -> tuple[int, bool]:
        """Write the decoded body; return (bytes written, whether its framing proves it complete)."""
        written = 0
        # identity: a compressed CSV would need decoding; iter_bytes still decodes one sent anyway.
        headers = {"Accept": "text/csv", "Accept-Encoding": "identity"}
        with self.client.stream("GET", path, headers=headers) as response:
            if response.status_code >= 300:
                response.read()
                self._check(response, "GET", path)
            expected = response.headers.get("Content-Length")
            chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
            for chunk in response.iter_bytes(_CHUNK):
                write(chunk)
                written += len(chunk)
            received = response.num_bytes_downloaded  # as sent, before decoding
            if expected is not None and int(expected) != received:
                raise httpx.RemoteProtocolError(f"download ended after {received} of {expected} bytes")
        return written, expected is not None or chunked

    def create_auto_evaluation(
        self, experiment_id: str, body: api.AutoEvaluationCreate | Mapping[str, Any]
    ) -> api.AutoEvaluation:
        """Create a GIP-side cron schedule of runs (what this provider's DAGs replace)."""
        wire = _body(api.AutoEvaluationCreate, body, "auto evaluation config")
        data = self._request("POST", self._path(api.Paths.auto_evaluations, experiment_id), json=wire)
        return api.AutoEvaluation.model_validate(data)

    # -- assumed endpoints (REST convention; see api.ASSUMPTIONS) --------------------------------

    def get_experiment(self, experiment_id: str) -> api.Experiment:
        """[assumed] Read one experiment."""
        self._assumed(f"Reading experiment {experiment_id}")
        return api.Experiment.model_validate(
            self._request("GET", self._path(api.Paths.experiment, experiment_id))
        )

    def list_experiments(self) -> list[api.Experiment]:
        """[assumed] All experiments of the workspace."""
        return [api.Experiment.model_validate(e) for e in self._list(self._path(api.Paths.experiments))]

    def get_evaluator(self, evaluator_id: str) -> api.Evaluator:
        """[assumed] Read one evaluator (e.g. its metric, to derive numeric scores)."""
        self._assumed(f"Reading evaluator {evaluator_id}")
        return api.Evaluator.model_validate(
            self._request("GET", self._path(api.Paths.evaluator, evaluator_id))
        )

    def list_evaluators(self) -> list[api.Evaluator]:
        """[assumed] All evaluators of the workspace."""
        return [api.Evaluator.model_validate(e) for e in self._list(self._path(api.Paths.evaluators))]

    def list_experiment_runs(self, experiment_id: str) -> Iterator[api.ExperimentRun]:
        """[assumed] The runs of an experiment, page by page."""
        for item in self._list(self._path(api.Paths.runs, experiment_id)):
            yield api.ExperimentRun.model_validate(item)

    def find_experiment_run(self, experiment_id: str, display_name: str) -> api.ExperimentRun | None:
        """[assumed] The newest run of an experiment with this display name, or None.

        Lets callers make run creation idempotent: look up before (re)creating.
        """
        return next(
            (r for r in self.list_experiment_runs(experiment_id) if r.display_name == display_name), None
        )

    def find_experiment(self, name: str) -> api.Experiment | None:
        """[assumed] An experiment with exactly this name, or None."""
        return next((e for e in self.list_experiments() if e.name == name), None)

    def find_evaluator(self, name: str) -> api.Evaluator | None:
        """[assumed] An evaluator with exactly this name, or None."""
        return next((e for e in self.list_evaluators() if e.name == name), None)

    def list_auto_evaluations(self, experiment_id: str) -> list[api.AutoEvaluation]:
        """[assumed] The auto evaluation configs of an experiment."""
        path = self._path(api.Paths.auto_evaluations, experiment_id)
        return [api.AutoEvaluation.model_validate(a) for a in self._list(path)]

    def update_auto_evaluation(
        self, experiment_id: str, config_id: str, body: api.AutoEvaluationUpdate | Mapping[str, Any]
    ) -> api.AutoEvaluation:
        """[assumed] PATCH an auto evaluation config (e.g. ``{"enabled": False}``)."""
        self._assumed(f"Updating auto evaluation config {config_id}")
        wire = api.build(api.AutoEvaluationUpdate, body, "auto evaluation update").model_dump(
            mode="json", exclude_none=True
        )
        path = self._path(api.Paths.auto_evaluation, experiment_id, config_id)
        return api.AutoEvaluation.model_validate(self._request("PATCH", path, json=wire))

    # -- Airflow integration --------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button and ``airflow connections test``: one short request listing the models.

        One attempt with a ``TEST_CONNECTION_TIMEOUT`` (5 s) limit per network step, so the UI answers
        within seconds even when GIP accepts connections but never answers.
        """
        try:
            config = self.config
        except GipError as exc:
            return False, str(exc)
        probe = GipHook(
            self.gip_conn_id,
            timeout=min(config.timeout, TEST_CONNECTION_TIMEOUT),
            max_retries=0,
            retry_backoff=config.retry_backoff,
        )
        try:
            models = probe.list_models()
        except Exception as exc:
            return False, str(exc)
        finally:
            probe.close()
        return True, (
            f"Connected to GIP at {config.base_url}: workspace {config.workspace_id} "
            f"has {len(models)} model{'' if len(models) == 1 else 's'}"
        )


# ---------------------------------------------------------------------------------------------
# Async hook (triggerer)
# ---------------------------------------------------------------------------------------------


class GipAsyncHook(GipClientMixin):
    """Async client for the triggerer: reads run status without blocking the event loop.

    Create it with :meth:`from_conn_id` (fetches the connection through ``BaseHook.aget_connection``)
    and use it as an async context manager so its pooled ``httpx.AsyncClient`` is closed.
    """

    def __init__(self, config: GipConnectionConfig, gip_conn_id: str = GipHook.default_conn_name) -> None:
        self.config = config
        self.gip_conn_id = gip_conn_id
        self.client = httpx.AsyncClient(**config.client_kwargs())

    @classmethod
    async def from_conn_id(
        cls, gip_conn_id: str = GipHook.default_conn_name, **overrides: Any
    ) -> GipAsyncHook:
        conn = await BaseHook.aget_connection(gip_conn_id)
        try:
            config = GipConnectionConfig.from_connection(conn, **overrides)
        except ValueError as exc:
            raise GipError(str(exc)) from None
        # The first client of the process loads the CA bundle: do it in a thread, not on the event loop.
        await asyncio.to_thread(shared_ssl_context, config.verify_ssl)
        return cls(config, gip_conn_id)

    async def __aenter__(self) -> GipAsyncHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.aclose()

    async def _request(self, method: str, path: str) -> Any:
        retrying = None
        try:
            if self.config.max_retries == 0:  # a trigger's poll: its wait policy owns retries
                response = await self._send(method, path)
            else:
                retrying = tenacity.AsyncRetrying(**self._retrying_kwargs(method, path, idempotent=True))
                async for attempt in retrying:
                    with attempt:
                        response = await self._send(method, path)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, method, path, tried(retrying)) from None
        except GipApiError as exc:
            raise self._final(exc, tried(retrying)) from None
        return self._json(response, method, path)

    async def _send(self, method: str, path: str) -> httpx.Response:
        response = await self.client.request(method, path)
        self._check(response, method, path)
        return response

    async def get_experiment_run(self, experiment_id: str, run_id: str) -> api.ExperimentRun:
        """Read a run's status (retried per the transport policy)."""
        data = await self._request("GET", self._path(api.Paths.run, experiment_id, run_id))
        return api.ExperimentRun.model_validate(data)
