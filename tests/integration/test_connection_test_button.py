"""The connection form's Test button (``GipHook.test_connection``): one short attempt, a useful answer."""

from __future__ import annotations

import json
import socket
import time

import pytest

from gip_airflow.hooks.gip import GipHook


@pytest.fixture
def silent_server():
    """A loopback port that accepts TCP connections (kernel backlog) and never answers a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_test_button_answers_within_10_s_against_a_silent_server(silent_server, monkeypatch):
    # The connection's own settings would wait 30 s per request and retry 5 times.
    conn = {
        "conn_type": "gip",
        "host": silent_server,
        "password": "k-secret",
        "extra": {"workspace_id": "ws-1", "timeout": 30, "max_retries": 5},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GIP_SILENT", json.dumps(conn))
    started = time.monotonic()
    ok, message = GipHook("gip_silent").test_connection()
    elapsed = time.monotonic() - started
    assert ok is False
    assert elapsed < 10.0, f"the Test button took {elapsed:.1f} s"
    assert "1 attempt" in message and "Timeout" in message, message
    assert "k-secret" not in message


def test_test_button_names_the_workspace_and_model_count(gip_conn):
    ok, message = GipHook().test_connection()
    models = GipHook().list_models()
    assert ok, message
    assert gip_conn.workspace_id in message
    assert f"has {len(models)} model" in message


def test_test_button_reports_a_bad_connection_without_a_request(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GIP_BAD", json.dumps({"conn_type": "gip", "host": "http://x"}))
    ok, message = GipHook("gip_bad").test_connection()
    assert not ok and "workspace_id" in message


def test_test_button_reports_a_rejected_key(gip_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GIP_WRONG", gip_emulator.conn_json(password="wrong-key"))
    ok, message = GipHook("gip_wrong").test_connection()
    assert not ok and "401" in message and "wrong-key" not in message
