"""Erasure at the file level: atomic rewrites, a crash that loses nothing, pseudonyms,
the served model's forgotten-users list and the cache's key convention."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.data import erasure, ingest

NOW = 1_800_000_000.0
VICTIM = 42


def _rows(users: list[int], start: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_COL: users,
            ITEM_COL: [100 + i for i in range(len(users))],
            RATING_COL: 4.0,
            TIME_COL: [start + i for i in range(len(users))],
        }
    )


@pytest.fixture
def store(tmp_path):
    """A store folder: a base data set (interactions and users) and three batches;
    the victim is in the base, in batches a and c, not in b."""
    from recsys.data import Dataset
    from recsys.data.loaders import write_dataset

    root = tmp_path / "store"
    users = pd.DataFrame({USER_COL: [1, 2, VICTIM], "age": [30, 40, 50], "gender": "F"})
    write_dataset(Dataset(_rows([1, VICTIM, 2, VICTIM], 1_700_000_000), users=users), root)
    landing = tmp_path / "landing"
    landing.mkdir()
    _rows([VICTIM, 1, 3], 1_700_001_000).to_csv(landing / "a.csv", index=False)
    _rows([3, 4], 1_700_002_000).to_csv(landing / "b.csv", index=False)
    _rows([5, VICTIM, VICTIM, 6], 1_700_003_000).to_csv(landing / "c.csv", index=False)
    ingest.ingest_landing(landing, root, tmp_path / "q", arrival="2026-11-01", now=NOW)
    return root


def _batch_file(store, source: str):
    manifest = ingest.read_manifest(store)
    return next(store / b["file"] for b in manifest["batches"].values() if b["source"] == source)


def test_erase_users_removes_exactly_the_users_rows_from_every_file(store):
    before = ingest.read_store(store)
    untouched = _batch_file(store, "b.csv")
    stamp = (untouched.read_bytes(), untouched.stat().st_mtime_ns)

    result = ingest.erase_users(store, [VICTIM])

    after = ingest.read_store(store)
    assert result == {
        "interactions": {"before": 13, "removed": 5, "after": 8, "files": 3},
        "users": {"before": 3, "removed": 1, "after": 2},
    }
    assert sorted(after.interactions[USER_COL]) == [1, 1, 2, 3, 3, 4, 5, 6]
    assert list(after.users[USER_COL]) == [1, 2]
    keep = before.interactions[before.interactions[USER_COL] != VICTIM]
    assert sorted(map(tuple, after.interactions.to_numpy())) == sorted(map(tuple, keep.to_numpy()))
    # A file without the user is not rewritten at all.
    assert (untouched.read_bytes(), untouched.stat().st_mtime_ns) == stamp
    assert ingest.store_rows(store) == 8
    assert ingest.erased_rows(store) == 5
    assert not list(store.rglob(f"*{erasure.PARTIAL_SUFFIX}"))


def test_a_crash_mid_way_loses_no_other_row_and_a_second_run_finishes(store, monkeypatch):
    """Regression guard: the rewrite must replace each file whole, never truncate it first."""
    others = 13 - 5
    real_replace = os.replace
    calls = {"n": 0}

    def crash_on_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk pulled out")
        return real_replace(src, dst)

    monkeypatch.setattr(erasure.os, "replace", crash_on_second)
    with pytest.raises(OSError, match="disk pulled out"):
        ingest.erase_users(store, [VICTIM])
    monkeypatch.setattr(erasure.os, "replace", real_replace)

    mid = ingest.read_store(store).interactions
    assert (mid[USER_COL] != VICTIM).sum() == others  # every other row is still there
    assert 0 < (mid[USER_COL] == VICTIM).sum() < 5  # one file done, the rest not yet
    assert not list(store.rglob(f"*{erasure.PARTIAL_SUFFIX}"))

    ingest.erase_users(store, [VICTIM])

    done = ingest.read_store(store)
    assert (done.interactions[USER_COL] == VICTIM).sum() == 0
    assert len(done.interactions) == others
    assert VICTIM not in set(done.users[USER_COL])
    assert ingest.store_rows(store) == others
    # The rows the interrupted attempt removed from a batch are counted too.
    assert ingest.erased_rows(store) >= 3


def test_ids_match_as_text_and_a_table_keyed_by_its_index_keeps_its_index(tmp_path):
    path = tmp_path / "per_user.parquet"
    frame = pd.DataFrame({"ndcg": [0.1, 0.2, 0.3]}, index=pd.Index([7, 8, 9], name=USER_COL))
    frame.to_parquet(path)

    done = erasure.erase_rows(path, ["8"])

    assert (done.before, done.removed, done.after) == (3, 1, 2)
    back = pd.read_parquet(path)
    assert back.index.name == USER_COL and list(back.index) == [7, 9]
    assert list(back["ndcg"]) == [0.1, 0.3]


def test_a_pseudonymous_deployment_erases_pseudonyms_in_run_folders_and_ids_in_the_store(
    store, tmp_path, monkeypatch
):
    from recsys.data.prepare import pseudonymise_ids
    from recsys.pipeline.privacy import forget_user

    key = "erasure-test-key"
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", key)
    monkeypatch.delenv("RECSYS_REDIS_URL", raising=False)  # no cache named: may be absent
    monkeypatch.setattr("recsys.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")
    victim, other = pseudonymise_ids([VICTIM, 1], key)
    run = tmp_path / "home" / "runs" / "r1"
    run.mkdir(parents=True)
    recs = pd.DataFrame({USER_COL: [victim] * 3 + [other] * 3, ITEM_COL: [1, 2, 3] * 2})
    recs.to_parquet(run / "recommendations.parquet", index=False)

    entry = forget_user(VICTIM, reason=f"asked: {VICTIM}", data_path=store, now=NOW)

    assert list(pd.read_parquet(run / "recommendations.parquet")[USER_COL]) == [other] * 3
    assert entry["counts"]["recommendations"] == {
        "before": 6,
        "removed": 3,
        "after": 3,
        "files": 1,
    }
    assert entry["counts"]["store"]["removed"] == 5
    assert entry["pseudonymised"] is True
    assert entry["counts"]["cache"] == {"reachable": False, "deleted": 0}
    assert entry["reason"] == "asked: [user]"
    text = (tmp_path / "home" / "privacy" / "audit.jsonl").read_text()
    assert victim not in text and f": {VICTIM}" not in text


def test_forget_refuses_data_it_cannot_rewrite_before_changing_anything(tmp_path, monkeypatch):
    from recsys.errors import InputError
    from recsys.pipeline.privacy import forget_user

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    source = tmp_path / "ratings.csv"
    _rows([1, VICTIM], 1_700_000_000).to_csv(source, index=False)
    with pytest.raises(InputError, match="erase the user at the source"):
        forget_user(VICTIM, data_path=source)
    assert not (tmp_path / "home" / "privacy").exists()


def _served(tmp_path, users: list[int]):
    import scipy.sparse as sp

    from recsys.data.forgotten import ForgottenUsers
    from recsys.ids import IdMap
    from recsys.models import make_model
    from recsys.serving.served import ServedRecommender

    id_map = IdMap(pd.Index(users, name=USER_COL), pd.Index(range(10), name=ITEM_COL))
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((len(users), 10)) > 0.5).astype(np.float32))
    model = make_model("popularity").fit(X)
    return ServedRecommender(model, id_map, X, forgotten=ForgottenUsers(tmp_path / "privacy"))


def test_the_served_model_answers_a_forgotten_user_as_unknown_from_the_next_request(tmp_path):
    served = _served(tmp_path, [1, 2, 3])
    request = pd.DataFrame({USER_COL: ["2", 3]})
    assert set(served.recommend(request, 3)["served_by"]) == {"model"}

    served.forgotten.add(2, at=NOW)  # the same list, written by another process

    answer = served.recommend(request, 3)
    by_user = answer.groupby(USER_COL, sort=False)["served_by"].agg(set).to_dict()
    assert by_user == {"2": {"global"}, 3: {"model"}}
    assert list(answer[USER_COL].unique()) == ["2", 3]  # ids as given, in input order


def test_the_forgotten_list_holds_salted_hashes_only(tmp_path, monkeypatch):
    from recsys.data.forgotten import ForgottenUsers

    monkeypatch.delenv("RECSYS_FORGET_SALT", raising=False)
    forgotten = ForgottenUsers(tmp_path / "privacy")
    subject = forgotten.add("alice@example.org", at=NOW)
    text = forgotten.path.read_text()
    assert "alice" not in text and subject in text
    assert forgotten.mask(["alice@example.org", "bob"]).tolist() == [True, False]
    assert (tmp_path / "privacy" / "salt").stat().st_mode & 0o077 == 0
    # Another salt, another hash: without the salt the list cannot be checked against ids.
    monkeypatch.setenv("RECSYS_FORGET_SALT", "another")
    assert ForgottenUsers(tmp_path / "other").subject("alice@example.org") != subject


def test_the_cache_purge_deletes_only_the_users_keys_by_the_convention():
    redis = pytest.importorskip("redis")
    from recsys.serving.forget import cache_key, purge_cached_lists

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"recsys-test-{uuid.uuid4().hex[:8]}:recs"
    mine = [cache_key("m", v, "a*b", prefix=prefix) for v in (1, 2, 30)]
    theirs = [
        cache_key("m", 1, "xa*b", prefix=prefix),
        cache_key("m", 1, "a1b", prefix=prefix),  # a glob would match
        f"{prefix}:m:latest:u:a*b",  # not a version
    ]
    try:
        for key in mine + theirs:
            client.set(key, "x", ex=60)
        assert purge_cached_lists(["a*b"], url="", prefix=prefix, client=client) == 3
        assert [client.exists(k) for k in mine + theirs] == [0, 0, 0, 1, 1, 1]
    finally:
        client.delete(*(mine + theirs))


def test_a_cache_that_was_named_but_is_down_is_an_error(tmp_path):
    from recsys.serving.forget import CacheError, purge_cached_lists

    with pytest.raises(CacheError, match="unreachable"):
        purge_cached_lists(["1"], url="redis://:secret@127.0.0.1:1/0")
    try:
        purge_cached_lists(["1"], url="redis://:secret@127.0.0.1:1/0")
    except CacheError as exc:
        assert "secret" not in str(exc)


def test_copies_of_landed_batches_lose_the_user_and_foreign_tables_are_counted(
    store, tmp_path, monkeypatch
):
    from recsys.pipeline.privacy import forget_user

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_LANDING", str(tmp_path / "landing"))
    monkeypatch.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("RECSYS_REDIS_URL", raising=False)
    monkeypatch.setattr("recsys.config.DEFAULT_REDIS_URL", "redis://127.0.0.1:1/0")
    held = tmp_path / "home" / "quarantine" / "bad" / "batch"
    held.mkdir(parents=True)
    (held / "rows.tsv").write_text(f"user_id\titem_id\trating\n{VICTIM}\t1\t 99\n7\t2\tx\n")
    (held / "foreign.csv").write_text(f"uid,iid\n{VICTIM},1\n")
    done = tmp_path / "landing" / "_ingested"

    entry = forget_user(VICTIM, data_path=store, now=NOW)

    assert entry["counts"]["landed_copies"] == {"removed": 3 + 1, "files": 3, "skipped": 1}
    # a.csv (1 row) and c.csv (2 rows) lost the victim; the quarantined TSV kept its raw text.
    # each processed batch lies in a claim folder of its own: _ingested/<claim>/<name>
    (a,), (c,) = done.glob("*/a.csv"), done.glob("*/c.csv")
    assert pd.read_csv(a)[USER_COL].tolist() == [1, 3]
    assert pd.read_csv(c)[USER_COL].tolist() == [5, 6]
    assert (held / "rows.tsv").read_text() == "user_id\titem_id\trating\n7\t2\tx\n"
    assert (held / "foreign.csv").read_text() == f"uid,iid\n{VICTIM},1\n"  # left, and counted


def test_drop_forgotten_leaves_out_listed_users_rows(tmp_path):
    from recsys.data.forgotten import ForgottenUsers, drop_forgotten

    forgotten = ForgottenUsers(tmp_path / "privacy")
    frame = _rows([1, VICTIM, 2, VICTIM], 0)
    assert drop_forgotten(frame, forgotten) == (frame, 0)
    forgotten.add(str(VICTIM), at=NOW)
    kept, removed = drop_forgotten(frame, forgotten)
    assert removed == 2 and kept[USER_COL].tolist() == [1, 2]
