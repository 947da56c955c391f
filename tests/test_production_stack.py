"""The production topology, as processes, on this machine's real PostgreSQL and Redis.

The same components as ``docker-compose.yml`` run from this checkout: Airflow's
api-server, scheduler, dag-processor, triggerer and Celery workers
(CeleryExecutor, Redis broker, Postgres metadata and result backend) and an
MLflow tracking server on Postgres with proxied artifacts. The real
``recsys_training`` DAG file is parsed by the dag-processor; the test only talks
to the stack over HTTP, like a user:

- the scheduler creates one run on its own (``RECSYS_TRAINING_SCHEDULE`` is set
  to a cron that fired this very minute, once a year, so exactly one scheduled
  run appears once the DAG is unpaused);
- one run is triggered through the REST API with a small model list;
- while the first run trains, the Celery worker's whole process tree is killed
  with SIGKILL and a new worker started: the task is retried to success and
  the run promotes its champion exactly once.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres) and Redis on
127.0.0.1:6379; skipped when either is not reachable.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import requests
from stack_harness import (
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    REPO,
    AirflowAPI,
    ProductionStack,
    StackConfig,
    copy_dag,
    temporary_database,
    temporary_redis_db,
    wait_until,
)

pytestmark = [pytest.mark.integration]

log = logging.getLogger(__name__)

KILL_ATTEMPTS = 4
DAG_ID = "recsys_training"
MODEL_NAME = "recsys_stack"
#: The triggered run trains only these (the scheduled one trains every model).
MANUAL_MODELS = ["popularity", "ease"]
K = 10
N_USERS, N_ITEMS, N_INTERACTIONS = 300, 150, 10_000
#: Seconds for both runs, kill and retry included: a hang guard (at load 8 on 2
#: cores they took over 420 s).
RUNS_TIMEOUT = 900


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _cron_for_this_minute() -> str:
    """A cron that fired at the start of the current UTC minute and fires yearly."""
    now = dt.datetime.now(dt.UTC)
    return f"{now.minute} {now.hour} {now.day} {now.month} *"


def _write_synthetic_data(folder: Path) -> Path:
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset

    dataset = generate_dataset(N_USERS, N_ITEMS, N_INTERACTIONS, seed=7)
    return write_dataset(dataset, folder)


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole topology, healthy, with the DAG parsed; torn down whatever happens."""
    if not (_reachable(PG_HOST, PG_PORT) and _reachable(REDIS_HOST, REDIS_PORT)):
        pytest.skip("PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 are needed")
    start = time.monotonic()
    root = tmp_path_factory.mktemp("stack")
    data = _write_synthetic_data(root / "data")
    with (
        temporary_database("recsys_airflow") as airflow_db,
        temporary_database("recsys_mlflow") as mlflow_db,
        temporary_redis_db() as redis_db,
    ):
        cfg = StackConfig(
            root=root,
            airflow_db=airflow_db,
            mlflow_db=mlflow_db,
            redis_db=redis_db,
            dags_folder=copy_dag(REPO / "dags" / f"{DAG_ID}.py", root / "dags").parent,
            extra_env={
                "RECSYS_HOME": str(root / "var"),
                "RECSYS_DATA_PATH": str(data),
                "RECSYS_MODEL_NAME": MODEL_NAME,
                "RECSYS_MIN_NEW_INTERACTIONS": "0",
                "RECSYS_RETRY_DELAY_SECONDS": "3",
                "RECSYS_TRAINING_SCHEDULE": _cron_for_this_minute(),
            },
        )
        with ProductionStack(cfg) as production:
            production.start_mlflow()
            production.migrate()
            production.start_airflow()
            production.start_worker()
            production.wait_healthy(timeout=180)
            api = AirflowAPI(cfg.api_url, cfg.username, cfg.password)
            try:
                api.login()
                wait_until(
                    lambda: api.dag(DAG_ID),
                    timeout=120,
                    interval=2,
                    what=f"the dag-processor to store {DAG_ID}",
                    services=production.running(),
                )
                log.info("stack ready in %.0fs", time.monotonic() - start)
                yield production, api
            finally:
                api.close()


def _runs_by_type(api: AirflowAPI) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for run in api.dag_runs(DAG_ID):
        runs.setdefault(run["run_type"], []).append(run)
    return runs


def _kill_worker_mid_training(production: ProductionStack, api: AirflowAPI) -> tuple[str, str]:
    """SIGKILL the worker tree while a train_* task runs; retry if the task beat the kill.

    A training task on small data takes seconds, so the task seen running may
    report success just before the kill lands. The task's state read right
    after the kill tells: still ``running`` means the worker died under it
    (nothing alive can report it any more). Otherwise a new worker starts and
    the next training task is tried, a few times at most.

    Returns:
        ``(run_id, task_id)`` of the task that was running when the worker died.
    """

    def running_train_task() -> tuple[str, str] | None:
        for run in api.dag_runs(DAG_ID):
            if run["state"] != "running":
                continue
            states = api.task_states(DAG_ID, run["dag_run_id"])
            training = [t for t, s in states.items() if t.startswith("train_") and s == "running"]
            if training and "queued" not in states.values():
                return run["dag_run_id"], training[0]
        return None

    worker = "worker-1"
    for _ in range(KILL_ATTEMPTS):
        run_id, task_id = wait_until(
            running_train_task,
            timeout=240,
            interval=0.5,
            what="a train_* task to be running",
            services=production.running(),
        )
        production.kill(worker)
        hit = api.task_states(DAG_ID, run_id).get(task_id) == "running"
        worker = production.start_worker().name
        if hit:
            log.info("killed the worker while %s of %s was running", task_id, run_id)
            return run_id, task_id
        log.info("%s of %s finished before the kill; trying the next task", task_id, run_id)
    pytest.fail(
        f"no training task was still running when the worker died, in {KILL_ATTEMPTS} attempts"
    )


@pytest.fixture(scope="module")
def scenario(stack):
    """One scheduled and one triggered run, the worker killed mid-training once."""
    production, api = stack
    start = time.monotonic()
    api.set_paused(DAG_ID, False)
    scheduled = wait_until(
        lambda: _runs_by_type(api).get("scheduled"),
        timeout=60,
        what="the scheduler to create a scheduled run",
        services=production.running(),
    )[0]
    log.info("the scheduler created %s", scheduled["dag_run_id"])
    manual = api.trigger(
        DAG_ID, {"models": MANUAL_MODELS, "k": K}, run_id=f"stack_manual_{uuid.uuid4().hex[:8]}"
    )
    killed_run, killed_task = _kill_worker_mid_training(production, api)
    deadline = time.monotonic() + RUNS_TIMEOUT
    finished = {}
    for run in (scheduled, manual):
        left = max(deadline - time.monotonic(), 1)
        finished[run["dag_run_id"]] = api.wait_for_run(
            DAG_ID, run["dag_run_id"], timeout=left, services=production.running()
        )
    log.info("both runs finished %.0fs after unpausing", time.monotonic() - start)
    return {
        "api": api,
        "production": production,
        "runs": finished,
        "scheduled": scheduled["dag_run_id"],
        "manual": manual["dag_run_id"],
        "killed_run": killed_run,
        "killed_task": killed_task,
    }


# ------------------------------------------------------------- MLflow over REST
def _mlflow(production: ProductionStack, path: str, **params) -> dict:
    reply = requests.get(
        f"{production.cfg.mlflow_url}/api/2.0/mlflow/{path}", params=params, timeout=30
    )
    reply.raise_for_status()
    return reply.json()


def _tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in entity.get("tags", [])}


def _versions(production: ProductionStack) -> list[dict]:
    found = _mlflow(production, "model-versions/search", filter=f"name='{MODEL_NAME}'")
    return found.get("model_versions", [])


def _run_key_of(production: ProductionStack, version: dict) -> str | None:
    run = _mlflow(production, "runs/get", run_id=version["run_id"])["run"]
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}.get("recsys.run_key")


# ------------------------------------------------------------------------ tests
def test_scheduler_and_rest_runs_both_succeed(scenario):
    runs = scenario["runs"]
    assert {r["run_type"] for r in runs.values()} == {"scheduled", "manual"}
    assert all(r["state"] == "success" for r in runs.values())


def test_killed_training_task_is_retried_to_success(scenario):
    api = scenario["api"]
    instances = {t["task_id"]: t for t in api.task_instances(DAG_ID, scenario["killed_run"])}
    killed = instances[scenario["killed_task"]]
    assert killed["state"] == "success"
    assert killed["try_number"] > 1


def test_each_run_promotes_exactly_once(scenario):
    from recsys.promotion.decision import TAG_PREFIX

    production = scenario["production"]
    decided = [(_run_key_of(production, v), _tags(v)) for v in _versions(production)]
    for run_id in (scenario["scheduled"], scenario["manual"]):
        mine = [tags for key, tags in decided if key == run_id]
        assert len(mine) == 1, f"run {run_id} registered {len(mine)} versions"
        assert mine[0][TAG_PREFIX + "verdict"] in {"promote", "hold"}
    killed = [tags for key, tags in decided if key == scenario["killed_run"]]
    assert [t[TAG_PREFIX + "verdict"] for t in killed] == ["promote"]


def test_champion_alias_holds_a_promoted_version_with_decision_tags(scenario):
    from recsys.promotion.decision import TAG_PREFIX

    production = scenario["production"]
    champion = _mlflow(production, "registered-models/alias", name=MODEL_NAME, alias="champion")[
        "model_version"
    ]
    tags = _tags(champion)
    decision = {k: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
    assert decision[TAG_PREFIX + "verdict"] == "promote"
    assert decision[TAG_PREFIX + "candidate_version"] == champion["version"]
    assert {"metric", "reason", "candidate_score", "margin"} <= {
        k.removeprefix(TAG_PREFIX) for k in decision
    }


def test_batch_recommendations_are_written_per_run(scenario, monkeypatch):
    from recsys.pipeline import RunFolder

    production = scenario["production"]
    monkeypatch.setenv("RECSYS_HOME", production.env["RECSYS_HOME"])
    for run_id in (scenario["scheduled"], scenario["manual"]):
        path = RunFolder(run_id).path / "recommendations.parquet"
        assert path.exists(), f"no recommendations for {run_id}"
        recs = pd.read_parquet(path)
        assert recs["user_id"].nunique() == N_USERS
        assert recs.groupby("user_id").size().max() == K
        assert recs["rank"].between(1, K).all()
