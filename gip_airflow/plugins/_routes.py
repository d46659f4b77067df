"""Where the Evaluations view lives: its URL prefix, its UI routes, and the UI's base path."""

from __future__ import annotations

from urllib.parse import urlparse

URL_PREFIX = "/gip"
NAV_ROUTE = "gip-evaluations"
DAG_TAB_ROUTE = "gip-evaluations-dag"

__all__ = ["DAG_TAB_ROUTE", "NAV_ROUTE", "URL_PREFIX", "ui_base"]


def ui_base() -> str:
    """Path prefix of the Airflow UI (``[api] base_url``'s path; empty at the root)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or ""
    return urlparse(base).path.rstrip("/")
