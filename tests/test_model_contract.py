"""One contract suite for every registered model.

The oracle is a checkerboard: even users interacted with even items, odd users
with odd items, and each user's own "diagonal" item (item u for user u) is
held out. Any personalised model must rank that held-out item first.
A sequence model (class attribute ``sequential = True``) sees the same matrix
with each user's items in a time order that walks its parity class
i → i + 2 (mod N) from just after its own item, so the held-out item is the
natural next one; every other user shows that step, so it is learnable.
A model joins this suite by being registered in ``recsys.models.MODELS``;
give it tiny settings in ``FAST_PARAMS`` if its defaults are slow.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models import available_models, make_model, model_class
from recsys.models.base import FitContext, Recommender

N = 20  # users == items, so user u's held-out item is item u

#: Constructor parameters that keep each model tiny and fast here.
FAST_PARAMS: dict[str, dict] = {
    "itemknn": {"k_neighbours": 10},
    "als": {"factors": 8, "iterations": 10},
    "ease": {"l2": 1.0},
    "ranker": {
        "generators": ("popularity", "itemknn", "ease"),
        "n_candidates": 5,
        "holdout": "random",
        "n_folds": 3,
        "generator_params": {"ease": {"l2": 1.0}, "itemknn": {"k_neighbours": 10}},
        "param_grid": {"max_depth": (3,), "learning_rate": (0.3,), "min_child_weight": (0.0,)},
        "max_rounds": 20,
        "n_jobs": 1,
    },
    "attention": {
        "max_len": 10,
        "d_model": 16,
        "n_heads": 1,
        "n_blocks": 1,
        "dropout": 0.0,
        "epochs": 15,
        "learning_rate": 0.01,
        "patience": 15,
    },
}

#: Models that give everyone the same list (exempt from the oracle).
NON_PERSONALISED = {"popularity"}


def checkerboard() -> sp.csr_matrix:
    """Users × items: same parity interacts, the diagonal is held out."""
    u, i = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    return sp.csr_matrix(((u % 2 == i % 2) & (u != i)).astype(np.float32))


def context(X: sp.csr_matrix, name: str = "") -> FitContext:
    """Each user's items as a sequence: index order, or the cyclic walk for sequence models."""
    if name and getattr(model_class(name), "sequential", False):
        return FitContext(sequences=[_walk_after(X[u].indices, u) for u in range(X.shape[0])])
    return FitContext(sequences=[X[u].indices.astype(np.int64) for u in range(X.shape[0])])


def _walk_after(items: np.ndarray, u: int) -> np.ndarray:
    """``items`` ordered u + 2, u + 4, ... (mod N), so the walk's next step is u."""
    return items[np.argsort((items - u) % N)].astype(np.int64)


def build(name: str) -> Recommender:
    return make_model(name, **FAST_PARAMS.get(name, {}))


@pytest.fixture(scope="module", params=available_models())
def fitted(request) -> tuple[str, Recommender, sp.csr_matrix]:
    X = checkerboard()
    return request.param, build(request.param).fit(X, context(X, request.param)), X


@pytest.mark.parametrize("name", available_models())
def test_fit_returns_self_and_stores_only_params_before(name):
    model = build(name)
    assert vars(model) == model.get_params()
    X = checkerboard()
    assert model.fit(X, context(X, name)) is model


def test_learned_attributes_end_in_underscore(fitted):
    _, model, _ = fitted
    learned = set(vars(model)) - set(model.get_params())
    assert learned
    assert all(attr.endswith("_") for attr in learned), learned


def test_oracle_held_out_item_first_or_one_list_for_all(fitted):
    """Personalised: precision@1 = 1. Non-personalised: one list, minus seen items."""
    name, model, X = fitted
    if name in NON_PERSONALISED:
        items, _ = model.recommend(np.arange(N), X, k=N, filter_seen=False)
        assert (items == items[0]).all()
        filtered, _ = model.recommend(np.arange(N), X, k=N)
        for u in range(N):
            expected = [i for i in items[0] if X[u, i] == 0]
            assert filtered[u][filtered[u] >= 0].tolist() == expected
    else:
        items, _ = model.recommend(np.arange(N), X, k=3)
        precision_at_1 = float(np.mean(items[:, 0] == np.arange(N)))
        assert precision_at_1 == 1.0


def test_recommend_before_fit_raises():
    for name in available_models():
        with pytest.raises(RuntimeError, match="is not fitted; call fit"):
            build(name).recommend([0], checkerboard(), k=3)


def test_batch_equals_one_user_at_a_time(fitted):
    _, model, X = fitted
    batch_items, batch_scores = model.recommend(np.arange(N), X, k=5, batch_size=7)
    for u in range(N):
        items, scores = model.recommend(u, X, k=5)
        np.testing.assert_array_equal(items[0], batch_items[u])
        np.testing.assert_allclose(scores[0], batch_scores[u], rtol=1e-4, atol=1e-6)


def test_save_load_gives_identical_recommendations(fitted, tmp_path):
    _, model, X = fitted
    loaded = type(model).load(model.save(tmp_path / "model"))
    before = model.recommend(np.arange(N), X, k=5)
    after = loaded.recommend(np.arange(N), X, k=5)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.get_params() == model.get_params()


def test_wrongly_shaped_X_raises_exact_message(fitted):
    _, model, _ = fitted
    wrong = sp.csr_matrix((N, N + 1), dtype=np.float32)
    message = f"X has {N + 1} items but the model was fitted on {N}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        model.recommend([0], wrong, k=3)


def test_dense_X_is_rejected_with_exact_message(fitted):
    name, _, X = fitted
    with pytest.raises(ValueError, match="^X must be a scipy sparse matrix, got ndarray$"):
        build(name).fit(X.toarray())


def test_filter_seen_never_returns_seen_items(fitted):
    _, model, X = fitted
    items, _ = model.recommend(np.arange(N), X, k=N)
    for u in range(N):
        returned = items[u][items[u] >= 0]
        assert not set(returned) & set(X[u].indices)
        assert len(returned) == N - X[u].nnz


def test_same_random_state_same_results(fitted):
    name, model, X = fitted
    again = build(name).fit(X, context(X, name))
    first = model.recommend(np.arange(N), X, k=5)
    second = again.recommend(np.arange(N), X, k=5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_k_larger_than_catalogue(fitted):
    _, model, X = fitted
    items, scores = model.recommend(np.arange(N), X, k=10 * N, filter_seen=False)
    assert items.shape == scores.shape == (N, N)
    assert all(sorted(row) == list(range(N)) for row in items.tolist())
    items, scores = model.recommend(np.arange(N), X, k=10 * N)
    assert np.isneginf(scores[items == -1]).all()
