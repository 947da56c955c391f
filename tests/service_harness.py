"""A tiny registered model with versions to serve, a Redis to cache in, a free port.

Used by ``test_service.py`` (the app in-process) and ``test_service_process.py``
(``recsys serve`` as a real process). Everything is made here in seconds: a
synthetic data set of 120 users × 60 items, EASE as version 1 (champion) and
item-kNN as version 2, each logged with ``registry.log_model_run`` exactly as
a training run logs it, with the cold-start chain fitted on the items and
users tables (genres, segments).
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

REDIS_URL = "redis://127.0.0.1:6379/14"
MODEL = "recsys-serve-tests"


@dataclass
class Store:
    """A throw-away MLflow store holding :data:`MODEL` v1 (champion) and v2."""

    root: Path
    uri: str
    env: dict[str, str]
    data: object
    users: list
    items: list
    served: dict[int, object]


def build_store(root: Path, *, pseudonym_key: str | None = None) -> Store:
    """Train and register the two versions under ``root`` (env vars set by the caller)."""
    from recsys import registry
    from recsys.data.generate import generate_dataset
    from recsys.data.prepare import pseudonymise_ids
    from recsys.ids import IdMap
    from recsys.models import make_model
    from recsys.models.base import FitContext
    from recsys.serving.coldstart import fit_cold_start
    from recsys.serving.served import ServedRecommender

    data = generate_dataset(120, 60, 3000, seed=5)
    train, users_table = data.interactions, data.users
    if pseudonym_key:
        train = train.assign(user_id=pseudonymise_ids(train["user_id"], pseudonym_key))
        users_table = users_table.assign(
            user_id=pseudonymise_ids(users_table["user_id"], pseudonym_key)
        )
    id_map = IdMap.from_frame(train, extra_items=data.items["item_id"])
    X = id_map.to_matrix(train, weight_col=None)
    chain = fit_cold_start(train, data.items, users_table, id_map=id_map, min_segment_users=5)
    context = FitContext(items=data.items, users=users_table, item_ids=id_map.items)
    served = {}
    for version, (name, params) in enumerate(
        [("ease", {"l2": 50.0}), ("itemknn", {"k_neighbours": 20})], start=1
    ):
        model = make_model(name, **params).fit(X, context)
        info = registry.log_model_run(
            model,
            id_map=id_map,
            train_matrix=X,
            params=params,
            metrics={"ndcg@10": 0.1 * version},
            split_info={"method": "none"},
            data_hash="serve-tests",
            run_name=f"serve-{name}",
            k=10,
            cold_start=chain,
        )
        assert registry.register_model(info.run_id, MODEL) == version
        served[version] = ServedRecommender(model, id_map, X, chain)
    registry.promote_manually(1, "first champion of the serving tests", MODEL)
    registry.mark_challenger(MODEL, 2)
    return Store(
        root=root,
        uri="",
        env={},
        data=data,
        users=list(data.interactions["user_id"].unique()),
        items=list(id_map.items),
        served=served,
    )


@contextlib.contextmanager
def store_env(root: Path, **extra: str) -> Iterator[dict[str, str]]:
    """The variables that point recsys at a store under ``root``."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RECSYS_ARTIFACT_ROOT": (root / "artifacts").as_uri(),
        "RECSYS_HOME": str(root / "home"),
        "RECSYS_EXPERIMENT": "serve-tests",
        **extra,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


def batch_lists(store: Store, version: int, users: list, k: int = 10) -> pd.DataFrame:
    """What the batch task would write for ``users`` (the served model's lists)."""
    return store.served[version].recommend(pd.DataFrame({"user_id": users}), k)


def redis_or_skip() -> object:
    """A client on the tests' Redis database, or skip the test that needs it."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    return client


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def drop_prefix(client: object, prefix: str) -> None:
    """Delete every key the test wrote."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
