"""Implicit-feedback ALS fitted on Spark (MLlib), for data past one machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.models.als import ALS_SEARCH_SPACE, factor_scores
from recsys.models.base import FitContext, Recommender

log = logging.getLogger(__name__)

#: Folder of a saved model holding the fitted Spark model (when the fitting
#: process saved it): what :func:`recsys.engines.spark.als_top_k` serves from.
SPARK_MODEL_DIR = "spark_model"


class SparkALSRecommender(Recommender):
    """MLlib's ALS with implicit preferences (Hu, Koren, Volinsky 2008) on the Spark
    session of :func:`recsys.engines.spark.session`.

    Confidence is ``1 + alpha · x_ui``, preference ``x_ui > 0``, as in ``als``;
    MLlib scales the L2 penalty by each user's and item's number of ratings, so
    the same ``regularization`` is not the same model as ``als``'s. The learned
    factors are gathered into NumPy after the fit, so the saved model scores and
    loads without Spark (the pyfunc and ``recsys serve`` need no cluster); the
    Spark model itself is saved beside them for batch lists of every user
    (``recommendForAllUsers``, :func:`recsys.engines.spark.als_top_k`).

    Args:
        factors: latent dimensions (MLlib's ``rank``).
        regularization: L2 penalty (``regParam``).
        alpha: confidence scaling of the interaction weights.
        iterations: ALS sweeps (``maxIter``).
        blocks: user and item blocks (``numUserBlocks`` / ``numItemBlocks``);
            ``None`` takes one per million interactions and at least one per
            core of the session, up to MLlib's default of 10
            (:func:`recsys.engines.spark.als_blocks`): each block is one task,
            so one block fits on one core (1M interactions on two cores: 54.7 s
            with one block, 30.2 s with two). With 1 the fit is bit-for-bit
            reproducible; with more, shuffles may sum in another order between
            runs (two fits with two blocks gave the same factors there).
        random_state: seed of the factor initialisation.

    Attributes:
        user_factors_: ``(n_users, factors)`` float32 (zeros for a user without
            interactions, whom MLlib gives no factors).
        item_factors_: ``(n_items, factors)`` float32.
    """

    name = "spark_als"
    search_space: ClassVar[dict[str, Any]] = ALS_SEARCH_SPACE

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        blocks: int | None = None,
        random_state: int | None = 42,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.blocks = blocks
        self.random_state = random_state

    def _fit(self, X: sp.csr_matrix, context: FitContext) -> None:
        from recsys.engines import spark as engine

        seed = int(np.random.default_rng(self.random_state).integers(0, 2**31 - 1))
        model = engine.fit_als(
            X,
            rank=int(self.factors),
            regularization=float(self.regularization),
            alpha=float(self.alpha),
            iterations=int(self.iterations),
            blocks=self.blocks or engine.als_blocks(X.nnz),
            seed=seed,
        )
        self.user_factors_, self.item_factors_ = engine.als_factors(model, *X.shape)
        self.spark_model_ = model
        log.debug("spark_als fitted: %d users, %d items", *X.shape)

    def _score(self, users: np.ndarray, X: sp.csr_matrix) -> np.ndarray:
        return factor_scores("spark_als", self.user_factors_, self.item_factors_, users)

    def _save(self, path: Path) -> None:
        """The pickle of the factors, and the Spark model when this process fitted it."""
        super()._save(path)
        model = self.__dict__.get("spark_model_")
        if model is not None:
            from recsys.engines import spark as engine

            engine.save_als(model, path / SPARK_MODEL_DIR)

    def __getstate__(self) -> dict[str, Any]:
        """The fitted state without the Spark model (a handle into a live session)."""
        state = dict(self.__dict__)
        state.pop("spark_model_", None)
        return state
