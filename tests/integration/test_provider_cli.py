"""Airflow's CLI sees the provider's extra link; our CLI reads a connection stored in the metadata DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from gip_airflow import cli


def test_airflow_providers_links_lists_the_gip_link(airflow_db):
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "links", "-o", "plain"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "gip_airflow.links.GipExperimentRunLink" in done.stdout


def test_cli_reads_a_connection_from_the_metadata_db(airflow_db, monkeypatch):
    from airflow.models.connection import Connection as StoredConnection
    from airflow.utils.session import create_session

    conn_id = f"gip_db_{uuid.uuid4().hex[:8]}"
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    monkeypatch.delenv(env_name, raising=False)
    extra = {"workspace_id": "ws-db", "verify_ssl": False}
    with create_session() as session:
        session.add(
            StoredConnection(
                conn_id=conn_id,
                conn_type="gip",
                host="https://gip.example",
                password="pw",
                extra=json.dumps(extra),
            )
        )
    try:
        cli._load_connection(conn_id)
        loaded = json.loads(os.environ[env_name])
        assert loaded["host"] == "https://gip.example" and loaded["password"] == "pw"
        assert (
            json.loads(loaded["extra"]) == extra
            if isinstance(loaded["extra"], str)
            else loaded["extra"] == extra
        )
    finally:
        os.environ.pop(env_name, None)
        with create_session() as session:
            session.query(StoredConnection).filter(StoredConnection.conn_id == conn_id).delete()


def test_cli_names_a_missing_connection(airflow_db):
    import pytest

    from gip_airflow.exceptions import GipError

    with pytest.raises(GipError, match=r"gip_nowhere.*not found"):
        cli._load_connection("gip_nowhere")
