"""Self-attention recommender: learns a deterministic next-item rule, saves,
reloads and repeats itself exactly; index helpers checked by hand."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from walk_data import walks

from recsys.models.attention import (
    SelfAttentionRecommender,
    _left_pad,
    _length_batches,
    _training_windows,
    ndcg_at_10,
    plot_history,
)
from recsys.models.base import FitContext

N_ITEMS = 10
TINY = {
    "max_len": 8,
    "d_model": 16,
    "n_heads": 2,
    "n_blocks": 1,
    "dropout": 0.0,
    "epochs": 15,
    "batch_size": 32,
    "learning_rate": 0.01,
    "patience": 15,
}


def cyclic_data(n_users: int = 60, seed: int = 0) -> tuple[sp.csr_matrix, list[np.ndarray]]:
    """Each user walks i → i + 1 (mod N_ITEMS) from a random start, 4 to 8 steps."""
    seqs, X = walks(n_users, N_ITEMS, seed=seed, shortest=4)
    return X, seqs


@pytest.fixture(scope="module")
def cyclic():
    X, seqs = cyclic_data()
    model = SelfAttentionRecommender(**TINY).fit(X, FitContext(sequences=seqs))
    return model, X, seqs


def test_learns_next_item_rule(cyclic):
    model, X, seqs = cyclic
    expected = np.array([(s[-1] + 1) % N_ITEMS for s in seqs])
    items, _ = model.recommend(np.arange(len(seqs)), X, k=3)
    assert np.mean(items[:, 0] == expected) >= 0.9
    assert np.mean((items == expected[:, None]).any(axis=1)) == 1.0


def test_history_records_every_epoch(cyclic):
    model, _, _ = cyclic
    h = model.history_
    assert set(h) == {"loss", "val_ndcg@10"}
    assert len(h["loss"]) == len(h["val_ndcg@10"]) == TINY["epochs"]  # patience never ran out
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_ndcg@10"][model.best_epoch_ - 1] == max(h["val_ndcg@10"])


def test_save_load_identical_scores(cyclic, tmp_path):
    model, X, _ = cyclic
    loaded = SelfAttentionRecommender.load(model.save(tmp_path / "m"))
    users = np.arange(X.shape[0])
    np.testing.assert_array_equal(model._score(users, X), loaded._score(users, X))
    assert loaded.get_params() == model.get_params()
    assert loaded.history_ == model.history_
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "history.json",
        "network.weights.h5",
        "params.json",
        "recommender.json",
        "state.npz",
    ]


def test_pickle_carries_weights_not_keras_object(cyclic):
    model, X, _ = cyclic
    blob = pickle.dumps(model)
    assert b"keras" not in blob
    users = np.arange(X.shape[0])
    np.testing.assert_array_equal(pickle.loads(blob)._score(users, X), model._score(users, X))


def test_same_seed_same_scores(cyclic):
    model, X, seqs = cyclic
    users = np.arange(X.shape[0])
    again = SelfAttentionRecommender(**TINY).fit(X, FitContext(sequences=seqs))
    np.testing.assert_array_equal(again._score(users, X), model._score(users, X))
    assert again.history_ == model.history_


@pytest.mark.slow
def test_other_seed_differs(cyclic):
    model, X, seqs = cyclic
    users = np.arange(X.shape[0])
    other = SelfAttentionRecommender(**{**TINY, "epochs": 1, "random_state": 1})
    assert not np.array_equal(
        other.fit(X, FitContext(sequences=seqs))._score(users, X), model._score(users, X)
    )


def test_changed_history_falls_back_to_x_order(cyclic):
    model, X, seqs = cyclic
    fitted = model._histories(np.array([0]), X)
    assert fitted[0][fitted[0] > 0].tolist() == [int(i) + 1 for i in seqs[0]]
    X2 = X.tolil()
    X2[0, (seqs[0][-1] + 1) % N_ITEMS] = 1.0
    changed = model._histories(np.array([0]), X2.tocsr())
    assert changed[0][changed[0] > 0].tolist() == (np.flatnonzero(X2[0].toarray()) + 1).tolist()


@pytest.mark.slow
def test_profile_conditioning_runs():
    X, seqs = cyclic_data(n_users=20)
    profiles = pd.DataFrame({"age": np.arange(20.0), "gender": ["M", "F"] * 10})
    model = SelfAttentionRecommender(**{**TINY, "epochs": 1, "use_profile": True})
    model.fit(X, FitContext(sequences=seqs, user_features=profiles))
    assert model.profile_.shape == (20, 1)  # the one numeric column, standardised
    assert model.profile_.mean() == pytest.approx(0.0, abs=1e-6)
    assert model._score(np.arange(3), X).shape == (3, N_ITEMS)


def test_the_profile_is_used_by_default_when_the_context_has_one():
    X, seqs = cyclic_data(n_users=20)
    profiles = pd.DataFrame({"age": np.arange(20.0), "active_days": np.arange(20.0) % 3})
    one_epoch = {**TINY, "epochs": 1}
    given = SelfAttentionRecommender(**one_epoch).fit(
        X, FitContext(sequences=seqs, user_features=profiles)
    )
    assert given.profile_.shape == (20, 2)
    assert SelfAttentionRecommender(**one_epoch).fit(X, FitContext(sequences=seqs)).profile_ is None
    refused = SelfAttentionRecommender(**{**one_epoch, "use_profile": False}).fit(
        X, FitContext(sequences=seqs, user_features=profiles)
    )
    assert refused.profile_ is None


def test_validation_every_few_epochs_on_a_sample_stops_by_patience_in_epochs():
    X, seqs = cyclic_data()
    params = {**TINY, "epochs": 40, "val_every": 3, "val_users": 25, "patience": 6}
    model = SelfAttentionRecommender(**params).fit(X, FitContext(sequences=seqs))
    h = model.history_
    validated = [i + 1 for i, v in enumerate(h["val_ndcg@10"]) if not np.isnan(v)]
    n = len(h["loss"])
    # Every third epoch, plus the last one run; the best is one of them.
    assert validated == [e for e in range(1, n + 1) if e % 3 == 0 or e == 40]
    assert model.best_epoch_ in validated
    # Stopped when 6 epochs had passed since the best, or ran to the end.
    assert n == 40 or n - model.best_epoch_ >= 6
    assert n < 40 or n - model.best_epoch_ < 6 + 3
    assert plot_history(h) is not None
    with pytest.raises(ValueError, match="^val_users must be at least 1 or None, got 0$"):
        SelfAttentionRecommender(**{**TINY, "val_users": 0}).fit(X, FitContext(sequences=seqs))
    with pytest.raises(ValueError, match="^recent_windows must be at least 1 or None, got 0$"):
        SelfAttentionRecommender(**{**TINY, "recent_windows": 0}).fit(X, FitContext(sequences=seqs))


def test_sample_users_keeps_row_order_and_pairs():
    from recsys.models.attention import _sample_users

    rows, targets = np.arange(10), np.arange(10) * 10
    r, t = _sample_users(rows, targets, 4, seed=0)
    assert len(r) == 4 and np.all(np.diff(r) > 0) and np.array_equal(t, r * 10)
    assert _sample_users(rows, targets, None, seed=0)[0] is rows


# ------------------------------------------------------------------ errors
def test_bad_inputs_named():
    X, seqs = cyclic_data(n_users=5)
    with pytest.raises(ValueError, match="^context.sequences has 4 rows but X has 5 users$"):
        SelfAttentionRecommender(**TINY).fit(X, FitContext(sequences=seqs[:4]))
    bad = [*seqs[:4], np.array([N_ITEMS])]
    with pytest.raises(ValueError, match=r"item indices outside \[0, 10\)"):
        SelfAttentionRecommender(**TINY).fit(X, FitContext(sequences=bad))
    with pytest.raises(ValueError, match=r"^d_model \(16\) must be divisible by n_heads \(3\)$"):
        SelfAttentionRecommender(**{**TINY, "n_heads": 3}).fit(X)
    with pytest.raises(ValueError, match="^use_profile=True needs context.user_features$"):
        SelfAttentionRecommender(**{**TINY, "use_profile": True}).fit(X)
    with pytest.raises(ValueError, match="^no user has three or more interactions"):
        short = [s[:2] for s in seqs]
        X_short = sp.csr_matrix(
            (np.ones(10, np.float32), (np.repeat(np.arange(5), 2), np.concatenate(short))),
            shape=(5, N_ITEMS),
        )
        SelfAttentionRecommender(**TINY).fit(X_short, FitContext(sequences=short))


def test_module_import_does_not_load_tensorflow():
    code = (
        "import sys, recsys.models.attention; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------- helpers
def test_training_windows_by_hand():
    # user 0: items 5,6,7,8 → pairs (5→6),(6→7),(7→8); user 1: item 9 only → none
    items, indptr = np.array([5, 6, 7, 8, 9]), np.array([0, 4, 5])
    inputs, targets, users = _training_windows(items, indptr, max_len=2)
    # windows of 2 pairs from the most recent backwards: [(6→7),(7→8)] and [pad,(5→6)]
    order = np.argsort(inputs[:, -1])
    assert inputs[order].tolist() == [[0, 6], [7, 8]]  # +1 shifted, 0 = padding
    assert targets[order].tolist() == [[-1, 6], [7, 8]]  # unshifted, -1 = padding
    assert users.tolist() == [0, 0]
    # Only the latest window: the most recent pairs (6->7),(7->8).
    inputs, targets, users = _training_windows(items, indptr, max_len=2, recent=1)
    assert inputs.tolist() == [[7, 8]] and targets.tolist() == [[7, 8]]
    assert users.tolist() == [0]


def test_length_batches_cover_every_window_once_with_similar_lengths():
    lengths = np.array([5, 1, 4, 2, 5, 3, 1])
    batches = _length_batches(lengths, 2, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    assert sorted(len(b) for b in batches) == [1, 2, 2, 2]
    # sorted by length before cutting: each batch spans adjacent lengths
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    assert spans == [(1, 1), (2, 3), (4, 5), (5, 5)]


def test_cropping_padding_columns_keeps_real_outputs(cyclic):
    model, X, _ = cyclic
    seqs = model._histories(np.arange(X.shape[0]), X)
    seqs = seqs[(seqs > 0).sum(axis=1) <= 5]  # histories of at most 5 items
    assert len(seqs)
    width = 5
    net = model._network()
    full = np.asarray(net.score_last(seqs))
    cropped = np.asarray(net.score_last(seqs[:, -width:]))
    np.testing.assert_allclose(cropped, full, rtol=1e-5, atol=1e-5)


def test_plot_history_draws_both_curves():
    fig = plot_history({"loss": [3.0, 2.0, 1.5], "val_ndcg@10": [0.1, 0.3, 0.2]})
    left, right = fig.axes
    assert left.lines[0].get_ydata().tolist() == [3.0, 2.0, 1.5]
    assert right.lines[0].get_ydata().tolist() == [0.1, 0.3, 0.2]
    assert left.lines[0].get_xdata().tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="^history lacks val_ndcg@10$"):
        plot_history({"loss": [1.0]})
    with pytest.raises(ValueError, match="^history's loss and val_ndcg@10 differ in length$"):
        plot_history({"loss": [1.0], "val_ndcg@10": []})


def test_left_pad_keeps_last_items():
    items, indptr = np.array([1, 2, 3, 4, 0]), np.array([0, 4, 5, 5])
    out = _left_pad(items, indptr, np.array([0, 1, 2]), max_len=3)
    assert out.tolist() == [[3, 4, 5], [0, 0, 1], [0, 0, 0]]


def test_ndcg_at_10_limits_and_known_value():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [-np.inf, 0.0, 1.0]])
    assert ndcg_at_10(scores, np.array([0, 0, 1])).tolist() == pytest.approx(
        [1.0, 0.5, 1 / np.log2(3)]
    )
    far = np.arange(20.0)[None, ::-1]
    assert ndcg_at_10(far, np.array([10])).tolist() == [0.0]
