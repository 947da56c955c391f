"""The forgotten-users list: who asked to be erased, kept as salted hashes, never as ids.

:class:`ForgottenUsers` holds one HMAC-SHA256 (under a secret salt,
:func:`recsys.config.forget_salt` or a random one kept beside the list) per
user a forget request named (:func:`recsys.pipeline.privacy.forget_user`),
with when. Ids are hashed as the models store them (pseudonyms when
pseudonymisation is on) and through ``str(id)``, like pseudonyms, so ``7``
and ``"7"`` are one user. The list is a small JSON file in
:func:`recsys.config.privacy_dir`; a reader re-reads it only when it changed.

It lives with the data because everything above consults it: the served
model (:class:`recsys.serving.served.ServedRecommender`) answers a listed
user as a stranger, monitoring counts a champion that still knows one as a
reason to retrain, and ingest may drop new rows of a listed user
(:func:`drop_forgotten`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import config
from recsys.constants import USER_COL
from recsys.errors import InputError

FORGOTTEN_FILE = "forgotten.json"
SALT_FILE = "salt"
#: Hex characters of a subject (a salted hash): 128 bits.
SUBJECT_LENGTH = 32


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


def drop_forgotten(
    interactions: pd.DataFrame, forgotten: ForgottenUsers | None = None, col: str = USER_COL
) -> tuple[pd.DataFrame, int]:
    """``interactions`` without the rows of forgotten users (ids as the list holds them),
    and how many rows that removed."""
    forgotten = forgotten or default_list()
    if not len(forgotten):
        return interactions, 0
    codes, uniques = pd.factorize(interactions[col], use_na_sentinel=False)
    hit = forgotten.mask(uniques)[codes]
    return interactions[~hit], int(hit.sum())
