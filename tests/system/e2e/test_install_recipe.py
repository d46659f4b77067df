"""The documented install (the one docker/Dockerfile runs) works in a fresh virtualenv.

``tests/test_docker_static.py`` checks that the Dockerfile and the docs use the same commands; this
runs those commands, from docs/docker.md, on a copy of what the Docker build context holds
(pyproject.toml, uv.lock, the readmes and licence, gip_airflow/ and emulator/), and checks the
result: the locked versions, no development packages, the provider registered, the emulator's
console script present.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.system.e2e.topology import REPO

pytestmark = pytest.mark.e2e

DOCS = REPO / "docs" / "docker.md"


def _uv() -> str | None:
    return shutil.which("uv") or next(
        (str(p) for p in [Path.home() / ".local" / "bin" / "uv"] if p.exists()), None
    )


def _documented_commands() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    install = [b for b in blocks if "uv export" in b]
    assert len(install) == 1, "docs/docker.md should show one install block with 'uv export'"
    return install[0]


@pytest.mark.timeout(300)
def test_documented_install_in_a_fresh_venv(tmp_path: Path) -> None:
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed (make bootstrap installs it)")
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md", "README.pypi.md", "LICENSE", "NOTICE"):
        shutil.copy(REPO / name, context / name)
    for folder in ("gip_airflow", "emulator"):
        shutil.copytree(REPO / folder, context / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=60)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "UV_"))}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}")
    script = "set -euo pipefail\n" + _documented_commands()
    done = subprocess.run(
        ["bash", "-c", script], cwd=context, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]

    python = venv / "bin" / "python"
    listed = subprocess.run(
        [uv, "pip", "list", "--format", "freeze"], env=env, capture_output=True, text=True, check=True
    ).stdout
    installed = dict(line.split("==", 1) for line in listed.splitlines() if "==" in line)
    lock: dict[str, set[str]] = {}  # a package can be locked at several versions (per-Python forks)
    for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]:
        lock.setdefault(package["name"], set()).add(package.get("version", ""))
    for name in ("apache-airflow", "apache-airflow-providers-celery", "apache-airflow-providers-postgres"):
        assert installed.get(name) in lock[name], name
    mismatched = {
        n: (v, lock.get(n))
        for n, v in installed.items()
        if n not in ("gip-airflow", "gip-airflow-emulator") and v not in lock.get(n, set())
    }
    assert not mismatched, f"installed versions differ from uv.lock: {mismatched}"
    assert not {"pytest", "mypy", "ruff", "hypothesis"} & set(installed), "development packages installed"

    check = (
        "from importlib.metadata import entry_points as e; "
        "print([p.value for p in e(group='apache_airflow_provider') if p.value.startswith('gip_airflow')])"
    )
    out = subprocess.run([python, "-c", check], capture_output=True, text=True, check=True).stdout
    assert "gip_airflow:get_provider_info" in out
    subprocess.run([venv / "bin" / "gip-emulator", "--help"], capture_output=True, check=True, timeout=60)
