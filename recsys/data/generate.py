"""A synthetic interaction log with known structure, for demos, tests and benchmarks.

The generative story (all draws from one ``np.random.default_rng(seed)``):

- ``n_factors`` latent tastes. Each user holds a taste mix ``theta_u`` and each
  item a taste profile ``phi_i`` (both sparse-ish Dirichlet draws).
- Item popularity follows a Zipf-like power law over a random popularity rank.
- Each interaction picks a user (heavy-tailed activity), then a taste from the
  user's mix, then an item from that taste's popularity-weighted profile; a
  small share picks by popularity alone (noise). Pairs are unique.
- Ratings 1–5 grow with the user–item affinity ``cos(theta_u, phi_i)`` plus an
  item quality and a user bias.
- Item genres come from the item's two strongest tastes (so content carries
  signal); years from its taste; user age, gender and occupation from the
  user's dominant taste (so demographics carry signal too).
- Timestamps fall inside each user's own active window within ``days`` days.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recsys.constants import (
    AGE_COL,
    GENDER_COL,
    GENRES_COL,
    ITEM_COL,
    OCCUPATION_COL,
    RATING_COL,
    TIME_COL,
    TITLE_COL,
    USER_COL,
    YEAR_COL,
)
from recsys.data import RATING_SCALE, Dataset
from recsys.errors import InputError, StateError

log = logging.getLogger(__name__)

GENRE_NAMES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
OCCUPATIONS = (
    "student",
    "engineer",
    "educator",
    "artist",
    "healthcare",
    "programmer",
    "writer",
    "retired",
    "executive",
    "technician",
    "administrator",
    "other",
)

_NOISE_SHARE = 0.05  # share of interactions drawn by popularity alone
_TASTE_POP_EXPONENT = 0.5  # popularity damping inside a taste, so tastes carry signal
_ZIPF_EXPONENT = 1.0
_TASTE_ROUNDS = 10  # rounds drawn by taste before the remainder is drawn uniformly
_MAX_ROUNDS = 200


def generate_dataset(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 50_000,
    *,
    n_genres: int = 12,
    n_factors: int = 8,
    seed: int = 0,
    start: str = "2024-01-01",
    days: int = 365,
) -> Dataset:
    """Generate a seeded synthetic data set with users, items and interactions.

    Guarantees: exactly ``n_interactions`` rows with unique ``(user_id,
    item_id)`` pairs; ids are ``1..n_users`` and ``1..n_items`` (int64); every
    user has at least one interaction; ratings are floats in ``{1,...,5}``;
    timestamps are int64 epoch seconds in ``[start, start + days)``; rows are
    ordered by time. The same arguments always give the same data.

    Raises:
        ValueError: sizes that are not positive, or more interactions than half
            of all user–item pairs (unique pairs could not be drawn honestly).
    """
    _check_sizes(n_users, n_items, n_interactions, n_genres, n_factors, days)
    rng = np.random.default_rng(seed)
    theta = rng.dirichlet(np.full(n_factors, 0.1), size=n_users)
    phi = rng.dirichlet(np.full(n_factors, 0.05), size=n_items)
    popularity = _zipf_popularity(n_items, rng)
    counts = _user_counts(n_users, n_items, n_interactions, rng)
    users, items = _draw_pairs(counts, theta, phi, popularity, rng)
    ratings = _ratings(users, items, theta, phi, rng)
    times = _timestamps(users, n_users, start, days, rng)
    order = np.argsort(times, kind="stable")  # pairs arrive sorted by (user, item)
    interactions = pd.DataFrame(
        {
            USER_COL: users[order] + 1,
            ITEM_COL: items[order] + 1,
            RATING_COL: ratings[order],
            TIME_COL: times[order],
        }
    )
    meta = {
        "generator": "recsys.data.generate",
        "seed": seed,
        "n_factors": n_factors,
        "n_genres": n_genres,
        "start": start,
        "days": days,
        RATING_SCALE: (1, 5),
    }
    return Dataset(
        interactions,
        _items_table(phi, n_genres, rng),
        _users_table(theta, rng),
        name="synthetic",
        meta=meta,
    )


def _check_sizes(
    n_users: int, n_items: int, n_interactions: int, n_genres: int, n_factors: int, days: int
) -> None:
    for name, value in (
        ("n_users", n_users),
        ("n_items", n_items),
        ("n_interactions", n_interactions),
        ("n_genres", n_genres),
        ("n_factors", n_factors),
        ("days", days),
    ):
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if n_interactions < n_users:
        raise InputError(
            f"n_interactions ({n_interactions}) must be at least n_users "
            f"({n_users}) so that every user has an interaction"
        )
    if n_interactions > n_users * (n_items // 2):
        raise InputError(
            f"n_interactions ({n_interactions}) exceeds half of all "
            f"{n_users}x{n_items} user-item pairs; add users or items"
        )


# ------------------------------------------------------------------- structure
def _zipf_popularity(n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Item weights ∝ 1 / rank^s over a random popularity ranking, summing to 1."""
    rank = rng.permutation(n_items) + 1
    weights = 1.0 / rank**_ZIPF_EXPONENT
    return weights / weights.sum()


def _user_counts(n_users: int, n_items: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """Heavy-tailed interactions per user: at least 1, at most half the catalogue."""
    cap = max(1, n_items // 2)
    activity = rng.lognormal(0.0, 1.0, n_users)
    counts = np.ones(n_users, dtype=np.int64)
    remaining = total - n_users
    while remaining > 0:  # a few rounds: spill what the capped users cannot take
        room = cap - counts
        weights = activity * (room > 0)
        extra = np.minimum(rng.multinomial(remaining, weights / weights.sum()), room)
        counts += extra
        remaining = total - int(counts.sum())
    return counts


def _draw_pairs(
    counts: np.ndarray,
    theta: np.ndarray,
    phi: np.ndarray,
    popularity: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) index pairs, ``counts[u]`` of them for user ``u``."""
    n_users, n_items = len(counts), len(popularity)
    topic_cdf = _row_cdf(phi.T * popularity**_TASTE_POP_EXPONENT)
    user_topic_cdf = _row_cdf(theta)
    keys = np.empty(0, dtype=np.int64)
    missing = counts.copy()
    for round_ in range(_MAX_ROUNDS):
        slots = np.repeat(np.arange(n_users), missing)
        if round_ < _TASTE_ROUNDS:
            items = _draw_items(slots, user_topic_cdf, topic_cdf, popularity, rng)
        else:  # heavy users that exhausted their tastes: uniform draws always finish
            items = rng.integers(0, n_items, len(slots))
        new = _sorted_unique(slots.astype(np.int64) * n_items + items)
        new = new[~np.isin(new, keys, assume_unique=True, kind="sort")]
        new = _trim_per_user(new, n_items, missing)
        keys = np.sort(np.concatenate([keys, new]))
        missing = counts - np.bincount(keys // n_items, minlength=n_users)
        if not missing.any():
            break
    else:  # with at most half the catalogue per user this cannot happen
        raise StateError(f"could not draw unique pairs for {int(missing.sum())} slots")
    return keys // n_items, keys % n_items


def _draw_items(
    slots: np.ndarray,
    user_topic_cdf: np.ndarray,
    topic_cdf: np.ndarray,
    popularity: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One item per slot: a taste from the slot's user, then an item of that taste."""
    topics = _sample_rows(user_topic_cdf[slots], rng)
    items = np.empty(len(slots), dtype=np.int64)
    for topic in range(topic_cdf.shape[0]):  # loop over tastes, not users or items
        mask = topics == topic
        items[mask] = _searchsorted_clip(topic_cdf[topic], rng.random(int(mask.sum())))
    by_pop = rng.random(len(slots)) < _NOISE_SHARE
    pop_cdf = np.cumsum(popularity)
    items[by_pop] = _searchsorted_clip(pop_cdf, rng.random(int(by_pop.sum())))
    return items


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (NumPy's hash-based ``unique`` is slow on these keys)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _trim_per_user(keys: np.ndarray, n_items: int, missing: np.ndarray) -> np.ndarray:
    """Keep at most ``missing[u]`` of the sorted new keys of each user."""
    users = keys // n_items
    starts = np.searchsorted(users, users, side="left")
    position = np.arange(len(keys)) - starts
    return keys[position < missing[users]]


def _row_cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, axis=1)
    return cdf / cdf[:, -1:]


def _sample_rows(cdf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a row-wise CDF matrix."""
    return np.minimum((cdf < rng.random((cdf.shape[0], 1))).sum(axis=1), cdf.shape[1] - 1)


def _searchsorted_clip(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


# ----------------------------------------------------------------- values
def _ratings(
    users: np.ndarray,
    items: np.ndarray,
    theta: np.ndarray,
    phi: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Ratings 1–5 rising with taste affinity, item quality and user bias."""
    unit_theta = theta / np.linalg.norm(theta, axis=1, keepdims=True)
    unit_phi = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    affinity = np.einsum("ij,ij->i", unit_theta[users], unit_phi[items])
    quality = rng.normal(0.0, 0.5, len(phi))
    bias = rng.normal(0.0, 0.4, len(theta))
    score = 1.6 + 2.6 * affinity + quality[items] + bias[users] + rng.normal(0, 0.6, len(users))
    return np.clip(np.rint(score), 1, 5).astype(np.float64)


def _timestamps(
    users: np.ndarray, n_users: int, start: str, days: int, rng: np.random.Generator
) -> np.ndarray:
    """Epoch seconds inside each user's own active window of the period."""
    span = days * 86_400
    first = rng.uniform(0.0, 0.8, n_users) * span
    length = rng.uniform(0.05, 1.0, n_users) * (span - first)
    offsets = first[users] + length[users] * rng.random(len(users))
    origin = int(pd.Timestamp(start, tz="UTC").timestamp())
    return origin + np.minimum(offsets.astype(np.int64), span - 1)


def _items_table(phi: np.ndarray, n_genres: int, rng: np.random.Generator) -> pd.DataFrame:
    """Item ids, titles, genres (from the two strongest tastes) and years."""
    n_items, n_factors = phi.shape
    names = np.array(
        list(GENRE_NAMES[:n_genres]) + [f"Genre-{g}" for g in range(len(GENRE_NAMES), n_genres)],
        dtype=object,
    )
    top2 = np.argsort(-phi, axis=1)[:, :2]
    first = _genre_of_topic(top2[:, 0], n_factors, n_genres, rng)
    second = _genre_of_topic(top2[:, -1], n_factors, n_genres, rng)
    two = (phi[np.arange(n_items), top2[:, -1]] > 0.25) & (second != first)
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    genres = np.where(two, names[lo] + "|" + names[hi], names[first])
    era = rng.integers(1950, 2015, n_factors)
    years = np.clip(era[top2[:, 0]] + rng.integers(-8, 9, n_items), 1920, 2024)
    ids = np.arange(1, n_items + 1)
    titles = pd.Series(names[first]).str.cat(pd.Series(ids).astype(str), sep=" story #")
    return pd.DataFrame(
        {
            ITEM_COL: ids,
            TITLE_COL: titles + " (" + pd.Series(years).astype(str) + ")",
            GENRES_COL: genres,
            YEAR_COL: years.astype(np.int64),
        }
    )


def _genre_of_topic(
    topics: np.ndarray, n_factors: int, n_genres: int, rng: np.random.Generator
) -> np.ndarray:
    """A genre for each taste: genre ``g`` belongs to taste ``g % n_factors``."""
    if n_genres < n_factors:
        return topics % n_genres
    per_topic = (n_genres - topics + n_factors - 1) // n_factors  # genres t, t+k, ... < n
    return topics + n_factors * rng.integers(0, per_topic)


def _users_table(theta: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Demographics drawn from the dominant taste, so they predict tastes."""
    n_users, n_factors = theta.shape
    dominant = theta.argmax(axis=1)
    mean_age = rng.uniform(20, 55, n_factors)
    age = np.clip(np.rint(rng.normal(mean_age[dominant], 6.0)), 13, 80).astype(np.int64)
    female = rng.uniform(0.15, 0.85, n_factors)
    gender = np.where(rng.random(n_users) < female[dominant], "F", "M")
    occupation_cdf = _row_cdf(rng.dirichlet(np.full(len(OCCUPATIONS), 0.4), n_factors))
    occupation = np.array(OCCUPATIONS, dtype=object)[_sample_rows(occupation_cdf[dominant], rng)]
    return pd.DataFrame(
        {
            USER_COL: np.arange(1, n_users + 1),
            AGE_COL: age,
            GENDER_COL: gender,
            OCCUPATION_COL: occupation,
        }
    )
