"""Pseudonymous runs: with RECSYS_PSEUDONYM_KEY set no user id is stored, yet
users are served under their own ids."""

from __future__ import annotations

import json
import re
import uuid

import pandas as pd
import pytest

from recsys import registry
from recsys.constants import USER_COL
from recsys.data.prepare import pseudonymise_ids

KEY = "test-key-not-for-production"
RUN_KEY = "pseudonymous-run"
CACHE_URL = "redis://127.0.0.1:6379/14"
CACHE_PREFIX = f"privacy-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, run_pipeline

    tmp = tmp_path_factory.mktemp("privacy")
    data = generate_dataset(100, 50, 2500, seed=11)
    source = write_dataset(data, tmp / "source")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(tmp / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (tmp / "artifacts").as_uri())
        mp.setenv("RECSYS_PSEUDONYM_KEY", KEY)
        mp.setenv("RECSYS_DATA_PATH", str(source))  # the deployment's data: model "recsys"
        # The recommend step also caches the lists for the service (skipped, with a
        # warning, when no Redis answers there).
        mp.setenv("RECSYS_REDIS_URL", CACHE_URL)
        mp.setenv("RECSYS_CACHE_PREFIX", CACHE_PREFIX)
        summary = run_pipeline(
            PipelineOptions(data_path=str(source), models=("popularity", "itemknn"), k=5), RUN_KEY
        )
        yield {"summary": summary, "data": data, "folder": tmp / "home" / "runs" / RUN_KEY}
    _drop_cached(CACHE_URL, CACHE_PREFIX)


def _drop_cached(url: str, prefix: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    except redis.exceptions.RedisError:
        pass


def _ids(frame: pd.DataFrame) -> set:
    return set(frame[USER_COL].astype(str))


def test_nothing_a_run_stores_holds_a_user_id(run):
    real = _ids(run["data"].interactions) | _ids(run["data"].users)
    folder = run["folder"]
    stored = {
        "raw interactions": pd.read_parquet(folder / "raw" / "interactions.parquet"),
        "raw users": pd.read_parquet(folder / "raw" / "users.parquet"),
        "train": pd.read_parquet(folder / "train.parquet"),
        "test": pd.read_parquet(folder / "test.parquet"),
        "profiles": pd.read_parquet(folder / "features" / "user_profiles.parquet"),
        "recommendations": pd.read_parquet(folder / "recommendations.parquet"),
    }
    for name, frame in stored.items():
        ids = _ids(frame)
        assert not ids & real, name
        assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids), name
    # The users table and the interactions were given the same pseudonyms,
    # so demographics still join: every profile has an age.
    assert stored["profiles"]["age"].notna().all()
    assert run["summary"]["validation"]["pseudonymised"] is True


def test_a_user_is_served_under_their_own_id_by_the_pseudonymous_model(run):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{run['folder'].parents[2] / 'mlflow.db'}")
        mp.setenv("RECSYS_PSEUDONYM_KEY", KEY)
        user = run["data"].interactions[USER_COL].iloc[0]
        out = registry.recommend_for_users([user], k=5)
        assert out[USER_COL].tolist() == [user] * 5
        assert set(out["served_by"]) == {"model"}
        # The model itself knows only the pseudonym: asked for the raw id
        # without the mapping, it treats the user as new.
        raw = registry.recommend_for_users([str(user)], k=5, pseudonymise=False)
        assert set(raw["served_by"]) != {"model"}
        mapped = registry.recommend_for_users(
            pseudonymise_ids([user], KEY), k=5, pseudonymise=False
        )
        assert mapped["item_id"].tolist() == out["item_id"].tolist()


def test_the_cached_batch_lists_are_keyed_by_pseudonym_and_version(run):
    """What the recommend step puts in Redis for the service holds no user id either."""
    import redis

    client = redis.Redis.from_url(CACHE_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError:
        pytest.skip(f"no Redis at {CACHE_URL}")
    cached = run["summary"]["recommendations"]["cache"]
    version = run["summary"]["recommendations"]["model_version"]
    assert cached["keys_prefix"] == f"{CACHE_PREFIX}:recsys:v{version}:"
    keys = {k.decode() for k in client.scan_iter(match=f"{CACHE_PREFIX}:*")}
    users = {k.rsplit(":u:", 1)[1] for k in keys if ":u:" in k}
    assert len(users) == cached["users"] > 0
    assert all(re.fullmatch(r"[0-9a-f]{16}", u) for u in users)
    assert not users & _ids(run["data"].interactions)
    recs = pd.read_parquet(run["folder"] / "recommendations.parquet")
    user = recs[USER_COL].iloc[0]
    stored = json.loads(client.get(f"{CACHE_PREFIX}:recsys:v{version}:u:{user}"))
    assert stored["i"] == recs[recs[USER_COL] == user]["item_id"].tolist()
