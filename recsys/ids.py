"""The one place where external user/item ids meet matrix indices.

Models work on a CSR matrix ``X`` (rows = users, columns = items) and on index
arrays; ids appear only at the edges, through an :class:`IdMap`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import (
    ITEM_COL,
    RANK_COL,
    RATING_COL,
    SCORE_COL,
    SERVED_BY_COL,
    TIME_COL,
    USER_COL,
)


@dataclass(frozen=True)
class IdMap:
    """Bidirectional map between external ids and contiguous indices.

    ``users[i]`` is the external id of matrix row ``i``; ``items[j]`` the id of
    column ``j``. Both indexes are unique.
    """

    users: pd.Index
    items: pd.Index

    @classmethod
    def from_frame(
        cls,
        interactions: pd.DataFrame,
        *,
        extra_items: pd.Index | None = None,
        user_col: str = USER_COL,
        item_col: str = ITEM_COL,
    ) -> IdMap:
        """Index every user and item seen in ``interactions`` (plus ``extra_items``).

        Ids are sorted so the same data always gives the same indices.
        """
        return cls.from_ids(
            interactions[user_col].unique(),
            interactions[item_col].unique(),
            extra_items=extra_items,
            user_col=user_col,
            item_col=item_col,
        )

    @classmethod
    def from_ids(
        cls,
        users: object,
        items: object,
        *,
        extra_items: pd.Index | None = None,
        user_col: str = USER_COL,
        item_col: str = ITEM_COL,
    ) -> IdMap:
        """The map of :meth:`from_frame` from the distinct ids alone (as counted elsewhere)."""
        user_ids = np.sort(pd.unique(np.asarray(users)))
        item_ids = pd.unique(np.asarray(items))
        if extra_items is not None:
            item_ids = np.union1d(item_ids, np.asarray(extra_items))
        return cls(
            users=pd.Index(user_ids, name=user_col),
            items=pd.Index(np.sort(item_ids), name=item_col),
        )

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_index(self, ids: object) -> np.ndarray:
        """Row indices of ``ids``; unknown ids get ``-1``."""
        return self.users.get_indexer(pd.Index(np.atleast_1d(np.asarray(ids))))

    def match_user_ids(self, ids: object) -> np.ndarray:
        """``ids`` as the map stores them, where a request's type differs (:func:`match_ids`)."""
        return match_ids(ids, self.users)

    def item_index(self, ids: object) -> np.ndarray:
        """Column indices of ``ids``; unknown ids get ``-1``."""
        return self.items.get_indexer(pd.Index(np.atleast_1d(np.asarray(ids))))

    def to_matrix(
        self,
        interactions: pd.DataFrame,
        *,
        weight_col: str | None = RATING_COL,
        user_col: str = USER_COL,
        item_col: str = ITEM_COL,
    ) -> sp.csr_matrix:
        """Build the user × item CSR matrix of ``interactions``.

        Rows whose user or item is not in the map are left out; callers that must
        not lose rows check :meth:`unknown` first. Duplicate pairs are summed.
        With ``weight_col=None`` every interaction weighs 1.
        """
        u = self.user_index(interactions[user_col].to_numpy())
        i = self.item_index(interactions[item_col].to_numpy())
        keep = (u >= 0) & (i >= 0)
        if weight_col is None or weight_col not in interactions:
            w = np.ones(int(keep.sum()), dtype=np.float32)
        else:
            w = interactions[weight_col].to_numpy(dtype=np.float32)[keep]
        X = sp.csr_matrix((w, (u[keep], i[keep])), shape=(self.n_users, self.n_items))
        X.sum_duplicates()
        return X

    def time_matrix(
        self, interactions: pd.DataFrame, *, time_col: str = TIME_COL
    ) -> sp.csr_matrix | None:
        """User × item CSR of each pair's latest timestamp (float64), or ``None``
        when ``interactions`` has no ``time_col`` or no timestamp in it. Pairs
        the map does not know are left out, as in :meth:`to_matrix`."""
        if time_col not in interactions or interactions[time_col].isna().all():
            return None
        u = self.user_index(interactions[USER_COL].to_numpy())
        i = self.item_index(interactions[ITEM_COL].to_numpy())
        t = pd.to_numeric(interactions[time_col], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        keep = (u >= 0) & (i >= 0) & np.isfinite(t)
        latest = (
            pd.DataFrame({"u": u[keep], "i": i[keep], "t": t[keep]})
            .groupby(["u", "i"], sort=False)["t"]
            .max()
        )
        return sp.csr_matrix(
            (
                latest.to_numpy(),
                (latest.index.get_level_values(0), latest.index.get_level_values(1)),
            ),
            shape=(self.n_users, self.n_items),
        )

    def unknown(
        self, interactions: pd.DataFrame, *, user_col: str = USER_COL, item_col: str = ITEM_COL
    ) -> pd.DataFrame:
        """Rows of ``interactions`` whose user or item this map does not know."""
        u = self.user_index(interactions[user_col].to_numpy())
        i = self.item_index(interactions[item_col].to_numpy())
        return interactions[(u < 0) | (i < 0)]

    def sequences(
        self,
        interactions: pd.DataFrame,
        *,
        user_col: str = USER_COL,
        item_col: str = ITEM_COL,
        time_col: str = TIME_COL,
    ) -> list[np.ndarray]:
        """Each user's item indices ordered by time (stable on ties), one array per row.

        Users without interactions get an empty array, so ``len(result) == n_users``.
        """
        u = self.user_index(interactions[user_col].to_numpy())
        i = self.item_index(interactions[item_col].to_numpy())
        keep = (u >= 0) & (i >= 0)
        order_key = (
            interactions[time_col].to_numpy()[keep]
            if time_col in interactions and interactions[time_col].notna().all()
            else np.arange(int(keep.sum()))
        )
        order = np.lexsort((order_key, u[keep]))
        users_sorted = u[keep][order]
        items_sorted = i[keep][order]
        bounds = np.searchsorted(users_sorted, np.arange(self.n_users + 1))
        return [items_sorted[bounds[r] : bounds[r + 1]] for r in range(self.n_users)]


def match_ids(ids: object, index: pd.Index) -> np.ndarray:
    """``ids`` in the type ``index`` holds, where they can be read that way.

    Requests carry ids as their callers typed them: a web client sends
    ``"42"`` for a data set of integer ids, a data set of string ids gets asked
    for ``7``. For an integer index, whole-number strings and floats become
    ints; for a string index, numbers become their text. Anything else (an id
    of a new user, ``"nobody-123"``) is returned unchanged and stays unknown.

    Returns:
        An object array, one entry per id, in order.
    """
    values = pd.Series(np.atleast_1d(np.asarray(ids, dtype=object)), dtype=object)
    if index.dtype.kind in "iu":
        numbers = pd.to_numeric(values, errors="coerce")
        whole = numbers.notna() & np.isfinite(numbers) & (numbers == numbers.round())
        out = values.where(~whole, numbers.where(whole, 0).astype(np.int64).astype(object))
    elif index.dtype.kind in "OSU" or pd.api.types.is_string_dtype(index.dtype):
        out = values.map(lambda v: v if isinstance(v, str) else str(v))
    else:
        out = values
    return out.to_numpy(dtype=object)


def long_frame(
    user_ids: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray | None,
    item_ids: pd.Index,
    *,
    served_by: object = None,
) -> pd.DataFrame:
    """The long table ``user_id, item_id, score, rank`` of a block of top-K lists.

    The one place index arrays become the table that models, metrics and the
    served model meet on.

    Args:
        user_ids: external id of each row of ``items`` (``len == items.shape[0]``).
        items: ``(n_users, k)`` column indices, best first; ``-1`` marks an
            empty slot, which is left out (a user may get fewer than ``k`` rows).
        scores: the matching scores, or ``None`` for a table without ``score``.
        item_ids: external id of each column.
        served_by: when given (one label, or one per user), a ``served_by``
            column saying who produced each list.

    Returns:
        One row per filled slot, users in the order given, ranks from 1.
    """
    items = np.asarray(items)
    if items.ndim == 1:
        items = items.reshape(len(user_ids), -1)
    n_users, k = items.shape
    filled = (items >= 0).ravel()
    frame = {
        USER_COL: np.repeat(np.asarray(user_ids), k)[filled],
        ITEM_COL: np.asarray(item_ids)[items.ravel()[filled]],
    }
    if scores is not None:
        frame[SCORE_COL] = np.asarray(scores, dtype=np.float64).reshape(n_users, k).ravel()[filled]
    frame[RANK_COL] = np.tile(np.arange(1, k + 1, dtype=np.int64), n_users)[filled]
    if served_by is not None:
        labels = np.broadcast_to(np.asarray(served_by, dtype=object), (n_users,))
        frame[SERVED_BY_COL] = np.repeat(labels, k)[filled]
    return pd.DataFrame(frame)
