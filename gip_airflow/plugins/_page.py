"""HTML and server-side SVG for the Evaluations view: no external CSS, fonts or scripts.

Charts put time (the evaluated window) on x. Each run is a point linking to its GIP console run;
a line joins the per-window means of one task+evaluator series and breaks where a window has no
data, and time ranges no run covers are shaded "no data": gaps, never zeros.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from gip_airflow.plugins._warehouse import is_failing

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from gip_airflow.plugins._warehouse import DagPage, DagSummary, Run

#: Series colours: each has at least 4.5:1 contrast on white (also used for legend text).
PALETTE = ("#1f5fa8", "#b3261e", "#1b7a3a", "#7a4cb3", "#8a5300", "#00707a", "#a3206b", "#4a5a00")
GAP_TOLERANCE = dt.timedelta(minutes=1)
MISSING = "\u2013"  # en dash: no value

WIDTH, HEIGHT = 760, 190
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 14, 30


@dataclass
class Links:
    """How to reach a run: the GIP console (optional) and the Airflow UI (under ``ui_base``)."""

    ui_base: str = ""
    console_run_url: str = ""  # a template with {experiment_id} and {run_id}
    dag_tab_route: str = "gip-evaluations-dag"
    page_base: str = "/gip/evaluations"
    _cache: dict[tuple[str, str], str | None] = field(default_factory=dict, repr=False)

    def console(self, run: Run) -> str | None:
        key = ("gip", run.run_id)
        if key not in self._cache:
            url = None
            if self.console_run_url and run.experiment_id:
                url = self.console_run_url.format(
                    experiment_id=quote(run.experiment_id, safe=""), run_id=quote(run.run_id, safe="")
                )
            self._cache[key] = url
        return self._cache[key]

    def task_instance(self, dag_id: str, run: Run) -> str | None:
        key = (dag_id, run.run_id)
        if key not in self._cache:
            self._cache[key] = self._task_instance(dag_id, run)
        return self._cache[key]

    def _task_instance(self, dag_id: str, run: Run) -> str | None:
        if not run.dag_run_id or not run.task_id:
            return None
        url = (
            f"{self.ui_base}/dags/{quote(dag_id, safe='')}/runs/{quote(run.dag_run_id, safe='')}"
            f"/tasks/{quote(run.task_id, safe='')}"
        )
        if run.map_index is not None and run.map_index >= 0:
            url += f"/mapped/{run.map_index}"
        return url

    def dag_tab(self, dag_id: str) -> str:
        return f"{self.ui_base}/dags/{quote(dag_id, safe='')}/plugin/{self.dag_tab_route}"

    def dag_page(self, dag_id: str) -> str:
        return f"{self.page_base}/dags/{quote(dag_id, safe='')}"


# -------------------------------------------------------------------------------------------------
# Formatting
# -------------------------------------------------------------------------------------------------


def fmt_ts(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else MISSING


def fmt_window(run: Run) -> str:
    if run.window:
        return f"{fmt_ts(run.window_start)} → {fmt_ts(run.window_end)}"
    return f"{fmt_ts(run.when)} (no window)"


def fmt_pct(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.1f} %"


def fmt_score(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3g}"


def fmt_int(value: float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


# -------------------------------------------------------------------------------------------------
# Charts
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    value: Callable[[Run], float | None]
    fmt: Callable[[float | None], str]
    fixed: tuple[float, float] | None = None  # y domain, else from the data (tokens from 0)
    from_zero: bool = False


METRICS = (
    Metric("pass-rate", "Pass rate", lambda r: r.pass_rate, fmt_pct, fixed=(0.0, 1.0)),
    Metric("mean-score", "Mean score", lambda r: r.mean_score, fmt_score),
    Metric(
        "tokens",
        "Tokens",
        lambda r: None if r.total_tokens is None else float(r.total_tokens),
        fmt_int,
        from_zero=True,
    ),
)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _time_ticks(lo: dt.datetime, hi: dt.datetime, count: int = 8) -> list[dt.datetime]:
    span = (hi - lo).total_seconds()
    steps = [3600 * h for h in (1, 2, 3, 6, 12)] + [86400 * d for d in (1, 2, 3, 7, 14, 30, 91, 182, 365)]
    step = next((s for s in steps if span / s <= count), steps[-1])
    start = dt.datetime.fromtimestamp(math.ceil(lo.timestamp() / step) * step, dt.UTC)
    ticks = []
    t = start
    while t <= hi:
        ticks.append(t)
        t += dt.timedelta(seconds=step)
    return ticks


def time_domain(runs: Sequence[Run]) -> tuple[dt.datetime, dt.datetime]:
    instants = [t for r in runs for t in (r.window_start, r.window_end, r.when) if t is not None]
    lo, hi = min(instants), max(instants)
    if hi - lo < dt.timedelta(hours=1):
        lo, hi = lo - dt.timedelta(hours=12), hi + dt.timedelta(hours=12)
    return lo, hi


def gaps(runs: Sequence[Run]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Time ranges between windows that no run covers (only between the first and last window)."""
    windows = sorted({r.window for r in runs if r.window is not None})
    out: list[tuple[dt.datetime, dt.datetime]] = []
    if not windows:
        return out
    end = windows[0][1]
    for start, stop in windows[1:]:
        if start > end + GAP_TOLERANCE:
            out.append((end, start))
        end = max(end, stop)
    return out


def _series_paths(
    runs: Sequence[Run], metric: Metric, sx: Callable[[dt.datetime], float], sy: Callable[[float], float]
) -> str:
    """One path per series through the per-window means; a window without data breaks it."""
    by_window: dict[tuple[dt.datetime, dt.datetime] | dt.datetime, list[float]] = {}
    for r in runs:
        value = metric.value(r)
        key = r.window or r.when
        if value is None or key is None:
            continue
        by_window.setdefault(key, []).append(value)

    def start_end(key: tuple[dt.datetime, dt.datetime] | dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        return key if isinstance(key, tuple) else (key, key)

    parts: list[str] = []
    previous_end: dt.datetime | None = None
    for key in sorted(by_window, key=start_end):
        start, end = start_end(key)
        values = by_window[key]
        mid = start + (end - start) / 2
        x, y = sx(mid), sy(sum(values) / len(values))
        windowed = isinstance(key, tuple)
        broken = previous_end is None or (windowed and start > previous_end + GAP_TOLERANCE)
        parts.append(f"{'M' if broken else 'L'}{x:.1f},{y:.1f}")
        previous_end = end
    return " ".join(parts)


def chart(
    metric: Metric,
    *,
    runs: Sequence[Run],
    colours: dict[tuple[str, str], str],
    domain: tuple[dt.datetime, dt.datetime],
    no_data: list[tuple[dt.datetime, dt.datetime]],
    links: Links,
    dag_id: str,
) -> str:
    """One SVG chart of ``metric`` over time, a point per run."""
    values = [v for r in runs if (v := metric.value(r)) is not None]
    lo_t, hi_t = domain
    if metric.fixed:
        lo_v, hi_v = metric.fixed
    elif values:
        lo_v, hi_v = min(values), max(values)
        if metric.from_zero:
            lo_v = min(0.0, lo_v)
        pad = (hi_v - lo_v) * 0.08 or max(abs(hi_v) * 0.1, 1.0)
        lo_v, hi_v = (lo_v if metric.from_zero else lo_v - pad), hi_v + pad
    else:
        lo_v, hi_v = 0.0, 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span_t = (hi_t - lo_t).total_seconds() or 1.0
    span_v = (hi_v - lo_v) or 1.0

    def sx(t: dt.datetime) -> float:
        return LEFT + (t - lo_t).total_seconds() / span_t * plot_w

    def sy(v: float) -> float:
        return TOP + plot_h - (v - lo_v) / span_v * plot_h

    cid = f"chart-{metric.key}"
    out = [
        f'<svg class="chart" id="{cid}" data-metric="{metric.key}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="group" aria-labelledby="{cid}-title {cid}-desc" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{cid}-title">{escape(metric.title)} per window</title>',
        f'<desc id="{cid}-desc">{len(values)} runs; the table below lists every value.</desc>',
        f'<defs><pattern id="{cid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#d0d0d0" stroke-width="2"/></pattern></defs>',
    ]
    for start, end in no_data:
        x0, x1 = sx(start), sx(end)
        out.append(
            f'<rect class="gap" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1):.1f}" height="{plot_h}" '
            f'fill="url(#{cid}-hatch)"><title>No data {fmt_ts(start)} → {fmt_ts(end)}</title></rect>'
        )
    for tick in _nice_ticks(lo_v, hi_v):
        y = sy(tick)
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e2e2e2"/><text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(metric.fmt(tick))}</text>"
        )
    short = (hi_t - lo_t) < dt.timedelta(days=3)
    for instant in _time_ticks(lo_t, hi_t):
        x = sx(instant)
        label = instant.strftime("%m-%d %H:%M") if short else instant.strftime("%Y-%m-%d")
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}" stroke="#595959"/>'
            f'<text x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle" class="tick">{label}</text>'
        )
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#595959"/>'
    )
    by_series: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        by_series.setdefault(r.series, []).append(r)
    for series, series_runs in by_series.items():
        path = _series_paths(series_runs, metric, sx, sy)
        if path:
            out.append(
                f'<path class="line" d="{path}" fill="none" stroke="{colours[series]}" stroke-width="1.6"/>'
            )
    for r in runs:
        value = metric.value(r)
        when = r.when
        if value is None or when is None:
            continue
        x, y = sx(when), sy(value)
        colour = colours[r.series]
        href = links.console(r) or links.task_instance(dag_id, r) or f"#run-{r.run_id}"
        nav = "gip" if links.console(r) else "airflow"
        label = (
            f"{metric.title} {metric.fmt(value)}, {r.series[0]} / {r.series[1]}, "
            f"{fmt_window(r)}, run {r.run_id}"
        )
        gate = ""
        if r.gate:
            failing = is_failing(r.gate)
            label += f", gate {r.gate}"
            style = 'class="gate gate-fail" stroke="#b3261e" stroke-dasharray="3 2"'
            if not failing:
                style = 'class="gate gate-pass" stroke="#1b7a3a"'
            gate = f'<circle {style} cx="{x:.1f}" cy="{y:.1f}" r="7.5" fill="none" stroke-width="2"/>'

        out.append(
            f'<a href="{_attr(href)}" data-nav="{nav}" tabindex="-1"><title>{escape(label)}</title>{gate}'
            f'<circle class="point" data-run-id="{_attr(r.run_id)}" cx="{x:.1f}" cy="{y:.1f}" r="3.6" '
            f'fill="{colour}"/></a>'
        )
    out.append("</svg>")
    return "".join(out)


# -------------------------------------------------------------------------------------------------
# Pages
# -------------------------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       background: #fff; margin: 16px 20px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 18px 0 6px; }
p.note { color: #4a4a4a; margin: 4px 0 10px; }
a { color: #0b57d0; } a:focus-visible, button:focus-visible, select:focus-visible, input:focus-visible
{ outline: 2px solid #0b57d0; outline-offset: 2px; }
form.filters { display: flex; gap: 14px; align-items: end; flex-wrap: wrap; margin: 10px 0; }
form.filters label { display: flex; flex-direction: column; font-size: 13px; color: #333; gap: 2px; }
select, input, button { font: inherit; padding: 3px 6px; border: 1px solid #767676; border-radius: 4px;
       background: #fff; color: #1a1a1a; }
button { background: #0b57d0; color: #fff; border-color: #0b57d0; cursor: pointer; }
ul.legend { list-style: none; padding: 0; margin: 6px 0; display: flex; flex-wrap: wrap; gap: 6px 18px; }
ul.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 50%; }
.swatch.gap { border-radius: 2px;
              background: repeating-linear-gradient(45deg, #f4f4f4 0 3px, #d0d0d0 3px 5px); }
.swatch.gate-fail { background: none; border: 2px dashed #b3261e; }
.swatch.gate-pass { background: none; border: 2px solid #1b7a3a; }
figure { margin: 4px 0 12px; max-width: 980px; }
figcaption { font-weight: 600; margin-bottom: 2px; }
svg.chart { display: block; max-width: 980px; height: auto; }
svg .tick { font-size: 11px; fill: #444; }
svg a:hover circle.point { r: 5.5; }
table { border-collapse: collapse; margin-top: 6px; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.when { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:target { background: #fff4c2; } tr.gap-row td { color: #4a4a4a; font-style: italic; }
.fail { color: #b3261e; font-weight: 600; } .pass { color: #1b7a3a; font-weight: 600; }
"""

#: Inside Airflow's sandboxed iframe, links navigate the Airflow UI (its router) or open the GIP
#: console in a new tab from the parent page; opened on its own, the page's links work as usual.
SCRIPT = """
(function () {
  if (window.top === window) return;
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-nav]") : null;
    if (!link) return;
    var url = new URL(link.getAttribute("href"), window.location.href);
    if (url.hash && url.pathname === window.location.pathname) return;
    try {
      var top = window.top;
      if (link.getAttribute("data-nav") === "airflow" && url.origin === top.location.origin) {
        top.history.pushState(null, "", url.pathname + url.search + url.hash);
        top.dispatchEvent(new PopStateEvent("popstate"));
      } else {
        var outer = top.document.createElement("a");
        outer.href = url.href; outer.target = "_blank"; outer.rel = "noopener";
        top.document.body.appendChild(outer); outer.click(); outer.remove();
      }
      event.preventDefault();
    } catch (error) { /* not allowed: follow the link inside the frame */ }
  });
})();
"""


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main><script>{SCRIPT}</script></body></html>"
    )


def message_page(title: str, text: str) -> str:
    return _document(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")


def overview_page(dags: Sequence[DagSummary], links: Links, tables: Sequence[str]) -> str:
    rows = "".join(
        f'<tr><th scope="row"><a href="{_attr(links.dag_tab(d.dag_id))}" data-nav="airflow">'
        f"{escape(d.dag_id)}</a>"
        f' <a href="{_attr(links.dag_page(d.dag_id))}" class="alt">(page only)</a></th>'
        f'<td class="num">{d.runs:,}</td><td>{fmt_ts(d.last_window_end)}</td></tr>'
        for d in dags
    )
    body = (
        "<h1>Evaluations</h1>"
        f'<p class="note">GIP runs loaded into {escape(", ".join(tables) or "(no summary table yet)")}, '
        "per DAG you may read.</p>"
    )
    if dags:
        body += (
            '<table><caption>DAGs with GIP evaluation runs</caption><thead><tr><th scope="col">DAG</th>'
            '<th scope="col">Runs</th><th scope="col">Latest window end (UTC)</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    else:
        body += "<p>No evaluation runs yet for the DAGs you can read.</p>"
    return _document("Evaluations", body)


def _options(values: Sequence[str], selected: str | None, all_label: str) -> str:
    opts = [f'<option value=""{" selected" if not selected else ""}>{escape(all_label)}</option>']
    opts += [
        f'<option value="{_attr(v)}"{" selected" if v == selected else ""}>{escape(v)}</option>'
        for v in values
    ]
    return "".join(opts)


def dag_page(
    page: DagPage,
    links: Links,
    *,
    task_id: str | None,
    evaluator_id: str | None,
    limit: int,
) -> str:
    """Charts, legend and table for one DAG."""
    dag_id = page.dag_id
    runs = page.runs
    tasks = sorted({f.task_id for f in page.facets if f.task_id})
    evaluators = sorted({f.evaluator_id for f in page.facets if f.evaluator_id})
    body = [f"<h1>Evaluations · {escape(dag_id)}</h1>"]
    shown = (
        f"{len(runs):,} of {page.total_runs:,} runs" if page.total_runs > len(runs) else f"{len(runs):,} runs"
    )
    body.append(
        f'<p class="note">{shown} from {escape(", ".join(page.tables))}. Times are UTC. Each point is a run '
        "(it opens the GIP console run); the table links every run to the GIP console and to its Airflow "
        "task instance."
        + (
            f" {page.superseded:,} earlier run(s) of re-evaluated windows, marked superseded_by in the "
            "summary table, are not shown."
            if page.superseded
            else ""
        )
        + "</p>"
    )
    body.append(
        f'<form class="filters" method="get" action="{_attr(links.dag_page(dag_id))}">'
        f'<label for="f-task">Task<select id="f-task" name="task">'
        f"{_options(tasks, task_id, 'All tasks')}</select></label>"
        f'<label for="f-evaluator">Evaluator<select id="f-evaluator" name="evaluator">'
        f"{_options(evaluators, evaluator_id, 'All evaluators')}</select></label>"
        f'<label for="f-limit">Latest runs<input id="f-limit" name="limit" type="number" min="1" max="5000" '
        f'value="{limit}"></label><button type="submit">Show</button></form>'
    )
    if not runs:
        body.append("<p>No GIP runs for this DAG (with these filters) in the warehouse.</p>")
        return _document(f"Evaluations · {dag_id}", "".join(body))

    series = sorted({r.series for r in runs})
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}
    domain = time_domain(runs)
    no_data = gaps(runs)
    legend = [
        f'<li><span class="swatch" style="background:{colours[s]}" aria-hidden="true"></span>'
        f"{escape(s[0])} / {escape(s[1])}</li>"
        for s in series
    ]
    if no_data:
        legend.append('<li><span class="swatch gap" aria-hidden="true"></span>No data</li>')
    if page.gates_found:
        legend.append('<li><span class="swatch gate-pass" aria-hidden="true"></span>Gate passed</li>')
        legend.append('<li><span class="swatch gate-fail" aria-hidden="true"></span>Gate failed</li>')
    body.append(f'<ul class="legend" aria-label="Series (task / evaluator)">{"".join(legend)}</ul>')
    for metric in METRICS:
        body.append(
            f"<figure><figcaption>{escape(metric.title)}</figcaption>"
            + chart(
                metric, runs=runs, colours=colours, domain=domain, no_data=no_data, links=links, dag_id=dag_id
            )
            + "</figure>"
        )
    body.append(_table(page, links, no_data))
    return _document(f"Evaluations · {dag_id}", "".join(body))


def _table(page: DagPage, links: Links, no_data: list[tuple[dt.datetime, dt.datetime]]) -> str:
    head = (
        "Window (UTC)",
        "Task",
        "Evaluator",
        "Run",
        "Items",
        "Pass rate",
        "Mean score",
        "Tokens",
        *(("Gate",) if page.gates_found else ()),
        "Links",
    )
    rows: list[tuple[dt.datetime, str]] = []
    for r in reversed(page.runs):
        console = links.console(r)
        ti = links.task_instance(page.dag_id, r)
        link_cells = [
            f'<a href="{_attr(console)}" data-nav="gip">GIP run</a>' if console else "",
            f'<a href="{_attr(ti)}" data-nav="airflow">Task instance</a>' if ti else "",
        ]
        gate = ""
        if page.gates_found:
            css = "" if not r.gate else ("fail" if is_failing(r.gate) else "pass")
            gate = f'<td class="{css}">{escape(r.gate or MISSING)}</td>'
        task = r.task_id or MISSING
        if r.map_index is not None and r.map_index >= 0:
            task += f" [{r.map_index}]"
        rows.append(
            (
                r.when or dt.datetime.min.replace(tzinfo=dt.UTC),
                f'<tr id="run-{_attr(r.run_id)}" data-run-id="{_attr(r.run_id)}">'
                f'<td class="when">{fmt_window(r)}</td>'
                f"<td>{escape(task)}</td><td>{escape(r.evaluator_id or MISSING)}</td>"
                f'<td title="{_attr(r.run_id)}">{escape(r.display_name or r.run_id)}</td>'
                f'<td class="num">{fmt_int(r.item_count)}</td><td class="num">{fmt_pct(r.pass_rate)}</td>'
                f'<td class="num">{fmt_score(r.mean_score)}</td>'
                f'<td class="num">{fmt_int(r.total_tokens)}</td>'
                f"{gate}<td>{' · '.join(c for c in link_cells if c) or MISSING}</td></tr>",
            )
        )
    span = len(head) - 1
    for start, end in no_data:
        rows.append(
            (
                start,
                f'<tr class="gap-row"><td class="when">{fmt_ts(start)} → {fmt_ts(end)}</td>'
                f'<td colspan="{span}">No data for this window</td></tr>',
            )
        )
    rows.sort(key=lambda item: item[0], reverse=True)
    header = "".join(f'<th scope="col">{escape(h)}</th>' for h in head)
    return (
        f"<table><caption>Runs, newest first</caption><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(row for _, row in rows)}</tbody></table>"
    )


def query_string(**params: str | int | None) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(clean)}" if clean else ""
