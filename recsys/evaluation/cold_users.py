"""The cold-user slice: how the cold-start chain and every model do for users with a few items.

:func:`cold_user_split` trims a seeded share of the test users' training
histories to at most ``max_history`` interactions (on a copy);
:func:`evaluate_cold_users` scores global popularity, the chain
(:mod:`recsys.serving.coldstart`) and each model on exactly those users.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, TIME_COL, USER_COL
from recsys.evaluation.holdout import evaluate_model, evaluate_recommendations
from recsys.ids import IdMap, long_frame
from recsys.models import make_model
from recsys.models.base import FitContext, top_k
from recsys.serving.coldstart import ColdStartError, fit_cold_start, unit_max

log = logging.getLogger(__name__)


def cold_user_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    max_history: int = 3,
    seed: int = 42,
    *,
    share: float = 0.2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cold-user slice: some test users keep only their first ``max_history`` interactions.

    A seeded ``share`` of the test users who have training history is chosen;
    their training rows are cut to the earliest ``max_history`` (by timestamp,
    then row order). Inputs are not mutated; other users' rows are untouched.

    Returns:
        ``(cold_train, cold_test)``: the trimmed copy of ``train`` and the test
        rows of the chosen users.

    Raises:
        ColdStartError: ``max_history < 0``, ``share`` outside (0, 1], or
            missing columns.
    """
    if max_history < 0:
        raise ColdStartError(f"max_history must be >= 0, got {max_history}")
    if not 0 < share <= 1:
        raise ColdStartError(f"share must lie in (0, 1], got {share}")
    for name, frame in (("train", train), ("test", test)):
        if USER_COL not in frame.columns:
            raise ColdStartError(f"{name} has no {USER_COL!r} column")
    warm = np.sort(pd.unique(test[USER_COL][test[USER_COL].isin(train[USER_COL])]))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(warm, size=int(round(share * warm.size)), replace=False)
    order_key = (
        train[TIME_COL].to_numpy()
        if TIME_COL in train.columns and train[TIME_COL].notna().all()
        else np.zeros(len(train))
    )
    order = np.lexsort((np.arange(len(train)), order_key, train[USER_COL].to_numpy()))
    ordered = train.iloc[order]
    position = ordered.groupby(USER_COL, sort=False).cumcount().to_numpy()
    drop = ordered[USER_COL].isin(chosen).to_numpy() & (position >= max_history)
    keep = np.ones(len(train), dtype=bool)
    keep[order[drop]] = False
    cold_train = train[keep]
    cold_test = test[test[USER_COL].isin(chosen)].copy()
    log.info(
        "cold slice: %d users trimmed to <= %d interactions (%d rows dropped)",
        chosen.size,
        max_history,
        int(drop.sum()),
    )
    return cold_train.copy(), cold_test


def evaluate_cold_users(
    train: pd.DataFrame,
    test: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    models: tuple[str, ...] = (),
    model_params: dict | None = None,
    k: int = 10,
    max_history: int = 3,
    seed: int = 42,
) -> dict:
    """Metrics on the cold-user slice of a split (see :func:`cold_user_split`).

    Rows of ``results``: ``global_popularity`` (one list for all, seen items
    removed), ``chain`` (the fallback chain fed each user's few kept items as
    onboarding answer), ``chain_no_history`` (demographics only: the segment
    or global path), then each model in ``models`` refitted on the trimmed
    training data. Every row covers the same cold users.

    Returns:
        ``{"n_users", "max_history", "results": {row: metrics},
        "served_by": {path: users}, "chain_gain_vs_global": ratio - 1}``.
    """
    cold_train, cold_test = cold_user_split(train, test, max_history, seed)
    id_map = IdMap.from_frame(cold_train, extra_items=None if items is None else items[ITEM_COL])
    X = id_map.to_matrix(cold_train)
    ids = np.sort(cold_test[USER_COL].unique())
    H = X[id_map.user_index(ids)]
    chain = fit_cold_start(cold_train, items, users, id_map=id_map)
    demos = chain.demographics_of(list(ids))
    empty = sp.csr_matrix(H.shape)
    glob = np.where(H.toarray() > 0, -np.inf, unit_max(chain.global_pop)[None, :])
    chain_scores, paths = chain.score_users(H, demos)
    demo_scores, _ = chain.score_users(empty, demos)
    demo_scores[H.nonzero()] = -np.inf
    results = {
        name: _score_frame_metrics(scores, ids, id_map, cold_test, k)
        for name, scores in (
            ("global_popularity", glob),
            ("chain", chain_scores),
            ("chain_no_history", demo_scores),
        )
    }
    context = FitContext.from_interactions(cold_train, id_map, items=items, users=users)
    for name in models:
        model = make_model(name, **(model_params or {}).get(name, {})).fit(X, context)
        results[name] = evaluate_model(model, X, cold_test, id_map, k=k)
    base = results["global_popularity"][f"ndcg@{k}"]
    return {
        "n_users": int(ids.size),
        "max_history": max_history,
        "results": results,
        "served_by": pd.Series(paths).value_counts().to_dict(),
        "chain_gain_vs_global": (results["chain"][f"ndcg@{k}"] / base - 1) if base else None,
    }


def _score_frame_metrics(
    scores: np.ndarray, ids: np.ndarray, id_map: IdMap, test: pd.DataFrame, k: int
) -> dict[str, float]:
    items, _ = top_k(scores, k)
    recs = long_frame(ids, items, None, id_map.items)
    return evaluate_recommendations(recs, test, k, id_map.n_items)
