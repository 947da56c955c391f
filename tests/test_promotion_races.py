"""Promotion and retries under concurrency and kills, with real processes and real stores.

Regression tests for issue 14, items 6 and 8:

- two runs that reach ``promote`` together both promoted against one champion
  (20 of 20 forced races before the lock), the lineage lost a version and
  ``recsys rollback`` restored the wrong one;
- two first runs on a fresh SQLite store raced on MLflow's schema migration;
- a killed train try left its MLflow run RUNNING forever, a retried one opened
  a new run each try, a kill right after registration left a version with no
  decision.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import promotion_race as race
import pytest

from recsys.promotion.decision import Decision

HERE = Path(__file__).resolve().parent


def _env(uri: str, root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "RECSYS_ARTIFACT_ROOT": (root / "artifacts").as_uri(),
        "RECSYS_HOME": str(root / "home"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }


def _use(env: dict[str, str], mp: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "RECSYS_ARTIFACT_ROOT", "RECSYS_HOME"):
        mp.setenv(key, env[key])


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """One SQLite store for the module (a fresh one costs a migration); each test
    uses registered models of its own names."""
    root = tmp_path_factory.mktemp("race-store")
    env = _env(f"sqlite:///{root / 'mlflow.db'}", root)
    with pytest.MonkeyPatch.context() as mp:
        _use(env, mp)
        yield env


def _race(rounds: int, tmp_path: Path, env: dict[str, str], prefix: str) -> dict:
    result = race.measure(rounds, tmp_path, env, prefix)
    assert result["errors"] == []
    return result


def _assert_no_double_promotion(result: dict) -> None:
    assert result["double_promotions"] == 0, result["rows"]
    assert result["lineage_broken"] == 0, result["rows"]
    assert result["rollback_wrong"] == 0, result["rows"]
    # Each round still promoted exactly one of the two (the race has a winner).
    assert all(len(r["promoted_against_v1"]) == 1 for r in result["rows"])


# ------------------------------------------------------------ forced races
def test_two_processes_never_promote_twice_against_one_champion(sqlite_store, tmp_path):
    _assert_no_double_promotion(_race(3, tmp_path, sqlite_store, "race"))


@pytest.mark.slow
def test_twenty_forced_races_on_sqlite(sqlite_store, tmp_path):
    _assert_no_double_promotion(_race(20, tmp_path, sqlite_store, "race20"))


@pytest.fixture
def postgres_store(tmp_path, monkeypatch):
    stack = pytest.importorskip("stack_harness")
    try:
        database = stack.temporary_database("recsys_race")
        name = database.__enter__()
    except Exception as exc:  # noqa: BLE001 - no server here: the SQLite tests stand
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    env = _env(stack.postgres_url(name), tmp_path)
    _use(env, monkeypatch)
    try:
        yield env
    finally:
        database.__exit__(None, None, None)


@pytest.mark.integration
def test_the_promotion_lock_on_postgres_is_an_advisory_lock(postgres_store, monkeypatch):
    """Held on one connection, the lock of a model is refused to another session (any
    process's) until released, and is per model."""
    from recsys.registry.locks import LockTimeoutError, lock_database_url, model_lock

    assert lock_database_url() == postgres_store["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("RECSYS_LOCK_TIMEOUT_S", "0.3")
    with model_lock("m"):
        with pytest.raises(LockTimeoutError, match="stayed busy"), model_lock("m"):
            pass
        with model_lock("other"):
            pass
    with model_lock("m"):
        pass


@pytest.mark.slow
@pytest.mark.integration
def test_forced_races_on_postgres(postgres_store, tmp_path):
    _assert_no_double_promotion(_race(3, tmp_path, postgres_store, "race"))


@pytest.mark.slow
@pytest.mark.integration
def test_twenty_forced_races_on_postgres(postgres_store, tmp_path):
    _assert_no_double_promotion(_race(20, tmp_path, postgres_store, "race20"))


# --------------------------------------------------- compare-and-set rules
def _decision(version: int, against: int | None, *, promote: bool = True) -> Decision:
    return Decision(
        promote=promote,
        candidate_score=0.3,
        champion_score=None if against is None else 0.1,
        margin=0.0,
        metric="ndcg@10",
        reason=f"v{version} against {against}",
        candidate_version=version,
        champion_version=against,
        kind="gate" if against is not None else "first_run",
    )


def test_a_decision_against_a_champion_that_moved_is_recorded_stale(sqlite_store):
    from recsys import registry

    race.prepare(1, "stale")
    name = race.round_name(0, "stale")
    registry.apply_decision(name, 2, _decision(2, 1))
    recorded = registry.apply_decision(name, 3, _decision(3, 1))
    assert recorded.stale and not recorded.promote
    assert registry.aliases(name) == {"champion": 2, "previous_champion": 1}
    tags = registry.client().get_model_version(name, "3").tags
    assert tags["recsys.decision.verdict"] == "hold"
    assert tags["recsys.decision.check.champion_unchanged"] == "fail"
    assert tags["recsys.decision.reason"].startswith("stale: decided against champion 1")
    # Decided again against the new champion, it goes through.
    again = registry.apply_decision(name, 3, _decision(3, 2))
    assert again.promote and not again.stale
    assert registry.aliases(name) == {"champion": 3, "previous_champion": 2}
    # A second first-run decision finds a champion: stale, not a promotion.
    assert registry.apply_decision(name, 1, _decision(1, None)).stale


def test_reapplying_the_promotion_that_won_changes_nothing(sqlite_store):
    from recsys import registry

    race.prepare(1, "again")
    name = race.round_name(0, "again")
    registry.apply_decision(name, 2, _decision(2, 1))
    again = registry.apply_decision(name, 2, _decision(2, 1))  # a retried promote task
    assert again.promote and not again.stale
    assert registry.aliases(name) == {"champion": 2, "previous_champion": 1}


def test_the_promotion_lock_on_sqlite_is_a_file_lock_beside_the_store(sqlite_store, monkeypatch):
    from recsys.registry.locks import LockTimeoutError, lock_database_url, lock_file, model_lock

    assert lock_database_url() is None
    assert lock_file("promote-m").parent == Path(sqlite_store["MLFLOW_TRACKING_URI"][10:]).parent
    monkeypatch.setenv("RECSYS_LOCK_TIMEOUT_S", "0.3")
    with model_lock("m"):
        with pytest.raises(LockTimeoutError, match="stayed busy"), model_lock("m"):
            pass
        with model_lock("other"):
            pass


def test_promote_decides_again_when_another_run_moved_the_champion(
    tmp_path, monkeypatch, isolated_mlflow
):
    """Run 'second' is evaluated against v1; before it promotes, v2 becomes champion.
    Its decision against v1 goes stale, and it is judged again against v2."""
    from recsys import registry
    from recsys.data import Dataset
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline, steps

    data = generate_dataset(150, 60, 4000, seed=5)
    store = write_dataset(Dataset(data.interactions, data.items, data.users, "s"), tmp_path / "d")
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_DATA_PATH", str(store))
    monkeypatch.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("RECSYS_REDIS_URL", raising=False)
    monkeypatch.setattr("recsys.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")
    run_pipeline(PipelineOptions(data_path=str(store), models=("popularity",), k=10), "first")
    assert registry.aliases() == {"champion": 1}

    steps.validate_data("second", str(store))
    steps.prepare_data("second")
    first_try = steps.train_model("second", "itemknn")
    retry = steps.train_model("second", "itemknn")  # the task retried: one current run
    client = registry.client()
    replaced = client.get_run(first_try["run_id"]).data.tags
    assert replaced[registry.TAG_REPLACED_BY] == retry["run_id"]
    assert replaced[registry.TAG_TASK] == "train_itemknn"
    assert registry.TAG_REPLACED_BY not in client.get_run(retry["run_id"]).data.tags
    evaluation = steps.evaluate_candidates("second", ["itemknn"])
    assert evaluation["champion"]["version"] == 1
    other = registry.register_model("models:/recsys/1")  # another run's model meanwhile
    registry.promote_manually(other, "another run won first")

    decision = steps.promote("second", evaluation)
    assert decision["champion_version"] == other
    assert not any(c["name"] == "champion_unchanged" for c in decision["checks"])
    held = registry.aliases()
    if decision["promote"]:
        assert held == {"champion": decision["candidate_version"], "previous_champion": other}
    else:
        assert held["champion"] == other


# -------------------------------------------------------- schema migration
MIGRATE = """
import os, sys, time
from pathlib import Path
import mlflow  # imported before the barrier: both processes open the store together
from recsys import registry
folder = Path(sys.argv[1])
(folder / f"ready-{os.getpid()}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
registry.setup()
print(registry.client().search_experiments()[0].name)
"""


def test_two_first_runs_on_a_fresh_sqlite_store_migrate_it_once(tmp_path):
    env = _env(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, str(barrier)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 180
    while len(list(barrier.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a process died before the barrier"
        time.sleep(0.05)
    (barrier / "go").touch()
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip() == "recsys"
    assert Path(str(tmp_path / "mlflow.db") + ".migrate.lock").exists()


# ------------------------------------------------------ kills and retries
KILLED = """
import json, sys, time
from pathlib import Path
from recsys import registry
folder, register = Path(sys.argv[1]), sys.argv[2]
client = registry.client()
left = {}
for run_key, task in json.loads(sys.argv[3]):
    tags = {**registry.recovery.owner_tags(), "recsys.run_key": run_key, "recsys.task": task}
    left[task] = client.create_run(registry.setup(), run_name=task, tags=tags).info.run_id
# A finished training run, registered: the promote step then dies before deciding.
run = client.create_run(registry.setup(), tags={"recsys.run_key": "run-c"})
(folder / "model").mkdir()
(folder / "model" / "MLmodel").write_text("flavors: {}")
client.log_artifacts(run.info.run_id, str(folder / "model"), "model")
client.set_terminated(run.info.run_id)
registry.register_model(run.info.run_id, register)
left["registered"] = run.info.run_id
(folder / "left.json").write_text(json.dumps(left))
time.sleep(600)
"""


@pytest.fixture(scope="module")
def killed(sqlite_store, tmp_path_factory) -> dict[str, str]:
    """What one SIGKILLed task process left: RUNNING runs of train_ease (run-a) and
    train_als (run-old), and an undecided version of ``undecided`` (run-c).

    The process opens its runs as a training task does (owner and task tags) and
    is killed while they are open; returns task → run id (``registered``: the
    version's run)."""
    import json

    folder = tmp_path_factory.mktemp("killed")
    tries = [["run-a", "train_ease"], ["run-old", "train_als"]]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(folder), "undecided", json.dumps(tries)],
        env=sqlite_store,
    )
    deadline = time.monotonic() + 300
    while not (folder / "left.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the task process died"
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    return json.loads((folder / "left.json").read_text())


def test_a_killed_try_is_ended_failed_by_the_retry_and_others_by_the_next_run(killed):
    from recsys import registry

    client = registry.client()
    retried, forgotten = killed["train_ease"], killed["train_als"]
    mine = client.create_run(
        registry.setup(),
        tags={**registry.recovery.owner_tags(), "recsys.run_key": "run-live"},
    )
    assert {client.get_run(r).info.status for r in (retried, forgotten)} == {"RUNNING"}

    # The retry of train_ease in run-a ends its killed try's run...
    assert registry.replace_earlier_tries("run-a", "train_ease") == [retried]
    ended = client.get_run(retried)
    assert ended.info.status == "FAILED"
    assert "later try of task train_ease of run run-a" in ended.data.tags[registry.TAG_END_REASON]
    # ...and any run ends runs whose process is gone, not those of a live one.
    assert registry.end_abandoned_runs() == [forgotten]
    assert client.get_run(forgotten).info.status == "FAILED"
    assert "process" in client.get_run(forgotten).data.tags[registry.TAG_END_REASON]
    assert client.get_run(mine.info.run_id).info.status == "RUNNING"
    # A run open longer than any task may run is ended whoever owns it.
    far = time.time() + 10 * 24 * 3600
    assert registry.end_abandoned_runs(now=far) == [mine.info.run_id]


def test_a_retried_train_task_keeps_one_current_run(sqlite_store):
    from recsys import registry

    client = registry.client()
    tags = {"recsys.run_key": "run-b", "recsys.task": "train_popularity"}
    first, second = (client.create_run(registry.setup(), tags=tags) for _ in range(2))
    client.set_terminated(first.info.run_id)  # its try failed after logging
    registry.replace_earlier_tries("run-b", "train_popularity", keep=second.info.run_id)
    assert client.get_run(first.info.run_id).data.tags[registry.TAG_REPLACED_BY] == (
        second.info.run_id
    )
    assert registry.TAG_REPLACED_BY not in client.get_run(second.info.run_id).data.tags
    assert client.get_run(second.info.run_id).info.status == "RUNNING"


def test_a_version_registered_by_a_killed_run_is_archived_by_the_next(killed):
    from recsys import registry

    name, run_id = "undecided", killed["registered"]
    client = registry.client()
    version = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")[0]
    assert "recsys.decision.verdict" not in version.tags
    registry.mark_challenger(name, version.version)
    # Its own run's retry finishes it: no archiving, and registering returns it.
    assert registry.archive_undecided_versions(name, "run-c") == []
    assert registry.register_model(run_id, name) == int(version.version)
    # The next run archives it, says why and takes the challenger alias off it.
    assert registry.archive_undecided_versions(name, "run-d") == [int(version.version)]
    tags = client.get_model_version(name, version.version).tags
    assert "registered by run run-c" in tags[registry.TAG_ARCHIVED]
    assert "archived by run run-d" in tags[registry.TAG_ARCHIVED]
    assert registry.aliases(name) == {}
    assert registry.archive_undecided_versions(name, "run-e") == []  # once
