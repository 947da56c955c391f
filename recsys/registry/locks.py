"""Locks that let one process at a time change what several processes share.

Two things in the registry must never run twice at once:

- **promotion** of one registered model (:func:`model_lock`): reading the
  ``champion`` alias, deciding and moving it are one step; two training runs
  that reach ``promote`` together take turns;
- **the schema migration** of a fresh MLflow database (:func:`store_lock`):
  two first runs on one new SQLite file would both add the same columns.

Where the lock lives follows the store, so every process that shares the
store shares the lock:

- a Postgres database (``RECSYS_REGISTRY_LOCK_URL``, or the tracking URI when
  it is one): a session-level ``pg_advisory_lock`` keyed on the lock's name;
  it is released when the holder's connection ends, a killed holder included;
- otherwise a ``flock`` on a file beside the store (``<mlflow.db>.<name>.lock``
  for SQLite, inside the folder of a file store, ``<RECSYS_HOME>/locks`` for a
  tracking server with no lock database): the kernel releases it when the
  holder dies. A file lock serialises only processes that see the same file
  system (one host, or a shared volume).

A lock not granted within ``RECSYS_LOCK_TIMEOUT_S`` seconds (default 300)
raises :class:`LockTimeoutError`, which is worth retrying.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from recsys import config
from recsys.errors import RecsysError

log = logging.getLogger(__name__)

#: Seconds between two attempts to take a busy lock.
_POLL_S = 0.05


class LockTimeoutError(RecsysError, TimeoutError):
    """Another process held a registry lock for longer than ``RECSYS_LOCK_TIMEOUT_S``."""

    retryable = True


def model_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """Hold the promotion lock of registered model ``name`` for the ``with`` block."""
    return _lock(f"promote-{config.safe_name(name)}")


def store_lock() -> contextlib.AbstractContextManager[None]:
    """Hold the lock of the whole store (its schema migration) for the ``with`` block."""
    return _lock("migrate")


@contextlib.contextmanager
def _lock(what: str) -> Iterator[None]:
    url = lock_database_url()
    timeout = config.lock_timeout_s()
    if url:
        with _advisory_lock(url, what, timeout):
            yield
    else:
        with _file_lock(lock_file(what), timeout):
            yield


def lock_database_url() -> str | None:
    """The Postgres database whose advisory locks serialise promotions, or ``None``."""
    url = config.registry_lock_url() or config.tracking_uri()
    return url if urlparse(url).scheme.split("+")[0] in ("postgresql", "postgres") else None


def lock_file(what: str) -> Path:
    """The file a lock named ``what`` is taken on when no lock database is configured."""
    uri = config.tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:///") and ":memory:" not in uri:
        database = Path(unquote(uri.removeprefix("sqlite:///"))).expanduser()
        if not database.is_absolute():
            database = Path.cwd() / database
        return database.with_name(f"{database.name}.{what}.lock")
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path or uri)).expanduser() / f".recsys-{what}.lock"
    return config.recsys_home() / "locks" / f"{what}.lock"


def advisory_key(what: str) -> int:
    """The signed 64-bit key of lock ``what`` (``pg_advisory_lock`` takes a bigint)."""
    digest = hashlib.blake2b(f"recsys:{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeoutError(_busy(path.name, timeout, path)) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(url: str, what: str, timeout: float) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = advisory_key(what)
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
            deadline = time.monotonic() + timeout
            while not conn.execute(try_lock, {"key": key}).scalar():
                if time.monotonic() > deadline:
                    raise LockTimeoutError(_busy(what, timeout, "the lock database"))
                time.sleep(_POLL_S)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def _busy(what: str, timeout: float, where: object) -> str:
    return (
        f"the registry lock {what!r} ({where}) stayed busy for {timeout:g}s: another "
        "promotion or migration is running; retry, or raise RECSYS_LOCK_TIMEOUT_S"
    )
