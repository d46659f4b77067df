"""Provider registration: `airflow providers list`, the connection form, and the Test button path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gip_airflow


def airflow_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_provider_info_declares_connection_form():
    info = gip_airflow.get_provider_info()
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "gip"
    assert conn_type["hook-class-name"] == "gip_airflow.hooks.gip.GipHook"
    fields = conn_type["conn-fields"]
    assert {"workspace_id", "auth_type", "cognito_endpoint", "cognito_client_id", "console_url"} <= set(
        fields
    )
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"]["host"] == "GIP console API URL"
    assert "API key" in behaviour["relabeling"]["password"]


def test_provider_info_validates_against_airflow_schema():
    import json
    import pathlib

    import airflow
    import jsonschema

    schema_path = pathlib.Path(airflow.__file__).parent / "provider_info.schema.json"
    if not schema_path.exists():
        pytest.skip("this Airflow build ships no provider_info.schema.json")
    jsonschema.validate(gip_airflow.get_provider_info(), json.loads(schema_path.read_text()))


def test_modules_named_in_provider_info_import():
    import importlib

    info = gip_airflow.get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for entry in info["transfers"]:
        importlib.import_module(entry["python-module"])


def test_airflow_providers_list_and_connection_type(airflow_db):
    listed = airflow_cli("providers", "list", "-o", "plain")
    assert listed.returncode == 0, listed.stderr
    assert "gip-airflow" in listed.stdout
    hooks = airflow_cli("providers", "hooks", "-o", "plain")
    assert "gip_airflow.hooks.gip.GipHook" in hooks.stdout


def test_airflow_connections_test(airflow_db, gip_emulator):
    ok = airflow_cli(
        "connections",
        "test",
        "gip_default",
        env={
            "AIRFLOW_CONN_GIP_DEFAULT": gip_emulator.conn_json(),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        },
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Connection success!" in ok.stdout
    bad = airflow_cli(
        "connections",
        "test",
        "gip_default",
        env={
            "AIRFLOW_CONN_GIP_DEFAULT": gip_emulator.conn_json().replace(gip_emulator.api_key, "bad-key"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        },
    )
    assert "Connection failed" in bad.stdout + bad.stderr
    assert "HTTP 401" in bad.stdout + bad.stderr
    assert "bad-key" not in bad.stdout + bad.stderr
