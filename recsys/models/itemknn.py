"""Item-based k-nearest-neighbours with (shrunk) cosine similarity, sparse throughout."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.models.base import FitContext, Recommender

log = logging.getLogger(__name__)

#: Dense cells materialised at once while pruning the similarity matrix.
_BLOCK_CELLS = 1 << 24


class ItemKNNRecommender(Recommender):
    """Item-item collaborative filtering.

    ``sim(i, j) = x_i · x_j / (‖x_i‖ ‖x_j‖ + shrinkage)`` over the item columns of
    the user × item matrix; each item keeps its ``k_neighbours`` most similar
    items (self excluded) as row ``i`` of the sparse matrix ``S``. A user's
    score for item ``j`` is ``Σ_i x_ui · S[i, j]``: every item the user has
    votes for its neighbours, weighted by the interaction and the similarity.

    Args:
        k_neighbours: neighbours kept per item.
        shrinkage: added to the denominator, damping similarities that rest on
            few co-occurrences (0 gives plain cosine).

    Attributes:
        similarity_: CSR ``(n_items, n_items)``, at most ``k_neighbours``
            positive entries per row, zero diagonal.
    """

    name = "itemknn"
    #: Scores read only the user's history row, so any row scores.
    folds_in: ClassVar[bool] = True
    search_space: ClassVar[dict[str, Any]] = {
        "k_neighbours": ("int", 10, 400, True),
        "shrinkage": ("float", 0.0, 100.0, False),
    }

    def __init__(self, k_neighbours: int = 100, shrinkage: float = 0.0) -> None:
        self.k_neighbours = k_neighbours
        self.shrinkage = shrinkage

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        if int(self.k_neighbours) < 1:
            raise InputError(f"k_neighbours must be >= 1, got {self.k_neighbours}")
        if self.shrinkage < 0:
            raise InputError(f"shrinkage must be >= 0, got {self.shrinkage}")
        items = X.T.tocsr().astype(np.float64)
        norms = np.sqrt(np.asarray(items.multiply(items).sum(axis=1)).ravel())
        self.similarity_ = self._prune(items, X.astype(np.float64).tocsr(), norms)
        log.debug("itemknn: %d similarities kept", self.similarity_.nnz)

    def _prune(self, items: sp.csr_matrix, X: sp.csr_matrix, norms: np.ndarray) -> sp.csr_matrix:
        """Shrunk cosine, top ``k_neighbours`` per row, in dense row blocks.

        Each block's co-occurrences are computed on their own (items of the
        block × every item), so memory stays one block whatever the catalogue:
        the whole co-occurrence matrix is never held.
        """
        n = items.shape[0]
        keep = min(int(self.k_neighbours), n - 1)
        block = max(1, _BLOCK_CELLS // n)
        parts = []
        for start in range(0, n, block):
            rows = np.arange(start, min(start + block, n))
            sim = (items[rows] @ X).toarray()
            sim /= np.outer(norms[rows], norms) + self.shrinkage + 1e-12
            sim[np.arange(rows.size), rows] = 0.0
            parts.append(_keep_top(sim, keep))
        S = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((n, n))
        S.eliminate_zeros()
        return S.astype(np.float32)

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return (X[users] @ self.similarity_).toarray()


def _keep_top(sim: np.ndarray, keep: int) -> sp.csr_matrix:
    """Sparse copy of ``sim`` with only each row's ``keep`` largest entries."""
    if keep <= 0:
        return sp.csr_matrix(sim.shape)
    if keep >= sim.shape[1]:
        return sp.csr_matrix(sim)
    n_rows, n = sim.shape
    cut = np.argpartition(sim, n - keep, axis=1)[:, n - keep :]
    values = np.take_along_axis(sim, cut, axis=1)
    rows = np.repeat(np.arange(n_rows), keep)
    top = sp.csr_matrix((values.ravel(), (rows, cut.ravel())), shape=sim.shape)
    top.eliminate_zeros()
    return top
