"""Rewriting tables without some users' rows, one file at a time, atomically.

The right to erasure (:func:`recsys.pipeline.privacy.forget_user`) removes a
person's rows from every table that holds them. Each file is rewritten the
same way: the rows that stay are written to a temporary file beside it,
flushed to disk, and moved over the original with ``os.replace``. A reader
(or a crash) sees either the old file or the new one, never a half-written
one, so no other row is ever lost; a crash between two files leaves some
files not yet rewritten, and running the erasure again finishes the job.

Ids are compared as text (``str(id)``), the way pseudonyms are computed, so
``7`` and ``"7"`` are the same user.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import USER_COL

log = logging.getLogger(__name__)

#: Suffix of the temporary file a rewrite writes before it replaces the original.
PARTIAL_SUFFIX = ".erasing"


@dataclass(frozen=True)
class FileErasure:
    """What one rewrite did: rows in the file before, rows removed, rows kept."""

    path: Path
    before: int
    removed: int

    @property
    def after(self) -> int:
        return self.before - self.removed


def matches(column: pd.Series, ids: Iterable[object]) -> pd.Series:
    """Which values of ``column`` are one of ``ids`` (compared as text)."""
    wanted = {str(i) for i in ids}
    return column.astype(str).isin(wanted)


def erase_rows(path: Path, ids: Iterable[object], column: str = USER_COL) -> FileErasure:
    """Rewrite the Parquet file ``path`` without the rows whose ``column`` is one of ``ids``.

    Only the id column is read to find out whether there is anything to
    remove; a file without such rows (or without the column) is left
    untouched, byte for byte. The rewrite keeps the file's schema and its
    pandas metadata (a table whose ids are its index reads back the same way).

    Returns:
        The file's row count before and the rows removed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    ids = list(ids)
    before = pq.read_metadata(path).num_rows
    hit = _hits(path, ids, column)
    if hit is None or not hit.any():
        return FileErasure(path, before, 0)
    table = pq.read_table(path)
    kept = table.filter(pa.array(~hit))
    replace_atomically(path, lambda tmp: pq.write_table(kept, tmp))
    log.info("erased %d of %d rows from %s", int(hit.sum()), before, path)
    return FileErasure(path, before, int(hit.sum()))


def _hits(path: Path, ids: list[object], column: str) -> np.ndarray | None:
    """Per row of the file, whether ``column`` holds one of ``ids``; ``None`` without the column."""
    import pyarrow.parquet as pq

    if column not in pq.read_schema(path).names:
        return None
    values = pq.read_table(path, columns=[column]).column(column).to_pandas()
    return matches(values, ids).to_numpy()


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write a new version of ``path`` through ``write(tmp_path)``, then swap it in.

    The temporary file is flushed to disk before ``os.replace``, and the
    folder after it, so the swap survives a power cut as well as a crash.
    """
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def erase_from_tree(root: Path, ids: Iterable[object], column: str = USER_COL) -> list[FileErasure]:
    """:func:`erase_rows` on every Parquet file under ``root`` (leftover partial files
    of an interrupted erasure are removed first).

    Returns:
        One entry per file that had rows removed, in path order.
    """
    root, ids = Path(root), list(ids)
    if not root.is_dir():
        return []
    for leftover in root.rglob(f"*{PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    done = [erase_rows(p, ids, column) for p in sorted(root.rglob("*.parquet"))]
    return [d for d in done if d.removed]


#: Delimited text files :func:`erase_from_files` rewrites, and their separators.
DELIMITED = {".csv": ",", ".txt": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class CopiesErasure:
    """What :func:`erase_from_files` did: files rewritten, and files it could not read
    as a table with the id column (left as they are)."""

    rewritten: list[FileErasure]
    skipped: list[Path]

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.rewritten)


def erase_delimited_rows(
    path: Path, ids: Iterable[object], column: str = USER_COL, sep: str = ","
) -> FileErasure | None:
    """:func:`erase_rows` for a CSV/TSV file: every value is read as text and written
    back as text, so only the removed rows change; ``None`` without ``column``."""
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    if column not in frame.columns:
        return None
    hit = matches(frame[column].str.strip(), ids).to_numpy()
    if hit.any():
        kept = frame[~hit]
        replace_atomically(path, lambda tmp: kept.to_csv(tmp, sep=sep, index=False))
    return FileErasure(path, len(frame), int(hit.sum()))


def erase_from_files(root: Path, ids: Iterable[object], column: str = USER_COL) -> CopiesErasure:
    """Erase ``ids`` from every Parquet, CSV or TSV table under ``root`` (copies of
    landed batches: the landing folder's processed files, the quarantine).

    A file that is no such table, or has no ``column`` (a batch landed with
    other column names), is listed in ``skipped``, untouched.
    """
    root, ids = Path(root), list(ids)
    rewritten: list[FileErasure] = []
    skipped: list[Path] = []
    if not root.is_dir():
        return CopiesErasure(rewritten, skipped)
    for leftover in root.rglob(f"*{PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        try:
            if suffix == ".parquet":
                found = (
                    erase_rows(path, ids, column) if _hits(path, ids, column) is not None else None
                )
            elif suffix in DELIMITED:
                found = erase_delimited_rows(path, ids, column, DELIMITED[suffix])
            else:
                continue
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            log.warning("cannot read %s as a table (%s); left as it is", path, exc)
            found = None
        if found is None:
            skipped.append(path)
        elif found.removed:
            rewritten.append(found)
    return CopiesErasure(rewritten, skipped)


def count_rows(paths: Iterable[Path], ids: Iterable[object], column: str = USER_COL) -> int:
    """Rows of ``ids`` in the Parquet files ``paths`` (files without ``column`` hold none)."""
    ids = list(ids)
    return sum(int(h.sum()) for p in paths if (h := _hits(Path(p), ids, column)) is not None)
