"""Clean validated interactions: de-duplicate, filter sparse ids, normalise, pseudonymise.

Every function returns a new frame and never mutates its input. Nothing is
dropped without being counted: :func:`clean_interactions` reports what each
step changed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.errors import InputError

log = logging.getLogger(__name__)

DEDUPE_POLICIES = ("last", "first", "mean")
NORMALISE_METHODS = ("none", "minmax", "user_mean", "binary")
PSEUDONYM_LENGTH = 16


def deduplicate(
    df: pd.DataFrame,
    policy: str = "last",
    *,
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
    rating_col: str = RATING_COL,
    time_col: str = TIME_COL,
) -> tuple[pd.DataFrame, int]:
    """Keep one row per (user, item) pair.

    ``last``/``first`` keep the latest/earliest event by time (row order breaks
    ties, and decides alone when timestamps are absent or incomplete). ``mean``
    keeps the latest event with its rating replaced by the pair's mean rating.
    Survivors keep their original index and row order.

    Returns:
        ``(frame, n_merged)``: the de-duplicated frame and how many rows were
        merged away (``len(df) - len(frame)``).

    Raises:
        ValueError: an unknown policy, or ``mean`` over non-numeric ratings.
    """
    if policy not in DEDUPE_POLICIES:
        raise InputError(
            f"unknown dedupe policy '{policy}'; choose one of {', '.join(DEDUPE_POLICIES)}"
        )
    order = _time_order(df, time_col)
    keep = "first" if policy == "first" else "last"
    dropped = df.iloc[order].duplicated([user_col, item_col], keep=keep).to_numpy()
    out = df.iloc[np.sort(order[~dropped])]
    if policy == "mean":
        out = _with_mean_rating(df, out, user_col, item_col, rating_col)
    return out, len(df) - len(out)


def _time_order(df: pd.DataFrame, time_col: str) -> np.ndarray:
    """Positions sorted by time (stable), or row order when time is unusable."""
    if (
        time_col not in df
        or df[time_col].isna().any()
        or not pd.api.types.is_numeric_dtype(df[time_col])
    ):
        return np.arange(len(df))
    return np.argsort(df[time_col].to_numpy(), kind="stable")


def _with_mean_rating(
    df: pd.DataFrame, out: pd.DataFrame, user_col: str, item_col: str, rating_col: str
) -> pd.DataFrame:
    if not pd.api.types.is_numeric_dtype(df[rating_col]):
        raise InputError(
            f"dedupe policy 'mean' needs numeric ratings; column "
            f"'{rating_col}' has dtype {df[rating_col].dtype}"
        )
    means = df.groupby([user_col, item_col], sort=False)[rating_col].mean()
    keys = pd.MultiIndex.from_frame(out[[user_col, item_col]])
    return out.assign(**{rating_col: means.reindex(keys).to_numpy()})


def normalise_ratings(
    df: pd.DataFrame,
    method: str = "none",
    *,
    threshold: float = 4.0,
    user_col: str = USER_COL,
    rating_col: str = RATING_COL,
) -> pd.DataFrame:
    """Rescale ratings; rows are never removed.

    Methods:
        ``none``: unchanged (a copy).
        ``minmax``: ``(r - min) / (max - min)`` over the whole frame, in [0, 1];
            all-equal ratings become 1.0.
        ``user_mean``: ``r`` minus the user's mean rating (centred per user).
        ``binary``: 1.0 where ``r >= threshold``, else 0.0.

    Raises:
        ValueError: unknown method or non-numeric ratings.
    """
    if method not in NORMALISE_METHODS:
        raise InputError(
            f"unknown normalise method '{method}'; choose one of {', '.join(NORMALISE_METHODS)}"
        )
    if method == "none":
        return df.copy()
    if not pd.api.types.is_numeric_dtype(df[rating_col]):
        raise InputError(
            f"normalise '{method}' needs numeric ratings; column "
            f"'{rating_col}' has dtype {df[rating_col].dtype}"
        )
    r = df[rating_col].astype("float64")
    if method == "minmax":
        span = r.max() - r.min()
        scaled = (r - r.min()) / span if span > 0 else pd.Series(1.0, index=r.index)
    elif method == "user_mean":
        scaled = r - r.groupby(df[user_col], sort=False).transform("mean")
    else:
        scaled = (r >= threshold).astype("float64")
    return df.assign(**{rating_col: scaled})


def pseudonymise_users(df: pd.DataFrame, salt: str | bytes, col: str = USER_COL) -> pd.DataFrame:
    """Replace user ids by keyed HMAC-SHA256 pseudonyms (16 hex characters).

    The same id and salt always give the same pseudonym; without the salt the
    mapping cannot be recomputed. Ids are hashed through ``str(id)``, so ``7`` and
    ``"7"`` share a pseudonym. HMAC has no vectorised form: it runs once per
    distinct user, not per row.

    Raises:
        ValueError: an empty salt, or a missing column.
    """
    if not salt:
        raise InputError("pseudonymise_users needs a non-empty salt (the HMAC key)")
    if col not in df:
        raise InputError(
            f"cannot pseudonymise: column '{col}' is missing; the frame has {list(df.columns)}"
        )
    key = salt.encode() if isinstance(salt, str) else salt
    codes, uniques = pd.factorize(df[col], use_na_sentinel=False)
    names = np.array([_pseudonym(key, value) for value in uniques], dtype=object)
    return df.assign(**{col: names[codes]})


def pseudonymise_ids(ids: Iterable[object], salt: str | bytes) -> list[str]:
    """The pseudonyms :func:`pseudonymise_users` gives ``ids``, in order.

    Raises:
        ValueError: an empty salt.
    """
    if not salt:
        raise InputError("pseudonymise_ids needs a non-empty salt (the HMAC key)")
    key = salt.encode() if isinstance(salt, str) else salt
    return [_pseudonym(key, value) for value in ids]


#: :func:`key_fingerprint` of a deployment without a pseudonym key.
NO_KEY = "none"


def key_fingerprint(salt: str | bytes | None) -> str:
    """A short, one-way name of a pseudonym key, to tell whether two runs used the same one.

    ``"none"`` without a key; else ``"hmac:"`` and 12 hex characters of an HMAC
    of a fixed text under the key, which reveals nothing that would let anyone
    recompute a pseudonym. Runs record it, so a run can tell that the key
    changed since its champion was trained.
    """
    if not salt:
        return NO_KEY
    key = salt.encode() if isinstance(salt, str) else salt
    return "hmac:" + hmac.new(key, b"recsys pseudonym key", hashlib.sha256).hexdigest()[:12]


def _pseudonym(key: bytes, value: object) -> str:
    digest = hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_LENGTH]


def filter_min_counts(
    df: pd.DataFrame,
    min_user: int = 1,
    min_item: int = 1,
    *,
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
) -> pd.DataFrame:
    """Keep rows whose user has >= ``min_user`` rows and item >= ``min_item`` rows.

    Filtering repeats until both hold at once (a k-core), since dropping an item
    can push a user under the limit. Row order and index are kept.
    """
    if min_user < 1 or min_item < 1:
        raise InputError(f"min_user and min_item must be >= 1, got {min_user}, {min_item}")
    out = df
    while True:
        users = out.groupby(user_col, sort=False)[user_col].transform("size")
        items = out.groupby(item_col, sort=False)[item_col].transform("size")
        keep = (users >= min_user) & (items >= min_item)
        if keep.all():
            return out.copy() if out is df else out
        out = out[keep]


def clean_interactions(
    df: pd.DataFrame,
    *,
    dedupe: str | None = "last",
    normalise: str = "none",
    min_user: int = 1,
    min_item: int = 1,
    salt: str | bytes | None = None,
    threshold: float = 4.0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """De-duplicate, filter sparse users/items, normalise, then pseudonymise.

    Args:
        df: validated interactions.
        dedupe: a :func:`deduplicate` policy, or ``None`` to keep duplicates.
        normalise: a :func:`normalise_ratings` method (applied after filtering, so
            user means come from the rows that stay).
        min_user, min_item: :func:`filter_min_counts` limits.
        salt: when given, user ids are replaced by :func:`pseudonymise_users`.
        threshold: the ``binary`` normalisation threshold.

    Returns:
        ``(clean, report)``; the report holds ``rows_in``, ``duplicates_merged``,
        ``rows_dropped_min_counts``, ``users_dropped``, ``items_dropped``,
        ``normalise``, ``pseudonymised`` and ``rows_out``, with
        ``rows_out == rows_in - duplicates_merged - rows_dropped_min_counts``.
    """
    out, merged = deduplicate(df, dedupe) if dedupe is not None else (df.copy(), 0)
    filtered = filter_min_counts(out, min_user, min_item)
    report: dict[str, Any] = {
        "rows_in": int(len(df)),
        "dedupe": dedupe,
        "duplicates_merged": int(merged),
        "rows_dropped_min_counts": int(len(out) - len(filtered)),
        "users_dropped": int(out[USER_COL].nunique() - filtered[USER_COL].nunique()),
        "items_dropped": int(out[ITEM_COL].nunique() - filtered[ITEM_COL].nunique()),
        "normalise": normalise,
        "pseudonymised": salt is not None,
    }
    out = normalise_ratings(filtered, normalise, threshold=threshold)
    if salt is not None:
        out = pseudonymise_users(out, salt)
    report["rows_out"] = int(len(out))
    log.info("cleaned interactions: %s", report)
    return out, report
