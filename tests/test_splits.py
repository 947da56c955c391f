"""Splitters: hand-made frames with known answers, and the MSR split on ML-100K."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from recsys.data.loaders import load_dataset
from recsys.data.splits import (
    describe_split,
    leave_last_out,
    random_split,
    split_interactions,
    stratified_split,
    temporal_split,
    validation_split,
)


def _frame(users, items, times=None) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": np.ones(n),
            "timestamp": times if times is not None else np.arange(n),
        }
    )


# ----------------------------------------------------------------- stratified
def test_stratified_matches_recommenders_draw_order_by_hand():
    df = _frame([1, 1, 1, 1, 2, 2], [10, 11, 12, 13, 10, 11])
    draws = np.random.RandomState(42).rand(6)  # the reference's one draw per row
    train, test = stratified_split(df, 0.75, by="user", seed=42)
    # user 1: 4 rows -> round(3.0) = 3 train; user 2: 2 rows -> round(1.5) = 2 train.
    expected_test = [int(np.argmax(draws[:4]))]
    assert test.index.tolist() == expected_test
    assert train.index.tolist() == [i for i in np.argsort(draws[:4]) if i != expected_test[0]] + [
        4 + i for i in np.argsort(draws[4:])
    ]


def test_stratified_rounds_half_to_even_per_group():
    sizes = {1: 1, 2: 2, 3: 6, 4: 10}  # 0.75*n = 0.75, 1.5, 4.5, 7.5 -> 1, 2, 4, 8
    users = np.repeat(list(sizes), list(sizes.values()))
    train, test = stratified_split(_frame(users, np.arange(len(users))), 0.75, seed=0)
    assert train.groupby("user_id").size().to_dict() == {1: 1, 2: 2, 3: 4, 4: 8}
    assert test.groupby("user_id").size().to_dict() == {3: 2, 4: 2}


def test_stratified_min_rating_drops_small_groups_and_does_not_mutate():
    df = _frame([1, 1, 1, 2], [1, 2, 3, 1])
    before = df.copy()
    train, test = stratified_split(df, 0.5, by="user", min_rating=2)
    assert set(train["user_id"]) | set(test["user_id"]) == {1}
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 1.0}, "strictly between 0 and 1, got 1.0"),
        ({"by": "time"}, "by must be 'user' or 'item', got 'time'"),
        ({"min_rating": 0}, "min_rating must be an integer >= 1, got 0"),
    ],
)
def test_stratified_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stratified_split(_frame([1], [1]), **kwargs)


def test_msr_split_on_ml100k(ml100k_dir):
    df = load_dataset(ml100k_dir).interactions
    train, test = split_interactions(df, "msr")
    assert (len(train), len(test)) == (75_066, 24_934)
    # Regression truth: the sorted test index that recommenders 1.2.1's
    # python_stratified_split(ratio=0.75, filter_by="item", seed=42) returns.
    digest = hashlib.sha256(np.sort(test.index.to_numpy()).astype(np.int64).tobytes())
    assert digest.hexdigest()[:16] == "d78b60bb4742536a"
    assert test.index[:3].tolist() == [88028, 17299, 44422]
    n = df.groupby("item_id").size()
    n_train = train.groupby("item_id").size().reindex(n.index, fill_value=0)
    assert (n_train == np.round(0.75 * n)).all()
    both = set(train["item_id"]) & set(test["item_id"])
    assert both == set(n.index[n >= 3])  # round(0.75 * 2) = 2: pairs stay whole in train
    assert set(test["item_id"]) == both
    assert train.index.intersection(test.index).empty and len(train) + len(test) == len(df)


# ------------------------------------------------------------------- temporal
def test_temporal_cutoff_and_ties_go_to_train():
    df = _frame([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], times=[50, 10, 30, 30, 90])
    train, test = temporal_split(df, 0.4)  # 2 earliest: 10, 30 -> cutoff 30, tie kept
    assert train.index.tolist() == [1, 2, 3] and test.index.tolist() == [0, 4]


def test_temporal_needs_timestamps():
    df = _frame([1, 2], [1, 2]).assign(timestamp=pd.array([1, None], dtype="Int64"))
    with pytest.raises(
        ValueError,
        match=r"protocol 'temporal' needs timestamps, but column "
        r"'timestamp' has 1 missing value\(s\) of 2",
    ):
        split_interactions(df, "temporal")
    with pytest.raises(
        ValueError, match="protocol 'loo' needs timestamps, but column 'timestamp' is missing"
    ):
        split_interactions(df.drop(columns="timestamp"), "loo")


# ------------------------------------------------------------ leave last out
def test_leave_last_out_by_time_with_row_order_ties():
    df = _frame([1, 1, 1, 2, 3, 3], [1, 2, 3, 1, 1, 2], times=[5, 9, 9, 1, 7, 3])
    train, test = leave_last_out(df)
    # user 1: rows 1 and 2 tie at 9, the later row (2) is last; user 2 has 1 row.
    assert test.index.tolist() == [2, 4]
    assert train.index.tolist() == [0, 1, 3, 5]
    _, test2 = leave_last_out(df, n=2)
    assert test2.index.tolist() == [1, 2]
    with pytest.raises(ValueError, match="needs n >= 1, got 0"):
        leave_last_out(df, n=0)


# ---------------------------------------------------------------- random
def test_random_split_is_per_user_and_seeded():
    users = np.repeat([1, 2], [10, 5])
    df = _frame(users, np.arange(15))
    train, test = random_split(df, 0.8, seed=3)
    assert train.groupby("user_id").size().to_dict() == {1: 8, 2: 4}
    again, _ = random_split(df, 0.8, seed=3)
    other, _ = random_split(df, 0.8, seed=4)
    assert train.index.equals(again.index) and not train.index.equals(other.index)


# ---------------------------------------------------- protocols and description
def test_unknown_protocol_and_option():
    df = _frame([1], [1])
    with pytest.raises(
        ValueError,
        match="unknown split protocol 'kfold'; choose one of msr, "
        "stratified, temporal, loo, random",
    ):
        split_interactions(df, "kfold")
    with pytest.raises(
        ValueError,
        match=r"unknown option\(s\) \['seed'\] for split protocol "
        r"'temporal'",
    ):
        split_interactions(df, "temporal", seed=1)


def test_validation_split_reads_train_only():
    df = _frame(np.repeat([1, 2], 4), np.arange(8), times=np.arange(8))
    train, test = split_interactions(df, "loo")
    fit, valid = validation_split(train, "loo")
    assert valid.index.tolist() == [2, 6]
    assert fit.index.union(valid.index).equals(train.index)


def test_describe_split_counts_cold_users_and_items():
    train = _frame([1, 1, 2], [10, 11, 10])
    test = _frame([1, 3, 3], [12, 10, 13])
    info = describe_split(train, test, "random", {"ratio": 0.5})
    assert info == {
        "protocol": "random",
        "options": {"ratio": 0.5},
        "train_rows": 3,
        "train_users": 2,
        "train_items": 2,
        "test_rows": 3,
        "test_users": 2,
        "test_items": 3,
        "cold_users": 1,
        "cold_items": 2,
        "cold_rows": 3,
        "test_share": 0.5,
    }
