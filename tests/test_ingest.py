"""Landing-folder ingest: validated one batch at a time, idempotent, nothing lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.data import ingest

NOW = 1_800_000_000.0


def _batch(path: Path, rows: list[tuple]) -> Path:
    frame = pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, RATING_COL, TIME_COL])
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def dirs(tmp_path, monkeypatch) -> dict[str, Path]:
    # The deployment declares its scale, so a rating of 99 is out of it.
    monkeypatch.setenv("RECSYS_RATING_SCALE", "1,5")
    paths = {name: tmp_path / name for name in ("landing", "store", "quarantine")}
    paths["landing"].mkdir()
    return paths


def _run(dirs, arrival="2026-11-01"):
    return ingest.ingest_landing(
        dirs["landing"], dirs["store"], dirs["quarantine"], arrival=arrival, now=NOW
    )


def test_good_batches_are_appended_and_a_bad_one_is_quarantined_whole(dirs):
    _batch(dirs["landing"] / "a.csv", [(1, 10, 4.0, 1_700_000_000), (2, 11, 3.0, 1_700_000_100)])
    _batch(dirs["landing"] / "b.csv", [(3, 12, 5.0, 1_700_000_200)])
    bad = [(4, 13, 99.0, 1_700_000_300), (5, 14, 2.0, 1_700_000_400)]
    _batch(dirs["landing"] / "c.csv", bad)

    result = _run(dirs)

    assert [b["source"] for b in result.accepted] == ["a.csv", "b.csv"]
    assert [b["source"] for b in result.rejected] == ["c.csv"]
    assert result.new_rows == 3
    store = ingest.read_store(dirs["store"]).interactions
    assert sorted(store[USER_COL]) == [1, 2, 3]
    assert ingest.store_rows(dirs["store"]) == 3
    assert list(dirs["store"].glob("arrival=2026-11-01/*.parquet"))
    quarantined = dirs["quarantine"] / result.rejected[0]["batch"]
    assert "rating" in (quarantined / "summary.txt").read_text()
    kept = pd.read_csv(quarantined / "batch" / "c.csv")
    assert len(kept) == len(bad)
    assert not [p for p in dirs["landing"].iterdir() if p.name != ingest.DONE]


def test_reingesting_the_same_batch_changes_nothing(dirs):
    first = _batch(dirs["landing"] / "a.csv", [(1, 10, 4.0, 1_700_000_000)])
    copy = dirs["landing"].parent / "a-copy.csv"
    shutil.copy(first, copy)
    _run(dirs)
    manifest = (dirs["store"] / ingest.MANIFEST).read_text()

    shutil.copy(copy, dirs["landing"] / "a-again.csv")
    result = _run(dirs, arrival="2026-11-02")

    assert result.accepted == [] and len(result.already_ingested) == 1
    assert (dirs["store"] / ingest.MANIFEST).read_text() == manifest
    assert ingest.store_rows(dirs["store"]) == 1


def test_an_unreadable_batch_is_quarantined_with_the_reason(dirs):
    (dirs["landing"] / "empty.csv").write_text("")
    result = _run(dirs)
    assert result.accepted == [] and len(result.rejected) == 1
    dest = Path(result.rejected[0]["quarantine"])
    assert (dest / "empty.csv").exists()
    assert "empty" in (dest / "report.txt").read_text().lower()


def test_the_pipeline_reads_a_store_as_its_input(dirs):
    from recsys.data.loaders import input_rows, load_input

    _batch(dirs["landing"] / "a.csv", [(1, 10, 4.0, 1_700_000_000), (2, 10, 3.0, 1_700_000_050)])
    _run(dirs)
    assert len(load_input(str(dirs["store"])).interactions) == 2
    assert input_rows(str(dirs["store"])) == 2


def test_an_empty_store_is_a_clear_error(tmp_path):
    (tmp_path / ingest.MANIFEST).write_text('{"batches": {}}')
    with pytest.raises(ValueError, match="holds no accepted batch"):
        ingest.read_store(tmp_path)


def test_ingesting_into_a_data_folder_keeps_the_data_that_was_there(dirs):
    """Regression: the embedded default lands batches in the demo's data folder; once a
    manifest appeared there, training read only the batches and lost the demo's rows."""
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import load_input, write_dataset

    base = generate_dataset(30, 20, 300, seed=1)
    write_dataset(base, dirs["store"])
    _batch(dirs["landing"] / "a.csv", [(1, 10, 4.0, 1_700_000_000), (2, 11, 3.0, 1_700_000_100)])
    assert _run(dirs).new_rows == 2
    merged = load_input(dirs["store"])
    assert len(merged.interactions) == len(base.interactions) + 2
    assert ingest.store_rows(dirs["store"]) == len(base.interactions) + 2
    assert merged.items is not None and len(merged.items) == len(base.items)
