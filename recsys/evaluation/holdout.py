"""Evaluate models at the id edge: long recommendation frames and holdout metrics.

Models speak matrix indices; this module turns their output into the long
``(user_id, item_id, score, rank)`` frame and scores any such frame against a
held-out interactions table with :mod:`recsys.evaluation.metrics`.

How holdout rows the training data cannot explain are counted:

- **cold users** (a test user unknown to the training id map, or known but with
  no training interaction): collaborative models have nothing to condition on,
  so these users are left out of the averages and reported as
  ``n_cold_users``; evaluate a cold-start fallback for them separately.
- **unknown items** (a test item not in the training map): no model trained on
  that map can recommend it, yet the user did interact with it, so it stays in
  the user's relevant set (it lowers recall and NDCG, never raises them).
  Their row count is reported as ``n_unknown_item_rows``.
- Duplicate (user, item) test rows count once: relevance is a set.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.errors import InputError
from recsys.evaluation.metrics import ranking_metrics
from recsys.ids import IdMap, long_frame
from recsys.models.base import Recommender

log = logging.getLogger(__name__)


class EvaluationInputError(InputError):
    """A frame or id that cannot be evaluated (missing columns, unknown users...)."""


def recommend_frame(
    model: Recommender,
    X: sp.spmatrix,
    id_map: IdMap,
    users: object = None,
    k: int = 10,
    filter_seen: bool = True,
) -> pd.DataFrame:
    """Top-``k`` recommendations of ``model`` as a long frame of external ids.

    Args:
        model: a fitted recommender.
        X: the users × items matrix to condition on (rows and columns follow
            ``id_map``), usually the training matrix.
        id_map: the map ``X`` was built with.
        users: external user ids to recommend for; ``None`` means every user
            in ``id_map``.
        k: list length per user.
        filter_seen: leave out items the user has in ``X``.

    Returns:
        Columns ``user_id, item_id, score, rank`` (rank 1 = best), sorted by
        the order of ``users`` then rank. Slots the model could not fill are
        dropped, so a user may have fewer than ``k`` rows.

    Raises:
        EvaluationInputError: a requested user is not in ``id_map``.
    """
    rows = _user_rows(id_map, users)
    items, scores = model.recommend(rows, X, k, filter_seen=filter_seen)
    return long_frame(id_map.users.to_numpy()[rows], items, scores, id_map.items)


def _user_rows(id_map: IdMap, users: object) -> np.ndarray:
    """Row indices of ``users`` (all rows for ``None``); unknown ids raise."""
    if users is None:
        return np.arange(id_map.n_users)
    ids = np.atleast_1d(np.asarray(users))
    rows = id_map.user_index(ids)
    if (rows < 0).any():
        missing = ids[rows < 0][:5].tolist()
        raise EvaluationInputError(
            f"{int((rows < 0).sum())} requested user(s) are not in the id map, e.g. {missing}"
        )
    return rows


def evaluate_model(
    model: Recommender,
    train_X: sp.spmatrix,
    test: pd.DataFrame,
    id_map: IdMap,
    k: int = 10,
) -> dict[str, float]:
    """Ranking metrics of ``model`` on a holdout, full ranking with seen items removed.

    Every warm test user gets a top-``k`` list over the whole catalogue, minus
    the items they have in ``train_X``; cold users and unknown items are
    counted as the module docstring explains.

    Args:
        model: a recommender fitted on ``train_X``.
        train_X: the training users × items matrix, built with ``id_map``.
        test: held-out interactions (``user_id``, ``item_id``; other columns
            are ignored); every row is a relevant item for its user.
        id_map: the training id map.
        k: the cut-off.

    Returns:
        The keys of :func:`recsys.evaluation.metrics.ranking_metrics` plus
        ``n_users_evaluated``, ``n_cold_users`` and ``n_unknown_item_rows``.

    Raises:
        EvaluationInputError: ``test`` lacks a column or has no warm user.
    """
    _require_columns(test, (USER_COL, ITEM_COL), "test")
    train_X = sp.csr_matrix(train_X)
    pairs = _index_pairs(test, id_map)
    rows = pairs["row"].to_numpy()
    cold = (rows < 0) | (np.diff(train_X.indptr)[rows.clip(min=0)] == 0)
    warm = pairs[~cold]
    users = np.unique(warm["row"].to_numpy())
    if users.size == 0:
        raise EvaluationInputError("no test user has training interactions; nothing to evaluate")
    truth = _truth_matrix(warm, users, id_map.n_items)
    items, _ = model.recommend(users, train_X, k, filter_seen=True)
    metrics = ranking_metrics(items, truth, k, n_items=id_map.n_items)
    metrics.update(
        n_users_evaluated=float(users.size),
        n_cold_users=float(pairs.loc[cold, USER_COL].nunique()),
        n_unknown_item_rows=float((pairs["col"] < 0).sum()),
    )
    log.info("evaluated %s on %d users: %s", type(model).__name__, users.size, metrics)
    return metrics


def _index_pairs(test: pd.DataFrame, id_map: IdMap) -> pd.DataFrame:
    """Distinct test (user, item) pairs with their row/column indices (-1 = unknown)."""
    pairs = test[[USER_COL, ITEM_COL]].drop_duplicates()
    return pairs.assign(
        row=id_map.user_index(pairs[USER_COL].to_numpy()),
        col=id_map.item_index(pairs[ITEM_COL].to_numpy()),
    )


def _truth_matrix(pairs: pd.DataFrame, users: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Relevance of each user in ``users`` (rows in that order).

    Known items keep their column; each distinct unknown item gets its own
    extra column past ``n_items``, relevant yet never recommendable.
    """
    unknown_ids = pairs.loc[pairs["col"] < 0, ITEM_COL].unique()
    extra = n_items + pd.Index(unknown_ids).get_indexer(pairs[ITEM_COL])
    cols = np.where(pairs["col"] >= 0, pairs["col"], extra)
    rows = np.searchsorted(users, pairs["row"].to_numpy())
    data = np.ones(rows.size, dtype=bool)
    return sp.csr_matrix((data, (rows, cols)), shape=(users.size, n_items + unknown_ids.size))


def evaluate_recommendations(
    recs: pd.DataFrame, test: pd.DataFrame, k: int, n_items: int
) -> dict[str, float]:
    """Ranking metrics of a recommendation frame from any source.

    Args:
        recs: long frame with ``user_id``, ``item_id`` and ``rank`` (1 = best)
            or, without ``rank``, ``score`` (higher = better); e.g. the output
            of :func:`recommend_frame` or of a served model.
        test: held-out interactions (``user_id``, ``item_id``), all relevant.
        k: the cut-off; each user's best ``k`` rows count.
        n_items: catalogue size, the denominator of ``coverage``.

    Returns:
        The keys of :func:`recsys.evaluation.metrics.ranking_metrics` plus
        ``n_users_evaluated`` and ``n_users_without_recs``. Every test user
        is evaluated; one without any recommendation scores zero.

    Raises:
        EvaluationInputError: a column is missing.
        recsys.metrics.MetricInputError: a user's list repeats an item.
    """
    _require_columns(test, (USER_COL, ITEM_COL), "test")
    _require_columns(recs, (USER_COL, ITEM_COL), "recs")
    ordered = _top_rows(recs, k)
    truth_pairs = test[[USER_COL, ITEM_COL]].drop_duplicates()
    users = pd.Index(truth_pairs[USER_COL].unique())
    items = pd.Index(pd.concat([truth_pairs[ITEM_COL], ordered[ITEM_COL]]).unique())
    rec_items = _rec_matrix(ordered, users, items, k)
    truth = sp.csr_matrix(
        (
            np.ones(len(truth_pairs), dtype=bool),
            (users.get_indexer(truth_pairs[USER_COL]), items.get_indexer(truth_pairs[ITEM_COL])),
        ),
        shape=(users.size, items.size),
    )
    metrics = ranking_metrics(rec_items, truth, k, n_items=n_items)
    without = ~users.isin(ordered[USER_COL])
    metrics.update(n_users_evaluated=float(users.size), n_users_without_recs=float(without.sum()))
    return metrics


def _top_rows(recs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each user's best ``k`` rows, best first, with a 0-based ``slot`` column."""
    if RANK_COL in recs:
        ordered = recs.sort_values([USER_COL, RANK_COL], kind="stable")
    elif SCORE_COL in recs:
        ordered = recs.sort_values([USER_COL, SCORE_COL], ascending=[True, False], kind="stable")
    else:
        raise EvaluationInputError(f"recs needs a {RANK_COL!r} or a {SCORE_COL!r} column")
    slot = ordered.groupby(USER_COL, sort=False).cumcount()
    return ordered.assign(slot=slot.to_numpy())[slot.to_numpy() < k]


def _rec_matrix(ordered: pd.DataFrame, users: pd.Index, items: pd.Index, k: int) -> np.ndarray:
    """``(len(users), k)`` item indices of the test users' lists, -1 where empty."""
    rec = np.full((users.size, k), -1, dtype=np.int64)
    rows = users.get_indexer(ordered[USER_COL])
    keep = rows >= 0
    rec[rows[keep], ordered["slot"].to_numpy()[keep]] = items.get_indexer(ordered[ITEM_COL][keep])
    return rec


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise EvaluationInputError(f"{what} frame lacks column(s) {missing}")
