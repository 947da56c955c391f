"""Real Airflow runs of recsys_monitor and recsys_forget (``dag.test()``, SQLite metadata).

A store whose base data trained a champion in-process; then a popularity-shifted
batch is ingested and recsys_monitor runs: it must measure it, decide to
retrain and request training; a second run finds nothing new and skips the
request. recsys_forget, triggered with a user id, erases them and its XCom
holds no id.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.constants import USER_COL
from recsys.data import ingest, shifts

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def deployment(tmp_path, monkeypatch, isolated_mlflow):
    from recsys.data import Dataset
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline

    data = generate_dataset(300, 120, 9000, seed=4)
    rng = np.random.default_rng(4)
    stream = shifts.steady_stream(data.interactions, rng, start=1_700_000_000)
    base, rest = stream.iloc[:8000], stream.iloc[8000:]
    store = write_dataset(Dataset(base, data.items, data.users, "synthetic"), tmp_path / "store")
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_DATA_PATH", str(store))
    monkeypatch.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("RECSYS_REDIS_URL", raising=False)
    monkeypatch.setattr("recsys.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")  # no cache
    run_pipeline(PipelineOptions(data_path=str(store), models=("popularity",), k=10), "first")
    landing = tmp_path / "landing"
    landing.mkdir()
    shifts.popularity_shift(rest.iloc[:600], base, rng, share=0.6).to_csv(
        landing / "shifted.csv", index=False
    )
    ingest.ingest_landing(landing, store, tmp_path / "q", arrival="2026-11-01", now=1.8e9)
    return {"store": store, "home": tmp_path / "home", "base": base}


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_the_monitor_dag_requests_training_on_a_shift_and_skips_when_nothing_is_new(
    airflow_db, dagbag, deployment
):
    dag = dagbag.dags["recsys_monitor"]
    first = dag.test()
    assert first.state == "success"
    assert _states(first) == {
        "measure": "success",
        "decide": "success",
        "request_training": "success",
    }
    decisions = [
        json.loads(line)
        for line in (deployment["home"] / "monitor" / "recsys" / "decisions.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [d["action"] for d in decisions] == ["retrain"]
    assert "item popularity PSI" in decisions[0]["reason"]

    second = dag.test()
    assert second.state == "success"
    assert _states(second)["request_training"] == "skipped"


def test_the_forget_dag_erases_the_user_and_keeps_no_id_in_xcom(airflow_db, dagbag, deployment):
    user = int(deployment["base"][USER_COL].value_counts().index[0])
    before = len(ingest.read_store(deployment["store"]).interactions)
    theirs = int((ingest.read_store(deployment["store"]).interactions[USER_COL] == user).sum())

    run = dagbag.dags["recsys_forget"].test(
        run_conf={"user_id": str(user), "reason": f"user {user} asked"}
    )

    assert run.state == "success"
    assert _states(run) == {"forget": "success", "publish": "success"}
    after = ingest.read_store(deployment["store"]).interactions
    assert len(after) == before - theirs and user not in set(after[USER_COL])
    forget_ti = next(ti for ti in run.get_task_instances() if ti.task_id == "forget")
    returned = forget_ti.xcom_pull(task_ids="forget")
    assert set(returned) == {"subject", "counts"}
    assert returned["counts"]["store"]["removed"] == theirs
    audit = (deployment["home"] / "privacy" / "audit.jsonl").read_text()
    assert json.loads(audit)["reason"] == "user [user] asked"
