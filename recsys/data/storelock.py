"""One writer at a time on an interaction store: an exclusive file lock.

Everything that changes a store's manifest or batch files holds this lock
while it does: ingest while it claims batches from the landing folder and
while it commits one (dedupe against the store, write, manifest), erasure
for its whole rewrite. Reads (training, monitoring) take no lock: every
file is swapped in whole, so a reader sees a batch entirely or not at all.

The lock is ``fcntl.flock`` on ``<store>/_store.lock``: the kernel drops it
when its holder exits, however it exits, so a killed ingest never leaves a
stale lock behind. It holds between processes on one host and on local
volumes shared between containers; on NFS it needs a server with lock
support (NFSv4). The holder writes its pid and purpose into the file, so a
process that waits in vain can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from recsys import config
from recsys.errors import StateError

log = logging.getLogger(__name__)

LOCK_FILE = "_store.lock"


class StoreLockedError(StateError):
    """Another process held the store's lock for longer than this one would wait."""


#: (lock path, thread) pairs this process holds now: the lock is re-entrant for its holder.
_HELD: set[tuple[str, int]] = set()


@contextlib.contextmanager
def store_lock(store: str | Path, purpose: str, timeout: float | None = None) -> Iterator[None]:
    """Hold ``store``'s exclusive lock for the ``with`` block (the folder is created).

    Args:
        purpose: what the holder does (``ingest``, ``erase``), shown to whoever waits.
        timeout: seconds to wait; ``None`` reads ``RECSYS_STORE_LOCK_TIMEOUT``
            (:func:`recsys.config.store_lock_timeout`).

    Raises:
        StoreLockedError: the lock stayed taken for ``timeout`` seconds; the
            message names the holder.
    """
    path = Path(store).resolve() / LOCK_FILE
    key = (str(path), threading.get_ident())
    if key in _HELD:  # re-entered by its holder (an ingest step calling ingest_batch)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    wait = config.store_lock_timeout() if timeout is None else timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait)
        _write_holder(fd, purpose)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    pause, told = 0.02, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"the interaction store {path.parent} is locked by {_holder(path)} "
                    f"(waited {wait:g}s): let it finish, or raise RECSYS_STORE_LOCK_TIMEOUT"
                ) from None
            if not told:
                log.info("waiting for %s, held by %s", path, _holder(path))
                told = True
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, 0.5)


def _write_holder(fd: int, purpose: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "purpose": purpose}).encode(), 0)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"process {info.get('pid')} ({info.get('purpose')})"
