"""Run the docker-compose topology as plain local processes, for integration tests.

The same components as ``docker-compose.yml`` (Airflow api-server, scheduler,
dag-processor, triggerer, Celery workers; an MLflow tracking server), started
from this checkout's virtual environment against a real PostgreSQL and Redis:

- every database is created fresh under a unique name and dropped again;
- every port is chosen free at run time, so two runs never clash;
- every server runs in its own process group (a new session) with its output in
  a log file, so stopping it reaches all of its children, and a kill can take a
  whole worker down the way a crashed container would.

Nothing here imports airflow or mlflow: the test process only talks to the
stack through its HTTP APIs, the way a user would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Console scripts of the environment running the tests (airflow, mlflow).
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

#: Prefixes of variables that must not leak from the test process into the stack
#: (tests/conftest.py points them at throw-away SQLite stores).
PRIVATE_ENV_PREFIXES = ("AIRFLOW", "MLFLOW_", "RECSYS_")

#: States after which a DAG run or a task instance changes no more.
FINISHED_RUN_STATES = {"success", "failed"}
# The api-server answers in well under a second when the machine is idle, but
# a loaded 2-core machine (the scheduler, workers and a test run side by side)
# can keep a request waiting for a minute; waiting costs nothing when it is fast.
API_TIMEOUT = 120


class StackError(RuntimeError):
    """A component did not start, died, or did not reach the awaited state in time."""


# ----------------------------------------------------------------- small tools
def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 1.0,
    services: tuple[Service, ...] = (),
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Args:
        check: returns the awaited value, or ``None``/falsy to keep waiting.
        timeout: seconds before giving up.
        what: what is awaited, for the error message.
        interval: seconds between calls.
        services: processes that must stay alive meanwhile; one that exits
            ends the wait at once with its log tail.

    Raises:
        StackError: on timeout, or when a watched service died.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for service in services:
            if not service.alive():
                raise StackError(
                    f"{service.name} exited (code {service.returncode()}) "
                    f"while waiting for {what}:\n{service.log_tail()}"
                )
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200 (any connection error counts as not yet)."""
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def base_env() -> dict[str, str]:
    """This process's environment minus every Airflow, MLflow and recsys setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV_PREFIXES)}


# ------------------------------------------------------------------- processes
@dataclass
class Service:
    """One long-running server process, in its own process group, logging to a file.

    Attributes:
        name: label used in logs and errors (``scheduler``, ``worker-1``...).
        argv: the command line.
        env: its complete environment.
        log_path: file receiving its stdout and stderr.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    killed: bool = False

    def start(self) -> Service:
        """Start the process in a new session (so its group id is its pid)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,
            )
        log.info("started %s (pid %s): %s", self.name, self.process.pid, " ".join(self.argv))
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        """Exit code, or ``None`` while running or never started."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log file (empty if none yet)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def tree(self) -> list[psutil.Process]:
        """The process and every descendant, whatever process group it moved to."""
        if not self.alive():
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the whole tree at once, like a machine or container dying.

        The group is killed first, then any descendant that lives in a group of
        its own (Airflow runs each task in a new process group).
        """
        if self.process is None:
            return
        members = self.tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for member in members:
            with contextlib.suppress(psutil.Error):
                member.kill()
        self.process.wait(timeout=30)
        psutil.wait_procs(members, timeout=10)
        log.info("killed %s and %d descendants", self.name, len(members) - 1)

    def terminate(self) -> list[psutil.Process]:
        """SIGTERM the process group; returns the process tree as it was just before."""
        if self.process is None:
            return []
        members = self.tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        return members

    def reap(self, members: list[psutil.Process], grace: float) -> None:
        """Wait up to ``grace`` seconds for the process, then SIGKILL whatever of
        ``members`` (and the group) is left, so nothing outlives the test."""
        if self.process is None:
            return
        grace = max(grace, 0.1)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("%s still running %.1fs after SIGTERM; killing it", self.name, grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        _, survivors = psutil.wait_procs(members, timeout=1)
        for member in survivors:
            with contextlib.suppress(psutil.Error):
                member.kill()
        psutil.wait_procs(survivors, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left."""
        self.reap(self.terminate(), grace)


def run_command(argv: list[str], env: dict[str, str], log_path: Path, *, timeout: float) -> None:
    """Run a one-shot command to completion, its output appended to ``log_path``.

    Raises:
        StackError: when it fails or outlives ``timeout``, with its log tail.
    """
    with open(log_path, "ab") as out:
        try:
            done = subprocess.run(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{' '.join(argv)} ran past {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise StackError(f"{' '.join(argv)} failed with code {done.returncode}:\n{tail}")


# ------------------------------------------------------ PostgreSQL and Redis
def postgres_url(database: str, driver: str = "psycopg2") -> str:
    """SQLAlchemy URL of ``database`` on the local server (trust auth)."""
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _admin_execute(statement: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextlib.contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """Create an empty database named ``<prefix>_<random hex>``; drop it on exit.

    The drop uses ``WITH (FORCE)``, so connections a dead process left behind do
    not keep it alive.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def temporary_redis_db() -> Iterator[int]:
    """Claim an empty Redis database number (1-15) and flush it on exit."""
    import redis

    start = secrets.randbelow(15)
    for offset in range(15):
        number = 1 + (start + offset) % 15
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        if client.dbsize() == 0:
            break
    else:
        raise StackError("every Redis database 1-15 holds keys; none is free for the broker")
    try:
        yield number
    finally:
        client.flushdb()
        client.close()


# ----------------------------------------------------------------- the stack
@dataclass
class StackConfig:
    """Where the stack lives and which stores it uses; the same knobs as the compose file.

    Attributes:
        root: scratch folder holding Airflow's home, logs, data and artifacts.
        airflow_db: name of the (empty) Airflow metadata database.
        mlflow_db: name of the (empty) MLflow backend database.
        redis_db: Redis database number of the Celery broker.
        dags_folder: folder the dag-processor parses.
        extra_env: more variables for every component (the recsys settings).
    """

    root: Path
    airflow_db: str
    mlflow_db: str
    redis_db: int
    dags_folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)
    worker_log_port: int = field(default_factory=free_port)
    triggerer_log_port: int = field(default_factory=free_port)
    username: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def airflow_env(cfg: StackConfig) -> dict[str, str]:
    """The environment every Airflow component shares (one JWT secret, one API URL)."""
    home = cfg.root / "airflow"
    db = postgres_url(cfg.airflow_db)
    settings = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.api_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{cfg.username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{cfg.redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(cfg.api_port),
        "AIRFLOW__API__BASE_URL": cfg.api_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": cfg.jwt_secret,
        "AIRFLOW__API_AUTH__JWT_SECRET": cfg.jwt_secret,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.logs / "airflow-tasks"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.triggerer_log_port),
        # A dead worker's task is noticed in seconds rather than the default 5 minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "MLFLOW_TRACKING_URI": cfg.mlflow_url,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return {**base_env(), **settings, **cfg.extra_env}


class ProductionStack:
    """Start, watch and stop the whole topology; every started service is remembered.

    Use as a context manager (or call :meth:`stop` in a ``finally``): leaving it
    stops every service, newest first, whatever happened.
    """

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.env = airflow_env(cfg)
        self.services: list[Service] = []
        self._workers = 0

    def __enter__(self) -> ProductionStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ lifecycle
    def prepare_airflow_home(self) -> None:
        """Write the admin password file so the API has a known login."""
        home = Path(self.env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        password_file = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        password_file.write_text(f'{{"{self.cfg.username}": "{self.cfg.password}"}}\n')

    def migrate(self, timeout: float = 180) -> None:
        """``airflow db migrate`` on the fresh Postgres database."""
        self.prepare_airflow_home()
        run_command(
            [str(BIN / "airflow"), "db", "migrate"],
            self.env,
            self.cfg.logs / "airflow-migrate.log",
            timeout=timeout,
        )

    def start_service(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Service:
        """Start one server and remember it for :meth:`stop`."""
        service = Service(name, argv, env or self.env, self.cfg.logs / f"{name}.log")
        self.services.append(service)
        return service.start()

    def start_mlflow(self) -> Service:
        """``mlflow server`` on the Postgres backend, proxying artifacts to a local folder."""
        artifacts = self.cfg.root / "mlflow-artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return self.start_service(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                postgres_url(self.cfg.mlflow_db),
                "--serve-artifacts",
                "--artifacts-destination",
                artifacts.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.cfg.mlflow_port),
                "--workers",
                "1",
            ],
        )

    def start_airflow(self) -> None:
        """The api-server, scheduler, dag-processor and triggerer."""
        airflow = str(BIN / "airflow")
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self.start_service(name, [airflow, name])

    def start_worker(self) -> Service:
        """One more Celery worker with a unique host name and pid file."""
        self._workers += 1
        name = f"worker-{self._workers}"
        home = Path(self.env["AIRFLOW_HOME"])
        return self.start_service(
            name,
            [
                str(BIN / "airflow"),
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--pid",
                str(home / f"{name}.pid"),
                "--without-gossip",
                "--without-mingle",
            ],
        )

    def service(self, name: str) -> Service:
        """The most recently started service called ``name``."""
        return next(s for s in reversed(self.services) if s.name == name)

    def running(self) -> tuple[Service, ...]:
        """Services that must stay up (excludes ones killed on purpose)."""
        return tuple(s for s in self.services if not s.killed)

    def kill(self, name: str) -> None:
        """SIGKILL a service's whole process tree and stop watching it."""
        service = self.service(name)
        service.kill()
        service.killed = True

    def stop(self, grace: float = 10.0) -> None:
        """Stop every service: all get SIGTERM at once (newest first), then up to
        ``grace`` seconds in all before SIGKILL. Never raises."""
        trees = []
        for service in reversed(self.services):
            try:
                trees.append((service, service.terminate()))
            except Exception:  # noqa: BLE001 - teardown must reach every service
                log.exception("could not signal %s", service.name)
        deadline = time.monotonic() + grace
        for service, members in trees:
            try:
                service.reap(members, deadline - time.monotonic())
            except Exception:  # noqa: BLE001
                log.exception("could not stop %s", service.name)

    # -------------------------------------------------------------- waiting
    def wait_healthy(self, timeout: float = 120) -> None:
        """Until MLflow and the Airflow API answer and the scheduler, dag-processor
        and triggerer report healthy heartbeats."""
        wait_until(
            lambda: http_ok(f"{self.cfg.mlflow_url}/health"),
            timeout=timeout,
            what="the MLflow server",
            services=self.running(),
        )
        wait_until(
            self._airflow_healthy,
            timeout=timeout,
            what="Airflow's components",
            services=self.running(),
        )

    def _airflow_healthy(self) -> bool:
        try:
            health = requests.get(f"{self.cfg.api_url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return False
        if health.status_code != 200:
            return False
        body = health.json()
        wanted = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all((body.get(part) or {}).get("status") == "healthy" for part in wanted)

    def logs_summary(self, lines: int = 30) -> str:
        """The tail of every service's log, for a failure message."""
        return "\n".join(f"----- {s.name} -----\n{s.log_tail(lines)}" for s in self.services)


# --------------------------------------------------------------- Airflow REST
class AirflowAPI:
    """A small client of Airflow's public REST API (v2) with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.session = requests.Session()

    def login(self) -> None:
        """Exchange the user's password for a bearer token."""
        reply = self.session.post(
            f"{self.base_url}/auth/token",
            timeout=API_TIMEOUT,
            json={"username": self.username, "password": self.password},
        )
        if reply.status_code not in (200, 201):
            raise StackError(f"login failed: {reply.status_code} {reply.text}")
        token = reply.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Drop the kept-alive connection (a server waits for it when shutting down)."""
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2/<path>``; a non-2xx answer raises with the server's message."""
        reply = self.session.request(
            method, f"{self.base_url}/api/v2/{path.lstrip('/')}", timeout=API_TIMEOUT, **kwargs
        )
        if reply.status_code >= 300:
            raise StackError(f"{method} {path}: {reply.status_code} {reply.text}")
        return reply.json() if reply.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def dag(self, dag_id: str) -> dict | None:
        """The DAG's record, or ``None`` until the dag-processor has stored it."""
        try:
            return self.get(f"dags/{dag_id}")
        except StackError:
            return None

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        return self.request("PATCH", f"dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None) -> dict:
        """Start a manual run now; returns the new DAG run."""
        body = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"dags/{dag_id}/dagRuns", json=body)

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.get(f"dags/{dag_id}/dagRuns", limit=100)["dag_runs"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)[
            "task_instances"
        ]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` of one run."""
        return {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}

    def wait_for_run(
        self, dag_id: str, run_id: str, *, timeout: float, services: tuple[Service, ...] = ()
    ) -> dict:
        """Until the run finishes; returns it, or raises with its task states if it failed."""

        def finished() -> dict | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in FINISHED_RUN_STATES else None

        try:
            run = wait_until(
                finished,
                timeout=timeout,
                interval=2,
                services=services,
                what=f"run {run_id} of {dag_id} to finish",
            )
        except StackError as exc:
            raise StackError(f"{exc}\ntask states: {self.task_states(dag_id, run_id)}") from exc
        if run["state"] != "success":
            raise StackError(
                f"run {run_id} ended {run['state']}; "
                f"task states: {self.task_states(dag_id, run_id)}"
            )
        return run


def copy_dag(source: Path, dags_folder: Path) -> Path:
    """Copy one DAG file into a folder of its own (the stack parses only that)."""
    dags_folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(source, dags_folder / source.name))
