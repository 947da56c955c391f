"""The model registry: one name per recommender, imported only when used.

``MODELS`` maps a registry name to ``"module:Class"``; :func:`make_model` imports
the module on demand, so asking for ``popularity`` never imports tensorflow,
and importing this package imports no numerical library at all (the DAG file
reads the names at parse time). To add a model, add one entry here (its class
subclasses :class:`recsys.models.base.Recommender`); the shared contract test
suite, the DAG's tasks, the CLI and the trigger form pick it up from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.models.base import Recommender

__all__ = [
    "DEFAULT_MODELS",
    "MODELS",
    "available_models",
    "make_model",
    "model_class",
    "training_order",
]

MODELS: dict[str, str] = {
    "popularity": "recsys.models.popularity:PopularityRecommender",
    "itemknn": "recsys.models.itemknn:ItemKNNRecommender",
    "als": "recsys.models.als:ALSRecommender",
    "ease": "recsys.models.ease:EASERecommender",
    "content": "recsys.models.content:ContentRecommender",
    "ranker": "recsys.models.ranker:XGBRankerRecommender",
    "attention": "recsys.models.attention:SelfAttentionRecommender",
    # MLlib ALS on Spark (RECSYS_ENGINE=spark); not a default: it needs a JVM.
    "spark_als": "recsys.models.spark_als:SparkALSRecommender",
}

#: What a training run trains unless told otherwise (the CLI and the DAG alike):
#: every model but the attention network, which takes minutes and pays off when
#: the next item matters (a ``loo``-style protocol).
DEFAULT_MODELS: tuple[str, ...] = ("popularity", "itemknn", "als", "ease", "content", "ranker")


def available_models() -> list[str]:
    """Registry names of every model, in registration order."""
    return list(MODELS)


def training_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order a run trains them: the ranker last, so it can take the
    models fitted before it in place of its generators with the same settings."""
    return sorted(names, key=lambda name: name == "ranker")


def model_class(name: str) -> type[Recommender]:
    """Import and return the class registered as ``name``.

    Raises:
        recsys.errors.InputError: ``name`` is not registered (the message lists
            the names that are).
    """
    from recsys.errors import InputError

    if name not in MODELS:
        raise InputError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        )
    module_name, class_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model ``name`` built with hyper-parameters ``params``.

    Raises:
        recsys.errors.InputError: ``name`` is not registered.
        TypeError: a parameter the model does not take.
    """
    return model_class(name)(**params)
