"""The build_features step: tables written and described, a broken table stopping the
step, and the tables reaching the models and their MLflow runs.

Runs are real: a small generated data set goes through validate_data and
prepare_data in a throw-away RECSYS_HOME, and MLflow is a fresh SQLite store.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from recsys import pipeline
from recsys.data.features import TABLE_SUITES, FeatureValidationError, feature_hash
from recsys.pipeline import RunFolder

MAX_LEN = 5
RUN = "features-run"


def _dataset(seed: int = 1):
    from recsys.data.generate import generate_dataset

    dataset = generate_dataset(40, 30, 600, seed=seed)
    # user 1 is missing from the users table, so its demographics are null
    dataset.users = dataset.users[dataset.users["user_id"] != 1].reset_index(drop=True)
    return dataset


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("home")
        patch.setenv("RECSYS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def built(home, tmp_path_factory) -> dict:
    from recsys.data.loaders import write_dataset

    data = write_dataset(_dataset(), tmp_path_factory.mktemp("data"))
    pipeline.validate_data(RUN, str(data))
    pipeline.prepare_data(RUN)
    return pipeline.build_features(RUN, max_len=MAX_LEN)


def test_build_features_writes_every_table_and_describes_it(built):
    run = RunFolder(RUN).path
    assert set(built["tables"]) == set(TABLE_SUITES)
    assert json.loads((run / "features.json").read_text()) == built
    for name, table in built["tables"].items():
        stored = pd.read_parquet(run / "features" / f"{name}.parquet")
        assert table["path"] == f"features/{name}.parquet"
        assert table["rows"] == len(stored) > 0
        assert table["columns"] == list(stored.columns)
        assert table["feature_hash"] == feature_hash(stored)
        assert table["suite"] == TABLE_SUITES[name]


def test_tables_cover_the_training_split_only(built):
    run = RunFolder(RUN).path
    train = pd.read_parquet(run / "train.parquet")
    profiles = pd.read_parquet(run / "features" / "user_profiles.parquet")
    assert profiles["user_id"].tolist() == sorted(train["user_id"].unique())
    assert profiles["n_interactions"].sum() == len(train)
    sequences = pd.read_parquet(run / "features" / "sequences.parquet")
    assert sequences["sequence_length"].max() == MAX_LEN  # long histories were cut
    assert (sequences["sequence"].map(len) == sequences["sequence_length"]).all()


def test_a_rerun_writes_the_same_tables(built):
    assert pipeline.build_features(RUN, max_len=MAX_LEN) == built


def test_a_table_that_breaks_its_suite_stops_the_step_and_leaves_nothing(home, built):
    from recsys.data.loaders import write_dataset

    key = "features-broken"
    run = RunFolder(key).path
    dataset = _dataset()
    write_dataset(dataset, run / "raw")
    pipeline.prepare_data(key)
    pipeline.build_features(key, max_len=MAX_LEN)  # a good first attempt...
    assert (run / "features.json").exists()
    # ...then the raw users change (the users suite would stop this at validate;
    # the feature suite is the second line of defence) and the step is rerun
    dataset.users.loc[0, "age"] = 150
    write_dataset(dataset, run / "raw")
    with pytest.raises(FeatureValidationError) as err:
        pipeline.build_features(key, max_len=MAX_LEN)
    assert err.value.tables == ["user_profiles"]
    message = str(err.value)
    assert "feature table(s) user_profiles broke" in message
    assert "[features_users] age: expect_column_values_to_be_between: 1 row broke it" in message
    assert not (run / "features").exists()
    assert not (run / "features.json").exists()
    assert pipeline.load_training_data(key).context.user_features is None


def test_fit_context_holds_the_features_by_matrix_index(built):
    data = pipeline.load_training_data(RUN)
    users, items = data.context.user_features, data.context.item_features
    assert list(users.index) == list(range(data.id_map.n_users))
    assert list(items.index) == list(range(data.id_map.n_items))
    # row r is matrix row r: its interaction count is that row's non-zeros
    assert users["n_interactions"].to_numpy() == pytest.approx(np.diff(data.X.indptr))
    assert items["popularity"].to_numpy() == pytest.approx(np.diff(data.X.tocsc().indptr))
    assert not users.isna().any().any() and not items.isna().any().any()
    user_1 = data.id_map.user_index([1])[0]
    assert user_1 >= 0 and users.loc[user_1, "gender"] == "unknown"


def test_training_data_without_features_has_none(built):
    from recsys.data.loaders import load_dataset
    from recsys.training.data import build_training_data

    run = RunFolder(RUN).path
    data = build_training_data(
        pd.read_parquet(run / "train.parquet"),
        pd.read_parquet(run / "test.parquet"),
        load_dataset(run / "raw", "recsys"),
        {},
    )
    assert data.context.user_features is None and data.context.item_features is None


def test_train_model_logs_the_feature_tables_as_dataset_inputs(built, isolated_mlflow):
    from mlflow import MlflowClient

    from recsys.registry import DIGEST_LENGTH, TAG_INPUT_HASH

    result = pipeline.train_model(RUN, "popularity", k=5)
    inputs = MlflowClient(isolated_mlflow).get_run(result["run_id"]).inputs.dataset_inputs
    logged = {i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags}) for i in inputs}
    assert set(logged) == set(built["tables"])
    for name, table in built["tables"].items():
        digest, tags = logged[name]
        assert digest == table["feature_hash"][:DIGEST_LENGTH]
        assert tags[TAG_INPUT_HASH] == table["feature_hash"]
        assert tags["mlflow.data.context"] == "features"
    source = json.loads(next(i for i in inputs if i.dataset.name == "sequences").dataset.source)
    assert os.path.samefile(source["uri"], RunFolder(RUN).path / "features/sequences.parquet")


def test_the_rankers_step_takes_the_models_the_run_trained_before_it(built, isolated_mlflow):
    from recsys.models.base import load_saved

    pipeline.train_model(RUN, "popularity", k=5)
    quick = {"generators": ["popularity", "ease"], "n_bags": 1, "n_folds": 1, "max_rounds": 10}
    pipeline.train_model(RUN, "ranker", params=quick, k=5)
    run = RunFolder(RUN)
    ranker = load_saved(run.saved_model_dir("ranker"))
    popularity = load_saved(run.saved_model_dir("popularity"))
    # The run's popularity is the generator; EASE, which the run did not train, was fitted.
    assert ranker.reused_ == ["popularity"]
    np.testing.assert_array_equal(
        ranker.generators_["popularity"].item_scores_, popularity.item_scores_
    )
