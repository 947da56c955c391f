"""Cleaning steps: hand-made frames with known answers; nothing dropped uncounted."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest

from recsys.data.prepare import (
    clean_interactions,
    deduplicate,
    filter_min_counts,
    normalise_ratings,
    pseudonymise_users,
)


@pytest.fixture
def dupes() -> pd.DataFrame:
    # (1, 10) three times: ratings 1, 5, 3 at times 30, 10, 20 -> latest is rating 1.
    return pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1],
            "item_id": [10, 10, 10, 10],
            "rating": [1.0, 5.0, 4.0, 3.0],
            "timestamp": [30, 10, 5, 20],
        },
        index=[7, 8, 9, 6],
    )


def test_deduplicate_last_first_mean(dupes):
    before = dupes.copy()
    last, merged = deduplicate(dupes, "last")
    assert merged == 2 and last.index.tolist() == [7, 9]
    first, _ = deduplicate(dupes, "first")
    assert first.index.tolist() == [8, 9] and first["rating"].tolist() == [5.0, 4.0]
    mean, _ = deduplicate(dupes, "mean")
    assert mean["rating"].tolist() == [3.0, 4.0] and mean["timestamp"].tolist() == [30, 5]
    pd.testing.assert_frame_equal(dupes, before)


def test_deduplicate_without_time_uses_row_order(dupes):
    out, merged = deduplicate(dupes.drop(columns="timestamp"), "last")
    assert merged == 2 and out.index.tolist() == [9, 6]


def test_deduplicate_errors(dupes):
    with pytest.raises(
        ValueError, match="unknown dedupe policy 'max'; choose one of last, first, mean"
    ):
        deduplicate(dupes, "max")
    with pytest.raises(ValueError, match="dedupe policy 'mean' needs numeric ratings"):
        deduplicate(dupes.assign(rating=["a", "b", "c", "d"]), "mean")


def test_normalise_methods():
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 1], "rating": [1.0, 3.0, 5.0]})
    assert normalise_ratings(df, "minmax")["rating"].tolist() == [0.0, 0.5, 1.0]
    assert normalise_ratings(df, "user_mean")["rating"].tolist() == [-1.0, 1.0, 0.0]
    assert normalise_ratings(df, "binary", threshold=3)["rating"].tolist() == [0.0, 1.0, 1.0]
    assert normalise_ratings(df.assign(rating=2.0), "minmax")["rating"].tolist() == [1.0] * 3
    assert normalise_ratings(df)["rating"].tolist() == [1.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="unknown normalise method 'z'"):
        normalise_ratings(df, "z")


def test_pseudonymise_is_keyed_stable_and_short():
    df = pd.DataFrame({"user_id": [42, 7, 42], "item_id": [1, 2, 3]})
    out = pseudonymise_users(df, "pepper")
    expected = hmac.new(b"pepper", b"42", hashlib.sha256).hexdigest()[:16]
    assert out["user_id"].tolist() == [expected, out["user_id"][1], expected]
    assert len(out["user_id"][1]) == 16 and out["user_id"][1] != expected
    assert pseudonymise_users(df, "salt2")["user_id"][0] != expected
    assert df["user_id"].tolist() == [42, 7, 42]
    with pytest.raises(ValueError, match="needs a non-empty salt"):
        pseudonymise_users(df, "")


def test_filter_min_counts_repeats_until_stable():
    # item 3 has one row; dropping it leaves user 2 with one row, under min_user=2.
    df = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [1, 2, 1, 3, 1, 2]})
    out = filter_min_counts(df, min_user=2, min_item=2)
    assert out.index.tolist() == [0, 1, 4, 5]
    assert filter_min_counts(df).index.tolist() == list(range(6))


def test_clean_interactions_reports_every_dropped_row(dupes):
    df = pd.concat(
        [
            dupes,
            pd.DataFrame(
                {"user_id": [3], "item_id": [11], "rating": [2.0], "timestamp": [1]}, index=[0]
            ),
        ]
    )
    out, report = clean_interactions(df, min_item=2, normalise="binary", salt="s")
    assert report == {
        "rows_in": 5,
        "dedupe": "last",
        "duplicates_merged": 2,
        "rows_dropped_min_counts": 1,
        "users_dropped": 1,
        "items_dropped": 1,
        "normalise": "binary",
        "pseudonymised": True,
        "rows_out": 2,
    }
    assert out["rating"].tolist() == [0.0, 1.0] and out["user_id"].str.len().eq(16).all()
    assert report["rows_out"] == (
        report["rows_in"] - report["duplicates_merged"] - report["rows_dropped_min_counts"]
    )
    assert np.array_equal(df.index, [7, 8, 9, 6, 0])
