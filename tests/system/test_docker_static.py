"""Static checks of docker/ (no Docker engine runs on the test machines).

What is checked, each by a function that returns a list of problems (empty = fine):

* the compose file parses and validates against a subset of the Compose Specification
  (``docker/compose-spec.subset.schema.json``), after compose-style ``${VAR:-default}`` substitution;
* every path it names exists: build context, Dockerfile, bind-mount sources, env files; named
  volumes are declared;
* the services the deployment needs exist, run the right commands and have health checks;
  ``depends_on`` conditions point at services that can satisfy them; the worker can be scaled;
* the connections (``connections.env``, ``.env.example``) are well-formed and point at services
  that exist;
* the Dockerfile parses (a small parser below), its base image is the official Airflow image in
  the Airflow and Python versions of uv.lock, its COPY sources exist in the build context and are
  not excluded by ``Dockerfile.dockerignore``; every locked package the image installs has a
  wheel (or sdist) for that Python;
* it installs the package the way the documented install does: ``uv export --locked`` with the
  same extras, ``uv pip install --require-hashes -r``, then the package with ``--no-deps``.

Every check is also run on a broken copy, to show it can fail.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.markers import Marker

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
SCHEMA_FILE = DOCKER / "compose-spec.subset.schema.json"
EXTRAS = {"postgres", "celery", "emulator"}

#: service -> the Airflow command it runs (None: not an Airflow service)
REQUIRED_SERVICES: dict[str, str | None] = {
    "postgres": None,
    "redis": None,
    "gip-emulator": None,
    "airflow-init": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
ONE_SHOT = {"airflow-init"}
#: the platforms an official Airflow image exists for
IMAGE_PLATFORMS = ("x86_64", "aarch64")


# =================================================================================================
# Compose-style variable substitution and env files
# =================================================================================================

_VAR = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        current = env.get(name)
        if op == ":-":
            return current if current else interpolate(arg, env)
        if op == "-":
            return current if current is not None else interpolate(arg, env)
        if op in (":?", "?") and not current:
            raise ValueError(f"required variable {name} is not set: {arg}")
        return current or ""

    return _VAR.sub(repl, value)


def parse_env_file(text: str, *, include_commented: bool = False) -> dict[str, str]:
    """``KEY=value`` lines as compose reads them ('single' quotes literal, "double" quotes, bare).

    With ``include_commented``, ``# KEY=value`` lines count too (examples in .env.example).
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if include_commented and re.match(r"#\s*[A-Z_][A-Z0-9_]*=", line):
            line = line.lstrip("#").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"not a KEY=value line: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def load_compose(path: Path = COMPOSE_FILE, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as compose sees it with no docker/.env: anchors merged, defaults substituted."""
    return interpolate(yaml.safe_load(path.read_text()), env or {})


# =================================================================================================
# Compose checks
# =================================================================================================


def check_schema(compose: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in validator.iter_errors(compose)
    ]


def _is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _volume_specs(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of a service's volumes, short or long syntax."""
    specs = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) == 1:
                specs.append(("volume", "", parts[0]))
            else:
                kind = "bind" if _is_bind_source(parts[0]) else "volume"
                specs.append((kind, parts[0], parts[1]))
        else:
            specs.append((vol["type"], vol.get("source", ""), vol.get("target", "")))
    return specs


def _env_files(service: dict[str, Any]) -> list[tuple[str, bool]]:
    files = service.get("env_file") or []
    if isinstance(files, str):
        files = [files]
    return [(f, True) if isinstance(f, str) else (f["path"], f.get("required", True) is True) for f in files]


def check_paths(compose: dict[str, Any], base: Path = DOCKER) -> list[str]:
    """Build contexts, Dockerfiles, bind-mount sources and required env files exist; volumes declared."""
    problems = []
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build is not None:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            elif not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
        for kind, source, target in _volume_specs(svc):
            if kind == "bind" and not (base / source).exists():
                problems.append(f"{name}: bind-mount source {source} (for {target}) does not exist")
            if kind == "volume" and source and source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under top-level volumes")
        for path, required in _env_files(svc):
            if required and not (base / path).is_file():
                problems.append(f"{name}: env_file {path} does not exist")
    return problems


def _command_words(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else list(value)


def check_services(compose: dict[str, Any]) -> list[str]:
    """The required services exist, run the right commands and have (enabled) health checks."""
    problems = []
    services = compose["services"]
    for name, airflow_command in REQUIRED_SERVICES.items():
        svc = services.get(name)
        if svc is None:
            problems.append(f"service {name} is missing")
            continue
        if airflow_command is not None and _command_words(svc.get("command")) != airflow_command.split():
            problems.append(f"{name}: command should be {airflow_command!r}, is {svc.get('command')!r}")
        if name in ONE_SHOT:
            if svc.get("restart") not in ("no", None):
                problems.append(f"{name}: a one-shot service must not restart (restart: 'no')")
            continue
        check = svc.get("healthcheck") or {}
        if not check.get("test") or check.get("disable") in (True, "true"):
            problems.append(f"{name}: no health check")
    emulator = _command_words(services.get("gip-emulator", {}).get("command"))
    if emulator[:1] != ["gip-emulator"] or "0.0.0.0" not in emulator:
        problems.append(f"gip-emulator: command should run gip-emulator on 0.0.0.0, is {emulator}")
    init = " ".join(_command_words(services.get("airflow-init", {}).get("command")))
    if "airflow db migrate" not in init or "passwords.json" not in init:
        problems.append("airflow-init: should run 'airflow db migrate' and write the UI login")
    return problems


def check_depends_on(compose: dict[str, Any]) -> list[str]:
    """depends_on targets exist and can satisfy their condition."""
    problems = []
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target}")
                continue
            condition = spec.get("condition")
            if condition == "service_healthy" and not (services[target].get("healthcheck") or {}).get("test"):
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no health check")
            if condition == "service_completed_successfully" and services[target].get("restart") not in (
                "no",
                None,
            ):
                problems.append(f"{name}: waits for {target} to complete, but {target} restarts")
    for name in REQUIRED_SERVICES:
        if name.startswith("airflow-") and name not in ONE_SHOT:
            deps = services.get(name, {}).get("depends_on") or {}
            wanted = {
                "postgres": "service_healthy",
                "redis": "service_healthy",
                "airflow-init": "service_completed_successfully",
            }
            for target, condition in wanted.items():
                if not isinstance(deps, dict) or (deps.get(target) or {}).get("condition") != condition:
                    problems.append(f"{name}: should wait for {target} ({condition})")
    return problems


def check_scalable_worker(compose: dict[str, Any]) -> list[str]:
    """`--scale airflow-worker=N` needs no fixed container name and no fixed host port."""
    worker = compose["services"].get("airflow-worker", {})
    problems = []
    if "container_name" in worker:
        problems.append("airflow-worker: container_name prevents --scale")
    for port in worker.get("ports") or []:
        if (isinstance(port, dict) and port.get("published")) or (isinstance(port, str) and ":" in port):
            problems.append(f"airflow-worker: host port {port} prevents --scale")
    return problems


def check_images(compose: dict[str, Any]) -> list[str]:
    """Every image has an explicit tag other than 'latest'."""
    problems = []
    for name, svc in compose["services"].items():
        image = svc.get("image")
        if image is None:
            if "build" not in svc:
                problems.append(f"{name}: neither image nor build")
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"{name}: image {image!r} needs a pinned tag")
    return problems


def _airflow_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def check_airflow_settings(compose: dict[str, Any]) -> list[str]:
    """CeleryExecutor wired to the redis/postgres/api-server services; DAGs from ../dags."""
    problems = []
    services = compose["services"]
    for name, command in REQUIRED_SERVICES.items():
        if command is None or name not in services:
            continue
        env = _airflow_env(compose, name)
        expect = {
            "AIRFLOW__CORE__EXECUTOR": lambda v: v == "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": lambda v: v.startswith("redis://redis:"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": lambda v: "@postgres:" in v,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": lambda v: v.startswith(
                "http://airflow-apiserver:8080/"
            ),
            "AIRFLOW__API_AUTH__JWT_SECRET": lambda v: len(v) >= 32,
        }
        for key, ok in expect.items():
            if not ok(env.get(key, "")):
                problems.append(f"{name}: {key}={env.get(key)!r}")
        mounts = {(s, t) for _, s, t in _volume_specs(services[name])}
        if ("../dags", "/opt/airflow/dags") not in mounts:
            problems.append(f"{name}: the example DAGs (../dags) are not mounted at /opt/airflow/dags")
    return problems


def _check_connection(conn_id: str, raw: str, services: dict[str, Any]) -> list[str]:
    try:
        conn = json.loads(raw)
    except json.JSONDecodeError as exc:
        return [f"{conn_id}: not JSON ({exc})"]
    problems = []
    conn_type = conn.get("conn_type")
    extra = conn.get("extra") or {}
    if conn_id == "AIRFLOW_CONN_GIP_DEFAULT":
        if conn_type != "gip":
            problems.append(f"{conn_id}: conn_type should be 'gip', is {conn_type!r}")
        if not re.match(r"^https?://", conn.get("host", "")):
            problems.append(f"{conn_id}: host should be the console API URL, is {conn.get('host')!r}")
        if not extra.get("workspace_id"):
            problems.append(f"{conn_id}: extra.workspace_id is missing")
        auth = extra.get("auth_type")
        if auth not in ("api_key", "cognito"):
            problems.append(f"{conn_id}: extra.auth_type should be api_key or cognito, is {auth!r}")
        if auth == "cognito" and not (
            conn.get("login") and extra.get("cognito_endpoint") and extra.get("cognito_client_id")
        ):
            problems.append(
                f"{conn_id}: cognito needs login, extra.cognito_endpoint and extra.cognito_client_id"
            )
        if not conn.get("password"):
            problems.append(f"{conn_id}: password (API key / Cognito password) is missing")
    elif conn_type is None:
        problems.append(f"{conn_id}: conn_type is missing")
    host = conn.get("host", "")
    hostname = re.sub(r"^[a-z]+://", "", host).split(":")[0].split("/")[0]
    placeholder = "<" in host
    if (
        "." not in hostname
        and hostname not in ("", "localhost")
        and hostname not in services
        and not placeholder
    ):
        problems.append(f"{conn_id}: host {host!r} is no compose service")
    if hostname == "gip-emulator" and hostname in services:
        port = re.search(r":(\d+)", host.split("://")[-1])
        command = _command_words(services["gip-emulator"].get("command"))
        if not port or "--port" not in command or command[command.index("--port") + 1] != port.group(1):
            problems.append(f"{conn_id}: port of {host!r} is not the port gip-emulator listens on")
    return problems


def check_connections(compose: dict[str, Any], base: Path = DOCKER) -> list[str]:
    """connections.env: the demo connections; .env.example: every example connection is well-formed."""
    services = compose["services"]
    problems = []
    demo = parse_env_file((base / "connections.env").read_text())
    for conn_id in (
        "AIRFLOW_CONN_GIP_DEFAULT",
        "AIRFLOW_CONN_GIP_WAREHOUSE",
        "AIRFLOW_CONN_LANGFUSE_DEFAULT",
    ):
        if conn_id not in demo:
            problems.append(f"connections.env: {conn_id} is missing")
    for conn_id, raw in demo.items():
        problems += [f"connections.env: {p}" for p in _check_connection(conn_id, raw, services)]
    warehouse = json.loads(demo.get("AIRFLOW_CONN_GIP_WAREHOUSE", "{}"))
    init_sql = " ".join(p.read_text() for p in (base / "postgres-init").glob("*.sql"))
    if warehouse.get("schema") and f"CREATE DATABASE {warehouse['schema']}" not in init_sql:
        problems.append(f"the warehouse database {warehouse.get('schema')!r} is not created by postgres-init")

    example_text = (base / ".env.example").read_text()
    examples: list[tuple[str, str]] = []
    for line in example_text.splitlines():
        examples += list(parse_env_file(line, include_commented=True).items())
    gip_auth = set()
    for conn_id, raw in examples:
        if conn_id.startswith("AIRFLOW_CONN_"):
            problems += [f".env.example: {p}" for p in _check_connection(conn_id, raw, services)]
            if conn_id == "AIRFLOW_CONN_GIP_DEFAULT" and raw.startswith("{"):
                gip_auth.add((json.loads(raw).get("extra") or {}).get("auth_type"))
    if gip_auth != {"api_key", "cognito"}:
        problems.append(
            f".env.example: should show AIRFLOW_CONN_GIP_DEFAULT for api_key and cognito, shows {gip_auth}"
        )
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    documented = {k for k, _ in examples}
    undocumented = sorted(used - documented - {"GIP_AIRFLOW_IMAGE"})
    if undocumented:
        problems.append(f".env.example: compose variables not documented: {undocumented}")
    return problems


# =================================================================================================
# Dockerfile
# =================================================================================================

DOCKERFILE_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    flags: dict[str, str]

    def words(self) -> list[str]:
        """Arguments as words: the JSON (exec) form, else shell-split without the --flags."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except json.JSONDecodeError:
                pass
        return [w for w in shlex.split(text) if not w.startswith("--")]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments and parser directives dropped, ``\\`` continuations joined.

    Raises ValueError on an unknown instruction or a dangling continuation.
    """
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        keyword = keyword.upper()
        if keyword not in DOCKERFILE_INSTRUCTIONS:
            raise ValueError(f"line {start}: unknown instruction {keyword!r}")
        flags = {}
        while True:
            m = re.match(r"\s*--([a-z-]+)(?:=(\S+))?", args)
            if not m or (keyword in ("RUN",) and m.group(1) not in ("mount", "network", "security")):
                break
            flags[m.group(1)] = m.group(2) or ""
            args = args[m.end() :]
        instructions.append(Instruction(keyword, args.strip(), start, flags))
        buffer = ""
    if buffer:
        raise ValueError("the last instruction ends with a line continuation")
    return instructions


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]


def dockerfile_stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, with ARGs substituted into each FROM image."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "ARG" and not stages:
            name, _, default = ins.args.partition("=")
            global_args[name.strip()] = default.strip().strip("\"'")
        elif ins.keyword == "FROM":
            words = ins.args.split()
            image = interpolate(words[0], global_args)
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, stage_name, []))
        elif not stages:
            raise ValueError(f"line {ins.line}: {ins.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise ValueError("no FROM")
    return global_args, stages


def _lock() -> dict[str, Any]:
    return tomllib.loads((REPO / "uv.lock").read_text())


def _locked_version(lock: dict[str, Any], name: str) -> str:
    return next(p["version"] for p in lock["package"] if p["name"] == name)


def _dockerignore_patterns(base: Path = DOCKER) -> list[str]:
    path = base / "Dockerfile.dockerignore"
    if not path.exists():
        return []
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics: last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*") or rel.startswith(pat + "/"):
            ignored = not negate
    return ignored


def check_dockerfile(text: str, *, context: Path = REPO, base: Path = DOCKER) -> list[str]:
    """Parses; final stage FROM apache/airflow:<locked airflow>-python<project python>; COPY sources exist."""
    try:
        _, stages = dockerfile_stages(parse_dockerfile(text))
    except ValueError as exc:
        return [f"Dockerfile does not parse: {exc}"]
    problems = []
    lock = _lock()
    airflow = _locked_version(lock, "apache-airflow")
    python = _project_python()
    expected = f"apache/airflow:{airflow}-python{python}"
    for stage in stages:
        if stage.image != expected and stage.image not in {s.name for s in stages}:
            problems.append(f"FROM {stage.image}: expected {expected} (uv.lock has apache-airflow {airflow})")
    names = set()
    patterns = _dockerignore_patterns(base)
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            sources = ins.words()[:-1]
            if "from" in ins.flags:
                if ins.flags["from"] not in names:
                    problems.append(
                        f"line {ins.line}: COPY --from={ins.flags['from']} names no earlier stage"
                    )
                continue
            for src in sources:
                if not (context / src).exists():
                    problems.append(f"line {ins.line}: COPY source {src} does not exist in the build context")
                elif _ignored(src, patterns):
                    problems.append(
                        f"line {ins.line}: COPY source {src} is excluded by Dockerfile.dockerignore"
                    )
        if stage.name:
            names.add(stage.name)
    return problems


def _project_python() -> str:
    """The project's Python (major.minor): mypy's python_version, also the floor of requires-python."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return str(pyproject["tool"]["mypy"]["python_version"])


def check_python_versions(text: str) -> list[str]:
    """The image's Python is the project's, inside requires-python of pyproject.toml and uv.lock."""
    from packaging.specifiers import SpecifierSet

    _, stages = dockerfile_stages(parse_dockerfile(text))
    m = re.search(r"-python(\d+\.\d+)$", stages[-1].image)
    if not m:
        return [f"FROM {stages[-1].image}: no -pythonX.Y tag"]
    image_python = m.group(1)
    problems = []
    if image_python != _project_python():
        problems.append(
            f"image Python {image_python} != project Python {_project_python()} (mypy python_version)"
        )
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for where, spec in (
        ("pyproject.toml", pyproject["project"]["requires-python"]),
        ("uv.lock", _lock()["requires-python"]),
    ):
        if f"{image_python}.0" not in SpecifierSet(spec):
            problems.append(f"image Python {image_python} is outside requires-python {spec!r} of {where}")
    return problems


def _marker_env(python: str, machine: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
        "extra": "",
    }


def image_packages(
    lock: dict[str, Any], python: str, machine: str, extras: set[str]
) -> dict[str, dict[str, Any]]:
    """Locked packages the image installs: gip-airflow[extras] and its dependency closure on that platform.

    A package locked at several versions (uv forks the resolution by Python version) is told apart
    by the ``version`` its dependents name.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for pkg in lock["package"]:
        by_name.setdefault(pkg["name"], []).append(pkg)
    env = _marker_env(python, machine)
    found: dict[str, dict[str, Any]] = {}
    done: set[tuple[str, str, str]] = set()
    todo: list[tuple[str, str | None, str]] = [("gip-airflow", None, "")]
    todo += [("gip-airflow", None, extra) for extra in extras]
    while todo:
        name, version, extra = todo.pop()
        candidates = [p for p in by_name[name] if version is None or p["version"] == version]
        if len(candidates) != 1:
            raise ValueError(f"uv.lock: {len(candidates)} entries for {name} {version or ''}")
        pkg = candidates[0]
        if (name, pkg["version"], extra) in done:
            continue
        done.add((name, pkg["version"], extra))
        found[name] = pkg
        deps = pkg.get("optional-dependencies", {}).get(extra, []) if extra else pkg.get("dependencies", [])
        for dep in deps:
            if "marker" in dep and not Marker(dep["marker"]).evaluate(env):
                continue
            todo.append((dep["name"], dep.get("version"), ""))
            todo += [(dep["name"], dep.get("version"), e) for e in dep.get("extra", [])]
    found.pop("gip-airflow")
    return found


def _wheel_fits(filename: str, python: str, machine: str) -> bool:
    tags = filename[:-4].split("-")[-3:]
    py, abi, plat = tags
    cp = "cp" + python.replace(".", "")
    py_ok = any(t in ("py3", cp, "py2.py3") or t.startswith("py3") for t in py.split(".")) or (
        abi == "abi3" and any(t.startswith("cp3") and int(t[3:]) <= int(cp[3:]) for t in py.split("."))
    )
    plat_ok = plat == "any" or any(
        ("manylinux" in p or ("musllinux" not in p and "linux" in p)) and p.endswith(machine)
        for p in plat.split(".")
    )
    return py_ok and plat_ok


def check_locked_wheels(text: str) -> list[str]:
    """Every package the image installs from uv.lock has a wheel (or an sdist) for the image's Python."""
    _, stages = dockerfile_stages(parse_dockerfile(text))
    python = stages[-1].image.rsplit("-python", 1)[-1]
    lock = _lock()
    problems = []
    for machine in IMAGE_PLATFORMS:
        for name, pkg in sorted(image_packages(lock, python, machine, EXTRAS).items()):
            wheels = [w["url"].rsplit("/", 1)[-1] for w in pkg.get("wheels", [])]
            if "sdist" in pkg or any(_wheel_fits(w, python, machine) for w in wheels):
                continue
            problems.append(f"{name} {pkg['version']}: no wheel for CPython {python} on linux {machine}")
    return problems


# =================================================================================================
# "Installs the package the way the documented install does"
# =================================================================================================


@dataclass(frozen=True)
class InstallRecipe:
    """The uv commands of an install: what is exported from the lock and how it is installed."""

    export_flags: frozenset[str]
    extras: frozenset[str]
    installs: tuple[frozenset[str], ...]


def install_recipe(text: str) -> InstallRecipe:
    """Find ``uv export`` and ``uv pip install`` commands in shell text (a Dockerfile, a README)."""
    joined = re.sub(r"\\\n", " ", text)
    export_flags: set[str] = set()
    extras: set[str] = set()
    installs = []
    for command in re.split(r"&&|;|\n|\|", joined):
        try:
            words = shlex.split(command, comments=True)
        except ValueError:
            continue
        words = [w for w in words if w not in ("RUN", "$", "python", "-m")]
        if words[:2] == ["uv", "export"]:
            for i, word in enumerate(words):
                if word == "--extra":
                    extras.add(words[i + 1])
                elif word.startswith("--extra="):
                    extras.add(word.split("=", 1)[1])
                elif word.startswith("--") and word not in ("--output-file", "-o") and word != "--extra":
                    export_flags.add(word)
        elif words[:3] == ["uv", "pip", "install"]:
            # Flags that change how, not what, gets installed do not count.
            flags = {
                w for w in words[3:] if w.startswith("-") and w not in ("--no-cache", "--compile-bytecode")
            }
            installs.append(frozenset(flags))
    return InstallRecipe(frozenset(export_flags), frozenset(extras), tuple(installs))


def documented_install() -> tuple[Path, str]:
    """The documented install: README.md's section on installing into an image."""
    path = REPO / "README.md"
    text = path.read_text()
    assert "uv export" in text, "README.md documents no install (a 'uv export' command)"
    return path, text


def check_install(text: str, documented: str) -> list[str]:
    """The Dockerfile exports the lock and installs like the documented install, with the needed extras."""
    image = install_recipe(text)
    docs = install_recipe(documented)
    problems = []
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = set(pyproject["project"]["optional-dependencies"])
    if not EXTRAS <= image.extras:
        problems.append(f"the image exports extras {sorted(image.extras)}; needs {sorted(EXTRAS)}")
    if not image.extras <= declared:
        problems.append(f"extras {sorted(image.extras - declared)} are not in pyproject.toml")
    for flag in ("--locked", "--no-dev", "--no-emit-project"):
        if flag not in image.export_flags:
            problems.append(f"uv export without {flag}")
    if (
        len(image.installs) < 2
        or "--require-hashes" not in image.installs[0]
        or "-r" not in image.installs[0]
    ):
        problems.append("the image should first install the exported requirements with --require-hashes -r")
    if not image.installs or "--no-deps" not in image.installs[-1]:
        problems.append(
            "the image should install the package itself with --no-deps (deps come from the lock)"
        )
    if (image.export_flags, image.extras, image.installs) != (docs.export_flags, docs.extras, docs.installs):
        problems.append(f"the Dockerfile installs differently from the documented install: {image} != {docs}")
    return problems


# =================================================================================================
# Tests
# =================================================================================================


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


COMPOSE_CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "schema": check_schema,
    "paths": check_paths,
    "services": check_services,
    "depends_on": check_depends_on,
    "scalable_worker": check_scalable_worker,
    "images": check_images,
    "airflow_settings": check_airflow_settings,
    "connections": check_connections,
}


@pytest.mark.parametrize("check", COMPOSE_CHECKS)
def test_compose(compose: dict[str, Any], check: str) -> None:
    assert COMPOSE_CHECKS[check](compose) == []


def test_compose_parses_with_a_user_env(tmp_path: Path) -> None:
    """Values from docker/.env replace the defaults; a required one left unset fails loudly."""
    compose = load_compose(env={"AIRFLOW_UID": "1000", "AIRFLOW_WORKER_CONCURRENCY": "4"})
    worker = compose["services"]["airflow-worker"]
    assert worker["user"] == "1000:0"
    assert _airflow_env(compose, "airflow-worker")["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"
    assert check_schema(compose) == []
    with pytest.raises(ValueError, match="required variable X"):
        interpolate("${X:?set X}", {})
    assert interpolate("$$HOME ${A:-x} ${B-y} ${C}", {"B": ""}) == "$HOME x  "


def test_dockerfile_parses(dockerfile: str) -> None:
    args, stages = dockerfile_stages(parse_dockerfile(dockerfile))
    assert stages[-1].image.startswith("apache/airflow:")
    assert [s.name for s in stages] == ["requirements", None]
    assert "AIRFLOW_IMAGE" in args


@pytest.mark.parametrize(
    "check", [check_dockerfile, check_python_versions, check_locked_wheels], ids=lambda f: f.__name__
)
def test_dockerfile(dockerfile: str, check: Callable[[str], list[str]]) -> None:
    assert check(dockerfile) == []


def test_image_installs_like_the_documented_install(dockerfile: str) -> None:
    _, documented = documented_install()
    assert check_install(dockerfile, documented) == []


def test_image_package_closure_is_the_lock() -> None:
    """The closure walk finds what the image needs (so the wheel check covers the real set)."""
    packages = image_packages(_lock(), _project_python(), "x86_64", EXTRAS)
    for name in ("apache-airflow", "apache-airflow-providers-celery", "apache-airflow-providers-postgres",
                 "celery", "redis", "fastapi", "uvicorn", "httpx", "pydantic"):  # fmt: skip
        assert name in packages, name
    assert "pywin32" not in packages  # a Windows-only marker is evaluated, not followed


# --- every check can fail -----------------------------------------------------------------------


def _mutate(compose: dict[str, Any], fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    fn(broken)
    return broken


def _svc(name: str, **values: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda c: c["services"][name].update(values)


def _pop(name: str, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda c: c["services"][name].pop(key)


def _env(name: str, **values: str) -> Callable[[dict[str, Any]], Any]:
    return lambda c: c["services"][name]["environment"].update(values)


def _in(name: str, key: str, **values: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda c: c["services"][name][key].update(values)


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], Any]:
    return lambda c: c["services"].update({new: c["services"].pop(old)})


EMULATOR = ["gip-emulator", "--host", "0.0.0.0", "--port"]
COMPOSE_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("schema", "typo in a key", _svc("redis", healtcheck={"test": ["CMD", "true"]})),
    ("schema", "unquoted restart: no", _svc("airflow-init", restart=False)),
    ("schema", "bad depends_on condition", _in("airflow-scheduler", "depends_on", redis={"condition": "up"})),
    ("schema", "bad duration", _in("redis", "healthcheck", interval="10 seconds")),
    ("schema", "unknown top-level key", lambda c: c.update(service={})),
    ("paths", "missing DAGs folder", _svc("airflow-scheduler", volumes=["../no-dags:/opt/airflow/dags:ro"])),
    ("paths", "missing build context", _svc("airflow-worker", build={"context": "../nowhere"})),
    ("paths", "missing Dockerfile", _svc("airflow-worker", build={"context": "..", "dockerfile": "X"})),
    ("paths", "undeclared named volume", lambda c: c["volumes"].pop("airflow-logs")),
    ("paths", "missing env file", _svc("airflow-worker", env_file=["nope.env"])),
    ("services", "service missing", lambda c: c["services"].pop("airflow-triggerer")),
    ("services", "health check missing", _pop("airflow-dag-processor", "healthcheck")),
    ("services", "health check disabled", _in("redis", "healthcheck", disable=True)),
    ("services", "wrong command", _svc("airflow-worker", command="celery flower")),
    ("services", "emulator on loopback", _svc("gip-emulator", command=["gip-emulator", "--port", "8089"])),
    ("services", "init restarts", _svc("airflow-init", restart="always")),
    ("depends_on", "unknown service", _in("airflow-worker", "depends_on", mq={"condition": "x"})),
    ("depends_on", "healthy without health check", _pop("postgres", "healthcheck")),
    ("depends_on", "not waiting for init", _in("airflow-scheduler", "depends_on", **{"airflow-init": {}})),
    ("scalable_worker", "container_name", _svc("airflow-worker", container_name="worker")),
    ("scalable_worker", "host port", _svc("airflow-worker", ports=["8793:8793"])),
    ("images", "latest tag", _svc("redis", image="redis:latest")),
    ("images", "no tag", _svc("postgres", image="postgres")),
    ("airflow_settings", "LocalExecutor", _env("airflow-worker", AIRFLOW__CORE__EXECUTOR="LocalExecutor")),
    ("airflow_settings", "broker elsewhere", _env("airflow-scheduler", AIRFLOW__CELERY__BROKER_URL="redis://x:1/0")),
    ("airflow_settings", "no exec API", _env("airflow-worker", AIRFLOW__CORE__EXECUTION_API_SERVER_URL="")),
    ("airflow_settings", "short JWT secret", _env("airflow-triggerer", AIRFLOW__API_AUTH__JWT_SECRET="s")),
    ("connections", "emulator service renamed", _rename("gip-emulator", "emulator")),
    ("connections", "emulator port changed", _svc("gip-emulator", command=[*EMULATOR, "9000"])),
]  # fmt: skip


@pytest.mark.parametrize(
    ("check", "what", "mutation"), COMPOSE_MUTATIONS, ids=[m[1] for m in COMPOSE_MUTATIONS]
)
def test_compose_check_fails_on_broken_copy(
    compose: dict[str, Any], check: str, what: str, mutation: Callable[[dict[str, Any]], Any]
) -> None:
    assert COMPOSE_CHECKS[check](_mutate(compose, mutation)) != []


def _copy_docker_dir(tmp_path: Path) -> Path:
    base = tmp_path / "docker"
    base.mkdir()
    for path in DOCKER.iterdir():
        if path.is_file():
            (base / path.name).write_text(path.read_text())
    (base / "postgres-init").mkdir()
    for path in (DOCKER / "postgres-init").iterdir():
        (base / "postgres-init" / path.name).write_text(path.read_text())
    return base


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("connections.env", '"conn_type": "gip"', '"conn_type": "http"'),
        ("connections.env", '"workspace_id": "2d6d2b89-8454-40a1-8d85-0aaba543f47e", ', ""),
        ("connections.env", '"password": "gip-emulator-key", ', ""),
        ("connections.env", '"schema": "warehouse"', '"schema": "results"'),
        ("connections.env", '"host": "postgres"', '"host": "warehouse-db"'),
        ("connections.env", "AIRFLOW_CONN_LANGFUSE_DEFAULT", "AIRFLOW_CONN_LANGFUSE"),
        ("connections.env", '\'{"conn_type": "gip"', '\'{conn_type: "gip"'),
        (".env.example", '"auth_type": "cognito", "cognito_endpoint"', '"auth_type": "cognito", "x"'),
        (".env.example", '"auth_type": "cognito"', '"auth_type": "oauth"'),
        (".env.example", "AIRFLOW_WORKER_CONCURRENCY=8", "WORKER_CONCURRENCY=8"),
        ("postgres-init/01-warehouse.sql", "CREATE DATABASE warehouse", "CREATE DATABASE other"),
    ],
)
def test_connection_check_fails_on_broken_copy(
    compose: dict[str, Any], tmp_path: Path, file: str, old: str, new: str
) -> None:
    base = _copy_docker_dir(tmp_path)
    text = (base / file).read_text()
    assert old in text
    (base / file).write_text(text.replace(old, new, 1))
    assert check_connections(compose, base) != []


@pytest.mark.parametrize(
    ("old", "new", "check"),
    [
        ("apache/airflow:3.3.2-python3.11", "apache/airflow:3.2.0-python3.11", check_dockerfile),
        ("apache/airflow:3.3.2-python3.11", "apache/airflow:3.3.2-python3.12", check_python_versions),
        ("apache/airflow:3.3.2-python3.11", "apache/airflow:3.3.2-python3.10", check_python_versions),
        ("apache/airflow:3.3.2-python3.11", "python:3.11-slim", check_dockerfile),
        ("COPY --chown=airflow:0 gip_airflow ", "COPY --chown=airflow:0 gip_airflow_x ", check_dockerfile),
        ("--from=requirements", "--from=builder", check_dockerfile),
        ("RUN uv pip install --no-cache --compile-bytecode --require", "RUNX uv pip install --require", check_dockerfile),
    ],
)  # fmt: skip
def test_dockerfile_check_fails_on_broken_copy(
    dockerfile: str, old: str, new: str, check: Callable[[str], list[str]]
) -> None:
    assert old in dockerfile
    assert check(dockerfile.replace(old, new)) != []


def test_dockerignore_check_fails_when_a_copied_path_is_excluded(dockerfile: str, tmp_path: Path) -> None:
    base = _copy_docker_dir(tmp_path)
    ignore = base / "Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text().replace("!gip_airflow/", "gip_airflow/"))
    assert any("excluded" in p for p in check_dockerfile(dockerfile, base=base))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("--locked", "--frozen"),
        ("--require-hashes ", ""),
        ("--no-deps ", ""),
        ("--no-dev", "--all-groups"),
        ("--extra emulator ", ""),
    ],
)
def test_install_check_fails_when_image_and_docs_differ(dockerfile: str, old: str, new: str) -> None:
    _, documented = documented_install()
    assert check_install(dockerfile.replace(old, new), documented) != []


def test_wheel_check_fails_for_a_platform_without_wheels(dockerfile: str) -> None:
    # psycopg-binary ships only platform wheels: none for a Python that does not exist yet.
    broken = dockerfile.replace("python3.11", "python3.99")
    assert any("psycopg-binary" in p for p in check_locked_wheels(broken))


def test_dockerfile_parser() -> None:
    text = (
        "# syntax=docker/dockerfile:1\nARG BASE=img:1\nFROM ${BASE} AS one\n# c\n"
        "RUN a \\\n  # inner\n  && b\nCOPY --from=one --chown=x:0 /a /b\n"
    )
    ins = parse_dockerfile(text)
    assert [i.keyword for i in ins] == ["ARG", "FROM", "RUN", "COPY"]
    assert ins[2].args == "a  && b" and ins[2].line == 5
    assert ins[3].flags == {"from": "one", "chown": "x:0"} and ins[3].words() == ["/a", "/b"]
    assert dockerfile_stages(ins)[1][0].image == "img:1"
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_dockerfile("FROM a\nRUNN b\n")
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM a\nRUN b \\\n")
    with pytest.raises(ValueError, match="before the first FROM"):
        dockerfile_stages(parse_dockerfile("RUN a\nFROM b\n"))
