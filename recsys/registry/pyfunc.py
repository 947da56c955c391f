"""The champion as MLflow sees it: a pyfunc model that answers top-K lists by user id.

``predict`` takes a frame with a ``user_id`` column (plus optional onboarding
columns for new users) and params ``{"k": int}``, and returns the long table
``user_id, item_id, score, rank, served_by`` of :class:`ServedRecommender`.
Anything that speaks MLflow (``mlflow.pyfunc.load_model``, ``mlflow models
serve``) can use it; only this module and :mod:`recsys.registry.runs` log it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import scipy.sparse as sp

from recsys.constants import USER_COL
from recsys.errors import StateError
from recsys.ids import IdMap
from recsys.models.base import Recommender
from recsys.serving.coldstart import ONBOARDING_COLS, ColdStart
from recsys.serving.served import ServedRecommender

#: Name of the logged model inside its run (``runs:/<id>/model``).
MODEL_ARTIFACT = "model"
#: What the served model needs where it is loaded, pinned to this environment's versions.
_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "pyarrow", "cloudpickle")


def _pyfunc_class() -> type:
    """Build the pyfunc wrapper class (needs mlflow, hence built on first use).

    The class is published as ``recsys.registry.pyfunc.RecsysPyfuncModel`` through
    the module ``__getattr__`` so cloudpickle stores a reference to it, not its
    code. Models logged before the package had rooms name it
    ``recsys.tracking.RecsysPyfuncModel``; :mod:`recsys.compat` keeps that path.
    """
    import mlflow.pyfunc

    class RecsysPyfuncModel(mlflow.pyfunc.PythonModel):
        """Serves top-K recommendations by external user id (see :class:`ServedRecommender`)."""

        def __init__(self, k: int = 10) -> None:
            self.k = k
            self._served: ServedRecommender | None = None

        def load_context(self, context: Any) -> None:
            self._served = ServedRecommender.from_artifacts(context.artifacts)

        def served(self) -> ServedRecommender:
            """The served model behind ``predict`` (after MLflow loaded it)."""
            if self._served is None:
                raise StateError("the pyfunc model is not loaded; use mlflow.pyfunc.load_model")
            return self._served

        # A DataFrame hint tells MLflow to rely on the logged signature alone.
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict | None = None
        ) -> pd.DataFrame:
            if self._served is None:
                self.load_context(context)
            k = (params or {}).get("k", self.k)
            return self._served.recommend(model_input, _whole(k))

        def __getstate__(self) -> dict:
            return {"k": self.k, "_served": None}

    RecsysPyfuncModel.__module__ = __name__
    RecsysPyfuncModel.__qualname__ = "RecsysPyfuncModel"
    return RecsysPyfuncModel


def _whole(k: object) -> object:
    """A ``k`` that MLflow's params schema turned into a float (``10.0``) back to ``10``."""
    if isinstance(k, float) and k.is_integer():
        return int(k)
    return k


def __getattr__(name: str) -> Any:
    if name == "RecsysPyfuncModel":
        cls = _pyfunc_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def log_pyfunc(
    model: Recommender,
    id_map: IdMap,
    X: sp.csr_matrix,
    k: int,
    tmp: Path,
    cold_start: ColdStart | None = None,
    saved: Mapping[str, Path] | None = None,
) -> str:
    """Log the served model as pyfunc ``model`` of the active run; returns its URI.

    ``saved``: parts already on disk (:meth:`ServedRecommender.save`).
    """
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    served = ServedRecommender(model, id_map, X, cold_start)
    artifact_paths = served.save(tmp / "served", saved=saved)
    example = pd.DataFrame({USER_COL: id_map.users[: min(2, id_map.n_users)].to_numpy()})
    with warnings.catch_warnings():
        # A hint that does not apply: served ids are never missing.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, served.recommend(example, k), params={"k": int(k)})
        signature.inputs = _request_schema()
        signature.outputs = _any_user_id(signature.outputs)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=__getattr__("RecsysPyfuncModel")(k=int(k)),
            artifacts=artifact_paths,
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
        )
    return info.model_uri


def _request_schema() -> Any:
    """What ``predict`` takes: ``user_id`` of any type (the data's ids may be numbers or
    strings, and a caller's may be either: :class:`ServedRecommender` matches them to
    the trained ids), and the optional onboarding columns (a list or a string).

    Without the onboarding columns MLflow's schema enforcement would drop them
    before ``predict``; a typed ``user_id`` would refuse ``"42"`` for a model
    trained on integer ids, and any string id of a new user.
    """
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return Schema(
        [ColSpec(AnyType(), USER_COL, required=True)]
        + [ColSpec(AnyType(), name, required=False) for name in ONBOARDING_COLS]
    )


def _any_user_id(outputs: Any) -> Any:
    """The answer's schema with ``user_id`` as given by the caller (any type)."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return Schema([ColSpec(AnyType(), c.name) if c.name == USER_COL else c for c in outputs.inputs])


def _pip_requirements() -> list[str]:
    """Pinned requirements of the served model: this environment's versions.

    Pinned explicitly so MLflow skips its slow requirement inference; the
    model also needs the ``recsys`` package importable where it is loaded.
    """
    pins = []
    for package in _REQUIREMENTS:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins
