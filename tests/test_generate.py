"""Synthetic generator: guarantees, determinism, and real personalisation signal."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from recsys.constants import INTERACTION_COLS
from recsys.data.generate import generate_dataset


@pytest.fixture(scope="module")
def small():
    return generate_dataset(n_users=600, n_items=300, n_interactions=20_000, seed=1)


def test_shape_ids_and_value_ranges(small):
    inter = small.interactions
    assert list(inter.columns) == list(INTERACTION_COLS) and len(inter) == 20_000
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert inter["user_id"].nunique() == 600 and inter["item_id"].between(1, 300).all()
    assert set(inter["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter["rating"].nunique() == 5
    start = pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    assert inter["timestamp"].between(start, start + 365 * 86_400 - 1).all()
    assert inter["timestamp"].is_monotonic_increasing
    assert str(inter["timestamp"].dtype) == "int64"


def test_side_tables(small):
    items, users = small.items, small.users
    assert items["item_id"].tolist() == list(range(1, 301))
    assert items["genres"].str.split("|").explode().nunique() == 12
    assert items["year"].between(1920, 2024).all() and items["title"].str.endswith(")").all()
    assert users["user_id"].tolist() == list(range(1, 601))
    assert set(users["gender"]) == {"F", "M"} and users["age"].between(13, 80).all()


def test_same_seed_same_data_other_seed_other_data():
    a = generate_dataset(50, 40, 500, seed=3)
    b = generate_dataset(50, 40, 500, seed=3)
    c = generate_dataset(50, 40, 500, seed=4)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert not a.interactions.equals(c.interactions)


def test_popularity_is_skewed(small):
    counts = np.sort(small.interactions.groupby("item_id").size().to_numpy())[::-1]
    assert counts[:30].sum() / counts.sum() > 0.18  # top 10% of items: ~2x their share
    assert counts[0] > 4 * np.median(counts)


def _precision_at_10(scores: np.ndarray, seen: np.ndarray, held: np.ndarray) -> float:
    scores = np.where(seen > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1)[:, :10]
    hits = np.take_along_axis(held, top, axis=1).sum(axis=1)
    return float(hits[held.sum(axis=1) > 0].mean() / 10)


def test_item_knn_beats_popularity_by_a_wide_margin(small):
    inter = small.interactions
    held_mask = np.random.default_rng(0).random(len(inter)) < 0.2
    u, i = inter["user_id"].to_numpy() - 1, inter["item_id"].to_numpy() - 1
    seen, held = np.zeros((600, 300)), np.zeros((600, 300))
    seen[u[~held_mask], i[~held_mask]] = 1
    held[u[held_mask], i[held_mask]] = 1
    norms = np.sqrt(seen.sum(axis=0)) + 1e-9
    sim = seen.T @ seen / np.outer(norms, norms)
    np.fill_diagonal(sim, 0)
    knn = _precision_at_10(seen @ sim, seen, held)
    pop = _precision_at_10(np.broadcast_to(seen.sum(axis=0), seen.shape), seen, held)
    assert knn > 1.8 * pop, (knn, pop)


def _top_genre_share(users: pd.Series, genres: pd.Series) -> float:
    """Mean over users of the share of their events in their most frequent genre."""
    counts = pd.crosstab(users.to_numpy(), genres.to_numpy()).to_numpy()
    return float((counts.max(axis=1) / counts.sum(axis=1)).mean())


def test_genres_and_demographics_carry_taste(small):
    inter = small.interactions.merge(small.items, on="item_id").merge(small.users, on="user_id")
    first_genre = inter["genres"].str.split("|").str[0]
    share = _top_genre_share(inter["user_id"], first_genre)
    shuffled = pd.Series(np.random.default_rng(0).permutation(first_genre.to_numpy()))
    # users concentrate on their genres far more than a random genre assignment would
    assert share > 1.5 * _top_genre_share(inter["user_id"], shuffled)
    by_gender = pd.crosstab(inter["gender"], first_genre, normalize="index")
    assert (by_gender.loc["F"] - by_gender.loc["M"]).abs().sum() > 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_users": 0}, "n_users must be >= 1, got 0"),
        ({"n_users": 10, "n_items": 4, "n_interactions": 30}, "exceeds half of all 10x4"),
        ({"n_users": 10, "n_items": 40, "n_interactions": 5}, "must be at least n_users"),
    ],
)
def test_rejects_impossible_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(**kwargs)


@pytest.mark.slow
def test_one_million_interactions_in_a_few_seconds():
    start = time.perf_counter()
    ds = generate_dataset(n_users=20_000, n_items=5_000, n_interactions=1_000_000)
    elapsed = time.perf_counter() - start
    assert len(ds.interactions) == 1_000_000 and elapsed < 15, elapsed
