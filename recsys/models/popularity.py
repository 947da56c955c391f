"""Most-popular baseline: one ranking for everyone, minus what a user has seen."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.models.base import FitContext, Recommender

log = logging.getLogger(__name__)


class PopularityRecommender(Recommender):
    """Scores every item by its popularity in the training matrix.

    Args:
        weighted: if False (default) an item's score is the number of users
            who interacted with it (stored entries of its column); if True it
            is the sum of the interaction weights (e.g. ratings).

    Attributes:
        item_scores_: popularity of each item, shape ``(n_items,)``.
    """

    name = "popularity"
    #: One ranking for every history: only the seen items differ.
    folds_in: ClassVar[bool] = True
    search_space: ClassVar[dict[str, Any]] = {"weighted": ("choice", (False, True))}

    def __init__(self, weighted: bool = False) -> None:
        self.weighted = weighted

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        if self.weighted:
            counts = np.asarray(X.sum(axis=0)).ravel()
        else:
            counts = np.bincount(X.indices[X.data != 0], minlength=X.shape[1])
        self.item_scores_ = counts.astype(np.float32)
        log.debug("popularity fitted on %d items", X.shape[1])

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.item_scores_, (users.size, 1))
