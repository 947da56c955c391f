"""The cold-start chain: segment, onboarding and global paths, the cold slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.errors import InputError
from recsys.evaluation.cold_users import cold_user_split, evaluate_cold_users
from recsys.serving.coldstart import ColdStartError, age_band, fit_cold_start

ITEMS = pd.DataFrame(
    {
        "item_id": [1, 2, 3, 4, 5],
        "title": ["Alpha", "Beta", "Gamma", "Delta", "Alpha Returns"],
        "genres": ["Action", "Drama", "Drama", "Comedy", "Action"],
    }
)
USERS = pd.DataFrame(
    {
        "user_id": [10, 11, 12, 13],
        "age": [20, 22, 60, 61],
        "gender": ["F", "F", "M", "M"],
        "occupation": ["student", "student", "retired", "retired"],
    }
)
# young women watch 2 and 3; older men watch 1 and 4; 1 is the most popular overall
TRAIN = pd.DataFrame(
    {
        "user_id": [10, 10, 11, 11, 12, 12, 13, 13, 13],
        "item_id": [2, 3, 2, 3, 1, 4, 1, 4, 3],
        "rating": [5.0] * 9,
        "timestamp": np.arange(9),
    }
)


def chain():
    return fit_cold_start(TRAIN, ITEMS, USERS, min_segment_users=2)


def test_age_bands():
    assert [age_band(a) for a in (5, 18, 24, 25, 60, 99)] == [
        "0-17",
        "18-24",
        "18-24",
        "25-34",
        "56-199",
        "56-199",
    ]


def test_unknown_user_without_anything_gets_global_popularity():
    recs = chain().recommend(2)
    assert recs["item_id"].tolist() == [3, 1]  # 3 and 1... counts: 3→3, 1→2, 2→2, 4→2
    assert (recs["served_by"] == "global").all()
    assert recs["rank"].tolist() == [1, 2]


def test_demographics_pick_the_segment():
    recs = chain().recommend(2, demographics={"age": 21, "gender": "F"})
    assert set(recs["item_id"]) == {2, 3}
    assert (recs["served_by"] == "segment:age_gender").all()


def test_known_user_id_uses_the_users_table_segment():
    recs = chain().recommend(2, user_id=12)
    assert set(recs["item_id"]) == {1, 4}
    assert recs["served_by"].iloc[0] == "segment:age_gender"


def test_small_segment_falls_back_to_occupation_then_global():
    small = fit_cold_start(TRAIN, ITEMS, USERS, min_segment_users=3)
    assert (
        small.recommend(1, demographics={"age": 21, "gender": "F", "occupation": "student"})[
            "served_by"
        ][0]
        == "global"
    )


def test_onboarding_liked_item_reaches_a_new_item_by_content():
    strong = fit_cold_start(TRAIN, ITEMS, USERS, min_segment_users=2, onboarding_weight=10)
    recs = strong.recommend(3, liked_items=[1])
    # 4 (cosine 1) and 3 (cosine 0.41) are co-watched with 1; 5 has no interaction
    # but shares "alpha" and Action with 1 (content vote 0.3); 2 is unrelated and
    # only has its popularity (2/3 of the top item's)
    assert recs["item_id"].tolist() == [4, 3, 5]
    assert recs["served_by"][0] == "onboarding"


def test_onboarding_genres_and_exclude():
    recs = chain().recommend(3, liked_genres=["Comedy"], exclude=[3])
    assert recs["item_id"].iloc[0] == 4
    assert 3 not in recs["item_id"].tolist()


def test_similar_items_for_an_item_nobody_saw():
    sims = chain().similar_items(5, k=1)
    assert sims["item_id"].tolist() == [1]
    with pytest.raises(ColdStartError, match=r"unknown item id\(s\) \[99\]"):
        chain().similar_items(99)


def test_bad_k_and_empty_train():
    with pytest.raises(InputError, match="k must be a positive integer, got 0"):
        chain().recommend(0)
    with pytest.raises(ColdStartError, match="train has no rows"):
        fit_cold_start(TRAIN.iloc[:0])


def test_cold_user_split_trims_a_copy():
    train = pd.DataFrame(
        {"user_id": [1] * 5 + [2] * 5, "item_id": list(range(10)), "timestamp": [5, 4, 3, 2, 1] * 2}
    )
    test = pd.DataFrame({"user_id": [1, 2], "item_id": [20, 21]})
    before = train.copy()
    cold_train, cold_test = cold_user_split(train, test, max_history=2, seed=0, share=0.5)
    pd.testing.assert_frame_equal(train, before)
    chosen = cold_test["user_id"].unique()
    assert chosen.size == 1
    kept = cold_train[cold_train.user_id == chosen[0]]
    assert sorted(kept["timestamp"]) == [1, 2]  # the earliest two
    other = 3 - chosen[0]
    assert len(cold_train[cold_train.user_id == other]) == 5


def test_cold_user_split_rejects_negative_history():
    with pytest.raises(ColdStartError, match="max_history must be >= 0, got -1"):
        cold_user_split(TRAIN, TRAIN, max_history=-1)


def test_evaluate_cold_users_reports_every_row():
    test = pd.DataFrame({"user_id": [10, 11, 12, 13], "item_id": [1, 1, 2, 2]})
    report = evaluate_cold_users(
        TRAIN, test, ITEMS, USERS, models=("popularity",), max_history=1, seed=0
    )
    assert set(report["results"]) == {
        "global_popularity",
        "chain",
        "chain_no_history",
        "popularity",
    }
    assert report["n_users"] == 1
    assert sum(report["served_by"].values()) == 1


def test_recommend_many_serves_each_request_row_by_its_own_path():
    requests = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", 12],
            "liked_items": [[4], "2|999", None, None, None],
            "liked_genres": [None, None, "Comedy", None, None],
            "age": [None, None, None, 21, None],
            "gender": [None, None, None, "F", None],
        }
    )
    out = chain().recommend_many(requests, 2)
    assert out["user_id"].tolist() == ["a", "a", "b", "b", "c", "c", "d", "d", 12, 12]
    assert out["rank"].tolist() == [1, 2] * 5
    paths = out.groupby("user_id", sort=False)["served_by"].first().tolist()
    assert paths == [
        "onboarding",
        "onboarding",
        "onboarding",
        "segment:age_gender",
        "segment:age_gender",
    ]
    lists = out.groupby("user_id", sort=False)["item_id"].apply(list).to_dict()
    assert lists["a"][0] == 1  # 4 is co-liked only with 1 (and 3, less so); 4 itself is out
    assert 2 not in lists["b"] and lists["b"][0] == 3  # '2' from the string; 999 ignored
    assert lists["c"][0] == 4  # the one Comedy
    assert set(lists["d"]) == {2, 3}
    assert set(lists[12]) == {1, 4}  # a fitted user's segment from the users table


def test_recommend_many_in_blocks_of_users_answers_as_in_one(monkeypatch):
    """Many cold users are scored a block at a time (a large data set's test users
    would not fit as one dense matrix); the lists are the same."""
    from recsys.serving import coldstart

    requests = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", 12, "e"],
            "liked_items": [[4], "2|999", None, None, None, [1]],
            "liked_genres": [None, None, "Comedy", None, None, "Comedy"],
            "age": [None, None, None, 21, None, 40],
            "gender": [None, None, None, "F", None, "M"],
        }
    )
    whole = chain().recommend_many(requests, 3)
    monkeypatch.setattr(coldstart, "SCORE_BLOCK_CELLS", 2 * chain().item_ids.size)
    blocked = chain().recommend_many(requests, 3)
    pd.testing.assert_frame_equal(blocked, whole)
    assert chain().recommend_many(requests.iloc[:0], 3).empty


def test_recommend_many_refuses_repeated_ids():
    with pytest.raises(
        ColdStartError, match="^requests repeat a user_id; pass each cold user once$"
    ):
        chain().recommend_many(pd.DataFrame({"user_id": [1, 1]}), 2)


def test_onboarding_scores_cast_only_the_similarity_rows_they_use_and_sum_the_same():
    """Regression: a float64 history times the float32 item similarities cast the whole
    matrix on every request (11 ms for one onboarding answer at 20,000 items)."""
    import scipy.sparse as sp

    from recsys.serving.coldstart import _product

    rng = np.random.default_rng(4)
    S = sp.random(500, 500, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    H = sp.random(7, 500, density=0.01, format="csr", dtype=np.float64, random_state=rng)
    H.data[:] = rng.choice([1.0, 2.5, 4.0], H.nnz)
    H[3] = 0  # a user who answered nothing
    H.eliminate_zeros()
    got = _product(H, S)
    assert got.dtype == np.float64 and got.shape == (7, 500)
    assert np.array_equal(got.toarray(), (H @ S).toarray())


def test_a_batch_of_mixed_segments_scores_each_user_as_alone():
    """Users of two segments, the global path and an onboarding answer in one call get
    the rows each would get on their own."""
    import scipy.sparse as sp

    fitted = chain()
    demos = [
        fitted.demographics(10),
        {},
        fitted.demographics(12),
        fitted.demographics(11),
        {"age": 21, "gender": "F"},
    ]
    history = sp.lil_matrix((len(demos), fitted.item_ids.size))
    history[4, 0] = 1.0
    history = history.tocsr()
    together, paths = fitted.score_users(history, demos)
    alone = [fitted.score_users(history[n], [d]) for n, d in enumerate(demos)]
    np.testing.assert_array_equal(together, np.vstack([scores for scores, _ in alone]))
    assert paths == [p for _, ps in alone for p in ps]
    assert paths[1] == "global" and paths[4] == "onboarding" and paths[0] != "global"


def test_the_co_liked_similarity_learns_from_a_hash_drawn_sample_past_its_pair_budget(
    monkeypatch,
):
    """Past ``similarity_pairs`` the co-liked similarity learns from the users whose
    id hashes below the cut (the same users at every fit and on every engine);
    popularity and segments still count every pair; RECSYS_COLD_START_PAIRS sets it."""
    import hashlib

    from recsys import config
    from recsys.ids import IdMap
    from recsys.serving.coldstart import similarity_sample, similarity_threshold

    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {"user_id": np.repeat(np.arange(400), 5), "item_id": rng.integers(0, 40, 2000)}
    ).drop_duplicates()
    whole = fit_cold_start(train)
    part = fit_cold_start(train, similarity_pairs=len(train) // 4)
    assert np.array_equal(part.global_pop, whole.global_pop)

    cut = similarity_threshold(len(train), len(train) // 4)
    drawn = [
        u for u in range(400) if int(hashlib.sha256(str(u).encode()).hexdigest()[:15], 16) < cut
    ]
    assert 60 < len(drawn) < 140  # about a quarter of the users
    assert similarity_sample(pd.Index(range(400)), len(train), len(train) // 4).sum() == len(drawn)
    expected = fit_cold_start(train[train["user_id"].isin(drawn)], id_map=IdMap.from_frame(train))
    assert (part.item_sim != whole.item_sim).nnz > 0
    assert (part.item_sim != expected.item_sim).nnz == 0
    assert similarity_threshold(len(train), len(train)) is None
    assert similarity_threshold(len(train), None) is None

    monkeypatch.delenv("RECSYS_COLD_START_PAIRS", raising=False)
    assert config.cold_start_pairs() == 5_000_000
    monkeypatch.setenv("RECSYS_COLD_START_PAIRS", "0")
    assert config.cold_start_pairs() is None
    monkeypatch.setenv("RECSYS_COLD_START_PAIRS", "half")
    with pytest.raises(InputError, match="RECSYS_COLD_START_PAIRS must be a whole number"):
        config.cold_start_pairs()
