"""Fit one registered model and score it: on warm users, and exactly as it will be served."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from recsys.constants import USER_COL
from recsys.evaluation.beyond import BEYOND_METRICS, DetailedEvaluation, evaluate_detailed
from recsys.evaluation.holdout import evaluate_model
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


def cold_start_chain(data: TrainingData) -> ColdStart:
    """The fallback chain served models use for users they have never seen."""
    return fit_cold_start(data.train, data.context.items, data.context.users, id_map=data.id_map)


def served_evaluation(
    model: Recommender, data: TrainingData, *, k: int = 10, cold_start: ColdStart | None = None
) -> DetailedEvaluation:
    """Score ``model`` exactly as its served pyfunc answers: every test user, unknown
    users through the cold-start chain (:class:`recsys.serving.served.ServedRecommender`).

    Returns:
        The figures the gate and the leaderboard compare, on the same users as
        the champion's.
    """
    served = ServedRecommender(model, data.id_map, data.X, cold_start=cold_start)
    recs = served.recommend(pd.DataFrame({USER_COL: np.sort(data.test[USER_COL].unique())}), k)
    return detailed_evaluation(recs, data.train, data.test, data.context, k)


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
