"""Issue 14's ingest defects, each reproduced as it was found (real processes for the races).

Before the fix, on main (``scripts/ingest_hostile.py``): two ingests at once
lost 1,000 of 201,000 rows and one died in ``os.replace``; a CSV cut mid-line
lost 1,499 of 3,000 rows and stored a null timestamp; a shuffled Parquet
re-export added 8,000 duplicates; ``u123`` ids joined an integer store; a
folder dropped again under its name blocked every later file; a symlink was
followed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.constants import INTERACTION_COLS, TIME_COL, USER_COL
from recsys.data import ingest, landing
from recsys.data.storelock import StoreLockedError

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0


def events(n: int, seed: int, first_time: int | None = None) -> pd.DataFrame:
    """``n`` distinct events: integer ids, ratings 1-5, one timestamp each."""
    rng = np.random.default_rng(seed)
    start = first_time if first_time is not None else 1_700_000_000 + seed * 1_000_000
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, 3000, n),
            "item_id": rng.integers(0, 1000, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": start + np.arange(n),
        }
    )


def land_folder(frame: pd.DataFrame, folder: Path) -> Path:
    """A folder batch in the recsys format (its interactions only)."""
    from recsys.data import Dataset
    from recsys.data.loaders import write_dataset

    write_dataset(Dataset(interactions=frame, name=folder.name), folder)
    return folder


def land(frame: pd.DataFrame, path: Path) -> Path:
    """Land a whole file the way a careful writer does: a dot name, then a rename."""
    tmp = path.with_name(f".{path.name}.part")
    frame.to_parquet(tmp, index=False) if path.suffix == ".parquet" else frame.to_csv(
        tmp, index=False
    )
    os.replace(tmp, path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> dict[str, Path]:
    """A deployment of its own: RECSYS_HOME, its landing folder, store and quarantine."""
    paths = {
        "home": tmp_path,
        "landing": tmp_path / "landing",
        "store": tmp_path / "data",
        "quarantine": tmp_path / "quarantine",
    }
    paths["landing"].mkdir()
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    monkeypatch.setenv("RECSYS_LANDING", str(paths["landing"]))
    monkeypatch.setenv("RECSYS_DATA_PATH", str(paths["store"]))
    monkeypatch.setenv("RECSYS_RATING_SCALE", "1,5")
    return paths


def run_ingest(home, **kw) -> ingest.IngestResult:
    kw.setdefault("settle_seconds", 0.0)
    return ingest.ingest_landing(
        home["landing"], home["store"], home["quarantine"], arrival="2026-11-30", now=NOW, **kw
    )


def stored(home) -> pd.DataFrame:
    return ingest.read_store(home["store"]).interactions


def left_in_landing(home) -> list[str]:
    return sorted(p.name for p in home["landing"].iterdir() if p.name != ingest.DONE)


def cli_process(home, *args: str) -> subprocess.Popen:
    """``recsys ingest ARGS`` in a process of its own."""
    return _process([sys.executable, "-m", "recsys.cli", "ingest", *args])


#: What the recsys_ingest DAG's task runs, in a process of its own (prints the result).
DAG_STEP = (
    "import json\n"
    "from recsys import pipeline\n"
    f"print(json.dumps(pipeline.ingest(arrival='2026-11-30', now={NOW!r})))\n"
)


def dag_step_process(home) -> subprocess.Popen:
    return _process([sys.executable, "-c", DAG_STEP], RECSYS_INGEST_SETTLE_SECONDS="0")


def _process(argv: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ------------------------------------------------------------------ concurrency
def _race(home, big_rows: int) -> None:
    """Two ingests start together on a big and a small batch (the DAG's step and
    ``recsys ingest``); once the big one is taken, a third batch lands and a third
    ingest starts while the first ones may still validate and commit."""
    land(events(big_rows, 1), home["landing"] / "big.csv")
    land(events(500, 2), home["landing"] / "small-a.csv")
    procs = [cli_process(home, "--settle-seconds", "0", "--json"), dag_step_process(home)]
    deadline = time.monotonic() + 600
    while (home["landing"] / "big.csv").exists() and any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    land(events(500, 3), home["landing"] / "small-b.csv")
    procs.append(cli_process(home, "--settle-seconds", "0", "--json"))
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    results = [json.loads(out) for out, _ in outs]
    sources = sorted(b["source"] for r in results for b in r["accepted"])
    assert sources == ["big.csv", "small-a.csv", "small-b.csv"]  # each by exactly one
    supplied = big_rows + 1000
    assert ingest.store_rows(home["store"]) == supplied  # rows lost: 0
    assert len(stored(home).drop_duplicates()) == supplied  # duplicates accepted: 0
    assert left_in_landing(home) == []


def test_two_ingests_at_once_on_one_landing_folder_lose_no_row(home):
    """Regression (issue 14, 2): the second writer's manifest replaced the first's
    (1,000 rows lost) and it died with a raw FileNotFoundError in os.replace."""
    _race(home, 5_000)


@pytest.mark.slow
def test_the_issue_race_with_a_200k_row_batch(home):
    _race(home, 200_000)


def test_a_store_held_by_another_process_gives_a_clear_error_to_ingest_and_erasure(
    home, monkeypatch, capsys
):
    """erase_users and ingest take the same lock; a holder that does not let go is
    named, never a raw traceback."""
    land(events(10, 4), home["landing"] / "a.csv")
    run_ingest(home)
    land(events(10, 5), home["landing"] / "b.csv")
    code = (
        "import sys\n"
        "from recsys.data.storelock import store_lock\n"
        "with store_lock(sys.argv[1], 'a test holding it'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(home["store"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("RECSYS_STORE_LOCK_TIMEOUT", "0.3")
        with pytest.raises(StoreLockedError, match=f"process {holder.pid} .a test holding it"):
            ingest.erase_users(home["store"], [1])
        assert main(["ingest", "--settle-seconds", "0"]) == 2
        err = capsys.readouterr().err
        assert "is locked by process" in err and "RECSYS_STORE_LOCK_TIMEOUT" in err
        assert "Traceback" not in err
        assert left_in_landing(home) == ["b.csv"]  # nothing claimed while it waited
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert run_ingest(home).new_rows == 10  # once it is free, the batch goes in


def test_a_claim_left_by_a_killed_ingest_is_taken_over(home):
    land(events(40, 6), home["landing"] / "a.csv")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from recsys.data import landing\n"
        "found = landing.claim_ready(Path(sys.argv[1]), 0.0)\n"
        "print(len(found.claims), flush=True)\n"
        "time.sleep(600)\n"
    )
    claimer = subprocess.Popen(
        [sys.executable, "-c", code, str(home["landing"])],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert claimer.stdout.readline().strip() == "1"
    assert run_ingest(home).new_rows == 0  # a live claim is left to its process
    claimer.send_signal(signal.SIGKILL)
    claimer.wait(timeout=30)
    result = run_ingest(home)
    assert [b["source"] for b in result.accepted] == ["a.csv"] and result.new_rows == 40


# ------------------------------------------------------------ complete batches
def test_a_csv_being_written_is_left_for_a_later_run_then_ingested_whole(home):
    """Regression (issue 3): a CSV paused mid-line at row 1,500 of 3,000 was ingested
    (1,500 rows and the cut row with a null timestamp), moved away, and its second half
    never read."""
    text = events(3000, 7).to_csv(index=False)
    lines = text.splitlines(keepends=True)
    path = home["landing"] / "stream.csv"
    with path.open("w") as out:
        out.write("".join(lines[:1501]) + lines[1501][:9])
        out.flush()
        during = run_ingest(home, settle_seconds=30)
        assert [w["source"] for w in during.waiting] == ["stream.csv"]
        assert during.new_rows == 0 and not ingest.is_store(home["store"])
        out.write(lines[1501][9:] + "".join(lines[1502:]))
    assert left_in_landing(home) == ["stream.csv"]
    still = run_ingest(home, settle_seconds=30)  # just finished: still within the window
    assert still.new_rows == 0 and len(still.waiting) == 1
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))  # untouched since: it has settled
    after = run_ingest(home, settle_seconds=30)
    assert after.new_rows == 3000
    assert len(stored(home)) == 3000 and stored(home)[TIME_COL].notna().all()


def test_a_batch_its_writer_goes_on_writing_after_the_claim_is_not_half_ingested(home):
    """With no settle window (or a writer pausing longer than it) a file is claimed while
    still open; what the writer adds to the renamed file afterwards must not be lost."""
    path, stop = home["landing"] / "stream.csv", home["home"] / "stop"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "out, stop, n = open(sys.argv[1], 'w'), Path(sys.argv[2]), 0\n"
        "out.write('user_id,item_id,rating,timestamp\\n')\n"
        "while n < 20 or not stop.exists():\n"
        "    out.write(f'{n % 97},{n % 89},4.0,{1_700_000_000 + n}\\n'); out.flush(); n += 1\n"
        "    if n == 20: print('started', flush=True)\n"
        "    time.sleep(0.02)\n"
        "out.close(); print(n, flush=True)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "started"
    during = run_ingest(home)
    assert during.new_rows == 0 and not during.rejected
    assert [w["source"] for w in during.waiting] == ["stream.csv"]
    assert "changed after it was claimed" in during.waiting[0]["reason"]
    stop.touch()
    written = int(writer.stdout.readline())
    writer.wait(timeout=30)
    after = run_ingest(home)  # takes the claim over, whole
    assert [b["source"] for b in after.accepted] == ["stream.csv"]
    assert after.new_rows == written == ingest.store_rows(home["store"])


def test_a_done_marker_or_success_file_marks_a_batch_complete_at_once(home):
    land(events(20, 8), home["landing"] / "now.csv")
    (home["landing"] / "now.csv.done").touch()
    folder = land_folder(events(30, 9), home["landing"] / "export")
    land(events(50, 10), home["landing"] / "fresh.csv")  # no marker, just written
    result = run_ingest(home, settle_seconds=3600)
    assert [b["source"] for b in result.accepted] == ["now.csv"]
    assert sorted(w["source"] for w in result.waiting) == ["export", "fresh.csv"]
    (folder / landing.SUCCESS_MARKER).touch()
    result = run_ingest(home, settle_seconds=3600)
    assert [b["source"] for b in result.accepted] == ["export"] and result.new_rows == 30
    assert left_in_landing(home) == ["fresh.csv"]  # the markers went with their batches


# --------------------------------------------------------------- content checks
def test_the_same_rows_reexported_as_shuffled_parquet_add_nothing_and_are_recorded(home):
    """Regression (issue 4): a re-export with other bytes was accepted again
    (6,000 duplicates of 8,000), and every later training run failed."""
    rows = events(8000, 11)
    land(rows, home["landing"] / "export.csv")
    assert run_ingest(home).new_rows == 8000
    first = next(iter(ingest.read_manifest(home["store"])["batches"]))
    land(rows.sample(frac=1.0, random_state=0), home["landing"] / "export-again.parquet")
    overlap = pd.concat([rows.head(50), events(50, 12)])  # half seen, half new
    land(overlap, home["landing"] / "overlap.csv")

    result = run_ingest(home)

    assert result.new_rows == 50 and result.duplicate_rows == 8050
    (dup,) = result.duplicates
    assert (dup["source"], dup["rows"], dup["duplicate_rows"]) == ("export-again.parquet", 0, 8000)
    manifest = ingest.read_manifest(home["store"])
    assert manifest["duplicates"][dup["batch"]]["duplicate_of"] == [first]
    (added,) = result.accepted
    assert manifest["batches"][added["batch"]]["duplicate_rows"] == 50
    assert ingest.store_rows(home["store"]) == 8050
    assert not stored(home).duplicated(list(INTERACTION_COLS)).any()


def test_rows_without_timestamps_are_repeats_and_never_join_a_timed_store(home):
    """Without timestamps a repeated pair is a repeat interaction (the interactions
    suite's rule), so it is kept; a batch whose timestamp presence differs from the
    store's would break the temporal split and is quarantined."""
    clicks = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 5, 6], "rating": [1.0] * 3})
    land(clicks, home["landing"] / "clicks.csv")
    assert run_ingest(home).new_rows == 3
    land(clicks.iloc[::-1], home["landing"] / "clicks-again.parquet")
    land(events(5, 22), home["landing"] / "timed.csv")
    result = run_ingest(home)
    assert [b["source"] for b in result.accepted] == ["clicks-again.parquet"]
    (rejected,) = result.rejected
    assert rejected["source"] == "timed.csv"
    assert "this batch has timestamps but the store's rows have none" in rejected["reason"]
    assert ingest.store_rows(home["store"]) == 6


def test_text_ids_into_an_integer_store_are_quarantined_then_their_good_rows_replayed(home, capsys):
    """Regression (issue 4): integer ids in one batch and ``u123`` in another were both
    accepted. Now the batch is quarantined with the reason; ``--replay --drop-invalid``
    takes its good rows and records what it dropped."""
    land(events(100, 13), home["landing"] / "ints.csv")
    run_ingest(home)
    mixed = events(10, 14).astype({USER_COL: object})
    mixed.loc[[0, 3, 4], USER_COL] = ["u123", "u9", "u77"]
    land(mixed, home["landing"] / "mixed.csv")

    result = run_ingest(home)

    (rejected,) = result.rejected
    assert "user_id: the store holds integer ids, this batch text ones" in rejected["reason"]
    assert "'u123'" in rejected["reason"] and ingest.store_rows(home["store"]) == 100
    batch = rejected["batch"]
    assert ingest.quarantined(home["quarantine"]) == [batch]

    assert main(["ingest", "--replay", batch]) == 2  # without --drop-invalid: still refused
    assert "--drop-invalid" in capsys.readouterr().err
    assert main(["ingest", "--replay", batch, "--drop-invalid"]) == 0
    assert "7 new rows, 3 invalid rows dropped" in capsys.readouterr().out
    entry = ingest.read_manifest(home["store"])["batches"][batch]
    assert entry["replay_of"] == batch and entry["rows"] == 7
    assert entry["dropped"]["reasons"] == {
        "user_id is not an integer id as in the store": {"rows": 3, "first_rows": [1, 4, 5]}
    }
    assert ingest.store_rows(home["store"]) == 107
    assert stored(home)[USER_COL].map(type).eq(int).all()
    assert main(["ingest", "--replay", batch, "--drop-invalid"]) == 2
    assert "replayed already" in capsys.readouterr().err


def test_a_folder_dropped_again_under_its_name_never_blocks_later_files(home):
    """Regression (issue 4): a re-dropped folder batch of an existing name failed every
    later ingest with ``Directory not empty``, so later files were never ingested."""
    for seed, later in ((15, False), (16, True)):
        land_folder(events(20, seed), home["landing"] / "day1")
        if later:
            land(events(5, 17), home["landing"] / "later.csv")
        run_ingest(home)
    assert ingest.store_rows(home["store"]) == 45
    assert left_in_landing(home) == []
    assert len(list((home["landing"] / ingest.DONE).glob("*/day1"))) == 2


def test_a_symlink_in_the_landing_folder_is_refused_never_followed(home):
    """Regression (issue 9): a link to a mode-600 file was followed and its first line
    reached a mode-644 quarantine report."""
    secret = home["home"] / "secret.csv"
    land(events(5, 18).assign(user_id=424242), secret)
    secret.chmod(0o600)
    (home["landing"] / "linked.csv").symlink_to(secret)
    folder = land_folder(events(5, 19), home["landing"] / "folder")
    (folder / "extra.csv").symlink_to(secret)

    result = run_ingest(home)

    assert sorted(b["source"] for b in result.refused) == ["folder", "linked.csv"]
    assert all("never followed" in b["reason"] for b in result.refused)
    assert not ingest.is_store(home["store"]) or ingest.store_rows(home["store"]) == 0
    assert secret.read_text().count("424242") == 5  # untouched
    for path in home["quarantine"].rglob("*"):
        assert path.is_symlink() is False
        assert not path.is_file() or "424242" not in path.read_text(errors="replace")
    assert left_in_landing(home) == []


# ------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--drop-invalid"], "--drop-invalid only applies with --replay BATCH"),
        (["--settle-seconds", "-1"], "--settle-seconds must be seconds >= 0"),
        (["--arrival", "2026-13-01"], "--arrival must be a date YYYY-MM-DD"),
        (["--replay", "nope"], "--replay nope: no quarantined batch of that name"),
        (["--replay", "x", "--settle-seconds", "1"], "drop --landing and --settle-seconds"),
    ],
)
def test_bad_ingest_flags_are_clear_errors(home, capsys, argv, message):
    assert main(["ingest", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_recsys_ingest_prints_a_summary_and_replays_a_failed_batch_s_good_rows(home, capsys):
    land(events(30, 20), home["landing"] / "good.csv")
    bad = events(5, 21)
    bad.loc[[1, 3], "rating"] = 99.0  # off the deployment's 1-5 scale
    land(bad, home["landing"] / "bad.csv")
    assert main(["ingest", "--settle-seconds", "0"]) == 1  # a batch was rejected
    out = capsys.readouterr().out
    assert "30 new rows from 2 batch(es)" in out
    assert "accepted   good.csv: 30 new rows" in out
    assert "rejected   bad.csv:" in out and "rating" in out
    batch = re.search(r"recsys ingest --replay (\S+) --drop-invalid", out).group(1)
    assert main(["ingest", "--replay", batch, "--drop-invalid", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["rows"] == 3
    assert outcome["dropped"]["reasons"] == {
        "rating is above the scale": {"rows": 2, "first_rows": [2, 4]}
    }
    listing = pd.read_csv(outcome["dropped"]["listing"])
    assert listing["row"].tolist() == [2, 4]
    assert ingest.store_rows(home["store"]) == 33


def test_the_readme_ingest_section_runs_as_written(tmp_path):
    """The README's ingest block, each command as written, from a checkout's root
    (``.venv`` linked in) with the embedded default's folders under ``var/``."""
    readme = (ROOT / "README.md").read_text()
    body = readme.split("## Ingest\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", body, flags=re.S)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_"))}
    env.update(RECSYS_HOME=str(tmp_path / "var"), PYTHONPATH=str(ROOT))
    outputs = []
    for command in [c for c in block.replace("\\\n", " ").splitlines() if c.strip()]:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"`{command}`: {done.stderr[-2000:]}"
        outputs.append(done.stdout)
    assert ingest.store_rows(tmp_path / "var" / "data") > 0
    assert any("accepted" in out for out in outputs)
