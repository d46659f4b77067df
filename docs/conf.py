"""Sphinx configuration for the gip-airflow documentation.

Sphinx, because Apache Airflow and its providers document themselves with it (autodoc for the API
reference, ``literalinclude`` of example DAGs between ``[START]``/``[END]`` markers); MyST-Parser so
the pages are Markdown; Furo as the theme because it installs from PyPI with no extra assets, reads
well on small screens and has a light/dark mode. Build strictly: ``make docs``.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# autodoc imports the provider, which imports Airflow: keep Airflow's files out of ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="gip-airflow-docs-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def _write_generated() -> None:
    """Write what pages include from the code itself: the DDL that ``create_table=True`` runs."""
    from gip_airflow.transfers._sql import FLAVOURS, ddl

    out = pathlib.Path(__file__).parent / "_generated"
    out.mkdir(exist_ok=True)
    for name, flavour in FLAVOURS.items():
        statements = [*flavour.setup, *ddl("gip_results", "gip_results_runs", flavour)]
        text = ";\n".join(statements) + ";\n"
        path = out / f"ddl-{name}.sql"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


_write_generated()

project = "gip-airflow"
author = "gip-airflow developers"
copyright = "gip-airflow developers"

try:
    from importlib.metadata import version as _version

    release = _version("gip-airflow")
except Exception:  # pragma: no cover - docs built from a tree without the package installed
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network at build time, so no intersphinx inventories: annotations naming types of other libraries
# (Airflow, pydantic, httpx, the standard library) and private helpers cannot be resolved and are not
# reported. Every other reference (to the provider's documented modules, classes, methods and
# attributes, and between pages) must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:(class|obj)", r"(?!gip_airflow\.).*"),
    (r"py:(class|obj|data|mod)", r"gip_airflow\.(.*\.)?_\w+.*"),
    (r"py:class", r"gip_airflow\.(api|hooks\.gip)\.[MT]"),  # TypeVars
    (r"py:attr", r"GipExperimentRunLink\.xcom_key"),  # inherited from Airflow's BaseOperatorLink
]
# "type" (the builtin, in annotations) also names fields of several models.
suppress_warnings = ["ref.python"]

html_theme = "furo"
html_title = f"gip-airflow {release}"
html_static_path: list[str] = []
