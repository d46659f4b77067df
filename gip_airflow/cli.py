"""``gip-airflow`` command line: tools around the provider (today: moving GIP auto evaluations to Airflow)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gip_airflow.dag_factory import DEFAULT_SPEC_FILENAME, DEFAULT_WAREHOUSE_TABLE
from gip_airflow.exceptions import GipError
from gip_airflow.migrate import (
    DEFAULT_DAG_ID_PREFIX,
    DEFAULT_HANDOVER_MARGIN,
    MigrationOptions,
    read_from_api,
    read_from_file,
    run_migration,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

_MIGRATE_HELP = """\
Turn GIP auto evaluation configs into Airflow DAGs (CronTriggerTimetable in the config's time zone).

Reads every auto evaluation of every experiment from GIP (or the configs in --from-file), then writes
either one entry per config to the spec file the shipped factory DAG reads (--format factory, default)
or one standalone DAG file per config (--format dag). Experiments using relative_time_range get an
explicit window: each run evaluates [data_interval_start, data_interval_end) = the same range before its
firing, which makes re-runs and backfills reproducible.

GIP is left untouched unless --disable-in-gip: then each config is disabled only after the output was
written and loaded successfully, and Airflow takes over from the config's next firing (the handover).
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gip-airflow", description="Tools for the GIP Airflow provider.")
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser(
        "migrate-auto-evaluations",
        help="turn GIP auto evaluation configs into Airflow DAGs",
        description=_MIGRATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--conn-id", default="gip_default", help="Airflow connection of GIP (default gip_default)")
    m.add_argument(
        "--from-file",
        type=Path,
        help="read configs from this JSON file instead of the API (entries: experiment_id and/or experiment, "
        "auto_evaluation, optional id)",
    )
    m.add_argument(
        "--offline",
        action="store_true",
        help="with --from-file: do not contact GIP at all (no evaluator/experiment checks, no disabling)",
    )
    m.add_argument("--format", choices=("factory", "dag"), default="factory", dest="output_format")
    m.add_argument(
        "--spec-file",
        type=Path,
        default=Path("dags") / DEFAULT_SPEC_FILENAME,
        help=f"factory spec to write/merge (default dags/{DEFAULT_SPEC_FILENAME})",
    )
    m.add_argument("--dag-dir", type=Path, default=Path("dags"), help="where --format dag writes files")
    m.add_argument("--dag-id-prefix", default=DEFAULT_DAG_ID_PREFIX)
    m.add_argument(
        "--dag-conn-id", help="GIP connection id the generated DAGs use (default: the same as --conn-id)"
    )
    m.add_argument("--warehouse-conn-id", help="also load each run's results with GipToSqlOperator")
    m.add_argument("--warehouse-table", default=DEFAULT_WAREHOUSE_TABLE)
    m.add_argument("--experiment-id", action="append", default=[], help="only this experiment (repeatable)")
    m.add_argument("--auto-evaluation-id", action="append", default=[], help="only this config (repeatable)")
    m.add_argument("--include-disabled", action="store_true", help="also migrate configs disabled in GIP")
    m.add_argument("--dry-run", action="store_true", help="print the plan; write nothing, change nothing")
    m.add_argument(
        "--disable-in-gip",
        action="store_true",
        help="disable each GIP config after its DAG was written and verified",
    )
    m.add_argument(
        "--handover-margin",
        type=float,
        default=DEFAULT_HANDOVER_MARGIN.total_seconds(),
        metavar="SECONDS",
        help="Airflow takes over from the first firing at least this long after now (default %(default)s)",
    )
    m.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often the generated DAGs poll a run's status (default %(default)s)",
    )
    m.add_argument("-v", "--verbose", action="store_true")
    return parser


def _load_connection(conn_id: str) -> None:
    """Make ``conn_id`` visible to hooks in this process.

    Outside a task, Airflow 3's task SDK only sees connections from environment variables and secrets
    backends; one stored in the metadata DB (``airflow connections add``) is read here through Airflow's
    core lookup and exposed to this process only, as ``AIRFLOW_CONN_<ID>``.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
        return
    except AirflowNotFoundException:
        pass
    from airflow.sdk import Connection
    from airflow.secrets.metastore import MetastoreBackend

    try:
        stored = MetastoreBackend().get_connection(conn_id)
    except Exception as exc:
        stored, cause = None, type(exc).__name__
    else:
        cause = "not there"
    if stored is None:
        raise GipError(
            f"connection {conn_id!r} not found in the environment (AIRFLOW_CONN_{conn_id.upper()}), the "
            f"secrets backends or the Airflow metadata DB ({cause})"
        )
    conn = Connection(
        conn_id=conn_id,
        conn_type=stored.conn_type,
        description=stored.description,
        host=stored.host,
        schema=stored.schema,
        login=stored.login,
        password=stored.password,
        port=stored.port,
        extra=stored.extra,
    )
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = conn.as_json()


def migrate_auto_evaluations(args: argparse.Namespace) -> int:
    from gip_airflow.hooks.gip import GipHook

    try:
        options = MigrationOptions(
            output_format=args.output_format,
            spec_file=args.spec_file,
            dag_dir=args.dag_dir,
            dag_id_prefix=args.dag_id_prefix,
            gip_conn_id=args.dag_conn_id or args.conn_id,
            warehouse_conn_id=args.warehouse_conn_id,
            warehouse_table=args.warehouse_table,
            include_disabled=args.include_disabled,
            disable_in_gip=args.disable_in_gip,
            handover_margin=dt.timedelta(seconds=args.handover_margin),
            poll_interval=args.poll_interval,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.offline and args.disable_in_gip:
        print("error: --offline and --disable-in-gip exclude each other", file=sys.stderr)
        return 2
    hook = None if args.offline else GipHook(args.conn_id)
    try:
        if hook is not None:
            _load_connection(args.conn_id)
        if args.from_file:
            sources = read_from_file(args.from_file, hook)
            if args.experiment_id or args.auto_evaluation_id:
                sources = [
                    s
                    for s in sources
                    if (not args.experiment_id or s.experiment_id in args.experiment_id)
                    and (not args.auto_evaluation_id or s.auto_evaluation_id in args.auto_evaluation_id)
                ]
        elif hook is None:
            print("error: --offline needs --from-file (there is no GIP to read from)", file=sys.stderr)
            return 2
        else:
            sources = read_from_api(
                hook, experiment_ids=args.experiment_id, auto_evaluation_ids=args.auto_evaluation_id
            )
        result = run_migration(sources, options, hook=hook, dry_run=args.dry_run)
    except GipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if hook is not None:
            hook.close()
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gip-airflow`` console script."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "migrate-auto-evaluations":
        return migrate_auto_evaluations(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
