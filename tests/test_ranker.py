"""The two-stage XGBoost ranker: the carve, features, tuning, determinism."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from walk_data import walks

from recsys.models import make_model
from recsys.models.base import FitContext, _dense_top_k
from recsys.models.ranker import (
    XGBRankerRecommender,
    feature_names,
    fused_params,
    parse_generator,
    plot_feature_importances,
    split_at_cutoff,
    split_history,
)

TINY = {
    "generators": ("popularity", "itemknn", "ease"),
    "n_candidates": 6,
    "n_folds": 2,
    "n_bags": 3,
    "param_grid": {"max_depth": (2, 3), "learning_rate": (0.3,), "min_child_weight": (0.0,)},
    "max_rounds": 15,
    "n_jobs": 1,
    "generator_params": {"ease": {"l2": 1.0}, "itemknn": {"k_neighbours": 5}},
}


def blocks(n_users: int = 40, n_items: int = 24, seed: int = 0):
    """Three taste blocks of items; each user likes most of one block, and a few
    popular items of another. Sequences are random orders of each user's items."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):  # tiny fixture: a loop is clearer than a matrix trick here
        block = u % 3
        liked = [i for i in range(n_items) if i % 3 == block and rng.random() < 0.7]
        liked += [i for i in (0, 1, 2) if i % 3 != block and rng.random() < 0.3]
        rows += [u] * len(liked)
        cols += liked
    X = sp.csr_matrix(
        (np.full(len(rows), 4.0, dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    seqs = [rng.permutation(X[u].indices).astype(np.int64) for u in range(n_users)]
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "genres": [["A", "B", "C"][i % 3] for i in range(n_items)],
            "year": 1990 + np.arange(n_items),
        }
    )
    return X, FitContext(sequences=seqs, items=items)


@pytest.fixture(scope="module")
def fitted():
    X, ctx = blocks()
    return XGBRankerRecommender(**TINY).fit(X, ctx), X, ctx


def test_split_history_by_time_hand_checked():
    X = sp.csr_matrix(np.array([[1, 2, 3, 4], [0, 5, 0, 0]], dtype=np.float32))
    seqs = [np.array([2, 0, 1, 3]), np.array([1])]
    early, labels = split_history(X, seqs, 0.5)
    assert labels.toarray().tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]
    assert early.toarray().tolist() == [[1, 0, 3, 0], [0, 5, 0, 0]]


def test_split_history_random_folds_partition_each_history():
    X, ctx = blocks()
    parts = [
        split_history(X, ctx.sequences, 0.2, how="random", seed=3, n_folds=3, fold=f)[1]
        for f in range(3)
    ]
    total = sum(p for p in parts)
    assert total.max() == 1  # disjoint
    assert (total != 0).sum() == sum(X[u].nnz for u in range(X.shape[0]) if X[u].nnz >= 2)
    again = split_history(X, ctx.sequences, 0.2, how="random", seed=3, n_folds=3, fold=1)[1]
    assert (again != parts[1]).nnz == 0


def test_split_at_cutoff_holds_out_the_last_stretch_of_everyone_hand_checked():
    X = sp.csr_matrix(
        np.array([[1, 2, 3, 0], [0, 5, 0, 6], [0, 0, 0, 7], [8, 0, 0, 0]], dtype=np.float32)
    )
    # Latest-time per pair; the cutoff at 50 % of the 7 times lies at 40.
    T = sp.csr_matrix(
        np.array([[10, 50, 20, 0], [0, 30, 0, 70], [0, 0, 0, 60], [40, 0, 0, 0]], dtype=float)
    )
    early, labels = split_at_cutoff(X, T, 0.5)
    # User 0 and 1 had something before it; user 2's only pair came after, so it
    # stays early (a cold user would teach nothing), and user 3 ended before it.
    assert labels.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0] * 4]
    assert early.toarray().tolist() == [[1, 0, 3, 0], [0, 5, 0, 0], [0, 0, 0, 7], [8, 0, 0, 0]]
    with pytest.raises(ValueError, match="holdout='cutoff' needs timestamps"):
        split_at_cutoff(X, None, 0.5)


def test_ranker_learns_from_a_cutoff_carve_and_refuses_an_unknown_holdout():
    X, ctx = blocks()
    rng = np.random.default_rng(5)
    times = X.copy()
    times.data = rng.uniform(1e9, 2e9, times.nnz)
    ctx = dataclasses.replace(ctx, timestamps=times)
    model = XGBRankerRecommender(**{**TINY, "holdout": "cutoff", "n_folds": 1}).fit(X, ctx)
    top, _ = model.recommend(np.arange(X.shape[0]), X, 3)
    # Each user's list comes mostly from their own block of items.
    assert np.mean(top % 3 == (np.arange(X.shape[0]) % 3)[:, None]) > 0.6
    with pytest.raises(ValueError, match="holdout must be 'random', 'time' or 'cutoff'"):
        XGBRankerRecommender(**{**TINY, "holdout": "clock", "n_folds": 1}).fit(X, ctx)


def test_split_history_rejects_unknown_mode():
    X, ctx = blocks()
    with pytest.raises(ValueError, match="how must be 'time' or 'random', got 'x'"):
        split_history(X, ctx.sequences, 0.2, how="x")


def test_recommends_the_users_block(fitted):
    model, X, _ = fitted
    items, _ = model.recommend(np.arange(X.shape[0]), X, k=2)
    same_block = (items % 3) == (np.arange(X.shape[0]) % 3)[:, None]
    assert same_block[:, 0].mean() >= 0.9


def test_importances_tuning_and_final_generators(fitted):
    model, X, _ = fitted
    assert (
        list(model.feature_importances_)
        == model.feature_names_
        == feature_names(TINY["generators"])
    )
    assert all(v >= 0 for v in model.feature_importances_.values())
    assert sum(model.feature_importances_.values()) > 0
    # two grid settings on the first bag's carve, then one run per further bag
    assert len(model.validation_) == 2 + 2
    assert [v.get("bag") for v in model.validation_[2:]] == [1, 2]
    assert model.best_params_["max_depth"] in (2, 3) and "n_rounds" not in model.best_params_
    assert len(model.boosters_) == 3 and all(n >= 1 for n in model.n_rounds_)
    # scoring generators were refitted on all of X, not on the carve
    counts = np.bincount(X.indices, minlength=X.shape[1])
    np.testing.assert_array_equal(model.generators_["popularity"].item_scores_, counts)


def test_same_seed_same_scores(fitted):
    model, X, ctx = fitted
    again = XGBRankerRecommender(**TINY).fit(X, ctx)
    users = np.arange(X.shape[0])
    np.testing.assert_array_equal(model._score(users, X), again._score(users, X))


def test_candidates_outscore_every_other_item(fitted):
    model, X, _ = fitted
    scores = model._score(np.array([0]), X)[0]
    unseen = np.setdiff1d(np.arange(X.shape[1]), X[0].indices)
    n_cand = (scores > scores[unseen].min()).sum()
    assert n_cand >= TINY["n_candidates"]
    assert np.isfinite(scores).all()


def test_lists_ranked_among_candidates_equal_the_dense_scores_lists(fitted):
    """recommend ranks candidates alone (no dense row per user); its lists must be
    what ranking the dense scores gives, also past the candidates (a user who has
    seen nearly every item) and with seen items allowed back."""
    model, X, _ = fitted
    crowded = X.tolil()
    crowded[1, :] = 1.0
    crowded[1, [3, 7]] = 0.0
    crowded = crowded.tocsr()
    users = np.arange(X.shape[0])
    for data, k in ((X, 10), (crowded, 10), (X, 40)):
        for filter_seen in (True, False):
            dense = _dense_top_k(model, users, data, min(k, X.shape[1]), filter_seen)
            items, scores = model.recommend(users, data, k=k, filter_seen=filter_seen)
            np.testing.assert_array_equal(items, dense[0])
            np.testing.assert_array_equal(scores, dense[1])
    items, _ = model.recommend(np.array([1]), crowded, k=5)
    assert items[0, :2].tolist() == [3, 7] and (items[0, 2:] == -1).all()


def test_save_load_round_trip(fitted, tmp_path):
    model, X, _ = fitted
    loaded = XGBRankerRecommender.load(model.save(tmp_path / "ranker"))
    np.testing.assert_array_equal(
        loaded.recommend([1, 2], X, k=5)[0], model.recommend([1, 2], X, k=5)[0]
    )


def test_plot_feature_importances(fitted):
    fig = plot_feature_importances(fitted[0], top=5)
    assert len(fig.axes[0].patches) == 5


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"objective": "rank:map"},
            "objective must be 'rank:ndcg' or 'rank:pairwise', got 'rank:map'",
        ),
        (
            {"n_folds": 3, "holdout": "time"},
            "n_folds must be 1, or > 1 with holdout='random'; got 3 with holdout='time'",
        ),
        ({"generators": ("ranker",)}, "ranker cannot use itself as a generator"),
        ({"generators": ("sharp:ranker",)}, "ranker cannot use itself as a generator"),
        (
            {"generators": ("ease", "ease:ease")},
            "generator labels must be unique, got ['ease', 'ease']",
        ),
        (
            {"generators": (":ease",)},
            "generator entry must be 'model' or 'label:model', got ':ease'",
        ),
        ({"label_share": 1.0}, "label_share must lie in (0, 1), got 1.0"),
        ({"n_bags": 0}, "n_bags must be >= 1, got 0"),
    ],
)
def test_bad_parameters_raise(params, message):
    X, ctx = blocks()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_model("ranker", **params).fit(X, ctx)


def test_parse_generator_labels():
    assert parse_generator("ease") == ("ease", "ease")
    assert parse_generator("ease_sharp:ease") == ("ease_sharp", "ease")
    assert feature_names(("pop:popularity",))[:3] == ["pop_rank", "pop_score_ratio", "pop_score_z"]


def test_one_model_serves_twice_under_two_labels():
    X, ctx = blocks()
    params = {
        **TINY,
        "generators": ("ease", "ease_sharp:ease"),
        "generator_params": {"ease": {"l2": 50.0}, "ease_sharp": {"l2": 1.0}},
    }
    model = XGBRankerRecommender(**params).fit(X, ctx)
    assert list(model.generators_) == ["ease", "ease_sharp"]
    assert (model.generators_["ease"].l2, model.generators_["ease_sharp"].l2) == (50.0, 1.0)
    assert "ease_sharp_rank" in model.feature_importances_


def test_time_features_hand_checked_and_blind_to_held_out_pairs():
    from recsys.models.ranker import _DAY, TIME_FEATURES, _Times

    # User 0 is active on days 0-1; user 1 on day 100. Item 0 is seen on days 0
    # and 100, item 1 on day 1 only. User 1's pair with item 1 at day 100 is in
    # the timestamps but not in X (a held-out label): it must not count.
    X = sp.csr_matrix(np.array([[1, 1], [1, 0]], dtype=np.float32))
    T = sp.csr_matrix(np.array([[0.0, 1.0], [100.0, 100.0]]) * _DAY + 1e9)
    times = _Times.build(X, T)
    feats = times.features(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert feats.shape == (4, len(TIME_FEATURES))
    # 7-day window: user 0 sees items 0 and 1 once each (2 interactions in the
    # window); user 1 sees only item 0 (item 1's day-100 pair is held out).
    np.testing.assert_allclose(feats[:, 0], [0.5, 0.5, 1.0, 0.0])
    # Days from the user's last activity to the item's first, and from the
    # item's last to the user's first.
    np.testing.assert_allclose(feats[:, 2], [-1.0, 0.0, -100.0, -99.0])
    np.testing.assert_allclose(feats[:, 3], [-100.0, -1.0, 0.0, 99.0])


def test_ranker_learns_without_timestamps_and_with_them(fitted):
    model, X, ctx = fitted
    # The fixture has no timestamps: the time features are all NaN and unused.
    time_cols = [
        model.feature_names_.index(f)
        for f in ("item_window_share_7d", "item_first_after_user_days")
    ]
    feats, _, _ = model._features(np.arange(3), X)  # noqa: SLF001
    assert np.isnan(feats[:, time_cols]).all()
    stamps = sp.csr_matrix(
        (np.arange(X.nnz, dtype=np.float64) * 3600 + 1e9, X.indices, X.indptr), shape=X.shape
    )
    ctx_t = dataclasses.replace(ctx, timestamps=stamps)
    timed = XGBRankerRecommender(**TINY).fit(X, ctx_t)
    feats, _, _ = timed._features(np.arange(3), X)  # noqa: SLF001
    assert np.isfinite(feats[:, time_cols]).all()
    with pytest.raises(ValueError, match=r"context.timestamps has shape \(2, 2\)"):
        XGBRankerRecommender(**TINY).fit(
            X, dataclasses.replace(ctx, timestamps=sp.csr_matrix((2, 2)))
        )


def test_bags_learn_from_different_users_and_scores_average_them(fitted):
    import xgboost as xgb

    model, X, ctx = fitted
    feats, _, _ = model._features(np.arange(X.shape[0]), X)  # noqa: SLF001
    dm = xgb.DMatrix(feats, feature_names=model.feature_names_)
    preds = [b.predict(dm) for b in model.boosters_]
    assert not np.allclose(preds[0], preds[1])
    one = XGBRankerRecommender(**{**TINY, "n_bags": 1}).fit(X, ctx)
    np.testing.assert_allclose(one.boosters_[0].predict(dm), preds[0], rtol=1e-6)


def test_later_bags_boost_the_first_bags_rounds_and_are_validated_once(fitted):
    model, _, _ = fitted
    assert len(model.boosters_) == TINY["n_bags"]
    assert model.n_rounds_ == [model.n_rounds_[0]] * TINY["n_bags"]
    bags = [v for v in model.validation_ if "bag" in v]
    assert [v["bag"] for v in bags] == [1, 2]
    assert all(v["n_rounds"] == model.n_rounds_[0] and 0.0 <= v["ndcg@10"] <= 1.0 for v in bags)


def test_taste_features_hand_checked():
    from recsys.models.ranker import TASTE_FEATURES, _Taste

    # user 0 has items 0 and 1, user 1 items 0 and 2; item 2's year is unknown.
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1]], dtype=np.float32))
    years = np.array([1990.0, 2000.0, np.nan])
    genres = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))  # A, B
    taste = _Taste.build(X, years, genres, [np.array([0, 1])])
    f = dict(
        zip(
            [*TASTE_FEATURES, "segment"],
            taste.features(X, np.array([0, 1]), np.array([1, 0]), np.array([1, 2])).T,
            strict=True,
        )
    )
    # pair 0: user 1 with item 1 (year 2000, genre B); pair 1: user 0 with item 2
    assert f["year_gap"][0] == 10.0 and f["user_year_mean"][0] == 1990.0
    assert f["year_z"][0] == 10.0  # the user's years have sd 0; the +1 keeps it finite
    assert np.isnan(f["year_z"][1]) and f["decade_share"][1] == 0.0
    assert f["decade_share"][0] == 0.0  # user 1 has nothing from the 2000s
    # user 1's genres A 2 + 0.5, B 1 + 0.5; the catalogue's (by interactions) A 3.5, B 2.5
    np.testing.assert_allclose(f["genre_lift"][0], np.log((1.5 / 4) / (2.5 / 6)))
    pop = np.log1p([2.0, 1.0, 1.0])
    mean, sd = (pop[0] + pop[2]) / 2, (pop[0] - pop[2]) / 2
    np.testing.assert_allclose(f["popularity_gap"][0], abs(pop[1] - mean))
    np.testing.assert_allclose(f["popularity_z"][0], (pop[1] - mean) / (sd + 0.1))
    # segment lift: item's share (add-one) among the segment over its overall share
    # (each user is alone in their segment and lacks the item: 0 + 1 of 5 there,
    # against 1 + 1 of 7 overall)
    np.testing.assert_allclose(f["segment"], [(1 / 5) / (2 / 7)] * 2)


def test_segment_codes_bin_numbers_and_mark_unknowns():
    from recsys.models.ranker import _segment_codes

    users = pd.DataFrame(
        {
            "age": [15, 22, 31, 40, 52, 63, 70, 18, 45, np.nan],
            "gender": ["F", "M", "M", "F", None, "M", "F", "M", "F", "M"],
        }
    )
    age, gender, missing = _segment_codes(
        FitContext(user_features=users), 10, ("age", "gender", "zip")
    )
    assert age[-1] == -1 and gender[4] == -1 and (missing == -1).all()
    assert len(set(age[:-1])) == 5
    # each bin is an age interval: along sorted ages the code changes only between bins
    by_age = age[:-1][np.argsort(users["age"].to_numpy()[:-1])]
    assert (np.diff(by_age) != 0).sum() == 5 - 1
    assert gender[0] == gender[3] != gender[1] == gender[2]


def test_segment_lifts_reach_the_features_when_users_are_known(fitted):
    model, X, ctx = fitted
    col = model.feature_names_.index("segment_lift_gender")
    feats, _, _ = model._features(np.arange(3), X)  # noqa: SLF001
    assert np.isnan(feats[:, col]).all()  # the fixture has no user table
    users = pd.DataFrame({"gender": ["F", "M"] * (X.shape[0] // 2)})
    known = XGBRankerRecommender(**TINY).fit(
        X, FitContext(sequences=ctx.sequences, user_features=users, items=ctx.items)
    )
    feats, _, _ = known._features(np.arange(3), X)  # noqa: SLF001
    assert np.isfinite(feats[:, col]).all()


def test_at_scale_the_ranker_learns_from_one_fold_and_a_sample_of_users(caplog):
    X, ctx = blocks(n_users=60)
    with caplog.at_level("INFO", logger="recsys.progress"):
        model = XGBRankerRecommender(**{**TINY, "n_folds": 3}, large_data=10, max_users=12)
        model.fit(X, ctx)
    said = caplog.text
    assert "learning from 1 of its 3 folds" in said
    assert "learning from a sample of 12 of the" in said
    assert "ranker: candidate folds built 1/1" in said
    items, _ = model.recommend(np.arange(6), X, k=3)
    assert (items >= 0).all()


def test_fused_params_add_the_runs_sequential_models_as_generators():
    from recsys.models.ranker import DEFAULT_GENERATORS

    models = ["ease", "als", "attention", "ranker"]
    # A random holdout: the order says nothing about the test items; nothing fused.
    assert fused_params(models, protocol="msr") == {}
    assert fused_params(models, protocol="random", params={"n_bags": 2}) == {"n_bags": 2}
    # A time-ordered test: the ranker learns from each user's latest items and
    # what follows them. Attention, fitted on the carve, trains half its
    # default epochs there.
    assert fused_params(models, protocol="loo") == {
        "follows": True,
        "generators": (*DEFAULT_GENERATORS, "attention"),
        "holdout": "time",
        "n_folds": 1,
        "carve_params": {"attention": {"epochs": 10, "recent_windows": 1}},
    }
    # Nothing sequential in the run, or generators / the carve set by hand: only
    # the follow features, and a run may turn those off.
    assert fused_params(["ease", "ranker"], protocol="loo") == {"follows": True}
    assert fused_params(models, protocol="loo", params={"generators": ("ease",)}) == {
        "generators": ("ease",),
        "follows": True,
    }
    assert fused_params(["ease"], protocol="loo", params={"follows": False}) == {"follows": False}
    assert fused_params(models, params={"generators": ("ease",)}) == {"generators": ("ease",)}
    # The last stretch of everyone's activity held out: what is popular now
    # joins the generators, and the ranker learns from its own last stretch.
    recent = {"recent": {"half_life_days": 7.0}}
    assert fused_params(["ease", "ranker"], protocol="temporal") == {
        "follows": True,
        "generators": (*DEFAULT_GENERATORS, "recent:popularity"),
        "generator_params": recent,
        "holdout": "cutoff",
        "n_folds": 1,
    }
    # It fuses no sequential model there: attention cost more than it gave.
    assert fused_params(models, protocol="temporal", params={"holdout": "random"}) == {
        "follows": True,
        "generators": (*DEFAULT_GENERATORS, "recent:popularity"),
        "generator_params": recent,
        "holdout": "random",
    }


def test_sequence_features_hand_checked():
    from recsys.models.ranker import _DAY, SEQUENCE_FEATURES, _sequence_features, _Times

    # User 0: 2 items on days 0 and 3; user 1: 1 item on day 10 (the data's last).
    X = sp.csr_matrix(np.array([[1, 1], [0, 1]], dtype=np.float32))
    T = sp.csr_matrix(np.array([[0.0, 3.0], [0.0, 10.0]]) * _DAY + 1e9)
    feats = _sequence_features(_Times.build(X, T), X, np.array([0, 1]))
    assert feats.shape == (2, len(SEQUENCE_FEATURES))
    np.testing.assert_allclose(feats[:, 0], [2, 1])  # history length
    np.testing.assert_allclose(feats[:, 1], [3, 0], atol=1e-9)  # active days
    np.testing.assert_allclose(feats[:, 2], [7, 0], atol=1e-5)  # idle days before the end
    blind = _sequence_features(None, X, np.array([0, 1]))
    assert blind[:, 0].tolist() == [2, 1] and np.isnan(blind[:, 1:]).all()


def test_unseen_moments_equal_those_of_the_masked_rows():
    """Mean and spread of the scores a user has not seen, from whole-row sums
    less the seen cells; rows with a non-finite score take the masked path."""
    from recsys.models.ranker import _finite_moments, _unseen_moments

    rng = np.random.default_rng(3)
    scores = rng.standard_normal((6, 500)).astype(np.float32) * 4 + 10
    nobody = np.ones(6)
    nobody[2] = 0  # a user with nothing seen
    seen_pattern = sp.diags(nobody) @ sp.random(6, 500, density=0.1, format="csr", random_state=3)
    seen_pattern.eliminate_zeros()
    scores[4, 7] = -np.inf  # a generator's own -inf
    scores[5, 9] = np.nan
    seen = seen_pattern.nonzero()
    mu, sd = _unseen_moments(scores, seen)
    masked = scores.copy()
    masked[seen] = -np.inf
    _, want_mu, want_sd = _finite_moments(masked)
    np.testing.assert_allclose(mu[:5], want_mu[:5], rtol=1e-9)
    np.testing.assert_allclose(sd[:5], want_sd[:5], rtol=1e-6)
    unseen = np.isfinite(masked[5])
    np.testing.assert_allclose(mu[5], masked[5][unseen].mean(), rtol=1e-6)


def test_ranker_fused_with_attention_learns_the_next_item_rule():
    """Each user walks i -> i + 1: popularity cannot tell the next item, attention
    can; the ranker fused with both (its latest items as labels) must put it first."""
    n_items = 10
    seqs, X = walks(80, n_items, seed=0)
    attention = {
        "max_len": 8,
        "d_model": 16,
        "n_heads": 2,
        "n_blocks": 1,
        "dropout": 0.0,
        "epochs": 15,
        "batch_size": 32,
        "learning_rate": 0.01,
    }
    params = {
        **TINY,
        **fused_params(["popularity", "attention", "ranker"], protocol="loo"),
        "generators": ("popularity", "attention"),
        "generator_params": {"attention": attention},
        "label_share": 0.25,
        "n_candidates": 4,
    }
    model = XGBRankerRecommender(**params).fit(X, FitContext(sequences=seqs))
    assert set(model.generators_) == {"popularity", "attention"}
    assert model.feature_names_[3:6] == [
        "attention_rank",
        "attention_score_ratio",
        "attention_score_z",
    ]
    items, _ = model.recommend(np.arange(len(seqs)), X, k=1)
    expected = np.array([(s[-1] + 1) % n_items for s in seqs])
    assert np.mean(items[:, 0] == expected) >= 0.9
    attention_gain = sum(v for f, v in model.feature_importances_.items() if "attention" in f)
    assert attention_gain > 0


def test_the_ranker_takes_the_runs_fitted_generators_of_the_same_settings_only(fitted):
    """A generator the run already fitted on the same data with the same parameters is
    taken as it is for the final stage, never for a carve; another setting is refitted.
    The result is the ranker that fitted every generator itself."""
    _, X, ctx = fitted
    ease = make_model("ease", l2=1.0).fit(X, ctx)
    itemknn = make_model("itemknn", k_neighbours=9).fit(X, ctx)  # TINY fits it with 5
    loads = []

    def loader(model):
        def load():
            loads.append(model.name)
            return model

        return load

    ctx_fitted = dataclasses.replace(ctx, fitted={"ease": loader(ease), "itemknn": loader(itemknn)})
    model = XGBRankerRecommender(**TINY).fit(X, ctx_fitted)
    assert model.generators_["ease"] is ease
    assert model.reused_ == ["ease"]
    assert model.generators_["itemknn"] is not itemknn
    assert model.generators_["itemknn"].k_neighbours == 5
    # Each sibling is looked at once, for the final stage: the carves of both folds
    # fitted their own (the fitted ones have seen the carves' labels).
    assert sorted(loads) == ["ease", "itemknn"]
    users = np.arange(X.shape[0])
    alone = XGBRankerRecommender(**TINY).fit(X, ctx)
    (top, scores), (top_alone, scores_alone) = (m.recommend(users, X, 5) for m in (model, alone))
    np.testing.assert_array_equal(top, top_alone)
    np.testing.assert_allclose(scores, scores_alone)


def test_a_sibling_fitted_on_other_data_is_not_taken():
    X, ctx = blocks()
    other, _ = blocks(n_users=30)
    ease = make_model("ease", l2=1.0).fit(other, ctx)
    ctx_fitted = dataclasses.replace(ctx, fitted={"ease": lambda: ease})
    model = XGBRankerRecommender(**TINY).fit(X, ctx_fitted)
    assert model.reused_ == []
    assert model.generators_["ease"] is not ease


def test_carve_params_shape_the_carves_generators_only():
    X, ctx = blocks()
    carved = []
    ranker = XGBRankerRecommender(**{**TINY, "carve_params": {"itemknn": {"k_neighbours": 2}}})
    original = ranker._fit_stage

    def spy(X, context, sequences, **kw):
        original(X, context, sequences, **kw)
        carved.append((kw.get("carve", False), ranker.generators_["itemknn"].k_neighbours))

    ranker._fit_stage = spy
    ranker.fit(X, ctx)
    # Two folds' carves with the carve's setting, then the served one with its own.
    assert carved == [(True, 2), (True, 2), (False, 5)]


def test_follow_features_hand_checked():
    from recsys.models.ranker import FOLLOW_FEATURES, _Follows

    # User 0 watched 0, 1, 2 in that order; user 1 watched 0, 2; user 2 nothing.
    # Followers of 0: item 1 (next, weight 1), item 2 (two places on, 1/2; and
    # next for user 1, 1): shares 1 / 2.5 and 1.5 / 2.5. Item 1's one follower is 2.
    seqs = [np.array([0, 1, 2]), np.array([0, 2]), np.array([], dtype=np.int64)]
    follows = _Follows.build(seqs, n_items=4)
    feats = follows.features(np.arange(3), np.array([0, 0, 1, 1, 2]), np.array([2, 3, 1, 2, 0]))
    assert feats.shape == (5, len(FOLLOW_FEATURES))
    # follows_last: after the user's last item (2 for users 0 and 1) nothing came.
    np.testing.assert_allclose(feats[:, 0], [0, 0, 0, 0, 0])
    # follows_recent: the k-th latest item's share weighs 1 / k.
    # User 0, item 2: from 1 (2nd latest) 1.0 / 2, from 0 (3rd) 0.6 / 3.
    # User 1: from 0 (2nd latest), item 1 0.4 / 2, item 2 0.6 / 2.
    np.testing.assert_allclose(feats[:, 1], [0.5 + 0.2, 0, 0.2, 0.3, 0])
    # What followed an item is read from that item's row: 0 -> 1 is known, 1 -> 0 is not.
    after_zero = _Follows.build([np.array([1, 0])], n_items=2).features(
        np.array([0]), np.array([0]), np.array([1])
    )
    np.testing.assert_allclose(after_zero, [[0, 0]])


def test_ranker_learns_the_next_item_from_what_follows_what():
    """Each user walks i -> i + 1; without a sequential generator the follow
    features alone must lead the ranker to the next item."""
    n_items = 12
    seqs, X = walks(90, n_items, seed=1)
    params = {
        **TINY,
        "generators": ("popularity",),
        "holdout": "time",
        "n_folds": 1,
        "label_share": 0.25,
        "n_candidates": n_items,
        "follows": True,
    }
    model = XGBRankerRecommender(**params).fit(X, FitContext(sequences=seqs))
    items, _ = model.recommend(np.arange(len(seqs)), X, k=1)
    expected = np.array([(s[-1] + 1) % n_items for s in seqs])
    assert np.mean(items[:, 0] == expected) >= 0.9
    assert model.feature_importances_["follows_last"] > 0


def test_each_item_keeps_its_most_frequent_followers(monkeypatch):
    import recsys.models.ranker as ranker

    # After 0 came 1 twice and 2 once: with one follower kept, 0 -> 2 is dropped,
    # and 0 -> 1 keeps its share of all of 0's followers (2 / 3).
    monkeypatch.setattr(ranker, "_FOLLOWERS", 1)
    monkeypatch.setattr(ranker, "_FOLLOW_WINDOW", 1)
    follows = ranker._Follows.build([np.array([0, 1]), np.array([0, 1]), np.array([0, 2])], 3)
    np.testing.assert_allclose(follows.shares.toarray(), [[0, 2 / 3, 0], [0, 0, 0], [0, 0, 0]])
