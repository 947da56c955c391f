"""Beyond-accuracy metrics and slices against hand-computed truths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation.beyond import (
    BeyondInputError,
    beyond_accuracy,
    build_catalogue,
    evaluate_detailed,
    gini,
    slice_metrics,
    slice_summary,
    user_groups,
)

# Four items: a is seen by 3 users, b by 2, c by 1, d by nobody (only in the items table).
TRAIN = pd.DataFrame({"user_id": [1, 2, 3, 1, 2, 3], "item_id": ["a", "a", "a", "b", "b", "c"]})
ITEMS = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "genres": ["Action", "Action", "Drama", ""]})


@pytest.fixture
def catalogue():
    return build_catalogue(TRAIN, ITEMS, head_share=0.25)


def test_catalogue_counts_distinct_users_and_marks_the_head(catalogue):
    assert list(catalogue.items) == ["a", "b", "c", "d"]
    assert catalogue.popularity.tolist() == [3, 2, 1, 0]
    assert catalogue.head.tolist() == [True, False, False, False]
    assert catalogue.n_train_users == 3


def test_beyond_accuracy_by_hand(catalogue):
    rec = np.array([[0, 1], [2, -1]])  # user 1: a, b; user 2: c
    out = beyond_accuracy(rec, catalogue, k=2)
    assert out["catalogue_coverage"] == pytest.approx(3 / 4)
    assert out["user_coverage"] == 1.0
    assert out["avg_popularity"] == pytest.approx((3 + 2 + 1) / 3)
    info = -np.log2(np.array([4, 3, 2]) / 4)
    assert out["novelty"] == pytest.approx(info.mean())
    assert out["long_tail_share"] == pytest.approx(2 / 3)
    # a and b share their only genre: distance 0; user 2 has one item, left out.
    assert out["diversity"] == pytest.approx(0.0)
    assert out["gini"] == pytest.approx(gini(np.array([1, 1, 1, 0])))


def test_diversity_of_unlike_items_is_one(catalogue):
    assert beyond_accuracy(np.array([[0, 2, 3]]), catalogue, 3)["diversity"] == 1.0


def test_gini_limits():
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)
    assert np.isnan(gini(np.zeros(3)))


def test_beyond_accuracy_rejects_out_of_range_items(catalogue):
    with pytest.raises(BeyondInputError, match=r"catalogue indices in \[0, 4\)"):
        beyond_accuracy(np.array([[4]]), catalogue, 1)


def test_user_groups_bucket_activity_and_bands_ages():
    train = pd.DataFrame({"user_id": [1] * 2 + [2] * 8 + [3] * 20, "item_id": range(30)})
    users = pd.DataFrame({"user_id": [1, 2, 3], "gender": ["F", "M", None], "age": [17, 30, 60]})
    out = user_groups(np.array([1, 2, 3, 4]), train, users, cold_max=2, heavy_quantile=0.9)
    assert out["activity"].tolist() == ["cold", "light", "heavy", "cold"]
    assert out["gender"].tolist() == ["F", "M", "unknown", "unknown"]
    assert out["age_band"].tolist() == ["under18", "25-34", "56+", "unknown"]


def test_slices_and_the_fairness_gap():
    per_user = pd.DataFrame(
        {
            "ndcg@2": [1.0, 0.0, 0.5, 0.5],
            "activity": ["heavy", "light", "light", "heavy"],
            "gender": ["F", "F", "M", "M"],
            "ndcg@2[head]": [1.0, np.nan, 0.0, np.nan],
            "ndcg@2[tail]": [np.nan, 0.0, 0.5, 0.5],
        }
    )
    summary = slice_summary(per_user, "ndcg@2")
    figures = slice_metrics(summary, "ndcg@2")
    assert figures["slice.activity.heavy.ndcg@2"] == 0.75
    assert figures["slice.activity.light.ndcg@2"] == 0.25
    assert figures["gap.activity.ndcg@2"] == 0.5
    assert figures["gap.gender.ndcg@2"] == 0.0
    assert figures["slice.items.tail.ndcg@2"] == pytest.approx(1 / 3)
    assert figures["fairness_gap.ndcg@2"] == 0.5  # user-side groupings only
    assert summary.loc[summary["group"] == "head", "n_users"].item() == 2


def test_evaluate_detailed_scores_every_test_user():
    recs = pd.DataFrame({"user_id": [1, 1, 2], "item_id": ["c", "d", "d"], "rank": [1, 2, 1]})
    test = pd.DataFrame({"user_id": [1, 2, 9], "item_id": ["c", "a", "zz"]})
    result = evaluate_detailed(recs, test, TRAIN, k=2, items=ITEMS)
    assert list(result.per_user.index) == [1, 2, 9]
    assert result.per_user["ndcg@2"].tolist() == [1.0, 0.0, 0.0]  # 9 has no list
    assert result.per_user["ndcg@2[head]"].tolist()[1] == 0.0  # a is a head item
    assert np.isnan(result.per_user["ndcg@2[head]"].tolist()[0])
    assert result.metrics["ndcg@2"] == pytest.approx(1 / 3)
    assert result.metrics["user_coverage"] == pytest.approx(2 / 3)
    assert result.metrics["catalogue_coverage"] == pytest.approx(2 / 4)


def test_evaluate_detailed_names_a_foreign_item():
    recs = pd.DataFrame({"user_id": [1], "item_id": ["nope"], "rank": [1]})
    with pytest.raises(BeyondInputError, match="outside the catalogue"):
        evaluate_detailed(recs, pd.DataFrame({"user_id": [1], "item_id": ["a"]}), TRAIN)
