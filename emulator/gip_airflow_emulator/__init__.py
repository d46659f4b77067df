"""A local emulator of the GIP evaluation API and of the Langfuse API subset GIP reads.

The real GIP is not reachable from development machines; this emulator is how users try the
provider and how the project's tests run. Start it with ``gip-emulator`` (or
``python -m gip_airflow_emulator``), from Python with :func:`gip_airflow_emulator.handle.start_emulator`,
or build it in-process with :func:`gip_airflow_emulator.app.create_app`. The pytest fixtures live in
:mod:`gip_airflow_emulator.pytest_plugin` (registered through a ``pytest11`` entry point).

This package's ``__init__`` imports nothing heavy: the pytest plugin is imported by every test
session and must not need FastAPI.
"""

from __future__ import annotations

from gip_airflow_emulator.defaults import (
    DEFAULT_API_KEY,
    DEFAULT_COGNITO_CLIENT_ID,
    DEFAULT_LANGFUSE_PUBLIC_KEY,
    DEFAULT_LANGFUSE_SECRET_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    DEFAULT_WORKSPACE_ID,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_COGNITO_CLIENT_ID",
    "DEFAULT_LANGFUSE_PUBLIC_KEY",
    "DEFAULT_LANGFUSE_SECRET_KEY",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "DEFAULT_WORKSPACE_ID",
    "__version__",
]
