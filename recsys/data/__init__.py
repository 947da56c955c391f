"""Data in, checked and shaped: everything between a file and a training matrix.

- :mod:`~recsys.data.loaders`: common formats (MovieLens, CSV/TSV/Parquet,
  the interaction store) into one :class:`Dataset`;
- :mod:`~recsys.data.generate`: the synthetic generator;
- :mod:`~recsys.data.ingest`: landing batches into the interaction store;
- :mod:`~recsys.data.landing`: which landed batches are complete, and claiming them;
- :mod:`~recsys.data.storelock`: the store's lock (one writer at a time);
- :mod:`~recsys.data.validation`: the Great Expectations suites;
- :mod:`~recsys.data.prepare`: de-duplication, filtering, pseudonymisation;
- :mod:`~recsys.data.splits`: every split protocol;
- :mod:`~recsys.data.features`: user profiles, item features, sequences, content;
- :mod:`~recsys.data.erasure`: rewriting tables without some users' rows, atomically;
- :mod:`~recsys.data.forgotten`: the forgotten-users list (salted hashes);
- :mod:`~recsys.data.shifts`: a steady synthetic stream and injected shifts (drills).

Everything normalises to one :class:`Dataset`: an interactions table with
columns :data:`recsys.constants.INTERACTION_COLS` plus optional item and user
tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

#: ``Dataset.meta`` key of the rating scale ``(low, high)`` a source declares (MovieLens: 1-5).
RATING_SCALE = "rating_scale"


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


@dataclass
class SideTables:
    """The item and user tables of a data set without its interactions: what a step
    that already has its split needs (:meth:`recsys.pipeline.runfolder.RunFolder.side_tables`)."""

    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
