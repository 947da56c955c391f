"""The content-based recommender: alignment, new items, related items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.ids import IdMap
from recsys.models import make_model
from recsys.models.base import FitContext
from recsys.models.content import (
    ContentAlignmentError,
    ContentRecommender,
    align_items,
    write_related_items,
)

#: Items 10..15: two sci-fi, two romances, one western nobody has seen (15) and
#: one more sci-fi nobody has seen (14).
ITEMS = pd.DataFrame(
    {
        "item_id": [13, 10, 11, 12, 14, 15],
        "title": [
            "Love Story",
            "Space Wars",
            "Space Return",
            "Love Again",
            "Space Finale",
            "Dusty Trail",
        ],
        "genres": ["Romance", "Sci-Fi", "Sci-Fi", "Romance", "Sci-Fi", "Western"],
        "year": [1990, 1980, 1983, 1992, 1999, 1960],
    }
)


def _data():
    inter = pd.DataFrame(
        {"user_id": [1, 1, 2, 2], "item_id": [10, 11, 12, 13], "rating": [5.0, 4.0, 5.0, 3.0]}
    )
    id_map = IdMap.from_frame(inter, extra_items=ITEMS["item_id"])
    return inter, id_map, id_map.to_matrix(inter)


def test_align_items_orders_rows_by_id_map_columns():
    aligned = align_items(ITEMS, 6, pd.Index([10, 11, 12, 13, 14, 15]))
    assert aligned["item_id"].tolist() == [10, 11, 12, 13, 14, 15]
    assert aligned["title"].tolist()[3] == "Love Story"


def test_align_items_without_ids_sorts_and_requires_same_length():
    assert align_items(ITEMS, 6)["item_id"].tolist() == [10, 11, 12, 13, 14, 15]
    with pytest.raises(ContentAlignmentError, match="items table has 6 items but X has 7"):
        align_items(ITEMS, 7)


def test_align_items_missing_id_gets_empty_row():
    aligned = align_items(ITEMS, 2, [10, 99])
    assert aligned["item_id"].tolist() == [10, 99]
    assert pd.isna(aligned.loc[1, "title"])


def test_align_items_rejects_duplicates():
    dup = pd.concat([ITEMS, ITEMS.head(1)])
    with pytest.raises(ContentAlignmentError, match="duplicate item_id"):
        align_items(dup, 7)


def test_new_sci_fi_item_is_recommended_to_the_sci_fi_fan():
    _, id_map, X = _data()
    model = make_model("content").fit(X, FitContext(items=ITEMS))
    items, _ = model.recommend(id_map.user_index([1]), X, k=1)
    assert id_map.items[items[0, 0]] == 14  # never interacted with, found by content
    items, scores = model.recommend(id_map.user_index([1]), X, k=4)
    assert id_map.items[items[0, -1]] == 15 and scores[0, -1] == 0  # nothing in common


def test_explicit_item_ids_follow_the_id_map():
    _, id_map, X = _data()
    ctx = FitContext(items=ITEMS.iloc[::-1], item_ids=id_map.items)
    model = ContentRecommender().fit(X, ctx)
    assert model.item_ids_.tolist() == id_map.items.tolist()
    assert model.content_source_ == "items"


def test_related_items_hand_checked():
    _, _, X = _data()
    model = ContentRecommender().fit(X, FitContext(items=ITEMS))
    related = model.related_items(k=2)
    assert list(related.columns) == ["item_id", "related_item_id", "score", "rank"]
    top = related[related["rank"] == 1].set_index("item_id")["related_item_id"]
    assert top[10] in (11, 14) and top[12] == 13 and top[13] == 12
    assert (related["item_id"] != related["related_item_id"]).all()
    # the western shares no token with anything but its decade-less words: no pair
    assert 15 not in set(related["item_id"]) or related[related.item_id == 15]["score"].gt(0).all()
    assert related.groupby("item_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()


def test_write_related_items_round_trip(tmp_path):
    _, _, X = _data()
    model = ContentRecommender().fit(X, FitContext(items=ITEMS))
    path = write_related_items(model, tmp_path / "out" / "related.parquet", k=3)
    pd.testing.assert_frame_equal(pd.read_parquet(path), model.related_items(3))


def test_without_items_table_falls_back_to_interactions(caplog):
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32))
    model = ContentRecommender().fit(X)
    assert model.content_source_ == "interactions"
    items, _ = model.recommend([1], X, k=1)
    assert items[0, 0] == 1  # co-occurs with item 0
    assert "no items table" in caplog.text


def test_related_items_rejects_bad_k():
    _, _, X = _data()
    model = ContentRecommender().fit(X, FitContext(items=ITEMS))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        model.related_items(0)
