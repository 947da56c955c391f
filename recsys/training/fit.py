"""Fit one registered model and score it: on warm users, and exactly as it will be served."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys import config
from recsys.constants import ITEM_COL, RANK_COL, USER_COL
from recsys.evaluation.beyond import BEYOND_METRICS, DetailedEvaluation, evaluate_detailed
from recsys.evaluation.holdout import evaluate_model
from recsys.evaluation.metrics import PER_USER_METRICS
from recsys.models import make_model
from recsys.models.base import Recommender
from recsys.serving.coldstart import ColdStart, fit_cold_start
from recsys.serving.served import ServedRecommender
from recsys.training.data import TrainingData


def fit_and_evaluate(
    name: str, data: TrainingData, *, params: dict | None = None, k: int = 10
) -> tuple[Recommender, dict[str, float], float]:
    """Fit registered model ``name`` on ``data.X`` and score it on the warm test users.

    Returns:
        ``(model, metrics, train_seconds)``.
    """
    model = make_model(name, **(params or {}))
    start = time.perf_counter()
    model.fit(data.X, data.context)
    seconds = time.perf_counter() - start
    metrics = evaluate_model(model, data.X, data.test, data.id_map, k=k)
    return model, metrics, seconds


def fit_model(
    name: str, data: TrainingData, *, params: dict | None = None
) -> tuple[Recommender, float]:
    """Fit registered model ``name`` on ``data.X``; returns ``(model, train_seconds)``."""
    model = make_model(name, **(params or {}))
    start = time.perf_counter()
    model.fit(data.X, data.context)
    return model, time.perf_counter() - start


@dataclass(frozen=True)
class Scored:
    """Every test user scored once, as served, and both views of it (:func:`score_once`).

    Attributes:
        warm: the figures of :func:`recsys.evaluation.holdout.evaluate_model`
            (the test users with training history; the same values, read off
            the served lists, whose known users the model itself answers).
        detail: the :func:`served_evaluation` of every test user.
        score_seconds: making the served lists (the model and the cold-start chain).
        evaluate_seconds: the figures of those lists (accuracy, beyond-accuracy, slices).
    """

    warm: dict[str, float]
    detail: DetailedEvaluation
    score_seconds: float
    evaluate_seconds: float


def score_once(
    model: Recommender, data: TrainingData, *, k: int = 10, cold_start: ColdStart | None = None
) -> Scored:
    """Every test user scored once, as served, and both views of it (see :class:`Scored`)."""
    start = time.perf_counter()
    lists = _served_lists(model, data, k, cold_start)
    scored = time.perf_counter()
    detail = detailed_evaluation(lists, data.train, data.test, data.context, k)
    warm = warm_figures(detail, lists, data, k)
    return Scored(warm, detail, scored - start, time.perf_counter() - scored)


def warm_figures(
    detail: DetailedEvaluation, lists: pd.DataFrame, data: TrainingData, k: int
) -> dict[str, float]:
    """The warm-user figures of a served evaluation of ``lists`` (see :func:`score_once`)."""
    rows = data.id_map.user_index(data.test[USER_COL].unique())
    has_history = np.zeros(len(rows), dtype=bool)
    known = rows >= 0
    has_history[known] = np.diff(data.X.indptr)[rows[known]] > 0
    warm = pd.Index(data.test[USER_COL].unique()[has_history])
    per_user = detail.per_user[detail.per_user.index.isin(warm)]
    figures = {f"{m}@{k}": float(per_user[f"{m}@{k}"].mean()) for m in PER_USER_METRICS}
    top = lists[lists[USER_COL].isin(warm) & (lists[RANK_COL] <= k)]
    pairs = data.test[[USER_COL, ITEM_COL]].drop_duplicates()
    figures.update(
        coverage=float(top[ITEM_COL].nunique() / data.id_map.n_items),
        n_users_evaluated=float(len(warm)),
        n_cold_users=float(pairs[USER_COL].nunique() - len(warm)),
        n_unknown_item_rows=float((data.id_map.item_index(pairs[ITEM_COL].to_numpy()) < 0).sum()),
    )
    sample = data.split.get("evaluation_sample")
    if sample:
        figures["n_test_users_sampled_from"] = float(sample["of_users"])
    return figures


def cold_start_chain(data: TrainingData) -> ColdStart:
    """The fallback chain served models use for users they have never seen."""
    return fit_cold_start(
        data.train,
        data.context.items,
        data.context.users,
        id_map=data.id_map,
        similarity_pairs=config.cold_start_pairs(),
    )


def served_evaluation(
    model: Recommender, data: TrainingData, *, k: int = 10, cold_start: ColdStart | None = None
) -> DetailedEvaluation:
    """Score ``model`` exactly as its served pyfunc answers: every test user, unknown
    users through the cold-start chain (:class:`recsys.serving.served.ServedRecommender`).

    Returns:
        The figures the gate and the leaderboard compare, on the same users as
        the champion's.
    """
    recs = _served_lists(model, data, k, cold_start)
    return detailed_evaluation(recs, data.train, data.test, data.context, k)


def _served_lists(
    model: Recommender, data: TrainingData, k: int, cold_start: ColdStart | None
) -> pd.DataFrame:
    """The served model's top-``k`` of every test user (the long table)."""
    served = ServedRecommender(model, data.id_map, data.X, cold_start=cold_start)
    return served.recommend(pd.DataFrame({USER_COL: np.sort(data.test[USER_COL].unique())}), k)


def detailed_evaluation(
    recs: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, context: Any, k: int
) -> DetailedEvaluation:
    """Accuracy, beyond-accuracy and slices of ``recs`` (side tables from ``context``)."""
    return evaluate_detailed(recs, test, train, k=k, items=context.items, users=context.users)


def beyond_figures(metrics: dict[str, float]) -> dict[str, float]:
    """The beyond-accuracy and slice figures of a detailed evaluation (no accuracy means)."""
    return {
        name: value
        for name, value in metrics.items()
        if name in BEYOND_METRICS or name.startswith(("slice.", "gap.", "fairness_gap."))
    }
