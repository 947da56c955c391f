"""Loaders: every format normalises to one schema; structure errors are DataFormatError."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.constants import INTERACTION_COLS
from recsys.data import Dataset
from recsys.data.loaders import DataFormatError, detect_format, load_dataset, write_dataset


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_text(text, encoding=encoding)
    return path


# ------------------------------------------------------------------ ML-100K
def test_ml100k_folder_loads_counts_genres_and_demographics(ml100k_dir):
    ds = load_dataset(ml100k_dir)
    inter = ds.interactions
    assert list(inter.columns) == list(INTERACTION_COLS)
    assert (len(inter), inter["user_id"].nunique(), inter["item_id"].nunique()) == (
        100_000,
        943,
        1682,
    )
    assert str(inter["user_id"].dtype) == "int64" and str(inter["timestamp"].dtype) == "int64"
    assert inter.iloc[0].tolist() == [196, 242, 3.0, 881250949]  # file order kept
    assert len(ds.meta["genres"]) == 19 and ds.meta["genres"][0] == "unknown"
    toy = ds.items.set_index("item_id").loc[1]
    assert (toy["title"], toy["genres"], toy["year"]) == (
        "Toy Story (1995)",
        "Animation|Children's|Comedy",
        1995,
    )
    assert len(ds.items) == 1682 and ds.items["year"].isna().sum() == 1  # item 267
    user1 = ds.users.set_index("user_id").loc[1]
    assert len(ds.users) == 943 and (user1["age"], user1["gender"], user1["occupation"]) == (
        24,
        "M",
        "technician",
    )
    assert ds.name == "ml-100k"


def test_ml100k_u_data_path_is_enough(ml100k_dir):
    ds = load_dataset(ml100k_dir / "u.data")
    assert len(ds.interactions) == 100_000 and ds.items is not None


# ---------------------------------------------------------- other MovieLens
def test_ml_latest_reads_ratings_and_movies(tmp_path):
    _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,10,4.5,964982703\n2,20,3.0,964981247\n",
    )
    _write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n'
        "20,Nothing (2001),(no genres listed)\n",
    )
    ds = load_dataset(tmp_path)
    assert detect_format(tmp_path) == "ml-latest"
    assert ds.interactions.values.tolist() == [[1, 10, 4.5, 964982703], [2, 20, 3.0, 964981247]]
    assert ds.items.values.tolist() == [
        [10, "Heat, The (1995)", "Action|Crime", 1995],
        [20, "Nothing (2001)", "", 2001],
    ]
    assert ds.users is None


def test_ml1m_reads_double_colon_files(tmp_path):
    _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    _write(
        tmp_path / "movies.dat",
        "1193::One Flew: Nest (1975)::Drama\n661::Pokémon (1996)::Animation|Children's\n",
        encoding="latin-1",
    )
    _write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_dataset(tmp_path)
    assert ds.interactions.values.tolist() == [[1, 1193, 5.0, 978300760], [2, 661, 3.0, 978302109]]
    assert ds.items["title"].tolist() == ["One Flew: Nest (1975)", "Pokémon (1996)"]
    assert ds.items["year"].tolist() == [1975, 1996]
    assert ds.users.values.tolist() == [[1, 1, "F", "K-12 student"], [2, 56, "M", "self-employed"]]


# ------------------------------------------------------------ generic tables
def test_csv_with_named_columns_and_datetime_strings(tmp_path):
    path = _write(
        tmp_path / "log.csv",
        "who,what,stars,when\nu1,a,5,2024-01-01T00:00:10Z\nu2,b,2,2024-01-02 00:00:00\n",
    )
    ds = load_dataset(path, user_col="who", item_col="what", rating_col="stars", time_col="when")
    inter = ds.interactions
    assert inter["user_id"].tolist() == ["u1", "u2"]
    assert inter["timestamp"].tolist() == [1704067210, 1704153600]
    assert str(inter["timestamp"].dtype) == "int64" and inter["rating"].tolist() == [5.0, 2.0]


def test_tsv_without_rating_or_time_is_implicit(tmp_path):
    path = _write(tmp_path / "clicks.tsv", "user_id\titem_id\n1\t7\n1\t8\n")
    inter = load_dataset(path).interactions
    assert inter["rating"].tolist() == [1.0, 1.0]
    assert inter["timestamp"].isna().all() and list(inter.columns) == list(INTERACTION_COLS)


def test_csv_custom_separator(tmp_path):
    path = _write(tmp_path / "x.txt", "user_id;item_id;rating\n3;4;2.5\n")
    assert load_dataset(path, "csv", sep=";").interactions["rating"].tolist() == [2.5]


def test_bad_values_stay_as_read_and_no_row_is_dropped(tmp_path):
    path = _write(
        tmp_path / "bad.csv",
        "user_id,item_id,rating,timestamp\n1,2,4,100\n1,3,five,yesterday\n2,2,,300\n",
    )
    inter = load_dataset(path).interactions
    assert len(inter) == 3
    assert inter["rating"].dtype == object and inter["rating"].tolist()[:2] == ["4", "five"]
    assert inter["timestamp"].dtype == object and inter["timestamp"].tolist()[1] == "yesterday"


def test_parquet_with_datetime_column(tmp_path):
    times = pd.to_datetime(["1970-01-01 00:01:00", "2024-01-01 00:00:00"])
    frame = pd.DataFrame(
        {"user_id": [1, 2], "item_id": [5, 6], "rating": [1.0, 2.0], "timestamp": times}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    inter = load_dataset(tmp_path / "t.parquet").interactions
    assert inter["timestamp"].tolist() == [60, 1704067200]


# ---------------------------------------------------------- recsys round trip
def test_write_then_load_round_trips(tmp_path):
    inter = pd.DataFrame(
        {"user_id": [1, 2], "item_id": [3, 4], "rating": [5.0, 1.0], "timestamp": [10, 20]}
    )
    items = pd.DataFrame(
        {"item_id": [3, 4], "title": ["x", "y"], "genres": ["A", "A|B"], "year": [2000, 2001]}
    )
    out = write_dataset(Dataset(inter, items, None, "tiny", {"seed": 1}), tmp_path / "ds")
    back = load_dataset(out)
    pd.testing.assert_frame_equal(back.interactions, inter)
    pd.testing.assert_frame_equal(back.items, items, check_dtype=False)
    assert back.users is None and back.name == "tiny" and back.meta == {"seed": 1}
    assert detect_format(out) == "recsys"


# ------------------------------------------------------------------ errors
def test_missing_path_names_it(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope: no such file or folder"):
        load_dataset(tmp_path / "nope")


def test_unknown_format_name(tmp_path):
    path = _write(tmp_path / "a.csv", "user_id,item_id\n1,2\n")
    with pytest.raises(DataFormatError, match="unknown format 'xls'"):
        load_dataset(path, "xls")


def test_undetectable_folder_and_file(tmp_path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(
        DataFormatError,
        match=r"cannot detect the data format of this folder "
        r"\(holds \['notes.md'\]\)",
    ):
        load_dataset(tmp_path)
    with pytest.raises(DataFormatError, match="cannot detect the data format from the file"):
        load_dataset(tmp_path / "notes.md")


def test_empty_file(tmp_path):
    path = _write(tmp_path / "empty.csv", "")
    with pytest.raises(DataFormatError, match=r"empty.csv: the file is empty"):
        load_dataset(path)
    header_only = _write(tmp_path / "header.csv", "user_id,item_id\n")
    with pytest.raises(DataFormatError, match="holds no rows"):
        load_dataset(header_only)


def test_missing_named_column_lists_existing_ones(tmp_path):
    path = _write(tmp_path / "a.csv", "uid,item_id,rating\n1,2,3\n")
    with pytest.raises(
        DataFormatError,
        match=r"missing column\(s\) \['user_id'\]; the columns "
        r"are \['uid', 'item_id', 'rating'\]",
    ):
        load_dataset(path)
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['when'\]"):
        load_dataset(path, user_col="uid", time_col="when")
