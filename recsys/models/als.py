"""Implicit-feedback matrix factorisation (ALS) through the ``implicit`` library."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.models.base import FitContext, Recommender

log = logging.getLogger(__name__)

#: The hyper-parameters an ALS model is tuned over (``implicit`` and MLlib alike).
ALS_SEARCH_SPACE: dict[str, Any] = {
    "factors": ("int", 16, 128, True),
    "regularization": ("float", 1e-3, 1.0, True),
    "alpha": ("float", 0.5, 20.0, True),
}


class ALSRecommender(Recommender):
    """Alternating least squares for implicit feedback (Hu, Koren, Volinsky 2008).

    Confidence is ``1 + alpha · x_ui``; preference is ``x_ui > 0``. The CPU
    solver (``implicit.cpu.als``) is used even when a GPU exists, so results do
    not depend on the machine. Only the learned factors are kept: the saved
    model does not need ``implicit`` to load or score.

    Args:
        factors: latent dimensions.
        regularization: L2 penalty on the factors.
        alpha: confidence scaling of the interaction weights.
        iterations: ALS sweeps.
        num_threads: solver threads (results are the same for any count).
        random_state: seed of the factor initialisation.

    Attributes:
        user_factors_: ``(n_users, factors)`` float32.
        item_factors_: ``(n_items, factors)`` float32.
    """

    name = "als"
    #: A new history's user factors are solved against the item factors.
    folds_in: ClassVar[bool] = True
    search_space: ClassVar[dict[str, Any]] = ALS_SEARCH_SPACE

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        num_threads: int = 1,
        random_state: int | None = 42,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.num_threads = num_threads
        self.random_state = random_state

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        # implicit's solver is itself threaded; a threaded BLAS underneath only
        # oversubscribes the cores (implicit warns about it at construction).
        with threadpool_limits(limits=1, user_api="blas"):
            solver = AlternatingLeastSquares(
                factors=int(self.factors),
                regularization=float(self.regularization),
                alpha=float(self.alpha),
                iterations=int(self.iterations),
                num_threads=int(self.num_threads),
                random_state=self._seed(),
            )
            solver.fit(X, show_progress=False)
        self.user_factors_ = np.asarray(solver.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(solver.item_factors, dtype=np.float32)
        log.debug("als fitted: %d users, %d items", *X.shape)

    def _seed(self) -> int:
        """A concrete seed for implicit, drawn from ``random_state``."""
        rng = np.random.default_rng(self.random_state)
        return int(rng.integers(0, 2**31 - 1))

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return factor_scores("ALS", self.user_factors_, self.item_factors_, users)

    def _score_histories(self, H: sp.csr_matrix) -> np.ndarray:
        """Solve each history's user factors against the fitted item factors
        (implicit's ``recalculate_user``: the same least squares as a fit's
        user step), then score as a fitted user."""
        return self._recalculated(H) @ self.item_factors_.T

    def _recalculated(self, H: sp.csr_matrix) -> np.ndarray:
        solver = self.__dict__.get("_fold_in_solver")
        if solver is None:
            solver = self._fold_in_solver = self._solver_for_fold_in()
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            factors = solver.recalculate_user(np.arange(H.shape[0]), H)
        return np.asarray(factors, dtype=np.float32).reshape(H.shape[0], -1)

    def _solver_for_fold_in(self) -> Any:
        """An ``implicit`` solver holding the fitted item factors (built once, not saved)."""
        import warnings

        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # its BLAS-threads hint
            solver = AlternatingLeastSquares(
                factors=self.item_factors_.shape[1],
                regularization=float(self.regularization),
                alpha=float(self.alpha),
                num_threads=1,
            )
        solver.item_factors = self.item_factors_
        solver.user_factors = self.user_factors_
        return solver

    def __getstate__(self) -> dict[str, Any]:
        """The fitted state without the fold-in solver (rebuilt on first use)."""
        state = dict(self.__dict__)
        state.pop("_fold_in_solver", None)
        return state


def factor_scores(
    label: str, user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray
) -> np.ndarray:
    """Every item's score for ``users`` (rows of ``user_factors``): their dot products.

    Raises:
        InputError: a user index past the users the factors were fitted on.
    """
    if users.size and users.max() >= user_factors.shape[0]:
        raise InputError(
            f"{label} scores only the {user_factors.shape[0]} users it was fitted on; "
            f"got user index {int(users.max())}"
        )
    return user_factors[users] @ item_factors.T
