"""EASE: a closed-form linear item-item autoencoder (Steck, WWW 2019)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.models.base import FitContext, Recommender

log = logging.getLogger(__name__)


class EASERecommender(Recommender):
    """Embarrassingly Shallow AutoEncoder.

    ``P = (XᵀX + λI)⁻¹`` and ``B = I − P · diag(1 / diag(P))``, so ``B`` has a
    zero diagonal (an item never explains itself). A user's scores are
    ``x_u · B``. Memory and time grow with ``n_items²`` / ``n_items³``: fine up
    to tens of thousands of items.

    Args:
        l2: the ridge penalty λ on ``B``.
        binary: use ``X > 0`` (1 per interaction) instead of the weights, both
            to fit and to score.

    Attributes:
        weights_: dense ``(n_items, n_items)`` float32 matrix ``B``.
    """

    name = "ease"
    #: Scores read only the user's history row, so any row scores.
    folds_in: ClassVar[bool] = True
    search_space: ClassVar[dict[str, Any]] = {"l2": ("float", 10.0, 5000.0, True)}

    def __init__(self, l2: float = 500.0, binary: bool = True) -> None:
        self.l2 = l2
        self.binary = binary

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        if self.l2 <= 0:
            raise InputError(f"l2 must be > 0, got {self.l2}")
        X = self._prepare(X)
        gram = (X.T @ X).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        P = np.linalg.inv(gram)
        B = -P / np.diag(P)[np.newaxis, :]
        B[np.diag_indices_from(B)] = 0.0
        self.weights_ = B.astype(np.float32)
        log.debug("ease fitted on %d items", X.shape[1])

    def _prepare(self, X: sp.csr_matrix) -> sp.csr_matrix:
        if not self.binary:
            return X
        return (X > 0).astype(np.float32).tocsr()

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        if users.size == 1:  # one request: sum the user's rows of B, no sparse objects
            u = int(users[0])
            items = X.indices[X.indptr[u] : X.indptr[u + 1]]
            weights = X.data[X.indptr[u] : X.indptr[u + 1]]
            if self.binary:
                items = items[weights > 0]
                return self.weights_[items].sum(axis=0, keepdims=True)
            return (weights[:, None] * self.weights_[items]).sum(axis=0, keepdims=True)
        return np.asarray(self._prepare(X[users]) @ self.weights_)
