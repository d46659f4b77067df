"""Helpers for the emulator tests: a GIP client on the session emulator and object factories."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gip_airflow.api import TERMINAL_STATUSES, Paths
from gip_airflow_emulator.pytest_plugin import GipEmulator

CATEGORY_METRIC = {
    "type": "category",
    "config": [{"index": 0, "name": "bad"}, {"index": 1, "name": "neutral"}, {"index": 2, "name": "good"}],
}
NUMERIC_METRIC = {"type": "numeric", "config": {"min": {"value": 0.0}, "max": {"value": 1.0}}}
BOOL_METRIC = {"type": "bool"}
PLAN_DATASET = "JSONL_samples-plan_suggestion_dataset_v2"
QA_DATASET = "qa-general-knowledge"


class Gip:
    """A small GIP client for tests (the real one is the hook; this one stays independent of it)."""

    def __init__(self, emulator: GipEmulator) -> None:
        self.emu = emulator
        self.ws = emulator.workspace_id
        self.http = emulator.client(timeout=30)
        self.lf = httpx.Client(base_url=emulator.base_url, auth=emulator.langfuse_auth, timeout=30)

    def close(self) -> None:
        self.http.close()
        self.lf.close()

    def ok(self, response: httpx.Response) -> Any:
        assert response.status_code < 300, f"{response.status_code}: {response.text}"
        return response.json()

    def credential(self, **overrides: Any) -> str:
        body = {
            "service_name": "LANGFUSE",
            "alias": "test-langfuse",
            "base_url": self.emu.langfuse_base_url,
            "public_key": self.emu.langfuse_public_key,
            "private_key": self.emu.langfuse_secret_key,
            **overrides,
        }
        return self.ok(self.http.post(Paths.credentials(self.ws), json=body))["id"]

    def experiment(self, type_: str, config: dict[str, Any], credential: str | None = None) -> str:
        config = {"integrated_service_credential_id": credential or self.credential(), **config}
        body = {"name": f"test {type_}", "type": type_, "config": config}
        return self.ok(self.http.post(Paths.experiments(self.ws), json=body))["id"]

    def dataset_experiment(self, dataset: str = PLAN_DATASET, **config: Any) -> str:
        return self.experiment("langfuse_dataset", {"dataset_name": dataset, **config})

    def trace_experiment(self, credential: str | None = None, **config: Any) -> str:
        return self.experiment("langfuse_trace", config, credential)

    def observation_experiment(self, **config: Any) -> str:
        return self.experiment("langfuse_observation", config)

    def evaluator(
        self, metric: dict[str, Any] | None = None, model: tuple[int, str] = (19, "openai/gpt-4")
    ) -> str:
        body = {
            "name": "test evaluator",
            "type": "llm_judge",
            "metric": metric or CATEGORY_METRIC,
            "evaluation_config": {
                "judge_model_seq_id": model[0],
                "judge_model_public_id": model[1],
                "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
                "judge_prompt": "You are an impartial AI judge. <rationale></rationale><rating></rating>",
            },
        }
        return self.ok(self.http.post(Paths.evaluators(self.ws), json=body))["id"]

    def start_run(self, exp: str, evaluator: str, **extra: Any) -> dict[str, Any]:
        body = {"evaluator_id": evaluator, "display_name": "test run", **extra}
        return self.ok(self.http.post(Paths.runs(self.ws, exp), json=body))

    def wait(self, exp: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.ok(self.http.get(Paths.run(self.ws, exp, run_id)))
            if run["status"] in TERMINAL_STATUSES:
                return run
            assert time.monotonic() < deadline, f"run still {run['status']}"
            time.sleep(0.05)

    def run_done(self, exp: str, evaluator: str, **extra: Any) -> dict[str, Any]:
        run = self.wait(exp, self.start_run(exp, evaluator, **extra)["id"])
        assert run["status"] == "DONE", run
        return run

    def csv_bytes(self, exp: str, run_id: str) -> bytes:
        response = self.http.get(Paths.run_download(self.ws, exp, run_id))
        assert response.status_code == 200, response.text
        return response.content

    def rows(self, exp: str, run_id: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.csv_bytes(exp, run_id).decode("utf-8"))))

    def langfuse_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.ok(self.lf.get(path, params={**params, "page": page, "limit": 100}))
            out.extend(answer["data"])
            if page >= answer["meta"]["totalPages"]:
                return out
            page += 1


@pytest.fixture(scope="package")
def fast_emulator(gip_emulator: GipEmulator) -> Iterator[GipEmulator]:
    """The session emulator with quick runs, restored when this package's tests are done."""
    before = gip_emulator.info()["run_behaviour"]
    gip_emulator.set_run_speed(run_seconds=0.2)
    yield gip_emulator
    gip_emulator.set_run_speed(**before)


@pytest.fixture
def emu(fast_emulator: GipEmulator) -> Iterator[GipEmulator]:
    """Per test: no faults, quick runs, runs finish."""
    fast_emulator.clear_faults()
    fast_emulator.set_run_speed(run_seconds=0.2, items_per_second=0, never_finish=False)
    yield fast_emulator
    fast_emulator.clear_faults()
    fast_emulator.set_run_speed(run_seconds=0.2, items_per_second=0, never_finish=False)


@pytest.fixture(scope="package")
def _gip_client(fast_emulator: GipEmulator) -> Iterator[Gip]:
    client = Gip(fast_emulator)
    yield client
    client.close()


@pytest.fixture
def gip(emu: GipEmulator, _gip_client: Gip) -> Gip:
    """A GIP + Langfuse client on the emulator (per test: no faults, quick runs)."""
    return _gip_client
