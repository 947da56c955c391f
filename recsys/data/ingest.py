"""Ingest new interaction batches from a landing folder into the interaction store.

Each file (or folder) dropped into the landing folder is one batch. A batch is
validated on its own: an accepted batch is appended to the store as one
Parquet file under ``arrival=<date>/``, a rejected batch goes to the
quarantine folder with its validation report. Batches are keyed by a hash of
their content, so ingesting the same batch twice changes nothing. The store's
``_manifest.json`` lists every accepted batch, its row count and arrival.

Store layout::

    <store>/_manifest.json
    <store>/arrival=2026-11-27/batch=<hash>.parquet
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.data import Dataset
from recsys.errors import InputError

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
DONE = "_ingested"


@dataclass
class IngestResult:
    """What one ingest pass did; every landed batch is in exactly one list."""

    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    already_ingested: list[str] = field(default_factory=list)

    @property
    def new_rows(self) -> int:
        return sum(b["rows"] for b in self.accepted)

    def to_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "already_ingested": self.already_ingested,
            "new_rows": self.new_rows,
        }


def batch_id(path: Path) -> str:
    """Content hash of a batch: a file's bytes, or a folder's relative names and bytes.

    A file's own name is left out, so the same batch dropped again under
    another name is still recognised.
    """
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()[:20]
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:20]


def read_manifest(store: Path) -> dict:
    """The store's manifest: ``{"batches": {batch_id: {...}}}`` (empty for a new store)."""
    path = Path(store) / MANIFEST
    if not path.exists():
        return {"batches": {}}
    return json.loads(path.read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _landed_batches(landing: Path) -> list[Path]:
    return sorted(
        p for p in landing.iterdir() if not p.name.startswith((".", "_")) and p.name != DONE
    )


def ingest_batch(
    path: Path,
    store: Path,
    quarantine_dir: Path,
    *,
    arrival: str,
    now: float | None = None,
    columns: dict[str, str] | None = None,
) -> dict:
    """Validate one batch and append it to the store or quarantine it.

    Returns:
        ``{"batch": id, "source": name, "status": "accepted" | "rejected" |
        "already_ingested", "rows": int, ...}``.
    """
    from recsys.data import validation
    from recsys.data.loaders import DataFormatError, load_dataset

    store, bid = Path(store), batch_id(path)
    manifest = read_manifest(store)
    if bid in manifest["batches"]:
        return {"batch": bid, "source": path.name, "status": "already_ingested", "rows": 0}
    try:
        dataset = load_dataset(path, **(columns or {}))
    except DataFormatError as exc:
        dest = quarantine_dir / bid
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / path.name) if path.is_file() else shutil.copytree(
            path, dest / path.name, dirs_exist_ok=True
        )
        (dest / "report.txt").write_text(f"{path.name}: cannot be read: {exc}\n")
        return {
            "batch": bid,
            "source": path.name,
            "status": "rejected",
            "rows": None,
            "reason": str(exc),
            "quarantine": str(dest),
        }
    report = validation.validate_dataset(dataset, now=now)
    rows = len(dataset.interactions)
    if not report.success:
        dest = validation.quarantine(path, report, quarantine_dir / bid)
        return {
            "batch": bid,
            "source": path.name,
            "status": "rejected",
            "rows": rows,
            "reason": report.summary(),
            "quarantine": str(dest),
        }
    part = store / f"arrival={arrival}"
    part.mkdir(parents=True, exist_ok=True)
    target = part / f"batch={bid}.parquet"
    tmp = target.with_suffix(".tmp")
    dataset.interactions.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    manifest["batches"][bid] = {
        "source": path.name,
        "rows": rows,
        "arrival": arrival,
        "file": str(target.relative_to(store)),
    }
    _write_atomic(store / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return {
        "batch": bid,
        "source": path.name,
        "status": "accepted",
        "rows": rows,
        "file": str(target),
    }


def ingest_landing(
    landing: str | Path,
    store: str | Path,
    quarantine_dir: str | Path,
    *,
    arrival: str,
    now: float | None = None,
    columns: dict[str, str] | None = None,
) -> IngestResult:
    """Ingest every batch in ``landing``, one by one, in name order.

    A processed batch (accepted, rejected or seen before) is moved to
    ``landing/_ingested/`` so the next pass does not look at it again; its
    rows are never deleted: they are in the store or in quarantine.

    Args:
        arrival: the partition the accepted batches go to (the DAG passes its
            logical date, never the wall clock).
        now: reference time for the "no timestamps in the future" expectation.
    """
    landing, store = Path(landing), Path(store)
    store.mkdir(parents=True, exist_ok=True)
    done = landing / DONE
    done.mkdir(parents=True, exist_ok=True)
    result = IngestResult()
    for path in _landed_batches(landing):
        outcome = ingest_batch(
            path, store, Path(quarantine_dir), arrival=arrival, now=now, columns=columns
        )
        status = outcome["status"]
        if status == "accepted":
            result.accepted.append(outcome)
        elif status == "rejected":
            result.rejected.append(outcome)
        else:
            result.already_ingested.append(outcome["batch"])
        os.replace(path, done / path.name)
        log.info("batch %s (%s): %s", outcome["batch"], path.name, status)
    return result


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is an interaction store written by this module."""
    return (Path(path) / MANIFEST).exists()


def read_store(store: str | Path) -> Dataset:
    """Every accepted batch of the store as one data set (batches in manifest order).

    A store kept in a folder that already held a data set in the ``recsys``
    format (the demo's data, a ``recsys generate`` folder) starts from it: its
    interactions come first and its items and users tables are kept, so
    ingesting new batches never hides the data that was there.
    """
    store = Path(store)
    batches = read_manifest(store)["batches"]
    base = _base_dataset(store)
    if not batches and base is None:
        raise InputError(f"interaction store {store} holds no accepted batch yet")
    ordered = sorted(batches.values(), key=lambda b: (b["arrival"], b["file"]))
    frames = [pd.read_parquet(store / b["file"]) for b in ordered]
    if base is not None:
        frames.insert(0, base.interactions)
    return Dataset(
        interactions=pd.concat(frames, ignore_index=True),
        items=base.items if base is not None else None,
        users=base.users if base is not None else None,
        name=base.name if base is not None else store.name,
        meta={
            **(base.meta if base is not None else {}),
            "path": str(store),
            "format": "store",
            "batches": len(ordered),
        },
    )


def _base_dataset(store: Path) -> Dataset | None:
    """The ``recsys``-format data set the store's folder held before ingest, if any."""
    from recsys.data.loaders import INTERACTIONS_FILE, load_dataset

    if not (store / INTERACTIONS_FILE).is_file():
        return None
    return load_dataset(store, "recsys")


def store_rows(path: str | Path) -> int:
    """Rows in an interaction store, from its manifest and Parquet footers (reads no data)."""
    import pyarrow.parquet as pq

    from recsys.data.loaders import INTERACTIONS_FILE

    path = Path(path)
    base = path / INTERACTIONS_FILE
    rows = pq.read_metadata(base).num_rows if base.is_file() else 0
    return rows + sum(b["rows"] for b in read_manifest(path)["batches"].values())


def erase_users(store: str | Path, user_ids: list[object]) -> dict:
    """Rewrite the store without the rows of ``user_ids`` (the right to erasure).

    Every batch file, and the interactions and users tables of a data set the
    store's folder held before ingest (demographics included), is rewritten
    without those users' rows, one file at a time and atomically
    (:mod:`recsys.data.erasure`): a crash mid-way loses no other row, and
    calling this again finishes the job. The manifest then records each
    batch's rows as they are now, and ``erased_rows`` counts every row erased
    from the store so far (so "new rows since the champion" stays right).
    Batch ids are not changed: landing the same original batch again is still
    recognised as ingested and brings nobody back.

    Returns:
        ``{"interactions": {"before", "removed", "after", "files"}, "users":
        {"before", "removed", "after"}}`` (rows of the whole store).
    """
    from recsys.data import erasure
    from recsys.data.loaders import INTERACTIONS_FILE, USERS_FILE

    store = Path(store)
    manifest = read_manifest(store)
    base, users = store / INTERACTIONS_FILE, store / USERS_FILE
    files = [store / b["file"] for b in manifest["batches"].values()]
    files += [base] if base.is_file() else []
    before = store_rows(store)
    for leftover in store.rglob(f"*{erasure.PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    changed = [erasure.erase_rows(path, user_ids) for path in files]
    demographics = erasure.erase_rows(users, user_ids) if users.is_file() else None
    _record_erasure(store, manifest, before)
    after = store_rows(store)
    return {
        "interactions": {
            "before": before,
            "removed": before - after,
            "after": after,
            "files": sum(1 for c in changed if c.removed),
        },
        "users": {
            "before": demographics.before if demographics else 0,
            "removed": demographics.removed if demographics else 0,
            "after": demographics.after if demographics else 0,
        },
    }


def _record_erasure(store: Path, manifest: dict, rows_before: int) -> None:
    """Each batch's rows as its file holds them now; ``erased_rows`` grows by the difference
    (which includes what an interrupted earlier attempt removed from batch files).

    The manifest is read again just before it is written, so a batch another
    process accepted meanwhile keeps its entry (that batch was not erased:
    erase again once ingest is done; issue 14's store lock should cover both).
    """
    import pyarrow.parquet as pq

    from recsys.data.loaders import INTERACTIONS_FILE

    rows = {
        bid: pq.read_metadata(store / entry["file"]).num_rows
        for bid, entry in manifest["batches"].items()
    }
    base = store / INTERACTIONS_FILE
    after = (pq.read_metadata(base).num_rows if base.is_file() else 0) + sum(rows.values())
    current = read_manifest(store)
    for bid, count in rows.items():
        if bid in current["batches"]:
            current["batches"][bid]["rows"] = count
    current["erased_rows"] = int(current.get("erased_rows", 0)) + rows_before - after
    _write_atomic(store / MANIFEST, json.dumps(current, indent=2, sort_keys=True))


def erased_rows(store: str | Path) -> int:
    """Rows erased from the store so far (:func:`erase_users`); 0 for a store without erasures."""
    return int(read_manifest(Path(store)).get("erased_rows", 0))
