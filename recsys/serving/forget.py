"""Serving's side of the right to erasure: the forgotten-users list and the cache purge.

- :class:`ForgottenUsers`: the users a forget request named, kept as salted
  hashes (HMAC-SHA256 under a secret salt), never as ids. The served model
  (:class:`recsys.serving.served.ServedRecommender`) consults it on every
  request: a listed user is answered as a user the model never saw (the
  cold-start chain, without their stored demographics), so the champion
  trained before the request stops serving them personalised lists at once.
  The next champion, trained without their rows, does not know them anyway.
  The list is a small JSON file; a reader re-reads it only when it changed.
- :func:`purge_cached_lists`: deletes the serving cache's entries of a user
  from Redis, for every model and version. The cache's keys follow one
  convention, ``recsys:recs:<model name>:<model version>:<user key>``, the
  user key being the id as text or, with pseudonymisation on, its pseudonym.

Ids are hashed through ``str(id)``, like pseudonyms, so ``7`` and ``"7"``
are one user.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recsys import config
from recsys.errors import InputError

log = logging.getLogger(__name__)

FORGOTTEN_FILE = "forgotten.json"
SALT_FILE = "salt"
#: Hex characters of a subject (a salted hash): 128 bits.
SUBJECT_LENGTH = 32
#: The serving cache's key prefix: ``recsys:recs:<model>:<version>:<user key>``.
CACHE_PREFIX = "recsys:recs"


class CacheError(InputError):
    """The serving cache named by ``RECSYS_REDIS_URL`` cannot be reached."""


class ForgottenUsers:
    """The forgotten-users list kept in ``folder`` (default :func:`recsys.config.privacy_dir`).

    Holds one salted hash per forgotten user (the ids as the models store
    them: pseudonyms when pseudonymisation is on) and when each was forgotten.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else config.privacy_dir()
        self._seen: tuple[int, int, int] | None = None
        self._subjects: frozenset[str] = frozenset()
        self._salt: bytes | None = None

    @property
    def path(self) -> Path:
        return self.folder / FORGOTTEN_FILE

    def subject(self, user_id: object) -> str:
        """The salted hash that stands for ``user_id`` in the list and the audit."""
        return _subject(self._salt_bytes(create=True), user_id)

    def subjects(self) -> frozenset[str]:
        """Every subject on the list (re-read only when the file changed)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._subjects = None, frozenset()
            return self._subjects
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._subjects = frozenset(self._read()["subjects"])
            self._seen = seen
        return self._subjects

    def __len__(self) -> int:
        return len(self.subjects())

    def mask(self, user_ids: Iterable[object]) -> np.ndarray:
        """For each of ``user_ids`` (as the model stores them), whether it is forgotten."""
        ids = list(user_ids)
        subjects = self.subjects()
        if not subjects:
            return np.zeros(len(ids), dtype=bool)
        salt = self._salt_bytes(create=False)
        return np.array([_subject(salt, u) in subjects for u in ids], dtype=bool)

    def add(self, user_id: object, *, at: float) -> str:
        """Put ``user_id`` on the list (again: keeps the first time); returns its subject."""
        subject = self.subject(user_id)
        record = self._read()
        record["subjects"].setdefault(subject, {"forgotten_at": float(at)})
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{FORGOTTEN_FILE}.tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
        return subject

    def _read(self) -> dict[str, Any]:
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"subjects": {}}
        record.setdefault("subjects", {})
        return record

    def _salt_bytes(self, *, create: bool) -> bytes:
        if self._salt is None:
            self._salt = config.forget_salt() or _stored_salt(self.folder, create=create)
        return self._salt


def _subject(salt: bytes, user_id: object) -> str:
    return hmac.new(salt, str(user_id).encode(), hashlib.sha256).hexdigest()[:SUBJECT_LENGTH]


def _stored_salt(folder: Path, *, create: bool) -> bytes:
    """The random salt kept in ``folder/salt`` (readable by its owner only), made once."""
    path = folder / SALT_FILE
    if not path.is_file():
        if not create:
            raise InputError(f"{path} is missing: the forgotten-users list cannot be read")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_bytes()
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_bytes()


_LISTS: dict[Path, ForgottenUsers] = {}


def default_list() -> ForgottenUsers:
    """The deployment's list (one instance per :func:`recsys.config.privacy_dir`)."""
    folder = config.privacy_dir()
    if folder not in _LISTS:
        _LISTS[folder] = ForgottenUsers(folder)
    return _LISTS[folder]


# ------------------------------------------------------------------ the cache
def cache_key(model: str, version: int | str, user_key: str) -> str:
    """The serving cache's key of one user's list from one model version."""
    return f"{CACHE_PREFIX}:{model}:{version}:{user_key}"


def _glob_escaped(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _is_key_of(key: str, user_key: str, prefix: str) -> bool:
    """``key`` is ``<prefix>:<model>:<version>:<user_key>`` exactly (the SCAN pattern's ``*``
    would also match a longer user key ending the same way)."""
    head, tail = f"{prefix}:", f":{user_key}"
    if not (key.startswith(head) and key.endswith(tail)) or len(key) <= len(head) + len(tail):
        return False
    model, _, version = key[len(head) : -len(tail)].rpartition(":")
    return bool(model) and version.isdigit()


def purge_cached_lists(
    user_keys: Iterable[str], *, url: str, prefix: str = CACHE_PREFIX, client: Any = None
) -> int:
    """Delete every cached list of the users ``user_keys``, across models and versions.

    Args:
        user_keys: each user as the cache names them (the id as text, its pseudonym).
        url: the Redis URL (``redis://host:port/db``).
        prefix: the cache's key prefix (tests use their own).
        client: a ``redis.Redis`` to use instead of connecting to ``url``.

    Returns:
        How many keys were deleted.

    Raises:
        CacheError: Redis cannot be reached.
    """
    import redis

    client = client or redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    deleted = 0
    try:
        for user_key in user_keys:
            pattern = f"{_glob_escaped(prefix)}:*:{_glob_escaped(user_key)}"
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
