"""The right to erasure, end to end: a forgotten user leaves the store, their
demographics, the batch recommendations and the serving cache; the champion
answers them as a stranger; the next training never sees them; the audit
says what happened without naming them.

One module-scoped deployment: a data folder (interactions and users) that
became an interaction store with two ingested batches, one pipeline run on
it (a champion and its batch recommendations), and entries in the real Redis
at 127.0.0.1:6379 under a key prefix of this test's own.
"""

from __future__ import annotations

import json
import re
import uuid

import pandas as pd
import pytest

from recsys.constants import USER_COL
from recsys.data import ingest

MODELS = ("popularity", "itemknn")
K = 5
NOW = 1_800_000_000.0
RUN_1 = "forget-run-1"
RUN_2 = "forget-run-2"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    return client


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with a base data set and two batches, a champion trained on it."""
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline

    tmp = tmp_path_factory.mktemp("forget")
    data = generate_dataset(120, 60, 3000, seed=5)
    base, late = data.interactions.iloc[:2400], data.interactions.iloc[2400:]
    store = write_dataset(data.__class__(base, data.items, data.users, data.name), tmp / "store")
    landing = tmp / "landing"
    landing.mkdir()
    late.iloc[:300].to_csv(landing / "a.csv", index=False)
    late.iloc[300:].to_csv(landing / "b.csv", index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(tmp / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (tmp / "artifacts").as_uri())
        mp.setenv("RECSYS_DATA_PATH", str(store))
        mp.setenv("RECSYS_REDIS_URL", REDIS_URL)
        mp.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
        mp.delenv("RECSYS_FORGET_SALT", raising=False)
        ingest.ingest_landing(landing, store, tmp / "quarantine", arrival="2026-11-01", now=NOW)
        run_pipeline(PipelineOptions(data_path=str(store), models=MODELS, k=K), RUN_1)
        yield {"tmp": tmp, "store": store, "data": data, "home": tmp / "home"}


def _victim(world) -> int:
    """A user with rows in the base data and in both batches."""
    inter = world["data"].interactions
    base, a, b = inter.iloc[:2400], inter.iloc[2400:2700], inter.iloc[2700:]
    both = set(base[USER_COL]) & set(a[USER_COL]) & set(b[USER_COL])
    return int(sorted(both)[-1])


def _regular(world, victim: int) -> int:
    """The most active user but the victim: known to the champion."""
    counts = world["data"].interactions[USER_COL].value_counts()
    return int(counts.drop(victim).index[0])


@pytest.fixture(scope="module")
def forgotten(world):
    """Forget the victim once; what was there before, the request's entry, the cache keys."""
    from recsys import registry
    from recsys.pipeline import RunFolder
    from recsys.pipeline.privacy import forget_user
    from recsys.serving.forget import cache_key

    client = _redis()
    prefix = f"recsys-test-{uuid.uuid4().hex[:8]}:recs"
    victim = _victim(world)
    other = _regular(world, victim)
    keys = {
        "victim": [
            cache_key("recsys", 1, str(victim), prefix=prefix),
            cache_key("recsys", 2, str(victim), prefix=prefix),
            cache_key("recsys-other", 7, str(victim), prefix=prefix),
        ],
        # Another user whose id ends like the victim's, and one whose id is the victim's own
        # id followed by more: neither may be touched.
        "others": [
            cache_key("recsys", 1, str(other), prefix=prefix),
            cache_key("recsys", 1, f"1{victim}", prefix=prefix),
            cache_key("recsys", 1, f"x:{victim}", prefix=prefix),
        ],
    }
    for key in keys["victim"] + keys["others"]:
        client.set(key, "[1, 2, 3]", ex=600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(world["home"]))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world['tmp'] / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (world["tmp"] / "artifacts").as_uri())
        mp.setenv("RECSYS_DATA_PATH", str(world["store"]))
        mp.setenv("RECSYS_REDIS_URL", REDIS_URL)
        mp.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
        from recsys.cli import main

        # `recsys recommend` keeps a copy of the batch lists beside the champion's local copy.
        assert main(["recommend", "--user", str(other), "--json"]) == 0
        before = {
            "store": ingest.read_store(world["store"]),
            "segments": _segment_entries(world["home"], victim),
            "recs": pd.read_parquet(RunFolder(RUN_1).file("recommendations.parquet")),
            "served": registry.recommend_for_users([victim, other], k=K),
        }
        entry = forget_user(
            victim,
            reason=f"user {victim} asked by e-mail (ticket 12{victim}9)",
            now=NOW + 60,
            cache_prefix=prefix,
        )
        yield {
            "victim": victim,
            "other": other,
            "before": before,
            "entry": entry,
            "keys": keys,
            "client": client,
            "prefix": prefix,
        }
    for key in keys["victim"] + keys["others"]:
        client.delete(key)


def _segment_entries(home, user) -> int:
    """Entries of ``user`` in the ``user_segments`` of every pickled chain under ``home``."""
    import pickle

    return sum(
        sum(
            str(u) == str(user)
            for seg in pickle.loads(p.read_bytes()).user_segments.values()
            for u in seg
        )
        for p in home.rglob("cold_start.pkl")
    )


def test_the_users_rows_leave_every_store_partition_and_no_other_row_does(world, forgotten):
    victim = forgotten["victim"]
    old = forgotten["before"]["store"].interactions
    new = ingest.read_store(world["store"]).interactions
    theirs = int((old[USER_COL] == victim).sum())
    assert theirs > 0
    assert len(new) == len(old) - theirs
    assert (new[USER_COL] == victim).sum() == 0
    expected = old[old[USER_COL] != victim].sort_values(list(old.columns)).reset_index(drop=True)
    assert new.sort_values(list(new.columns)).reset_index(drop=True).equals(expected)
    counts = forgotten["entry"]["counts"]["store"]
    assert counts == {
        "before": len(old),
        "removed": theirs,
        "after": len(old) - theirs,
        "files": 3,  # the base data set and both batches held them
    }
    # The manifest agrees with the files, and remembers what was erased.
    assert ingest.store_rows(world["store"]) == len(new)
    assert ingest.erased_rows(world["store"]) == theirs


def test_the_users_demographics_are_gone_and_everyone_elses_stay(world, forgotten):
    old = forgotten["before"]["store"].users
    new = ingest.read_store(world["store"]).users
    assert forgotten["victim"] in set(old[USER_COL])
    assert forgotten["victim"] not in set(new[USER_COL])
    assert len(new) == len(old) - 1
    assert forgotten["entry"]["counts"]["demographics"] == {
        "before": len(old),
        "removed": 1,
        "after": len(old) - 1,
    }


def test_the_latest_batch_recommendations_lose_the_user_only(world, forgotten):
    from recsys.pipeline import RunFolder

    old = forgotten["before"]["recs"]
    new = pd.read_parquet(RunFolder(RUN_1).file("recommendations.parquet"))
    theirs = int((old[USER_COL] == forgotten["victim"]).sum())
    assert theirs == K
    assert len(new) == len(old) - K
    assert forgotten["victim"] not in set(new[USER_COL])
    # K from the run's lists, K from the serving copy of the same lists.
    assert forgotten["entry"]["counts"]["recommendations"]["removed"] == 2 * K


def test_every_run_folder_copy_of_the_user_is_erased(world, forgotten):
    from recsys.data.erasure import count_rows

    folder = world["home"] / "runs" / RUN_1
    assert count_rows(sorted(folder.rglob("*.parquet")), [forgotten["victim"]]) == 0
    assert forgotten["entry"]["counts"]["run_folders"]["removed"] > 0


def test_the_serving_copy_of_the_batch_lists_loses_the_user_too(world, forgotten):
    (copy,) = (world["home"] / "serving").glob("*/*/batch.parquet")
    lists = pd.read_parquet(copy)
    assert forgotten["victim"] not in set(lists[USER_COL])
    assert forgotten["other"] in set(lists[USER_COL])
    # Both the run's recommendations and the serving copy held K rows of theirs.
    assert forgotten["entry"]["counts"]["recommendations"]["files"] == 2


def test_their_demographic_segment_leaves_every_pickled_cold_start_chain(world, forgotten):
    assert forgotten["before"]["segments"] > 0
    assert _segment_entries(world["home"], forgotten["victim"]) == 0
    removed = forgotten["entry"]["counts"]["run_folders"]["cold_start_segments"]
    assert removed == forgotten["before"]["segments"]


def test_the_serving_cache_entries_of_the_user_are_deleted_across_versions(forgotten):
    client = forgotten["client"]
    assert [client.exists(k) for k in forgotten["keys"]["victim"]] == [0, 0, 0]
    assert [client.exists(k) for k in forgotten["keys"]["others"]] == [1, 1, 1]
    assert forgotten["entry"]["counts"]["cache"] == {"reachable": True, "deleted": 3}


def test_the_champion_answers_the_forgotten_user_through_the_cold_start_path(world, forgotten):
    from recsys import registry

    victim, other = forgotten["victim"], forgotten["other"]
    before = forgotten["before"]["served"]
    assert set(before.loc[before[USER_COL] == victim, "served_by"]) == {"model"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(world["home"]))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world['tmp'] / 'mlflow.db'}")
        after = registry.recommend_for_users([victim, other, "7"], k=K)
    by_user = after.groupby(USER_COL, sort=False)["served_by"].agg(set).to_dict()
    # Their stored demographics are not used either: global popularity, not their segment.
    assert by_user[victim] == {"global"}
    assert by_user[other] == {"model"}
    assert (after[USER_COL] == victim).sum() == K


def test_recsys_recommend_answers_the_forgotten_user_from_the_local_copy_as_a_stranger(
    world, forgotten, capsys
):
    from recsys.cli import main

    for user, expected in ((forgotten["victim"], {"global"}), (forgotten["other"], {"batch"})):
        assert main(["recommend", "--user", str(user), "--k", str(K), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert len(answer) == K and {row["served_by"] for row in answer} == expected


def test_the_audit_entry_exists_and_holds_no_id(world, forgotten):
    victim = forgotten["victim"]
    text = (world["home"] / "privacy" / "audit.jsonl").read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert len(entries) == 1
    entry = entries[0]
    assert entry == forgotten["entry"]
    assert re.fullmatch(r"[0-9a-f]{32}", entry["subject"])
    assert entry["at"] == NOW + 60
    assert entry["reason"] == "user [user] asked by e-mail (ticket 12" + str(victim) + "9)"
    assert entry["counts"]["store"]["removed"] > 0
    assert set(entry) == {"subject", "at", "reason", "pseudonymised", "counts"}
    # No text in the entry names the user: the only strings are the subject, the
    # redacted reason (its ticket number merely contains the id) and the count names.
    strings = list(_strings(entry))
    assert strings and all(not re.search(rf"(?<![\w-]){victim}(?![\w-])", t) for t in strings)
    assert entry["subject"] != str(victim)


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_the_next_training_run_is_trained_without_the_user(world, forgotten):
    from recsys import pipeline, registry
    from recsys.pipeline import PipelineOptions, RunFolder, run_pipeline

    victim = forgotten["victim"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(world["home"]))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world['tmp'] / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (world["tmp"] / "artifacts").as_uri())
        mp.setenv("RECSYS_DATA_PATH", str(world["store"]))
        counts = pipeline.new_interactions(str(world["store"]))
        assert counts["new"] == 0  # nothing arrived; the erasure does not make it negative
        summary = run_pipeline(
            PipelineOptions(data_path=str(world["store"]), models=MODELS, k=K), RUN_2
        )
        assert victim not in set(RunFolder(RUN_2).train()[USER_COL])
        version = summary["decision"]["candidate_version"]
        registry.promote_manually(version, "the model that never saw the forgotten user")
        served = registry.load_model(registry.champion_uri()).unwrap_python_model().served()
        assert registry.get_champion()["version"] == version
        trained_on = set(RunFolder(RUN_2).train()[USER_COL])
    assert served.id_map.user_index([victim])[0] == -1
    assert served.X.shape[0] == served.id_map.n_users == len(trained_on)


def test_forgetting_again_removes_nothing_more_and_says_so(world, forgotten):
    from recsys.pipeline.privacy import forget_user

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(world["home"]))
        mp.setenv("RECSYS_DATA_PATH", str(world["store"]))
        mp.setenv("RECSYS_REDIS_URL", REDIS_URL)
        again = forget_user(forgotten["victim"], now=NOW + 120, cache_prefix=forgotten["prefix"])
    assert again["subject"] == forgotten["entry"]["subject"]
    assert again["counts"]["store"]["removed"] == 0
    assert again["counts"]["demographics"]["removed"] == 0
    assert again["counts"]["recommendations"]["removed"] == 0


def test_recsys_forget_prints_the_counts_before_and_after(world, forgotten, capsys):
    from recsys.cli import main

    store = ingest.read_store(world["store"]).interactions
    someone = int(store[USER_COL].value_counts().index[-1])
    theirs = int((store[USER_COL] == someone).sum())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(world["home"]))
        mp.setenv("RECSYS_DATA_PATH", str(world["store"]))
        mp.delenv("RECSYS_REDIS_URL", raising=False)  # and nothing listens at the default
        mp.setattr("recsys.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")
        assert main(["forget", "--user", str(someone), "--reason", "asked"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "interaction store" in x)
    assert line.split() == [
        "interaction",
        "store",
        "before",
        f"{len(store):,}",
        "removed",
        f"{theirs:,}",
        "after",
        f"{len(store) - theirs:,}",
        *line.split()[8:],
    ]
    assert "demographics" in out and "removed      1" in out
    assert "no cache reachable (RECSYS_REDIS_URL is not set)" in out
    assert "cold-start path" in out and "audit:" in out
    assert len(ingest.read_store(world["store"]).interactions) == len(store) - theirs
