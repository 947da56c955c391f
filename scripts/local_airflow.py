"""Run a whole local Airflow, plus the MLflow UI, in the background; stop it again.

``make ui`` and ``make ui-stop`` call this script; it can also be run directly::

    .venv/bin/python scripts/local_airflow.py start [--host 127.0.0.1]
        [--airflow-port 8080] [--mlflow-port 5000] [--state-dir var/ui]
    .venv/bin/python scripts/local_airflow.py stop [--state-dir var/ui]

``start`` migrates the metadata database, then starts five servers: Airflow's
api-server, scheduler (LocalExecutor), dag-processor and triggerer, and
``mlflow ui`` on the tracking store the DAG's tasks write to. It waits until
the API answers with every component healthy and the DAGs are parsed, prints
where to sign in, and returns: the servers keep running in the background.

Each server leads a session of its own, writes its output to
``<state-dir>/<name>.log`` and its pid to ``<state-dir>/<name>.pid``.
Everything a server starts stays in its session, task processes that Airflow
moves to process groups of their own included, so ``stop`` finds them all by
session id and ends them (SIGTERM, then SIGKILL after a grace period). (An
environment marker would not do: Airflow's processes rewrite their title over
the memory ``/proc/<pid>/environ`` shows.) A second ``start`` while the
servers run says so and starts nothing.

Airflow itself is configured through its own environment variables (the
Makefile exports ``AIRFLOW_HOME`` and friends); this script only adds what a
single-machine Airflow needs and leaves any value already set alone. It
imports nothing of Airflow or MLflow (it talks to them as a user does, through
their command lines and HTTP) and of recsys only its config, for the address
of the MLflow store the tasks write to.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Started once the api-server answers: they hand task processes its URL.
SCHEDULING = ("scheduler", "dag-processor", "triggerer")
#: The DAGs of dags/ that must be parsed before the stack counts as ready.
DAGS = ("recsys_ingest", "recsys_monitor", "recsys_training", "recsys_forget")
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


class StartError(RuntimeError):
    """A server did not come up; the message says which and shows its log."""


@dataclass(frozen=True)
class Settings:
    """What one local stack listens on and where it keeps its files."""

    host: str
    airflow_port: int
    mlflow_port: int
    state_dir: Path
    stop_hint: str

    @property
    def url_host(self) -> str:
        """The host to put in URLs: a wildcard bind is reached through loopback."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def airflow_url(self) -> str:
        return f"http://{self.url_host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.url_host}:{self.mlflow_port}"


# ---------------------------------------------------------------- environment
def airflow_home() -> Path:
    """``AIRFLOW_HOME`` as Airflow reads it (default ``~/airflow``)."""
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")).resolve()


def tracking_uri() -> str:
    """The MLflow store the DAG's tasks write to (see ``recsys.config.tracking_uri``)."""
    from recsys import config

    return config.tracking_uri()


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of every server: this one plus what a one-machine Airflow needs.

    A value the caller already exported wins.
    """
    api = settings.airflow_url
    defaults = {
        # The executor Airflow supports on SQLite; a few task slots for a laptop.
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        # Links, redirects and the execution API the task processes call back
        # into: without them a task on another port fails with "connection refused".
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        # Where the Recommender page links into MLflow.
        "MLFLOW_UI_URL": settings.mlflow_url,
    }
    return {**defaults, **os.environ}


# -------------------------------------------------------------------- servers
def commands(settings: Settings, mlflow_store: str) -> dict[str, list[str]]:
    """Every server's command line, by name (the name of its log and pid files).

    The scheduler and triggerer skip their log servers: with LocalExecutor the
    api-server reads task logs straight from disk, and those servers would
    listen on every interface on fixed ports (8793, 8794). While a task runs,
    its log's "source details" then say the served log could not be read; the
    log itself shows.
    """
    airflow = str(BIN / "airflow")
    servers = {
        "api-server": [
            airflow,
            "api-server",
            "--host",
            settings.host,
            "--port",
            str(settings.airflow_port),
            "--workers",
            "1",
        ],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    if mlflow_store.startswith(("sqlite:", "postgresql", "mysql", "file:")):
        servers["mlflow"] = [
            str(BIN / "mlflow"),
            "ui",
            "--backend-store-uri",
            mlflow_store,
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            "--workers",
            "1",
        ]
    return servers


def pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.log"


def _leader(path: Path) -> psutil.Process | None:
    """The live server a pid file names, or ``None`` (no file, gone, or the pid reused).

    The file holds the pid and the process's start time, so a pid the system
    has since given to another program is not mistaken for the server.
    """
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid, started = path.read_text().split()
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(started)) < 0.01 and proc.status() != "zombie":
            return proc
    return None


def running_servers(settings: Settings) -> dict[str, int]:
    """``{name: pid}`` of the servers whose pid file names a live process."""
    leaders = {path.stem: _leader(path) for path in sorted(settings.state_dir.glob("*.pid"))}
    return {name: proc.pid for name, proc in leaders.items() if proc is not None}


def stack_processes(settings: Settings) -> list[psutil.Process]:
    """Every live process in the session of a server of the stack: the servers,
    their workers and the task processes.

    A session outlives its leader, so the pid files count even when the server
    they name has died and left children behind.
    """
    sessions = set()
    for path in settings.state_dir.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            sessions.add(int(path.read_text().split()[0]))
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) in sessions and proc.status() != "zombie":
                found.append(proc)
    return found


def start_server(
    settings: Settings, name: str, argv: list[str], env: dict[str, str]
) -> subprocess.Popen:
    """Start one server in a session of its own, its output appended to its log."""
    with open(log_file(settings, name), "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = 0.0  # a server that died at once is reported by wait_ready
    with contextlib.suppress(psutil.Error):
        started = psutil.Process(proc.pid).create_time()
    pid_file(settings, name).write_text(f"{proc.pid} {started}\n")
    return proc


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


# -------------------------------------------------------------------- waiting
def http_json(url: str, *, data: dict | None = None, token: str | None = None) -> dict | None:
    """GET (or POST ``data`` as JSON) and decode the answer; ``None`` on any failure."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read() or b"null")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 2xx (any connection error counts as not yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return 200 <= reply.status < 300
    except (OSError, urllib.error.HTTPError):
        return False


def airflow_healthy(settings: Settings) -> bool:
    """The API answers and reports the database, scheduler, dag-processor and triggerer healthy."""
    health = http_json(f"{settings.airflow_url}/api/v2/monitor/health") or {}
    parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def password_file() -> Path:
    """The password file of SimpleAuthManager (``[core] simple_auth_manager_passwords_file``)."""
    configured = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    return (
        Path(configured)
        if configured
        else (airflow_home() / "simple_auth_manager_passwords.json.generated")
    )


def api_token(settings: Settings) -> str | None:
    """A bearer token for the first user of the password file (``None`` if unknown)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        user, password = next(iter(json.loads(password_file().read_text()).items()))
        reply = http_json(
            f"{settings.airflow_url}/auth/token", data={"username": user, "password": password}
        )
        return (reply or {}).get("access_token")
    return None


def parsed_dags(settings: Settings, token: str) -> tuple[set[str], list[str]]:
    """DAG ids the API knows, and the files that failed to import."""
    dags = http_json(f"{settings.airflow_url}/api/v2/dags?limit=100", token=token) or {}
    errors = http_json(f"{settings.airflow_url}/api/v2/importErrors", token=token) or {}
    return (
        {d["dag_id"] for d in dags.get("dags", [])},
        [e["filename"] for e in errors.get("import_errors", [])],
    )


def wait_ready(
    settings: Settings,
    procs: dict[str, subprocess.Popen],
    deadline: float,
    *,
    api_only: bool = False,
) -> None:
    """Until MLflow and every Airflow component answer and the DAGs are parsed
    (with ``api_only``: until the API answers at all).

    Raises:
        StartError: when a server exits, a DAG file fails to import, or the
            ``time.monotonic()`` deadline passes.
    """
    waiting_for = "the servers"
    token = None
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise StartError(
                    f"{name} exited with code {proc.returncode}; the end of "
                    f"{log_file(settings, name)}:\n"
                    f"{log_tail(log_file(settings, name))}"
                )
        if api_only:
            if http_ok(f"{settings.airflow_url}/api/v2/monitor/health"):
                return
            waiting_for = "the api-server"
        elif "mlflow" in procs and not http_ok(f"{settings.mlflow_url}/health"):
            waiting_for = "the MLflow UI"
        elif not airflow_healthy(settings):
            waiting_for = "Airflow's scheduler, dag-processor and triggerer"
        elif (token := token or api_token(settings)) is None:
            if not password_file().exists():
                return  # auth set up otherwise: the DAGs cannot be listed, the servers are up
            waiting_for = f"a login with the password in {password_file()}"
        else:
            dags, errors = parsed_dags(settings, token)
            if errors:
                raise StartError(
                    f"DAG files failed to import: {', '.join(errors)} (see "
                    f"{log_file(settings, 'dag-processor')})"
                )
            if set(DAGS) <= dags:
                return
            waiting_for = "the dag-processor to parse dags/"
        time.sleep(1)
    raise StartError(f"timed out waiting for {waiting_for}")


# ------------------------------------------------------------------- commands
def start(settings: Settings, timeout: float) -> int:
    """Start the stack unless it runs already; print where to go. Returns an exit code."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = tracking_uri()
    servers = commands(settings, store)
    alive = running_servers(settings)
    if alive:
        missing = sorted(set(servers) - set(alive))
        if missing:
            print(
                f"the local Airflow runs only partly ({', '.join(missing)} stopped); "
                f"run `{settings.stop_hint}` first, then start it again",
                file=sys.stderr,
            )
            return 1
        print(
            "the local Airflow is already running (pids "
            + ", ".join(f"{n} {p}" for n, p in alive.items())
            + ")"
        )
        print_banner(settings, store, servers)
        return 0
    for name, port in (("Airflow", settings.airflow_port), ("MLflow", settings.mlflow_port)):
        if port_in_use(settings.url_host, port):
            print(
                f"port {port} for {name} is taken by another program; pick a free one "
                "(make ui AIRFLOW_PORT=... MLFLOW_PORT=...)",
                file=sys.stderr,
            )
            return 1

    env = server_env(settings)
    migrate_log = log_file(settings, "airflow-migrate")
    print(f"migrating the Airflow database in {airflow_home()} ...", flush=True)
    with open(migrate_log, "wb") as out:
        migrated = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if migrated.returncode != 0:
        print(log_tail(migrate_log), file=sys.stderr)
        return 1
    print(f"starting {', '.join(servers)}; logs in {settings.state_dir}/ ...", flush=True)
    deadline = time.monotonic() + timeout
    # The API first: a task the scheduler queues before the API answers fails
    # its first try with "connection refused" and waits for its retry.
    first = [name for name in servers if name not in SCHEDULING]
    procs = {name: start_server(settings, name, servers[name], env) for name in first}
    try:
        wait_ready(settings, procs, deadline, api_only=True)
        procs |= {name: start_server(settings, name, servers[name], env) for name in SCHEDULING}
        wait_ready(settings, procs, deadline)
    except StartError as exc:
        print(f"the local Airflow did not start: {exc}", file=sys.stderr, flush=True)
        stop(settings)
        return 1
    print_banner(settings, store, servers)
    return 0


def print_banner(settings: Settings, store: str, servers: dict[str, list[str]]) -> None:
    home = airflow_home()
    mlflow = settings.mlflow_url if "mlflow" in servers else store
    print(f"""
Airflow runs (api-server, scheduler, dag-processor, triggerer; LocalExecutor,
metadata in {home}).
  Recommender page  {settings.airflow_url}/plugin/recommender
  Airflow UI        {settings.airflow_url}/
  sign in as        admin, password in {password_file()}
  MLflow UI         {mlflow}
  DAGs              {", ".join(DAGS)}: unpaused when first created
  server logs       {settings.state_dir}/<server>.log (task logs: {home}/logs/)
  stop              {settings.stop_hint}
""")


def stop(settings: Settings, grace: float = 20.0) -> int:
    """SIGTERM every process of the stack, SIGKILL what is left after ``grace`` seconds."""
    procs = stack_processes(settings)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(procs, timeout=grace)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=10)
    for path in settings.state_dir.glob("*.pid"):
        path.unlink()
    if procs:
        print(
            f"stopped the local Airflow: {len(procs)} processes"
            + (f" ({len(left)} needed SIGKILL)" if left else "")
        )
    else:
        print("the local Airflow was not running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--host", default="127.0.0.1", help="address the servers bind to")
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    home = Path(os.environ.get("RECSYS_HOME", REPO / "var"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=home / "ui",
        help="pid files and server logs (default $RECSYS_HOME/ui)",
    )
    parser.add_argument(
        "--stop-hint", default=f"{sys.executable} {__file__} stop", help="the stop command to print"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for every server to be ready"
    )
    args = parser.parse_args(argv)
    settings = Settings(
        args.host, args.airflow_port, args.mlflow_port, args.state_dir.resolve(), args.stop_hint
    )
    if args.action == "start":
        return start(settings, args.timeout)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return stop(settings)


if __name__ == "__main__":
    sys.exit(main())
