"""The docker/ deployment's topology as local processes, for tests: Airflow on the CeleryExecutor.

``docker/docker-compose.yaml`` runs PostgreSQL, Redis, ``api-server``, ``scheduler``,
``dag-processor``, ``triggerer`` and ``celery worker`` containers. No Docker engine runs on the
test machines, so :class:`AirflowTopology` starts the same Airflow services as separate local
processes, each in its own session (process group), against the local PostgreSQL and Redis:

* a fresh metadata database ``gip_af_<random>`` (cloned from a migrated template database that is
  built once per Airflow version, so a start does not pay the ~7 s ``airflow db migrate``),
  dropped on exit;
* a Redis database with a random key prefix (``global_keyprefix``), so topologies started by
  other tests on the same Redis never see each other's queues; its keys are deleted on exit;
* a temporary ``AIRFLOW_HOME`` (logs under ``AIRFLOW_HOME/logs``, one log per service under
  ``AIRFLOW_HOME/services``), loopback ports chosen free;
* ``[core] hostname_callable`` returns the service's name (``worker-1``, ``triggerer``...), so a
  task instance's ``hostname`` says which process ran it, as a container's host name would.

Usage (see ``tests/system/e2e/test_celery_topology.py``)::

    with AirflowTopology(dags_folder=..., extra_env={"AIRFLOW_CONN_GIP_DEFAULT": ...}) as topo:
        topo.wait_for_dags(["my_dag"])
        run = topo.trigger_dag("my_dag", logical_date="2026-01-01T00:00:00+00:00")
        observation = topo.wait_for_runs([("my_dag", run["dag_run_id"])], timeout=120)
        topo.task_instances("my_dag", run["dag_run_id"]); topo.task_log(...); topo.memory()

On exit every service gets SIGTERM to its process group, then whatever is left in its session
(task processes move to their own process group) gets SIGKILL; :meth:`AirflowTopology.stop`
raises if a process survives. Needs PostgreSQL on 127.0.0.1:5432 (trust, user ``postgres``) and
Redis on 127.0.0.1:6379; :func:`services_unavailable` says why not, for a clean skip (the
``local_services`` fixture of ``tests/system/e2e/conftest.py`` skips with it; ``e2e_report`` prints
measured numbers at the end of the run).
Environment: ``GIP_E2E_PG`` (libpq key/values of the admin connection), ``GIP_E2E_REDIS`` (host:port),
``GIP_E2E_NO_DB_TEMPLATE=1`` (always run ``airflow db migrate``), ``GIP_E2E_KEEP_HOME=1`` (keep
``AIRFLOW_HOME`` after stop, for debugging).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[3]
DEFAULT_DAGS_FOLDER = REPO / "dags"
PG_ADMIN_DSN = os.environ.get("GIP_E2E_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
REDIS_ADDR = os.environ.get("GIP_E2E_REDIS", "127.0.0.1:6379")
#: Advisory lock key that serialises template-database creation across concurrent test processes.
_TEMPLATE_LOCK_KEY = 0x6_1F_AF_7E
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class TopologyError(RuntimeError):
    """The topology could not start, a service died, or a process survived the stop."""


# ---------------------------------------------------------------------------------------------
# Local services: PostgreSQL and Redis
# ---------------------------------------------------------------------------------------------


def _pg_params() -> dict[str, str]:
    return dict(item.split("=", 1) for item in PG_ADMIN_DSN.split())


def _redis_host_port() -> tuple[str, int]:
    host, _, port = REDIS_ADDR.rpartition(":")
    return host, int(port)


def services_unavailable() -> str | None:
    """Return why the topology cannot run here (PostgreSQL or Redis unreachable), or None."""
    params = _pg_params()
    checks = {
        "PostgreSQL": (params.get("host", "127.0.0.1"), int(params.get("port", "5432"))),
        "Redis": _redis_host_port(),
    }
    for name, (host, port) in checks.items():
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            return f"{name} is not reachable on {host}:{port} ({exc})"
    return None


@contextlib.contextmanager
def _admin_connection() -> Iterator[Any]:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        yield conn


def _quote_ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"unsafe database name {name!r}")
    return f'"{name}"'


def create_database(name: str, template: str | None = None) -> None:
    """CREATE DATABASE ``name`` (optionally as a copy of ``template``)."""
    with _admin_connection() as conn:
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template:
            sql += f" TEMPLATE {_quote_ident(template)}"
        conn.execute(sql)


def drop_database(name: str) -> None:
    """DROP DATABASE ``name``, closing whatever sessions still use it."""
    with _admin_connection() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


@contextlib.contextmanager
def temporary_database(prefix: str = "gip_tmp") -> Iterator[str]:
    """A fresh, empty PostgreSQL database ``<prefix>_<random>``, dropped on exit; yields its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    create_database(name)
    try:
        yield name
    finally:
        drop_database(name)


def postgres_conn_json(dbname: str) -> str:
    """Airflow connection JSON (for ``AIRFLOW_CONN_<ID>``) of a database on the local PostgreSQL."""
    params = _pg_params()
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": params.get("host", "127.0.0.1"),
            "port": int(params.get("port", "5432")),
            "login": params.get("user", "postgres"),
            "schema": dbname,
        }
    )


def postgres_sqlalchemy_url(dbname: str, driver: str = "postgresql+psycopg2") -> str:
    params = _pg_params()
    user = params.get("user", "postgres")
    return f"{driver}://{user}@{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}/{dbname}"


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# The topology
# ---------------------------------------------------------------------------------------------


@dataclass
class Service:
    """One Airflow service process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class RunObservation:
    """What was seen while polling runs: state histories, who ran what, concurrency samples."""

    runs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: (dag_id, run_id, task_id, map_index) -> distinct consecutive states seen
    states: dict[tuple[str, str, str, int], list[str]] = field(default_factory=dict)
    #: same key -> host names of triggerer jobs seen holding the task's trigger
    triggerer_hosts: dict[tuple[str, str, str, int], set[str]] = field(default_factory=dict)
    #: (seconds since start, {state: count over all observed runs})
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    seconds: float = 0.0

    def deferred_tasks(self) -> set[tuple[str, str, str, int]]:
        """Task instances that were seen in state ``deferred``."""
        return {key for key, seen in self.states.items() if "deferred" in seen}

    def max_in_flight(self) -> int:
        """Largest number of task instances seen running or deferred at the same moment."""
        return max((c.get("running", 0) + c.get("deferred", 0) for _, c in self.samples), default=0)

    def max_state(self, state: str) -> int:
        return max((c.get(state, 0) for _, c in self.samples), default=0)


class AirflowTopology:
    """Airflow api-server, scheduler, dag-processor, triggerer and Celery worker(s) as local processes.

    :param dags_folder: the DAGs folder (default: the repo's ``dags/``).
    :param extra_env: extra environment for every service, e.g. ``AIRFLOW_CONN_GIP_DEFAULT``;
        applied last, so it may also override the topology's own ``AIRFLOW__*`` settings.
    :param workers: number of Celery worker processes (``worker-1`` ... ``worker-N``).
    :param worker_concurrency: task slots per worker (``[celery] worker_concurrency``).
    :param parallelism: ``[core] parallelism`` (task instances running at once, all workers).
    :param services: which services to start; drop ``"triggerer"`` to see deferral stall, say.
    :param startup_timeout: seconds to wait for every service to report healthy.
    :param serve_logs: start the worker/triggerer log servers (they bind all interfaces; off by
        default since every service here writes to the same ``AIRFLOW_HOME/logs``).
    """

    ALL_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", "worker")

    def __init__(
        self,
        dags_folder: str | os.PathLike[str] = DEFAULT_DAGS_FOLDER,
        *,
        extra_env: Mapping[str, str] | None = None,
        workers: int = 1,
        worker_concurrency: int = 2,
        parallelism: int = 4,
        services: Sequence[str] = ALL_SERVICES,
        startup_timeout: float = 120.0,
        use_db_template: bool | None = None,
        keep_home: bool | None = None,
        serve_logs: bool = False,
    ) -> None:
        unknown = set(services) - set(self.ALL_SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; choose from {self.ALL_SERVICES}")
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = dict(extra_env or {})
        self.workers = workers
        self.worker_concurrency = worker_concurrency
        self.parallelism = parallelism
        self.service_names = tuple(services)
        self.serve_logs = serve_logs
        self.startup_timeout = startup_timeout
        self.use_db_template = (
            os.environ.get("GIP_E2E_NO_DB_TEMPLATE") != "1" if use_db_template is None else use_db_template
        )
        self.keep_home = os.environ.get("GIP_E2E_KEEP_HOME") == "1" if keep_home is None else keep_home

        self.token = secrets.token_hex(4)
        self.db_name = f"gip_af_{self.token}"
        self.redis_db = secrets.randbelow(15) + 1
        self.redis_prefix = f"gip-e2e-{self.token}:"
        #: Created by :meth:`start`; removed by :meth:`stop` unless ``keep_home``.
        self.airflow_home = Path(tempfile.gettempdir()) / f"gip-topology-{self.token}"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.scheduler_health_port = free_port()
        self.services: dict[str, Service] = {}
        self.timings: dict[str, float] = {}
        self._db_created = False
        self._client: httpx.Client | None = None
        self.services_stopped_cleanly: bool | None = None
        self._stopped = False
        #: service -> seconds after the processes were started until it first reported healthy
        self.healthy_after: dict[str, float] = {}
        from cryptography.fernet import Fernet

        # Shared by every service (the execution API's tokens are signed with the JWT secret).
        self._secrets = {
            "fernet": Fernet.generate_key().decode(),
            "jwt": secrets.token_urlsafe(64),
            "api": secrets.token_urlsafe(32),
        }

    # -- configuration -------------------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        host, port = _redis_host_port()
        return f"redis://{host}:{port}/{self.redis_db}"

    def celery_node(self, worker: str) -> str:
        """Celery node name of a worker service (``worker-1`` -> ``celery@gip-<token>-worker-1``)."""
        return f"celery@gip-{self.token}-{worker}"

    def base_env(self) -> dict[str, str]:
        """Environment shared by every service (and by ``airflow db migrate``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # Tests trigger runs explicitly; the scheduler makes no cron runs of its own.
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.system.e2e.hostname.get_hostname",
                "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
                "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_sqlalchemy_url(self.db_name),
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres_sqlalchemy_url(self.db_name),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.redis_prefix,
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.scheduler_health_port),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _service_specs(self, env: Mapping[str, str]) -> list[Service]:
        airflow = [sys.executable, "-m", "airflow"]
        logs = self.airflow_home / "services"
        specs: list[Service] = []
        for name in self.service_names:
            if name == "worker":
                for i in range(1, self.workers + 1):
                    wname = f"worker-{i}"
                    wenv = {
                        **env,
                        "GIP_TOPOLOGY_HOSTNAME": wname,
                        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                    }
                    argv = [
                        *airflow,
                        "celery",
                        "worker",
                        "--celery-hostname",
                        self.celery_node(wname),
                        "--concurrency",
                        str(self.worker_concurrency),
                        "--pid",
                        str(self.airflow_home / f"{wname}.pid"),
                        *self._skip_serve_logs(),
                    ]
                    specs.append(Service(wname, argv, wenv, logs / f"{wname}.log"))
                continue
            argv = {
                "api-server": [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
                "scheduler": [*airflow, "scheduler"],
                "dag-processor": [*airflow, "dag-processor"],
                "triggerer": [*airflow, "triggerer", *self._skip_serve_logs()],
            }[name]
            senv = {**env, "GIP_TOPOLOGY_HOSTNAME": name}
            if name == "triggerer":
                senv["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
            specs.append(Service(name, argv, senv, logs / f"{name}.log"))
        return specs

    def _skip_serve_logs(self) -> list[str]:
        # The log servers bind every interface; every service here shares AIRFLOW_HOME/logs anyway.
        return [] if self.serve_logs else ["--skip-serve-logs"]

    # -- start / stop --------------------------------------------------------------------------

    def __enter__(self) -> AirflowTopology:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Create the metadata DB, start every service, wait until all report healthy."""
        t0 = time.monotonic()
        try:
            self.airflow_home.mkdir(mode=0o700)
            env = self.base_env()
            # An airflow.cfg that exists keeps the services from racing to write a default one.
            (self.airflow_home / "airflow.cfg").write_text("# settings come from AIRFLOW__* variables\n")
            self._create_metadata_db(env)
            self.timings["metadata_db_seconds"] = time.monotonic() - t0
            (self.airflow_home / "services").mkdir()
            t1 = time.monotonic()
            for spec in self._service_specs(env):
                log = spec.log_path.open("wb")
                spec.process = subprocess.Popen(
                    spec.argv,
                    env=spec.env,
                    cwd=self.airflow_home,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                log.close()
                self.services[spec.name] = spec
            self._wait_healthy(deadline=t1 + self.startup_timeout)
            self.timings["processes_to_healthy_seconds"] = time.monotonic() - t1
            self.timings["startup_seconds"] = time.monotonic() - t0
        except BaseException:
            self.stop(check=False)
            raise

    def _create_metadata_db(self, env: Mapping[str, str]) -> None:
        if not self.use_db_template:
            create_database(self.db_name)
            self._db_created = True
            self._migrate(env, self.db_name)
            return
        version = importlib.metadata.version("apache-airflow-core")
        template = "gip_af_tpl_" + re.sub(r"[^a-z0-9]", "_", version.lower())
        with _admin_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_TEMPLATE_LOCK_KEY,))
            try:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (template,)).fetchone()
                if not exists:
                    # Build under a temporary name and rename when complete: a half-migrated
                    # template is never visible under the final name.
                    building = f"{template}_b{self.token}"
                    conn.execute(f"CREATE DATABASE {_quote_ident(building)}")
                    try:
                        self._migrate(env, building)
                    except BaseException:
                        conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(building)} WITH (FORCE)")
                        raise
                    rename = f"ALTER DATABASE {_quote_ident(building)} RENAME TO {_quote_ident(template)}"
                    conn.execute(rename)
                create_database(self.db_name, template=template)
                self._db_created = True
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_TEMPLATE_LOCK_KEY,))

    def _migrate(self, env: Mapping[str, str], dbname: str) -> None:
        menv = {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_sqlalchemy_url(dbname)}
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=menv,
            cwd=self.airflow_home,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise TopologyError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def stop(self, *, check: bool = True, grace: float = 20.0) -> None:
        """Stop every service: SIGTERM its process group, then SIGKILL what is left in its session.

        With ``check`` raise :class:`TopologyError` if any process survives. Then drop the
        metadata database, delete the Redis keys and (unless ``keep_home``) ``AIRFLOW_HOME``.
        Calling it again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._client is not None:
            self._client.close()
            self._client = None
        started = [s for s in self.services.values() if s.process is not None]
        for svc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for svc in started:
            assert svc.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Task processes put themselves into their own process group, but stay in the session.
        while time.monotonic() < deadline and self.session_processes():
            time.sleep(0.2)
        for proc in self.session_processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for svc in started:
            assert svc.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.process.wait(timeout=5)
        survivors = self.session_processes()
        if survivors:
            psutil.wait_procs(survivors, timeout=5)
            survivors = [p for p in survivors if p.is_running()]
        self.services_stopped_cleanly = not survivors

        if self._db_created:
            drop_database(self.db_name)
            self._db_created = False
        self._delete_redis_keys()
        if not self.keep_home:
            shutil.rmtree(self.airflow_home, ignore_errors=True)
        if check and survivors:
            raise TopologyError(f"processes survived the stop: {[p.pid for p in survivors]}")

    def _delete_redis_keys(self) -> None:
        import redis

        host, port = _redis_host_port()
        with contextlib.suppress(redis.RedisError), redis.Redis(host=host, port=port, db=self.redis_db) as r:
            keys = list(r.scan_iter(match=f"{self.redis_prefix}*", count=500))
            if keys:
                r.delete(*keys)

    # -- processes -----------------------------------------------------------------------------

    def session_processes(self) -> list[psutil.Process]:
        """Every live process in the services' sessions (services, their children, task processes)."""
        sessions = {s.pid: s.name for s in self.services.values() if s.process is not None}
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return found

    def service_of(self, proc: psutil.Process) -> str | None:
        sessions = {s.pid: s.name for s in self.services.values() if s.process is not None}
        try:
            return sessions.get(os.getsid(proc.pid))
        except (ProcessLookupError, PermissionError):
            return None

    def memory(self) -> dict[str, Any]:
        """RSS and PSS (bytes) of every process of the topology, per service and in total."""
        per: dict[str, dict[str, int]] = {}
        for proc in self.session_processes():
            name = self.service_of(proc)
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            bucket = per.setdefault(name or "?", {"processes": 0, "rss": 0, "pss": 0})
            bucket["processes"] += 1
            bucket["rss"] += info.rss
            bucket["pss"] += getattr(info, "pss", 0)
        total = {k: sum(b[k] for b in per.values()) for k in ("processes", "rss", "pss")}
        return {"services": per, "total": total}

    def assert_running(self) -> None:
        for svc in self.services.values():
            if svc.process is not None and svc.process.poll() is not None:
                raise TopologyError(
                    f"{svc.name} exited with {svc.process.returncode}; last lines of "
                    f"{svc.log_path}:\n{svc.log_tail()}"
                )

    def service_log(self, name: str) -> str:
        return self.services[name].log_path.read_text(errors="replace")

    _WORKLOAD_RE = re.compile(r"Executing workload in Celery: .*?TaskInstanceDTO\(id=UUID\('([0-9a-f-]+)'\)")

    def celery_workloads(self) -> list[tuple[str, str]]:
        """``(worker service, task-instance id)`` for every task a Celery worker started, in order.

        Read from the workers' own logs (the Celery provider logs "Executing workload in Celery"
        with the task instance it got from the broker), so this is the worker's word, not the
        scheduler's. A deferred task that resumes shows up twice.
        """
        found = []
        for name, svc in self.services.items():
            if name.startswith("worker-"):
                found += [(name, m) for m in self._WORKLOAD_RE.findall(self.service_log(name))]
        return found

    # -- health --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` of the API server."""
        return self.api("GET", "/api/v2/monitor/health")

    def celery_ping(self, timeout: float = 1.0) -> set[str]:
        """Celery node names of the workers that answered a broadcast ping."""
        import celery

        app = celery.Celery(
            broker=self.broker_url,
            broker_transport_options={"global_keyprefix": self.redis_prefix},
        )
        try:
            replies = app.control.ping(timeout=timeout) or []
        finally:
            app.close()
        return {node for reply in replies for node in reply}

    def _wait_healthy(self, deadline: float) -> None:
        t0 = time.monotonic()
        while True:
            self.assert_running()
            status = self._health_status()
            for key, ok in status.items():
                if ok and key not in self.healthy_after:
                    self.healthy_after[key] = round(time.monotonic() - t0, 2)
            pending = sorted(k for k, ok in status.items() if not ok)
            if not pending:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {s.name}\n{s.log_tail(15)}" for s in self.services.values())
                raise TopologyError(f"not healthy within {self.startup_timeout:.0f} s: {pending}\n{tails}")
            time.sleep(0.5)

    def _health_status(self) -> dict[str, bool]:
        """Service name -> healthy, for every started service (and the metadata DB)."""
        status: dict[str, bool] = {}
        names = self.service_names
        if "api-server" in names:
            try:
                health: dict[str, Any] = self.health()
            except (httpx.HTTPError, TopologyError):
                health = {}
            status["api-server"] = bool(health)
            status["metadatabase"] = (health.get("metadatabase") or {}).get("status") == "healthy"
            for component, service in (
                ("scheduler", "scheduler"),
                ("triggerer", "triggerer"),
                ("dag_processor", "dag-processor"),
            ):
                if service in names:  # heartbeat seen by the API server
                    status[service] = (health.get(component) or {}).get("status") == "healthy"
        if "scheduler" in names:
            try:
                url = f"http://127.0.0.1:{self.scheduler_health_port}/health"
                httpx.get(url, timeout=2).raise_for_status()
            except httpx.HTTPError:
                status["scheduler"] = False
            else:
                status.setdefault("scheduler", True)
        workers = [n for n in self.services if n.startswith("worker-")]
        if workers:
            answered = self.celery_ping()
            status.update({w: self.celery_node(w) in answered for w in workers})
        return status

    # -- REST helpers --------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.api_url, timeout=15)
        return self._client

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the Airflow REST API; raise :class:`TopologyError` with the body on an error status.

        A GET that times out is sent again (twice at most): on a slow 2-core machine busy with a
        20,000-row COPY and killed task processes the API server once took over 15 s to answer.
        """
        for attempt in range(3):
            try:
                resp = self.client.request(method, path, **kwargs)
                break
            except httpx.TimeoutException:
                if method != "GET" or attempt == 2:
                    raise
        if resp.status_code >= 400:
            raise TopologyError(f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def import_errors(self) -> list[dict[str, Any]]:
        return self.api("GET", "/api/v2/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until the dag-processor has parsed these DAGs.

        Fails at once when a file named after a missing DAG has an import error; otherwise at the
        timeout, listing every import error.
        """
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            found = {d for d in wanted if self.client.get(f"/api/v2/dags/{d}").status_code == 200}
            if found == wanted:
                return
            errors = self.import_errors()
            own = [e for e in errors if any(d in e["filename"] for d in wanted - found)]
            if own or time.monotonic() > deadline:
                detail = "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}" for e in own or errors)
                raise TopologyError(f"DAGs {sorted(wanted - found)} not loaded. Import errors:\n{detail}")
            time.sleep(0.5)

    def trigger_dag(
        self,
        dag_id: str,
        logical_date: str | None = None,
        *,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST /api/v2/dags/{dag_id}/dagRuns``; ``logical_date``: ISO-8601, or None (a manual run)."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (state, hostname, pid, queue, executor, trigger, try_number...).

        The REST API answers 50 per page by default (100 at most), so this pages.
        """
        path, tis = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", []
        while True:
            page = self.api("GET", path, params={"limit": 100, "offset": len(tis)})
            tis += page["task_instances"]
            if not page["task_instances"] or len(tis) >= (page.get("total_entries") or len(tis)):
                return tis

    def jobs(self, job_type: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/v2/jobs`` (SchedulerJob, TriggererJob, DagProcessorJob), with their host names."""
        params = {"job_type": job_type} if job_type else {}
        return self.api("GET", "/api/v2/jobs", params=params)["jobs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until one run is finished; return it (``state`` is ``success`` or ``failed``)."""
        return self.wait_for_runs([(dag_id, run_id)], timeout=timeout).runs[(dag_id, run_id)]

    def wait_for_runs(
        self,
        runs: Sequence[tuple[str, str]],
        timeout: float = 120.0,
        poll_interval: float = 0.5,
        on_poll: Callable[[RunObservation], None] | None = None,
    ) -> RunObservation:
        """Poll runs until all are finished, recording every task-state change on the way.

        Raises :class:`TopologyError` on timeout (with the task states seen) or if a service dies.
        """
        obs = RunObservation()
        start = time.monotonic()
        triggerer_hosts: dict[int, str] = {}
        while True:
            self.assert_running()
            counts: dict[str, int] = {}
            for dag_id, run_id in runs:
                obs.runs[(dag_id, run_id)] = self.dag_run(dag_id, run_id)
                for ti in self.task_instances(dag_id, run_id):
                    key = (dag_id, run_id, ti["task_id"], ti["map_index"])
                    state = ti["state"] or "none"
                    seen = obs.states.setdefault(key, [])
                    if not seen or seen[-1] != state:
                        seen.append(state)
                    counts[state] = counts.get(state, 0) + 1
                    trigger = ti.get("trigger") or {}
                    triggerer_id = trigger.get("triggerer_id")
                    if triggerer_id is not None:
                        if triggerer_id not in triggerer_hosts:
                            triggerer_hosts = {j["id"]: j["hostname"] for j in self.jobs("TriggererJob")}
                        host = triggerer_hosts.get(triggerer_id, f"job {triggerer_id}")
                        obs.triggerer_hosts.setdefault(key, set()).add(host)
            obs.samples.append((time.monotonic() - start, counts))
            if on_poll is not None:
                on_poll(obs)
            if all(r.get("state") in TERMINAL_RUN_STATES for r in obs.runs.values()):
                obs.seconds = time.monotonic() - start
                return obs
            if time.monotonic() - start > timeout:
                raise TopologyError(f"runs not finished within {timeout:.0f} s; task states: {obs.states}")
            time.sleep(poll_interval)

    # -- logs ----------------------------------------------------------------------------------

    def task_log_files(
        self, dag_id: str, run_id: str, task_id: str, *, try_number: int | None = None, map_index: int = -1
    ) -> list[Path]:
        """Log files of a task under ``AIRFLOW_HOME/logs`` (worker attempts and triggerer parts)."""
        base = self.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            base = base / f"map_index={map_index}"
        attempt = "*" if try_number is None else str(try_number)
        pattern = os.path.join(glob.escape(str(base)), f"attempt={attempt}.log*")
        return sorted(Path(p) for p in glob.glob(pattern))

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, *, try_number: int | None = None, map_index: int = -1
    ) -> str:
        """The text of a task's log files (all attempts unless ``try_number``), read from disk."""
        files = self.task_log_files(dag_id, run_id, task_id, try_number=try_number, map_index=map_index)
        return "\n".join(p.read_text(errors="replace") for p in files)

    def task_summary(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Per task instance: state, host and executor that ran it, queue, try, and whether it deferred.

        ``deferred`` is read from the logs (the worker's "Pausing task as DEFERRED" and the
        triggerer's own log part), so it holds after the run, unlike the ``deferred`` state.
        ``executor`` is the task's own executor, or the topology's (CeleryExecutor) when unset.
        """
        summary = []
        for ti in self.task_instances(dag_id, run_id):
            args = (dag_id, run_id, ti["task_id"])
            files = self.task_log_files(*args, map_index=ti["map_index"])
            summary.append(
                {
                    "task_id": ti["task_id"],
                    "map_index": ti["map_index"],
                    "state": ti["state"],
                    "hostname": ti["hostname"],
                    "executor": ti["executor"] or "CeleryExecutor",
                    "queue": ti["queue"],
                    "try_number": ti["try_number"],
                    "deferred": any(".trigger." in f.name for f in files)
                    or "Pausing task as DEFERRED" in self.task_log(*args, map_index=ti["map_index"]),
                }
            )
        return summary


@contextlib.contextmanager
def airflow_topology(**kwargs: Any) -> Iterator[AirflowTopology]:
    """``with airflow_topology(dags_folder=..., extra_env=...) as topo:`` — see :class:`AirflowTopology`."""
    with AirflowTopology(**kwargs) as topo:
        yield topo
