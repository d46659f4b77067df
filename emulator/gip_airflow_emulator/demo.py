"""The one-command demo: emulator + example DAGs + an embedded SQLite warehouse, end to end.

``make demo`` runs ``python -m gip_airflow_emulator.demo``. It starts the GIP emulator, points a throw-away
Airflow (SQLite metadata DB) at it, runs the daily trace evaluation DAG for the last three days as a
backfill (one run per day, each evaluating exactly that day's traces, waiting in the deferrable
trigger), then degrades the judge in the emulator and runs one more window, which the regression gate
fails, runs the model comparison DAG once, and prints what landed in the warehouse and the gate's
verdicts. Exits non-zero when a DAG run failed that should not have, or the gate missed the
regression. Nothing here is needed to use the provider.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum

if TYPE_CHECKING:
    from collections.abc import Iterator

DAILY_DAG = "gip_daily_trace_evaluation"
COMPARISON_DAG = "gip_model_comparison"
DAILY_TABLE = "gip_trace_results"
COMPARISON_TABLE = "gip_model_comparison_results"


def _say(step: str, message: str) -> None:
    print(f"[{step}] {message}", flush=True)


def _airflow_env(home: Path, dags: Path, warehouse: Path, emulator: Any) -> dict[str, str]:
    langfuse = {
        "conn_type": "http",
        "host": emulator.base_url,
        "login": emulator.langfuse_public_key,
        "password": emulator.langfuse_secret_key,
    }
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_GIP_DEFAULT": emulator.conn_json(),
        "AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(langfuse),
        "AIRFLOW_CONN_GIP_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (Airflow's task logs) to ``log`` while a DAG runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _prepare_airflow(log: Path) -> None:
    """Migrate the SQLite metadata DB and register the DAG bundle (in this process)."""
    with _output_to(log):
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.utils.db import initdb

        initdb()
        DagBundlesManager().sync_bundles_to_db()


def _run_dag(dags_folder: Path, dag_id: str, log: Path, what: str, **test_kwargs: Any) -> bool:
    """Parse one example DAG, store it, and run it with ``dag.test()`` (deferral runs in-process)."""
    started = time.monotonic()
    ok = False
    with _output_to(log):
        print(f"\n===== {what}", flush=True)
        try:
            from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

            bag = DagBag(dag_folder=str(dags_folder / f"{dag_id}.py"))
            if bag.import_errors:
                print(bag.import_errors, flush=True)
            else:
                sync_bag_to_db(bag, "dags-folder", None)
                ok = str(bag.get_dag(dag_id).test(**test_kwargs).state) == "success"
        except Exception:
            traceback.print_exc()
    print(f"      {'ok  ' if ok else 'FAIL'} {what} ({time.monotonic() - started:.0f} s)", flush=True)
    return ok


def last_firings(count: int, now: pendulum.DateTime) -> list[pendulum.DateTime]:
    """The daily DAG's last ``count`` firing instants before ``now`` (23:00 Asia/Seoul)."""
    local = now.in_timezone("Asia/Seoul")
    fire = local.replace(hour=23, minute=0, second=0, microsecond=0)
    if fire > local:
        fire = fire.subtract(days=1)
    return [fire.subtract(days=i).in_timezone("UTC") for i in reversed(range(count))]


#: What the demo does to the judge before the last window: a third more failed items, scores down.
DEGRADATION: dict[str, Any] = {"model": "openai/gpt-4", "fail_rate": 0.3, "score_shift": -0.3}
#: Traces added per day, so that each window has enough items for the gate to conclude.
TRACES_PER_DAY = 150


def gate_verdicts(warehouse: Path) -> list[tuple[str, str, str]]:
    """Per window ``(window, verdict, readable line)`` from the regression gate's verdict table."""
    from gip_airflow.operators.gate import regression_message

    out = []
    with sqlite3.connect(warehouse) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            f"SELECT s.window_start, g.* FROM {DAILY_TABLE}_gates g JOIN {DAILY_TABLE}_runs s "
            "ON s.run_id = g.run_id ORDER BY s.window_start, g.metric DESC"
        ).fetchall()
    by_window: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_window.setdefault(row["window_start"], []).append(dict(row))
    for window, results in by_window.items():
        verdicts = {r["verdict"] for r in results}
        overall = (
            "regression"
            if "regression" in verdicts
            else "inconclusive"
            if "inconclusive" in verdicts
            else "pass"
        )
        if overall == "regression":
            line = regression_message(
                results[0]["run_id"], "trailing", json.loads(results[0]["baseline"]), results
            )
        else:
            line = ", ".join(
                f"{r['metric']} {r['verdict']}"
                + (
                    f" (change {r['estimate']:+.3f}, p={r['p_value']:.2f})"
                    if r["p_value"] is not None
                    else ""
                )
                for r in results
            )
        out.append((_short(window), overall, line))
    return out


def summarize(warehouse: Path) -> str:
    """Per-day and per-model tables from the warehouse's run summary tables."""
    lines: list[str] = []
    with sqlite3.connect(warehouse) as db:
        db.row_factory = sqlite3.Row
        lines.append("Daily trace evaluation (one run per data interval):")
        header = ("window (UTC)", "items", "passed", "pass rate", "mean score", "tokens")
        lines.append("  {:<37} {:>5} {:>6} {:>9} {:>10} {:>8}".format(*header))
        for row in db.execute(f"SELECT * FROM {DAILY_TABLE}_runs ORDER BY window_start"):
            window = f"{_short(row['window_start'])} → {_short(row['window_end'])}"
            lines.append(
                f"  {window:<37} {row['item_count']:>5} {row['passed_count']:>6} {_pct(row['pass_rate']):>9} "
                f"{_num(row['mean_score_value']):>10} {row['total_tokens'] or 0:>8}"
            )
        lines.append("")
        lines.append("Model comparison (same dataset, one run per model):")
        lines.append(f"  {'model':<40} {'items':>5} {'pass rate':>9} {'mean score':>10} {'tokens':>8}")
        for row in db.execute(f"SELECT * FROM {COMPARISON_TABLE}_runs ORDER BY display_name"):
            model = str(row["display_name"]).split(" | ")[0][:40]
            lines.append(
                f"  {model:<40} {row['item_count']:>5} {_pct(row['pass_rate']):>9} "
                f"{_num(row['mean_score_value']):>10} {row['total_tokens'] or 0:>8}"
            )
    return "\n".join(lines)


def _short(value: Any) -> str:
    if not value:
        return "-"
    parsed = pendulum.parse(str(value))
    if not isinstance(parsed, pendulum.DateTime):
        return str(value)
    return parsed.in_timezone("UTC").format("YYYY-MM-DD HH:mm")


def _pct(value: Any) -> str:
    return f"{float(value):.0%}" if value is not None else "-"


def _num(value: Any) -> str:
    return f"{float(value):.2f}" if value is not None else "-"


def example_dags() -> Path | None:
    """The example DAGs: shipped in the package (installed), else the repository's ``dags/`` (checkout)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "example_dags", here.parents[1] / "dags"):
        if (folder / f"{DAILY_DAG}.py").is_file():
            return folder
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gip_airflow_emulator.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, help="keep Airflow home, logs and warehouse here")
    parser.add_argument("--days", type=int, default=3, help="days to backfill (default 3)")
    parser.add_argument(
        "--dags-folder",
        type=Path,
        default=example_dags(),
        help="the example DAGs (default: those shipped with the package, or dags/ of a checkout)",
    )
    args = parser.parse_args(argv)
    if args.dags_folder is None or not (args.dags_folder / f"{DAILY_DAG}.py").is_file():
        parser.error(
            f"no example DAGs in {args.dags_folder or 'this installation'}: pass --dags-folder "
            "pointing at the dags/ folder of https://github.com/gip-airflow/gip-airflow"
        )

    from gip_airflow_emulator.handle import start_emulator

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gip-airflow-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    home, warehouse, log = workdir / "airflow", workdir / "warehouse.sqlite", workdir / "demo.log"
    shutil.rmtree(home, ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    home.mkdir()

    _say("1/5", "Starting the GIP emulator (GIP API + Langfuse API subset, seeded with 14 days of traces)")
    emulator = start_emulator()
    failures = 0
    try:
        _say("1/5", f"      emulator at {emulator.base_url}; adding {TRACES_PER_DAY} traces a day")
        emulator.add_traces(per_day=TRACES_PER_DAY, days=args.days + 2)
        os.environ.update(_airflow_env(home, args.dags_folder, warehouse, emulator))
        _say("2/5", f"Preparing a throw-away Airflow (AIRFLOW_HOME={home}, SQLite metadata DB)")
        _prepare_airflow(log)
        firings = last_firings(args.days + 1, pendulum.now("UTC"))
        _say("3/5", f"Backfilling {DAILY_DAG}, {args.days} days (deferrable waits in the trigger)")
        for fire in firings[:-1]:
            window = f"{fire.subtract(days=1):%Y-%m-%d %H:%M} → {fire:%Y-%m-%d %H:%M} UTC"
            failures += not _run_dag(args.dags_folder, DAILY_DAG, log, f"window {window}", logical_date=fire)
        fire = firings[-1]
        window = f"{fire.subtract(days=1):%Y-%m-%d %H:%M} → {fire:%Y-%m-%d %H:%M} UTC"
        _say("3/5", f"Degrading the judge in the emulator ({DEGRADATION}), then one more window")
        emulator.degrade(**DEGRADATION)
        caught = not _run_dag(
            args.dags_folder,
            DAILY_DAG,
            log,
            f"degraded window {window} (expected to fail)",
            logical_date=fire,
        )
        emulator.clear_degradations()
        _say("4/5", f"Comparing models with {COMPARISON_DAG} (dynamic task mapping, one run per model)")
        failures += not _run_dag(args.dags_folder, COMPARISON_DAG, log, "model comparison")
        _say("5/5", "What landed in the warehouse")
        try:
            print(summarize(warehouse))
            print("\nRegression gate (each window against the trailing windows before it):")
            verdicts = gate_verdicts(warehouse)
            for when, verdict, line in verdicts:
                print(f"  {when}  {verdict.upper():<12} {line}")
            caught = caught and bool(verdicts) and verdicts[-1][1] == "regression"
            if not caught:
                print("      the gate did NOT catch the degraded window")
                failures += 1
        except sqlite3.Error as exc:
            print(f"      could not read the warehouse: {exc}")
            failures += 1
        runs = emulator.runs()
        print(f"\nGIP emulator: {len(runs)} experiment runs, {emulator.stats()['requests']} requests served.")
    finally:
        emulator.stop()
    print(f"Warehouse (SQLite): {warehouse}\nAirflow logs: {log}")
    conn, tables = (
        shlex.quote(os.environ.get("AIRFLOW_CONN_GIP_WAREHOUSE", "")),
        f"{DAILY_TABLE},{COMPARISON_TABLE}",
    )
    print(
        f"Evaluations view: http://localhost:8080/gip/evaluations/dags/{DAILY_DAG} after\n"
        f"  AIRFLOW_HOME={home} "
        f"AIRFLOW_CONN_GIP_WAREHOUSE={conn} AIRFLOW__GIP__RESULTS_TABLE={tables} airflow api-server -p 8080"
    )
    if failures:
        print(f"\n{failures} DAG run(s) FAILED — see {log}")
        return 1
    print("\nDemo finished: every DAG run succeeded, and the regression gate failed the degraded window.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
