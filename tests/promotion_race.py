"""Forced promotion races between real processes, on a real MLflow store.

Used by ``test_promotion_races.py``, and runnable by hand to measure::

    python tests/promotion_race.py measure --rounds 20 [--uri postgresql+psycopg2://...]

One *round* is a registered model whose ``champion`` is version 1, plus
versions 2 and 3, each judged (a gate decision that promotes) against
version 1 by its own worker process. The two workers are long-lived (each
imports MLflow once) and meet at a file barrier before every round, so both
apply their decision within a millisecond of each other.

A round ends in a **double promotion** when both versions carry a ``promote``
verdict against version 1; its **lineage is broken** when the champion's
decision does not name the version ``previous_champion`` points at;
**rollback** is right when it brings back the version the champion replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "race"
VERDICT = "recsys.decision.verdict"
AGAINST = "recsys.decision.champion_version"


def round_name(index: int, prefix: str = PREFIX) -> str:
    return f"{prefix}-{index:02d}"


# ------------------------------------------------------------------- set-up
def prepare(rounds: int, prefix: str = PREFIX) -> None:
    """In the configured store: ``rounds`` registered models, each with v1 the champion
    (by a first-run decision) and v2, v3 registered, undecided.

    The versions are registry entries of one finished run (the decisions are
    logged on it); nothing here loads them, so no model is logged.
    """
    from recsys import registry
    from recsys.promotion.decision import Decision

    experiment = registry.setup()
    client = registry.client()
    run = client.create_run(experiment, run_name="race-source")
    client.set_terminated(run.info.run_id)
    source = f"{run.info.artifact_uri}/model"
    decision = Decision(True, 0.1, None, 0.0, "ndcg@10", "first champion", kind="first_run")
    for index in range(rounds):
        name = round_name(index, prefix)
        client.create_registered_model(name)
        for _ in range(3):
            client.create_model_version(name, source, run_id=run.info.run_id)
        registry.apply_decision(name, 1, decision)


# ------------------------------------------------------------------ workers
def _barrier(folder: Path, index: int, worker: int) -> None:
    (folder / f"ready-{index}-{worker}").touch()
    other = folder / f"ready-{index}-{1 - worker}"
    deadline = time.monotonic() + 120
    while not other.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {1 - worker} never reached round {index}")
        time.sleep(0.0005)


def work(folder: Path, rounds: int, worker: int, prefix: str = PREFIX) -> None:
    """Worker ``worker`` (0 or 1): in every round, promote version ``2 + worker``
    against champion v1, at the same moment as the other worker."""
    from recsys import registry
    from recsys.promotion.decision import Decision

    registry.setup()
    registry.client().search_registered_models(max_results=1)  # warm: connect first
    outcomes = []
    for index in range(rounds):
        version = 2 + worker
        decision = Decision(
            promote=True,
            candidate_score=0.2 + worker / 100,
            champion_score=0.1,
            margin=0.0,
            metric="ndcg@10",
            reason=f"worker {worker} beats v1",
            candidate_version=version,
            champion_version=1,
        )
        _barrier(folder, index, worker)
        try:
            recorded = registry.apply_decision(round_name(index, prefix), version, decision)
            outcomes.append({"round": index, "promote": getattr(recorded, "promote", True)})
        except Exception as exc:  # noqa: BLE001 - the harness reports every failure
            outcomes.append({"round": index, "error": f"{type(exc).__name__}: {exc}"})
    (folder / f"worker-{worker}.json").write_text(json.dumps(outcomes))


def race(folder: Path, rounds: int, env: dict[str, str], prefix: str = PREFIX) -> list[dict]:
    """Run both workers as real processes; return what each reported, by worker."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "work", str(folder), str(rounds), str(worker), prefix],
            env=env,
        )
        for worker in (0, 1)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    if any(codes):
        raise RuntimeError(f"race workers exited with {codes}")
    return [json.loads((folder / f"worker-{w}.json").read_text()) for w in (0, 1)]


# ------------------------------------------------------------------ verdict
def inspect(rounds: int, *, roll_back: bool = True, prefix: str = PREFIX) -> list[dict]:
    """Per round: ``double`` (two promotions against v1), ``lineage_ok``, ``rollback_ok``."""
    from recsys import registry

    client = registry.client()
    found = []
    for index in range(rounds):
        name = round_name(index, prefix)
        tags = {v: client.get_model_version(name, str(v)).tags for v in (2, 3)}
        promoted = [
            v for v, t in tags.items() if t.get(VERDICT) == "promote" and t.get(AGAINST) == "1"
        ]
        held = registry.aliases(name)
        champion, previous = held.get("champion"), held.get("previous_champion")
        chain = _chain(client, name, champion)
        row = {
            "round": index,
            "promoted_against_v1": promoted,
            "double": len(promoted) > 1,
            "champion": champion,
            "previous_champion": previous,
            # Every version promoted is on the champion's line, and previous_champion
            # is the version the champion's decision replaced.
            "lineage_ok": set(chain) >= {1, *promoted} and len(chain) > 1 and chain[1] == previous,
        }
        if roll_back:
            registry.rollback(name, reason="race check")
            restored = registry.aliases(name).get("champion")
            row["rollback_ok"] = row["lineage_ok"] and restored == chain[1]
        found.append(row)
    return found


def _chain(client, name: str, version: int | None) -> list[int]:
    """The champion's line: it, the version its decision replaced, that one's, ... to v1."""
    line: list[int] = []
    while version is not None and version not in line:
        line.append(version)
        against = client.get_model_version(name, str(version)).tags.get(AGAINST, "none")
        version = int(against) if against.isdigit() else None
    return line


def measure(rounds: int, folder: Path, env: dict[str, str], prefix: str = PREFIX) -> dict:
    """Prepare ``rounds`` rounds, race them, and count what went wrong."""
    prepare(rounds, prefix)
    reports = race(folder / f"race-{prefix}", rounds, env, prefix)
    rows = inspect(rounds, prefix=prefix)
    return {
        "rounds": rounds,
        "double_promotions": sum(r["double"] for r in rows),
        "lineage_broken": sum(not r["lineage_ok"] for r in rows),
        "rollback_wrong": sum(not r["rollback_ok"] for r in rows),
        "errors": [o for report in reports for o in report if "error" in o],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("work")
    w.add_argument("folder", type=Path)
    w.add_argument("rounds", type=int)
    w.add_argument("worker", type=int)
    w.add_argument("prefix", nargs="?", default=PREFIX)
    m = sub.add_parser("measure")
    m.add_argument("--rounds", type=int, default=20)
    m.add_argument("--uri", help="tracking URI (default: a fresh SQLite store)")
    m.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "work":
        work(args.folder, args.rounds, args.worker, args.prefix)
        return
    import tempfile

    folder = args.folder or Path(tempfile.mkdtemp(prefix="recsys-race-"))
    os.environ["MLFLOW_TRACKING_URI"] = args.uri or f"sqlite:///{folder / 'mlflow.db'}"
    os.environ.setdefault("RECSYS_ARTIFACT_ROOT", (folder / "artifacts").as_uri())
    os.environ.setdefault("RECSYS_HOME", str(folder / "home"))
    result = measure(args.rounds, folder, dict(os.environ))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
