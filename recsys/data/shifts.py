"""Synthetic change, for drills of the monitoring: a steady stream and shifts injected into it.

- :func:`steady_stream`: a data set's interactions in a random order with
  fresh, increasing timestamps, so any stretch of it is drawn from the same
  distribution (the synthetic generator's own timestamps follow each user's
  active window, so its later rows hold ever more new users);
- :func:`popularity_shift`: a share of a batch's interactions moves to a few
  items from the reference's long tail (a trend);
- :func:`new_item_surge`: a share of a batch's interactions goes to items the
  catalogue never had.

Every function returns a new frame, keeps ``(user, item)`` pairs unique
and draws from the ``np.random.Generator`` it is given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, TIME_COL, USER_COL
from recsys.errors import InputError


def steady_stream(
    interactions: pd.DataFrame, rng: np.random.Generator, *, start: int, step: int = 60
) -> pd.DataFrame:
    """The rows in a random order, timestamped ``start``, ``start + step``, ... in that order."""
    order = rng.permutation(len(interactions))
    out = interactions.iloc[order].reset_index(drop=True)
    return out.assign(**{TIME_COL: start + step * np.arange(len(out), dtype=np.int64)})


def popularity_shift(
    batch: pd.DataFrame,
    reference: pd.DataFrame,
    rng: np.random.Generator,
    *,
    share: float = 0.4,
    n_items: int = 15,
    tail: float = 0.5,
) -> pd.DataFrame:
    """``share`` of the batch's rows re-pointed at ``n_items`` items drawn from the least
    popular ``tail`` of the reference's items.

    Raises:
        InputError: a share outside [0, 1] or a tail with fewer than ``n_items`` items.
    """
    _check_share(share)
    ranked = reference[ITEM_COL].value_counts().index
    pool = ranked[len(ranked) - int(len(ranked) * tail) :]
    if len(pool) < n_items:
        raise InputError(f"the reference's tail holds {len(pool)} items, fewer than {n_items}")
    hot = rng.choice(np.asarray(pool), n_items, replace=False)
    return _repoint(batch, rng, share, hot)


def new_item_surge(
    batch: pd.DataFrame,
    catalogue: pd.Index,
    rng: np.random.Generator,
    *,
    share: float = 0.3,
    n_items: int = 30,
) -> pd.DataFrame:
    """``share`` of the batch's rows re-pointed at ``n_items`` new integer item ids
    (above every id of ``catalogue``)."""
    _check_share(share)
    first = int(pd.to_numeric(pd.Series(catalogue)).max()) + 1
    return _repoint(batch, rng, share, np.arange(first, first + n_items))


def _repoint(
    batch: pd.DataFrame, rng: np.random.Generator, share: float, items: np.ndarray
) -> pd.DataFrame:
    moved = rng.random(len(batch)) < share
    new_items = batch[ITEM_COL].to_numpy().copy()
    new_items[moved] = rng.choice(items, int(moved.sum()))
    out = batch.assign(**{ITEM_COL: new_items})
    return out.drop_duplicates([USER_COL, ITEM_COL]).reset_index(drop=True)


def _check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise InputError(f"share must lie in [0, 1], got {share}")
