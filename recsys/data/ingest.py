"""Ingest new interaction batches from a landing folder into the interaction store.

Each file (or folder) dropped into the landing folder is one batch, taken
only once it is complete (a ``<name>.done`` / ``_SUCCESS`` marker, or
unchanged for the settle window: :mod:`recsys.data.landing`). A batch is
validated on its own; then, under the store's lock
(:mod:`recsys.data.storelock`), it is checked against the store and
committed:

- its id and timestamp types must be the store's (integer ids in the store
  and ``u123`` in the batch, or timestamps on some rows only, would break
  every later training run): otherwise it is quarantined with the reason;
- rows the store already holds, by content (user, item, rating, timestamp;
  rows without a timestamp are repeat interactions and always kept), and
  exact repeats inside the batch are dropped and counted: the batch's
  manifest entry says how many and of which batches; a batch with nothing
  new is recorded under ``duplicates``;
- what is new is appended as one Parquet file under ``arrival=<date>/``.

A rejected batch goes to the quarantine folder (``<quarantine>/<batch>/``)
with its report; :func:`replay_quarantined` takes it back, with its invalid
rows dropped and recorded when asked. Batches are keyed by a hash of their
bytes, so landing the very same file again is recognised at once. Two
ingests may run at once on one landing folder and store: each claims
different batches and commits under the lock, so no row is lost.

Store layout::

    <store>/_manifest.json     {"batches": {id: {...}}, "duplicates": {id: {...}}, ...}
    <store>/_store.lock
    <store>/arrival=2026-11-27/batch=<hash>.parquet
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.constants import INTERACTION_COLS, ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.data import Dataset, landing
from recsys.data.storelock import store_lock
from recsys.errors import InputError

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
DONE = landing.DONE
#: Written into a quarantined batch's folder: what it was and why it was rejected.
BATCH_INFO = "batch.json"
#: Written into a quarantined batch's folder once it was replayed.
REPLAYED = "replayed.json"
#: Row numbers kept per drop reason in the manifest (all of them are in the quarantine).
ROWS_KEPT = 20
#: Why a claimed batch was let go unrecorded.
CHANGED = "changed after it was claimed (still being written?); a later run takes it once settled"


@dataclass
class IngestResult:
    """What one ingest pass did; every batch it looked at is in exactly one list.

    ``duplicates``: batches whose every row the store already held (0 new
    rows; recorded in the manifest). ``refused``: symbolic links, never
    followed. ``waiting``: batches not complete yet, left for a later run.
    """

    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    already_ingested: list[str] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    waiting: list[dict] = field(default_factory=list)

    @property
    def new_rows(self) -> int:
        return sum(b["rows"] for b in self.accepted)

    @property
    def duplicate_rows(self) -> int:
        return sum(b.get("duplicate_rows", 0) for b in self.accepted + self.duplicates)

    def add(self, outcome: dict) -> None:
        """File one batch's outcome under its status."""
        status = outcome["status"]
        if status == "already_ingested":
            self.already_ingested.append(outcome["batch"])
        else:
            getattr(self, {"duplicate": "duplicates"}.get(status, status)).append(outcome)

    def to_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "already_ingested": self.already_ingested,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "waiting": self.waiting,
            "new_rows": self.new_rows,
            "duplicate_rows": self.duplicate_rows,
        }


def batch_id(path: Path) -> str:
    """Content hash of a batch: a file's bytes, or a folder's relative names and bytes.

    A file's own name is left out, so the same batch dropped again under
    another name is still recognised; so is a folder's ``_SUCCESS`` marker.
    """
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()[:20]
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        if f.relative_to(path) == Path(landing.SUCCESS_MARKER):
            continue
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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_manifest(store: Path, manifest: dict) -> None:
    _write_atomic(store / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))


def _known(manifest: dict, bid: str) -> bool:
    return bid in manifest["batches"] or bid in manifest.get("duplicates", {})


def ingest_batch(
    path: Path,
    store: Path,
    quarantine_dir: Path,
    *,
    arrival: str,
    now: float | None = None,
    columns: dict[str, str] | None = None,
    source: str | None = None,
    claim: str | None = None,
    unchanged: Callable[[], bool] | None = None,
) -> dict:
    """Validate one batch, then (under the store's lock) check it against the store and
    append its new rows, record it as a duplicate, or quarantine it.

    Args:
        source: the name it landed under (default ``path``'s name).
        claim: its claim id in the landing folder, recorded in the manifest.
        unchanged: says whether the batch is still as it was claimed; when it
            is not (a writer went on writing), nothing is recorded and the
            status is ``waiting``.

    Returns:
        ``{"batch": id, "source": name, "status": "accepted" | "duplicate" |
        "rejected" | "already_ingested", "rows": int, ...}``; ``rows`` counts
        the rows appended, ``duplicate_rows`` those the store already held.
    """
    from recsys.data import validation
    from recsys.data.loaders import DataFormatError, load_dataset

    store, quarantine_dir, bid = Path(store), Path(quarantine_dir), batch_id(path)
    source = source or path.name
    base = {"batch": bid, "source": source}
    if _known(read_manifest(store), bid):
        return {**base, "status": "already_ingested", "rows": 0}
    moved_on = {**base, "status": "waiting", "rows": None, "reason": CHANGED}
    try:
        dataset = load_dataset(path, **(columns or {}))
    except DataFormatError as exc:
        if unchanged is not None and not unchanged():
            return moved_on
        dest = _quarantine_copy(path, quarantine_dir / bid, flat=True)
        (dest / "report.txt").write_text(f"{source}: cannot be read: {exc}\n")
        _write_info(dest, base, "unreadable", str(exc), columns)
        return {
            **base,
            "status": "rejected",
            "rows": None,
            "reason": str(exc),
            "quarantine": str(dest),
        }
    report = validation.validate_dataset(dataset, now=now)
    rows = len(dataset.interactions)
    if unchanged is not None and not unchanged():
        return moved_on
    if not report.success:
        dest = validation.quarantine(path, report, quarantine_dir / bid)
        _write_info(dest, base, "invalid", report.summary(), columns)
        reason = report.summary()
        return {
            **base,
            "status": "rejected",
            "rows": rows,
            "reason": reason,
            "quarantine": str(dest),
        }
    with store_lock(store, "ingest: committing a batch"):
        if unchanged is not None and not unchanged():
            return moved_on
        outcome = commit_rows(
            dataset.interactions, store, bid=bid, source=source, arrival=arrival, claim=claim
        )
    if outcome["status"] == "rejected":
        dest = _quarantine_copy(path, quarantine_dir / bid)
        (dest / "summary.txt").write_text(f"{source}: {outcome['reason']}\n")
        _write_info(dest, base, "mismatch", outcome["reason"], columns)
        outcome["quarantine"] = str(dest)
    return outcome


def commit_rows(
    frame: pd.DataFrame,
    store: Path,
    *,
    bid: str,
    source: str,
    arrival: str,
    claim: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Check validated rows against the store and append what is new; the caller holds
    the store's lock. Nothing is written for a batch whose types do not match the
    store's (``status`` ``rejected``, with the ``reason``)."""
    store = Path(store)
    manifest = read_manifest(store)
    base = {"batch": bid, "source": source}
    if _known(manifest, bid):
        return {**base, "status": "already_ingested", "rows": 0}
    stored = _stored_rows(store, manifest)
    problem = schema_problem(frame, stored)
    if problem:
        return {**base, "status": "rejected", "rows": len(frame), "reason": problem}
    new, duplicates = split_duplicates(frame, stored)
    entry = {"source": source, "arrival": arrival, "rows": len(new), "rows_landed": len(frame)}
    entry.update({"claim": claim} if claim else {})
    entry.update(duplicates)
    entry.update(extra or {})
    if new.empty:
        manifest.setdefault("duplicates", {})[bid] = entry
        _write_manifest(store, manifest)
        log.info("batch %s (%s): every row is already in the store", bid, source)
        return {**base, "status": "duplicate", **entry}
    part = store / f"arrival={arrival}"
    part.mkdir(parents=True, exist_ok=True)
    target = part / f"batch={bid}.parquet"
    tmp = target.with_suffix(".tmp")
    new.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    entry["file"] = str(target.relative_to(store))
    manifest["batches"][bid] = entry
    _write_manifest(store, manifest)
    return {**base, "status": "accepted", **entry, "file": str(target)}


def _stored_rows(store: Path, manifest: dict) -> pd.DataFrame:
    """The store's rows, content columns only, with the batch each came from (``_batch``)."""
    from recsys.data.loaders import INTERACTIONS_FILE

    sources = [(bid, store / b["file"]) for bid, b in manifest["batches"].items()]
    if (store / INTERACTIONS_FILE).is_file():
        sources.insert(0, ("(the store's initial data)", store / INTERACTIONS_FILE))
    frames = [
        pd.read_parquet(path, columns=list(INTERACTION_COLS)).assign(_batch=bid)
        for bid, path in sources
    ]
    if not frames:
        return pd.DataFrame(columns=[*INTERACTION_COLS, "_batch"])
    return pd.concat(frames, ignore_index=True)


def id_kind(values: pd.Series) -> str:
    """``integer``, ``text``, ``number`` or ``mixed``: what kind of ids a column holds."""
    if pd.api.types.is_bool_dtype(values):
        return "mixed"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "number"
    kinds = {type(v) for v in values.dropna()}
    if kinds <= {str}:
        return "text"
    if kinds <= {int}:
        return "integer"
    return "mixed"


def schema_problem(frame: pd.DataFrame, stored: pd.DataFrame) -> str | None:
    """Why ``frame``'s ids or timestamps cannot join the ``stored`` rows, or ``None``.

    Ids must be of the store's kind (integer or text); timestamps must be on
    every row or on none, as in the store.
    """
    for col in (USER_COL, ITEM_COL):
        mine = id_kind(frame[col])
        theirs = id_kind(stored[col]) if len(stored) else mine
        if mine == "mixed" or mine != theirs:
            example = frame[col].dropna().iloc[0] if frame[col].notna().any() else None
            return (
                f"{col}: the store holds {theirs} ids, this batch {mine} ones (e.g. {example!r}); "
                "export the batch with the store's ids, or replay it with --drop-invalid "
                "to keep only the rows whose ids fit"
            )
    missing = int(frame[TIME_COL].isna().sum())
    if 0 < missing < len(frame):
        return (
            f"{TIME_COL}: {missing} of {len(frame)} rows have none; give every row a "
            "timestamp (or none), or replay with --drop-invalid to drop those rows"
        )
    if len(stored):
        stored_timed = bool(stored[TIME_COL].notna().any())
        if stored_timed and missing:
            return (
                f"{TIME_COL}: the store's rows have timestamps, this batch's rows have none; "
                "export it with its timestamps"
            )
        if not stored_timed and not missing:
            return (
                f"{TIME_COL}: this batch has timestamps but the store's rows have none; "
                "land it in a store of its own"
            )
    return None


def split_duplicates(frame: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """``frame``'s rows the store does not hold yet, and what was dropped as a duplicate.

    A duplicate is a row with a timestamp whose user, item, rating and timestamp
    are those of a stored row, or of an earlier row of the same batch. Rows
    without a timestamp are repeat interactions (the interactions suite's
    rule) and are always kept.

    Returns:
        ``(new rows, {"duplicate_rows": n, "duplicate_of": [batch ids]})`` (the
        dict is empty when nothing was dropped).
    """
    import numpy as np

    cols = list(INTERACTION_COLS)
    timed = frame[TIME_COL].notna().to_numpy()
    within = frame.duplicated(cols).to_numpy() & timed
    earlier = stored[stored[TIME_COL].notna()].drop_duplicates(cols)
    in_store = np.zeros(len(frame), dtype=bool)
    if timed.any() and len(earlier):
        in_store[timed] = _rows_in(frame.loc[timed, cols], earlier[cols])
    dropped = within | in_store
    if not dropped.any():
        return frame.reset_index(drop=True), {}
    matches = _comparable(frame.loc[in_store, cols]).merge(
        _comparable(earlier), on=cols, how="inner"
    )["_batch"]
    of = sorted(set(matches)) + (["(this batch)"] if within.any() else [])
    new = frame[~dropped].reset_index(drop=True)
    return new, {"duplicate_rows": int(dropped.sum()), "duplicate_of": of}


def _rows_in(rows: pd.DataFrame, other: pd.DataFrame):
    """Whether each row of ``rows`` equals a row of ``other`` (same columns, no missing
    timestamps), as an array."""
    keys = pd.MultiIndex.from_frame(_comparable(rows))
    return keys.isin(pd.MultiIndex.from_frame(_comparable(other)))


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as plain ints, floats and strings, so int64 and Int64 columns compare equal."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_integer_dtype(out[col]):
            out[col] = out[col].astype("int64")
        elif pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].astype("float64")
    return out


def ingest_landing(
    landing_dir: str | Path,
    store: str | Path,
    quarantine_dir: str | Path,
    *,
    arrival: str,
    now: float | None = None,
    columns: dict[str, str] | None = None,
    settle_seconds: float = 0.0,
    lock_timeout: float | None = None,
) -> IngestResult:
    """Ingest every complete batch in ``landing_dir``, one by one, in name order.

    Safe to run while another ingest runs on the same folders: batches are
    claimed under the store's lock (each by one process) and committed under
    it. A processed batch (accepted, duplicate, rejected or seen before) ends
    in ``landing/_ingested/<claim>/``; its rows are never deleted: they are in
    the store or in quarantine. A symbolic link is refused, never followed.

    Args:
        arrival: the partition the accepted batches go to (the DAG passes its
            logical date, never the wall clock).
        now: reference time for the "no timestamps in the future" expectation.
        settle_seconds: a batch without a marker is taken once unchanged this
            long (0: every batch as it is; for callers that land files whole,
            as tests do. The DAG and ``recsys ingest`` pass
            ``RECSYS_INGEST_SETTLE_SECONDS``).
        lock_timeout: seconds to wait for the store's lock (default
            ``RECSYS_STORE_LOCK_TIMEOUT``).
    """
    landing_dir, store, quarantine_dir = Path(landing_dir), Path(store), Path(quarantine_dir)
    store.mkdir(parents=True, exist_ok=True)
    if settle_seconds < 0:
        raise InputError(f"the settle window must be seconds >= 0, got {settle_seconds}")
    result = IngestResult()
    with store_lock(store, "ingest: claiming batches", lock_timeout):
        found = landing.claim_ready(landing_dir, settle_seconds)
    result.waiting = found.waiting
    try:
        for claim in found.claims:
            outcome = _ingest_claim(claim, store, quarantine_dir, arrival, now, columns)
            result.add(outcome)
            if outcome["status"] != "waiting":  # a waiting one is taken over later
                claim.finish()
            log.info("batch %s (%s): %s", outcome["batch"], claim.source, outcome["status"])
    finally:
        for claim in found.claims:
            claim.release()  # unfinished claims are taken over by the next ingest
    return result


def _ingest_claim(
    claim: landing.Claim,
    store: Path,
    quarantine_dir: Path,
    arrival: str,
    now: float | None,
    columns: dict[str, str] | None,
) -> dict:
    links = landing.symlinks_in(claim.path)
    if links:
        return _refuse(claim, links, quarantine_dir)
    return ingest_batch(
        claim.path,
        store,
        quarantine_dir,
        arrival=arrival,
        now=now,
        columns=columns,
        source=claim.source,
        claim=claim.id,
        unchanged=claim.unchanged,
    )


def _refuse(claim: landing.Claim, links: list[Path], quarantine_dir: Path) -> dict:
    """A symbolic link is never read: it is removed (its target stays as it is) and
    recorded; a folder batch holding links is quarantined without them."""
    named = [f"{link.relative_to(claim.folder)} -> {os.readlink(link)}" for link in sorted(links)]
    for link in links:
        link.unlink()
    reason = (
        "symbolic links are refused, never followed: " + ", ".join(named) + "; land the file itself"
    )
    dest = quarantine_dir / f"refused-{claim.id}"
    dest.mkdir(parents=True, exist_ok=True)
    if claim.path.exists():  # a folder, its links removed
        shutil.move(str(claim.path), str(dest / claim.source))
    (dest / "summary.txt").write_text(f"{claim.source}: {reason}\n")
    base = {"batch": dest.name, "source": claim.source}
    _write_info(dest, base, "refused", reason, None)
    log.warning("refused %s: %s", claim.source, reason)
    return {**base, "status": "refused", "rows": None, "reason": reason, "quarantine": str(dest)}


def _quarantine_copy(path: Path, dest: Path, flat: bool = False) -> Path:
    """Copy a batch into ``dest`` (``dest/<name>`` when ``flat``, else ``dest/batch/<name>``)."""
    target = dest if flat else dest / "batch"
    target.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        shutil.copy2(path, target / path.name)
    else:
        shutil.copytree(path, target / path.name, dirs_exist_ok=True)
    return dest


def _write_info(dest: Path, base: dict, kind: str, reason: str, columns: dict | None) -> None:
    info = {**base, "kind": kind, "reason": reason, "columns": columns or {}}
    (dest / BATCH_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))


def quarantined(quarantine_dir: str | Path) -> list[str]:
    """Names of the quarantined batches not replayed yet (what ``--replay`` takes)."""
    root = Path(quarantine_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and (p / BATCH_INFO).is_file() and not (p / REPLAYED).exists()
    )


def replay_quarantined(
    batch: str,
    store: str | Path,
    quarantine_dir: str | Path,
    *,
    arrival: str,
    now: float | None = None,
    drop_invalid: bool = False,
    lock_timeout: float | None = None,
) -> dict:
    """Take a quarantined batch back: validated again and committed like a landed one.

    With ``drop_invalid`` the rows that break a rule are dropped first (a
    missing or negative id, an id not of the store's kind, a rating that is
    missing, not a number or off the scale, a timestamp that is not a
    number, before 1970, after ``now``, or missing where the store's rows
    have one, a repeat of an earlier row's event); the manifest entry records
    how many per reason and their first row numbers (1 = the first data row),
    and ``dropped_rows.csv`` in the quarantine folder lists them all.

    Returns:
        The commit's outcome (as :func:`ingest_batch`), with ``replay_of`` and
        ``dropped``; ``replayed.json`` in the quarantine folder says the same.

    Raises:
        InputError: no such quarantined batch, it still cannot be read, no row
            is left, or what is left still fails validation (the message says
            whether ``--drop-invalid`` would help).
    """
    from recsys import config
    from recsys.data import RATING_SCALE, validation
    from recsys.data.loaders import DataFormatError, load_dataset

    store, folder = Path(store), _quarantine_folder(Path(quarantine_dir), batch)
    info = json.loads((folder / BATCH_INFO).read_text())
    copy = _quarantined_copy(folder, info["source"])
    try:
        dataset = load_dataset(copy, **info.get("columns", {}))
    except DataFormatError as exc:
        raise InputError(
            f"quarantined batch {folder.name} still cannot be read ({exc}); "
            "fix the file and land it again"
        ) from None
    bid = batch_id(copy) if info["kind"] == "refused" else info["batch"]
    frame, extra = dataset.interactions, {"replay_of": folder.name}
    if drop_invalid:
        scale = dataset.meta.get(RATING_SCALE) or config.rating_scale()
        kinds = _expected_kinds(frame, _stored_rows(store, read_manifest(store)))
        reasons = invalid_rows(frame, kinds, scale, now)
        frame, extra["dropped"] = _drop_rows(frame, reasons, folder)
        frame = _typed(frame, kinds)
    if frame.empty:
        raise InputError(
            f"no row of quarantined batch {folder.name} is valid "
            f"({_reason_counts(extra.get('dropped'))}); nothing to replay"
        )
    report = validation.validate_dataset(Dataset(interactions=frame, name=folder.name), now=now)
    if not report.success:
        hint = "" if drop_invalid else "\nreplay with --drop-invalid to drop the rows that break it"
        raise InputError(f"quarantined batch {folder.name} still fails:\n{report.summary()}{hint}")
    with store_lock(store, "ingest: replaying a quarantined batch", lock_timeout):
        outcome = commit_rows(
            frame, store, bid=bid, source=info["source"], arrival=arrival, extra=extra
        )
    if outcome["status"] == "rejected":
        hint = "" if drop_invalid else " (--drop-invalid keeps the rows that fit)"
        raise InputError(f"quarantined batch {folder.name}: {outcome['reason']}{hint}")
    (folder / REPLAYED).write_text(json.dumps(outcome, indent=2, sort_keys=True, default=str))
    return outcome


def _quarantine_folder(root: Path, batch: str) -> Path:
    folder = Path(batch) if os.sep in batch else root / batch
    if not (folder / BATCH_INFO).is_file():
        known = quarantined(root)
        listed = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "") or "none"
        raise InputError(
            f"--replay {batch}: no quarantined batch of that name in {root} "
            f"(quarantined, not replayed: {listed})"
        )
    if (folder / REPLAYED).exists():
        raise InputError(f"--replay {batch}: replayed already (see {folder / REPLAYED})")
    return folder


def _quarantined_copy(folder: Path, source: str) -> Path:
    for copy in (folder / "batch" / source, folder / source):
        if copy.exists():
            return copy
    raise InputError(f"quarantined batch {folder.name} holds no copy of {source}")


def invalid_rows(
    frame: pd.DataFrame,
    kinds: dict,
    rating_scale: tuple[float, float] | None,
    now: float | None,
) -> pd.Series:
    """Per row of ``frame``, the first rule it breaks (``None`` for a valid row).

    The rules are the interactions suite's, row by row, plus the store's
    (``kinds``, from :func:`_expected_kinds`): ids of the store's kind, and
    timestamps on every row or on none, as there.
    """
    reasons = pd.Series([None] * len(frame), index=frame.index, dtype=object)

    def mark(mask: pd.Series, why: str) -> None:
        reasons[mask.fillna(False).astype(bool) & reasons.isna()] = why

    for col in (USER_COL, ITEM_COL):
        values = frame[col]
        mark(values.isna(), f"{col} is missing")
        numeric = pd.to_numeric(values, errors="coerce")
        if kinds[col] == "integer":
            mark(numeric.isna() | (numeric % 1 != 0), f"{col} is not an integer id as in the store")
        else:
            mark(
                values.map(lambda v: not isinstance(v, str)),
                f"{col} is not a text id as in the store",
            )
        mark(numeric < 0, f"{col} is negative")
    rating = pd.to_numeric(frame[RATING_COL], errors="coerce")
    mark(rating.isna(), "rating is missing or not a number")
    mark(rating < (rating_scale[0] if rating_scale else 0), "rating is below the scale")
    if rating_scale:
        mark(rating > rating_scale[1], "rating is above the scale")
    stamp = pd.to_numeric(frame[TIME_COL], errors="coerce")
    mark(frame[TIME_COL].notna() & stamp.isna(), "timestamp is not a number")
    mark(stamp < 0, "timestamp is before 1970")
    if now is not None:
        mark(stamp > now, "timestamp is in the future")
    if kinds["timed"]:
        mark(stamp.isna(), "timestamp is missing (the store's rows all have one)")
    else:
        mark(stamp.notna(), "timestamp is given (the store's rows have none)")
    repeat = frame.assign(**{TIME_COL: stamp}).duplicated([USER_COL, ITEM_COL, TIME_COL])
    mark(repeat & stamp.notna(), "repeats an earlier row's user_id, item_id and timestamp")
    return reasons


def _expected_kinds(frame: pd.DataFrame, stored: pd.DataFrame) -> dict:
    """The id kinds and timestamps rows must have: the store's, or (a new store) the
    batch's own majority."""
    if len(stored):
        kinds = {c: id_kind(stored[c]) for c in (USER_COL, ITEM_COL)}
        return {**kinds, "timed": bool(stored[TIME_COL].notna().any())}
    kinds = {}
    for col in (USER_COL, ITEM_COL):
        numeric = pd.to_numeric(frame[col], errors="coerce")
        kinds[col] = "integer" if numeric.notna().mean() >= 0.5 else "text"
    return {**kinds, "timed": bool(frame[TIME_COL].notna().mean() >= 0.5)}


def _drop_rows(frame: pd.DataFrame, reasons: pd.Series, folder: Path) -> tuple[pd.DataFrame, dict]:
    """The valid rows, typed as the store keeps them, and the record of the dropped ones."""
    bad = reasons.notna().to_numpy()
    numbers = pd.Series(range(1, len(frame) + 1), index=frame.index)
    listing = pd.DataFrame({"row": numbers[bad], "reason": reasons[bad]})
    listing.to_csv(folder / "dropped_rows.csv", index=False)
    record = {
        "rows": int(bad.sum()),
        "reasons": {
            why: {"rows": len(group), "first_rows": group["row"].head(ROWS_KEPT).tolist()}
            for why, group in listing.groupby("reason", sort=True)
        },
        "listing": str(folder / "dropped_rows.csv"),
    }
    return frame[~bad].reset_index(drop=True), record


def _typed(frame: pd.DataFrame, kinds: dict) -> pd.DataFrame:
    """Valid rows with the loader's types: integer ids as int64, ratings float64,
    timestamps int64 (or all null)."""
    out = frame.copy()
    for col in (USER_COL, ITEM_COL):
        if kinds[col] == "integer" and len(out):
            out[col] = pd.to_numeric(out[col]).astype("int64")
    out[RATING_COL] = pd.to_numeric(out[RATING_COL]).astype("float64")
    stamp = pd.to_numeric(out[TIME_COL])
    out[TIME_COL] = (
        stamp.astype("int64") if stamp.notna().all() and len(out) else stamp.astype("Int64")
    )
    return out


def _reason_counts(dropped: dict | None) -> str:
    if not dropped:
        return "every row breaks a rule"
    return "; ".join(f"{why}: {r['rows']}" for why, r in dropped["reasons"].items())


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

    The store's lock is held throughout, so no ingest commits a batch while
    the files are rewritten (it waits, then checks against the erased store).
    """
    store = Path(store)
    with store_lock(store, "erase users"):  # no batch is committed meanwhile
        return _erase_users(store, user_ids)


def _erase_users(store: Path, user_ids: list[object]) -> dict:
    from recsys.data import erasure
    from recsys.data.loaders import INTERACTIONS_FILE, USERS_FILE

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

    The caller holds the store's lock, so no batch was accepted meanwhile; the
    manifest is still read again just before it is written, so nothing but the
    row counts changes.
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
