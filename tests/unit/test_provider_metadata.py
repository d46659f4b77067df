"""Provider metadata matches the code: connection form vs. what the hook reads, extra links, docs URL,
Airflow 3 import paths in shipped code, and the extra link without a run."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import gip_airflow
from gip_airflow.hooks.gip import GipConnectionConfig
from gip_airflow.links import GipExperimentRunLink

ROOT = pathlib.Path(gip_airflow.__file__).resolve().parent.parent
CONN_ATTRIBUTES = ("host", "schema", "port", "login", "password")


class _Recorder(dict):
    """An ``extra_dejson`` that records every key read from it."""

    def __init__(self, data: dict[str, Any], seen: set[str]):
        super().__init__(data)
        self._seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._seen.add(str(key))
        return super().__contains__(key)


class _Conn:
    """A connection that records which of its fields and extras are read."""

    def __init__(self, extras: set[str], fields: set[str], **values: Any):
        self._extras, self._fields, self._values = extras, fields, values
        self.conn_id = "gip_probe"

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return _Recorder(self._values.get("extra", {}), self._extras)

    def __getattr__(self, name: str) -> Any:
        if name in CONN_ATTRIBUTES:
            self._fields.add(name)
            return self._values.get(name)
        raise AttributeError(name)


def _read_by_from_connection() -> tuple[set[str], set[str]]:
    """Every extra key and connection field ``from_connection`` reads, over its branches."""
    extras: set[str] = set()
    fields: set[str] = set()
    variants = [
        {"host": "gip.example", "password": "k", "extra": {"workspace_id": "w"}},
        {
            "host": "gip.example",
            "port": 8443,
            "schema": "http",
            "extra": {"workspace_id": "w", "api_key": "k"},
        },
        {
            "host": "https://gip.example",
            "login": "me",
            "password": "p",
            "extra": {
                "workspace_id": "w",
                "auth_type": "cognito",
                "cognito_client_id": "c",
                "timeout": 3,
                "max_retries": 1,
                "retry_backoff": 0.5,
                "verify_ssl": "false",
                "console_url": "https://console.example",
            },
        },
    ]
    for values in variants:
        GipConnectionConfig.from_connection(_Conn(extras, fields, **values))  # type: ignore[arg-type]
    return extras, fields


def _conn_type() -> dict[str, Any]:
    (conn_type,) = gip_airflow.get_provider_info()["connection-types"]
    return conn_type


def test_connection_form_declares_every_extra_the_hook_reads():
    extras, _ = _read_by_from_connection()
    # the probe must have seen the extras the issue names, or it proves nothing
    assert {
        "workspace_id",
        "verify_ssl",
        "retry_backoff",
        "timeout",
        "max_retries",
        "cognito_endpoint",
    } <= extras
    missing = extras - set(_conn_type()["conn-fields"])
    assert not missing, f"from_connection reads extras that the connection form lacks: {sorted(missing)}"


def test_connection_form_hides_no_field_the_hook_reads():
    _, fields = _read_by_from_connection()
    assert {"host", "schema", "port", "login", "password"} <= fields
    hidden = set(_conn_type()["ui-field-behaviour"].get("hidden-fields", []))
    assert not hidden & fields, f"the form hides fields the hook reads: {sorted(hidden & fields)}"


def test_secret_extras_are_password_fields():
    for name, field in _conn_type()["conn-fields"].items():
        if any(word in name for word in ("key", "secret", "password", "token")):
            assert field["schema"].get("format") == "password", name


def test_provider_info_names_the_extra_link_and_the_docs():
    info = gip_airflow.get_provider_info()
    assert info["extra-links"] == ["gip_airflow.links.GipExperimentRunLink"]
    assert {i["external-doc-url"] for i in info["integrations"]} == {"https://gip-airflow.readthedocs.io/"}
    import importlib

    for path in info["extra-links"]:
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name) is GipExperimentRunLink


def test_providers_manager_lists_the_gip_link():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "gip_airflow.links.GipExperimentRunLink" in manager.extra_links_class_names


def test_extra_link_without_a_run_reads_no_xcom(monkeypatch):
    """Before a run exists the link is empty and no XCom is read (a miss logs "XCom not found")."""
    from airflow.sdk.execution_time import xcom

    def no_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("get_link read an XCom")

    monkeypatch.setattr(xcom.XCom, "get_value", no_read)
    monkeypatch.setattr(xcom.XCom, "get_one", no_read)
    from gip_airflow.operators.gip import GipStartExperimentRunOperator

    op = GipStartExperimentRunOperator(task_id="t", experiment_id="e", evaluator_id="v")
    assert GipExperimentRunLink().get_link(op, ti_key=None) == ""  # type: ignore[arg-type]
    op.gip_run_url = "https://console.test/run"
    assert GipExperimentRunLink().get_link(op, ti_key=None) == "https://console.test/run"  # type: ignore[arg-type]


# Module paths that Airflow 3 moved to ``airflow.sdk`` (shipped code must use the new ones).
OLD_PATHS = re.compile(
    r"\bairflow\.(models\.(connection|dag|baseoperator|variable|param|xcom_arg)|timetables\.trigger"
    r"|decorators|datasets|hooks\.base|sensors\.base|models\.baseoperatorlink|utils\.task_group"
    r"|utils\.context|io\.path)\b|from airflow\.models import (Connection|DAG|BaseOperator|Variable)\b"
)


def _shipped_files() -> list[pathlib.Path]:
    files = [p for p in (ROOT / "gip_airflow").rglob("*.py")]
    files += [p for p in (ROOT / "dags").rglob("*.py")]
    emulator = ROOT / "emulator"
    if emulator.is_dir():
        files += [p for p in emulator.rglob("*.py") if ".venv" not in p.parts]
    return files


#: Server-side code (the UI plugin's app runs in the API server, not in a task) reads connections
#: through the metadata-DB model, which is the server's API.
SERVER_SIDE = {"gip_airflow/plugins/_app.py"}


def test_shipped_code_uses_airflow_sdk_paths():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _shipped_files()
        if path.relative_to(ROOT).as_posix() not in SERVER_SIDE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OLD_PATHS.search(line)
    ]
    assert not offenders, "old Airflow import paths:\n" + "\n".join(offenders)


def test_the_grep_catches_old_paths():
    assert OLD_PATHS.search("from airflow.models.connection import Connection")
    assert OLD_PATHS.search("from airflow.timetables.trigger import CronTriggerTimetable")
    assert not OLD_PATHS.search("from airflow.sdk import CronTriggerTimetable")


def test_generated_dag_files_use_airflow_sdk():
    from gip_airflow import migrate

    source = pathlib.Path(migrate.__file__).read_text()
    assert "from airflow.sdk import DAG, CronTriggerTimetable" in source
    assert "airflow.timetables.trigger" not in source
