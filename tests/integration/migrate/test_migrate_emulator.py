"""Migrating auto evaluations created on the emulator (through GipHook), end to end over loopback HTTP.

Shows that the generated DAGs load, fire at the instants the emulator's own auto evaluation fires
(over ordinary days and across DST changes) and evaluate the same targets, and that
``--disable-in-gip`` only touches GIP after the output was written and verified.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid

import pendulum
import pytest

from gip_airflow import cli, dag_factory
from gip_airflow.hooks.gip import GipHook
from gip_airflow.migrate import MigrationOptions, firings, read_from_api, read_from_file, run_migration
from tests.integration.migrate import configs
from tests.integration.operators.helpers import run_dag, xcom


@pytest.fixture
def env(airflow_db, gip_emulator, gip_conn):
    gip_emulator.clear_faults()
    gip_emulator.set_run_speed(run_seconds=0.5)
    yield gip_emulator
    gip_emulator.set_run_speed(run_seconds=0.5)


@pytest.fixture
def hook(env):
    with GipHook(retry_backoff=0.01) as h:
        yield h


@pytest.fixture
def gip(hook, env):
    """A credential, an evaluator, and three experiments with one auto evaluation each (unique names)."""
    tag = uuid.uuid4().hex[:6]
    cred = hook.create_langfuse_credential(
        {
            "alias": f"migrate-{tag}",
            "base_url": env.base_url,
            "public_key": env.langfuse_public_key,
            "private_key": env.langfuse_secret_key,
        }
    ).id
    evaluator = hook.create_evaluator(
        {
            "name": f"migrate-bool-{tag}",
            "metric": {"type": "bool"},
            "evaluation_config": {
                "judge_model_seq_id": 19,
                "judge_model_public_id": "openai/gpt-4",
                "judge_model_parameters": {"temperature": 0.0, "max_tokens": 50},
                "judge_prompt": "Answer <rationale>...</rationale><rating>true|false</rating>.",
            },
        }
    ).id
    made = {}
    specs = {
        # name: (experiment body, schedule, zone, extra)
        "traces": (
            configs.trace_experiment(f"traces-{tag}", relative="P2D", cred=cred),
            "0 9 * * *",
            "America/New_York",
            {"metadata": configs.SCORE_SYNC},
        ),
        "observations": (
            configs.observation_experiment(f"observations-{tag}", relative="PT36H", cred=cred),
            "30 2 * * *",
            "Europe/Berlin",
            {},
        ),
        "dataset": (
            configs.dataset_experiment(
                f"dataset-{tag}", cred=cred, dataset="JSONL_samples-plan_suggestion_dataset_v2"
            ),
            "0 */4 * * *",
            "Asia/Seoul",
            {},
        ),
    }
    for key, (body, schedule, zone, extra) in specs.items():
        exp = hook.create_experiment(body)
        config = hook.create_auto_evaluation(
            exp.id, configs.auto_evaluation(f"{key} {tag}", schedule, zone, evaluator=evaluator, **extra)
        )
        made[key] = (exp, config)
    yield {"tag": tag, "cred": cred, "evaluator": evaluator, "made": made}
    # Delete the configs, so the emulator's scheduler never fires them during other tests.
    with env.client() as client:
        for exp, config in made.values():
            client.delete(env.ws_path(f"/evals/experiments/{exp.id}/auto-evaluations/{config.id}"))


def experiment_ids(gip) -> list[str]:
    return [exp.id for exp, _ in gip["made"].values()]


def emulator_firings(env, config_id: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The emulator's own firing instants of a config in ``[start, end)``."""
    return [pendulum.parse(f) for f in env.firings(config_id, start.isoformat(), end.isoformat())]


def preview(env, experiment_id: str, at: dt.datetime | None = None) -> list[str]:
    """Target ids the emulator would select for a run of the experiment executing at ``at``."""
    return env.preview_targets(experiment_id, at.isoformat() if at else None)


def migrate(hook, gip, tmp_path, **kw):
    opts = MigrationOptions(spec_file=tmp_path / "dags" / "spec.json", poll_interval=0.5, **kw)
    sources = read_from_api(hook, experiment_ids=experiment_ids(gip))
    return opts, run_migration(sources, opts, hook=hook, echo=lambda _: None)


def local_days(zone: str, now: dt.datetime) -> list[tuple[pendulum.Date, pendulum.Date]]:
    """An ordinary day, and the days around every DST change in the next year, in ``zone``."""
    today = pendulum.instance(now).in_timezone(zone).date()
    windows = [(today + dt.timedelta(days=3), today + dt.timedelta(days=3))]
    for offset in range(366):
        day = today + dt.timedelta(days=offset)
        a = pendulum.datetime(day.year, day.month, day.day, tz=zone).utcoffset()
        b = pendulum.datetime(day.year, day.month, day.day, tz=zone).add(days=1).utcoffset()
        if a != b:
            windows.append((day - dt.timedelta(days=1), day + dt.timedelta(days=1)))
    return windows


def test_migrated_dags_load_and_fire_like_gip(env, hook, gip, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    opts, result = migrate(hook, gip, tmp_path)
    assert result.error is None and result.verified and result.exit_code == 0
    assert len(result.plan.dags) == 3

    # The shipped factory DAG file loads the written spec: no import errors, one DAG per config.
    monkeypatch.setenv(dag_factory.SPEC_ENV_VAR, str(opts.spec_file))
    factory_file = dag_factory.Path(__file__).resolve().parents[3] / "dags" / "gip_auto_evaluation_factory.py"
    bag = DagBag(dag_folder=str(factory_file), safe_mode=True)
    assert bag.import_errors == {}
    planned = {p.source.auto_evaluation_id: p for p in result.plan.dags}
    assert {p.spec.dag_id for p in planned.values()} == set(bag.dags)

    compared, differing = 0, []
    now = pendulum.now("UTC")
    for _exp, config in gip["made"].values():
        entry = planned[config.id]
        dag = bag.dags[entry.spec.dag_id]
        assert str(getattr(dag.timetable.timezone, "name", dag.timetable.timezone)) == config.timezone
        windows = local_days(config.timezone, now)
        assert len(windows) == (1 if config.timezone == "Asia/Seoul" else 3)
        for first, last in windows:
            start = pendulum.datetime(first.year, first.month, first.day, tz=config.timezone)
            end = pendulum.datetime(last.year, last.month, last.day, tz=config.timezone).add(days=1)
            # The DAG's timetable, as the scheduler iterates it (next_dagrun_info), vs the emulator.
            ours = firings(entry.spec, start, until=end - dt.timedelta(microseconds=1))
            theirs = emulator_firings(env, config.id, start, end)
            compared += len(theirs)
            assert theirs, (config.schedule, first)
            if [pendulum.instance(f) for f in ours] != theirs:
                # Only a local time inside the DST gap/overlap may differ, and the plan said so.
                change = (first + dt.timedelta(days=1)).isoformat()
                assert config.schedule == "30 2 * * *", (config.schedule, first, ours, theirs)
                assert any(f"DST change on {change}" in note for note in entry.notes), entry.notes
                differing.append((config.timezone, change, [str(f) for f in theirs], [str(f) for f in ours]))
    # Berlin 02:30: GIP fires at 03:00 (gap) / twice (overlap); Airflow at 03:30 / once.
    assert len(differing) == 2, differing
    print(f"compared {compared} emulator firings; DST differences: {differing}")


def test_migrated_dag_selects_the_same_targets_as_the_auto_evaluation(env, hook, gip, tmp_path, monkeypatch):
    warehouse = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    _opts, result = migrate(hook, gip, tmp_path, warehouse_conn_id="warehouse")
    exp, config = gip["made"]["traces"]
    entry = next(p for p in result.plan.dags if p.source.auto_evaluation_id == config.id)
    # The handover (start_date) is in the future; dag.test() of a past logical date needs an earlier one
    # (a real backfill, run type "backfill", is not limited by start_date).
    spec = entry.spec.model_copy(update={"start_date": pendulum.datetime(2020, 1, 1, tz="UTC")})
    dag = dag_factory.build_dag(spec)

    # The latest past firing of the GIP config whose relative window holds traces.
    now = pendulum.now("UTC")
    past = emulator_firings(env, config.id, now - dt.timedelta(days=8), now)
    fire = next(f for f in reversed(past) if preview(env, exp.id, f))
    expected = preview(env, exp.id, fire)  # what GIP's auto evaluation would evaluate at `fire`

    dag_run = run_dag(dag, logical_date=fire)
    assert dag_run.state == "success"
    window_exp = xcom(dag_run, "create_window_experiment")
    run_id = xcom(dag_run, "start_run")
    created = hook.get_experiment(window_exp)
    flt = created.config["trace_filter_request"]
    assert flt["from_timestamp"] == int((fire - dt.timedelta(days=2)).timestamp() * 1000)
    assert flt["to_timestamp"] == int(fire.timestamp() * 1000)
    assert flt["relative_time_range"] is None
    assert sorted(preview(env, window_exp)) == sorted(expected)
    assert preview(env, window_exp, now + dt.timedelta(days=30)) == preview(env, window_exp)  # fixed
    run = env.run(run_id)
    assert run["status"] == "DONE" and run["target_count"] == len(expected) > 0
    assert run["metadata"] == configs.SCORE_SYNC and run["evaluator_id"] == config.evaluator_id
    print(f"{len(expected)} targets at {fire.isoformat()}: DAG run {run_id} evaluated {run['target_count']}")
    # ... and the results reached the warehouse.
    loaded = xcom(dag_run, "load_to_warehouse")
    assert loaded["rows"] == len(expected) and loaded["run_id"] == run_id
    with sqlite3.connect(warehouse) as db:
        assert db.execute(
            "SELECT count(*) FROM gip_evaluation_results WHERE run_id = ?", (run_id,)
        ).fetchone() == (len(expected),)

    # Running the same interval again reuses the windowed experiment and the run (reproducible, no cost).
    again = run_dag(dag, logical_date=fire)
    assert xcom(again, "create_window_experiment") == window_exp


def test_disable_in_gip_only_after_output_written_and_verified(env, hook, gip, tmp_path, monkeypatch, capsys):
    from gip_airflow import migrate as migrate_module

    events: list[str] = []
    spec_file = tmp_path / "dags" / "spec.json"
    real_verify, real_update = migrate_module.verify_outputs, GipHook.update_auto_evaluation

    def verify(plan):
        events.append("verify")
        real_verify(plan)

    def update(self, experiment_id, config_id, body):
        doc = json.loads(spec_file.read_text())
        assert config_id in {d["source"]["auto_evaluation_id"] for d in doc["dags"]}
        events.append(f"disable {config_id}")
        return real_update(self, experiment_id, config_id, body)

    monkeypatch.setattr(migrate_module, "verify_outputs", verify)
    monkeypatch.setattr(GipHook, "update_auto_evaluation", update)
    args = [
        "migrate-auto-evaluations",
        "--spec-file",
        str(spec_file),
        "--disable-in-gip",
        "--handover-margin",
        "0",
    ]
    for exp_id in experiment_ids(gip):
        args += ["--experiment-id", exp_id]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    ids = {config.id for _, config in gip["made"].values()}
    assert events[0] == "verify" and sorted(events[1:]) == sorted(f"disable {i}" for i in ids)
    assert out.count("disabled at") == 3
    for exp, config in gip["made"].values():
        (stored,) = [c for c in hook.list_auto_evaluations(exp.id) if c.id == config.id]
        assert stored.enabled is False
    specs = dag_factory.load_spec(spec_file)
    assert all(s.catchup and not s.paused_on_creation for s in specs)

    # Migrating again skips the now-disabled configs and keeps their DAGs.
    result = run_migration(
        read_from_api(hook, experiment_ids=experiment_ids(gip)),
        MigrationOptions(spec_file=spec_file),
        hook=hook,
        echo=lambda _: None,
    )
    assert not result.plan.dags and len(result.plan.skipped) == 3
    assert all("already migrated" in s.reason for s in result.plan.skipped)
    assert dag_factory.load_spec(spec_file) == specs


@pytest.mark.parametrize("failure", ["write", "verify"])
def test_a_failed_write_or_verify_leaves_gip_enabled(env, hook, gip, tmp_path, monkeypatch, failure):
    from gip_airflow import migrate as migrate_module

    calls: list[str] = []
    monkeypatch.setattr(GipHook, "update_auto_evaluation", lambda *a, **k: calls.append("disable"))
    if failure == "write":
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("a file where the output directory should be")
        spec_file = blocker / "spec.json"
    else:
        spec_file = tmp_path / "spec.json"
        spec_file.write_text('{"version": 1, "dags": []}')

        def broken(plan):
            raise migrate_module.VerificationError("simulated: DAG does not import")

        monkeypatch.setattr(migrate_module, "verify_outputs", broken)
    opts = MigrationOptions(spec_file=spec_file, disable_in_gip=True)
    result = run_migration(
        read_from_api(hook, experiment_ids=experiment_ids(gip)), opts, hook=hook, echo=lambda _: None
    )
    assert result.exit_code == 1 and "GIP configs left enabled" in result.error
    assert calls == []
    if failure == "verify":
        assert spec_file.read_text() == '{"version": 1, "dags": []}'  # restored
    for exp, config in gip["made"].values():
        assert all(c.enabled for c in hook.list_auto_evaluations(exp.id))


def test_unsupported_configs_from_file_are_checked_against_gip(env, hook, gip, tmp_path):
    exp, _config = gip["made"]["traces"]
    entries = [
        {
            "id": "x1",
            "experiment_id": str(uuid.uuid4()),
            "auto_evaluation": configs.auto_evaluation(
                "missing experiment", "0 8 * * *", "Etc/UTC", evaluator=gip["evaluator"]
            ),
        },
        {
            "id": "x2",
            "experiment_id": exp.id,
            "auto_evaluation": configs.auto_evaluation(
                "missing evaluator", "0 8 * * *", "Etc/UTC", evaluator=str(uuid.uuid4())
            ),
        },
        {
            "id": "x3",
            "experiment_id": exp.id,
            "auto_evaluation": configs.auto_evaluation(
                "fine", "0 8 * * *", "Europe/Berlin", evaluator=gip["evaluator"]
            ),
        },
    ]
    path = tmp_path / "configs.json"
    path.write_text(json.dumps(entries))
    opts = MigrationOptions(spec_file=tmp_path / "spec.json")
    result = run_migration(read_from_file(path, hook), opts, hook=hook, echo=lambda _: None)
    reasons = {u.auto_evaluation_id: u.reason for u in result.plan.unsupported}
    assert "is missing in GIP" in reasons["x1"] and "experiment" in reasons["x1"]
    assert "evaluator" in reasons["x2"] and "is missing in GIP" in reasons["x2"]
    assert [p.source.auto_evaluation_id for p in result.plan.dags] == ["x3"]
    # The experiment definition came from GIP: its relative range became a window.
    assert result.plan.dags[0].spec.window == "P2D" and result.exit_code == 3


def test_disable_waits_for_gip_firings_before_the_handover(env, hook, gip, tmp_path):
    """A firing inside the handover margin still belongs to GIP: the config is disabled only after it."""
    _exp, config = gip["made"]["dataset"]  # 0 */4 * * * Asia/Seoul
    now = pendulum.now("UTC")
    (fire,) = emulator_firings(env, config.id, now, now + dt.timedelta(hours=4))
    planned_at = fire - dt.timedelta(seconds=60)
    clock = [planned_at + dt.timedelta(seconds=5)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += dt.timedelta(seconds=seconds)

    opts = MigrationOptions(spec_file=tmp_path / "spec.json", disable_in_gip=True)
    sources = [
        s
        for s in read_from_api(hook, experiment_ids=experiment_ids(gip))
        if s.auto_evaluation_id == config.id
    ]
    result = run_migration(
        sources, opts, hook=hook, now=planned_at, echo=lambda _: None, clock=lambda: clock[0], sleep=sleep
    )
    (entry,) = result.plan.dags
    assert entry.gip_firings == [fire]
    assert pendulum.instance(entry.handover) == fire + dt.timedelta(hours=4)
    assert slept == [pytest.approx(55 + 30)]  # until the firing + the grace GIP gets to create its run
    assert result.disabled[0].disabled and result.exit_code == 0
    assert not any(c.enabled for c in hook.list_auto_evaluations(_exp.id))


def test_a_config_that_cannot_be_disabled_gets_a_paused_dag(env, hook, gip, tmp_path, monkeypatch):
    from gip_airflow.exceptions import GipApiError

    _exp, failing = gip["made"]["observations"]
    real_update = GipHook.update_auto_evaluation

    def update(self, experiment_id, config_id, body):
        if config_id == failing.id:
            raise GipApiError("simulated: GIP answered HTTP 500", http_status=500)
        return real_update(self, experiment_id, config_id, body)

    monkeypatch.setattr(GipHook, "update_auto_evaluation", update)
    opts = MigrationOptions(
        spec_file=tmp_path / "spec.json", disable_in_gip=True, handover_margin=dt.timedelta(0)
    )
    lines: list[str] = []
    result = run_migration(
        read_from_api(hook, experiment_ids=experiment_ids(gip)), opts, hook=hook, echo=lines.append
    )
    assert result.exit_code == 3
    specs = {s.source.auto_evaluation_id: s for s in dag_factory.load_spec(opts.spec_file)}
    assert (specs[failing.id].catchup, specs[failing.id].paused_on_creation) == (False, True)
    others = [s for key, s in specs.items() if key != failing.id]
    assert all(s.catchup and not s.paused_on_creation for s in others)
    assert any("still enabled in GIP" in line for line in lines)
    assert [c.enabled for c in hook.list_auto_evaluations(_exp.id)] == [True]


def test_cli_finds_a_connection_stored_in_the_metadata_db(env, gip, tmp_path, monkeypatch, capsys):
    """``airflow connections add`` stores connections in the DB, which the task SDK does not read outside
    tasks; the CLI looks there too."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    conn_id, var = "gip_migrate_db", "AIRFLOW_CONN_GIP_MIGRATE_DB"
    monkeypatch.setenv(var, "placeholder")
    monkeypatch.delenv(var)  # restored to "unset" after the test, whatever the CLI exported
    with create_session() as session:
        session.add(Connection.from_json(env.conn_json(), conn_id=conn_id))
    try:
        args = [
            "migrate-auto-evaluations",
            "--conn-id",
            conn_id,
            "--dry-run",
            "--spec-file",
            str(tmp_path / "s.json"),
        ]
        for exp_id in experiment_ids(gip):
            args += ["--experiment-id", exp_id]
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert "3 to migrate, 0 unsupported, 0 skipped" in out and "Dry run" in out
        assert env.api_key not in out
        assert not (tmp_path / "s.json").exists()
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
