"""Ranking metrics at K over index arrays, vectorised over users.

Inputs are the shapes models produce: ``rec_items`` is ``(n_users, k)`` item
indices, best first, ``-1`` for an empty slot; ``truth`` is a sparse
``(n_users, n_items)`` matrix whose nonzero entries are the relevant items
(row ``u`` of both describes the same user).

Definitions follow Microsoft Recommenders' ``python_evaluation`` (binary
relevance), averaged over the users with at least one relevant item:

- ``precision@k`` = hits / k (a list shorter than k cannot reach 1);
- ``recall@k`` = hits / |relevant|;
- ``ndcg@k`` = DCG / ideal DCG, gain 1 per hit discounted by ``log(1 + rank)``,
  the ideal list holding ``min(|relevant|, k)`` hits;
- ``map@k`` = Σ over hits of (hits so far / rank), divided by
  ``min(|relevant|, k)``;
- ``mrr@k`` = 1 / rank of the first hit (0 without a hit);
- ``hit_rate@k`` = 1 if any hit, else 0;
- ``coverage`` = distinct items recommended (over every row of ``rec_items``)
  / ``n_items``.

Unlike Microsoft's frames, a user with relevant items but no recommendations
counts here (with zeros), so a model cannot look better by staying silent.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.errors import InputError, check_k

log = logging.getLogger(__name__)

#: Names of the per-user metrics, in report order (without the ``@k`` suffix).
PER_USER_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")


class MetricInputError(InputError):
    """Recommendations and truth that cannot be evaluated together."""


def ranking_metrics(
    rec_items: np.ndarray, truth: sp.spmatrix, k: int, *, n_items: int
) -> dict[str, float]:
    """Mean ranking metrics at ``k`` plus catalogue coverage.

    Args:
        rec_items: ``(n_users, width)`` item indices, best first; ``-1`` marks
            an empty slot. Only the first ``k`` columns count; fewer than ``k``
            columns act as empty slots.
        truth: ``(n_users, n_truth_items)`` sparse, nonzero = relevant. It may
            have more columns than the catalogue (relevant items no model can
            recommend, which keeps recall honest).
        k: the cut-off.
        n_items: catalogue size, the denominator of ``coverage``.

    Returns:
        ``{"precision@k", "recall@k", "ndcg@k", "map@k", "mrr@k",
        "hit_rate@k", "coverage"}`` (with ``k`` written out), each in [0, 1].

    Raises:
        MetricInputError: shapes disagree, an item index is out of range, a row
            repeats an item, or no user has a relevant item.
    """
    per_user = per_user_metrics(rec_items, truth, k)
    if per_user.empty:
        raise MetricInputError("truth holds no relevant item for any user; nothing to evaluate")
    result = {name: float(value) for name, value in per_user.mean().items()}
    result["coverage"] = catalogue_coverage(rec_items, k, n_items=n_items)
    return result


def per_user_metrics(rec_items: np.ndarray, truth: sp.spmatrix, k: int) -> pd.DataFrame:
    """Each evaluated user's metrics at ``k`` (for paired bootstraps over users).

    Args and checks as in :func:`ranking_metrics`.

    Returns:
        One row per user with at least one relevant item, indexed by its row
        in ``rec_items`` / ``truth`` (index name ``user_row``), one column per
        metric named like the keys of :func:`ranking_metrics`. Its column means
        are the values :func:`ranking_metrics` reports.
    """
    rec, relevant = _check_inputs(rec_items, truth, k)
    n_relevant = np.diff(relevant.indptr)
    rows = np.flatnonzero(n_relevant > 0)
    hits = _hit_matrix(rec[rows], relevant[rows])
    values = _metrics_from_hits(hits, n_relevant[rows], k)
    frame = pd.DataFrame({f"{name}@{k}": values[name] for name in PER_USER_METRICS})
    frame.index = pd.Index(rows, name="user_row")
    return frame


def catalogue_coverage(rec_items: np.ndarray, k: int, *, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in any top-``k`` list."""
    if n_items < 1:
        raise MetricInputError(f"n_items must be >= 1, got {n_items}")
    top = np.asarray(rec_items)[:, :k]
    return float(np.unique(top[top >= 0]).size / n_items)


def _check_inputs(
    rec_items: np.ndarray, truth: sp.spmatrix, k: int
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Validated ``(n_users, k)`` recommendations (padded with -1) and boolean truth."""
    k = check_k(k)
    rec = np.asarray(rec_items)
    if rec.ndim != 2 or not np.issubdtype(rec.dtype, np.integer):
        raise MetricInputError(
            f"rec_items must be a 2-D integer array, got {rec.dtype} with shape {rec.shape}"
        )
    if not sp.issparse(truth) or truth.shape[0] != rec.shape[0]:
        raise MetricInputError(
            f"truth must be a sparse matrix with {rec.shape[0]} rows (one per user in "
            f"rec_items), got {type(truth).__name__} of shape {getattr(truth, 'shape', None)}"
        )
    rec = _pad(rec[:, :k], k)
    if rec.size and (rec.min() < -1 or rec.max() >= truth.shape[1]):
        raise MetricInputError(f"rec_items must hold -1 or item indices in [0, {truth.shape[1]})")
    _check_unique(rec)
    relevant = sp.csr_matrix(truth != 0, dtype=bool)
    relevant.sort_indices()
    return rec, relevant


def _pad(rec: np.ndarray, k: int) -> np.ndarray:
    """``rec`` widened to ``k`` columns with empty slots (-1)."""
    if rec.shape[1] >= k:
        return rec.astype(np.int64, copy=False)
    filler = np.full((rec.shape[0], k - rec.shape[1]), -1, dtype=np.int64)
    return np.hstack([rec.astype(np.int64), filler])


def _check_unique(rec: np.ndarray) -> None:
    """Reject a list that names the same item twice (it would count a hit twice)."""
    ordered = np.sort(rec, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        raise MetricInputError(f"rec_items row {row} recommends the same item more than once")


def _hit_matrix(rec: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean ``(n_users, k)``: is ``rec[u, r]`` relevant to user ``u``?"""
    rows = np.repeat(np.arange(rec.shape[0]), rec.shape[1])
    cols = rec.ravel()
    filled = cols >= 0
    hits = np.zeros(cols.size, dtype=bool)
    if filled.any():
        hits[filled] = np.asarray(relevant[rows[filled], cols[filled]]).ravel()
    return hits.reshape(rec.shape)


def _metrics_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user metric arrays from the hit matrix and each user's relevant count."""
    ranks = np.arange(1, k + 1)
    n_hits = hits.sum(axis=1)
    discount = 1.0 / np.log2(ranks + 1)
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
    precision_at_hits = np.cumsum(hits, axis=1) / ranks
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "precision": n_hits / k,
        "recall": n_hits / n_relevant,
        "ndcg": (hits * discount).sum(axis=1) / ideal,
        "map": (hits * precision_at_hits).sum(axis=1) / np.minimum(n_relevant, k),
        "mrr": 1.0 / first,
        "hit_rate": (n_hits > 0).astype(np.float64),
    }
