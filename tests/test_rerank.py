"""Re-ranking: the knob's limits and each method's pull, on hand-made pools."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.serving.rerank import RerankInputError, rerank

ITEMS = np.array([[0, 1, 2, 3], [3, 2, -1, -1]])
SCORES = np.array([[4.0, 3.0, 2.0, 1.0], [2.0, 1.0, -np.inf, -np.inf]])
POPULARITY = np.array([100.0, 50.0, 1.0, 0.0])
# Items 0 and 1 are identical in content, 2 and 3 each unlike the rest.
FEATURES = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float))


@pytest.mark.parametrize("method", ["discount", "popularity", "mmr"])
def test_knob_zero_keeps_the_model_order(method):
    out = rerank(ITEMS, SCORES, 3, method=method, lam=0.0, popularity=POPULARITY, features=FEATURES)
    assert out.tolist() == [[0, 1, 2], [3, 2, -1]]


def test_full_popularity_penalty_puts_the_least_popular_first():
    out = rerank(ITEMS, SCORES, 4, method="popularity", lam=1.0, popularity=POPULARITY)
    assert out.tolist() == [[3, 2, 1, 0], [3, 2, -1, -1]]


def test_mmr_skips_a_near_duplicate_of_what_it_picked():
    out = rerank(ITEMS[:1], SCORES[:1], 2, method="mmr", lam=0.5, features=FEATURES)
    # After item 0, item 1 (identical) scores 0.5*0.67 - 0.5*1 < item 2's 0.5*0.33.
    assert out.tolist() == [[0, 2]]


def test_rows_keep_distinct_items_from_their_own_pool():
    rng = np.random.default_rng(0)
    items = np.argsort(rng.random((50, 4)), axis=1)
    scores = rng.random((50, 4))
    out = rerank(items, scores, 3, method="mmr", lam=0.7, features=FEATURES)
    assert all(len(set(r)) == 3 and set(r) <= set(p) for r, p in zip(out, items, strict=True))


def test_discount_lets_a_niche_item_pass_only_a_close_popular_one():
    items = np.array([[0, 2], [0, 2]])
    # User 0: the popular item barely leads; user 1: it leads by far.
    scores = np.array([[1.0, 0.9], [1.0, 0.1]])
    out = rerank(items, scores, 2, method="discount", lam=0.5, popularity=POPULARITY)
    assert out.tolist() == [[2, 0], [0, 2]]


def test_discount_keeps_negative_scores_in_model_order_among_equals():
    items = np.array([[2, 3, 1]])
    scores = np.array([[-1.0, -2.0, -3.0]])
    same_pop = np.array([5.0, 5.0, 5.0, 5.0])
    out = rerank(items, scores, 3, method="discount", lam=1.0, popularity=same_pop)
    assert out.tolist() == [[2, 3, 1]]
    # Empty slots stay empty and last.
    out = rerank(ITEMS, SCORES, 4, method="discount", lam=1.0, popularity=POPULARITY)
    assert out[1].tolist()[2:] == [-1, -1] and sorted(out[1].tolist()[:2]) == [2, 3]


def test_bad_knob_and_missing_inputs_are_named():
    with pytest.raises(RerankInputError, match="unknown re-ranking method 'fair'"):
        rerank(ITEMS, SCORES, 2, method="fair", popularity=POPULARITY)
    with pytest.raises(RerankInputError, match="method 'discount' needs the items' popularity"):
        rerank(ITEMS, SCORES, 2, lam=0.5)
    with pytest.raises(RerankInputError, match=r"lam must lie in \[0, 1\], got 1.5"):
        rerank(ITEMS, SCORES, 2, lam=1.5, popularity=POPULARITY)
    with pytest.raises(RerankInputError, match="needs item feature vectors"):
        rerank(ITEMS, SCORES, 2, method="mmr", lam=0.5)
    with pytest.raises(RerankInputError, match=r"k must lie in \[1, 4\]"):
        rerank(ITEMS, SCORES, 5, popularity=POPULARITY)


@pytest.mark.slow
def test_discount_rerank_on_ml100k_trades_little_accuracy(ml100k_dir):
    # Measured: EASE, loo split, pool 100, discount lam 0.5: -38.5% average
    # popularity for -2.1% NDCG@10.
    from recsys.pipeline.benchmark import run_benchmark

    report = run_benchmark(
        str(ml100k_dir),
        protocol="loo",
        models=["popularity"],
        cold_users=False,
        rerank={"model": "ease", "lams": (0.0, 0.5)},
    )
    base, knob = report["rerank"]["points"]
    assert base["lam"] == 0.0 and knob["lam"] == 0.5
    assert knob["popularity_change"] <= -0.30
    assert knob["ndcg_change"] >= -0.03
    assert knob["catalogue_coverage"] > base["catalogue_coverage"]


@pytest.mark.slow
def test_popularity_rerank_on_ml100k_trades_little_accuracy(ml100k_dir):
    # Measured: EASE, msr split, pool 100: lam 0.6 gives -16.6% average popularity
    # for -0.7% NDCG@10; lam 0.65 gives -25.4% for -6.5%.
    from recsys.pipeline.benchmark import run_benchmark

    report = run_benchmark(
        str(ml100k_dir),
        protocol="msr",
        models=["popularity"],
        cold_users=False,
        rerank={"model": "ease", "method": "popularity", "lams": (0.0, 0.6)},
    )
    base, knob = report["rerank"]["points"]
    assert base["lam"] == 0.0 and knob["lam"] == 0.6
    assert knob["popularity_change"] <= -0.15
    assert knob["ndcg_change"] >= -0.01
    assert knob["catalogue_coverage"] > base["catalogue_coverage"]


def test_rerank_frame_reorders_each_users_pool_and_renumbers_ranks():
    import pandas as pd

    from recsys.serving.rerank import rerank_frame

    recs = pd.DataFrame(
        {
            "user_id": ["b", "b", "b", "a", "a"],
            "item_id": [10, 11, 12, 10, 12],
            "score": [1.0, 0.95, 0.2, 1.0, 0.1],
            "rank": [1, 2, 3, 1, 2],
            "served_by": ["model"] * 5,
        }
    )
    popularity = pd.Series({10: 99.0, 11: 0.0})  # item 12 unknown: counts as 0
    out = rerank_frame(recs, popularity, 2, lam=0.5)
    # b: 11 (0.95 / 1) and 12 (0.2 / 1) pass 10 (1 / sqrt(100)); a: 10 and 12
    # tie at 0.1 and keep the model's order.
    assert out[["user_id", "item_id", "rank"]].values.tolist() == [
        ["b", 11, 1],
        ["b", 12, 2],
        ["a", 10, 1],
        ["a", 12, 2],
    ]
    assert out["served_by"].tolist() == ["model"] * 4
    assert rerank_frame(recs, popularity, 3, lam=0.0)["item_id"].tolist() == [10, 11, 12, 10, 12]
    with pytest.raises(RerankInputError, match=r"lack column\(s\) \['score'\]"):
        rerank_frame(recs.drop(columns="score"), popularity, 2, lam=0.5)
    with pytest.raises(RerankInputError, match="'mmr' needs content vectors"):
        rerank_frame(recs, popularity, 2, method="mmr", lam=0.5)
