"""Evaluation at the id edge: recommendation frames, holdout metrics, the MSR benchmark."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RANK_COL, RECOMMENDATION_COLS, SCORE_COL, USER_COL
from recsys.evaluation.holdout import (
    EvaluationInputError,
    evaluate_model,
    evaluate_recommendations,
    recommend_frame,
)
from recsys.evaluation.metrics import MetricInputError
from recsys.ids import IdMap
from recsys.models import make_model

# Item popularity in TRAIN: a=3, b=2, c=1, d=0 (d only appears via extra_items).
TRAIN = pd.DataFrame(
    {
        USER_COL: ["u1", "u1", "u2", "u2", "u3", "u3"],
        ITEM_COL: ["a", "b", "a", "c", "a", "b"],
        "rating": [5.0, 4.0, 3.0, 2.0, 1.0, 5.0],
    }
)
ID_MAP = IdMap.from_frame(TRAIN, extra_items=pd.Index(["d"]))
X = ID_MAP.to_matrix(TRAIN)


@pytest.fixture(scope="module")
def popularity():
    return make_model("popularity").fit(X)


def test_recommend_frame_long_format_with_ids(popularity):
    frame = recommend_frame(popularity, X, ID_MAP, users=["u2", "u1"], k=2)
    assert list(frame.columns) == list(RECOMMENDATION_COLS)
    assert frame[[USER_COL, ITEM_COL, RANK_COL]].values.tolist() == [
        ["u2", "b", 1],
        ["u2", "d", 2],
        ["u1", "c", 1],
        ["u1", "d", 2],
    ]
    assert frame[SCORE_COL].tolist() == [2.0, 0.0, 1.0, 0.0]


def test_recommend_frame_drops_empty_slots(popularity):
    frame = recommend_frame(popularity, X, ID_MAP, k=10)
    assert frame.groupby(USER_COL).size().to_dict() == {"u1": 2, "u2": 2, "u3": 2}
    assert frame[RANK_COL].max() == 2


def test_recommend_frame_without_filtering_returns_seen_items(popularity):
    frame = recommend_frame(popularity, X, ID_MAP, users="u1", k=1, filter_seen=False)
    assert frame[ITEM_COL].tolist() == ["a"]


def test_recommend_frame_unknown_user_raises(popularity):
    with pytest.raises(
        EvaluationInputError,
        match=r"^1 requested user\(s\) are not in the id "
        r"map, e.g. \['zz'\]$",
    ):
        recommend_frame(popularity, X, ID_MAP, users=["u1", "zz"])


def test_evaluate_model_hand_computed(popularity):
    # u1 gets [c, d]: test {c} -> hit at rank 1.  u2 gets [b, d]: test {d, e};
    # e is unknown to training (relevant, unrecoverable) -> hit at rank 2.
    # u4 is a cold user; its row is excluded and counted.
    test = pd.DataFrame(
        {USER_COL: ["u1", "u1", "u2", "u2", "u4"], ITEM_COL: ["c", "c", "d", "e", "a"]}
    )
    m = evaluate_model(popularity, X, test, ID_MAP, k=2)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    ndcg_u2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@2"] == pytest.approx((1 + ndcg_u2) / 2)
    assert m["mrr@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert m["coverage"] == pytest.approx(3 / 4)  # b, c, d of a..d
    assert m["n_users_evaluated"] == 2
    assert m["n_cold_users"] == 1
    assert m["n_unknown_item_rows"] == 1


def test_evaluate_model_known_user_without_training_rows_is_cold(popularity):
    id_map = IdMap(users=pd.Index(["u1", "u2", "u3", "u9"]), items=ID_MAP.items)
    X9 = id_map.to_matrix(TRAIN)
    model = make_model("popularity").fit(X9)
    test = pd.DataFrame({USER_COL: ["u1", "u9"], ITEM_COL: ["c", "c"]})
    m = evaluate_model(model, X9, test, id_map, k=2)
    assert m["n_cold_users"] == 1
    assert m["n_users_evaluated"] == 1


def test_evaluate_model_only_cold_users_raises(popularity):
    test = pd.DataFrame({USER_COL: ["zz"], ITEM_COL: ["a"]})
    with pytest.raises(EvaluationInputError, match="^no test user has training interactions"):
        evaluate_model(popularity, X, test, ID_MAP)


def test_evaluate_model_missing_column_raises(popularity):
    with pytest.raises(EvaluationInputError, match=r"^test frame lacks column\(s\) \['item_id'\]$"):
        evaluate_model(popularity, X, pd.DataFrame({USER_COL: ["u1"]}), ID_MAP)


def test_evaluate_does_not_mutate_inputs(popularity):
    test = pd.DataFrame({USER_COL: ["u1", "u2"], ITEM_COL: ["c", "d"]})
    before = test.copy()
    evaluate_model(popularity, X, test, ID_MAP, k=2)
    evaluate_recommendations(recommend_frame(popularity, X, ID_MAP, k=2), test, 2, 4)
    pd.testing.assert_frame_equal(test, before)


def test_evaluate_recommendations_agrees_with_evaluate_model(popularity):
    test = pd.DataFrame({USER_COL: ["u1", "u2", "u2", "u3"], ITEM_COL: ["c", "d", "b", "d"]})
    frame = recommend_frame(popularity, X, ID_MAP, k=2)
    from_frame = evaluate_recommendations(frame, test, k=2, n_items=ID_MAP.n_items)
    direct = evaluate_model(popularity, X, test, ID_MAP, k=2)
    for key in ("precision@2", "recall@2", "ndcg@2", "map@2", "mrr@2", "hit_rate@2", "coverage"):
        assert from_frame[key] == pytest.approx(direct[key]), key


def test_evaluate_recommendations_orders_by_rank_or_score():
    test = pd.DataFrame({USER_COL: ["x"], ITEM_COL: ["i2"]})
    by_rank = pd.DataFrame({USER_COL: ["x", "x"], ITEM_COL: ["i1", "i2"], RANK_COL: [2, 1]})
    assert evaluate_recommendations(by_rank, test, k=1, n_items=2)["precision@1"] == 1.0
    by_score = pd.DataFrame({USER_COL: ["x", "x"], ITEM_COL: ["i1", "i2"], SCORE_COL: [0.9, 0.1]})
    assert evaluate_recommendations(by_score, test, k=1, n_items=2)["precision@1"] == 0.0


def test_evaluate_recommendations_user_without_recs_scores_zero():
    test = pd.DataFrame({USER_COL: ["x", "y"], ITEM_COL: ["i1", "i1"]})
    recs = pd.DataFrame({USER_COL: ["x"], ITEM_COL: ["i1"], RANK_COL: [1]})
    m = evaluate_recommendations(recs, test, k=1, n_items=5)
    assert m["hit_rate@1"] == 0.5
    assert m["n_users_without_recs"] == 1
    assert m["coverage"] == 0.2


def test_evaluate_recommendations_needs_rank_or_score():
    test = pd.DataFrame({USER_COL: ["x"], ITEM_COL: ["i1"]})
    recs = pd.DataFrame({USER_COL: ["x"], ITEM_COL: ["i1"]})
    with pytest.raises(EvaluationInputError, match="^recs needs a 'rank' or a 'score' column$"):
        evaluate_recommendations(recs, test, k=1, n_items=1)


def test_evaluate_recommendations_rejects_repeated_items():
    test = pd.DataFrame({USER_COL: ["x"], ITEM_COL: ["i1"]})
    recs = pd.DataFrame({USER_COL: ["x", "x"], ITEM_COL: ["i1", "i1"], RANK_COL: [1, 2]})
    with pytest.raises(MetricInputError, match="recommends the same item more than once"):
        evaluate_recommendations(recs, test, k=2, n_items=1)


def test_popularity_matches_microsoft_recommenders_on_ml100k(ml100k_dir):
    """The MSR split and our metrics reproduce Microsoft Recommenders' popularity baseline."""
    from recsys.data.splits import split_interactions

    df = pd.read_csv(
        ml100k_dir / "u.data", sep="\t", names=[USER_COL, ITEM_COL, "rating", "timestamp"]
    )
    train, test = split_interactions(df, "msr")
    id_map = IdMap.from_frame(train)
    train_X = id_map.to_matrix(train)
    m = evaluate_model(make_model("popularity").fit(train_X), train_X, test, id_map, k=10)
    assert m["ndcg@10"] == pytest.approx(0.2524, abs=0.002)
    assert m["precision@10"] == pytest.approx(0.2287, abs=0.002)
    assert m["recall@10"] == pytest.approx(0.1132, abs=0.002)
    assert m["n_cold_users"] == 0


def test_time_matrix_keeps_each_pairs_latest_time_and_skips_missing_ones():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "item_id": [1, 1, 2, 2, 3],
            "timestamp": pd.array([10, 30, 20, None, 5], dtype="Int64"),
        }
    )
    ids = IdMap.from_frame(frame)
    T = ids.time_matrix(frame)
    assert T.dtype == np.float64
    assert T.toarray().tolist() == [[30.0, 20.0, 0.0], [0.0, 0.0, 5.0]]
    assert ids.time_matrix(frame.drop(columns="timestamp")) is None


def test_a_large_holdout_is_scored_on_a_seeded_sample_of_its_users(monkeypatch):
    """Past RECSYS_EVAL_MAX_USERS test users a run scores a seeded sample: whole
    users, the same ones at every read (every model and the champion meet them),
    recorded in the split; the training rows stay whole."""
    from recsys import config
    from recsys.errors import InputError
    from recsys.training.data import TrainingData, sample_test_users

    rows = pd.DataFrame({"user_id": np.repeat(np.arange(100), 2), "item_id": np.arange(200)})
    data = TrainingData(rows, rows, None, None, None, {"protocol": "temporal"})
    first, again = sample_test_users(data, 30), sample_test_users(data, 30)
    assert first.test["user_id"].nunique() == 30
    assert (first.test.groupby("user_id").size() == 2).all()
    pd.testing.assert_frame_equal(first.test, again.test)
    assert first.train is rows
    assert first.split == {
        "protocol": "temporal",
        "evaluation_sample": {"users": 30, "of_users": 100, "seed": 0},
    }
    assert sample_test_users(data, 100) is data and sample_test_users(data, None) is data

    monkeypatch.delenv("RECSYS_EVAL_MAX_USERS", raising=False)
    assert config.eval_max_users() == 20_000
    monkeypatch.setenv("RECSYS_EVAL_MAX_USERS", "0")
    assert config.eval_max_users() is None
    monkeypatch.setenv("RECSYS_EVAL_MAX_USERS", "lots")
    with pytest.raises(InputError, match="RECSYS_EVAL_MAX_USERS must be a whole number"):
        config.eval_max_users()
