"""The Evaluations view inside Airflow's real API app: SimpleAuthManager login, access, the rendered page.

The whole Airflow API app (``create_app``: auth manager, plugins) runs in-process behind a TestClient;
the warehouse is SQLite filled through the provider's loader.
"""

from __future__ import annotations

import json
import re
import sqlite3
from html.parser import HTMLParser

import pytest

from tests.integration.view_data import (
    COMPARISON_DAG,
    DAILY_DAG,
    OTHER_DAG,
    TABLE,
    fill,
    sqlite_conn_json,
    sqlite_hook,
)

CONSOLE = "https://console.test/workspaces/ws-1/evals/experiments/{experiment_id}/runs/{run_id}"
USERS = "admin:admin,viewer:viewer,nobody:"


def page_url(dag_id: str, query: str = "") -> str:
    return f"/gip/evaluations/dags/{dag_id}{query}"


class Dom(HTMLParser):
    """Just enough DOM for the assertions: elements with their attributes, in order."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        out = []
        for t, a in self.elements:
            if t != tag:
                continue
            if all(
                (a.get(k.rstrip("_")) or "").split().count(v) if k == "class_" else a.get(k) == v
                for k, v in attrs.items()
            ):
                out.append(a)
        return out


@pytest.fixture(scope="module")
def view(airflow_db, tmp_path_factory):
    """(TestClient of Airflow's API app, the filled warehouse, passwords of the SimpleAuthManager users)."""
    from fastapi.testclient import TestClient

    tmp = tmp_path_factory.mktemp("view")
    warehouse = str(tmp / "warehouse.sqlite")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_GIP_WAREHOUSE", sqlite_conn_json(warehouse))
    mp.setenv("AIRFLOW__GIP__WAREHOUSE_CONN_ID", "gip_warehouse")
    mp.setenv("AIRFLOW__GIP__RESULTS_TABLE", TABLE)
    mp.setenv("AIRFLOW__GIP__CONSOLE_RUN_URL", CONSOLE)
    mp.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", USERS)
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp / "passwords.json"))
    filled = fill(sqlite_hook("gip_warehouse"), warehouse)
    register_dags([DAILY_DAG, COMPARISON_DAG])

    from airflow.api_fastapi.app import create_app, purge_cached_app

    purge_cached_app()
    app = create_app(apps="core")
    passwords = json.loads((tmp / "passwords.json").read_text())
    with TestClient(app) as client:
        yield client, filled, passwords
    mp.undo()


def register_dags(dag_ids: list[str]) -> None:
    """Put DAGs with these ids into the metadata DB (what the auth manager lists readable DAGs from)."""
    import pendulum
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent", collect_dags=False)
    for dag_id in dag_ids:
        with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
            EmptyOperator(task_id="load_results")
        bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def token(client, passwords, user: str) -> str:
    response = client.post("/auth/token", json={"username": user, "password": passwords[user]})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def bearer(client, passwords, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, passwords, user)}"}


def summary_rows(filled, dag_id: str) -> int:
    with sqlite3.connect(filled.path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {TABLE}_runs WHERE dag_id = ?", (dag_id,)).fetchone()[0]


# -- access ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/gip/evaluations/", page_url(DAILY_DAG), page_url(DAILY_DAG, "?limit=5")])
def test_anonymous_gets_401_and_no_data(view, path):
    client, filled, _ = view
    response = client.get(path)
    assert response.status_code == 401
    assert not any(run_id in response.text for run_id in filled.runs[DAILY_DAG])
    assert DAILY_DAG not in response.text


def test_forged_or_garbage_token_gets_403_and_no_data(view):
    client, filled, _ = view
    for headers, cookies in (({"Authorization": "Bearer not-a-jwt"}, {}), ({}, {"_token": "not-a-jwt"})):
        client.cookies.clear()
        response = client.get(page_url(DAILY_DAG), headers=headers, cookies=cookies)
        assert response.status_code == 403, response.text
        assert filled.runs[DAILY_DAG][0] not in response.text
    client.cookies.clear()


@pytest.mark.parametrize("user", ["admin", "viewer"])
def test_users_who_may_read_the_dag_see_it(view, user):
    client, filled, passwords = view
    response = client.get(page_url(DAILY_DAG), headers=bearer(client, passwords, user))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    points = Dom(response.text).all("circle", class_="point")
    assert len({p["data-run-id"] for p in points}) == summary_rows(filled, DAILY_DAG) == 26


def test_the_ui_session_cookie_is_enough(view):
    """In the UI the page loads in an iframe with the JWT cookie the UI's login set, no header."""
    client, _, passwords = view
    client.cookies.clear()
    response = client.get(page_url(COMPARISON_DAG), cookies={"_token": token(client, passwords, "viewer")})
    client.cookies.clear()
    assert response.status_code == 200, response.text


def test_a_user_without_a_role_may_read_no_dag(view):
    """SimpleAuthManager: a configured user with no role is authenticated but may read nothing."""
    client, filled, passwords = view
    headers = bearer(client, passwords, "nobody")
    response = client.get(page_url(DAILY_DAG), headers=headers)
    assert response.status_code == 403
    assert filled.runs[DAILY_DAG][0] not in response.text
    overview = client.get("/gip/evaluations/", headers=headers)
    assert overview.status_code == 200
    assert DAILY_DAG not in overview.text and COMPARISON_DAG not in overview.text


def test_overview_lists_readable_dags_with_runs(view):
    client, _, passwords = view
    response = client.get("/gip/evaluations/", headers=bearer(client, passwords, "viewer"))
    assert response.status_code == 200
    links = [a["href"] for a in Dom(response.text).all("a")]
    assert f"/dags/{DAILY_DAG}/plugin/gip-evaluations-dag" in links
    assert f"/gip/evaluations/dags/{COMPARISON_DAG}" in links
    # runs of a DAG the metadata DB does not know: the auth manager cannot vouch for it
    assert OTHER_DAG not in response.text


# -- the page ------------------------------------------------------------------------------------


def test_page_charts_table_links_gaps_and_gates(view):
    client, filled, passwords = view
    html = client.get(page_url(DAILY_DAG), headers=bearer(client, passwords, "admin")).text
    dom = Dom(html)
    charts = dom.all("svg", class_="chart")
    assert [c["data-metric"] for c in charts] == ["pass-rate", "mean-score", "tokens"]
    # every chart has one point per run, each in a link to its GIP console run
    run_ids = filled.runs[DAILY_DAG]
    points = dom.all("circle", class_="point")
    assert len(points) == 3 * len(run_ids)
    console_links = {a["href"] for a in dom.all("a") if a.get("data-nav") == "gip"}
    for run_id in run_ids:
        assert CONSOLE.format(experiment_id=f"exp-{DAILY_DAG[:12]}", run_id=run_id) in console_links
    # every row links to the GIP run and the Airflow task instance
    rows = dom.all("tr")
    assert len([r for r in rows if r.get("data-run-id")]) == len(run_ids)
    ti_links = {a["href"] for a in dom.all("a") if a.get("data-nav") == "airflow"}
    assert (
        f"/dags/{DAILY_DAG}/runs/scheduled__2025-03-05T14%3A00%3A00%2B00%3A00/tasks/load_results" in ti_links
    )
    # the missing window is a shaded gap in each chart and a row in the table, never a zero
    assert len(dom.all("rect", class_="gap")) == 3
    assert len(dom.all("tr", class_="gap-row")) == 1
    for path in dom.all("path", class_="line"):
        assert path["d"].count("M") == 2  # each series' line breaks once, at the gap
    # gate verdicts from <table>_gates: one failing, one passing run of the helpfulness series
    assert len(dom.all("circle", class_="gate-fail")) == 3 and len(dom.all("circle", class_="gate-pass")) == 3
    assert re.search(r'<td class="fail">FAIL</td>', html)


def test_mapped_tasks_link_their_map_index(view):
    client, filled, passwords = view
    dom = Dom(client.get(page_url(COMPARISON_DAG), headers=bearer(client, passwords, "admin")).text)
    ti_links = {a["href"] for a in dom.all("a") if a.get("data-nav") == "airflow"}
    assert any(link.endswith("/tasks/load/mapped/2") for link in ti_links)
    assert len(dom.all("circle", class_="point")) == 3 * summary_rows(filled, COMPARISON_DAG)
    assert not dom.all("circle", class_="gate-fail")  # no gate rows for this DAG


def test_filters_and_limit(view):
    client, filled, passwords = view
    headers = bearer(client, passwords, "admin")
    dom = Dom(client.get(page_url(DAILY_DAG, "?evaluator=ev-safety"), headers=headers).text)
    assert {p["data-run-id"] for p in dom.all("circle", class_="point")} == {
        r for r in filled.runs[DAILY_DAG] if r.endswith("ev-safety")
    }
    dom = Dom(client.get(page_url(DAILY_DAG, "?limit=4"), headers=headers).text)
    assert {p["data-run-id"] for p in dom.all("circle", class_="point")} == set(
        sorted(filled.runs[DAILY_DAG])[-4:]
    )
    dom = Dom(client.get(page_url(DAILY_DAG, "?task=no_such_task"), headers=headers).text)
    assert not dom.all("circle", class_="point")


def test_a_dag_without_runs_says_so(view):
    client, _, passwords = view
    response = client.get(page_url("gip_unknown_dag"), headers=bearer(client, passwords, "admin"))
    assert response.status_code == 200 and "No GIP runs for this DAG" in response.text


def test_missing_warehouse_connection_is_a_clear_503(view, monkeypatch):
    client, _, passwords = view
    monkeypatch.setenv("AIRFLOW__GIP__WAREHOUSE_CONN_ID", "no_such_warehouse")
    response = client.get(page_url(DAILY_DAG), headers=bearer(client, passwords, "admin"))
    assert response.status_code == 503
    assert "no_such_warehouse" in response.text and "[gip] warehouse_conn_id" in response.text


def test_console_links_from_the_gip_connection_and_no_secret_in_the_page(view, monkeypatch):
    """Without [gip] console_run_url the link comes from the GIP connection's extras; its key never shows."""
    client, filled, passwords = view
    monkeypatch.setenv("AIRFLOW__GIP__CONSOLE_RUN_URL", "")
    conn = {
        "conn_type": "gip",
        "host": "https://console-api.test",
        "password": "sk-super-secret-api-key",
        "extra": {"workspace_id": "ws-42", "console_url": "https://console.test/"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_GIP_DEFAULT", json.dumps(conn))
    html = client.get(page_url(DAILY_DAG), headers=bearer(client, passwords, "admin")).text
    run_id = filled.runs[DAILY_DAG][0]
    assert (
        f"https://console.test/workspaces/ws-42/evals/experiments/exp-{DAILY_DAG[:12]}/runs/{run_id}" in html
    )
    assert "sk-super-secret-api-key" not in html
    monkeypatch.delenv("AIRFLOW_CONN_GIP_DEFAULT")
    html = client.get(page_url(DAILY_DAG), headers=bearer(client, passwords, "admin")).text
    assert 'data-nav="gip"' not in html and 'data-nav="airflow"' in html  # no console link at all then


def test_plugin_is_registered_with_airflow(view):
    client, _, passwords = view
    response = client.get("/api/v2/plugins", headers=bearer(client, passwords, "admin"))
    assert response.status_code == 200
    (plugin,) = [p for p in response.json()["plugins"] if p["name"] == "gip_evaluations"]  # loaded once
    views = {(v["destination"], v["url_route"]): v["href"] for v in plugin["external_views"]}
    assert views == {
        ("nav", "gip-evaluations"): "/gip/evaluations/",
        ("dag", "gip-evaluations-dag"): "/gip/evaluations/dags/{DAG_ID}",
    }
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/gip"


def test_importing_the_plugin_keeps_fastapi_out_of_task_processes():
    """Airflow imports plugins in every task process: the plugin module must not pull in the web stack."""
    import subprocess
    import sys

    code = (
        "import sys; import airflow.sdk; import gip_airflow.plugins.evaluations as m; "
        "print(m.GipEvaluationsPlugin.name, 'fastapi' in sys.modules, 'gip_airflow.plugins._app' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-3:] == ["gip_evaluations", "False", "False"]


def test_provider_info_declares_the_plugin_and_config():
    import gip_airflow

    info = gip_airflow.get_provider_info()
    assert info["plugins"] == [
        {"name": "gip_evaluations", "plugin-class": "gip_airflow.plugins.evaluations.GipEvaluationsPlugin"}
    ]
    options = info["config"]["gip"]["options"]
    assert options["warehouse_conn_id"]["default"] == "gip_warehouse"
    assert options["results_table"]["default"] == "gip_results"


# -- superseded runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_superseded_runs_are_counted_not_listed_and_old_tables_still_read(kind, monkeypatch, tmp_path):
    """A re-evaluated window is one run on the page; a summary table without the column lists all."""
    import datetime as dt
    import io
    import random

    from gip_airflow.plugins import _page
    from gip_airflow.plugins._warehouse import Warehouse
    from gip_airflow.transfers._sql import RunMeta, load_result_csv
    from tests.integration.transfers.conftest import make_postgres, make_sqlite
    from tests.integration.view_data import METRIC, result_csv

    wh = make_postgres(monkeypatch) if kind == "postgres" else make_sqlite(monkeypatch, tmp_path)
    try:
        rng = random.Random(3)
        start = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)

        def load(table, run_id, day, key):
            window = start + dt.timedelta(days=day)
            meta = RunMeta(
                run_id=run_id,
                dag_id="dag_x",
                evaluator_id="ev",
                task_id="load",
                window_start=window,
                window_end=window + dt.timedelta(days=1),
                evaluation_key=key,
            )
            data = io.BytesIO(result_csv(rng, 10, 0.8))
            load_result_csv(wh.hook(), data, meta, table=table, metric=METRIC, create_table=True)

        table = wh.table
        for day, run_id in ((0, "day0"), (1, "day1-first"), (1, "day1-again"), (2, "day2")):
            load(table, run_id, day, f"key-{day}")
        with Warehouse(wh.hook(), [table]) as warehouse:
            [summary] = warehouse.dags(None)
            page = warehouse.dag_page("dag_x")
        assert summary.runs == 3
        assert [r.run_id for r in page.runs] == ["day0", "day1-again", "day2"]
        assert (page.total_runs, page.superseded) == (3, 1)
        html = _page.dag_page(page, _page.Links(), task_id=None, evaluator_id=None, limit=500)
        assert "1 earlier run(s) of re-evaluated windows" in html

        # a summary table of an earlier release (no superseded_by): every run is listed, nothing fails
        old = f"{table}_old"
        load(old, "old-1", 0, None)
        load(old, "old-2", 0, None)
        wh.hook().run([f"DROP VIEW {old}_v", f"ALTER TABLE {old}_runs DROP COLUMN superseded_by"])
        with Warehouse(wh.hook(), [old]) as warehouse:
            page = warehouse.dag_page("dag_x")
            assert warehouse.dags(None)[0].runs == 2
        assert [r.run_id for r in page.runs] == ["old-1", "old-2"] and page.superseded == 0
    finally:
        for fn in wh.cleanup:
            fn()
