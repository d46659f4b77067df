"""The Evaluations page's pure parts: gaps, line breaks, links, escaping (no database, no server)."""

from __future__ import annotations

import datetime as dt
import re

from gip_airflow.plugins import _page
from gip_airflow.plugins._warehouse import DagPage, Facet, Run, parse_ts

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def run(day: int, *, evaluator: str = "ev", pass_rate: float | None = 0.5, **kw) -> Run:
    values = {
        "run_id": f"r{day}-{evaluator}",
        "experiment_id": "exp",
        "evaluator_id": evaluator,
        "task_id": "load",
        "map_index": -1,
        "dag_run_id": f"scheduled__{day}",
        "display_name": f"run {day}",
        "status": "DONE",
        "item_count": 10,
        "passed_count": 5,
        "pass_rate": pass_rate,
        "mean_score": 1.0,
        "total_tokens": 1000,
        "window_start": T0 + day * DAY,
        "window_end": T0 + (day + 1) * DAY,
        "logical_date": None,
        "loaded_at": T0,
    }
    values.update(kw)
    return Run(**values)


def render(runs: list[Run], links: _page.Links | None = None, dag_id: str = "dag") -> str:
    page = DagPage(dag_id, runs, [Facet("load", "ev", len(runs))], len(runs), False, ["t_runs"])
    return _page.dag_page(page, links or _page.Links(), task_id=None, evaluator_id=None, limit=500)


def test_gaps_are_the_windows_nobody_covers():
    runs = [run(0), run(1), run(4), run(5, evaluator="other"), run(7)]
    assert _page.gaps(runs) == [(T0 + 2 * DAY, T0 + 4 * DAY), (T0 + 6 * DAY, T0 + 7 * DAY)]
    assert _page.gaps([run(0), run(1)]) == []
    assert _page.gaps([run(0, window_start=None)]) == []


def test_a_series_line_breaks_where_its_window_has_no_data():
    html = render([run(0), run(1), run(3), run(4), run(0, evaluator="b"), run(4, evaluator="b")])
    paths = re.findall(r'<path class="line" d="([^"]+)"', html)
    assert sorted(p.count("M") for p in paths) == [2, 2] * 3  # three charts; both series break once
    assert html.count('class="gap"') == 3  # day 2 is hatched in each chart


def test_runs_without_a_value_are_no_point_and_not_a_zero():
    html = render([run(0), run(1, pass_rate=None), run(2)])
    pass_rate = re.search(r'data-metric="pass-rate".*?</svg>', html, re.S).group(0)
    assert pass_rate.count('class="point"') == 2
    assert re.search(r'data-metric="tokens".*?</svg>', html, re.S).group(0).count('class="point"') == 3


def test_links_quote_ids_and_know_mapped_tasks():
    links = _page.Links(ui_base="/airflow", console_run_url="https://c/x/{experiment_id}/runs/{run_id}")
    r = run(0, run_id="a/b", dag_run_id="manual__2025-03-01T00:00:00+00:00", map_index=3)
    assert links.console(r) == "https://c/x/exp/runs/a%2Fb"
    assert links.task_instance("my dag", r) == (
        "/airflow/dags/my%20dag/runs/manual__2025-03-01T00%3A00%3A00%2B00%3A00/tasks/load/mapped/3"
    )
    assert links.task_instance("d", run(0, dag_run_id=None)) is None  # rows loaded before the column


def test_warehouse_text_is_escaped():
    evil = '<script>alert("x")</script>'
    html = render([run(0, display_name=evil, evaluator=evil, run_id=evil)], dag_id=evil)
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html


def test_parse_ts_reads_both_drivers():
    assert parse_ts("2025-03-01T00:00:00+00:00") == T0
    assert parse_ts(dt.datetime(2025, 3, 1)) == T0  # naive: UTC
    assert parse_ts(None) is None and parse_ts("not a date") is None


def test_a_run_without_a_window_is_a_point_at_its_load_time():
    loaded = T0 + 3 * DAY
    html = render([run(0, window_start=None, window_end=None, loaded_at=loaded)])
    assert html.count('class="point"') == 3 and 'class="gap"' not in html
    assert "(no window)" in html
