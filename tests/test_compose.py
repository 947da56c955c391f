"""The production-like stack in docker-compose.yml keeps its promises.

These tests read the compose file as data (no Docker needed): the services
exist, every long-running one has a health check, nothing is published beyond
localhost by default, the Celery worker can be scaled, credentials come only
from variables that .env.example documents. One test also asks the real
``docker-compose`` binary (1.29, or any that accepts ``config``) to validate
and list the file, offline, when it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "recsys-serve",
    "spark-master",
    "spark-worker",
}
AIRFLOW_SERVICES = sorted(s for s in EXPECTED_SERVICES if s.startswith("airflow-"))
LONG_RUNNING_AIRFLOW = [s for s in AIRFLOW_SERVICES if s != "airflow-init"]
# A one-shot job exits; the others wait on service_completed_successfully instead.
ONE_SHOT_SERVICES = {"airflow-init"}

# `$$` is Compose's escape for a literal `$`; `${NAME...}` and `$NAME` interpolate.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_COMPOSE_DOLLAR = re.compile(rf"\$(?:(\$)|\{{({_NAME})[^}}]*\}}|({_NAME}))")
# "ADDRESS:HOST_PORT:CONTAINER_PORT" whose address is localhost, or the variable defaulting to it.
_LOCAL_BIND = re.compile(
    r"^(127\.0\.0\.1|\$\{BIND_ADDRESS:-127\.0\.0\.1\}):(\d+|\$\{[A-Z_]+:-\d+\}):\d+$"
)
# Environment keys whose values carry a credential.
_SECRET_KEY = re.compile(
    r"PASSWORD$|SECRET|FERNET_KEY|SQL_ALCHEMY_CONN|BROKER_URL|RESULT_BACKEND|STORE_URI"
)


def find_compose_variables(text: str) -> set[str]:
    """Names of the variables Compose interpolates in ``text``; ``$$`` escapes are skipped."""
    names = set()
    for escaped, braced, bare in _COMPOSE_DOLLAR.findall(text):
        if not escaped:
            names.add(braced or bare)
    return names


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file; blank lines and ``#`` comments skipped."""
    entries = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            entries[key] = value
    return entries


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    """The ``services`` mapping of docker-compose.yml, YAML anchors and merges resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_variable_scanner_skips_escapes_and_reads_defaults():
    text = 'a: ${ONE:-x} b: ${TWO:?set it} c: $THREE d: "$${HOSTNAME}" e: $$FOUR'
    assert find_compose_variables(text) == {"ONE", "TWO", "THREE"}


def test_stack_has_exactly_the_expected_services(services):
    assert set(services) == EXPECTED_SERVICES


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES - ONE_SHOT_SERVICES))
def test_every_long_running_service_has_a_health_check(services, name):
    check = services[name].get("healthcheck", {})
    assert not check.get("disable", False), name
    assert check.get("test"), f"{name} has no health check"
    assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_one_shot_init_does_not_restart(services):
    assert str(services["airflow-init"]["restart"]) == "no"


@pytest.mark.parametrize("name", LONG_RUNNING_AIRFLOW)
def test_airflow_services_wait_for_init_and_healthy_stores(services, name):
    needs = services[name]["depends_on"]
    assert needs["airflow-init"] == {"condition": "service_completed_successfully"}
    assert needs["postgres"] == {"condition": "service_healthy"}
    assert needs["redis"] == {"condition": "service_healthy"}


def test_every_dependency_names_a_condition(services):
    allowed = {"service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in allowed, f"{name} -> {dependency}: {rule}"


def test_worker_waits_for_api_server_and_mlflow(services):
    needs = services["airflow-worker"]["depends_on"]
    assert needs["airflow-apiserver"] == {"condition": "service_healthy"}
    assert needs["mlflow"] == {"condition": "service_healthy"}


def test_published_ports_bind_localhost_or_a_variable(services):
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the short 'ADDRESS:HOST:CONTAINER' form"
            assert _LOCAL_BIND.match(port), f"{name}: {port} is not bound to localhost"
            published.append(name)
    assert sorted(published) == ["airflow-apiserver", "mlflow", "recsys-serve"]


def test_bind_address_defaults_to_localhost():
    assert "${BIND_ADDRESS:-127.0.0.1}" in COMPOSE_FILE.read_text()
    assert read_env_file(ENV_EXAMPLE)["BIND_ADDRESS"] == "127.0.0.1"


def test_worker_can_be_scaled(services):
    worker = services["airflow-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"] == ["airflow", "celery", "worker"]


def test_no_service_fixes_its_container_name(services):
    assert [n for n, s in services.items() if "container_name" in s] == []


def test_every_variable_is_documented_in_env_example():
    used = find_compose_variables(COMPOSE_FILE.read_text())
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set()


def test_env_example_documents_only_used_variables():
    used = find_compose_variables(COMPOSE_FILE.read_text())
    assert set(read_env_file(ENV_EXAMPLE)) - used == set()


def test_credentials_come_only_from_variables(services):
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if _SECRET_KEY.search(key):
                assert "${" in str(value), f"{name}: {key} is hard-coded"


def test_env_example_holds_placeholders_not_secrets():
    entries = read_env_file(ENV_EXAMPLE)
    secrets = [k for k in entries if _SECRET_KEY.search(k)]
    assert len(secrets) >= 8
    assert all(entries[k].startswith("change-me") for k in secrets), secrets


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_share_one_configuration(services, name):
    env = services[name]["environment"]
    reference = services["airflow-apiserver"]["environment"]
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "MLFLOW_TRACKING_URI",
        "RECSYS_HOME",
    ):
        assert env[key] == reference[key], f"{name}: {key}"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    )
    assert env["MLFLOW_TRACKING_URI"] == "${MLFLOW_TRACKING_URI:-http://mlflow:5000}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_run_folders_live_on_one_shared_volume(services, name):
    home = services[name]["environment"]["RECSYS_HOME"]
    assert f"recsys-home:{home}" in services[name]["volumes"]


def test_the_service_reads_redis_and_mlflow_and_keeps_its_copies_on_the_shared_home(services):
    serve = services["recsys-serve"]
    env = serve["environment"]
    assert serve["command"][:2] == ["recsys", "serve"]
    assert (
        env["MLFLOW_TRACKING_URI"]
        == services["airflow-worker"]["environment"]["MLFLOW_TRACKING_URI"]
    )
    # The recommend task writes the cache the service reads: one URL for both.
    assert env["RECSYS_REDIS_URL"] == services["airflow-worker"]["environment"]["RECSYS_REDIS_URL"]
    assert env["RECSYS_REDIS_URL"].endswith("@redis:6379/1")
    assert f"recsys-home:{env['RECSYS_HOME']}" in serve["volumes"]
    assert set(serve["depends_on"]) == {"redis", "mlflow"}


def test_named_volumes_are_declared():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    mounted = {
        volume.split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }
    assert mounted == set(compose["volumes"])


def test_mlflow_serves_artifacts_from_a_volume_and_allows_its_service_name(services):
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in command
    assert "--artifacts-destination=/var/lib/mlflow/artifacts" in command
    assert "mlflow-artifacts:/var/lib/mlflow/artifacts" in mlflow["volumes"]
    allowed = read_env_file(ENV_EXAMPLE)["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert {"mlflow:*", "localhost:*", "127.0.0.1:*"} <= set(allowed)
    assert any(arg.startswith("--allowed-hosts=${MLFLOW_ALLOWED_HOSTS") for arg in command)
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")


def test_postgres_creates_a_database_for_each_tool(services):
    script = services["postgres"]["entrypoint"][-1]
    assert 'create_role_and_database "$$AIRFLOW_DB_NAME"' in script
    assert 'create_role_and_database "$$MLFLOW_DB_NAME"' in script
    assert script.rstrip().endswith("exec docker-entrypoint.sh postgres")


def _run_compose(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``docker-compose`` in ``workdir`` with a bare environment, so only its .env counts."""
    binary = shutil.which("docker-compose")
    env = {"PATH": str(Path(binary).parent) + ":/usr/bin:/bin", "HOME": str(workdir)}
    return subprocess.run(
        [binary, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
    )


needs_docker_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose binary not on PATH (apt-get install -y docker-compose)",
)


@needs_docker_compose
def test_docker_compose_validates_and_lists_the_services(tmp_path):
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    # Loading the file for --services also validates it against Compose's schema.
    listed = _run_compose(tmp_path, "config", "--services")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == EXPECTED_SERVICES


@needs_docker_compose
def test_docker_compose_refuses_to_run_without_credentials(tmp_path):
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    result = _run_compose(tmp_path, "config", "-q")
    assert result.returncode != 0
    assert "in .env (see .env.example)" in result.stderr


def _credential_variables() -> dict[str, str]:
    """The credentials of .env.example (name → its change-me placeholder)."""
    return {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if _SECRET_KEY.search(k)}


def test_the_init_change_me_check_can_see_every_credential(services):
    # Regression (issue 14): POSTGRES_PASSWORD and MLFLOW_DB_PASSWORD never reached
    # airflow-init, so a stack with those two left at change-me started anyway.
    env_text = " ".join(str(v) for v in services["airflow-init"]["environment"].values())
    seen = find_compose_variables(env_text)
    assert set(_credential_variables()) - seen == set()
    script = services["airflow-init"]["command"][-1]
    assert script.index("grep -q 'change-me'") < script.index("unset POSTGRES_PASSWORD")


@needs_docker_compose
def test_the_init_check_sees_each_placeholder_as_compose_resolves_it(tmp_path):
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    credentials = _credential_variables()
    env_example = ENV_EXAMPLE.read_text()
    for name, placeholder in credentials.items():
        # Every credential real but this one: the check must still find a change-me.
        lines = [
            f"{k}=real-{k.lower()}" if k in credentials and k != name else line
            for line in env_example.splitlines()
            for k in [line.partition("=")[0].strip()]
        ]
        (tmp_path / ".env").write_text("\n".join(lines) + "\n")
        result = _run_compose(tmp_path, "config")
        assert result.returncode == 0, result.stderr
        init_env = yaml.safe_load(result.stdout)["services"]["airflow-init"]["environment"]
        visible = [k for k, v in init_env.items() if "change-me" in str(v)]
        assert visible, f"{name}={placeholder} is invisible to airflow-init's check"


def test_spark_cluster_shares_the_run_folders_and_the_airflow_tasks_point_at_it(services):
    """RECSYS_ENGINE=spark in .env sends the data steps to the bundled cluster: the tasks'
    SPARK_MASTER is its master, and the workers see the run folders the driver writes."""
    assert services["spark-master"]["command"][:2] == [
        "spark-class",
        "org.apache.spark.deploy.master.Master",
    ]
    worker = services["spark-worker"]
    assert worker["command"][-1] == "spark://spark-master:7077"
    assert "ports" not in worker and "container_name" not in worker
    env = services["airflow-worker"]["environment"]
    assert env["RECSYS_ENGINE"] == "${RECSYS_ENGINE:-local}"
    assert env["SPARK_MASTER"] == "${SPARK_MASTER:-spark://spark-master:7077}"
    assert f"recsys-home:{env['RECSYS_HOME']}" in worker["volumes"]
    assert worker["environment"]["PYSPARK_PYTHON"] == env["PYSPARK_PYTHON"]
    assert read_env_file(ENV_EXAMPLE)["RECSYS_ENGINE"] == "local"
