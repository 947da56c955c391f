"""Most-popular baseline: one ranking for everyone, minus what a user has seen."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.models.base import FitContext, Recommender, pair_times

log = logging.getLogger(__name__)


class PopularityRecommender(Recommender):
    """Scores every item by its popularity in the training matrix.

    Args:
        weighted: if False (default) an item's score is the number of users
            who interacted with it (stored entries of its column); if True it
            is the sum of the interaction weights (e.g. ratings).
        half_life_days: when set, each interaction counts
            ``0.5 ** (age_days / half_life_days)``, its age taken from the latest
            time in ``context.timestamps``: what is popular now rather than
            overall (an error without timestamps). ``None`` (default): every
            interaction counts fully.

    Attributes:
        item_scores_: popularity of each item, shape ``(n_items,)``.
    """

    name = "popularity"
    #: One ranking for every history: only the seen items differ.
    folds_in: ClassVar[bool] = True
    search_space: ClassVar[dict[str, Any]] = {"weighted": ("choice", (False, True))}

    def __init__(self, weighted: bool = False, half_life_days: float | None = None) -> None:
        self.weighted = weighted
        self.half_life_days = half_life_days

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        weights = X.data if self.weighted else (X.data != 0).astype(np.float64)
        if self.half_life_days is not None:
            weights = weights * self._decay(X, context)
        counts = np.bincount(X.indices, weights=weights, minlength=X.shape[1])
        self.item_scores_ = counts.astype(np.float32)
        log.debug("popularity fitted on %d items", X.shape[1])

    def _decay(self, X: sp.csr_matrix, context: FitContext) -> np.ndarray:
        """Each stored entry's weight ``0.5 ** (age / half-life)``, aligned with ``X.data``."""
        if float(self.half_life_days) <= 0:
            raise InputError(f"half_life_days must be > 0, got {self.half_life_days}")
        times = pair_times(X, context.timestamps)
        known = times > 0 if times is not None else np.zeros(0, dtype=bool)
        if not known.any():
            raise InputError("popularity with half_life_days needs timestamps in the training data")
        age_days = (times[known].max() - times) / 86_400.0
        # A pair without a time counts as old as the oldest one.
        age_days[~known] = age_days[known].max()
        return np.power(0.5, age_days / float(self.half_life_days))

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.item_scores_, (users.size, 1))
