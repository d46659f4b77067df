"""The two distributions of this repository, checked from their sources (no build, no network).

* every module a distribution imports is a declared dependency of that distribution (or of one of
  its extras), not something that happens to be installed because Airflow pulls it in;
* the provider imports neither the emulator nor pytest; the emulator takes only the API contract
  (``gip_airflow.api``) from the provider;
* the emulator's modules import each other without a cycle;
* both versions are defined once and agree.

Each check is a function returning a list of problems; every one is also run on a broken input.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PROVIDER = REPO / "gip_airflow"
EMULATOR = REPO / "emulator" / "gip_airflow_emulator"
#: Distributions that ship parts of the ``airflow`` namespace and come with ``apache-airflow``.
AIRFLOW_CORE = {"apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk"}


@dataclass(frozen=True)
class Import:
    """One ``import`` statement of a module: the module it names and where it is."""

    module: str
    path: Path
    line: int


def imports_of(package: Path) -> list[Import]:
    """Absolute imports anywhere in the package's modules (module level, functions, TYPE_CHECKING)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(alias.name, path, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append(Import(node.module, path, node.lineno))
                # ``from pkg import module`` names a module too.
                found += [Import(f"{node.module}.{alias.name}", path, node.lineno) for alias in node.names]
    return found


def declared(pyproject: Path) -> set[str]:
    """Canonical names of the distribution itself, its dependencies and its extras' dependencies."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {canonicalize_name(project["name"])} | {
        canonicalize_name(Requirement(r).name) for r in requirements
    }


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide ``module`` (empty for the standard library)."""
    top = module.split(".", maxsplit=1)[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return set()
    if top == "airflow":
        parts = module.split(".")
        if len(parts) > 2 and parts[1] == "providers":
            # airflow.providers.common.sql -> apache-airflow-providers-common-sql if installed, else -common
            for depth in (4, 3):
                name = "apache-airflow-providers-" + "-".join(parts[2:depth]).replace("_", "-")
                if depth <= len(parts) and _installed(name):
                    return {name}
            return {f"<unknown: {module}>"}
        return set(AIRFLOW_CORE)
    if top == "gip_airflow":
        return {"gip-airflow"}
    if top == "gip_airflow_emulator":
        return {"gip-airflow-emulator"}
    names = _packages_distributions().get(top)
    return {canonicalize_name(n) for n in names} if names else {f"<unknown: {top}>"}


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def check_declared(package: Path, pyproject: Path) -> list[str]:
    """Every import resolves to a declared distribution (``airflow.*`` counts as ``apache-airflow``)."""
    ok = declared(pyproject)
    if "apache-airflow" in ok:
        ok |= AIRFLOW_CORE
    problems = []
    for imp in imports_of(package):
        dists = distributions_of(imp.module)
        if imp.module.startswith("airflow.providers.") and "." not in imp.module.removeprefix(
            "airflow.providers."
        ):
            continue  # ``from airflow.providers import x`` names the namespace; x is checked on its own
        if dists and not dists & ok:
            problem = f"{imp.path.name}: imports {imp.module.split('.')[0]} ({', '.join(sorted(dists))})"
            if problem not in problems:
                problems.append(problem)
    return [f"{p}, not declared in {pyproject}" for p in problems]


#: The demo drives the provider's example DAGs and prints the gate's verdicts in the gate's own words
#: (the same exception as the import-linter contract in pyproject.toml).
EMULATOR_MAY_IMPORT = {("demo.py", "gip_airflow.operators.gate")}


def check_boundaries(provider: list[Import], emulator: list[Import]) -> list[str]:
    """The provider imports no emulator and no pytest; the emulator uses only gip_airflow.api."""
    problems = []
    for imp in provider:
        if imp.module.split(".")[0] in {"gip_airflow_emulator", "pytest", "_pytest"}:
            problems.append(f"provider {imp.path.name}:{imp.line} imports {imp.module}")
    for imp in emulator:
        if imp.module.split(".")[0] == "gip_airflow" and not imp.module.startswith("gip_airflow.api"):
            allowed = any(
                imp.path.name == name and (imp.module + ".").startswith(module + ".")
                for name, module in EMULATOR_MAY_IMPORT
            )
            if imp.module == "gip_airflow" or allowed:
                continue  # ``from gip_airflow import api`` is followed by its own ``gip_airflow.api`` entry
            problems.append(f"emulator {imp.path.name}:{imp.line} imports {imp.module}; only gip_airflow.api")
    return problems


def import_graph(package: Path, name: str) -> dict[str, set[str]]:
    """Module -> modules of the same package it imports (anywhere in the module, not only at the top)."""
    modules = {f"{name}.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for imp in imports_of(package):
        source = f"{name}.{imp.path.stem}" if imp.path.stem != "__init__" else name
        if imp.module in modules and imp.module != source:
            graph.setdefault(source, set()).add(imp.module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path (first module repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def version_in(init: Path) -> str:
    """``__version__`` of a package's ``__init__.py``, read without importing it."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"{init}: no __version__")


def check_versions(root: dict, emulator: dict) -> list[str]:
    """Versions come from each package's ``__version__`` (hatch), agree, and the pin admits the provider."""
    problems = []
    for where, doc in (("pyproject.toml", root), ("emulator/pyproject.toml", emulator)):
        if "version" in doc["project"] or "version" not in doc["project"].get("dynamic", []):
            problems.append(f"{where}: the version should be dynamic (read from __version__)")
    provider_version = version_in(PROVIDER / "__init__.py")
    emulator_version = version_in(EMULATOR / "__init__.py")
    if provider_version != emulator_version:
        problems.append(f"provider {provider_version} and emulator {emulator_version} are released together")
    pins = [Requirement(r) for r in emulator["project"]["dependencies"] if r.startswith("gip-airflow")]
    if not pins or not pins[0].specifier.contains(Version(provider_version)):
        problems.append(f"the emulator's requirement {pins} does not admit gip-airflow {provider_version}")
    return problems


# =================================================================================================
# Tests
# =================================================================================================


@pytest.mark.parametrize(
    ("package", "pyproject"),
    [(PROVIDER, REPO / "pyproject.toml"), (EMULATOR, REPO / "emulator" / "pyproject.toml")],
    ids=["gip-airflow", "gip-airflow-emulator"],
)
def test_every_import_is_a_declared_dependency(package: Path, pyproject: Path) -> None:
    assert check_declared(package, pyproject) == []


def test_declared_check_fails_for_an_undeclared_import(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (REPO / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('"tenacity', '"not-tenacity'))
    assert any("tenacity" in p for p in check_declared(PROVIDER, pyproject))
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text("def f():\n    import yaml\n")
    assert any("yaml" in p for p in check_declared(package, REPO / "pyproject.toml"))


def test_provider_and_emulator_keep_their_boundary() -> None:
    assert check_boundaries(imports_of(PROVIDER), imports_of(EMULATOR)) == []


def test_boundary_check_fails_when_crossed(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import pytest\nfrom gip_airflow_emulator.handle import start_emulator\n")
    (tmp_path / "b.py").write_text("from gip_airflow.hooks.gip import GipHook\n")
    problems = check_boundaries(imports_of(tmp_path), imports_of(tmp_path))
    assert len([p for p in problems if p.startswith("provider")]) == 3  # pytest, the module, and its name
    assert any("gip_airflow.hooks.gip" in p for p in problems)


def test_emulator_modules_import_without_a_cycle() -> None:
    assert find_cycle(import_graph(EMULATOR, "gip_airflow_emulator")) == []


def test_cycle_check_finds_a_function_level_cycle(tmp_path: Path) -> None:
    (tmp_path / "state.py").write_text("def load():\n    from pkg import gip\n")
    (tmp_path / "gip.py").write_text("from pkg.state import Emulator\n")
    (tmp_path / "app.py").write_text("from pkg import gip\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.gip", "pkg.state", "pkg.gip"]


def test_versions_are_defined_once_and_agree() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    emulator = tomllib.loads((REPO / "emulator" / "pyproject.toml").read_text())
    assert check_versions(root, emulator) == []
    broken = {**emulator, "project": {**emulator["project"], "version": "0.0.1"}}
    assert check_versions(root, broken) != []


def test_provider_info_reports_the_package_version() -> None:
    import gip_airflow

    assert gip_airflow.get_provider_info()["versions"] == [version_in(PROVIDER / "__init__.py")]
