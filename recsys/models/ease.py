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
    ``x_u · B``. Memory grows with ``n_items²`` and time with ``n_items³`` (the
    algorithm inverts the Gram matrix), so the model works in float32 on at
    most ``max_items`` items, the most popular ones; the others (the long tail)
    are scored below every one of them, by popularity. Before it allocates, it
    estimates the memory it will need and refuses, naming ``max_items``, when
    that is more than the machine has free.

    Args:
        l2: the ridge penalty λ on ``B``.
        binary: use ``X > 0`` (1 per interaction) instead of the weights, both
            to fit and to score.
        max_items: most items the Gram matrix holds (10,000 items need about
            1.2 GB and half a minute on 2 cores while fitting; 20,000 four times
            the memory and eight times the time); ``None`` = every item.

    Attributes:
        weights_: dense ``(n_head, n_head)`` float32 matrix ``B`` of the head items.
        head_: column indices of the head items (all items when none was cut).
        tail_scores_: per item, the score a tail item gets (below every head
            score, ordered by popularity); ``None`` when nothing was cut.
    """

    name = "ease"
    #: Scores read only the user's history row, so any row scores.
    folds_in: ClassVar[bool] = True
    search_space: ClassVar[dict[str, Any]] = {"l2": ("float", 10.0, 5000.0, True)}

    def __init__(
        self, l2: float = 500.0, binary: bool = True, max_items: int | None = 10_000
    ) -> None:
        self.l2 = l2
        self.binary = binary
        self.max_items = max_items

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        if self.l2 <= 0:
            raise InputError(f"l2 must be > 0, got {self.l2}")
        if self.max_items is not None and int(self.max_items) < 1:
            raise InputError(f"max_items must be >= 1 or None, got {self.max_items}")
        X = self._prepare(X)
        popularity = np.asarray((X > 0).sum(axis=0)).ravel()
        self.head_, self.tail_scores_ = self._head(popularity)
        _check_memory(self.head_.size)
        Xh = X[:, self.head_] if self.tail_scores_ is not None else X
        gram = (Xh.T @ Xh).toarray().astype(np.float32, copy=False)
        gram[np.diag_indices_from(gram)] += self.l2
        P = _spd_inverse(gram)
        del gram
        P /= -np.diag(P)[np.newaxis, :]
        P[np.diag_indices_from(P)] = 0.0
        self.weights_ = P
        log.info(
            "ease fitted on %d of %d items (%.1f GB of weights)",
            self.head_.size,
            X.shape[1],
            P.nbytes / 1e9,
        )

    def _head(self, popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The most popular ``max_items`` columns, and the tail's fallback scores."""
        n = popularity.size
        if self.max_items is None or n <= int(self.max_items):
            return np.arange(n), None
        order = np.argsort(-popularity, kind="stable")
        head = np.sort(order[: int(self.max_items)])
        tail = np.full(n, np.nan, dtype=np.float32)
        share = popularity / max(popularity.max(), 1)
        tail[order[int(self.max_items) :]] = _TAIL_FLOOR + share[order[int(self.max_items) :]]
        log.info(
            "ease: %d items, the %d most popular modelled (max_items); the rest "
            "ranked below them by popularity",
            n,
            head.size,
        )
        return head, tail

    def _prepare(self, X: sp.csr_matrix) -> sp.csr_matrix:
        if not self.binary:
            return X
        return (X > 0).astype(np.float32).tocsr()

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        tail = getattr(self, "tail_scores_", None)  # None also in models saved before max_items
        if users.size == 1 and tail is None:  # one request: sum the user's rows of B
            u = int(users[0])
            items = X.indices[X.indptr[u] : X.indptr[u + 1]]
            weights = X.data[X.indptr[u] : X.indptr[u + 1]]
            if self.binary:
                items = items[weights > 0]
                return self.weights_[items].sum(axis=0, keepdims=True)
            return (weights[:, None] * self.weights_[items]).sum(axis=0, keepdims=True)
        rows = self._prepare(X[users])
        if tail is None:
            return np.asarray(rows @ self.weights_)
        scores = np.broadcast_to(self.tail_scores_, (len(users), X.shape[1])).copy()
        scores[:, self.head_] = np.asarray(rows[:, self.head_] @ self.weights_)
        return scores


#: Below any score EASE gives a modelled item (its scores are sums of weights of a
#: user's items, each in (-1, 1) for any sensible l2).
_TAIL_FLOOR = np.float32(-1e4)
#: Bytes EASE holds at its peak per Gram cell: the float32 Gram matrix and its
#: inverse side by side, plus LAPACK's workspace.
_PEAK_BYTES_PER_CELL = 12


def _spd_inverse(gram: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, in place where LAPACK allows.

    Cholesky (``potrf``) then the inverse from it (``potri``): two thirds of
    ``n³`` operations, a third of a general inverse's, which matters at 10,000
    items and more. LAPACK works on the transposed view (Fortran order, the same
    matrix since it is symmetric), so it overwrites ``gram`` instead of copying
    it, and only the lower triangle it fills is mirrored, block by block: no
    extra ``n × n`` array at any point (at 10,000 items the earlier whole-matrix
    ``tril`` copies took 4 s and 1.6 GB).
    """
    from scipy.linalg import lapack

    fortran = gram.T
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (fortran,))
    factor, info = potrf(fortran, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise InputError(
            f"ease: the Gram matrix is not positive definite (LAPACK {info}); raise l2"
        )
    inverse, info = potri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise InputError(f"ease: the Gram matrix cannot be inverted (LAPACK {info}); raise l2")
    n = inverse.shape[0]
    for start in range(0, n, _MIRROR_BLOCK):
        end = min(start + _MIRROR_BLOCK, n)
        block = inverse[start:end, start:end]
        block[...] = np.tril(block) + np.tril(block, -1).T
        inverse[start:end, end:] = inverse[end:, start:end].T
    return inverse.T  # C order: a user's rows of the weights are read together


#: Rows mirrored at a time by :func:`_spd_inverse`.
_MIRROR_BLOCK = 256


def _check_memory(n_items: int) -> None:
    """Refuse, before allocating, a Gram matrix the machine cannot hold."""
    import psutil

    need = _PEAK_BYTES_PER_CELL * n_items * n_items
    free = psutil.virtual_memory().available
    log.info(
        "ease: %d items need about %.1f GB while fitting (%.1f GB free)",
        n_items,
        need / 1e9,
        free / 1e9,
    )
    if need > free:
        raise InputError(
            f"ease needs about {need / 1e9:.1f} GB to fit {n_items:,} items and "
            f"{free / 1e9:.1f} GB is free; lower its max_items (model_params "
            f"{{'ease': {{'max_items': {int(n_items * (free / need) ** 0.5):,}}}}})"
        )
