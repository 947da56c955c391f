"""Split interactions into train and test (and validation) parts.

Every splitter returns new frames (row subsets of the input, original index
kept), never mutates its input, and is deterministic given its seed. Every
input row lands in exactly one part, except where a documented ``min_rating``
filter removes whole groups first.

Protocols (see :func:`split_interactions`):

- ``msr``: Microsoft Recommenders' MovieLens benchmark split,
  ``stratified_split(ratio=0.75, by="item", seed=42)``.
- ``stratified``: :func:`stratified_split` with the caller's options.
- ``temporal``: :func:`temporal_split`, one global time cutoff.
- ``loo``: :func:`leave_last_out`, each user's last interactions held out.
- ``random``: :func:`random_split`, per-user random share.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from recsys.constants import ITEM_COL, TIME_COL, USER_COL
from recsys.errors import InputError

log = logging.getLogger(__name__)

TIME_PROTOCOLS = ("temporal", "loo")


# ------------------------------------------------------------------ stratified
def stratified_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    *,
    by: str = "user",
    seed: int = 42,
    min_rating: int = 1,
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user (or per-item) random split, identical to Microsoft Recommenders'.

    Reproduces ``python_stratified_split`` of ``recommenders.datasets.python_splitters``
    (release 1.2.1) row for row: groups with fewer than ``min_rating`` rows are
    removed first (keeping row order); one uniform draw per remaining row comes
    from a legacy Mersenne-Twister ``RandomState(seed)``, in row order; rows are
    ordered by (group id, draw); in a group of ``n`` rows the first
    ``round(ratio * n)`` (NumPy rounding, halves to even) go to train, the rest
    to test. Both parts come back in that order with the input's index.

    Args:
        df: interactions; only ``user_col``/``item_col`` are read.
        ratio: share of each group for train, strictly between 0 and 1.
        by: ``"user"`` or ``"item"``: the groups that are stratified.
        seed: seed of the legacy generator (no global state is touched).
        min_rating: groups with fewer rows are left out of both parts.

    Returns:
        ``(train, test)``.

    Raises:
        ValueError: bad ``ratio``, ``by``, ``min_rating`` or a missing column.
    """
    _check_ratio(ratio)
    group_col = _group_column(by, user_col, item_col)
    _require(df, [user_col, item_col], "stratified_split")
    if min_rating < 1:
        raise InputError(f"min_rating must be an integer >= 1, got {min_rating}")
    data = _min_count_filter(df, group_col, min_rating)
    draws = np.random.RandomState(seed).rand(len(data))
    codes = pd.factorize(data[group_col], sort=True)[0]
    order = np.lexsort((draws, codes))
    rank, count = _rank_in_groups(codes[order])
    in_train = rank <= np.round(ratio * count)
    ordered = data.iloc[order]
    return ordered[in_train], ordered[~in_train]


def _rank_in_groups(sorted_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based position of each row in its run of equal codes, and the run length."""
    n = len(sorted_codes)
    starts = (
        np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        if n
        else np.array([], dtype=int)
    )
    lengths = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, lengths) + 1
    return rank, np.repeat(lengths, lengths)


def _min_count_filter(df: pd.DataFrame, col: str, min_count: int) -> pd.DataFrame:
    if min_count <= 1:
        return df
    sizes = df.groupby(col, sort=False, dropna=False)[col].transform("size")
    return df[sizes.to_numpy() >= min_count]


# -------------------------------------------------------------------- temporal
def temporal_split(
    df: pd.DataFrame, ratio: float = 0.8, *, time_col: str = TIME_COL
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One global time cutoff: the earliest ``ratio`` share of events trains.

    The cutoff is the timestamp of the ``round(ratio * n)``-th earliest event;
    every event at or before it goes to train (so ties at the cutoff all go to
    train), every later one to test. Both parts keep the input's row order.

    Raises:
        ValueError: bad ratio, or missing/null timestamps.
    """
    _check_ratio(ratio)
    times = _times(df, time_col, "temporal")
    n_train = int(round(ratio * len(df)))
    if n_train == 0:
        return df.iloc[:0], df.iloc[:]
    cutoff = np.sort(times, kind="stable")[n_train - 1]
    in_train = times <= cutoff
    return df[in_train], df[~in_train]


def leave_last_out(
    df: pd.DataFrame,
    n: int = 1,
    *,
    user_col: str = USER_COL,
    time_col: str = TIME_COL,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's last ``n`` interactions by time.

    Ties in time are broken by row order (a later row counts as later). Users
    with ``n`` or fewer interactions stay whole in train, so every test user
    has training history. Both parts keep the input's row order.

    Raises:
        ValueError: ``n < 1``, a missing column, or missing/null timestamps.
    """
    if n < 1:
        raise InputError(f"leave_last_out needs n >= 1, got {n}")
    times = _times(df, time_col, "loo")
    _require(df, [user_col], "loo")
    codes = pd.factorize(df[user_col])[0]
    order = np.lexsort((np.arange(len(df)), times, codes))
    rank, count = _rank_in_groups(codes[order])
    held = np.zeros(len(df), dtype=bool)
    held[order] = (count - rank < n) & (count > n)
    return df[~held], df[held]


def random_split(
    df: pd.DataFrame,
    ratio: float = 0.8,
    seed: int = 42,
    *,
    user_col: str = USER_COL,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random split: ``round(ratio * n_u)`` of each user's rows train.

    Draws come from ``np.random.default_rng(seed)``, one per row in row order.
    Both parts keep the input's row order.
    """
    _check_ratio(ratio)
    _require(df, [user_col], "random")
    codes = pd.factorize(df[user_col])[0]
    draws = np.random.default_rng(seed).random(len(df))
    order = np.lexsort((draws, codes))
    rank, count = _rank_in_groups(codes[order])
    in_train = np.zeros(len(df), dtype=bool)
    in_train[order] = rank <= np.round(ratio * count)
    return df[in_train], df[~in_train]


# -------------------------------------------------------------------- protocols
def _msr(
    df: pd.DataFrame, *, user_col: str = USER_COL, item_col: str = ITEM_COL
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return stratified_split(df, 0.75, by="item", seed=42, user_col=user_col, item_col=item_col)


PROTOCOLS: dict[str, Callable[..., tuple[pd.DataFrame, pd.DataFrame]]] = {
    "msr": _msr,
    "stratified": stratified_split,
    "temporal": temporal_split,
    "loo": leave_last_out,
    "random": random_split,
}


def split_interactions(
    df: pd.DataFrame, protocol: str, **options: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into ``(train, test)`` with a named protocol.

    Args:
        df: interactions.
        protocol: one of ``msr``, ``stratified``, ``temporal``, ``loo``, ``random``.
        **options: keyword options of the protocol's function (``msr`` is fixed
            and takes only column names).

    Raises:
        ValueError: unknown protocol or option, or a time protocol on data
            without timestamps.
    """
    func = _protocol(protocol)
    _check_options(func, protocol, options)
    train, test = func(df, **options)
    log.info("split %s %s: %d train / %d test rows", protocol, options, len(train), len(test))
    return train, test


def protocol_for(
    df: pd.DataFrame, protocol: str, *, time_col: str = TIME_COL
) -> tuple[str, str | None]:
    """The protocol ``df`` can be split with, and why it differs from ``protocol``.

    A time protocol (``temporal``, ``loo``) on data without any timestamp
    becomes ``random`` (each user's rows split 80/20 at random), so data
    without time still trains with the defaults.

    Returns:
        ``(protocol to use, None)`` when ``protocol`` fits the data, else
        ``("random", a sentence saying what was used instead and why)``.
    """
    if protocol in TIME_PROTOCOLS and (time_col not in df or df[time_col].isna().all()):
        return "random", (
            f"the data has no timestamps, so the {protocol!r} split (by time) was replaced "
            "by 'random' (each user's interactions split 80/20 at random)"
        )
    return protocol, None


def validation_split(
    train: pd.DataFrame, protocol: str, **options: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation part out of the training data with the same protocol.

    Only ``train`` is read, so nothing of the test part can leak into model
    selection. Returns ``(fit, validation)``.
    """
    return split_interactions(train, protocol, **options)


def describe_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    protocol: str,
    options: dict[str, Any] | None = None,
    *,
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
) -> dict[str, Any]:
    """Facts about a split for logs and tracking (JSON-serialisable, flat).

    ``cold_users``/``cold_items`` count test users/items absent from train;
    ``cold_rows`` counts test rows that touch either.
    """
    cold_user = ~test[user_col].isin(train[user_col])
    cold_item = ~test[item_col].isin(train[item_col])
    total = len(train) + len(test)
    return {
        "protocol": protocol,
        "options": dict(options or {}),
        **_part_facts("train", train, user_col, item_col),
        **_part_facts("test", test, user_col, item_col),
        "cold_users": int(test.loc[cold_user, user_col].nunique()),
        "cold_items": int(test.loc[cold_item, item_col].nunique()),
        "cold_rows": int((cold_user | cold_item).sum()),
        "test_share": float(len(test) / total) if total else 0.0,
    }


# ------------------------------------------------------------------- helpers
def check_split_options(protocol: str, options: dict[str, Any]) -> None:
    """Raise the error :func:`split_interactions` raises for an unknown protocol or option
    (for another engine's splitter, :mod:`recsys.engines.spark`)."""
    _check_options(_protocol(protocol), protocol, options)


def check_ratio(ratio: float) -> None:
    """Raise unless ``ratio`` lies strictly between 0 and 1 (the splitters' own check)."""
    _check_ratio(ratio)


def group_column(by: str, user_col: str = USER_COL, item_col: str = ITEM_COL) -> str:
    """The column ``by`` (``"user"`` or ``"item"``) stratifies on, or a ValueError."""
    return _group_column(by, user_col, item_col)


def _part_facts(name: str, part: pd.DataFrame, user_col: str, item_col: str) -> dict[str, int]:
    return {
        f"{name}_rows": int(len(part)),
        f"{name}_users": int(part[user_col].nunique()),
        f"{name}_items": int(part[item_col].nunique()),
    }


def _protocol(protocol: str) -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    if protocol not in PROTOCOLS:
        raise InputError(
            f"unknown split protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}"
        )
    return PROTOCOLS[protocol]


def _check_options(func: Callable[..., Any], protocol: str, options: dict[str, Any]) -> None:
    accepted = list(inspect.signature(func).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"unknown option(s) {unknown} for split protocol '{protocol}'; it accepts {accepted}"
        )


def _check_ratio(ratio: float) -> None:
    if not isinstance(ratio, (float, int)) or not 0 < ratio < 1:
        raise InputError(f"split ratio must be a number strictly between 0 and 1, got {ratio!r}")


def _group_column(by: str, user_col: str, item_col: str) -> str:
    if by not in ("user", "item"):
        raise InputError(f"by must be 'user' or 'item', got {by!r}")
    return user_col if by == "user" else item_col


def _require(df: pd.DataFrame, cols: list[str], protocol: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            f"split protocol '{protocol}' needs column(s) {missing}; "
            f"the frame has {list(df.columns)}"
        )


def _times(df: pd.DataFrame, time_col: str, protocol: str) -> np.ndarray:
    """The time column as int64, or a ValueError naming the protocol."""
    if time_col not in df.columns:
        raise InputError(
            f"split protocol '{protocol}' needs timestamps, but column '{time_col}' is missing"
        )
    nulls = int(df[time_col].isna().sum())
    if nulls:
        raise InputError(
            f"split protocol '{protocol}' needs timestamps, but column "
            f"'{time_col}' has {nulls} missing value(s) of {len(df)}"
        )
    return df[time_col].to_numpy(dtype="int64")
