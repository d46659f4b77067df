"""Both distributions as a new user gets them: built, installed into fresh virtualenvs, used.

``uv build --all-packages`` builds the provider and the emulator (sdist, then each wheel from its
sdist, as a packager would). Each wheel goes into its own new virtualenv with only its declared
dependencies, plus apache-airflow at the version of uv.lock (other packages are held to the lock
with a constraints file, which adds nothing to the install). Then:

* provider venv: every module of the wheel imports, pytest is absent, ``airflow providers list``
  shows gip-airflow;
* emulator venv (the provider wheel beside it, as its dependency): every module imports except the
  pytest plugin, which needs only pytest; ``gip-emulator`` starts, serves the generated seed, stops
  on SIGTERM; the demo finds the example DAGs shipped in the package;
* the wheels' contents and metadata: a provider without emulator, seed or pytest imports, each of its
  parts within its size budget; licence, NOTICE and project URLs in both; sdists without internal notes.
"""

from __future__ import annotations

import ast
import email.parser
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
#: Size budgets of the unpacked provider wheel, per part (KiB; every file counts, metadata in "core").
#: The core (connection, hook, operators, sensor, trigger, transfer, API contract) keeps issue 15's
#: 300 KB; each capability added later has its own budget, so growth shows where it happens.
PROVIDER_PARTS: dict[str, tuple[tuple[str, ...], int]] = {
    "regression gate": (("operators/gate.py", "operators/_gate_sql.py", "stats.py"), 64),
    "cost control": (("ledger.py", "cost.py", "operators/_cost_control.py", "hooks/langfuse.py"), 64),
    "evaluations view": (("plugins/",), 50),
    "lineage and assets": (("openlineage.py", "transfers/_lineage.py", "assets.py"), 20),
    "migration tools": (("migrate.py", "cli.py", "dag_factory.py"), 80),
}
CORE_BUDGET_KIB = 300
PROVIDER_WHEEL_LIMIT = (CORE_BUDGET_KIB + sum(kib for _, kib in PROVIDER_PARTS.values())) * 1024


def provider_part(name: str) -> str:
    """The part of the provider a wheel member belongs to (``core`` unless a capability claims it)."""
    inner = name.removeprefix("gip_airflow/")
    for part, (prefixes, _) in PROVIDER_PARTS.items():
        if name.startswith("gip_airflow/") and inner.startswith(prefixes):
            return part
    return "core"


EMULATOR_PACKAGE = "gip_airflow_emulator"

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Dists:
    provider_wheel: Path
    emulator_wheel: Path
    provider_sdist: Path
    emulator_sdist: Path


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without Airflow settings, virtualenv or uv project variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "UV_PROJECT", "PYTHONPATH", "GIP_"))
    }
    return {**env, **extra}


def run(*args: str | Path, timeout: float = 300, **kwargs: object) -> str:
    """Run a command; on failure, fail the test with its output. Return its stdout."""
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, (
        f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return str(done.stdout)


def locked_version(name: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == name)


def modules_in(wheel: Path, package: str) -> list[str]:
    """Importable module names of ``package`` in the wheel (example DAGs are not modules)."""
    names = []
    for name in zipfile.ZipFile(wheel).namelist():
        if name.startswith(f"{package}/") and name.endswith(".py") and "/example_dags/" not in name:
            module = name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            names.append(module)
    return sorted(names)


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode())


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    run(*_uv(), "build", "--all-packages", "--quiet", "--out-dir", out, cwd=REPO, env=_env())
    print(f"\nuv build --all-packages: {time.monotonic() - started:.1f} s")
    found = {p.name: p for p in out.iterdir()}

    def one(prefix: str, suffix: str) -> Path:
        (match,) = [p for n, p in found.items() if n.startswith(prefix + "-") and n.endswith(suffix)]
        return match

    built = Dists(
        one("gip_airflow", ".whl"),
        one("gip_airflow_emulator", ".whl"),
        one("gip_airflow", ".tar.gz"),
        one("gip_airflow_emulator", ".tar.gz"),
    )
    for path in (built.provider_wheel, built.emulator_wheel):
        unpacked = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
        print(f"{path.name}: {path.stat().st_size:,} B, {unpacked:,} B unpacked")
    return built


@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every locked version (no hashes) as constraints: installs stay reproducible, add nothing."""
    path = tmp_path_factory.mktemp("constraints") / "constraints.txt"
    run(
        *_uv(), "export", "--locked", "--no-dev", "--all-packages", "--all-extras", "--no-emit-workspace",
        "--no-hashes", "--no-header", "--no-annotate", "--output-file", path, cwd=REPO, env=_env(),
    )  # fmt: skip
    return path


def make_venv(where: Path, constraints: Path, *requirements: str | Path) -> Path:
    """A new virtualenv with ``requirements`` and apache-airflow at the locked version; its python."""
    started = time.monotonic()
    run(*_uv(), "venv", "--quiet", "--python", sys.executable, where, env=_env())
    python = where / "bin" / "python"
    airflow = f"apache-airflow=={locked_version('apache-airflow')}"
    run(
        *_uv(), "pip", "install", "--quiet", "--python", python, "-c", constraints, *requirements, airflow,
        env=_env(),
    )  # fmt: skip
    print(f"\nvenv {where.name}: {time.monotonic() - started:.1f} s")
    return python


IMPORT_ALL = """
import importlib, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(repr(failed))
"""


def import_all(python: Path, modules: list[str], home: Path) -> dict[str, str]:
    """``{module: error}`` for the modules that fail to import in that interpreter."""
    env = _env(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    out = run(python, "-c", IMPORT_ALL, *modules, env=env, timeout=240)
    return ast.literal_eval(out.strip().splitlines()[-1])


# =================================================================================================
# Installed in fresh virtualenvs
# =================================================================================================


def test_provider_wheel_alone(dists: Dists, constraints: Path, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "provider", constraints, dists.provider_wheel)
    modules = modules_in(dists.provider_wheel, "gip_airflow")
    assert "gip_airflow.hooks.gip" in modules and len(modules) >= 15, modules
    # Without extras only the modules of the openlineage extra fail, and only for want of it.
    no_lineage = "ModuleNotFoundError: No module named 'airflow.providers.openlineage'"
    assert import_all(python, [*modules, "pytest", EMULATOR_PACKAGE], tmp_path / "home") == {
        "pytest": "ModuleNotFoundError: No module named 'pytest'",
        EMULATOR_PACKAGE: f"ModuleNotFoundError: No module named '{EMULATOR_PACKAGE}'",
        "gip_airflow.openlineage": no_lineage,
        "gip_airflow.transfers._lineage": no_lineage,
    }
    env = _env(AIRFLOW_HOME=str(tmp_path / "home"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    listed = run(tmp_path / "provider" / "bin" / "airflow", "providers", "list", env=env, timeout=240)
    assert "gip-airflow" in listed, listed


def test_emulator_wheel_with_the_provider(dists: Dists, constraints: Path, tmp_path: Path) -> None:
    venv = tmp_path / "emulator"
    python = make_venv(venv, constraints, dists.emulator_wheel, dists.provider_wheel)
    modules = modules_in(dists.emulator_wheel, EMULATOR_PACKAGE)
    assert f"{EMULATOR_PACKAGE}.demo" in modules and f"{EMULATOR_PACKAGE}.handle" in modules, modules
    # The pytest plugin needs pytest (an extra), and nothing else; the rest, the demo included, none.
    assert import_all(python, modules, tmp_path / "home") == {
        f"{EMULATOR_PACKAGE}.pytest_plugin": "ModuleNotFoundError: No module named 'pytest'"
    }
    shipped = run(python, "-c", f"from {EMULATOR_PACKAGE}.demo import example_dags; print(example_dags())")
    assert Path(shipped.strip()).is_relative_to(venv) and "example_dags" in shipped, shipped
    assert (Path(shipped.strip()) / "gip_daily_trace_evaluation.py").is_file()

    port_file = tmp_path / "port"
    command = [venv / "bin" / "gip-emulator", "--host", "127.0.0.1", "--port", "0", "--port-file", port_file]
    proc = subprocess.Popen(
        [*command, "--log-level", "info"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env()
    )
    try:
        deadline = time.monotonic() + 120
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "gip-emulator wrote no port file in 120 s"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert httpx.get(f"{base}/_emulator/health", timeout=10).status_code == 200
        traces = httpx.get(f"{base}/api/public/traces", auth=("pk-lf-emulator", "sk-lf-emulator"), timeout=10)
        assert traces.status_code == 200 and traces.json()["meta"]["totalItems"] > 0, traces.text
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert "Finished server process" in output, output
    assert proc.returncode in (0, -signal.SIGTERM), output


# =================================================================================================
# What the wheels and sdists hold
# =================================================================================================


def test_provider_wheel_is_lean_and_stands_alone(dists: Dists) -> None:
    with zipfile.ZipFile(dists.provider_wheel) as z:
        infos = z.infolist()
        sources = {i.filename: z.read(i).decode() for i in infos if i.filename.endswith(".py")}
    names = [i.filename for i in infos]
    unpacked = sum(i.file_size for i in infos)
    assert all(n.startswith(("gip_airflow/", "gip_airflow-")) for n in names), names
    assert not [n for n in names if "emulator" in n or "seed" in n or n.endswith(".json")], names
    imported = set()
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert not imported & {"pytest", "_pytest", EMULATOR_PACKAGE}, imported
    sizes: dict[str, int] = {}
    for info in infos:
        part = provider_part(info.filename)
        sizes[part] = sizes.get(part, 0) + info.file_size
    budgets = {"core": CORE_BUDGET_KIB, **{part: kib for part, (_, kib) in PROVIDER_PARTS.items()}}
    assert set(sizes) == set(budgets), f"a part has no file: {set(budgets) - set(sizes)}"
    over = {p: f"{n / 1024:.0f} KiB > {budgets[p]} KiB" for p, n in sizes.items() if n > budgets[p] * 1024}
    assert not over, f"provider wheel parts over budget: {over}"
    assert unpacked < PROVIDER_WHEEL_LIMIT, f"provider wheel is {unpacked:,} B unpacked"


@pytest.mark.parametrize("which", ["provider", "emulator"])
def test_wheel_metadata(dists: Dists, which: str) -> None:
    wheel = dists.provider_wheel if which == "provider" else dists.emulator_wheel
    meta = metadata(wheel)
    with zipfile.ZipFile(wheel) as z:
        licences = {Path(n).name: z.read(n) for n in z.namelist() if ".dist-info/licenses/" in n}
    assert licences.get("LICENSE") == (REPO / "LICENSE").read_bytes()
    assert b"Apache License" in licences["LICENSE"] and "NOTICE" in licences
    assert meta["License-Expression"] == "Apache-2.0"
    urls = {u.split(",")[0].strip(): u.split(",", 1)[1].strip() for u in meta.get_all("Project-URL")}
    assert {"Documentation", "Changelog", "Source"} <= set(urls), urls
    assert len(meta.get_payload()) < 5000, "the long description should be short (not README.md)"
    init = REPO / ("gip_airflow" if which == "provider" else f"emulator/{EMULATOR_PACKAGE}") / "__init__.py"
    assert f'__version__ = "{meta["Version"]}"' in init.read_text()


def test_sdists_hold_sources_tests_and_licence_only(dists: Dists) -> None:
    provider = tarfile.open(dists.provider_sdist).getnames()
    root = provider[0].split("/")[0]
    relative = {n.removeprefix(root + "/") for n in provider}
    assert {"LICENSE", "NOTICE", "pyproject.toml", "gip_airflow/api.py", "tests/conftest.py"} <= relative
    assert not [n for n in relative if n.startswith((".ci", "emulator/", "docs/HELPERS"))], sorted(relative)
    emulator = tarfile.open(dists.emulator_sdist).getnames()
    assert any(n.endswith(f"{EMULATOR_PACKAGE}/example_dags/gip_daily_trace_evaluation.py") for n in emulator)
    assert any(n.endswith("/LICENSE") for n in emulator) and not any("default_seed" in n for n in emulator)
    assert any(n.endswith("/tests/integration/emulator/conftest.py") for n in emulator), emulator
