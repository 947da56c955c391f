"""The model registry: one name per recommender, imported only when used.

``MODELS`` maps a registry name to ``"module:Class"``; :func:`make_model` imports
the module on demand, so asking for ``popularity`` never imports tensorflow.
To add a model, add one entry here (its class subclasses
:class:`recsys.models.base.Recommender`); the shared contract test suite picks
it up through :func:`available_models`.
"""

from __future__ import annotations

import importlib
from typing import Any

from recsys.models.base import FitContext, Recommender

__all__ = ["MODELS", "FitContext", "Recommender", "available_models", "make_model"]

MODELS: dict[str, str] = {
    "popularity": "recsys.models.popularity:PopularityRecommender",
    "itemknn": "recsys.models.itemknn:ItemKNNRecommender",
    "als": "recsys.models.als:ALSRecommender",
    "ease": "recsys.models.ease:EASERecommender",
    "content": "recsys.models.content:ContentRecommender",
    "ranker": "recsys.models.ranker:XGBRankerRecommender",
    "attention": "recsys.models.attention:SelfAttentionRecommender",
}


def available_models() -> list[str]:
    """Registry names of every model, in registration order."""
    return list(MODELS)


def model_class(name: str) -> type[Recommender]:
    """Import and return the class registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the names that are).
    """
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        )
    module_name, class_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model ``name`` built with hyper-parameters ``params``.

    Raises:
        ValueError: ``name`` is not registered.
        TypeError: a parameter the model does not take.
    """
    return model_class(name)(**params)
