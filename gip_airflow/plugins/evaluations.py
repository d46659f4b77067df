"""Airflow UI plugin: an "Evaluations" page (nav entry and a tab on every DAG) with GIP run trends.

Airflow loads plugins in every task process too (for macros), so this module stays light: the
FastAPI app (:mod:`gip_airflow.plugins._app`) is imported on the API server's first request to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from gip_airflow.plugins._routes import DAG_TAB_ROUTE, NAV_ROUTE, URL_PREFIX, ui_base

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class EvaluationsApp:
    """ASGI app mounted at ``/gip``: builds the FastAPI app on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from gip_airflow.plugins._app import app

            self._app = app
        await self._app(scope, receive, send)


def _external_views() -> list[dict[str, Any]]:
    base = ui_base()
    return [
        {
            "name": "Evaluations",
            "href": f"{base}{URL_PREFIX}/evaluations/",
            "destination": "nav",
            "category": "browse",
            "url_route": NAV_ROUTE,
        },
        {
            "name": "Evaluations",
            "href": f"{base}{URL_PREFIX}/evaluations/dags/{{DAG_ID}}",
            "destination": "dag",
            "url_route": DAG_TAB_ROUTE,
        },
    ]


class GipEvaluationsPlugin(AirflowPlugin):
    """Registered through the provider info (``plugins``); nothing to install besides the provider."""

    name = "gip_evaluations"
    fastapi_apps = [{"app": EvaluationsApp(), "url_prefix": URL_PREFIX, "name": "GIP evaluations"}]
    external_views = _external_views()
