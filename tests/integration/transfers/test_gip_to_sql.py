"""GipToSqlOperator end to end: the emulator over HTTP, real Airflow (``dag.test()``), PostgreSQL, SQLite."""

from __future__ import annotations

import itertools
import json
import uuid

import pendulum
import pytest
from sqlalchemy import select

from gip_airflow.transfers.gip_to_sql import GipToSqlOperator, result_alias, result_asset
from gip_airflow_emulator.defaults import DEFAULT_RUN_SECONDS
from tests.integration.transfers.conftest import make_postgres, make_sqlite

_IDS = itertools.count()
_SYNCED: list[bool] = []


def run_dag(dag):
    """Register a DAG built in a test (dag.test() needs it in the DB) and run it; return the DagRun."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    if not _SYNCED:
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        DagBundlesManager().sync_bundles_to_db()
        _SYNCED.append(True)
    bag = DagBag(dag_folder="/nonexistent", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test()


def dag_id(prefix: str) -> str:
    return f"{prefix}_{next(_IDS)}_{uuid.uuid4().hex[:6]}"


def xcom(dag_run, task_id: str, map_index: int = -1):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (value,) = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == "return_value",
            )
        ).all()
        return XComModel.deserialize_value(value)


def ti_states(dag_run) -> dict[tuple[str, int], str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state)) for ti in tis}


def asset_event_extras(uri: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
        ).all()
        return [dict(e.extra or {}) for e in events]


@pytest.fixture(params=["postgres", "sqlite"])
def warehouse(request, monkeypatch, tmp_path):
    wh = make_postgres(monkeypatch) if request.param == "postgres" else make_sqlite(monkeypatch, tmp_path)
    try:
        yield wh
    finally:
        for fn in wh.cleanup:
            fn()


@pytest.fixture
def gip(airflow_db, gip_conn):
    """The emulator as ``gip_default``; quick runs."""
    gip_conn.set_run_speed(run_seconds=0.3, never_finish=False)
    yield gip_conn
    gip_conn.set_run_speed(run_seconds=DEFAULT_RUN_SECONDS, never_finish=False)


def test_loads_a_synthetic_run_in_a_dag(gip, warehouse):
    from airflow.sdk import DAG

    run = gip.synthetic_run(rows=2500, row_bytes=1500, display_name="synthetic 2.5k")
    with DAG(dag_id("gip_to_sql"), schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        op = GipToSqlOperator(
            task_id="load",
            experiment_id=run["experiment_id"],
            run_id=run["id"],
            conn_id=warehouse.conn_id,
            table=warehouse.table,
        )
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)

    summary = xcom(dag_run, "load")
    assert summary["run_id"] == run["id"] and summary["rows"] == 2500
    assert summary["table"] == warehouse.table and summary["summary_table"] == warehouse.summary_table
    assert summary["method"] == ("COPY" if warehouse.kind == "postgres" else "executemany")

    rows = warehouse.rows()
    assert len(rows) == 2500 and [r["row_number"] for r in rows] == list(range(1, 2501))
    assert {r["dag_id"] for r in rows} == {dag.dag_id}
    assert {r["evaluator_id"] for r in rows} == {run["evaluator_id"]}
    # the synthetic evaluator has a bad/neutral/good category metric
    assert {(r["score"], r["score_value"]) for r in rows if r["score"]} <= {
        ("bad", 0.0),
        ("neutral", 1.0),
        ("good", 2.0),
    }
    (row,) = warehouse.summaries()
    assert row["item_count"] == 2500 and row["display_name"] == "synthetic 2.5k"
    assert row["passed_count"] == sum(bool(r["passed"]) for r in rows) == summary["passed"]
    assert row["total_tokens"] == run["aggregated_result"]["total_usage"]["total_tokens"]
    assert row["status"] == "DONE" and row["dag_id"] == dag.dag_id
    assert (row["task_id"], row["map_index"], row["dag_run_id"]) == ("load", -1, dag_run.run_id)

    # the Assets: aliases declared as outlets; the events, under the canonical URI, name the run
    assert op.outlets == [
        result_alias(warehouse.conn_id, warehouse.table),
        result_alias(warehouse.conn_id, warehouse.summary_table),
    ]
    uri = result_asset(warehouse.conn_id, warehouse.table).uri
    assert uri.startswith(("postgres://127.0.0.1:5432/", "sqlite:/"))
    assert asset_event_extras(uri)[-1] == {
        "run_id": run["id"],
        "experiment_id": run["experiment_id"],
        "rows": 2500,
        "pass_rate": summary["pass_rate"],
    }


def test_start_run_then_load_then_quality_gate(gip, monkeypatch, tmp_path):
    """The example DAGs' shape: a real run on emulated Langfuse data, its id from XCom, a pass-rate gate."""
    from airflow.providers.common.sql.operators.sql import SQLThresholdCheckOperator
    from airflow.sdk import DAG

    from gip_airflow.hooks.gip import GipHook
    from gip_airflow.operators.gip import GipStartExperimentRunOperator

    wh = make_sqlite(monkeypatch, tmp_path)
    hook = GipHook()
    credential = hook.create_langfuse_credential(
        {
            "alias": f"lf-{uuid.uuid4().hex[:6]}",
            "base_url": gip.langfuse_base_url,
            "public_key": gip.langfuse_public_key,
            "private_key": gip.langfuse_secret_key,
        }
    )
    experiment = hook.create_experiment(
        {
            "name": f"qa {uuid.uuid4().hex[:6]}",
            "type": "langfuse_dataset",
            "config": {
                "integrated_service_credential_id": credential.id,
                "dataset_name": "qa-general-knowledge",
            },
        }
    )
    evaluator = hook.create_evaluator(
        {
            "name": "numeric judge",
            "metric": {"type": "numeric", "config": {"min": {"value": 0.0}, "max": {"value": 1.0}}},
            "evaluation_config": {
                "judge_model_seq_id": 19,
                "judge_model_public_id": "openai/gpt-4",
                "judge_prompt": "Rate it from 0 to 1. <rationale>...</rationale><rating>...</rating>",
            },
        }
    )
    with DAG(dag_id("gip_start_load_gate"), schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        start = GipStartExperimentRunOperator(
            task_id="evaluate", experiment_id=experiment.id, evaluator_id=evaluator.id, poll_interval=0.2
        )
        load = GipToSqlOperator(
            task_id="load",
            experiment_id=experiment.id,
            run_id=start.output,
            conn_id=wh.conn_id,
            table=wh.table,
        )
        gate = SQLThresholdCheckOperator(
            task_id="quality_gate",
            conn_id=wh.conn_id,
            sql=f"SELECT pass_rate FROM {wh.summary_table} "
            "WHERE run_id = '{{ ti.xcom_pull(task_ids='evaluate') }}'",
            min_threshold=0.0,
            max_threshold=1.0,
        )
        load >> gate
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    run_id = xcom(dag_run, "evaluate")
    rows = wh.rows(run_id)
    active_items = 14  # qa-general-knowledge has 16 items, 2 archived
    assert len(rows) == active_items
    assert all(r["score_value"] is None or 0.0 <= r["score_value"] <= 1.0 for r in rows)
    assert any(r["score_value"] is not None for r in rows)
    (summary,) = wh.summaries()
    assert summary["run_id"] == run_id and summary["evaluator_id"] == evaluator.id
    assert summary["item_count"] == active_items


def test_mapped_over_runs_with_templated_table(gip, monkeypatch, tmp_path):
    """``.partial().expand(run_id=...)`` as in the model-comparison DAG; a templated table has no Asset."""
    from airflow.sdk import DAG

    wh = make_sqlite(monkeypatch, tmp_path)
    runs = [gip.synthetic_run(rows=n, row_bytes=400, display_name=f"model {n}") for n in (30, 40)]
    with DAG(
        dag_id("gip_to_sql_mapped"),
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1),
        params={"table": wh.table},
    ) as dag:
        loads = GipToSqlOperator.partial(
            task_id="load",
            experiment_id=runs[0]["experiment_id"],
            conn_id=wh.conn_id,
            table="{{ params.table }}",
        ).expand(run_id=[r["id"] for r in runs])
    assert loads.partial_kwargs.get("outlets") in (None, [])
    dag_run = run_dag(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    assert wh.count(runs[0]["id"]) == 30 and wh.count(runs[1]["id"]) == 40
    assert sorted(s["display_name"] for s in wh.summaries()) == ["model 30", "model 40"]
    assert [xcom(dag_run, "load", i)["rows"] for i in (0, 1)] == [30, 40]


def test_reload_in_a_second_dag_run_keeps_one_copy(gip, warehouse):
    from airflow.sdk import DAG

    run = gip.synthetic_run(rows=300, row_bytes=800)
    for _ in range(2):
        with DAG(dag_id("gip_to_sql_twice"), schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
            GipToSqlOperator(
                task_id="load",
                experiment_id=run["experiment_id"],
                run_id=run["id"],
                conn_id=warehouse.conn_id,
                table=warehouse.table,
            )
        assert run_dag(dag).state == "success"
    assert warehouse.count() == 300
    assert len(warehouse.summaries()) == 1


def context():
    return {"dag_run": None, "dag": None}


def test_refuses_a_run_that_is_not_done(gip, warehouse):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    run = gip.synthetic_run(rows=5)
    op = GipToSqlOperator(
        task_id="load",
        experiment_id=run["experiment_id"],
        run_id=run["id"],
        conn_id=warehouse.conn_id,
        table=warehouse.table,
    )
    gip.force_run_status(run["id"], "RUNNING")
    with pytest.raises(
        AirflowException, match=rf"GIP run {run['id']} is RUNNING, not DONE: its result CSV is not ready"
    ):
        op.execute(context())
    gip.force_run_status(run["id"], "FAILED", error="judge model unavailable")
    with pytest.raises(AirflowFailException, match=r"ended with status FAILED \(judge model unavailable\)"):
        op.execute(context())
    gip.force_run_status(run["id"], None)
    assert op.execute(context())["rows"] == 5


def test_run_reference_from_a_dict_and_unknown_evaluator(gip, warehouse, capsys):
    """A run reference dict works; an evaluator GIP cannot show still loads, score_value without metric."""
    run = gip.synthetic_run(rows=20)
    op = GipToSqlOperator(
        task_id="load",
        run_id={"run_id": run["id"], "experiment_id": run["experiment_id"]},
        evaluator_id="0195a8cd-0000-7000-8000-000000000000",
        conn_id=warehouse.conn_id,
        table=warehouse.table,
    )
    assert op.execute(context())["rows"] == 20
    assert "score_value is derived without its metric" in capsys.readouterr().out
    assert {r["score_value"] for r in warehouse.rows()} == {None}  # category names mean nothing without it


def test_explicit_metric_and_download_retry(gip, warehouse):
    run = gip.synthetic_run(rows=200, row_bytes=2000)
    drops = gip.stats()["faults"]["drop"]
    gip.set_faults(
        drop_rate=1.0, drop_after_bytes=50_000, max_faults=1, path_pattern=r"^/api/workspaces/.*/download$"
    )
    op = GipToSqlOperator(
        task_id="load",
        experiment_id=run["experiment_id"],
        run_id=run["id"],
        metric={"type": "category", "config": [{"index": 10, "name": "good"}, {"index": 5, "name": "bad"}]},
        conn_id=warehouse.conn_id,
        table=warehouse.table,
    )
    assert op.execute(context())["rows"] == 200
    assert gip.stats()["faults"]["drop"] == drops + 1  # the cut download was retried by the hook
    values = {r["score"]: r["score_value"] for r in warehouse.rows() if r["score"]}
    assert (
        values.get("good", 10.0) == 10.0 and values.get("bad", 5.0) == 5.0 and values.get("neutral") is None
    )


def test_bad_arguments(gip, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(ValueError, match="is not a plain"):
        GipToSqlOperator(task_id="t", experiment_id="e", run_id="r", conn_id="c", table="x; drop table y")
    with pytest.raises(ValueError, match="is not a GIP metric"):
        GipToSqlOperator(
            task_id="t", experiment_id="e", run_id="r", conn_id="c", table="x", metric={"type": "stars"}
        )
    op = GipToSqlOperator(task_id="t", experiment_id="e", run_id=None, conn_id="gip_default", table="x")
    with pytest.raises(AirflowFailException, match="run_id must be a GIP run id"):
        op.execute(context())
    op = GipToSqlOperator(task_id="t", run_id="r", conn_id="gip_default", table="x")
    with pytest.raises(AirflowFailException, match="experiment_id must be the GIP experiment id"):
        op.execute(context())
    run = gip.synthetic_run(rows=1)
    op = GipToSqlOperator(
        task_id="t", experiment_id=run["experiment_id"], run_id=run["id"], conn_id="gip_default", table="x"
    )
    with pytest.raises(AirflowFailException, match=r"not a common\.sql DbApiHook"):
        op.execute(context())


def test_template_fields_and_assets():
    from airflow.sdk import Asset

    op = GipToSqlOperator(task_id="t", experiment_id="e", run_id="r", conn_id="wh", table="public.results")
    assert set(op.template_fields) >= {"experiment_id", "run_id", "table", "summary_table", "evaluator_id"}
    assert [a.name for a in op.outlets] == [
        "gip-results/wh/public.results",
        "gip-results/wh/public.results_runs",
    ]
    op = GipToSqlOperator(
        task_id="t2",
        experiment_id="e",
        run_id="r",
        conn_id="wh",
        table="r",
        summary_table="gate",
        declare_assets=True,
    )
    assert [a.name for a in op.outlets] == ["gip-results/wh/r", "gip-results/wh/gate"]
    op = GipToSqlOperator(
        task_id="t3", experiment_id="e", run_id="r", conn_id="wh", table="r", declare_assets=False
    )
    assert op.outlets == []
    json.dumps(op.template_fields)
    # outlets given explicitly (as partial() needs for mapped tasks) are not repeated
    mine = Asset("s3://bucket/report")
    op = GipToSqlOperator(
        task_id="t4",
        experiment_id="e",
        run_id="r",
        conn_id="wh",
        table="r",
        outlets=[mine, result_alias("wh", "r")],
    )
    assert [getattr(a, "uri", None) or a.name for a in op.outlets] == [
        "s3://bucket/report",
        "gip-results/wh/r",
        "gip-results/wh/r_runs",
    ]
