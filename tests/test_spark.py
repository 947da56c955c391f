"""RECSYS_ENGINE=spark: the same steps on Spark (local mode) give the local engine's outputs.

One Spark session serves the whole module (its settings come from
``tests/conftest.py``: ``local[2]``, no UI, two shuffle partitions). The data
is small and synthetic, with duplicate events so that de-duplication has work
to do, and both engines read the same folder: every split protocol must give
the same rows in the same order, and every feature table the same rows and
values (floats within rounding). The last test runs the whole training DAG
with the Spark engine and the ``spark_als`` model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, TIME_COL, USER_COL

pytestmark = pytest.mark.integration

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def spark():
    """The one local-mode session of this module, as the engine builds it."""
    from recsys.engines import spark as engine

    return engine.session()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Synthetic users, items and interactions, plus repeated (user, item) pairs:
    later events with another rating, and a few exact repeats (same time)."""
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset

    dataset = generate_dataset(100, 60, 1500, seed=3)
    events = dataset.interactions
    later = events.iloc[:30].assign(rating=1.0, **{TIME_COL: events[TIME_COL].iloc[:30] + 3600})
    repeats = events.iloc[40:45].assign(rating=2.0)
    dataset.interactions = pd.concat([events, later, repeats], ignore_index=True)
    return write_dataset(dataset, tmp_path_factory.mktemp("spark-data") / "data")


@pytest.fixture(scope="module")
def validated(spark, data_dir) -> dict[str, str]:
    """One validated run per engine on the same data: engine -> run key."""
    from recsys import pipeline

    keys = {}
    with pytest.MonkeyPatch.context() as mp:
        for engine in ("local", "spark"):
            mp.setenv("RECSYS_ENGINE", engine)
            keys[engine] = f"engines-{engine}"
            summary = pipeline.validate_data(keys[engine], str(data_dir))
            assert summary["engine"] == engine
    return keys


def _both(validated, monkeypatch, step, **kwargs) -> dict[str, dict]:
    out = {}
    for engine, key in validated.items():
        monkeypatch.setenv("RECSYS_ENGINE", engine)
        out[engine] = step(key, **kwargs)
    return out


def _folder(key: str):
    from recsys.pipeline import RunFolder

    return RunFolder(key)


def test_spark_validation_runs_the_same_suites_and_writes_the_same_input(validated):
    local, spark_run = _folder(validated["local"]), _folder(validated["spark"])
    reports = [run.read_json("validation.json") for run in (local, spark_run)]
    for suite in ("interactions", "items", "users"):
        a, b = (r["suites"][suite] for r in reports)
        assert (a["success"], a["row_count"], a["evaluated"]) == (
            b["success"],
            b["row_count"],
            b["evaluated"],
        ), suite
    raw = "raw/interactions.parquet"
    pd.testing.assert_frame_equal(
        pd.read_parquet(spark_run.file(raw)), pd.read_parquet(local.file(raw))
    )


def test_spark_validation_fails_a_bad_batch_like_the_local_one(spark, tmp_path, monkeypatch):
    """Negative ratings break the interactions suite on Spark too: the step raises and
    the batch is quarantined."""
    from recsys import pipeline
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.data.validation import DataValidationError

    dataset = generate_dataset(40, 30, 300, seed=1)
    dataset.interactions.loc[:4, "rating"] = -1.0
    bad = write_dataset(dataset, tmp_path / "bad")
    monkeypatch.setenv("RECSYS_ENGINE", "spark")
    with pytest.raises(DataValidationError, match=r"rating.*5 rows broke it"):
        pipeline.validate_data("engines-bad", str(bad))
    quarantined = Path(os.environ["RECSYS_HOME"]) / "quarantine" / "engines-bad"
    assert (quarantined / "report.json").is_file()


def test_with_a_pseudonym_key_spark_writes_and_reports_only_pseudonyms(
    spark, data_dir, tmp_path, monkeypatch
):
    """Under RECSYS_PSEUDONYM_KEY the Spark engine stores the same pseudonyms as the
    local one (so a model trained on either serves the same ids), and a failing
    batch's report and Data Docs name pseudonyms, never the raw user ids."""
    from recsys import pipeline
    from recsys.data.prepare import pseudonymise_ids
    from recsys.data.validation import DataValidationError

    key = "spark-pseudonym-test-key"
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", key)
    stored = {}
    for engine in ("local", "spark"):
        monkeypatch.setenv("RECSYS_ENGINE", engine)
        pipeline.validate_data(f"pseudo-{engine}", str(data_dir))
        stored[engine] = pd.read_parquet(
            _folder(f"pseudo-{engine}").file("raw/interactions.parquet")
        )
    pd.testing.assert_frame_equal(stored["spark"], stored["local"])
    raw = pd.read_parquet(data_dir / "interactions.parquet")["user_id"]
    assert set(stored["spark"]["user_id"]) == set(
        pseudonymise_ids(raw.unique().tolist(), key.encode())
    )
    assert not set(stored["spark"]["user_id"]) & set(raw)

    raw_id = "person-raw-7"
    rows = [
        {"user_id": f"u{u}", "item_id": i, "rating": 4.0, "timestamp": 1000 + u * 10 + i}
        for u in range(8)
        for i in range(6)
    ]
    # Exact repeats of one user's event break the uniqueness expectation, whose
    # examples are the repeated rows: user ids among them.
    rows += [{"user_id": raw_id, "item_id": 2, "rating": 5.0, "timestamp": 6}] * 4
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame(rows).to_parquet(bad / "interactions.parquet", index=False)
    monkeypatch.setenv("RECSYS_ENGINE", "spark")
    with pytest.raises(DataValidationError):
        pipeline.validate_data("pseudo-bad", str(bad))
    quarantine = Path(os.environ["RECSYS_HOME"]) / "quarantine" / "pseudo-bad"
    run = _folder("pseudo-bad")
    places = {
        "validation.json": run.file("validation.json").read_text(),
        "Data Docs": "\n".join(f.read_text() for f in run.data_docs.rglob("*.html")),
        "quarantine report": (quarantine / "report.json").read_text()
        + (quarantine / "summary.txt").read_text(),
    }
    pseudonym = pseudonymise_ids([raw_id], key.encode())[0]
    for where, text in places.items():
        assert raw_id not in text, where
        assert pseudonym in text, where
    assert json.loads(places["validation.json"])["pseudonymised"] is True


@pytest.mark.parametrize("protocol", ["temporal", "loo", "random", "msr", "stratified"])
def test_spark_split_equals_the_local_split(validated, monkeypatch, protocol):
    from recsys import pipeline

    infos = _both(validated, monkeypatch, pipeline.prepare_data, protocol=protocol)
    local, spark_run = _folder(validated["local"]), _folder(validated["spark"])
    for part in ("train.parquet", "test.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(spark_run.file(part)), pd.read_parquet(local.file(part))
        )
    a, b = infos["local"], infos["spark"]
    assert a["cleaning"] == b["cleaning"]
    assert a["cleaning"]["duplicates_merged"] == 35
    same = set(a) - {"data_hash", "engine"}
    assert {key: b[key] for key in same} == {key: a[key] for key in same}


def test_the_temporal_cutoff_is_the_exact_nth_smallest_time(spark):
    """The temporal split's cutoff comes from a histogram, not a global sort: still
    the exact n-th smallest time, with ties and far-apart values."""
    from recsys.engines import spark as engine

    rng = np.random.default_rng(5)
    times = np.concatenate([rng.integers(0, 10**9, 3000), np.full(500, 123_456), [10**12]])
    frame = engine.to_spark(spark, pd.DataFrame({TIME_COL: times}))
    ordered = np.sort(times)
    for n in (1, 2, 1700, 2000, len(times) - 1, len(times)):
        assert engine._nth_smallest(frame, TIME_COL, n) == ordered[n - 1], n


def test_spark_feature_tables_equal_the_local_ones(validated, monkeypatch):
    """The tables the Spark step checks and writes equal the local builders' on the
    same split (the step's cold-start fit, the same code for both, is left out)."""
    from recsys import pipeline
    from recsys.data import features
    from recsys.pipeline import spark_steps

    _both(validated, monkeypatch, pipeline.prepare_data, protocol="msr")
    local, spark_run = _folder(validated["local"]), _folder(validated["spark"])
    dataset = local.dataset()
    expected_tables = features.build_feature_tables(
        local.train(), dataset.items, dataset.users, max_len=5
    )
    paths = spark_steps.write_feature_tables(spark_run, max_len=5)
    assert (
        set(paths)
        == set(expected_tables)
        == {
            "user_profiles",
            "item_features",
            "sequences",
            "item_content",
        }
    )
    for name, path in paths.items():
        features.write_features(local.features_dir, **{name: expected_tables[name]})
        expected = pd.read_parquet(local.features_dir / f"{name}.parquet")
        got = pd.read_parquet(path)
        assert list(got.columns) == list(expected.columns), name
        assert len(got) == len(expected), name
        for col in expected.columns:
            if col == "sequence":
                assert [list(s) for s in got[col]] == [list(s) for s in expected[col]]
            elif pd.api.types.is_numeric_dtype(expected[col]):
                np.testing.assert_allclose(
                    got[col].astype(float), expected[col].astype(float), rtol=1e-9, err_msg=col
                )
            else:
                assert got[col].tolist() == expected[col].tolist(), (name, col)
    tastes = pd.read_parquet(paths["user_profiles"]).filter(like="genre_")
    assert tastes.shape[1] > 0 and np.allclose(tastes.sum(axis=1), 1.0)


def test_spark_cold_start_chain_equals_the_local_one(validated, monkeypatch):
    """The chain counted on Spark is the local engine's chain, whole ("0") and with
    its co-liked similarity learned from a sample of users (700 of about 1,500
    pairs): both engines draw the same users."""
    from recsys import pipeline
    from recsys.pipeline import steps

    _both(validated, monkeypatch, pipeline.prepare_data, protocol="temporal")
    similarities = {}
    for pairs in ("0", "700"):
        monkeypatch.setenv("RECSYS_COLD_START_PAIRS", pairs)
        chains = {}
        for engine, key in validated.items():
            monkeypatch.setenv("RECSYS_ENGINE", engine)
            chains[engine] = steps._fit_run_cold_start(_folder(key), min_segment_users=3)
        a, b = chains["local"], chains["spark"]
        pd.testing.assert_index_equal(b.item_ids, a.item_ids)
        assert b.global_pop.dtype == a.global_pop.dtype
        assert np.array_equal(b.global_pop, a.global_pop)
        assert b.user_segments == a.user_segments and len(a.user_segments) == 2
        assert {k: sorted(v) for k, v in b.segment_pop.items()} == {
            k: sorted(v) for k, v in a.segment_pop.items()
        }
        assert any(a.segment_pop.values()), "no segment reached the minimum of users"
        for kind, pops in a.segment_pop.items():
            for key, vector in pops.items():
                np.testing.assert_array_equal(b.segment_pop[kind][key], vector, err_msg=key)
        assert b.item_sim.dtype == a.item_sim.dtype and (b.item_sim != a.item_sim).nnz == 0
        assert (b.content != a.content).nnz == 0
        assert (b.item_genres[0] != a.item_genres[0]).nnz == 0
        similarities[pairs] = a.item_sim
    assert (similarities["0"] != similarities["700"]).nnz > 0  # the sample is a sample


def test_mllib_als_gets_a_block_per_core_at_least_and_ten_at_most(spark):
    from recsys.engines.spark import als_blocks

    cores = spark.sparkContext.defaultParallelism
    # One block is one task: small data still gets one per core (up to MLlib's 10).
    assert als_blocks(10_000) == min(cores, 10)
    assert als_blocks(7_500_000) == min(max(7, cores), 10)
    assert als_blocks(80_000_000) == 10


def test_spark_engine_rejects_an_unknown_engine_name(monkeypatch):
    from recsys import config
    from recsys.errors import InputError

    monkeypatch.setenv("RECSYS_ENGINE", "dask")
    with pytest.raises(InputError, match="RECSYS_ENGINE must be one of local, spark"):
        config.engine()


# ------------------------------------------------------------------ the DAG
# Two minutes on 2 cores (a whole DAG run with a JVM beside it): run by `make bench`.
@pytest.mark.slow
def test_training_dag_on_the_spark_engine_promotes_spark_als_with_spark_lists(
    spark, airflow_db, data_dir, isolated_mlflow, monkeypatch
):
    """The unchanged DAG with RECSYS_ENGINE=spark: Spark validates, splits and builds the
    features, spark_als trains beside popularity, a champion is promoted and every
    user gets K recommendations."""
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    from recsys import config

    monkeypatch.setenv("RECSYS_ENGINE", "spark")
    dag = DagBag(dag_folder=str(DAGS)).dags["recsys_training"]
    k = 5
    conf = {
        "data_path": str(data_dir),
        "k": k,
        "models": ["spark_als"],
        "protocol": "loo",
        "model_name": "recsys-spark-dag",
    }
    run = dag.test(run_conf=conf)
    assert run.state == "success"

    champion = MlflowClient(isolated_mlflow).get_model_version_by_alias(
        "recsys-spark-dag", "champion"
    )
    assert champion.tags["recsys.decision.verdict"] == "promote"
    assert champion.tags["recsys.model_type"] == "spark_als"
    folder = config.runs_root() / config.safe_name(run.run_id)
    assert json.loads((folder / "input.json").read_text())["engine"] == "spark"
    assert json.loads((folder / "split.json").read_text())["engine"] == "spark"
    result = json.loads((folder / "models" / "spark_als" / "result.json").read_text())
    assert result["metrics"]["ndcg@5"] > 0
    recs = pd.read_parquet(folder / "recommendations.parquet")
    users = pd.read_parquet(data_dir / "interactions.parquet")[USER_COL].unique()
    per_user = recs.groupby(USER_COL).size()
    assert set(per_user.index) == set(users)
    assert (per_user == k).all()
    train = pd.read_parquet(folder / "train.parquet")
    seen = set(zip(train[USER_COL], train[ITEM_COL], strict=True))
    assert not seen & set(zip(recs[USER_COL], recs[ITEM_COL], strict=True))

    # A user forgotten after training is answered as the served model answers
    # them (the cold-start chain), not from recommendForAllUsers' fitted list.
    import time

    from recsys.data.forgotten import default_list
    from recsys.pipeline import RunFolder, spark_steps

    gone = train[USER_COL].iloc[0]
    default_list().add(gone, at=time.time())
    lists = spark_steps.spark_als_lists(
        RunFolder(run.run_id), np.sort(users), k, "recsys-spark-dag"
    )
    served = lists.groupby(USER_COL)["served_by"].first()
    assert served[gone] != "model"
    assert (served.drop(gone) == "model").sum() > 0.9 * (len(served) - 1)
