"""Data in: loaders for common formats and a synthetic generator.

Everything normalises to one :class:`Dataset`: an interactions table with
columns :data:`recsys.constants.INTERACTION_COLS` plus optional item and user
tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Dataset:
    """Interactions plus optional side tables.

    Attributes:
        interactions: one row per event: ``user_id``, ``item_id``, ``rating``
            (float; 1.0 for implicit feedback), ``timestamp`` (int64 seconds
            since the epoch, or all null when the source has no time).
        items: one row per item (``item_id``, optional ``title``, ``genres`` as
            a pipe-separated string, ``year``), or ``None``.
        users: one row per user (``user_id``, optional ``age``, ``gender``,
            ``occupation``), or ``None``.
        name: a short label for reports (``ml-100k``, ``synthetic``...).
        meta: free-form facts about the source (path, format, options).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    name: str = "dataset"
    meta: dict = field(default_factory=dict)
