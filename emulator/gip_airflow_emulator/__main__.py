"""``gip-emulator`` / ``python -m gip_airflow_emulator``: serve the emulator with uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gip_airflow_emulator import defaults

if TYPE_CHECKING:
    from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gip-emulator",
        description="Local emulator of the GIP evaluation API, its Cognito login and "
        "the Langfuse API subset.",
    )
    p.add_argument(
        "--host", default=defaults.DEFAULT_HOST, help="interface to listen on (default %(default)s)"
    )
    p.add_argument(
        "--port", type=int, default=defaults.DEFAULT_PORT, help="0 picks a free port (default %(default)s)"
    )
    p.add_argument("--port-file", type=Path, help="write the port actually bound to this file once listening")
    p.add_argument("--seed", type=Path, help="seed JSON file (default: the built-in 14-day seed)")
    p.add_argument("--dump-seed", action="store_true", help="print the default seed JSON and exit")
    p.add_argument("--data-dir", type=Path, help="where result CSVs are written (default: a temp dir)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request (off: it is loud)")

    ident = p.add_argument_group("identities")
    ident.add_argument("--workspace-id", default=defaults.DEFAULT_WORKSPACE_ID)
    ident.add_argument("--api-key", default=defaults.DEFAULT_API_KEY, help="value of X-Gipc-Api-Key")
    ident.add_argument("--username", default=defaults.DEFAULT_USERNAME, help="Cognito user")
    ident.add_argument("--password", default=defaults.DEFAULT_PASSWORD, help="Cognito password")
    ident.add_argument("--cognito-client-id", default=defaults.DEFAULT_COGNITO_CLIENT_ID)
    ident.add_argument(
        "--token-seconds", type=int, default=defaults.DEFAULT_TOKEN_SECONDS, help="IdToken lifetime"
    )
    ident.add_argument("--langfuse-public-key", default=defaults.DEFAULT_LANGFUSE_PUBLIC_KEY)
    ident.add_argument("--langfuse-secret-key", default=defaults.DEFAULT_LANGFUSE_SECRET_KEY)

    runs = p.add_argument_group("runs")
    runs.add_argument("--run-seconds", type=float, default=defaults.DEFAULT_RUN_SECONDS, help="time per run")
    runs.add_argument("--items-per-second", type=float, default=0.0, help="extra time per item (0 = none)")
    runs.add_argument("--never-finish", action="store_true", help="runs never reach a final status")

    faults = p.add_argument_group("faults (all off by default; rates are 0..1)")
    faults.add_argument("--fault-error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    faults.add_argument(
        "--fault-error-statuses",
        default="500,502,503",
        help="comma-separated 5xx codes (default %(default)s)",
    )
    faults.add_argument("--fault-rate-limit-rate", type=float, default=0.0, help="share answered 429")
    faults.add_argument("--fault-retry-after", type=int, default=1, help="Retry-After seconds of a 429")
    faults.add_argument("--fault-latency-ms", type=float, default=0.0, help="delay added to each request")
    faults.add_argument(
        "--fault-drop-rate", type=float, default=0.0, help="share of connections cut mid-body"
    )
    faults.add_argument(
        "--fault-drop-after-bytes", type=int, default=1024, help="body bytes sent before a cut"
    )
    faults.add_argument("--fault-path-pattern", default=r"^/api/workspaces/", help="regex of faulted paths")
    faults.add_argument("--fault-max", type=int, default=None, help="stop injecting after this many faults")
    faults.add_argument(
        "--fault-run-failure-rate", type=float, default=0.0, help="share of runs ending FAILED"
    )
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the fault generator")
    return p


def _settings_input(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as :class:`~gip_airflow_emulator.settings.EmulatorSettings` input."""
    return {
        "host": args.host,
        "port": args.port,
        "workspace_id": args.workspace_id,
        "api_key": args.api_key,
        "username": args.username,
        "password": args.password,
        "cognito_client_id": args.cognito_client_id,
        "langfuse_public_key": args.langfuse_public_key,
        "langfuse_secret_key": args.langfuse_secret_key,
        "seed_path": args.seed,
        "data_dir": args.data_dir,
        "auth": {"token_seconds": args.token_seconds},
        "runs": {
            "run_seconds": args.run_seconds,
            "items_per_second": args.items_per_second,
            "never_finish": args.never_finish,
        },
        "faults": {
            "error_rate": args.fault_error_rate,
            "error_statuses": [s.strip() for s in args.fault_error_statuses.split(",") if s.strip()],
            "rate_limit_rate": args.fault_rate_limit_rate,
            "retry_after": args.fault_retry_after,
            "latency_ms": args.fault_latency_ms,
            "drop_rate": args.fault_drop_rate,
            "drop_after_bytes": args.fault_drop_after_bytes,
            "path_pattern": args.fault_path_pattern,
            "max_faults": args.fault_max,
            "run_failure_rate": args.fault_run_failure_rate,
            "seed": args.fault_seed,
        },
    }


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = any free port), bound before uvicorn starts so the port is known."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        sys.exit(f"gip-emulator: cannot listen on {host}:{port}: {exc}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, bind the socket, serve until interrupted."""
    args = build_parser().parse_args(argv)
    if args.dump_seed:
        from gip_airflow_emulator.seed import dumps_default_seed

        sys.stdout.write(dumps_default_seed())
        return

    from pydantic import ValidationError

    from gip_airflow.api import format_validation_error
    from gip_airflow_emulator.seed import SeedError, load_seed
    from gip_airflow_emulator.settings import EmulatorSettings
    from gip_airflow_emulator.state import now_ms

    try:
        settings = EmulatorSettings.model_validate(_settings_input(args))
        seed = load_seed(settings.seed_path, now_ms())  # bad input fails before binding and heavy imports
    except ValidationError as exc:
        sys.exit("gip-emulator: " + format_validation_error(exc, "option"))
    except SeedError as exc:
        sys.exit(f"gip-emulator: {exc}")
    sock = _listen(args.host, args.port)
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"port": port})

    import uvicorn

    from gip_airflow_emulator.app import create_app

    app = create_app(settings, seed)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    default_key = args.api_key == defaults.DEFAULT_API_KEY
    key_note = f"{args.api_key} (the default)" if default_key else "*** (custom, not shown)"
    print(
        f"GIP emulator on {settings.base_url}  workspace {settings.workspace_id}  "
        f"X-Gipc-Api-Key: {key_note}  "
        f"Cognito: {settings.base_url}{defaults.COGNITO_PATH}  Langfuse: {settings.base_url}/api/public",
        flush=True,
    )
    if args.port_file:
        args.port_file.write_text(str(port))
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=2,
        # Idle connections stay open longer than clients keep them (httpx: 5 s), as behind a load balancer
        # (AWS ALB: 60 s). With uvicorn's default of 5 s, a busy emulator closed connections that a client
        # had just reused: "Server disconnected without sending a response" (2,262 times in one run of 500
        # trigger waits).
        timeout_keep_alive=60,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
