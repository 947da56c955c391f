"""Item-based k-nearest-neighbours with (shrunk) cosine similarity, sparse throughout."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.models.base import FitContext, Recommender, top_k

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
        items = X.T.tocsr()
        norms = np.sqrt(np.asarray(items.multiply(items).sum(axis=1, dtype=np.float64)).ravel())
        self.similarity_ = self._prune(items, X, norms.astype(np.float32))
        log.debug("itemknn: %d similarities kept", self.similarity_.nnz)

    def _prune(self, items: sp.csr_matrix, X: sp.csr_matrix, norms: np.ndarray) -> sp.csr_matrix:
        """Shrunk cosine, top ``k_neighbours`` per row, in row blocks.

        Each block's co-occurrences are computed on their own (items of the
        block × every item), so memory stays one block whatever the catalogue:
        the whole co-occurrence matrix is never held. They stay sparse: a row
        with at most ``k_neighbours`` co-occurring items keeps them all, and
        only the rows with more are made dense to pick theirs with
        :func:`top_k` (ties to the lower item index). Zeros are never
        candidates, so a sparse catalogue does not pay for ranking them.
        """
        n = items.shape[0]
        keep = min(int(self.k_neighbours), n - 1)
        block = max(1, _BLOCK_CELLS // n)
        parts = []
        for start in range(0, n, block):
            rows = np.arange(start, min(start + block, n))
            co = (items[rows] @ X).tocsr()
            co.sum_duplicates()
            at = np.repeat(np.arange(rows.size), np.diff(co.indptr))
            co.data /= norms[rows][at] * norms[co.indices] + np.float32(self.shrinkage + 1e-12)
            co.data[co.indices == rows[at]] = 0.0  # no item is its own neighbour
            co.eliminate_zeros()
            parts.append(_keep_top(co, keep))
        S = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((n, n))
        S.eliminate_zeros()
        return S

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return (X[users] @ self.similarity_).toarray()


def _keep_top(sim: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """``sim`` (CSR, positive entries) with only each row's ``keep`` largest entries."""
    if keep <= 0:
        return sp.csr_matrix(sim.shape, dtype=sim.dtype)
    full = np.flatnonzero(np.diff(sim.indptr) > keep)
    if full.size == 0:
        return sim
    cut, values = top_k(sim[full].toarray(), keep)
    rest = sp.diags((np.diff(sim.indptr) <= keep).astype(sim.dtype)) @ sim
    top = sp.csr_matrix((values.ravel(), (np.repeat(full, keep), cut.ravel())), shape=sim.shape)
    return (rest + top).tocsr()
