"""Static checks of docker/docker-compose.yaml and its env files (no Docker engine on the test machines).

* the compose file, after compose's ``${VAR:-default}`` substitution, validates (jsonschema) against
  the Compose Specification subset and against docker/deployment.schema.json, what this deployment
  needs (services, commands, health checks, start order, Celery wiring, a scalable worker, pinned
  images); the paths it names exist;
* the connections in connections.env and .env.example (python-dotenv) are well-formed and point at
  compose services. Every check also fails on a broken copy.

The Dockerfile is checked in test_docker_image.py.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
_VAR = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's substitution: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?e}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]

    def sub(m: re.Match[str]) -> str:
        if m[1]:
            return "$"
        name, op, arg = m[2] or m[5], m[3], m[4] or ""
        current = env.get(name)
        if op in (":?", "?") and not current:
            raise ValueError(f"required variable {name} is not set: {arg}")
        if (op == ":-" and not current) or (op == "-" and current is None):
            return interpolate(arg, env)
        return current or ""

    return _VAR.sub(sub, value) if isinstance(value, str) else value


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load((DOCKER / "docker-compose.yaml").read_text()), env or {})


def check_compose(compose: dict[str, Any], base: Path = DOCKER) -> list[str]:
    """Both schemas; build files, bind-mount sources, env files and depends_on targets exist."""
    spec = jsonschema.Draft7Validator(json.loads((DOCKER / "compose-spec.subset.schema.json").read_text()))
    ours = jsonschema.Draft202012Validator(json.loads((DOCKER / "deployment.schema.json").read_text()))
    errors = [*spec.iter_errors(compose), *ours.iter_errors(compose)]
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}" for e in errors]
    services, volumes = compose["services"], compose.get("volumes") or {}
    for name, svc in services.items():
        build = svc.get("build") or {}
        if build and not (base / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).is_file():
            problems.append(f"{name}: build {build} names no Dockerfile")
        for source in (v.split(":")[0] for v in svc.get("volumes") or [] if ":" in v):
            if not ((base / source).exists() if source.startswith((".", "/")) else source in volumes):
                problems.append(f"{name}: volume source {source} neither exists nor is declared")
        for env_file in svc.get("env_file") or []:
            if env_file.get("required", True) and not (base / env_file["path"]).is_file():
                problems.append(f"{name}: env_file {env_file['path']} does not exist")
        for target, dep in (svc.get("depends_on") or {}).items():
            healthy = dep.get("condition") != "service_healthy" or "healthcheck" in services.get(target, {})
            if target not in services or not healthy:
                problems.append(f"{name}: depends on {target}, which does not exist or has no health check")
    return problems


def check_connection(conn_id: str, raw: str, services: dict[str, Any]) -> list[str]:
    try:
        conn = json.loads(raw)
    except json.JSONDecodeError as exc:
        return [f"{conn_id}: not JSON ({exc})"]
    extra, host = conn.get("extra") or {}, conn.get("host", "")
    problems = [] if conn.get("conn_type") else [f"{conn_id}: conn_type is missing"]
    if conn_id == "AIRFLOW_CONN_GIP_DEFAULT":
        auth = extra.get("auth_type")
        needed = [conn.get("password"), extra.get("workspace_id"), auth in ("api_key", "cognito")]
        if auth == "cognito":
            needed += [conn.get("login"), extra.get("cognito_endpoint"), extra.get("cognito_client_id")]
        if conn.get("conn_type") != "gip" or not host.startswith(("http://", "https://")) or not all(needed):
            problems.append(f"{conn_id}: needs conn_type gip, an http(s) host, password, workspace_id, auth")
    hostname = re.sub(r"^[a-z]+://", "", host).split(":")[0].split("/")[0]
    if "." not in hostname and "<" not in host and hostname not in ("", "localhost", *services):
        problems.append(f"{conn_id}: host {host!r} is no compose service")
    if hostname == "gip-emulator" in services:
        command = services[hostname]["command"]
        if f":{command[command.index('--port') + 1]}" not in host:
            problems.append(f"{conn_id}: {host!r} is not the port gip-emulator listens on")
    return problems


def check_connections(compose: dict[str, Any], base: Path = DOCKER) -> list[str]:
    """The demo connections and every example in .env.example; the warehouse database exists."""
    demo = dotenv_values(base / "connections.env")
    required = ("AIRFLOW_CONN_GIP_DEFAULT", "AIRFLOW_CONN_GIP_WAREHOUSE", "AIRFLOW_CONN_LANGFUSE_DEFAULT")
    problems = [f"connections.env: {c} is missing" for c in required if c not in demo]
    # The examples are commented out: read each `# KEY=value` line as a line of its own.
    lines = [
        re.sub(r"^#\s*(?=[A-Z_]+=)", "", line) for line in (base / ".env.example").read_text().splitlines()
    ]
    examples = [kv for line in lines for kv in dotenv_values(stream=io.StringIO(line)).items()]
    for where, conns in (("connections.env", demo.items()), (".env.example", examples)):
        for conn_id, raw in conns:
            if conn_id.startswith("AIRFLOW_CONN_"):
                problems += [
                    f"{where}: {p}" for p in check_connection(conn_id, raw or "", compose["services"])
                ]
    gip = [json.loads(v or "{}") for k, v in examples if k == "AIRFLOW_CONN_GIP_DEFAULT"]
    if {(c.get("extra") or {}).get("auth_type") for c in gip} != {"api_key", "cognito"}:
        problems.append(".env.example should show AIRFLOW_CONN_GIP_DEFAULT for api_key and for cognito")
    warehouse = json.loads(demo.get("AIRFLOW_CONN_GIP_WAREHOUSE") or "{}").get("schema")
    if f"CREATE DATABASE {warehouse}" not in " ".join(
        p.read_text() for p in (base / "postgres-init").glob("*.sql")
    ):
        problems.append(f"the warehouse database {warehouse!r} is not created by postgres-init")
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", (DOCKER / "docker-compose.yaml").read_text()))
    undocumented = used - {k for k, _ in examples} - {"GIP_AIRFLOW_IMAGE"}
    return problems + [f".env.example does not document {v}" for v in sorted(undocumented)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.mark.parametrize("check", [check_compose, check_connections])
def test_compose(compose, check):
    assert check(compose) == []


def test_a_user_env_replaces_defaults_and_a_required_variable_fails_loudly():
    compose = load_compose({"AIRFLOW_UID": "1000", "AIRFLOW_WORKER_CONCURRENCY": "4"})
    assert compose["services"]["airflow-worker"]["user"] == "1000:0"
    assert compose["services"]["airflow-worker"]["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"
    assert check_compose(compose) == []
    assert interpolate("$$HOME ${A:-x} ${B-y} ${C}", {"B": ""}) == "$HOME x  "
    with pytest.raises(ValueError, match="required variable X"):
        interpolate("${X:?set X}", {})


def _set(service: str, key: str, value: Any = None):
    return lambda c: (
        c["services"][service].update({key: value}) if value is not None else c["services"][service].pop(key)
    )


def _env(service: str, **values: str):
    return lambda c: c["services"][service]["environment"].update(values)


# fmt: off
COMPOSE_MUTATIONS = {
    "typo in a key": _set("redis", "healtcheck", {"test": ["CMD", "true"]}),
    "missing DAGs folder": _set("airflow-scheduler", "volumes", ["../no-dags:/opt/airflow/dags:ro"]),
    "missing Dockerfile": _set("airflow-worker", "build", {"context": "..", "dockerfile": "X"}),
    "undeclared volume": lambda c: c["volumes"].pop("airflow-logs"),
    "service missing": lambda c: c["services"].pop("airflow-triggerer"),
    "health check disabled": lambda c: c["services"]["redis"]["healthcheck"].update(disable=True),
    "wrong command": _set("airflow-worker", "command", "celery flower"),
    "emulator on loopback": _set("gip-emulator", "command", ["gip-emulator", "--port", "8089"]),
    "init restarts": _set("airflow-init", "restart", "always"),
    "healthy without health check": _set("postgres", "healthcheck"),
    "not waiting for init": lambda c: c["services"]["airflow-scheduler"]["depends_on"].pop("airflow-init"),
    "fixed worker name": _set("airflow-worker", "container_name", "worker"),
    "fixed worker port": _set("airflow-worker", "ports", ["8793:8793"]),
    "latest tag": _set("redis", "image", "redis:latest"),
    "LocalExecutor": _env("airflow-worker", AIRFLOW__CORE__EXECUTOR="LocalExecutor"),
    "short JWT secret": _env("airflow-triggerer", AIRFLOW__API_AUTH__JWT_SECRET="s"),
    "emulator renamed": lambda c: c["services"].update(emulator=c["services"].pop("gip-emulator")),
}
FILE_MUTATIONS = [
    ("connections.env", '"conn_type": "gip"', '"conn_type": "http"'),
    ("connections.env", '"host": "postgres"', '"host": "warehouse-db"'),
    ("connections.env", "AIRFLOW_CONN_LANGFUSE_DEFAULT", "AIRFLOW_CONN_LANGFUSE"),
    (".env.example", '"auth_type": "cognito"', '"auth_type": "oauth"'),
    (".env.example", "AIRFLOW_WORKER_CONCURRENCY=8", "WORKER_CONCURRENCY=8"),
    ("postgres-init/01-warehouse.sql", "CREATE DATABASE warehouse", "CREATE DATABASE other"),
]
# fmt: on


@pytest.mark.parametrize("mutation", COMPOSE_MUTATIONS)
def test_compose_checks_fail_on_a_broken_copy(compose, mutation):
    broken = copy.deepcopy(compose)
    COMPOSE_MUTATIONS[mutation](broken)
    assert check_compose(broken) + check_connections(broken) != []


@pytest.mark.parametrize(("file", "old", "new"), FILE_MUTATIONS)
def test_connection_checks_fail_on_a_broken_copy(compose, tmp_path, file, old, new):
    for path in (p for p in DOCKER.rglob("*") if p.is_file()):
        (tmp_path / path.relative_to(DOCKER)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.relative_to(DOCKER)).write_bytes(path.read_bytes())
    text = (tmp_path / file).read_text()
    assert old in text
    (tmp_path / file).write_text(text.replace(old, new, 1))
    assert check_connections(compose, tmp_path) != []
