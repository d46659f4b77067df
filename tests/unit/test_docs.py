"""The documentation stays short, current and tied to code that runs.

The strict Sphinx build itself (warnings and broken references fail) is ``make docs``, which CI runs;
these checks read the sources only: no socket, no subprocess.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"

#: Words that belong to a measurement diary, not to user documentation (performance.md excepted).
DIARY = re.compile(
    r"\bVMs?\b|\b\d+-core\b|\bvCPUs?\b|\bload average\b|\bmeasured\b|\bbenchmark run\b|\bCI run\b"
    r"|\bon this machine\b|\bslow(?:er)? machine\b",
    re.IGNORECASE,
)
#: Public classes and functions that must have a docs section with an example included from tested code.
MUST_HAVE_EXAMPLE = [
    "GipCreateLangfuseCredentialOperator",
    "GipCreateExperimentOperator",
    "GipCreateEvaluatorOperator",
    "GipStartExperimentRunOperator",
    "GipExperimentRunSensor",
    "GipExperimentRunTrigger",
    "GipHook",
    "GipAsyncHook",
    "GipToSqlOperator",
    "GipEvaluationGateOperator",
]
#: Written by docs/conf.py from the code at build time (the DDL of the transfer).
GENERATED = "docs/_generated/"
#: Where included examples may come from, and the test that executes each place.
EXECUTED = {
    "dags": REPO / "tests" / "system" / "dags" / "test_example_dags.py",
    # a test module is executed by pytest itself
    "tests": REPO / "tests",
    "docs/snippets": REPO / "tests" / "integration" / "operators" / "test_docs_snippets.py",
}
LITERALINCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)\n((?::[\w-]+:.*\n)*)```")


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def includes() -> list[tuple[Path, Path, dict[str, str]]]:
    """Every ``{literalinclude}`` of the docs pages but generated ones: (page, included file, options)."""
    found = []
    for page in pages():
        for target, options in LITERALINCLUDE.findall(page.read_text()):
            if target.startswith(GENERATED.removeprefix("docs/")):
                continue
            opts = {k: v.strip().strip('"') for k, v in re.findall(r":([\w-]+):\s*(.*)", options)}
            found.append((page, (page.parent / target).resolve(), opts))
    return found


def included_text(path: Path, opts: dict[str, str]) -> str:
    text = path.read_text()
    if "start-after" in opts:
        text = text.split(opts["start-after"], 1)[1]
    if "end-before" in opts:
        text = text.split(opts["end-before"], 1)[0]
    return text


def test_readme_is_short():
    size = len(README.read_text())
    assert size < 10_000, f"README.md has {size} characters; move details to a docs page"


@pytest.mark.parametrize(
    "path",
    [README, REPO / "CONTRIBUTING.md", *(p for p in pages() if p.name != "performance.md")],
    ids=lambda p: p.name,
)
def test_no_measurement_diary(path):
    """Figures and their history live in commit messages; only docs/performance.md has one table."""
    if not path.exists():
        pytest.skip(f"{path.name} does not exist")
    hits = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if DIARY.search(line)
    ]
    assert not hits, f"{path.name} reads like a measurement diary:\n" + "\n".join(hits)


def test_every_page_has_a_title():
    for page in pages():
        first = page.read_text().splitlines()[0]
        assert first.startswith("# "), f"{page.name} must start with a '# Title' line"


def test_every_page_is_in_a_toctree():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w-]+)$", index, re.MULTILINE))
    missing = {p.stem for p in pages()} - listed - {"index"}
    assert not missing, f"pages not in docs/index.md's toctree: {sorted(missing)}"


def test_includes_come_from_executed_files_and_markers_exist():
    assert includes(), "no {literalinclude} found in docs/"
    for page, path, opts in includes():
        rel = path.relative_to(REPO).as_posix()
        place = next((p for p in EXECUTED if rel.startswith(p + "/")), None)
        assert place, (
            f"{page.name} includes {rel}, which no test executes (use dags/, docs/snippets/ or a test module)"
        )
        if place == "tests":
            assert path.name.startswith("test_"), f"{page.name} includes {rel}, which is not a test module"
        if place == "docs/snippets":
            assert path.name in EXECUTED[place].read_text(), f"{rel} is not run by {EXECUTED[place].name}"
        text = path.read_text()
        assert ("start-after" in opts) == ("end-before" in opts), f"{page.name}: {rel} needs both markers"
        for key in ("start-after", "end-before"):
            if key in opts:
                assert text.count(opts[key]) == 1, f"{page.name}: marker {opts[key]!r} not once in {rel}"


@pytest.mark.parametrize("name", MUST_HAVE_EXAMPLE)
def test_public_api_has_an_included_example(name):
    shown = [
        f"{page.name} <- {path.name}"
        for page, path, opts in includes()
        if re.search(rf"\b{name}\b", included_text(path, opts))
    ]
    assert shown, f"no docs page includes a tested example that uses {name}"


def test_readme_minimal_dag_is_the_tested_snippet():
    snippet = included_text(
        DOCS / "snippets" / "minimal_dag.py",
        {"start-after": "# [START readme_minimal_dag]\n", "end-before": "# [END readme_minimal_dag]"},
    )
    assert f"```python\n{snippet}```" in README.read_text(), (
        "README.md's minimal DAG differs from docs/snippets/minimal_dag.py; copy the snippet"
    )


def test_readme_links_resolve():
    for target in re.findall(r"\]\(((?!https?:|#)[^)]+)\)", README.read_text()):
        assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


PARAMETER_TABLES = [
    ("operators.md", "gip_airflow.operators.gip", "GipCreateLangfuseCredentialOperator"),
    ("operators.md", "gip_airflow.operators.gip", "GipCreateExperimentOperator"),
    ("operators.md", "gip_airflow.operators.gip", "GipCreateEvaluatorOperator"),
    ("operators.md", "gip_airflow.operators.gip", "GipStartExperimentRunOperator"),
    ("sensor-trigger.md", "gip_airflow.sensors.gip", "GipExperimentRunSensor"),
    ("sensor-trigger.md", "gip_airflow.triggers.gip", "GipExperimentRunTrigger"),
    ("transfer.md", "gip_airflow.transfers.gip_to_sql", "GipToSqlOperator"),
    ("hook.md", "gip_airflow.hooks.gip", "GipHook"),
    ("gate.md", "gip_airflow.operators.gate", "GipEvaluationGateOperator"),
]


def section(page: str, name: str) -> str:
    """The text of a page from its ``## `name` `` heading to the next heading of that level (or the end)."""
    text = (DOCS / page).read_text()
    heading = f"## `{name}`\n"
    if heading not in text:
        return text  # a page about one class (the transfer)
    rest = text.split(heading, 1)[1]
    return re.split(r"^## ", rest, maxsplit=1, flags=re.MULTILINE)[0]


@pytest.mark.parametrize(("page", "module", "name"), PARAMETER_TABLES, ids=[t[2] for t in PARAMETER_TABLES])
def test_every_parameter_is_documented(page, module, name):
    """Each constructor parameter appears (as `code`) in the class's section: the tables cannot go stale."""
    import importlib
    import inspect

    cls = getattr(importlib.import_module(module), name)
    params = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    text = section(page, name)
    missing = [p for p in params if f"`{p}`" not in text]
    assert not missing, f"docs/{page}, section {name}: parameters not documented: {missing}"


#: A test file path in prose or code, optionally with ``::test_name`` (and ``::Class::test_name``).
TEST_PATH = re.compile(r"(?<![\w/.-])(tests/[\w/.-]+\.py)((?:::\w+)*)")


def mentioned_test_paths() -> list[tuple[str, str, str]]:
    """Every ``tests/...py`` path (with its ``::names``) in README, CONTRIBUTING and the docs pages."""
    found = []
    for path in [README, REPO / "CONTRIBUTING.md", *pages()]:
        for path_text, names in TEST_PATH.findall(path.read_text()):
            found.append((path.name, path_text, names))
    return found


def test_mentioned_test_paths_exist():
    """A page that cites a test names a file (and test) that exists: the references cannot go stale."""
    assert mentioned_test_paths(), "no tests/...py path found in the docs; is the pattern right?"
    missing = []
    for page, path_text, names in mentioned_test_paths():
        target = REPO / path_text
        if not target.is_file():
            missing.append(f"{page}: {path_text} does not exist")
            continue
        source = target.read_text()
        for name in filter(None, names.split("::")):
            if not re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b", source, re.MULTILINE):
                missing.append(f"{page}: {path_text} has no {name}")
    assert not missing, "stale test references:\n" + "\n".join(sorted(set(missing)))


#: A test folder (``tests/unit``) or a test module run with ``python -m`` or imported (``tests.e2e.topology``).
TEST_FOLDER = re.compile(r"(?<![\w/.-])tests/[\w/-]*\w(?![\w/.-]*\.py)")
TEST_MODULE = re.compile(r"(?:-m|from|import)\s+(tests(?:\.\w+)+)")


def test_mentioned_test_folders_and_modules_exist():
    missing = []
    for path in [README, REPO / "CONTRIBUTING.md", *pages()]:
        text = path.read_text()
        for folder in TEST_FOLDER.findall(text):
            if not (REPO / folder).exists():
                missing.append(f"{path.name}: {folder} does not exist")
        for module in TEST_MODULE.findall(text):
            if not (REPO / (module.replace(".", "/") + ".py")).is_file():
                missing.append(f"{path.name}: module {module} does not exist")
    assert not missing, "stale test references:\n" + "\n".join(sorted(set(missing)))
