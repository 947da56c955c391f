"""The Redis cache of the batch lists: each user's top-K, keyed by model version.

The ``recommend`` step writes the champion's batch top-K here
(:func:`write_batch`) beside ``recommendations.parquet``; the service
(:mod:`recsys.service`) answers from it first (:class:`BatchCache`). This is
the only module that speaks to Redis.

Layout, for registered model ``NAME`` and version ``V``:

- ``<prefix>:NAME:v<V>:u:<user_id>``: one user's list, JSON
  ``{"i": [item ids, best first], "s": [scores]}`` (ids keep their JSON type);
- ``<prefix>:NAME:v<V>:meta``: JSON ``{"users", "k", "written_at"}``, written
  last, so a version whose meta exists was written whole.

Keys are per version, so a moved alias reads the lists of its own version and
a rollback finds its old lists still there (until they expire: ``ttl_s``).
User ids are stored as the models know them: pseudonyms when
``RECSYS_PSEUDONYM_KEY`` is set.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "recsys"
#: How long a version's lists stay (30 days): enough for any rollback that matters.
DEFAULT_TTL_S = 30 * 24 * 3600
_BATCH = 1000


@dataclass(frozen=True)
class CachedList:
    """One user's batch list, best first."""

    items: list[Any]
    scores: list[float]


def user_key(prefix: str, model: str, version: int, user_id: object) -> str:
    """The key of one user's list (``user_id`` as the model knows it)."""
    return f"{prefix}:{model}:v{int(version)}:u:{user_id}"


def meta_key(prefix: str, model: str, version: int) -> str:
    """The key that says a version's lists were written whole."""
    return f"{prefix}:{model}:v{int(version)}:meta"


def connect(url: str, *, timeout_s: float = 0.5) -> Any:
    """A Redis client for ``url`` (``redis://[:password@]host:port/db``), short timeouts."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def write_batch(
    recs: pd.DataFrame,
    model: str,
    version: int,
    url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    ttl_s: int = DEFAULT_TTL_S,
) -> dict[str, Any]:
    """Write every user's list of ``recs`` for ``model`` ``version``, then its meta.

    Args:
        recs: the long table ``user_id, item_id, score, rank`` (the batch lists).
        model: the registered model.
        version: the version that produced them.
        url: the Redis URL.
        prefix: first part of every key.
        ttl_s: seconds until the lists expire.

    Returns:
        ``{"users", "k", "keys_prefix"}``.

    Raises:
        redis.exceptions.RedisError: Redis cannot be reached or refused a write.
    """
    client = connect(url, timeout_s=5.0)
    ordered = recs.sort_values([USER_COL, RANK_COL], kind="stable")
    users = 0
    pipe = client.pipeline(transaction=False)
    for user, group in ordered.groupby(USER_COL, sort=False):
        value = {"i": _plain(group[ITEM_COL]), "s": [float(s) for s in group[SCORE_COL]]}
        pipe.set(user_key(prefix, model, version, user), json.dumps(value), ex=ttl_s)
        users += 1
        if users % _BATCH == 0:
            pipe.execute()
    pipe.execute()
    k = int(ordered[RANK_COL].max()) if len(ordered) else 0
    meta = {"users": users, "k": k, "written_at": time.time()}
    client.set(meta_key(prefix, model, version), json.dumps(meta), ex=ttl_s)
    log.info("cached the batch lists of %s version %s: %d users, k=%d", model, version, users, k)
    return {"users": users, "k": k, "keys_prefix": f"{prefix}:{model}:v{int(version)}:"}


def _plain(values: pd.Series) -> list[Any]:
    """Ids as JSON keeps them (numpy ints become ints)."""
    return [v.item() if hasattr(v, "item") else v for v in values.tolist()]


class BatchCache:
    """Reads the batch lists for the service (asyncio, one connection pool).

    Args:
        url: the Redis URL.
        prefix: first part of every key (as written).
        timeout_s: per-call socket timeout; a slow Redis is a miss, not a slow answer.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 0.05) -> None:
        import redis.asyncio

        self.prefix = prefix
        self.client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def get(self, model: str, version: int, user_id: object) -> CachedList | None:
        """The user's list for that version, or ``None`` (not cached).

        Raises:
            redis.exceptions.RedisError: Redis cannot be reached or timed out.
        """
        raw = await self.client.get(user_key(self.prefix, model, version, user_id))
        if raw is None:
            return None
        value = json.loads(raw)
        return CachedList(items=value["i"], scores=value["s"])

    async def meta(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's meta (``users``, ``k``, ``written_at``), or ``None``."""
        raw = await self.client.get(meta_key(self.prefix, model, version))
        return None if raw is None else json.loads(raw)

    async def ping(self) -> bool:
        """Whether Redis answers now."""
        try:
            return bool(await self.client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not now"
            return False

    async def close(self) -> None:
        await self.client.aclose()
