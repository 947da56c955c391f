"""Data validation: each kind of bad input is rejected and named, with its row count.

Frames are built by hand, so every expected count is known exactly.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from recsys.data import Dataset
from recsys.data.validation import (
    DataValidationError,
    ValidationReport,
    check_dataset,
    quarantine,
    validate_dataset,
    validate_frame,
    validate_frames,
)

NOW = 1_000_000_000.0  # 2001-09-09, the reference time of every test


def make_interactions(n: int = 10) -> pd.DataFrame:
    """n clean events: distinct users, items and times, ratings 1..5, all before NOW."""
    return pd.DataFrame(
        {
            "user_id": np.arange(n, dtype="int64"),
            "item_id": np.arange(n, dtype="int64") % 7,
            "rating": (np.arange(n) % 5 + 1).astype(float),
            "timestamp": np.arange(n, dtype="int64") + 900_000_000,
        }
    )


def make_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": np.arange(7, dtype="int64"),
            "title": [f"Film {i}" for i in range(7)],
            "genres": ["Drama|Comedy"] * 7,
            "year": [1995.0, 1996.0, np.nan, 1930.0, 2000.0, 1977.0, 1999.0],
        }
    )


def make_users(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.arange(n, dtype="int64"),
            "age": np.linspace(18, 70, n).round(),
            "gender": ["F", "M"] * (n // 2),
            "occupation": ["writer"] * n,
        }
    )


def only_failure(report: ValidationReport):
    assert not report.success
    assert len(report.failures) == 1, report.summary()
    return report.failures[0]


def test_clean_dataset_passes_every_suite():
    dataset = Dataset(make_interactions(), make_items(), make_users(), name="clean")
    report = check_dataset(dataset, now=NOW, rating_range=(1, 5))
    assert report.success and report.failures == []
    assert list(report.suites) == ["interactions", "items", "users"]
    assert report.suites["interactions"].row_count == 10
    assert report.suites["interactions"].skipped == []
    assert report.summary() == (
        "Validation of 'clean' passed (interactions: 10 rows, items: 7 rows, users: 10 rows)"
    )
    assert json.loads(json.dumps(report.to_dict()))["success"] is True


def test_input_frames_are_not_modified():
    events = make_interactions()
    events.loc[3, "rating"] = 42.0
    before = events.copy()
    validate_dataset(Dataset(events), now=NOW)
    pd.testing.assert_frame_equal(events, before)


def test_null_ids_are_rejected_with_their_count():
    events = make_interactions()
    events["user_id"] = events["user_id"].astype("float64")
    events.loc[[2, 5], "user_id"] = np.nan
    report = validate_dataset(Dataset(events), now=NOW)
    failure = only_failure(report)
    assert (failure.expectation, failure.column, failure.unexpected_count) == (
        "expect_column_values_to_not_be_null",
        "user_id",
        2,
    )
    assert "[interactions] user_id: expect_column_values_to_not_be_null: 2 rows broke it" in (
        report.summary()
    )


def test_non_numeric_rating_is_named_not_coerced():
    events = make_interactions().astype({"rating": object})
    events.loc[4, "rating"] = "abc"
    with pytest.raises(DataValidationError) as caught:
        check_dataset(Dataset(events), now=NOW)
    report = caught.value.report
    failure = only_failure(report)
    assert (failure.expectation, failure.column, failure.unexpected_count) == (
        "expect_column_values_to_match_regex",
        "rating",
        1,
    )
    assert failure.examples == ["abc"]
    assert "rating: expect_column_values_to_match_regex: 1 row broke it" in str(caught.value)
    assert "ratings are numbers" in str(caught.value)
    assert any(
        "rating" in note and "not numeric" in note for note in report.suites["interactions"].skipped
    )


def test_ratings_read_as_strings_count_only_the_unparseable_ones():
    events = make_interactions()
    events["rating"] = ["4", "3.5", "abc", "5", "", "1", "2", "2", "3", "1e0"]
    failure = only_failure(validate_dataset(Dataset(events), now=NOW))
    assert (failure.column, failure.unexpected_count) == ("rating", 2)
    assert failure.examples == ["abc", ""]


def test_values_gx_cannot_handle_are_reported_not_raised():
    events = make_interactions().assign(rating=np.full(10, 1 + 1j))
    failure = only_failure(validate_dataset(Dataset(events), now=NOW))
    assert (failure.suite, failure.expectation, failure.unexpected_count) == (
        "interactions",
        "suite_error",
        None,
    )
    assert failure.description.startswith("the suite could not run: TypeError: ")


def test_ratings_outside_the_declared_scale_are_rejected():
    events = make_interactions()
    events.loc[[0, 7], "rating"] = [0.5, 6.0]
    report = validate_dataset(Dataset(events), now=NOW, rating_range=(1, 5))
    failure = only_failure(report)
    assert (failure.expectation, failure.column, failure.unexpected_count) == (
        "expect_column_values_to_be_between",
        "rating",
        2,
    )
    assert "rating: expect_column_values_to_be_between: 2 rows broke it" in report.summary()
    assert "(min_value=1, max_value=5)" in report.summary()


def test_without_a_declared_scale_ratings_need_only_be_non_negative():
    # Implicit counts (plays, clicks, purchases) have no top.
    events = make_interactions()
    events.loc[0, "rating"] = 250_000.0
    assert validate_dataset(Dataset(events), now=NOW).success
    events.loc[1, "rating"] = -0.5
    failure = only_failure(validate_dataset(Dataset(events), now=NOW))
    assert (failure.column, failure.unexpected_count) == ("rating", 1)


def test_a_scale_declared_by_the_source_or_the_deployment_is_enforced(monkeypatch):
    events = make_interactions()
    events.loc[0, "rating"] = 10.5
    declared = Dataset(events, meta={"rating_scale": [1, 5]})
    assert only_failure(validate_dataset(declared, now=NOW)).column == "rating"
    monkeypatch.setenv("RECSYS_RATING_SCALE", "0,10")
    failure = only_failure(validate_dataset(Dataset(events), now=NOW))
    assert (failure.column, failure.unexpected_count) == ("rating", 1)


def test_negative_ids_are_rejected_per_column():
    events = make_interactions()
    events.loc[1, "user_id"] = -1
    events.loc[[2, 3], "item_id"] = [-2, -3]
    report = validate_dataset(Dataset(events), now=NOW)
    counts = {(f.expectation, f.column): f.unexpected_count for f in report.failures}
    assert counts == {
        ("expect_column_values_to_be_between", "user_id"): 1,
        ("expect_column_values_to_be_between", "item_id"): 2,
    }
    assert "[interactions] item_id: expect_column_values_to_be_between: 2 rows broke it" in (
        report.summary()
    )


def test_string_ids_are_not_range_checked():
    events = make_interactions()
    events["user_id"] = [f"u{i}" for i in range(10)]
    report = validate_dataset(Dataset(events), now=NOW)
    assert report.success, report.summary()


def test_duplicate_events_beyond_the_policy_are_rejected():
    events = make_interactions(100)
    events.iloc[1] = events.iloc[0]  # one exact duplicate pair: 2 of 100 rows = 2% > 1%
    report = validate_dataset(Dataset(events), now=NOW)
    failure = only_failure(report)
    assert (failure.expectation, failure.column, failure.unexpected_count) == (
        "expect_compound_columns_to_be_unique",
        "user_id,item_id,timestamp",
        2,
    )
    assert "expect_compound_columns_to_be_unique: 2 rows broke it" in report.summary()
    assert validate_dataset(Dataset(events), now=NOW, max_duplicate_share=0.02).success


def test_duplicate_share_at_the_limit_passes():
    events = make_interactions(200)
    events.iloc[1] = events.iloc[0]  # 2 of 200 rows = exactly 1%
    assert validate_dataset(Dataset(events), now=NOW, max_duplicate_share=0.01).success


def test_timestamps_after_now_are_rejected():
    events = make_interactions()
    events.loc[[3, 4], "timestamp"] = [int(NOW) + 1, int(NOW) + 86_400]
    events.loc[5, "timestamp"] = int(NOW)  # exactly now is fine
    report = validate_dataset(Dataset(events), now=NOW)
    failure = only_failure(report)
    assert (failure.expectation, failure.column, failure.unexpected_count) == (
        "expect_column_values_to_be_between",
        "timestamp",
        2,
    )
    assert "timestamp: expect_column_values_to_be_between: 2 rows broke it" in report.summary()
    assert "not in the future" in report.summary()


def test_without_now_the_future_check_is_skipped_not_guessed():
    events = make_interactions()
    events.loc[3, "timestamp"] = 4_000_000_000  # year 2096
    report = validate_dataset(Dataset(events))
    assert report.success
    assert report.suites["interactions"].skipped == [
        "expect_column_values_to_be_between(timestamp): parameter(s) ['now'] not given"
    ]


@pytest.mark.parametrize(
    "timestamps",
    [[None] * 10, [np.nan] * 10, pd.array([pd.NA] * 10, dtype="Int64")],
    ids=["none-object", "nan-float", "na-Int64"],
)
def test_all_null_timestamps_are_accepted(timestamps):
    events = make_interactions().assign(timestamp=timestamps)
    report = validate_dataset(Dataset(events), now=NOW)
    assert report.success, report.summary()


def test_missing_columns_are_reported_not_raised():
    events = make_interactions().drop(columns=["rating", "timestamp"])
    report = validate_dataset(Dataset(events), now=NOW)
    missing = [(f.expectation, f.column, f.unexpected_count) for f in report.failures]
    assert missing == [
        ("expect_column_to_exist", "rating", None),
        ("expect_column_to_exist", "timestamp", None),
    ]
    assert "[interactions] rating: expect_column_to_exist: column is missing" in report.summary()
    skipped = report.suites["interactions"].skipped
    assert "expect_column_values_to_not_be_null(rating): column(s) ['rating'] absent" in skipped


def test_empty_frame_is_rejected():
    events = make_interactions().iloc[0:0]
    report = validate_dataset(Dataset(events), now=NOW)
    failure = only_failure(report)
    assert (failure.expectation, failure.observed, failure.unexpected_count) == (
        "expect_table_row_count_to_be_between",
        0,
        None,
    )
    assert "[interactions] (table): expect_table_row_count_to_be_between: observed 0" in (
        report.summary()
    )


def test_frame_without_any_column_is_rejected_without_a_traceback():
    report = validate_dataset(Dataset(pd.DataFrame()), now=NOW)
    kinds = sorted(f.expectation for f in report.failures)
    assert kinds == ["expect_column_to_exist"] * 4 + ["expect_table_row_count_to_be_between"]


def test_items_need_unique_ids_and_plausible_years():
    items = make_items()
    items.loc[1, "item_id"] = 0
    items.loc[[3, 4], "year"] = [1066.0, 2003.0]  # NOW is 2001: the cap is 2002
    report = validate_dataset(Dataset(make_interactions(), items=items), now=NOW)
    counts = {(f.suite, f.expectation, f.column): f.unexpected_count for f in report.failures}
    assert counts == {
        ("items", "expect_column_values_to_be_unique", "item_id"): 2,
        ("items", "expect_column_values_to_be_between", "year"): 2,
    }


def test_users_need_unique_ids_and_ages_in_range():
    users = make_users()
    users.loc[9, "user_id"] = 8
    users.loc[[0, 1, 2], "age"] = [-1.0, 121.0, np.nan]
    report = validate_dataset(Dataset(make_interactions(), users=users), now=NOW)
    counts = {(f.suite, f.expectation, f.column): f.unexpected_count for f in report.failures}
    assert counts == {
        ("users", "expect_column_values_to_be_unique", "user_id"): 2,
        ("users", "expect_column_values_to_be_between", "age"): 2,
    }
    assert "[users] age: expect_column_values_to_be_between: 2 rows broke it" in report.summary()


def test_data_docs_are_written_to_docs_dir(tmp_path):
    docs = tmp_path / "data_docs"
    report = validate_dataset(Dataset(make_interactions(), make_items()), now=NOW, docs_dir=docs)
    assert report.docs_path == docs / "index.html"
    html = report.docs_path.read_text()
    assert "interactions" in html and "items" in html
    assert list(docs.glob("validations/interactions/**/*.html"))


def test_quarantine_keeps_every_row_and_the_report(tmp_path):
    events = make_interactions().astype({"rating": object})
    events.loc[[1, 2], "rating"] = ["abc", "n/a"]
    dataset = Dataset(events, users=make_users(), name="bad-batch")
    report = validate_dataset(dataset, now=NOW)
    dest = quarantine(dataset, report, tmp_path / "quarantine")
    manifest = json.loads((dest / "batch" / "manifest.json").read_text())
    assert {t: m["rows"] for t, m in manifest["tables"].items()} == {
        "interactions": 10,
        "users": 10,
    }
    kept_file = dest / "batch" / manifest["tables"]["interactions"]["file"]
    kept = pd.read_csv(kept_file, dtype=str, keep_default_na=False)
    assert kept["rating"].astype(str).tolist() == events["rating"].astype(str).tolist()
    users = pd.read_parquet(dest / "batch" / manifest["tables"]["users"]["file"])
    pd.testing.assert_frame_equal(users, make_users())
    assert json.loads((dest / "report.json").read_text())["success"] is False
    assert (dest / "summary.txt").read_text() == report.summary() + "\n"


def test_quarantine_copies_a_source_file_unchanged(tmp_path):
    source = tmp_path / "u.data"
    source.write_bytes(b"1\t2\tabc\t881250949\n")
    report = validate_dataset(Dataset(make_interactions()), now=NOW)
    dest = quarantine(source, report, tmp_path / "q")
    assert (dest / "batch" / "u.data").read_bytes() == source.read_bytes()
    with pytest.raises(ValueError, match="cannot quarantine .*missing: no such file or folder"):
        quarantine(tmp_path / "missing", report, tmp_path / "q2")


def test_validate_frame_runs_any_suite_with_its_parameters(tmp_path):
    suite = {
        "name": "features_demo",
        "meta": {"recsys_parameters": {"max_score": 1.0}},
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "score", "max_value": {"$PARAMETER": "max_score"}},
                "description": "scores are at most max_score",
            }
        ],
    }
    (tmp_path / "features_demo.json").write_text(json.dumps(suite))
    frame = pd.DataFrame({"score": [0.2, 0.9, 1.5]})
    report = validate_frame(frame, "features_demo", suites_dir=tmp_path)
    assert only_failure(report).unexpected_count == 1
    assert validate_frame(frame, "features_demo", suites_dir=tmp_path, max_score=2.0).success
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['max_scor'\]"):
        validate_frame(frame, "features_demo", suites_dir=tmp_path, max_scor=2.0)
    with pytest.raises(ValueError, match="no expectation suite 'nope'"):
        validate_frame(frame, "nope", suites_dir=tmp_path)


def test_validate_frames_runs_each_frame_against_its_own_suite(tmp_path):
    for name, column in (("alpha", "a"), ("beta", "b")):
        suite = {
            "name": name,
            "meta": {"recsys_parameters": {"top": 1}},
            "expectations": [
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": column, "max_value": {"$PARAMETER": "top"}},
                    "description": f"{column} is at most top",
                }
            ],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(suite))
    frames = {"alpha": pd.DataFrame({"a": [0, 2]}), "beta": pd.DataFrame({"b": [0, 1, 2, 3]})}
    report = validate_frames(frames, params={"beta": {"top": 2}}, name="pair", suites_dir=tmp_path)
    assert list(report.suites) == ["alpha", "beta"]
    assert [(f.suite, f.unexpected_count) for f in report.failures] == [("alpha", 1), ("beta", 1)]
    assert report.summary().startswith("Validation of 'pair' FAILED (alpha: 2 rows, beta: 4 rows)")
    with pytest.raises(ValueError, match=r"parameters given for suite\(s\) \['gamma'\]"):
        validate_frames(frames, params={"gamma": {}}, suites_dir=tmp_path)


def test_an_each_column_expectation_runs_once_per_matching_column(tmp_path):
    suite = {
        "name": "shares",
        "meta": {"recsys_parameters": {}},
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "share_*", "min_value": 0, "max_value": 1},
                "meta": {"recsys_each_column_matching": "^share_"},
                "description": "shares lie in [0, 1]",
            }
        ],
    }
    (tmp_path / "shares.json").write_text(json.dumps(suite))
    frame = pd.DataFrame(
        {"share_a": [0.5, 1.5], "share_b": [0.1, 0.2], "other": [9, 9], "share_c": [-1.0, 2.0]}
    )
    report = validate_frame(frame, "shares", suites_dir=tmp_path)
    assert report.suites["shares"].evaluated == 3
    assert [(f.column, f.unexpected_count) for f in report.failures] == [
        ("share_a", 1),
        ("share_c", 2),
    ]
    none = validate_frame(frame[["other"]], "shares", suites_dir=tmp_path).suites["shares"]
    assert none.success and none.evaluated == 0
    assert none.skipped == ["expect_column_values_to_be_between(^share_): no column matches"]


def test_bad_parameters_raise_value_errors():
    dataset = Dataset(make_interactions())
    with pytest.raises(ValueError, match=r"max_duplicate_share must lie in \[0, 1\], got 1.5"):
        validate_dataset(dataset, max_duplicate_share=1.5)
    with pytest.raises(ValueError, match=r"low <= high, got \(5, 1\)"):
        validate_dataset(dataset, rating_range=(5, 1))


def test_committed_gx_config_reads_the_same_suites(tmp_path):
    import shutil

    import great_expectations as gx

    from recsys.config import PROJECT_ROOT

    shutil.copytree(PROJECT_ROOT / "gx", tmp_path / "gx")
    shutil.copytree(PROJECT_ROOT / "expectations", tmp_path / "expectations")
    context = gx.get_context(mode="file", project_root_dir=tmp_path)
    names = sorted(suite.name for suite in context.suites.all())
    assert {
        "interactions",
        "items",
        "users",
        "features_users",
        "features_items",
        "features_sequences",
        "features_content",
    } <= set(names)


@pytest.mark.slow
def test_validating_100k_events_takes_seconds():
    rng = np.random.default_rng(0)
    n = 100_000
    events = pd.DataFrame(
        {
            "user_id": rng.integers(0, 1_000, n),
            "item_id": rng.integers(0, 2_000, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": np.arange(n, dtype="int64") + 800_000_000,
        }
    )
    validate_dataset(Dataset(make_interactions()), now=NOW)  # warm the GX import
    start = time.perf_counter()
    report = validate_dataset(Dataset(events), now=NOW, rating_range=(1, 5))
    elapsed = time.perf_counter() - start
    assert report.success
    assert elapsed < 10.0, f"validating 100k rows took {elapsed:.1f}s"
