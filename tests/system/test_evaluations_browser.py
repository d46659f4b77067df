"""The Evaluations view in a real browser: headless Chromium against a running ``airflow api-server``.

The API server is a separate process on a free loopback port with SimpleAuthManager; the browser
carries the JWT cookie a UI login sets. The warehouse is SQLite filled through the provider's loader
like the demo's. Checks: as many points as summary rows for the DAG, an axe-core audit (axe-core is
installed with npm into a temporary directory at test time; our own label/contrast check runs too),
and a screenshot saved under ``tmp/artifacts`` (``GIP_ARTIFACTS_DIR`` to change; with
``GIP_UPDATE_DOCS_SCREENSHOT=1`` the one inside the Airflow UI also becomes the docs' picture). Chromium comes
from ``.ci/ensure-chromium``; without it the test skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_evaluations_view import register_dags
from tests.integration.view_data import COMPARISON_DAG, DAILY_DAG, TABLE, fill, sqlite_conn_json, sqlite_hook

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("GIP_ARTIFACTS_DIR", REPO / "tmp" / "artifacts"))

#: Our own accessibility check (runs with or without axe-core): form controls have labels, charts
#: have names, text has WCAG AA contrast against its effective background.
OWN_A11Y_CHECK = r"""
(() => {
  const problems = [];
  const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (!el.labels.length && !el.getAttribute("aria-label")) problems.push("no label: " + el.outerHTML.slice(0, 80));
  }
  for (const svg of document.querySelectorAll("svg.chart")) {
    const ids = (svg.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean);
    if (!ids.length || ids.some((id) => !document.getElementById(id))) problems.push("chart without a name");
  }
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest("svg title, title, style, script")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") continue;
    const fg = rgb(el instanceof SVGElement ? style.fill : style.color).slice(0, 3);
    const l1 = lum(fg), l2 = lum(background(el));
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    checked++;
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: ${el.tagName} "${el.textContent.trim().slice(0, 40)}"`);
  }
  return {problems, checked};
})()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    script = REPO / ".ci" / "ensure-chromium"
    result = subprocess.run([str(script)], check=False, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not result.stdout.strip():
        pytest.skip(f"headless Chromium is not available: {result.stderr.strip()[-300:]}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def axe_source(tmp_path_factory) -> str | None:
    """axe-core's browser bundle, installed with npm into a temporary directory (None without npm)."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    prefix = tmp_path_factory.mktemp("axe")
    result = subprocess.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), "axe-core@4"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    bundle = prefix / "node_modules" / "axe-core" / "axe.min.js"
    if result.returncode != 0 or not bundle.exists():
        print(f"axe-core could not be installed: {result.stderr[-300:]}")
        return None
    return bundle.read_text()


@pytest.fixture(scope="module")
def api_server(airflow_db, tmp_path_factory):
    """A real ``airflow api-server`` process with the plugin, SimpleAuthManager and a filled warehouse."""
    tmp = tmp_path_factory.mktemp("api-server")
    warehouse = str(tmp / "warehouse.sqlite")
    os.environ["AIRFLOW_CONN_GIP_BROWSER_WAREHOUSE"] = sqlite_conn_json(warehouse)
    filled = fill(sqlite_hook("gip_browser_warehouse"), warehouse)
    register_dags([DAILY_DAG, COMPARISON_DAG])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
        # [START evaluations_view_config]
        "AIRFLOW__GIP__WAREHOUSE_CONN_ID": "gip_browser_warehouse",  # a common.sql connection
        "AIRFLOW__GIP__RESULTS_TABLE": "gip_trace_results",  # the view reads gip_trace_results_runs
        "AIRFLOW__GIP__CONSOLE_RUN_URL": "https://console.test/evals/experiments/{experiment_id}/runs/{run_id}",
        # [END evaluations_view_config]
    }
    log = open(tmp / "api-server.log", "w+b")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow",
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"api-server exited {proc.returncode}:\n{log.read().decode()[-3000:]}")
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("api-server did not become healthy in 180 s")
            time.sleep(0.5)
        password = json.loads((tmp / "passwords.json").read_text())["viewer"]
        response = httpx.post(
            f"{base}/auth/token", json={"username": "viewer", "password": password}, timeout=30
        )
        response.raise_for_status()
        yield base, response.json()["access_token"], filled
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def browser(chromium):
    from tests.system.cdp import Browser

    b = Browser(chromium, width=1180, height=900)
    try:
        yield b
    finally:
        b.close()


def test_page_in_headless_chromium(api_server, browser, axe_source):
    base, token, filled = api_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # logged out: the browser gets 401 and no data
    browser.navigate(f"{base}/gip/evaluations/dags/{DAILY_DAG}")
    text = browser.evaluate("document.body.innerText")
    assert filled.runs[DAILY_DAG][0] not in text and "Not authenticated" in text

    # logged in: the JWT cookie the UI's login sets
    browser.send("Network.enable")
    browser.send("Network.setCookie", name="_token", value=token, url=base, httpOnly=False)
    browser.navigate(f"{base}/gip/evaluations/dags/{DAILY_DAG}")
    with sqlite3.connect(filled.path) as db:
        (rows,) = db.execute(f"SELECT COUNT(*) FROM {TABLE}_runs WHERE dag_id = ?", (DAILY_DAG,)).fetchone()
    points = browser.evaluate(
        """document.querySelectorAll('svg[data-metric="pass-rate"] circle.point').length"""
    )
    runs = browser.evaluate(
        "new Set([...document.querySelectorAll('circle.point')].map(c => c.dataset.runId)).size"
    )
    table_rows = browser.evaluate("document.querySelectorAll('tr[data-run-id]').length")
    print(
        f"\nsummary rows for {DAILY_DAG}: {rows}; points in the pass-rate chart: {points}; table rows: {table_rows}"
    )
    assert points == runs == table_rows == rows == len(filled.runs[DAILY_DAG])
    size = browser.screenshot(str(ARTIFACTS / "evaluations-view.png"))
    print(f"screenshot: {ARTIFACTS / 'evaluations-view.png'} ({size:,} bytes)")

    own = browser.evaluate(OWN_A11Y_CHECK)
    print(f"own accessibility check: {own['checked']} text elements, problems: {own['problems']}")
    assert own["problems"] == []
    if axe_source is None:
        print("axe-core not available (no npm or no registry): only our own check ran")
    else:
        browser.evaluate(axe_source)
        result = browser.evaluate(
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
            ".then(r => ({violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, "
            "nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})), passes: r.passes.length, "
            "version: axe.version}))",
            await_promise=True,
        )
        print(
            f"axe-core {result['version']}: {result['passes']} rules passed, violations: {result['violations']}"
        )
        assert result["violations"] == []

    # inside the Airflow UI: the DAG's "Evaluations" tab embeds the page
    browser.navigate(f"{base}/dags/{DAILY_DAG}/plugin/gip-evaluations-dag")
    deadline = time.monotonic() + 60
    src = None
    while time.monotonic() < deadline and not src:
        src = browser.evaluate("(document.querySelector('iframe') || {}).src || null")
        time.sleep(0.5)
    assert src and src.endswith(f"/gip/evaluations/dags/{DAILY_DAG}"), src
    time.sleep(3)  # let the frame render before the picture
    browser.screenshot(str(ARTIFACTS / "evaluations-view-in-airflow.png"))
    if os.environ.get("GIP_UPDATE_DOCS_SCREENSHOT") == "1":  # the picture on docs/evaluations-view.md
        shutil.copy(
            ARTIFACTS / "evaluations-view-in-airflow.png", REPO / "docs" / "_static" / "evaluations-view.png"
        )
