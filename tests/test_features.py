"""Feature builders: hand-computed values on tiny frames, one real ML-100K check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.data import features as F
from recsys.data.features import (
    FeatureError,
    build_content_vectors,
    build_item_features,
    build_sequences,
    build_user_profiles,
    content_table,
    feature_hash,
    write_features,
)

DAY = 86_400


@pytest.fixture
def train() -> pd.DataFrame:
    # Reference time is day 19 (latest event). With half_life_days=9:
    # user 1: item 10 (r4, age 18 d → ×0.25 = 1), item 20 (r2, age 9 → 1), item 30 (r3, no genre)
    # user 2: item 10 (r5, age 0 → 5); user 3: item 30 only (no genre).
    return pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3],
            "item_id": [10, 20, 30, 10, 30],
            "rating": [4.0, 2.0, 3.0, 5.0, 1.0],
            "timestamp": [1 * DAY, 10 * DAY, 10 * DAY, 19 * DAY, 19 * DAY],
        }
    )


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [10, 20, 30, 40],
            "title": ["Toy Story (1995)", "Story of Us", "Heat", "Alien"],
            "genres": ["A|B", "B", None, "C"],
            "year": [1995, 1999, 1995, 2001],
        }
    )


@pytest.fixture
def users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 2],
            "age": [30, 40],
            "gender": ["F", "M"],
            "occupation": ["writer", "other"],
            "zip": ["1", "2"],
        }
    )


# ------------------------------------------------------------ FEATURES block
def test_feature_name_lists_are_consistent():
    named = F.USER_FEATURES + F.USER_DEMOGRAPHICS + F.ITEM_FEATURES + F.ITEM_EXTRAS
    assert len(named) == len(set(named)), "a feature name appears in two lists"
    assert set(F.FEATURE_DESCRIPTIONS) == set(named)
    assert not any(n.startswith(F.GENRE_PREFIX) for n in named)


def test_builders_emit_the_declared_columns_in_order(train, items, users):
    prof = build_user_profiles(train, users, items)
    genre_cols = ["genre_a", "genre_b", "genre_c"]
    assert list(prof.columns) == ["user_id", *F.USER_FEATURES, *genre_cols, *F.USER_DEMOGRAPHICS]
    feats = build_item_features(train, items)
    assert list(feats.columns) == ["item_id", *F.ITEM_FEATURES, *genre_cols, *F.ITEM_EXTRAS]
    assert list(build_sequences(train).columns) == ["user_id", F.SEQUENCE_COL, F.SEQUENCE_LENGTH]


# ------------------------------------------------------------- user profiles
def test_user_activity_and_ratings(train):
    prof = build_user_profiles(train).set_index("user_id")
    assert prof["n_interactions"].tolist() == [3, 1, 1]
    assert prof["active_days"].tolist() == [2, 1, 1]
    assert prof["recency_days"].tolist() == pytest.approx([9.0, 0.0, 0.0])
    assert prof["rating_mean"].tolist() == pytest.approx([3.0, 5.0, 1.0])
    assert prof["rating_std"].tolist() == pytest.approx([math.sqrt(2 / 3), 0.0, 0.0])


def test_recency_uses_given_reference_not_wall_clock(train):
    prof = build_user_profiles(train, now_ts=21 * DAY).set_index("user_id")
    assert prof["recency_days"].tolist() == pytest.approx([11.0, 2.0, 2.0])


def test_taste_vector_weights_rating_and_recency(train, items):
    prof = build_user_profiles(train, items=items, half_life_days=9).set_index("user_id")
    taste = prof[["genre_a", "genre_b", "genre_c"]]
    assert taste.loc[1].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert taste.loc[2].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert taste.loc[3].tolist() == [0.0, 0.0, 0.0]  # only a genre-less item


def test_taste_without_recency_decay_is_rating_weighted(train, items):
    prof = build_user_profiles(train, items=items, half_life_days=1e12).set_index("user_id")
    # user 1: A = 4, B = 4 + 2 → 4/10, 6/10
    assert prof.loc[1, ["genre_a", "genre_b"]].tolist() == pytest.approx([0.4, 0.6])


def test_demographics_copied_and_missing_users_null(train, users):
    prof = build_user_profiles(train, users).set_index("user_id")
    assert prof.loc[1, "occupation"] == "writer"
    assert prof.loc[2, "age"] == 40
    assert pd.isna(prof.loc[3, "age"])
    assert "zip" not in prof.columns


def test_profiles_without_timestamps(train):
    prof = build_user_profiles(train.assign(timestamp=np.nan))
    assert prof["active_days"].isna().all() and prof["recency_days"].isna().all()
    assert prof["n_interactions"].tolist() == [3, 1, 1]


def test_builders_do_not_mutate_inputs(train, items, users):
    before = (train.copy(), items.copy(), users.copy())
    build_user_profiles(train, users, items)
    build_item_features(train, items)
    build_sequences(train)
    build_content_vectors(items)
    for df, copy in zip((train, items, users), before, strict=True):
        pd.testing.assert_frame_equal(df, copy)


# ------------------------------------------------------------- item features
def test_item_features_hand_computed(train, items):
    feats = build_item_features(train, items).set_index("item_id")
    assert feats["popularity"].tolist() == [2, 1, 2, 0]
    assert feats["n_users"].tolist() == [2, 1, 2, 0]
    assert feats["rating_avg"].iloc[:3].tolist() == pytest.approx([4.5, 2.0, 2.0])
    # recent window: t >= 19 - 0.1 * 18 days → 2 of 5 events (share 0.4);
    # item 10: 1 of 2 recent → 0.5 / 0.4; item 20: none recent.
    assert feats["popularity_trend"].iloc[:3].tolist() == pytest.approx([1.25, 0.0, 1.25])
    assert pd.isna(feats.loc[40, "popularity_trend"]) and pd.isna(feats.loc[40, "rating_avg"])
    assert feats[["genre_a", "genre_b", "genre_c"]].to_numpy().tolist() == [
        [1, 1, 0],
        [0, 1, 0],
        [0, 0, 0],
        [0, 0, 1],
    ]
    assert feats["year"].tolist() == [1995, 1999, 1995, 2001]


def test_item_features_without_items_table(train):
    feats = build_item_features(train)
    assert list(feats.columns) == ["item_id", *F.ITEM_FEATURES]
    assert feats["item_id"].tolist() == [10, 20, 30]


# ----------------------------------------------------------- content vectors
def test_content_vectors_tfidf_values():
    items = pd.DataFrame(
        {"item_id": [7, 3], "title": ["Toy Story", "Story"], "genres": ["Sci-Fi", "Drama"]}
    )
    matrix, vocab = build_content_vectors(items)
    assert set(vocab) == {"toy", "story", "genre_sci_fi", "genre_drama"}
    assert matrix.shape == (2, 4)
    # smooth idf over 2 documents: rare term ln(3/2) + 1, shared term 1; row L2 norm 1
    rare = math.log(1.5) + 1
    norm = math.sqrt(2 * rare**2 + 1)
    row0 = matrix[0].toarray().ravel()
    assert row0[vocab["story"]] == pytest.approx(1 / norm)
    assert row0[vocab["toy"]] == pytest.approx(rare / norm)
    assert matrix[1, vocab["toy"]] == 0
    assert np.linalg.norm(matrix.toarray(), axis=1) == pytest.approx([1.0, 1.0])


def test_content_vectors_max_features(items):
    matrix, vocab = build_content_vectors(items, max_features=2)
    assert matrix.shape == (4, 2) and len(vocab) == 2


def test_content_vectors_need_text():
    with pytest.raises(FeatureError, match="needs a 'title' or 'genres' column"):
        build_content_vectors(pd.DataFrame({"item_id": [1]}))


# ----------------------------------------------------------------- sequences
def test_sequences_time_ordered_ties_keep_row_order_and_truncate(train):
    shuffled = train.iloc[[4, 2, 3, 1, 0]]  # item 30 now before item 20 at the tie
    seqs = build_sequences(shuffled).set_index("user_id")["sequence"]
    assert seqs.loc[1] == [10, 30, 20]
    short = build_sequences(train, max_len=2).set_index("user_id")
    assert short["sequence"].loc[1] == [20, 30]
    assert short["sequence_length"].tolist() == [2, 1, 1]


def test_sequences_reject_bad_max_len(train):
    with pytest.raises(FeatureError, match="max_len must be at least 1, got 0"):
        build_sequences(train, max_len=0)


# ------------------------------------------------------ content stored long
def test_content_table_is_the_tfidf_matrix_in_long_form(items):
    matrix, vocabulary = build_content_vectors(items)
    long = content_table(items)
    assert list(long.columns) == ["item_id", "term", "weight"]
    assert len(long) == matrix.nnz
    assert long.equals(long.sort_values(["item_id", "term"], ignore_index=True))
    rows = items["item_id"].tolist()
    for item_id, term, weight in long.itertuples(index=False):
        assert matrix[rows.index(item_id), vocabulary[term]] == pytest.approx(weight)
    # rows are L2-normalised: squared weights of an item sum to 1
    assert long.groupby("item_id")["weight"].apply(lambda w: (w**2).sum()).tolist() == (
        pytest.approx([1.0] * 4)
    )


# ------------------------------------------------------------ model frames
def test_indexed_features_follow_the_id_order_and_fill_every_null(train, items, users):
    prof = build_user_profiles(train.assign(timestamp=np.nan), users, items)
    ids = pd.Index([3, 1, 2, 99], name="user_id")  # 99: no profile at all
    frame = F.indexed_features(prof, "user_id", ids)
    assert list(frame.index) == [0, 1, 2, 3]
    assert frame["n_interactions"].tolist() == [1, 3, 1, pytest.approx(5 / 3)]
    assert not frame.isna().any().any()
    assert frame["active_days"].tolist() == [0.0] * 4  # never known: 0
    assert frame["age"].tolist() == [35.0, 30.0, 40.0, 35.0]  # user 3 and 99: the mean
    assert frame["gender"].tolist() == ["unknown", "F", "M", "unknown"]
    assert prof["age"].isna().sum() == 1  # the input is left alone


def test_indexed_features_fill_a_nullable_integer_column_with_its_mean():
    # Regression: MovieLens years load as Int64; their mean is not an integer.
    table = pd.DataFrame(
        {"item_id": [1, 2, 3], "year": pd.array([1990, None, 1995], dtype="Int64")}
    )
    frame = F.indexed_features(table, "item_id", pd.Index([1, 2, 3]))
    assert frame["year"].tolist() == [1990.0, 1992.5, 1995.0]


def test_indexed_features_reject_duplicate_ids(train):
    prof = build_user_profiles(train)
    with pytest.raises(FeatureError, match="feature table.user_id has duplicate ids, e.g. 1"):
        F.indexed_features(pd.concat([prof, prof.iloc[:1]]), "user_id", pd.Index([1, 2]))


# ------------------------------------------------------- tables and suites
def test_feature_tables_pass_their_suites(train, items, users):
    tables = F.build_feature_tables(train, items, users, max_len=2)
    assert list(tables) == list(F.TABLE_SUITES)
    report = F.check_feature_tables(tables, F.suite_parameters(train, max_len=2))
    assert report.success
    assert report.suites["features_users"].parameters["max_rating_std"] == 2.0  # (5 - 1) / 2
    # a not-null and a 0/1 check ran for each of the three genre columns
    plain = F.check_feature_tables(
        {"item_features": tables["item_features"].drop(columns=["genre_a", "genre_b", "genre_c"])}
    )
    assert report.suites["features_items"].evaluated - plain.suites["features_items"].evaluated == 6


def test_items_without_genres_give_profiles_without_tastes(train, items):
    tables = F.build_feature_tables(train, items.drop(columns="genres"))
    assert not tables["user_profiles"].columns.str.startswith(F.GENRE_PREFIX).any()
    assert "item_content" in tables  # the titles still give content vectors


def test_no_content_table_without_item_text(train):
    tables = F.build_feature_tables(train, pd.DataFrame({"item_id": [10, 20, 30]}))
    assert "item_content" not in tables


@pytest.mark.parametrize(
    ("table", "breaks", "expectation", "column"),
    [
        (
            "user_profiles",
            lambda t: pd.concat([t, t.iloc[:1]]),
            "expect_column_values_to_be_unique",
            "user_id",
        ),
        (
            "user_profiles",
            lambda t: t.assign(n_interactions=-t["n_interactions"]),
            "expect_column_values_to_be_between",
            "n_interactions",
        ),
        (
            "user_profiles",
            lambda t: t.assign(genre_a=t["genre_a"] + 1),
            "expect_column_values_to_be_between",
            "genre_a",
        ),
        (
            "user_profiles",
            lambda t: t.assign(rating_mean=t["rating_mean"] + 10),
            "expect_column_values_to_be_between",
            "rating_mean",
        ),
        (
            "item_features",
            lambda t: t.assign(popularity=t["popularity"] - 5),
            "expect_column_values_to_be_between",
            "popularity",
        ),
        (
            "item_features",
            lambda t: t.assign(genre_c=t["genre_c"] * 2),
            "expect_column_values_to_be_in_set",
            "genre_c",
        ),
        (
            "sequences",
            lambda t: t.assign(sequence_length=t["sequence_length"] + 5),
            "expect_column_values_to_be_between",
            "sequence_length",
        ),
        (
            "item_content",
            lambda t: pd.concat([t, t.iloc[:1]]),
            "expect_compound_columns_to_be_unique",
            "item_id,term",
        ),
    ],
)
def test_a_broken_table_is_named_with_its_failed_expectation(
    train, items, users, table, breaks, expectation, column
):
    tables = F.build_feature_tables(train, items, users, max_len=3)
    tables[table] = breaks(tables[table])
    with pytest.raises(F.FeatureValidationError) as err:
        F.check_feature_tables(tables, F.suite_parameters(train, max_len=3))
    assert err.value.tables == [table]
    assert f"feature table(s) {table} broke" in str(err.value)
    assert f"[{F.TABLE_SUITES[table]}] {column}: {expectation}" in str(err.value)


def test_a_table_without_a_suite_is_refused(train):
    with pytest.raises(FeatureError, match=r"no expectation suite for feature table\(s\) \['x'\]"):
        F.check_feature_tables({"x": train})


# --------------------------------------------------------------- bad inputs
def test_missing_column_named(train):
    with pytest.raises(FeatureError, match=r"train is missing required column\(s\) \['rating'\]"):
        build_user_profiles(train.drop(columns="rating"))


def test_negative_rating_rejected(train):
    with pytest.raises(FeatureError, match="train.rating must be non-negative and not null"):
        build_item_features(train.assign(rating=-1.0))


def test_duplicate_item_ids_rejected(train, items):
    with pytest.raises(FeatureError, match="items.item_id has duplicate ids, e.g. 10"):
        build_item_features(train, pd.concat([items, items.iloc[:1]]))


def test_colliding_genre_names_rejected(train):
    items = pd.DataFrame({"item_id": [10, 20], "genres": ["Sci-Fi", "sci fi"]})
    with pytest.raises(FeatureError, match="genre names collide"):
        build_user_profiles(train, items=items)


def test_empty_train_rejected(train):
    with pytest.raises(FeatureError, match="train has no rows"):
        build_user_profiles(train.iloc[:0])


# -------------------------------------------------------- writing and hashing
def test_write_features_round_trip(tmp_path, train, items):
    tables = {
        "item_features": build_item_features(train, items),
        "sequences": build_sequences(train),
    }
    paths = write_features(tmp_path / "f", **tables)
    assert paths == {k: tmp_path / "f" / f"{k}.parquet" for k in tables}
    back = pd.read_parquet(paths["item_features"])
    pd.testing.assert_frame_equal(back, tables["item_features"], check_dtype=False)
    assert pd.read_parquet(paths["sequences"])["sequence"].map(list).tolist() == [
        [10, 20, 30],
        [10],
        [30],
    ]


def test_write_features_rejects_non_frames(tmp_path):
    with pytest.raises(FeatureError, match="table 'x' is a list, not a DataFrame"):
        write_features(tmp_path, x=[1, 2])


def test_feature_hash_is_content_hash(train):
    seqs = build_sequences(train)
    assert feature_hash(seqs) == feature_hash(build_sequences(train.copy()))
    assert len(feature_hash(seqs)) == 64
    changed = train.assign(rating=train["rating"].where(train.index != 0, 4.5))
    assert feature_hash(train) != feature_hash(changed)
    assert feature_hash(train) != feature_hash(train[train.columns[::-1]])
    assert feature_hash(train) != feature_hash(train.astype({"rating": "float32"}))


# --------------------------------------------------------------- ML-100K
GENRES_100K = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _read_ml100k(root):
    data = pd.read_csv(
        root / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    )
    raw = pd.read_csv(root / "u.item", sep="|", header=None, encoding="latin-1")
    flags = raw.iloc[:, 5:24].to_numpy(dtype=bool)
    genres = ["|".join(np.asarray(GENRES_100K)[row]) for row in flags]
    items = pd.DataFrame(
        {
            "item_id": raw[0],
            "title": raw[1],
            "genres": genres,
            "year": pd.to_datetime(raw[2], format="%d-%b-%Y").dt.year,
        }
    )
    users = pd.read_csv(
        root / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"]
    )
    return data, items, users


def test_ml100k_features(ml100k_dir):
    data, items, users = _read_ml100k(ml100k_dir)
    prof = build_user_profiles(data, users, items)
    assert len(prof) == 943 and prof["n_interactions"].sum() == 100_000
    taste = prof.filter(like=F.GENRE_PREFIX)
    assert taste.shape[1] == 19
    assert taste.sum(axis=1).to_numpy() == pytest.approx(np.ones(943))
    u1 = data[data.user_id == 1]
    assert prof.loc[0, "rating_mean"] == pytest.approx(u1.rating.mean())
    assert prof["recency_days"].min() == 0.0
    assert prof["gender"].isin(["M", "F"]).all()

    feats = build_item_features(data, items)
    assert len(feats) == 1682 and feats["popularity"].sum() == 100_000
    assert feats.loc[feats.item_id == 50, "popularity"].item() == 583  # Star Wars
    assert feats["year"].notna().sum() == 1681

    matrix, vocab = build_content_vectors(items)
    assert matrix.shape[0] == 1682 and "genre_film_noir" in vocab
    seqs = build_sequences(data, max_len=50)
    assert len(seqs) == 943 and seqs["sequence"].map(len).max() == 50
