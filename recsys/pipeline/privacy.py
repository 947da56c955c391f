"""The right to erasure: forget one user everywhere recsys keeps them, and say so.

:func:`forget_user` is what ``recsys forget`` and the ``recsys_forget`` DAG
call. In this order:

1. the user goes on the forgotten-users list (:mod:`recsys.data.forgotten`),
   so the champion stops serving them a personalised list at once: the
   cold-start chain answers them, without their stored demographics;
2. their rows leave the interaction store: every batch file, and the
   interactions and users (demographics) tables of the data set the store's
   folder started from, each file rewritten atomically
   (:func:`recsys.data.ingest.erase_users`);
3. their rows leave every run folder: the batch recommendations (and the
   serving copies' batch lists), the validated copy, the splits, the feature
   tables and the per-user scores (ids there are pseudonyms when
   pseudonymisation is on), and the copies of landed batches (the landing
   folder's processed files, the quarantine); their segment leaves every
   pickled cold-start chain on disk (run folders, serving copies);
4. their entries leave the serving cache (Redis, every model and version);
5. an audit entry is appended to ``<RECSYS_HOME>/privacy/audit.jsonl``: the
   subject (a salted hash, never the id), when, why, and what was removed.

The next training run reads the store, so it is trained without them; until
a champion trained that way is promoted, step 1 keeps them out of personal
lists. The retraining policy (:mod:`recsys.promotion.retrain`) counts a
champion that still knows a forgotten user as a reason to retrain.

Every step can be run again: a second request for the same user removes
nothing more and records that it did not.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from recsys import config
from recsys.errors import InputError

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
#: How the reason of a request names the user when the operator typed their id into it.
REDACTED = "[user]"


def forget_user(
    user_id: object,
    *,
    reason: str | None = None,
    data_path: str | Path | None = None,
    now: float | None = None,
    cache_prefix: str | None = None,
) -> dict[str, Any]:
    """Erase ``user_id`` from the store, the run folders and the cache; block their lists.

    Args:
        user_id: the id as the data holds it (``7`` and ``"7"`` are the same user).
        reason: why (recorded; an occurrence of the id in it is replaced by ``[user]``).
        data_path: the interaction store (default :func:`recsys.config.data_path`).
        now: the request's time (default: the clock).
        cache_prefix: the serving cache's key prefix (tests use their own).

    Returns:
        The audit entry: ``subject``, ``at``, ``reason``, ``pseudonymised`` and
        ``counts`` (``before``/``removed``/``after`` per place: ``store``,
        ``demographics``, ``recommendations``; rows removed from the other
        ``run_folders`` files and the ``landed_copies``; ``cache`` keys
        deleted). It never holds the id.

    Raises:
        recsys.serving.forget.CacheError: ``RECSYS_REDIS_URL`` names a cache
            that cannot be reached (everything else is done by then; run
            the request again once it is back).
    """
    from recsys.data.forgotten import default_list
    from recsys.data.prepare import pseudonymise_ids

    store = _store_path(data_path)
    key = config.pseudonym_key()
    stored = pseudonymise_ids([user_id], key)[0] if key else user_id
    at = time.time() if now is None else float(now)
    subject = default_list().add(stored, at=at)
    log.info("forgetting subject %s", subject)
    counts = {
        **_erase_store(user_id, store),
        **_erase_run_folders(stored),
        "landed_copies": _erase_landed_copies(user_id),
    }
    entry = {
        "subject": subject,
        "at": at,
        "reason": redact(reason or "", [user_id, stored]),
        "pseudonymised": key is not None,
        "counts": counts,
    }
    try:
        counts["cache"] = _purge_cache({str(user_id), str(stored)}, cache_prefix)
    finally:
        _append_audit(entry)
    return entry


def redact(text: str, ids: list[object]) -> str:
    """``text`` with each whole occurrence of one of ``ids`` replaced by ``[user]``."""
    for value in sorted({str(i) for i in ids if str(i)}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", REDACTED, text)
    return text


def _store_path(data_path: str | Path | None) -> Path:
    """The store to erase from; refused before anything changes when recsys cannot rewrite it."""
    from recsys.data import ingest
    from recsys.data.loaders import INTERACTIONS_FILE

    path = Path(data_path or config.data_path())
    if not (ingest.is_store(path) or (path / INTERACTIONS_FILE).is_file()):
        raise InputError(
            f"{path} is not an interaction store or a recsys data folder, so recsys cannot "
            "rewrite it; erase the user at the source, or name the store with --data"
        )
    return path


def _erase_store(user_id: object, path: Path) -> dict[str, Any]:
    from recsys.data import ingest

    found = ingest.erase_users(path, [user_id])
    return {"store": found["interactions"], "demographics": found["users"]}


def _erase_run_folders(stored: object) -> dict[str, Any]:
    """The user's rows out of every run folder and of the serving copies' batch lists
    (counted together as ``recommendations``), and their segment out of every fitted
    cold-start chain kept beside them."""
    from recsys.data import erasure
    from recsys.pipeline import runfolder as rf
    from recsys.registry.snapshot import BATCH_FILE, serving_root

    root = config.runs_root()
    copies = sorted(serving_root().glob(f"*/*/{BATCH_FILE}"))
    recs = sorted(root.glob(f"*/{rf.RECOMMENDATIONS}")) + copies
    recs_before = _rows(recs)
    removed = erasure.erase_from_tree(root, [stored])
    removed += [done for done in (erasure.erase_rows(p, [stored]) for p in copies) if done.removed]
    lists = [r for r in removed if r.path.name in (rf.RECOMMENDATIONS, BATCH_FILE)]
    others = [r for r in removed if r not in lists]
    from_recs = sum(r.removed for r in lists)
    return {
        "recommendations": {
            "before": recs_before,
            "removed": from_recs,
            "after": recs_before - from_recs,
            "files": len(lists),
        },
        "run_folders": {
            "removed": sum(r.removed for r in others),
            "files": len(others),
            "cold_start_segments": _strip_segments(stored, [root, serving_root()]),
        },
    }


def _strip_segments(stored: object, roots: list[Path]) -> int:
    """Remove the user from the ``user_segments`` look-up of every pickled cold-start
    chain under ``roots`` (the run folders' shared chain, the serving copies'); the
    chain's popularity figures are aggregates and stay. Returns entries removed."""
    import pickle

    from recsys.data.erasure import replace_atomically

    total = 0
    for path in sorted(p for root in roots if root.is_dir() for p in root.rglob("cold_start.pkl")):
        chain = pickle.loads(path.read_bytes())
        segments = getattr(chain, "user_segments", None) or {}
        hits = {kind: [u for u in seg if str(u) == str(stored)] for kind, seg in segments.items()}
        found = sum(len(h) for h in hits.values())
        if not found:
            continue
        for kind, users in hits.items():
            for user in users:
                del segments[kind][user]
        replace_atomically(path, lambda tmp, c=chain: tmp.write_bytes(pickle.dumps(c)))
        total += found
    return total


def _erase_landed_copies(user_id: object) -> dict[str, Any]:
    """The user's rows out of the copies of landed batches: the landing folder's
    processed files and the quarantine (raw ids there: they precede pseudonymisation).

    Files recsys cannot read as a table with a ``user_id`` column are counted
    in ``skipped`` and left as they are: erase those at the source.
    """
    from recsys.data import erasure
    from recsys.data.ingest import DONE

    removed, files, skipped = 0, 0, 0
    for root in (config.landing_path() / DONE, config.recsys_home() / "quarantine"):
        done = erasure.erase_from_files(root, [user_id])
        removed += done.removed
        files += len(done.rewritten)
        skipped += len(done.skipped)
        for path in done.skipped:
            log.warning("%s may hold the user's rows but is no table recsys can rewrite", path)
    return {"removed": removed, "files": files, "skipped": skipped}


def _rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in paths)


def _purge_cache(user_keys: set[str], prefix: str | None) -> dict[str, Any]:
    """Delete the user's cached lists; a cache nobody configured may be absent."""
    from recsys.serving import forget

    named = config.redis_url()
    url = named or config.DEFAULT_REDIS_URL
    try:
        deleted = forget.purge_cached_lists(sorted(user_keys), url=url, prefix=prefix)
    except forget.CacheError:
        if named:
            raise
        log.info("no serving cache at %s (RECSYS_REDIS_URL is not set); nothing to purge", url)
        return {"reachable": False, "deleted": 0}
    return {"reachable": True, "deleted": deleted}


def _append_audit(entry: dict[str, Any]) -> Path:
    folder = config.privacy_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / AUDIT_FILE
    with path.open("a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


def read_audit() -> list[dict[str, Any]]:
    """Every erasure recorded so far, oldest first."""
    path = config.privacy_dir() / AUDIT_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def forgotten_known_by(user_ids: Any) -> int:
    """How many of ``user_ids`` (a model's users, as it stores them) are forgotten:
    a champion knowing any of them was trained before their erasure."""
    from recsys.data.forgotten import default_list

    return int(default_list().mask(list(user_ids)).sum())
