"""Issue 14's hostile ingest scenarios, as the DAG's ingest step meets them; prints the figures.

    .venv/bin/python scripts/ingest_hostile.py --home /tmp/hostile [--rows 200000]

Every ingest runs in a process of its own through ``recsys.pipeline.ingest``
(what the ``recsys_ingest`` DAG task and ``recsys ingest`` call), with
``RECSYS_HOME`` pointing at a fresh folder per scenario, so the same script
measures any version of the code (``PYTHONPATH=/path/to/checkout``):

1. ``concurrency``: one big batch, a first ingest, two 500-row batches landed
   while it runs and a second ingest: rows lost = rows supplied - rows stored.
2. ``mid_write``: a 3,000-row CSV cut mid-line at row 1,500 while an ingest
   runs (settle window 60 s, longer than the pause); the writer finishes, a
   later ingest runs: rows stored, null timestamps.
3. ``re_export``: 8,000 rows as CSV, then the same rows shuffled as Parquet:
   duplicates accepted.
4. ``id_types``: integer ids, then ``u123`` ids: whether both were accepted.
5. ``folder_redrop``: a folder batch, the same name again with other rows, a
   later file: whether the later file's rows reached the store.
6. ``symlink``: a link to a mode-600 file outside the landing folder: whether
   its rows were read.

Files the scenarios land are dated an hour back (a finished export), except
the one being written, so a settle window sees them as complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

NOW = 1_800_000_000.0
COLS = ["user_id", "item_id", "rating", "timestamp"]
WORKER = (
    "import json, sys\n"
    "from recsys import pipeline\n"
    f"r = pipeline.ingest(arrival='2026-11-30', now={NOW!r})\n"
    "print(json.dumps({'new_rows': r['new_rows']}))\n"
)


def rows(n: int, seed: int, user_prefix: str = "") -> pd.DataFrame:
    """``n`` distinct events (ratings 1-5, timestamps before NOW)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 5000, n)
    frame = pd.DataFrame(
        {
            "user_id": [f"{user_prefix}{u}" for u in users] if user_prefix else users,
            "item_id": rng.integers(0, 2000, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": 1_700_000_000 + seed * 1_000_000 + np.arange(n),
        }
    )
    return frame


def finished(path: Path) -> Path:
    """Date ``path`` (and what it holds) an hour back: an export that is done."""
    old = time.time() - 3600
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (old, old))
    return path


class Home:
    """One scenario's RECSYS_HOME, with its landing folder and store."""

    def __init__(self, root: Path) -> None:
        if root.exists():
            shutil.rmtree(root)
        self.root = root
        self.landing = root / "landing"
        self.store = root / "data"
        self.landing.mkdir(parents=True)
        self.env = {
            **os.environ,
            "RECSYS_HOME": str(root),
            "RECSYS_DATA_PATH": str(self.store),
            "RECSYS_LANDING": str(self.landing),
        }
        self.env.pop("RECSYS_RATING_SCALE", None)

    def start(self, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ingest(self, **env: str) -> dict:
        return finish(self.start(**env))

    def stored(self) -> pd.DataFrame:
        from recsys.data import ingest

        if not ingest.is_store(self.store):
            return pd.DataFrame(columns=COLS)
        batches = ingest.read_manifest(self.store)["batches"]
        frames = [pd.read_parquet(self.store / b["file"]) for b in batches.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLS)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=900)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return {"rc": proc.returncode, "error": last if proc.returncode else ""}


def concurrency(home: Home, big: int) -> dict:
    finished(_csv(rows(big, 1), home.landing / "big.csv"))
    first = home.start()
    time.sleep(12)
    for seed, name in ((2, "small-a.csv"), (3, "small-b.csv")):
        finished(_csv(rows(500, seed), home.landing / name))
    second = home.start()
    runs = [finish(first), finish(second)]
    supplied, stored = big + 1000, len(home.stored())
    return {
        "supplied": supplied,
        "stored": stored,
        "rows_lost": supplied - stored if stored < supplied else 0,
        "duplicates_accepted": max(stored - supplied, 0),
        "runs": runs,
    }


def mid_write(home: Home) -> dict:
    text = rows(3000, 4).to_csv(index=False)
    lines = text.splitlines(keepends=True)
    head = "".join(lines[:1501])
    cut = lines[1501][: len(lines[1501]) // 2]
    path = home.landing / "stream.csv"
    window = {"RECSYS_INGEST_SETTLE_SECONDS": "60"}  # longer than the writer's pause
    with path.open("w") as out:
        out.write(head + cut)
        out.flush()
        during = home.ingest(**window)
        out.write(lines[1501][len(cut) :] + "".join(lines[1502:]))
    if path.exists():  # still in the landing folder: the next run comes long after
        finished(path)
    after = home.ingest(**window)
    stored = home.stored()
    return {
        "supplied": 3000,
        "stored": len(stored),
        "rows_lost": max(3000 - len(stored), 0),
        "null_timestamps": int(pd.to_numeric(stored["timestamp"], errors="coerce").isna().sum()),
        "runs": [during, after],
    }


def re_export(home: Home) -> dict:
    frame = rows(8000, 5)
    finished(_csv(frame, home.landing / "export.csv"))
    first = home.ingest()
    shuffled = frame.sample(frac=1.0, random_state=0)
    finished(_parquet(shuffled, home.landing / "export-again.parquet"))
    second = home.ingest()
    stored = len(home.stored())
    return {
        "supplied_distinct": 8000,
        "stored": stored,
        "duplicates_accepted": max(stored - 8000, 0),
        "runs": [first, second],
    }


def id_types(home: Home) -> dict:
    finished(_csv(rows(300, 6), home.landing / "ints.csv"))
    first = home.ingest()
    finished(_csv(rows(300, 7, user_prefix="u"), home.landing / "strings.csv"))
    second = home.ingest()
    kinds = {type(v).__name__ for v in home.stored()["user_id"]}
    return {"stored_user_id_types": sorted(kinds), "runs": [first, second]}


def folder_redrop(home: Home) -> dict:
    from recsys.data import Dataset
    from recsys.data.loaders import write_dataset

    runs = []
    for seed in (8, 9):
        folder = home.landing / "day1"
        write_dataset(Dataset(interactions=rows(200, seed), name="day1"), folder)
        finished(folder)
        if seed == 9:
            finished(_csv(rows(100, 10), home.landing / "later.csv"))
        runs.append(home.ingest())
    runs.append(home.ingest())
    stored = home.stored()
    later = rows(100, 10)
    return {
        "supplied": 500,
        "stored": len(stored),
        "later_file_rows_stored": int(stored["timestamp"].isin(later["timestamp"]).sum()),
        "rows_lost": max(500 - len(stored), 0),
        "runs": runs,
    }


def symlink(home: Home) -> dict:
    secret = home.root / "secret.csv"
    _csv(rows(50, 11), secret)
    secret.chmod(0o600)
    (home.landing / "linked.csv").symlink_to(secret)
    finished(home.landing / "linked.csv")
    run = home.ingest()
    return {"linked_rows_stored": len(home.stored()), "runs": [run]}


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="scratch folder (wiped)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the big batch")
    parser.add_argument("--only", default=None, help="comma-separated scenario names")
    args = parser.parse_args(argv)
    root = Path(args.home).resolve()
    scenarios = {
        "concurrency": lambda h: concurrency(h, args.rows),
        "mid_write": mid_write,
        "re_export": re_export,
        "id_types": id_types,
        "folder_redrop": folder_redrop,
        "symlink": symlink,
    }
    chosen = args.only.split(",") if args.only else list(scenarios)
    figures = {}
    for name in chosen:
        start = time.perf_counter()
        figures[name] = scenarios[name](Home(root / name))
        figures[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(figures[name]), flush=True)
    print(json.dumps({"load_average": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
