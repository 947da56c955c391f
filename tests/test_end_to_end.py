"""One real Airflow run of recsys_training on small synthetic data.

Airflow's metadata database is SQLite under the test session's AIRFLOW_HOME,
MLflow is a fresh SQLite store: nothing is mocked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from recsys.constants import ITEM_COL, USER_COL

DAGS = Path(__file__).resolve().parents[1] / "dags"
K = 5


@pytest.fixture
def demo_data(tmp_path) -> Path:
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset

    return write_dataset(generate_dataset(150, 80, 4000, seed=3), tmp_path / "data")


def test_training_dag_promotes_a_champion_and_writes_k_per_user(
    airflow_db, demo_data, isolated_mlflow
):
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    dag = DagBag(dag_folder=str(DAGS)).dags["recsys_training"]
    run = dag.test(run_conf={"data_path": str(demo_data), "k": K})
    assert run.state == "success"

    from recsys import config

    # A run on data other than $RECSYS_DATA_PATH trains that data set's own model.
    name = config.model_name_for(demo_data)
    assert name.startswith("recsys-") and name != config.model_name()
    champion = MlflowClient(isolated_mlflow).get_model_version_by_alias(name, "champion")
    assert champion.tags["recsys.decision.verdict"] == "promote"

    run_folder = Path(os.environ["RECSYS_HOME"]) / "runs"
    (recs_path,) = run_folder.glob("*/recommendations.parquet")
    recs = pd.read_parquet(recs_path)
    users = pd.read_parquet(demo_data / "interactions.parquet")[USER_COL].unique()
    per_user = recs.groupby(USER_COL).size()
    assert set(per_user.index) == set(users)
    assert (per_user == K).all()

    features = json.loads(recs_path.with_name("features.json").read_text())
    assert set(features["tables"]) == {
        "user_profiles",
        "item_features",
        "sequences",
        "item_content",
    }
    champion_run = MlflowClient(isolated_mlflow).get_run(champion.run_id)
    assert {i.dataset.name for i in champion_run.inputs.dataset_inputs} == set(features["tables"])

    related = pd.read_parquet(recs_path.with_name("related_items.parquet"))
    items = pd.read_parquet(demo_data / "items.parquet")[ITEM_COL]
    assert set(related[ITEM_COL]) <= set(items)
    assert related[ITEM_COL].nunique() >= 0.9 * len(items)  # items with content
    assert related.groupby(ITEM_COL).size().max() == K

    # The optional re-ranking step, on the same run: K per user still, and
    # the lists lean less on popular items than the champion's own order.
    from recsys import pipeline

    run_key = recs_path.parent.name
    plain = recs.merge(_popularity(recs_path), on=ITEM_COL)["popularity"].mean()
    summary = pipeline.recommend_all(run_key, k=K, rerank_strength=0.8)
    assert summary["rerank_strength"] == 0.8
    reranked = pd.read_parquet(recs_path)
    assert (reranked.groupby(USER_COL).size() == K).all()
    assert reranked.merge(_popularity(recs_path), on=ITEM_COL)["popularity"].mean() < plain


def _popularity(recs_path: Path) -> pd.DataFrame:
    train = pd.read_parquet(recs_path.with_name("train.parquet"))
    return train.groupby(ITEM_COL)[USER_COL].nunique().rename("popularity").reset_index()
