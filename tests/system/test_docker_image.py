"""Static checks of docker/Dockerfile (no Docker engine runs on the test machines).

The Dockerfile is read with dockerfile-parse and uv.lock's wheel tags with packaging: the image builds
on apache/airflow in uv.lock's Airflow and the project's Python, copies only what exists and is not
dockerignored, installs like the documented install, and every locked package it installs has a
wheel for its Python on both image platforms (or an sdist). Every check also fails on a broken copy.
"""

from __future__ import annotations

import fnmatch
import io
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.markers import Marker
from packaging.specifiers import SpecifierSet
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
EXTRAS = {"postgres", "celery"}
WORKSPACE_PACKAGES = ("gip-airflow", "gip-airflow-emulator")  # installed from the build context
LOCK = tomllib.loads((REPO / "uv.lock").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PYTHON = str(PYPROJECT["tool"]["mypy"]["python_version"])  # the project's Python, floor of requires-python
AIRFLOW = next(p["version"] for p in LOCK["package"] if p["name"] == "apache-airflow")
INSTRUCTIONS = {"ADD", "ARG", "CMD", "COMMENT", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
                "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}  # fmt: skip


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        stem = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, stem) or path.startswith(stem + "/"):
            ignored = not pattern.startswith("!")
    return ignored


def check_dockerfile(text: str, base: Path = DOCKER) -> list[str]:
    """Known instructions; FROM the locked Airflow with the project's Python; COPY sources are sound."""
    parsed = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    problems = [f"line {i['startline'] + 1}: unknown instruction {i['instruction']}"
                for i in parsed.structure if i["instruction"] not in INSTRUCTIONS]  # fmt: skip
    expected = f"apache/airflow:{AIRFLOW}-python{PYTHON}"
    problems += [f"FROM {image}: expected {expected}" for image in parsed.parent_images if image != expected]
    image_python = parsed.baseimage.rsplit("-python", 1)[-1]
    for spec in (PYPROJECT["project"]["requires-python"], LOCK["requires-python"]):
        if f"{image_python}.0" not in SpecifierSet(spec):
            problems.append(f"image Python {image_python} is outside requires-python {spec}")
    ignore = [p for p in (base / "Dockerfile.dockerignore").read_text().split() if not p.startswith("#")]
    stages: list[str] = []
    for ins in parsed.structure:
        if ins["instruction"] not in ("FROM", "COPY"):
            continue
        words, where = shlex.split(ins["value"]), f"line {ins['startline'] + 1}"
        if ins["instruction"] == "FROM":
            stages.append(words[-1] if len(words) == 3 else "")
        elif ins["instruction"] == "COPY":
            stage = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), None)
            if stage is not None and stage not in stages[:-1]:
                problems.append(f"{where}: COPY --from={stage} names no earlier stage")
            for src in [w for w in words[:-1] if not w.startswith("--")] if stage is None else []:
                if not (REPO / src).exists() or _dockerignored(src, ignore):
                    problems.append(f"{where}: COPY source {src} is missing or dockerignored")
    return problems


def image_packages(python: str, machine: str) -> dict[str, dict[str, Any]]:
    """The locked packages the image installs: the closure of gip-airflow[EXTRAS] and the emulator."""
    env = {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
           "os_name": "posix", "platform_machine": machine, "extra": ""}  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str | None, str]] = [("gip-airflow", None, e) for e in ("", *EXTRAS)]
    todo.append(("gip-airflow-emulator", None, ""))
    while todo:
        name, version, extra = todo.pop()
        # uv forks by Python version: a package locked twice is told apart by the version its dependent names.
        (pkg,) = [p for p in LOCK["package"] if p["name"] == name and version in (None, p.get("version"))]
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        found[name] = pkg
        for dep in (
            pkg.get("optional-dependencies", {}).get(extra, []) if extra else pkg.get("dependencies", [])
        ):
            if "marker" not in dep or Marker(dep["marker"]).evaluate(env):
                todo += [(dep["name"], dep.get("version"), e) for e in ("", *dep.get("extra", []))]
    for name in WORKSPACE_PACKAGES:
        found.pop(name)
    return found


def check_locked_wheels(text: str) -> list[str]:
    """Every package the image installs has a wheel for its Python on both image platforms, or an sdist."""
    python = DockerfileParser(fileobj=io.BytesIO(text.encode())).baseimage.rsplit("-python", 1)[-1]
    version = tuple(int(p) for p in python.split("."))
    problems = []
    for machine in ("x86_64", "aarch64"):
        platforms = [f"manylinux_2_{m}_{machine}" for m in range(36, 16, -1)]
        platforms += [f"manylinux{v}_{machine}" for v in ("2014", "2010", "1")]
        fits = {*cpython_tags(version, platforms=platforms), *compatible_tags(version, platforms=platforms)}
        for name, pkg in sorted(image_packages(python, machine).items()):
            wheels = [parse_wheel_filename(w["url"].rsplit("/", 1)[-1])[3] for w in pkg.get("wheels", [])]
            if "sdist" not in pkg and not any(tags & fits for tags in wheels):
                problems.append(f"{name} {pkg['version']}: no wheel for CPython {python} on linux {machine}")
    return problems


def install_recipe(text: str) -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
    """The ``uv export`` flags (extras as ``extra=X``) and each ``uv pip install``'s flags in shell text."""
    export: set[str] = set()
    installs = []
    for command in re.split(r"&&|;|\n|\|", re.sub(r"\\\n", " ", text)):
        try:
            words = [w for w in shlex.split(command, comments=True) if w not in ("RUN", "$", "python", "-m")]
        except ValueError:
            continue
        if words[:2] == ["uv", "export"]:
            export |= {w for w in words if w.startswith("--") and w not in ("--output-file", "--extra")}
            export |= {f"extra={words[i + 1]}" for i, w in enumerate(words) if w == "--extra"}
        elif words[:3] == ["uv", "pip", "install"]:
            how = {"--no-cache", "--compile-bytecode"}  # how, not what, gets installed
            installs.append(frozenset(w for w in words[3:] if w.startswith("-") and w not in how))
    return frozenset(export), tuple(installs)


def check_install(text: str) -> list[str]:
    """The image exports the lock and installs it like the documented install (README or docs/)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    documented = next(doc for page in pages if "uv export" in (doc := page.read_text()))
    (export, installs), problems = install_recipe(text), []
    declared = {f"extra={e}" for e in PYPROJECT["project"]["optional-dependencies"]}
    wanted = {
        "--locked",
        "--no-dev",
        "--all-packages",
        "--no-emit-workspace",
        *(f"extra={e}" for e in EXTRAS),
    }
    if not wanted <= export or {e for e in export if e.startswith("extra=")} - declared:
        problems.append(
            f"uv export {sorted(export)} should include {sorted(wanted)} and only declared extras"
        )
    if len(installs) < 2 or not {"--require-hashes", "-r"} <= installs[0] or "--no-deps" not in installs[-1]:
        problems.append(
            "install the exported requirements with --require-hashes -r, then the package --no-deps"
        )
    if (export, installs) != install_recipe(documented):
        problems.append("the Dockerfile installs differently from the documented install")
    return problems


@pytest.mark.parametrize("check", [check_dockerfile, check_locked_wheels, check_install])
def test_dockerfile(check):
    assert check(DOCKERFILE) == []


def test_the_closure_covers_what_the_image_needs():
    packages = image_packages(PYTHON, "x86_64")
    assert {"apache-airflow", "apache-airflow-providers-celery", "apache-airflow-providers-postgres",
            "celery", "redis", "fastapi", "uvicorn", "httpx", "pydantic", "croniter"} <= set(packages)  # fmt: skip
    assert "pywin32" not in packages  # a Windows-only marker is evaluated, not followed


# fmt: off
DOCKERFILE_MUTATIONS = [
    (f"airflow:{AIRFLOW}-python{PYTHON}", "airflow:3.2.0-python3.11", check_dockerfile),
    (f"-python{PYTHON}", "-python3.10", check_dockerfile),
    ("COPY --chown=airflow:0 gip_airflow ", "COPY --chown=airflow:0 gip_airflow_x ", check_dockerfile),
    ("--from=requirements", "--from=builder", check_dockerfile),
    ("RUN uv pip install --no-cache", "RUNX uv pip install --no-cache", check_dockerfile),
    (f"-python{PYTHON}", "-python3.99", check_locked_wheels),  # psycopg-binary has platform wheels only
    ("--locked", "--frozen", check_install),
    ("--require-hashes ", "", check_install),
    ("--no-deps ", "", check_install),
    ("--extra celery ", "", check_install),
    ("--all-packages ", "", check_install),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "check"), DOCKERFILE_MUTATIONS)
def test_dockerfile_checks_fail_on_a_broken_copy(old, new, check):
    assert old in DOCKERFILE
    assert check(DOCKERFILE.replace(old, new)) != []


def test_a_dockerignored_copy_source_is_found(tmp_path):
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text()
    (tmp_path / "Dockerfile.dockerignore").write_text(ignore.replace("!gip_airflow/", "gip_airflow/"))
    assert any("dockerignored" in p for p in check_dockerfile(DOCKERFILE, base=tmp_path))
