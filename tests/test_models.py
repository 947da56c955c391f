"""Model-specific behaviour: hand-computed scores, parameters, the registry, top_k."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models import MODELS, available_models, make_model
from recsys.models.base import top_k

# 3 users × 4 items; item 3 is never touched.
X_SMALL = sp.csr_matrix(
    np.array(
        [
            [1.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 5.0, 0.0],
            [1.0, 1.0, 1.0, 0.0],
        ],
        dtype=np.float32,
    )
)


# ---------------------------------------------------------------- registry
def test_registry_lists_the_four_baselines():
    assert {"popularity", "itemknn", "als", "ease"} <= set(available_models())
    assert available_models() == list(MODELS)


def test_unknown_model_name_lists_available_ones():
    with pytest.raises(ValueError, match="^unknown model 'nope'; available models: popularity, "):
        make_model("nope")


def test_make_model_passes_params():
    model = make_model("itemknn", k_neighbours=7, shrinkage=2.0)
    assert model.get_params() == {"k_neighbours": 7, "shrinkage": 2.0}


def test_importing_the_registry_does_not_import_heavy_libraries():
    code = (
        "import sys, recsys.models; "
        "print(sorted(m for m in ('implicit', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -------------------------------------------------------------- popularity
def test_popularity_counts_interactions():
    model = make_model("popularity").fit(X_SMALL)
    np.testing.assert_array_equal(model.item_scores_, [3, 2, 2, 0])


def test_popularity_weighted_sums_weights():
    model = make_model("popularity", weighted=True).fit(X_SMALL)
    np.testing.assert_array_equal(model.item_scores_, [3, 2, 6, 0])


def test_popularity_ties_go_to_lower_index():
    items, scores = make_model("popularity").fit(X_SMALL).recommend(0, X_SMALL, k=3)
    # user 0 saw items 0 and 1; items 2 (2 interactions) then 3 (0) remain.
    assert items.tolist() == [[2, 3, -1]]
    assert scores[0, :2].tolist() == [2.0, 0.0]


# ----------------------------------------------------------------- itemknn
def test_itemknn_cosine_by_hand():
    model = make_model("itemknn").fit(X_SMALL)
    S = model.similarity_.toarray()
    # columns: i0 = (1,1,1), i1 = (1,0,1), i2 = (0,5,1)
    assert S[0, 1] == pytest.approx(2 / (np.sqrt(3) * np.sqrt(2)), rel=1e-6)
    assert S[0, 2] == pytest.approx(6 / (np.sqrt(3) * np.sqrt(26)), rel=1e-6)
    assert S[1, 2] == pytest.approx(1 / (np.sqrt(2) * np.sqrt(26)), rel=1e-6)
    np.testing.assert_array_equal(np.diag(S), 0.0)
    np.testing.assert_allclose(S, S.T, rtol=1e-6)
    assert not S[:, 3].any()


def test_itemknn_shrinkage_damps_similarity():
    plain = make_model("itemknn").fit(X_SMALL).similarity_.toarray()
    shrunk = make_model("itemknn", shrinkage=10.0).fit(X_SMALL).similarity_.toarray()
    assert shrunk[0, 1] == pytest.approx(2 / (np.sqrt(6) + 10), rel=1e-6)
    assert (shrunk <= plain).all()


def test_itemknn_keeps_k_neighbours_per_item():
    model = make_model("itemknn", k_neighbours=1).fit(X_SMALL)
    S = model.similarity_.toarray()
    assert (np.count_nonzero(S, axis=1) <= 1).all()
    assert S[0].argmax() == 1  # 0.816 beats 0.679


def test_itemknn_score_is_history_times_similarity():
    model = make_model("itemknn").fit(X_SMALL)
    scores = model._score(np.array([1]), X_SMALL)
    expected = X_SMALL[1].toarray() @ model.similarity_.toarray()
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


# -------------------------------------------------------------------- ease
def test_ease_matches_closed_form():
    l2 = 2.0
    model = make_model("ease", l2=l2, binary=False).fit(X_SMALL)
    X = X_SMALL.toarray().astype(np.float64)
    P = np.linalg.inv(X.T @ X + l2 * np.eye(4))
    B = np.eye(4) - P / np.diag(P)
    np.testing.assert_allclose(model.weights_, B, atol=1e-6)
    np.testing.assert_array_equal(np.diag(model.weights_), 0.0)


def test_ease_binary_ignores_weights():
    binary = make_model("ease", l2=2.0).fit(X_SMALL)
    ones = make_model("ease", l2=2.0, binary=False).fit((X_SMALL > 0).astype(np.float32))
    np.testing.assert_allclose(binary.weights_, ones.weights_, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_ease_scores_one_user_as_the_batch_does(binary):
    """One user (a request) takes a path without sparse products; it must agree."""
    model = make_model("ease", l2=2.0, binary=binary).fit(X_SMALL)
    batch = model._score(np.arange(X_SMALL.shape[0]), X_SMALL)
    for u in range(X_SMALL.shape[0]):
        np.testing.assert_allclose(
            model._score(np.array([u]), X_SMALL), batch[u : u + 1], rtol=1e-6
        )


def test_ease_rejects_non_positive_l2():
    with pytest.raises(ValueError, match=r"^l2 must be > 0, got 0$"):
        make_model("ease", l2=0).fit(X_SMALL)


# --------------------------------------------------------------------- als
def test_als_factor_shapes_and_scores():
    model = make_model("als", factors=3, iterations=2).fit(X_SMALL)
    assert model.user_factors_.shape == (3, 3)
    assert model.item_factors_.shape == (4, 3)
    np.testing.assert_allclose(
        model._score(np.array([2]), X_SMALL),
        model.user_factors_[[2]] @ model.item_factors_.T,
        rtol=1e-6,
    )


def test_als_different_seed_different_factors():
    a = make_model("als", factors=3, iterations=2, random_state=1).fit(X_SMALL)
    b = make_model("als", factors=3, iterations=2, random_state=2).fit(X_SMALL)
    assert not np.allclose(a.item_factors_, b.item_factors_)


def test_als_rejects_users_it_was_not_fitted_on():
    model = make_model("als", factors=3, iterations=2).fit(X_SMALL)
    bigger = sp.vstack([X_SMALL, X_SMALL[:1]], format="csr")
    with pytest.raises(ValueError, match="^ALS scores only the 3 users it was fitted on; got user"):
        model.recommend(3, bigger, k=2)


# ------------------------------------------------------------------ top_k
def test_top_k_ties_at_the_cut_off_go_to_lower_index():
    """Regression: argpartition used to pick an arbitrary member of a tie at the boundary."""
    scores = np.zeros((1, 200), dtype=np.float32)
    scores[0, 150] = 1.0
    items, best = top_k(scores, 3)
    assert items.tolist() == [[150, 0, 1]]
    assert best.tolist() == [[1.0, 0.0, 0.0]]


def test_top_k_matches_stable_sort_on_random_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 37)).astype(np.float32)
    for k in (1, 5, 36, 37):
        items, _ = top_k(scores, k)
        np.testing.assert_array_equal(items, np.argsort(-scores, axis=1, kind="stable")[:, :k])


def _stable_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    clean = np.where(np.isnan(scores), -np.inf, scores)
    items = np.argsort(-clean, axis=1, kind="stable")[:, :k]
    return np.where(np.isneginf(np.take_along_axis(clean, items, axis=1)), -1, items)


@pytest.mark.parametrize("values", ["distinct", "ties", "masked", "empty rows", "many ties", "nan"])
def test_top_k_of_long_rows_matches_stable_sort(values):
    """Long rows are first narrowed to the groups that can hold a winner; the
    lists must not change: ties at the cut, seen items at -inf. Rows that are
    (nearly) all -inf, hold a NaN or many equal scores rank the whole row,
    beside narrowed ones in the same call."""
    rng = np.random.default_rng(7)
    shape = (40, 64 * 60 + 37)  # whole groups and a tail
    if values in ("ties", "many ties"):
        top = 2_000 if values == "ties" else 30
        scores = rng.integers(0, top, size=shape).astype(np.float32)
    else:
        scores = rng.standard_normal(shape).astype(np.float32)
    if values in ("masked", "empty rows"):
        scores[rng.random(shape) < 0.3] = -np.inf
    if values == "empty rows":
        scores[3] = -np.inf
        scores[4, :-5] = -np.inf  # only the tail is left
    if values == "nan":
        scores[5, 100] = np.nan
    for k in (1, 10, 15):
        items, best = top_k(scores, k)
        np.testing.assert_array_equal(items, _stable_top_k(scores, k))
        filled = items >= 0
        np.testing.assert_array_equal(
            best[filled], np.take_along_axis(scores, np.maximum(items, 0), axis=1)[filled]
        )


def test_top_k_marks_minus_inf_and_nan_as_empty():
    scores = np.array([[np.nan, -np.inf, 2.0]], dtype=np.float32)
    items, best = top_k(scores, 3)
    assert items.tolist() == [[2, -1, -1]]
    assert np.isneginf(best[0, 1:]).all()


def test_recommend_rejects_non_positive_k():
    model = make_model("popularity").fit(X_SMALL)
    with pytest.raises(ValueError, match="^k must be a positive integer, got 0$"):
        model.recommend(0, X_SMALL, k=0)


def test_ease_models_the_most_popular_max_items_and_ranks_the_tail_below_them():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((30, 12)) < 0.4).astype(np.float32))
    popular = np.argsort(-np.asarray(X.sum(axis=0)).ravel(), kind="stable")[:5]
    model = make_model("ease", max_items=5).fit(X)
    assert sorted(model.head_) == sorted(popular) and model.weights_.shape == (5, 5)
    items, _ = model.recommend(np.arange(30), X, k=12)
    for row, seen in zip(items, np.split(X.indices, X.indptr[1:-1]), strict=True):
        ranked = [i for i in row if i >= 0]
        head_first = [i in set(model.head_) for i in ranked]
        assert head_first == sorted(head_first, reverse=True)  # no tail item above a head one
        assert not set(ranked) & set(seen)


def test_ease_refuses_a_gram_matrix_the_machine_cannot_hold(monkeypatch):
    import psutil

    from recsys.errors import InputError

    class Tight:
        available = 1_000_000  # 1 MB free

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight())
    X = sp.random(50, 600, density=0.05, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(InputError, match=r"lower its max_items .*'ease': \{'max_items': \d+"):
        make_model("ease").fit(X)


def test_fit_context_derives_sequences_and_timestamps_only_for_models_that_read_them():
    import pandas as pd

    from recsys.ids import IdMap
    from recsys.models.base import FitContext

    train = pd.DataFrame(
        {
            "user_id": [7, 7, 7, 9, 9],
            "item_id": ["b", "a", "c", "a", "b"],
            "rating": [1.0] * 5,
            "timestamp": [30, 10, 20, 5, 5],
        }
    )
    ids = IdMap.from_frame(train)
    X = ids.to_matrix(train)
    for name in ("popularity", "itemknn", "ease", "als"):
        context = FitContext.from_interactions(train, ids)
        make_model(name).fit(X, context)
        # The models that never read them left them underived (a second at 2M rows).
        assert not {"_sequences", "_timestamps"} & set(vars(context)), name
    context = FitContext.from_interactions(train, ids)
    assert [s.tolist() for s in context.sequences] == [[0, 2, 1], [0, 1]]
    np.testing.assert_array_equal(context.timestamps.toarray(), ids.time_matrix(train).toarray())
    given = FitContext.from_interactions(train, ids)
    given.sequences = [np.array([1]), np.array([0])]
    assert [s.tolist() for s in given.sequences] == [[1], [0]]
    assert FitContext().sequences is None and FitContext().timestamps is None


@pytest.mark.parametrize("n", [1, 255, 256, 257, 600])
def test_ease_inverse_is_whole_and_symmetric_across_mirror_blocks(n):
    from recsys.models.ease import _spd_inverse

    rng = np.random.default_rng(n)
    A = rng.random((n, n + 5))
    gram = A @ A.T + n * np.eye(n)  # well conditioned, so float32 is close
    inverse = _spd_inverse(gram.astype(np.float32))
    assert inverse.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(inverse, inverse.T)
    np.testing.assert_allclose(inverse, np.linalg.inv(gram), rtol=1e-3, atol=1e-6)


def test_popularity_with_a_half_life_counts_what_is_popular_now():
    from recsys.models.base import FitContext

    day = 86_400.0
    # Item 0: three users, 28 days ago; item 1: two users, today; item 2: one, 7 days ago.
    X = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    T = sp.csr_matrix(
        np.array([[0, 0, 0], [0, 0, 0], [0, 28, 0], [0, 28, 21]], dtype=np.float64) * day + 1e9
    )
    T = T.multiply(X).tocsr()
    overall = make_model("popularity").fit(X)
    assert overall.item_scores_.tolist() == [3, 2, 1]
    recent = make_model("popularity", half_life_days=7.0).fit(X, FitContext(timestamps=T))
    np.testing.assert_allclose(recent.item_scores_, [3 / 16, 2, 0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="needs timestamps"):
        make_model("popularity", half_life_days=7.0).fit(X)
    with pytest.raises(ValueError, match="half_life_days must be > 0"):
        make_model("popularity", half_life_days=0).fit(X, FitContext(timestamps=T))
