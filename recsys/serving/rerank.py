"""Re-rank a model's candidate pool against popularity bias or for diversity.

Every method takes each user's top-``pool`` items from the model and picks
``k`` of them; one knob ``lam`` in [0, 1] trades relevance away
(``lam = 0`` returns the model's own order):

- ``discount`` (against popularity bias): each item's score is divided by
  ``(1 + popularity) ** lam``, an inverse-propensity discount. Scores are first
  made positive per user (shifted by the pool's lowest score when it is
  negative) and divided by the user's best, so the knob means the same for
  every model. Because the discount is relative, it lets a slightly weaker
  niche item overtake a popular one only where the model scores them close,
  which costs far less accuracy per unit of popularity removed than an
  additive penalty;
- ``popularity``: each item scores ``(1 - lam) * rel - lam * pop``, where
  ``rel`` is the model score min-max scaled within the user's pool and
  ``pop`` the item's log-popularity scaled to [0, 1] over the catalogue;
- ``mmr`` (maximal marginal relevance): items are picked one at a time, each
  maximising ``(1 - lam) * rel - lam * max_sim``, where ``max_sim`` is the
  item's largest cosine similarity (content vectors, e.g. genres) to the
  items already picked.

Everything is vectorised over users; the only loop is over the ``k`` picks.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.errors import InputError

log = logging.getLogger(__name__)

METHODS = ("discount", "popularity", "mmr")
#: Floats one MMR batch may hold in its users x pool x features block.
_CELLS = 20_000_000


class RerankInputError(InputError):
    """A re-ranking call with unusable lists, scores or knob."""


def rerank(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    *,
    method: str = "discount",
    lam: float = 0.0,
    popularity: np.ndarray | None = None,
    features: sp.csr_matrix | None = None,
) -> np.ndarray:
    """Pick ``k`` of each user's pool items, trading relevance for the method's aim.

    Args:
        items: ``(n_users, pool)`` item indices, best first, ``-1`` = empty.
        scores: the model's scores of ``items`` (higher = better).
        k: list length to return (``<= pool``).
        method: ``"discount"``, ``"popularity"`` or ``"mmr"``.
        lam: the knob in [0, 1]; 0 keeps the model's order.
        popularity: per-item popularity (needed by ``discount`` and ``popularity``).
        features: L2-normalised item vectors, rows = items (needed by ``mmr``).

    Returns:
        ``(n_users, k)`` item indices, ``-1`` where the pool ran out. Each
        row holds distinct items drawn from the same row of ``items``.

    Raises:
        RerankInputError: unknown method, ``lam`` outside [0, 1], shapes that
            disagree, ``k`` larger than the pool, or the method's input missing.
    """
    items, scores = _check(items, scores, k, method, lam)
    if method in ("discount", "popularity") and popularity is None:
        raise RerankInputError(f"method {method!r} needs the items' popularity")
    if method == "discount":
        pop = np.asarray(popularity, dtype=np.float64)[np.where(items >= 0, items, 0)]
        return _by_score(items, _positive_relevance(items, scores) / (1.0 + pop) ** lam, k)
    rel = _scaled_relevance(items, scores)
    if method == "popularity":
        usable = np.isfinite(rel)
        value = (1 - lam) * np.where(usable, rel, 0.0) - lam * _scaled_popularity(popularity)[
            np.where(items >= 0, items, 0)
        ]
        return _by_score(items, np.where(usable, value, -np.inf), k)
    if features is None:
        raise RerankInputError("method 'mmr' needs item feature vectors")
    batch = max(1, _CELLS // (items.shape[1] * max(1, features.shape[1])))
    parts = [
        _mmr(items[s : s + batch], rel[s : s + batch], k, lam, features)
        for s in range(0, items.shape[0], batch)
    ]
    return np.vstack(parts) if parts else np.empty((0, k), dtype=np.int64)


def _check(
    items: np.ndarray, scores: np.ndarray, k: int, method: str, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise RerankInputError(f"unknown re-ranking method {method!r}; choose one of {METHODS}")
    if not 0.0 <= float(lam) <= 1.0:
        raise RerankInputError(f"lam must lie in [0, 1], got {lam}")
    items = np.asarray(items, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if items.ndim != 2 or items.shape != scores.shape:
        raise RerankInputError(
            f"items and scores must be 2-D of one shape, got {items.shape} and {scores.shape}"
        )
    if not 1 <= int(k) <= items.shape[1]:
        raise RerankInputError(f"k must lie in [1, {items.shape[1]}] (the pool size), got {k}")
    return items, scores


def _scaled_relevance(items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores min-max scaled to [0, 1] within each user's filled pool; empty slots -inf."""
    filled = (items >= 0) & np.isfinite(scores)
    low = np.where(filled, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(filled, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    rel = np.where(filled, (scores - np.where(np.isfinite(low), low, 0.0)) / span, -np.inf)
    return np.where(filled & ~(high > low), 1.0, rel)


def _positive_relevance(items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores over each user's best, after shifting negative pools up to zero; empty -inf.

    Positive so that dividing by a discount lowers every item; the worst item
    of a pool with negative scores gets a small floor, not zero, so it still
    ranks by its discount against other floored items.
    """
    filled = (items >= 0) & np.isfinite(scores)
    low = np.minimum(np.where(filled, scores, np.inf).min(axis=1, keepdims=True), 0.0)
    low = np.where(np.isfinite(low), low, 0.0)
    shifted = np.where(filled, scores - low, 0.0)
    top = shifted.max(axis=1, keepdims=True)
    rel = np.where(top > 0, shifted / np.where(top > 0, top, 1.0), 1.0)
    return np.where(filled, np.maximum(rel, 1e-6), -np.inf)


def _scaled_popularity(popularity: np.ndarray) -> np.ndarray:
    """``log1p(popularity)`` scaled to [0, 1] by the catalogue's most popular item."""
    logged = np.log1p(np.asarray(popularity, dtype=np.float64))
    top = logged.max() if logged.size else 0.0
    return logged / top if top > 0 else np.zeros_like(logged)


def _by_score(items: np.ndarray, value: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` best items by ``value`` (empty slots sort last, stay -1)."""
    value = np.where(items >= 0, value, -np.inf)
    order = np.argsort(-value, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(items, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(value, order, axis=1)), picked, -1)


def _mmr(
    items: np.ndarray, rel: np.ndarray, k: int, lam: float, features: sp.csr_matrix
) -> np.ndarray:
    """Greedy MMR over one batch of users."""
    n, pool = items.shape
    vectors = features[np.where(items >= 0, items, 0).ravel()].toarray()
    vectors = vectors.reshape(n, pool, -1) * (items >= 0)[:, :, None]
    sims = np.einsum("upf,uqf->upq", vectors, vectors)
    max_sim = np.zeros((n, pool))
    taken = ~np.isfinite(rel)
    out = np.full((n, k), -1, dtype=np.int64)
    rows = np.arange(n)
    for slot in range(k):
        value = np.where(taken, -np.inf, (1 - lam) * rel - lam * max_sim)
        best = value.argmax(axis=1)
        ok = np.isfinite(value[rows, best])
        out[ok, slot] = items[rows[ok], best[ok]]
        taken[rows, best] = True
        max_sim = np.maximum(max_sim, sims[rows, best, :])
    return out


def rerank_frame(
    recs: pd.DataFrame, popularity: pd.Series, k: int, *, method: str = "discount", lam: float = 0.0
) -> pd.DataFrame:
    """:func:`rerank` over a long recommendation table (one pool per user).

    Args:
        recs: ``user_id, item_id, score, rank`` (and any other columns, kept
            per row), each user's pool ranked 1..n.
        popularity: training popularity by item id; items missing from it
            count as never seen (0).
        k: list length to keep per user.
        method: ``"discount"`` or ``"popularity"`` (``mmr`` needs content
            vectors, which a table does not carry).
        lam: the knob in [0, 1].

    Returns:
        The same columns, at most ``k`` rows per user in the new order, ranks
        renumbered 1..k; users keep their order of first appearance.

    Raises:
        RerankInputError: a missing column, ``mmr``, or a bad knob.
    """
    missing = {USER_COL, ITEM_COL, SCORE_COL, RANK_COL} - set(recs.columns)
    if missing:
        raise RerankInputError(f"recommendations lack column(s) {sorted(missing)}")
    if method == "mmr":
        raise RerankInputError(
            "method 'mmr' needs content vectors; re-rank a table with 'discount' or 'popularity'"
        )
    if recs.empty:
        return recs.copy()
    ordered = recs.sort_values([USER_COL, RANK_COL], kind="stable")
    users, user_pos = np.unique(ordered[USER_COL].to_numpy(), return_inverse=True)
    slot = ordered.groupby(USER_COL, sort=True).cumcount().to_numpy()
    # Each pool entry is "item" number i = its row in ``ordered``, so the picks
    # come back as rows; the popularity array is indexed the same way.
    rows = np.full((users.size, max(int(slot.max()) + 1, k)), -1, dtype=np.int64)
    scores = np.full(rows.shape, -np.inf)
    rows[user_pos, slot] = np.arange(len(ordered))
    scores[user_pos, slot] = ordered[SCORE_COL].to_numpy(dtype=np.float64)
    pop = popularity.reindex(ordered[ITEM_COL]).fillna(0).to_numpy(dtype=np.float64)
    # One entry no row points at: the catalogue's top, which "popularity" scales by.
    pop = np.append(pop, max(float(popularity.max()), 0.0) if len(popularity) else 0.0)
    picked = rerank(rows, scores, k, method=method, lam=lam, popularity=pop)
    out = ordered.iloc[picked[picked >= 0]].copy()
    out[RANK_COL] = (np.nonzero(picked >= 0)[1] + 1).astype(ordered[RANK_COL].dtype)
    first_seen = pd.Index(pd.unique(recs[USER_COL]))
    return out.iloc[np.argsort(first_seen.get_indexer(out[USER_COL]), kind="stable")].reset_index(
        drop=True
    )
