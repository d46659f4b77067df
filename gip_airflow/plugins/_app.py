"""The Evaluations view's FastAPI app: routes, settings, and access through Airflow's auth manager.

Renders server-side SVG charts from the run summary table(s) the provider's loader writes. Every
request is authenticated with Airflow's own auth manager (the JWT cookie of the UI session or a
bearer token), and a DAG's page requires read access to that DAG. Settings: ``[gip]
warehouse_conn_id``, ``results_table``, ``console_run_url``, ``gip_conn_id``, ``max_runs``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from gip_airflow.plugins import _page
from gip_airflow.plugins._routes import DAG_TAB_ROUTE, URL_PREFIX, ui_base

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from gip_airflow.plugins._warehouse import Warehouse

log = logging.getLogger(__name__)

DEFAULTS = {
    "warehouse_conn_id": "gip_warehouse",
    "results_table": "gip_results",
    "console_run_url": "",
    "gip_conn_id": "gip_default",
    "max_runs": "5000",
}


class ViewConfigError(Exception):
    """The view's settings point at something that is not there (shown to the user, no secrets)."""


def setting(name: str) -> str:
    from airflow.configuration import conf

    return str(conf.get("gip", name, fallback=DEFAULTS[name]) or DEFAULTS[name]).strip()


def links() -> _page.Links:
    base = ui_base()
    return _page.Links(
        ui_base=base,
        console_run_url=console_run_url(),
        dag_tab_route=DAG_TAB_ROUTE,
        page_base=f"{base}{URL_PREFIX}/evaluations",
    )


def console_run_url() -> str:
    """The GIP console run URL template: ``[gip] console_run_url``, else from the GIP connection."""
    configured = setting("console_run_url")
    if configured:
        return configured
    try:
        from airflow.models.connection import Connection

        extra = Connection.get_connection_from_secrets(setting("gip_conn_id")).extra_dejson
    except Exception:
        return ""
    console, workspace = extra.get("console_url"), extra.get("workspace_id")
    if not console or not workspace:
        return ""
    escaped = str(workspace).replace("{", "{{").replace("}", "}}")
    return (
        f"{str(console).rstrip('/')}/workspaces/{escaped}/evals/experiments/{{experiment_id}}/runs/{{run_id}}"
    )


def warehouse_hook(conn_id: str) -> DbApiHook:
    """The warehouse connection's common.sql hook (connections from the metadata DB or secrets)."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    try:
        from airflow.models.connection import Connection

        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:
        raise ViewConfigError(
            f"The warehouse connection {conn_id!r} does not exist: create it, or set [gip] warehouse_conn_id "
            "to the connection GipToSqlOperator loads into"
        ) from exc
    hook = conn.get_hook()
    if not isinstance(hook, DbApiHook):
        raise ViewConfigError(
            f"Connection {conn_id!r} (type {conn.conn_type!r}) is not a SQL database: "
            "[gip] warehouse_conn_id must name a common.sql connection (postgres, sqlite, ...)"
        )
    return hook


def open_warehouse() -> Warehouse:
    from gip_airflow.plugins._warehouse import Warehouse

    tables = [t.strip() for t in setting("results_table").split(",") if t.strip()]
    try:
        return Warehouse(warehouse_hook(setting("warehouse_conn_id")), tables)
    except ValueError as exc:
        raise ViewConfigError(str(exc)) from exc


# -------------------------------------------------------------------------------------------------
# Access: Airflow's own dependencies, imported on first request
# -------------------------------------------------------------------------------------------------


async def current_user(request: Request) -> BaseUser:
    """The caller as Airflow's API resolves it (bearer token, else the UI's JWT cookie); else 401/403."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    credentials = await HTTPBearer(auto_error=False)(request)
    return await get_user(request, None, credentials)


async def dag_reader(request: Request, dag_id: str, user: Annotated[Any, Depends(current_user)]) -> BaseUser:
    """403 unless the auth manager lets ``user`` read ``dag_id``."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    check = requires_access_dag("GET", param_dag_id=dag_id)
    await run_in_threadpool(check, request, user)
    return user


def readable_dag_ids(user: BaseUser) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


# -------------------------------------------------------------------------------------------------
# The app
# -------------------------------------------------------------------------------------------------

app = FastAPI(title="GIP evaluations", docs_url=None, redoc_url=None, openapi_url=None)
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=NO_STORE)


@app.get("/evaluations", include_in_schema=False)
def _slash() -> RedirectResponse:
    return RedirectResponse(f"{ui_base()}{URL_PREFIX}/evaluations/")


@app.get("/evaluations/", response_class=HTMLResponse)
def overview(user: Annotated[Any, Depends(current_user)]) -> HTMLResponse:
    """DAGs the caller may read that have GIP runs in the warehouse."""
    try:
        with open_warehouse() as warehouse:
            dags = warehouse.dags(readable_dag_ids(user))
            tables = warehouse.summary_tables()
    except ViewConfigError as exc:
        return _html(_page.message_page("Evaluations: not configured", str(exc)), 503)
    return _html(_page.overview_page(dags, links(), tables))


@app.get("/evaluations/dags/{dag_id}", response_class=HTMLResponse)
def dag_evaluations(
    dag_id: str,
    user: Annotated[Any, Depends(dag_reader)],
    task: Annotated[str | None, Query(description="only this task")] = None,
    evaluator: Annotated[str | None, Query(description="only this evaluator")] = None,
    limit: Annotated[int, Query(ge=1, description="latest runs shown")] = 500,
) -> HTMLResponse:
    """Trend charts and the run table of one DAG (requires read access to it)."""
    limit = min(limit, int(setting("max_runs")))
    try:
        with open_warehouse() as warehouse:
            page = warehouse.dag_page(
                dag_id, task_id=task or None, evaluator_id=evaluator or None, limit=limit
            )
    except ViewConfigError as exc:
        return _html(_page.message_page("Evaluations: not configured", str(exc)), 503)
    return _html(_page.dag_page(page, links(), task_id=task, evaluator_id=evaluator, limit=limit))
