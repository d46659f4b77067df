"""Canonical warehouse Assets: a DAG scheduled on the table's provider URI is queued after our load."""

from __future__ import annotations

import json
import uuid

import pendulum
import pytest
from sqlalchemy import select

from gip_airflow.assets import table_location
from gip_airflow.transfers.gip_to_sql import GipToSqlOperator, result_asset
from gip_airflow_emulator.defaults import DEFAULT_RUN_SECONDS
from tests.integration.operators.helpers import run_dag
from tests.integration.transfers.conftest import make_postgres, make_sqlite


@pytest.fixture
def gip(airflow_db, gip_conn):
    gip_conn.set_run_speed(run_seconds=0.3, never_finish=False)
    yield gip_conn
    gip_conn.set_run_speed(run_seconds=DEFAULT_RUN_SECONDS, never_finish=False)


def _consumer(uri: str):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset

    with DAG(
        f"consumer_{uuid.uuid4().hex[:8]}", schedule=[Asset(uri)], start_date=pendulum.datetime(2025, 1, 1)
    ) as dag:
        EmptyOperator(task_id="read")
    return dag


def _sync_unpaused(dag) -> None:
    """Register a DAG as the DAG processor would, and unpause it (paused DAGs are never queued)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.get(DagModel, dag.dag_id).is_paused = False


def _queued_for(dag_id: str) -> list[str]:
    """URIs of the asset events waiting to trigger ``dag_id`` (AssetDagRunQueue)."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return list(
            session.scalars(
                select(AssetModel.uri)
                .join(AssetDagRunQueue, AssetDagRunQueue.asset_id == AssetModel.id)
                .where(AssetDagRunQueue.target_dag_id == dag_id)
            )
        )


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_a_dag_scheduled_on_the_canonical_asset_is_queued_after_a_load(gip, monkeypatch, tmp_path, database):
    from airflow.sdk import DAG, Asset, BaseHook

    wh = make_postgres(monkeypatch) if database == "postgres" else make_sqlite(monkeypatch, tmp_path)
    try:
        schema, _, table = wh.table.rpartition(".")
        # What another provider (or a user) writes for this table, spelled out by hand.
        if database == "postgres":
            uri = f"postgres://127.0.0.1:5432/test/{schema}/{table}"
        else:
            uri = f"sqlite://{BaseHook.get_connection(wh.conn_id).host}/{table}"
        # Airflow keys an Asset by name (the URI as written) and normalised URI: both must match.
        assert result_asset(wh.conn_id, wh.table) == Asset(uri)
        consumer = _consumer(uri)
        _sync_unpaused(consumer)
        assert _queued_for(consumer.dag_id) == []

        run = gip.synthetic_run(rows=20, row_bytes=200, display_name="asset run")
        with DAG(
            f"producer_{uuid.uuid4().hex[:8]}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)
        ) as producer:
            GipToSqlOperator(
                task_id="load",
                experiment_id=run["experiment_id"],
                run_id=run["id"],
                conn_id=wh.conn_id,
                table=wh.table,
            )
        dag_run = run_dag(producer)
        assert dag_run.state == "success"
        assert _queued_for(consumer.dag_id) == [Asset(uri).uri]
    finally:
        for fn in wh.cleanup:
            fn()


def report_dag():
    """The docs' example of a DAG scheduled on a table that GipToSqlOperator loads."""
    # [START schedule_on_canonical_asset]
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset

    with DAG(
        dag_id="gip_results_report",
        # host:port/database/schema/table of the warehouse connection, as the postgres provider spells it
        schedule=[Asset("postgres://db.example:5432/warehouse/public/gip_results")],
    ) as dag:
        EmptyOperator(task_id="refresh_dashboard")
    # [END schedule_on_canonical_asset]
    return dag


def test_the_documented_consumer_matches_result_asset(monkeypatch):
    conn = {"conn_type": "postgres", "host": "db.example", "port": 5432, "schema": "warehouse", "login": "u"}
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps(conn))
    # [START result_asset]
    from gip_airflow.transfers.gip_to_sql import result_asset

    asset = result_asset("warehouse", "gip_results")  # reads the connection: host, port, database
    # [END result_asset]
    assert list(report_dag().timetable.asset_condition.objects) == [asset]


def test_uris_match_the_postgres_provider():
    """Our URI passes the postgres provider's own normaliser unchanged, and names what OpenLineage names."""
    from urllib.parse import urlsplit, urlunsplit

    from airflow.providers.postgres.assets.postgres import sanitize_uri
    from airflow.sdk import Connection

    conn = Connection(
        conn_id="wh", conn_type="postgres", host="DB.Example", schema="warehouse", login="u", password="p"
    )
    location = table_location(conn, "gip_results")
    assert location.uri == "postgres://db.example:5432/warehouse/public/gip_results"
    assert urlunsplit(sanitize_uri(urlsplit(location.uri))) == location.uri
    assert (location.namespace, location.name) == (
        "postgres://db.example:5432",
        "warehouse.public.gip_results",
    )
    assert table_location(conn, "mart.r", database="other").uri == "postgres://db.example:5432/other/mart/r"
    generic = Connection(conn_id="x", conn_type="mysql", host="m", port=3306, schema="db")
    assert table_location(generic, "r").uri == "mysql://m:3306/db/r"
    lite = Connection(conn_id="l", conn_type="sqlite", host="/data/wh.db")
    assert table_location(lite, "r").uri == "sqlite:///data/wh.db/r"
