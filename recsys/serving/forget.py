"""Serving's side of the right to erasure: the cache purge.

The served model consults the forgotten-users list
(:mod:`recsys.data.forgotten`) on every request; this module deletes a
forgotten user's entries from the serving cache in Redis, for every model and
version. The cache's keys are :func:`recsys.serving.cache.user_key`'s,
``<prefix>:<model name>:v<version>:u:<user key>``, the user key being the id
as text or, with pseudonymisation on, its pseudonym.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from recsys import config
from recsys.errors import InputError
from recsys.serving.cache import user_key as _user_key


class CacheError(InputError):
    """The serving cache named by ``RECSYS_REDIS_URL`` cannot be reached."""


# ------------------------------------------------------------------ the cache
def cache_key(model: str, version: int | str, user_key: str, prefix: str | None = None) -> str:
    """The serving cache's key of one user's list from one model version."""
    return _user_key(prefix or config.cache_prefix(), model, int(version), user_key)


def _glob_escaped(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _is_key_of(key: str, user_key: str, prefix: str) -> bool:
    """``key`` is ``<prefix>:<model>:v<version>:u:<user_key>`` exactly (the SCAN pattern's
    ``*`` would also match a longer user key ending the same way)."""
    head, tail = f"{prefix}:", f":u:{user_key}"
    if not (key.startswith(head) and key.endswith(tail)) or len(key) <= len(head) + len(tail):
        return False
    model, _, version = key[len(head) : -len(tail)].rpartition(":")
    return bool(model) and version.startswith("v") and version[1:].isdigit()


def purge_cached_lists(
    user_keys: Iterable[str], *, url: str, prefix: str | None = None, client: Any = None
) -> int:
    """Delete every cached list of the users ``user_keys``, across models and versions.

    Args:
        user_keys: each user as the cache names them (the id as text, its pseudonym).
        url: the Redis URL (``redis://host:port/db``).
        prefix: the cache's key prefix (default :func:`recsys.config.cache_prefix`).
        client: a ``redis.Redis`` to use instead of connecting to ``url``.

    Returns:
        How many keys were deleted.

    Raises:
        CacheError: Redis cannot be reached.
    """
    import redis

    prefix = prefix or config.cache_prefix()
    client = client or redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    deleted = 0
    try:
        for user_key in user_keys:
            pattern = f"{_glob_escaped(prefix)}:*:v*:u:{_glob_escaped(user_key)}"
            keys = [
                k
                for k in client.scan_iter(match=pattern, count=1000)
                if _is_key_of(k.decode() if isinstance(k, bytes) else k, user_key, prefix)
            ]
            for start in range(0, len(keys), 500):
                deleted += int(client.delete(*keys[start : start + 500]))
    except redis.exceptions.ConnectionError as exc:
        raise CacheError(
            f"the serving cache at {_without_password(url)} is unreachable: {exc}"
        ) from exc
    return deleted


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
