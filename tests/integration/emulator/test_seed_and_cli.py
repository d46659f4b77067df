"""Seed files and the command line: formats, errors, custom identities, a second emulator as Langfuse."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from gip_airflow.api import Paths
from gip_airflow_emulator.__main__ import main
from gip_airflow_emulator.pytest_plugin import start_emulator
from gip_airflow_emulator.seed import (
    SeedError,
    dumps_default_seed,
    generate_default_seed,
    load_seed,
    parse_seed,
    resolve_time,
)

NOW = 1_742_293_735_000  # 2025-03-18T10:28:55Z


#: SHA-256 of the default seed's JSON text (UTF-8), as the shipped default_seed.json had it.
DEFAULT_SEED_SHA256 = "e0923cd08998fc70fb0b000a76766719e603b1b57582157f8ccbfbcdb3ff9383"


def test_default_seed_is_generated_with_the_known_content():
    """The seed generated at start-up is, byte for byte, the data the emulator has always served.

    If you change the default seed on purpose, put the new digest here (the tests that rely on the
    seed's data will tell you whether the change is compatible).
    """
    text = dumps_default_seed()
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == DEFAULT_SEED_SHA256
    assert dumps_default_seed() == text  # deterministic within a process too


def test_no_path_loads_the_generated_seed():
    assert load_seed(None, NOW) == parse_seed(json.loads(dumps_default_seed()), NOW)
    assert load_seed(None, NOW) == parse_seed(generate_default_seed(), NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("now", NOW),
        ("now-PT1H", NOW - 3_600_000),
        ("now+P1DT30M", NOW + 86_400_000 + 1_800_000),
        ("now-PT0.5S", NOW - 500),
        ("2025-03-18T09:15:00Z", 1_742_289_300_000),
        ("2025-03-18T18:15:00+09:00", 1_742_289_300_000),
        (1_742_289_300_000, 1_742_289_300_000),
        ("1742289300000", 1_742_289_300_000),
    ],
)
def test_seed_timestamps(value, expected):
    assert resolve_time(value, NOW) == expected


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"langfuse": {"traces": [{"id": "t", "timestamp": "yesterday"}]}}, "traces[0].timestamp"),
        (
            {"langfuse": {"traces": [{"id": "t", "timestamp": "now"}, {"id": "t", "timestamp": "now"}]}},
            "duplicate id 't'",
        ),
        ({"langfuse": {"datasets": [{"name": "d", "items": [{"id": "i", "status": "DELETED"}]}]}}, "status"),
        (
            {"langfuse": {"datasets": [{"name": "d", "items": [{"id": "i"}], "synthetic": {"count": 3}}]}},
            "either 'items' or 'synthetic'",
        ),
        ({"models": [{"public_id": "x/y"}]}, "models.0.seq_id"),
        ({"langfuse": {"tracez": []}}, "langfuse.tracez"),
        ({"version": 2}, "version 2"),
    ],
)
def test_seed_errors_name_the_place(doc, message):
    with pytest.raises(SeedError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_seed(doc, NOW, "test.json")


CUSTOM_SEED = {
    "version": 1,
    "models": [
        {"seq_id": 1, "public_id": "acme/judge-1", "quality": 0.9},
        {"seq_id": 2, "public_id": "acme/small"},
    ],
    "langfuse": {
        "datasets": [
            {
                "name": "custom-ds",
                "items": [
                    {
                        "id": "c-1",
                        "input": "안녕하세요?",
                        "expectedOutput": "네, 안녕하세요.",
                        "sourceTraceId": "ct-1",
                    },
                    {"id": "c-2", "input": {"q": "2+2"}, "expectedOutput": "4", "status": "ARCHIVED"},
                ],
            }
        ],
        "traces": [
            {
                "id": "ct-1",
                "timestamp": "now-PT2H",
                "name": "greet",
                "input": "안녕",
                "output": "안녕하세요",
                "tags": ["a"],
            },
            {
                "id": "ct-2",
                "timestamp": "2025-03-18T09:15:00Z",
                "name": "greet",
                "input": "hi",
                "output": "hello",
            },
        ],
        "observations": [{"id": "co-1", "traceId": "ct-1", "startTime": "now-PT2H", "name": "llm"}],
    },
    "gip": {
        "credentials": [
            {
                "id": "cred-1",
                "alias": "self",
                "base_url": "{emulator_url}",
                "public_key": "{langfuse_public_key}",
                "private_key": "{langfuse_secret_key}",
            }
        ],
        "experiments": [
            {
                "id": "exp-1",
                "name": "custom",
                "type": "langfuse_dataset",
                "config": {"integrated_service_credential_id": "cred-1", "dataset_name": "custom-ds"},
            }
        ],
        "evaluators": [
            {
                "id": "ev-1",
                "name": "bool judge",
                "metric": {"type": "bool"},
                "evaluation_config": {
                    "judge_model_seq_id": 1,
                    "judge_model_public_id": "acme/judge-1",
                    "judge_prompt": "judge",
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def custom_emulator(tmp_path_factory):
    seed = tmp_path_factory.mktemp("seed") / "seed.json"
    seed.write_text(json.dumps(CUSTOM_SEED, ensure_ascii=False), encoding="utf-8")
    handle = start_emulator(
        "--seed", str(seed),
        "--api-key", "custom-key-123",
        "--workspace-id", "0195a8c0-aaaa-7000-8000-000000000000",
        "--langfuse-public-key", "pk-lf-custom",
        "--langfuse-secret-key", "sk-lf-custom",
        "--run-seconds", "0.1",
        "--fault-error-rate", "1", "--fault-max", "1", "--fault-error-statuses", "503",
    )  # fmt: skip
    yield handle
    handle.stop()


def test_custom_seed_and_identities(custom_emulator):
    emu = custom_emulator
    emu.reset()  # start-up state, including the one-fault budget of the flags
    assert emu.api_key == "custom-key-123" and emu.langfuse_secret_key == "sk-lf-custom"
    with emu.client() as http:
        first = http.get(Paths.models(emu.workspace_id))
        assert first.status_code == 503  # --fault-error-rate 1 --fault-max 1: exactly one fault
        models = http.get(Paths.models(emu.workspace_id)).json()["data"]
        assert [m["public_id"] for m in models] == ["acme/judge-1", "acme/small"]
        assert http.get(Paths.models("2d6d2b89-8454-40a1-8d85-0aaba543f47e")).status_code == 404
        run = http.post(
            Paths.runs(emu.workspace_id, "exp-1"), json={"evaluator_id": "ev-1", "display_name": "custom"}
        ).json()
        done = emu.wait_for_run(run["id"])
        assert done["status"] == "DONE" and done["target_count"] == 1
        csv_text = http.get(Paths.run_download(emu.workspace_id, "exp-1", run["id"])).text
        assert "안녕하세요?" in csv_text
    with httpx.Client(base_url=emu.base_url, auth=("pk-lf-custom", "sk-lf-custom")) as lf:
        traces = lf.get("/api/public/traces").json()["data"]
        assert [t["id"] for t in traces] == ["ct-1", "ct-2"]
        assert traces[1]["timestamp"] == "2025-03-18T09:15:00.000Z"
        assert traces[0]["observations"] == ["co-1"]
        assert (
            lf.get("/api/public/traces", params={"fromTimestamp": "2025-03-19T00:00:00Z"}).json()["meta"][
                "totalItems"
            ]
            == 1
        )


def test_reset_drops_client_objects_and_keeps_the_seed(custom_emulator):
    emu = custom_emulator
    emu.reset()
    emu.clear_faults()
    ws = emu.workspace_id
    with emu.client() as http:
        body = {
            "alias": "mine",
            "base_url": emu.base_url,
            "public_key": "pk-lf-custom",
            "private_key": "sk-lf-custom",
        }
        cred = http.post(Paths.credentials(ws), json=body).json()["id"]
        config = {"integrated_service_credential_id": cred, "dataset_name": "custom-ds"}
        exp = http.post(
            Paths.experiments(ws), json={"name": "mine", "type": "langfuse_dataset", "config": config}
        ).json()["id"]
        sync = {"langfuse_integration_config": {"score_name": "reset_me", "sync_score": True}}
        run = http.post(
            Paths.runs(ws, "exp-1"), json={"evaluator_id": "ev-1", "display_name": "r", "metadata": sync}
        ).json()
        assert emu.wait_for_run(run["id"])["status"] == "DONE"
        emu.create_dataset("reset-ds", 10)
        emu.set_run_speed(run_seconds=5)
        with httpx.Client(base_url=emu.base_url, auth=("pk-lf-custom", "sk-lf-custom")) as lf:
            synced = lf.get("/api/public/scores", params={"name": "reset_me"}).json()["meta"]["totalItems"]
            assert synced == emu.run(run["id"])["scores_synced"]

            emu.reset()
            assert emu.runs() == [] and emu.stats()["runs_created"] == 0
            assert lf.get("/api/public/scores", params={"name": "reset_me"}).json()["data"] == []
            assert lf.get("/api/public/v2/datasets/reset-ds").status_code == 404
            assert lf.get("/api/public/v2/datasets/custom-ds").status_code == 200
        assert emu.info()["run_behaviour"]["run_seconds"] == 0.1  # the --run-seconds value
        assert http.get(Paths.models(ws)).status_code == 503  # start-up faults are back (one, then none)
        assert http.get(Paths.experiment(ws, exp)).status_code == 404
        assert http.get(Paths.experiment(ws, "exp-1")).status_code == 200
        assert http.get(Paths.evaluator(ws, "ev-1")).status_code == 200
        assert [c["id"] for c in http.get(Paths.credentials(ws)).json()["data"]] == ["cred-1"]


def test_a_credential_can_point_at_another_langfuse(gip, custom_emulator):
    """The session emulator reads targets over HTTP from the second emulator's Langfuse API."""
    cred = gip.credential(
        alias="other-langfuse",
        base_url=custom_emulator.base_url,
        public_key="pk-lf-custom",
        private_key="sk-lf-custom",
    )
    exp = gip.trace_experiment(credential=cred, trace_filter_request={"name": "greet"})
    assert gip.emu.preview_targets(exp) == ["ct-1", "ct-2"]
    run = gip.run_done(exp, gip.evaluator())
    rows = gip.rows(exp, run["id"])
    assert [r["input_data_from_experiment"] for r in rows] == ["안녕", "hi"]
    wrong = gip.credential(
        alias="other-wrong",
        base_url=custom_emulator.base_url,
        public_key="pk-lf-custom",
        private_key="sk-lf-emulator",
    )
    exp = gip.trace_experiment(credential=wrong)
    failed = gip.wait(exp, gip.start_run(exp, gip.evaluator())["id"])
    assert failed["status"] == "FAILED" and "other-wrong" in failed["aggregated_result"]["error"]


def test_bad_seed_or_flags_stop_the_emulator_with_a_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"langfuse": {"traces": [{"id": "x", "timestamp": "soon"}]}}')
    with pytest.raises(SystemExit, match=r"traces\[0\]\.timestamp"):
        main(["--seed", str(bad), "--port", "0"])
    with pytest.raises(SystemExit, match=r"faults\.error_rate"):
        main(["--fault-error-rate", "3", "--port", "0"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--seed", str(tmp_path / "missing.json"), "--port", "0"])
    with pytest.raises(RuntimeError, match=r"exited with code 1:\n.*traces\[0\]\.timestamp"):
        start_emulator("--seed", str(bad), timeout=20)  # the fixture reports what the process said


def test_dump_seed_prints_the_default_seed(capsys):
    main(["--dump-seed"])
    assert json.loads(capsys.readouterr().out) == json.loads(dumps_default_seed())
