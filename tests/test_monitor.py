"""Retraining that follows the evidence: a replay of batches through ingest and monitoring.

A steady synthetic stream (every stretch drawn from the same distribution):
its first 70 % is the store's data and trains the champion; then, an hour
apart, each batch is ingested and monitored the way the DAGs do it: twenty
unshifted batches, a popularity shift (half of a batch's interactions move
to fifteen long-tail items), a new-item surge an hour later (inside the
six-hour cooldown), a monitor run with nothing new, a second surge once the
cooldown is over, and an erasure.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from recsys.data import ingest, shifts

MODELS = ("popularity", "itemknn")
K = 10
BATCH = 500
HOUR = 3600.0
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    from recsys.data import Dataset
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, forget_user, monitor, run_pipeline

    tmp = tmp_path_factory.mktemp("monitor")
    data = generate_dataset(800, 300, 40_000, seed=7)
    rng = np.random.default_rng(7)
    stream = shifts.steady_stream(data.interactions, rng, start=1_700_000_000)
    cut = int(len(stream) * 0.7)
    base, pool = stream.iloc[:cut], stream.iloc[cut:]
    store = write_dataset(Dataset(base, data.items, data.users, "synthetic"), tmp / "store")
    landing = tmp / "landing"
    landing.mkdir()
    steps: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(tmp / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (tmp / "artifacts").as_uri())
        mp.setenv("RECSYS_DATA_PATH", str(store))
        mp.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
        mp.delenv("RECSYS_REDIS_URL", raising=False)
        mp.setattr("recsys.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")  # no cache
        for key in [k for k in os.environ if k.startswith("RECSYS_MONITOR_")]:
            mp.delenv(key)
        run_pipeline(PipelineOptions(data_path=str(store), models=MODELS, k=K), "champion-run")

        def land(frame: pd.DataFrame | None, label: str, hour: float) -> None:
            if frame is not None:
                frame.to_csv(landing / f"{label}.csv", index=False)
                day = f"2026-11-{1 + int(hour) // 24:02d}"
                ingest.ingest_landing(landing, store, tmp / "quarantine", arrival=day, now=T0)
            steps.append({"label": label, "hour": hour, **monitor(now=T0 + hour * HOUR, k=K)})

        chunks = [pool.iloc[i * BATCH : (i + 1) * BATCH] for i in range(23)]
        for i in range(20):
            land(chunks[i], f"steady-{i:02d}", i)
        land(shifts.popularity_shift(chunks[20], base, rng, share=0.5), "popularity-shift", 20)
        catalogue = data.items["item_id"]
        land(shifts.new_item_surge(chunks[21], catalogue, rng), "new-items", 21)
        land(None, "nothing-new", 22)
        land(shifts.new_item_surge(chunks[22], catalogue, rng), "new-items-again", 27)
        forget_user(int(base["user_id"].iloc[0]), data_path=store, now=T0 + 34 * HOUR)
        land(None, "after-an-erasure", 34)
        from recsys.pipeline import read_monitoring

        yield {"steps": {s["label"]: s for s in steps}, "order": steps, **read_monitoring("recsys")}


def _decisions(replay, label):
    return replay["steps"][label]["decisions"]


def test_twenty_unshifted_batches_trigger_no_retraining(replay):
    steady = replay["order"][:20]
    assert [s["label"] for s in steady] == [f"steady-{i:02d}" for i in range(20)]
    assert all(len(s["measured"]) == 1 for s in steady)
    assert [s["action"] for s in steady] == ["hold"] * 20
    assert not any(s["retrain"] for s in steady)


def test_every_decision_records_each_figure_against_its_threshold(replay):
    records = replay["decisions"]
    assert len(records) == 25  # 23 batches, "nothing new", the erasure
    for record in records:
        checks = {c["name"]: c for c in record["checks"]}
        assert set(checks) == {
            "item_psi",
            "activity_ks",
            "unknown_user_share",
            "unknown_item_share",
            "rating_js",
            "hit_rate_drop",
            "ndcg_drop",
        }
        assert all(c["threshold"] == record["policy"][c["name"]] for c in checks.values())
        if record["batch"] is not None:
            assert all(c["value"] is not None for c in checks.values())
            assert all(c["breached"] == (c["value"] > c["threshold"]) for c in checks.values())
    steady = [m["metrics"] for m in replay["measurements"][:20]]
    assert max(m["item_psi"] for m in steady) < 0.1
    assert max(m["unknown_item_share"] for m in steady) == 0.0


def test_a_popularity_shift_triggers_retraining_on_popularity_and_decay(replay):
    step = replay["steps"]["popularity-shift"]
    assert step["retrain"] and step["action"] == "retrain"
    assert "item popularity PSI" in step["reason"] and "> 0.2" in step["reason"]
    assert "prequential hit rate drop" in step["reason"]
    measured = replay["measurements"][20]["metrics"]
    assert measured["item_psi"] > 0.2 and measured["hit_rate_drop"] > 0.35


def test_a_new_item_surge_inside_the_cooldown_is_deferred(replay):
    step = replay["steps"]["new-items"]
    assert step["action"] == "defer" and not step["retrain"]
    assert "unknown items' share" in step["reason"] and "cooldown 6 h" in step["reason"]
    record = replay["decisions"][21]
    assert record["cooldown_until"] == T0 + 20 * HOUR + 6 * HOUR


def test_a_monitor_run_with_nothing_new_skips(replay):
    step = replay["steps"]["nothing-new"]
    assert step["measured"] == [] and step["action"] == "skip"
    assert step["reason"] == "the data has not changed since the last decision"


def test_a_surge_after_the_cooldown_triggers_retraining(replay):
    step = replay["steps"]["new-items-again"]
    assert step["retrain"]
    assert step["reason"].startswith("unknown items' share 0.")
    assert replay["measurements"][22]["metrics"]["unknown_item_share"] > 0.1


def test_a_champion_that_still_knows_a_forgotten_user_is_retrained(replay):
    step = replay["steps"]["after-an-erasure"]
    assert step["retrain"]
    assert step["reason"] == "the champion still knows 1 forgotten user(s)"


def test_recsys_monitor_says_what_it_measured_and_decided(replay, capsys):
    from recsys.cli import main

    assert main(["monitor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("recsys: measured 0 new batch(es) against champion version 1")
    assert out[1].startswith("  (no new batch): ")
