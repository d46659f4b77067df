"""Planning, output formats and the factory DAG — from a config file, without GIP (no network)."""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import pendulum
import pytest

from gip_airflow import cli, dag_factory
from gip_airflow.migrate import (
    MigrationOptions,
    plan_migration,
    read_from_file,
    render_plan,
    run_migration,
    sanitize_dag_id,
)
from tests.integration.migrate import configs

REPO = pathlib.Path(__file__).resolve().parents[2]
FACTORY = REPO / "dags" / "gip_auto_evaluation_factory.py"
NOW = dt.datetime(2025, 3, 7, 12, 0, tzinfo=dt.UTC)  # two days before New York's spring-forward


@pytest.fixture
def config_file(tmp_path) -> pathlib.Path:
    path = tmp_path / "auto_evaluations.json"
    path.write_text(json.dumps({"auto_evaluations": configs.file_entries()}))
    return path


def options(tmp_path, **kw) -> MigrationOptions:
    return MigrationOptions(spec_file=tmp_path / "out" / "spec.json", dag_dir=tmp_path / "out", **kw)


def test_plan_maps_schedule_window_and_carries_metadata(tmp_path, config_file):
    plan = plan_migration(read_from_file(config_file), options(tmp_path), now=NOW)
    by_id = {p.spec.dag_id: p.spec for p in plan.dags}
    assert sorted(by_id) == [
        "gip_auto_eval_nightly_chat_quality",
        "gip_auto_eval_nightly_chat_quality_ae3",
        "gip_auto_eval_weekly_plan_suggestions",
    ]
    nightly = by_id["gip_auto_eval_nightly_chat_quality"]
    expected = ("0 9,21 * * *", "America/New_York", "PT12H")
    assert (nightly.schedule, nightly.timezone, nightly.window) == expected
    assert nightly.interval == dt.timedelta(hours=12)
    assert nightly.experiment_id is None and nightly.experiment is not None
    flt = nightly.experiment["config"]["trace_filter_request"]
    assert flt["relative_time_range"] is None and flt["from_timestamp"] is None
    assert nightly.target_data_converter == configs.CONVERTER
    assert nightly.metadata == configs.SCORE_SYNC
    assert nightly.evaluator_id == configs.EVALUATOR
    assert nightly.source.auto_evaluation_id == "ae-1" and nightly.source.experiment_id == "exp-1"
    # Default (no --disable-in-gip): paused, no catch-up, handover = first firing >= now + 2 min.
    assert (nightly.catchup, nightly.paused_on_creation) == (False, True)
    # 09:00 EST
    assert pendulum.instance(nightly.start_date) == pendulum.datetime(2025, 3, 7, 14, 0, tz="UTC")

    weekly = by_id["gip_auto_eval_weekly_plan_suggestions"]
    assert weekly.experiment_id == "exp-2" and weekly.experiment is None and weekly.window is None
    assert weekly.interval == dt.timedelta(0)
    observation = by_id["gip_auto_eval_nightly_chat_quality_ae3"]  # same sanitised name -> made unique
    assert observation.window == "P1D" and observation.timezone == "Asia/Seoul"


def test_unsupported_configs_are_reported_with_reason_and_produce_nothing(tmp_path, config_file):
    plan = plan_migration(read_from_file(config_file), options(tmp_path), now=NOW)
    reasons = {u.auto_evaluation_id: u.reason for u in plan.unsupported}
    assert set(reasons) == {"ae-bad-cron", "ae-bad-tz", "ae-no-exp"}
    assert "not a valid cron" in reasons["ae-bad-cron"]
    assert "Mars/Olympus_Mons" in reasons["ae-bad-tz"] and "IANA" in reasons["ae-bad-tz"]
    assert "experiment missing" in reasons["ae-no-exp"]
    assert not {p.source.auto_evaluation_id for p in plan.dags} & set(reasons)


def test_switch_plan_hands_over_at_next_firing(tmp_path, config_file):
    plan = plan_migration(read_from_file(config_file), options(tmp_path, disable_in_gip=True), now=NOW)
    spec = next(p for p in plan.dags if p.source.auto_evaluation_id == "ae-3")
    # 0 23 * * * Asia/Seoul = 14:00 UTC; planned at 12:00 UTC -> handover today 14:00 UTC.
    assert pendulum.instance(spec.spec.start_date) == pendulum.datetime(2025, 3, 7, 14, tz="UTC")
    assert (spec.spec.catchup, spec.spec.paused_on_creation) == (True, False)
    assert spec.gip_firings == []  # no GIP firing between planning and the handover


def test_handover_margin_leaves_close_firings_to_gip(tmp_path, config_file):
    soon = dt.datetime(2025, 3, 7, 13, 59, tzinfo=dt.UTC)  # one minute before Seoul's 23:00
    plan = plan_migration(read_from_file(config_file), options(tmp_path, disable_in_gip=True), now=soon)
    entry = next(p for p in plan.dags if p.source.auto_evaluation_id == "ae-3")
    assert entry.gip_firings == [pendulum.datetime(2025, 3, 7, 14, tz="UTC")]
    assert pendulum.instance(entry.handover) == pendulum.datetime(2025, 3, 8, 14, tz="UTC")


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, config_file, capsys):
    out_dir = tmp_path / "out"
    code = cli.main(
        [
            "migrate-auto-evaluations",
            "--from-file",
            str(config_file),
            "--offline",
            "--dry-run",
            "--spec-file",
            str(out_dir / "spec.json"),
            "--warehouse-conn-id",
            "warehouse",
        ]
    )
    text = capsys.readouterr().out
    assert code == 3  # some configs unsupported
    assert not out_dir.exists()
    assert "3 to migrate, 3 unsupported, 0 skipped" in text
    assert "'Nightly chat quality!' -> DAG gip_auto_eval_nightly_chat_quality" in text
    assert "source:    file:auto_evaluations.json#0, auto evaluation ae-1 of experiment exp-1" in text
    assert "CronTriggerTimetable('0 9,21 * * *', timezone='America/New_York', interval=PT12H)" in text
    assert "relative_time_range PT12H -> explicit from/to" in text
    assert "every firing runs experiment exp-2" in text
    assert "carries:   target_data_converter, metadata (score sync)" in text
    assert "load:      results into gip_evaluation_results via warehouse" in text
    assert "GIP:       left untouched" in text
    assert "'bad zone' (file:auto_evaluations.json#4, ae-bad-tz): Invalid auto evaluation config" in text
    assert "Dry run: nothing written, GIP untouched." in text


def test_dry_run_text_for_a_switch(tmp_path, config_file):
    plan = plan_migration(read_from_file(config_file), options(tmp_path, disable_in_gip=True), now=NOW)
    text = render_plan(plan)
    assert "GIP:       GIP config disabled after the files are written and verified" in text
    handover = "handover:  Airflow owns firings from 2025-03-07T09:00:00-05:00 (2025-03-07T14:00:00+00:00)"
    assert handover in text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Nightly chat quality!", "gip_auto_eval_nightly_chat_quality"),
        ("  ", "gip_auto_eval_unnamed"),
        ("야간 평가 v2", "gip_auto_eval_v2"),
        ("a" * 300, "gip_auto_eval_" + "a" * 236),
    ],
)
def test_sanitize_dag_id(name, expected):
    assert sanitize_dag_id(name) == expected
    assert dag_factory.DAG_ID_PATTERN.match(expected)


def _serialized(dag) -> dict:
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dag)["dag"]
    for key in ("fileloc", "relative_fileloc", "_processor_dags_folder", "last_loaded"):
        data.pop(key, None)
    for task in data["tasks"]:
        task.get("__var", task).pop("_log_config_logger_name", None)
    return data


def test_both_formats_write_the_same_dags_and_rerun_is_stable(airflow_db, tmp_path, config_file):
    from airflow.dag_processing.dagbag import DagBag

    sources = read_from_file(config_file)
    factory = options(tmp_path, warehouse_conn_id=None)
    result = run_migration(sources, factory, now=NOW, echo=lambda _: None)
    assert result.error is None and result.verified and result.exit_code == 3
    dag_opts = MigrationOptions(output_format="dag", dag_dir=tmp_path / "dagfiles")
    result = run_migration(sources, dag_opts, now=NOW, echo=lambda _: None)
    assert result.error is None and result.verified
    files = sorted(p.name for p in (tmp_path / "dagfiles").glob("*.py"))
    assert files == [f"{d}.py" for d in sorted(p.spec.dag_id for p in result.plan.dags)]

    from_factory = dag_factory.build_dags(factory.spec_file)
    bag = DagBag(dag_folder=str(tmp_path / "dagfiles"), safe_mode=False)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == sorted(from_factory)
    for dag_id, dag in from_factory.items():
        assert _serialized(bag.dags[dag_id]) == _serialized(dag), dag_id
        tasks = [t.task_id for t in dag.topological_sort()]
        expected = ["start_run"] if dag.get_task("start_run").experiment_id == "exp-2" else None
        assert tasks == (expected or ["create_window_experiment", "start_run"])

    # A second migration replaces its own entries: same DAG ids, no duplicates, same file names.
    again = run_migration(sources, factory, now=NOW + dt.timedelta(days=1), echo=lambda _: None)
    assert {p.spec.dag_id for p in again.plan.dags} == set(from_factory)
    assert len(dag_factory.load_spec(factory.spec_file)) == 3


def test_window_experiment_task_gets_the_data_interval(airflow_db, tmp_path, config_file):
    plan = plan_migration(read_from_file(config_file), options(tmp_path), now=NOW)
    spec = next(p.spec for p in plan.dags if p.spec.window == "PT12H")
    dag = dag_factory.build_dag(spec)
    from airflow.serialization.encoders import coerce_to_core_timetable

    # the DAG holds the task SDK's timetable; the scheduler computes with its core counterpart
    info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=None,
        restriction=__import__("airflow.timetables.base", fromlist=["TimeRestriction"]).TimeRestriction(
            earliest=pendulum.instance(spec.start_date), latest=None, catchup=True
        ),
    )
    # The firing at 09:00 New York evaluates the 12 hours before it, as GIP's relative range did.
    assert info.run_after == pendulum.datetime(2025, 3, 7, 14, tz="UTC")
    assert info.data_interval.start == pendulum.datetime(2025, 3, 7, 2, tz="UTC")
    task = dag.get_task("create_window_experiment")
    assert task.window == "data_interval"
    assert task.name == "chat-traces [{{ data_interval_start }}, {{ data_interval_end }})"
    run = dag.get_task("start_run")
    assert run.deferrable is True
    assert run.target_data_converter == configs.CONVERTER
    assert run.metadata == configs.SCORE_SYNC


def test_factory_dag_without_spec_or_with_empty_spec_has_no_dags(airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    for content in (None, "", "  \n", '{"version": 1, "dags": []}'):
        spec = tmp_path / "spec.json"
        spec.unlink(missing_ok=True)
        if content is not None:
            spec.write_text(content)
        monkeypatch.setenv(dag_factory.SPEC_ENV_VAR, str(spec))
        bag = DagBag(dag_folder=str(FACTORY), safe_mode=False)
        assert bag.import_errors == {} and bag.dags == {}, content


def test_factory_dag_reads_the_spec_and_reports_a_broken_one(airflow_db, tmp_path, monkeypatch, config_file):
    from airflow.dag_processing.dagbag import DagBag

    opts = options(tmp_path)
    run_migration(read_from_file(config_file), opts, now=NOW, echo=lambda _: None)
    monkeypatch.setenv(dag_factory.SPEC_ENV_VAR, str(opts.spec_file))
    bag = DagBag(dag_folder=str(FACTORY), safe_mode=True)
    assert bag.import_errors == {} and len(bag.dags) == 3

    doc = json.loads(opts.spec_file.read_text())
    doc["dags"][0]["timezone"] = "Mars/Olympus_Mons"
    opts.spec_file.write_text(json.dumps(doc))
    bag = DagBag(dag_folder=str(FACTORY), safe_mode=False)
    (error,) = bag.import_errors.values()
    assert "timezone" in error and "Mars/Olympus_Mons" in error


def test_example_spec_is_valid_and_builds(airflow_db):
    pytest.importorskip("gip_airflow.transfers.gip_to_sql")
    dags = dag_factory.build_dags(REPO / "dags" / "gip_auto_evaluations.example.json")
    assert sorted(dags) == ["gip_auto_eval_nightly_chat_quality", "gip_auto_eval_weekly_plan_suggestions"]
    weekly = dags["gip_auto_eval_weekly_plan_suggestions"]
    assert [t.task_id for t in weekly.topological_sort()] == ["start_run", "load_to_warehouse"]


def test_windows_before_the_handover_can_be_backfilled(airflow_db, tmp_path, config_file):
    """A backfill (run type backfill) is not limited by the DAG's start_date (the handover): past windows
    of the former relative range can be evaluated, each with its explicit [fire - 12h, fire) interval."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models import DagRun, TaskInstance
    from airflow.models.backfill import _create_backfill
    from airflow.utils.session import create_session
    from sqlalchemy import select

    plan = plan_migration(read_from_file(config_file), options(tmp_path, disable_in_gip=True), now=NOW)
    spec = next(p.spec for p in plan.dags if p.spec.window == "PT12H")
    spec = spec.model_copy(update={"dag_id": "gip_migrate_backfill_probe"})
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent", collect_dags=False)
    bag.bag_dag(dag_factory.build_dag(spec))
    sync_bag_to_db(bag, "dags-folder", None)

    # Two days *before* the handover (2025-03-07T14:00Z).
    _create_backfill(
        dag_id=spec.dag_id,
        from_date=pendulum.datetime(2025, 3, 1, tz="UTC"),
        to_date=pendulum.datetime(2025, 3, 2, 23, 59, tz="UTC"),
        max_active_runs=1,
        reverse=False,
        dag_run_conf=None,
        triggering_user_name="test",
    )
    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == spec.dag_id).order_by(DagRun.logical_date)
        ).all()
        intervals = [(r.data_interval_start.isoformat(), r.data_interval_end.isoformat()) for r in runs]
        tis = session.scalars(select(TaskInstance.task_id).where(TaskInstance.dag_id == spec.dag_id)).all()
    # Each firing (09:00 and 21:00 New York = 14:00 and 02:00 UTC) evaluates the 12 hours before it.
    assert intervals == [
        ("2025-02-28T14:00:00+00:00", "2025-03-01T02:00:00+00:00"),
        ("2025-03-01T02:00:00+00:00", "2025-03-01T14:00:00+00:00"),
        ("2025-03-01T14:00:00+00:00", "2025-03-02T02:00:00+00:00"),
        ("2025-03-02T02:00:00+00:00", "2025-03-02T14:00:00+00:00"),
    ]
    assert sorted(tis) == sorted(["create_window_experiment", "start_run"] * 4)


ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Seoul", "Etc/UTC"]
CRONS = [
    "0 23 * * *",
    "0 9,21 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "30 2 * * *",
    "*/30 1-3 * * *",
    "0 2 * * 0",
]


@pytest.mark.parametrize("zone", ZONES)
def test_timetable_fires_like_the_emulator_scheduler(zone):
    """Over 2025 (an ordinary week and every DST change), the migrated timetable fires at the emulator's
    instants; where it does not (local times in a DST gap or overlap), the plan's note said so."""
    from gip_airflow.migrate import dst_differences, firings
    from gip_airflow_emulator.scheduler import firings as emulator_firings

    start = pendulum.datetime(2025, 1, 1, tz="UTC")
    days = [pendulum.datetime(2025, 6, 2, tz=zone)]  # an ordinary week from here
    for offset in range(365):
        day = start.in_timezone(zone).add(days=offset).start_of("day")
        if day.utcoffset() != day.add(days=1).utcoffset():
            days.append(day.subtract(days=1))
    assert len(days) == (1 if zone in ("Asia/Seoul", "Etc/UTC") else 3)
    summary = []
    for cron in CRONS:
        spec = dag_factory.AutoEvaluationDagSpec(
            dag_id="probe",
            schedule=cron,
            timezone=zone,
            evaluator_id="e",
            experiment_id="x",
            run_name="probe",
        )
        notes = " ".join(dst_differences(spec, start, days=365))
        for first in days:
            lo, hi = first.in_timezone("UTC"), first.add(days=7 if first.month == 6 else 3).in_timezone("UTC")
            ours = [int(f.timestamp() * 1000) for f in firings(spec, lo, until=hi)]
            theirs = emulator_firings(cron, zone, int(lo.timestamp() * 1000) - 1, int(hi.timestamp() * 1000))
            change = first.add(days=1).date().isoformat()
            assert (ours != theirs) == (f"DST change on {change}" in notes), (cron, change, notes)
            if ours != theirs:
                summary.append(
                    f"{cron} {change}: {len(set(theirs) - set(ours))} GIP-only, "
                    f"{len(set(ours) - set(theirs))} Airflow-only"
                )
    print(zone, summary)


def test_ids_and_options_are_validated(tmp_path, capsys):
    """Ids end up in URL paths (PATCH .../auto-evaluations/{id}): a path-like id is refused."""
    entries = [
        {
            "id": "../../evaluators/x",
            "experiment_id": "exp-1",
            "experiment": configs.trace_experiment(),
            "auto_evaluation": configs.auto_evaluation("sneaky", "0 8 * * *", "Etc/UTC"),
        },
        {
            "id": "ae-9",
            "experiment_id": "exp-1",
            "experiment": configs.trace_experiment(),
            "auto_evaluation": configs.auto_evaluation(
                "bad evaluator", "0 8 * * *", "Etc/UTC", evaluator="a/b"
            ),
        },
    ]
    path = tmp_path / "configs.json"
    path.write_text(json.dumps(entries))
    plan = plan_migration(read_from_file(path), options(tmp_path), now=NOW)
    assert not plan.dags
    reasons = [u.reason for u in plan.unsupported]
    assert "not a valid GIP id" in reasons[0] and "evaluator_id 'a/b' is not a valid GIP id" in reasons[1]

    for bad in (["--dag-id-prefix", "a b"], ["--warehouse-table", "results; drop table x"]):
        code = cli.main(
            ["migrate-auto-evaluations", "--from-file", str(path), "--offline", "--dry-run", *bad]
        )
        assert code == 2
    assert "may only hold letters" in capsys.readouterr().err


def test_offline_without_a_file_is_refused_before_anything_runs(capsys):
    assert cli.main(["migrate-auto-evaluations", "--offline", "--dry-run"]) == 2
    assert "--offline needs --from-file" in capsys.readouterr().err
