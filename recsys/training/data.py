"""What every model of one run (or benchmark, or tuning study) is fitted and scored on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import ITEM_COL, USER_COL
from recsys.data import Dataset, SideTables
from recsys.data.features import indexed_features
from recsys.ids import IdMap
from recsys.models.base import FitContext

progress = logging.getLogger("recsys.progress")

#: Feature tables handed to models through :class:`recsys.models.base.FitContext`.
CONTEXT_TABLES = ("user_profiles", "item_features")


@dataclass
class TrainingData:
    """The training and test rows, the id map, the training matrix and the fit context.

    Attributes:
        train: training interactions (``user_id, item_id, rating, timestamp``).
        test: held-out interactions.
        id_map: users of ``train`` and every catalogue item.
        X: ``id_map``'s users × items matrix of ``train``.
        context: what models may read beside ``X`` (:class:`FitContext`).
        split: the split's description (:func:`recsys.data.splits.describe_split`).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    id_map: IdMap
    X: sp.csr_matrix
    context: FitContext
    split: dict


def build_training_data(
    train: pd.DataFrame,
    test: pd.DataFrame,
    dataset: Dataset | SideTables,
    split: dict,
    *,
    features: dict[str, pd.DataFrame] | None = None,
) -> TrainingData:
    """The matrix, id map and fit context every model of a run or benchmark shares.

    The id map covers every catalogue item (so content models can recommend
    items nobody interacted with yet). The context carries the item and user
    tables, the item ids of the columns and each pair's latest timestamp
    (:meth:`FitContext.from_interactions`); ``features`` (``user_profiles``
    and/or ``item_features``, as :func:`recsys.pipeline.build_features`
    writes them) become ``context.user_features`` (row ``r`` = matrix row
    ``r``) and ``context.item_features`` (row ``j`` = matrix column ``j``),
    nulls filled (:func:`recsys.data.features.indexed_features`).
    """
    catalogue = dataset.items[ITEM_COL] if dataset.items is not None else None
    id_map = IdMap.from_frame(train, extra_items=catalogue)
    features = features or {}
    context = FitContext.from_interactions(train, id_map, items=dataset.items, users=dataset.users)
    if "user_profiles" in features:
        context.user_features = indexed_features(features["user_profiles"], USER_COL, id_map.users)
    if "item_features" in features:
        context.item_features = indexed_features(features["item_features"], ITEM_COL, id_map.items)
    return TrainingData(train, test, id_map, id_map.to_matrix(train), context, split)


def sample_test_users(data: TrainingData, max_users: int | None, seed: int = 0) -> TrainingData:
    """``data`` with the test rows of a seeded sample of ``max_users`` test users, when
    the holdout has more (``None``: all of them).

    The training rows stay whole: only what is scored shrinks. The sample depends
    on the test users and ``seed`` alone, so every model of a run, and the
    champion scored on the same holdout, meet the same users; ``split`` records
    it (``evaluation_sample``) and the figures report both counts.
    """
    users = np.sort(data.test[USER_COL].unique())
    if max_users is None or users.size <= max_users:
        return data
    keep = np.random.default_rng(seed).choice(users, size=int(max_users), replace=False)
    progress.info(
        "evaluating on a seeded sample of %s of the %s test users (RECSYS_EVAL_MAX_USERS)",
        f"{int(max_users):,}",
        f"{users.size:,}",
    )
    sample = {"users": int(max_users), "of_users": int(users.size), "seed": int(seed)}
    return replace(
        data,
        test=data.test[data.test[USER_COL].isin(keep)],
        split={**data.split, "evaluation_sample": sample},
    )
