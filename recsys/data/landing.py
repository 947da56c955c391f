"""The landing folder's side of ingest: which batches are complete, and claiming them.

A file or folder in the landing folder is one batch. It is **complete**, and
may be claimed, when

- a marker says so: ``<name>.done`` beside it (an empty file the writer
  creates once ``<name>`` is whole), or a ``_SUCCESS`` file inside a folder
  batch (what Spark and Hadoop writers leave); or
- nothing in it changed for the settle window: its newest modification time
  is at least ``settle_seconds`` old, and its size and modification times are
  the same when it is claimed as when it was first looked at.

A writer that may pause for longer than the settle window must use a marker,
or write under a name starting with ``.`` or ``_`` (never looked at) and
rename it when done. Names ending in ``.done`` are markers, never batches.

Claiming moves a batch (and its marker) to ``_ingested/_claimed/<claim>/``
with a rename, under the store's lock, so two ingests never take the same batch;
the claim id is unique, so a batch dropped again under a name already seen
never collides with the first. A batch that changes after it was claimed
(its writer went on writing into the renamed file) is not committed: its
claim is let go and a later run takes it once it has settled. The claiming
process holds a lock on ``_ingested/_claimed/<claim>.lock`` while it works;
a claim whose lock nobody holds (its process was killed, or let it go) is
taken over by the next ingest. A finished claim moves
on to ``_ingested/<claim>/``.

Symbolic links are claimed like any batch (the rename moves the link, not
its target) and are then refused by ingest: nothing follows them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CLAIMED = "_claimed"
DONE = "_ingested"
SUCCESS_MARKER = "_SUCCESS"
DONE_SUFFIX = ".done"


@dataclass
class Claim:
    """One batch this process took from the landing folder, and holds until it is done.

    Attributes:
        id: unique claim id (also the batch's folder under ``_ingested/``).
        source: the name it landed under.
        path: where it lies now, ``<landing>/_ingested/_claimed/<id>/<source>``.
    """

    id: str
    source: str
    path: Path
    _fd: int | None = field(default=None, repr=False)
    marked: bool = False
    seen: list = field(default_factory=list, repr=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def unchanged(self) -> bool:
        """Whether the batch is as it was when claimed (a writer that went on writing
        into the renamed file changes it); always true for a batch with a marker."""
        return self.marked or _signature(self.path) == self.seen

    def finish(self) -> Path:
        """Move the claim to ``_ingested/<id>/`` and let it go; returns its new folder."""
        done = self.folder.parent.parent / self.id
        if self.folder.exists():
            os.replace(self.folder, done)
        self.release(remove_lock=True)
        return done

    def release(self, remove_lock: bool = False) -> None:
        """Let the claim go (left unfinished it is taken over by a later ingest)."""
        if self._fd is None:
            return
        if remove_lock:
            self._lock_path().unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def _lock_path(self) -> Path:
        return self.folder.parent / f"{self.id}.lock"


@dataclass
class Landed:
    """What one look at the landing folder found: the claims, and what must wait."""

    claims: list[Claim] = field(default_factory=list)
    waiting: list[dict] = field(default_factory=list)


def claim_ready(landing: Path, settle_seconds: float) -> Landed:
    """Claim every complete batch of ``landing`` (and any claim left by a killed ingest).

    The caller holds the store's lock, so no other ingest claims at the same time.

    Returns:
        The claims in name order (taken-over ones first) and, for each batch not
        complete yet, ``{"source": name, "reason": ...}``.
    """
    landing = Path(landing)
    found = Landed()
    for claim in _take_over(landing):
        age = time.time() - max((m for _, _, m in claim.seen), default=0) / 1e9
        if claim.marked or claim.path.is_symlink() or age >= settle_seconds:
            found.claims.append(claim)
        else:
            found.waiting.append(_waiting(claim.path, age, settle_seconds))
            claim.release()
    first_look = {p: _signature(p) for p in _candidates(landing)}
    now = time.time()
    for path, seen in first_look.items():
        marker = _marker(path)
        if marker is None and not path.is_symlink():
            age = now - max((m for _, _, m in seen), default=0) / 1e9
            if age < settle_seconds:
                found.waiting.append(_waiting(path, age, settle_seconds))
                continue
            if _signature(path) != seen:
                found.waiting.append(_waiting(path, 0.0, settle_seconds))
                continue
        claim = _claim(landing, path, marker)
        if claim is not None:
            found.claims.append(claim)
    return found


def symlinks_in(path: Path) -> list[Path]:
    """``path`` itself when it is a symbolic link, else the links inside a folder batch."""
    if path.is_symlink():
        return [path]
    if not path.is_dir():
        return []
    links = []
    for root, dirs, files in os.walk(path):  # os.walk does not follow links to folders
        links += [Path(root, n) for n in dirs + files if Path(root, n).is_symlink()]
    return links


def _candidates(landing: Path) -> list[Path]:
    if not landing.is_dir():
        return []
    return sorted(
        p
        for p in landing.iterdir()
        if not p.name.startswith((".", "_")) and not p.name.endswith(DONE_SUFFIX)
    )


def _signature(path: Path) -> list[tuple[str, int, int]]:
    """(relative name, size, mtime in ns) of ``path`` and everything in it, links not followed."""
    try:
        entries = [path]
        if path.is_dir() and not path.is_symlink():
            entries += sorted(path.rglob("*"))
        out = []
        for entry in entries:
            st = entry.lstat()
            out.append((str(entry.relative_to(path)), st.st_size, st.st_mtime_ns))
        return out
    except FileNotFoundError:  # gone meanwhile (another writer renamed it)
        return []


def _marker(path: Path) -> Path | None:
    """The batch's completion marker: ``<name>.done`` beside it, or a folder's ``_SUCCESS``."""
    beside = path.with_name(path.name + DONE_SUFFIX)
    if beside.is_file() and not beside.is_symlink():
        return beside
    inside = path / SUCCESS_MARKER
    if path.is_dir() and not path.is_symlink() and inside.is_file():
        return inside
    return None


def _waiting(path: Path, age: float, settle: float) -> dict:
    return {
        "source": path.name,
        "reason": f"changed {max(age, 0.0):.0f}s ago, within the {settle:g}s settle window "
        f"(or add {path.name}{DONE_SUFFIX} when it is complete); a later run takes it",
    }


def _claim(landing: Path, path: Path, marker: Path | None) -> Claim | None:
    claimed = landing / DONE / CLAIMED
    claimed.mkdir(parents=True, exist_ok=True)
    cid = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
    fd = _lock_claim(claimed / f"{cid}.lock")
    folder = claimed / cid
    folder.mkdir()
    try:
        os.rename(path, folder / path.name)
    except FileNotFoundError:  # taken away meanwhile: not ours to claim
        folder.rmdir()
        (claimed / f"{cid}.lock").unlink(missing_ok=True)
        os.close(fd)
        return None
    if marker is not None and marker.parent == landing:
        os.rename(marker, folder / marker.name)
    log.info("claimed %s as %s", path.name, cid)
    claimed_path = folder / path.name
    return Claim(cid, path.name, claimed_path, fd, marker is not None, _signature(claimed_path))


def _take_over(landing: Path) -> list[Claim]:
    """Claims whose process died before finishing them (nobody holds their lock)."""
    claimed = landing / DONE / CLAIMED
    if not claimed.is_dir():
        return []
    taken = []
    for folder in sorted(p for p in claimed.iterdir() if p.is_dir()):
        try:
            fd = _lock_claim(claimed / f"{folder.name}.lock", wait=False)
        except BlockingIOError:
            continue  # a live ingest works on it
        batches = [p for p in folder.iterdir() if not p.name.endswith(DONE_SUFFIX)]
        batches = [p for p in batches if p.name != SUCCESS_MARKER]
        if len(batches) != 1:
            os.close(fd)
            _set_aside(folder, batches)
            continue
        marked = (
            any(p.name.endswith(DONE_SUFFIX) for p in folder.iterdir())
            or (batches[0] / SUCCESS_MARKER).is_file()
        )
        log.warning("taking over claim %s (%s), left unfinished", folder.name, batches[0].name)
        taken.append(
            Claim(folder.name, batches[0].name, batches[0], fd, marked, _signature(batches[0]))
        )
    return taken


def _set_aside(folder: Path, batches: list[Path]) -> None:
    """An empty claim (its process stopped mid-claim) is removed; one holding several
    entries (never written by this module) is left for a person, and logged."""
    if not batches:
        shutil.rmtree(folder, ignore_errors=True)
        (folder.parent / f"{folder.name}.lock").unlink(missing_ok=True)
        return
    log.warning(
        "claim folder %s holds %d entries, not one batch: left as it is", folder, len(batches)
    )


def _lock_claim(path: Path, wait: bool = False) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd
