"""Monitoring: drift and decay of every accepted batch, and the retraining decision.

What the ``recsys_monitor`` DAG (and ``recsys monitor``) calls, in two steps:

- :func:`measure_batches`: every batch of the interaction store that the
  champion was not trained on and that was not measured against it yet is
  measured against the champion's training data and served model
  (:mod:`recsys.evaluation.drift`); one line per batch is appended to
  ``<RECSYS_HOME>/monitor/<model>/measurements.jsonl``;
- :func:`decide_retraining`: each measured batch without a decision gets one
  (:mod:`recsys.promotion.retrain`); one line each in ``decisions.jsonl``,
  with every figure, its threshold and the verdict. With no new batch, one
  decision says whether anything else (an erasure, no champion) calls for
  retraining, or that the data did not change.

Both can be run again: a batch is measured once per champion version and
decided once. :func:`read_monitoring` gives the page both histories.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import config
from recsys.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder
from recsys.serialize import json_safe

log = logging.getLogger(__name__)

MEASUREMENTS = "measurements.jsonl"
DECISIONS = "decisions.jsonl"


class MonitorLog:
    """The monitoring records of one registered model (two append-only JSON Lines files)."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.folder = (root or config.monitor_dir()) / config.safe_name(name)

    def measurements(self) -> list[dict[str, Any]]:
        return _read_lines(self.folder / MEASUREMENTS)

    def decisions(self) -> list[dict[str, Any]]:
        return _read_lines(self.folder / DECISIONS)

    def add_measurement(self, record: dict[str, Any]) -> None:
        self._append(MEASUREMENTS, record)

    def add_decision(self, record: dict[str, Any]) -> None:
        self._append(DECISIONS, record)

    def last_retrain_at(self) -> float | None:
        times = [d["at"] for d in self.decisions() if d.get("retrain")]
        return max(times) if times else None

    def _append(self, name: str, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / name).open("a") as out:
            out.write(json.dumps(json_safe(record), sort_keys=True) + "\n")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------- measure
def measure_batches(
    *,
    data_path: str | Path | None = None,
    model_name: str | None = None,
    now: float,
    k: int = 10,
) -> dict[str, Any]:
    """Measure every new batch of the store against the champion (see the module docstring).

    Args:
        data_path: the interaction store (default :func:`recsys.config.data_path`).
        model_name: the registered model (default: the store's own).
        now: the measurement's time (the DAG's logical date).
        k: the cut-off of the prequential hit rate and NDCG.

    Returns:
        ``{"registered_model", "champion_version", "measured": [batch ids]}``
        (``champion_version`` ``None``: nothing to measure against).
    """
    from recsys import registry
    from recsys.data import ingest

    store = Path(data_path or config.data_path())
    name = model_name or config.model_name_for(str(store))
    champion = registry.get_champion(name)
    result: dict[str, Any] = {"registered_model": name, "champion_version": None, "measured": []}
    if champion is None or not ingest.is_store(store):
        return result
    version = int(champion["version"])
    result["champion_version"] = version
    served = _served(name)
    folder = _champion_folder(champion)
    reference = _reference(folder, served)
    records = MonitorLog(name)
    baselines: dict[int, dict[str, Any]] = {}
    for bid, entry in _new_batches(store, folder, records, version):
        batch = _pseudonymised(pd.read_parquet(store / entry["file"]))
        if batch.empty:
            continue
        metrics = _measure(batch, reference, served, k, baselines)
        records.add_measurement(
            {
                "batch": bid,
                "source": entry.get("source"),
                "arrival": entry.get("arrival"),
                "rows": int(len(batch)),
                "champion_version": version,
                "measured_at": float(now),
                "k": k,
                "metrics": metrics,
            }
        )
        result["measured"].append(bid)
        log.info("measured batch %s against %s v%s: %s", bid, name, version, metrics)
    return result


def _served(name: str) -> Any:
    from recsys.registry.snapshot import current_copy

    snapshot, copy = current_copy(name)
    return snapshot.served(copy)


def _champion_folder(champion: dict[str, Any]) -> RunFolder | None:
    key = champion["run_tags"].get("recsys.run_key")
    folder = RunFolder(key) if key else None
    return folder if folder is not None and folder.file(rf.TRAIN).is_file() else None


def _reference(folder: RunFolder | None, served: Any) -> Any:
    """The champion's training split (and test split); its training matrix when the
    run folder is gone (no time, no test split: no activity window, no baseline)."""
    from recsys.evaluation.drift import Reference

    if folder is not None:
        return Reference(folder.train(), folder.test() if folder.file(rf.TEST).is_file() else None)
    X = served.X.tocoo()
    train = pd.DataFrame(
        {
            USER_COL: served.id_map.users.to_numpy()[X.row],
            ITEM_COL: served.id_map.items.to_numpy()[X.col],
            RATING_COL: X.data.astype(float),
            TIME_COL: pd.array([None] * X.nnz, dtype="Int64"),
        }
    )
    return Reference(train, None)


def _new_batches(
    store: Path, folder: RunFolder | None, records: MonitorLog, version: int
) -> list[tuple[str, dict[str, Any]]]:
    """Batches the champion did not train on and that were not measured against it, in
    arrival order."""
    from recsys.data import ingest

    trained = set(
        ((folder.read_json_or_none(rf.INPUT) if folder else None) or {}).get("store_batches") or []
    )
    done = {m["batch"] for m in records.measurements() if m["champion_version"] == version}
    batches = ingest.read_manifest(store)["batches"].items()
    ordered = sorted(batches, key=lambda kv: (kv[1]["arrival"], kv[1]["file"]))
    return [(bid, entry) for bid, entry in ordered if bid not in trained and bid not in done]


def _pseudonymised(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch's user ids as the champion knows them (pseudonyms when that is on)."""
    from recsys.data.prepare import pseudonymise_users

    key = config.pseudonym_key()
    return pseudonymise_users(batch, key) if key else batch


def _measure(
    batch: pd.DataFrame, reference: Any, served: Any, k: int, baselines: dict[int, dict]
) -> dict[str, Any]:
    from recsys.evaluation import drift

    metrics: dict[str, Any] = drift.measure_drift(batch, reference)
    current = drift.prequential(served, batch, k)
    size = len(batch)
    if size not in baselines:
        baselines[size] = (
            drift.prequential_baseline(served, reference.test, size, k)
            if reference.test is not None
            else {f"hit_rate@{k}": None, f"ndcg@{k}": None}
        )
    baseline = baselines[size]
    metrics.update(current)
    metrics.update({f"baseline_{m}": v for m, v in baseline.items()})
    metrics.update(drift.decay(current, baseline, k))
    return metrics


# -------------------------------------------------------------------- decide
def decide_retraining(
    *,
    data_path: str | Path | None = None,
    model_name: str | None = None,
    now: float,
    settings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Decide on every measured batch that has no decision yet (see the module docstring).

    Args:
        data_path, model_name: as in :func:`measure_batches`.
        now: the decision's time (the DAG's logical date): the cooldown's clock.
        settings: policy overrides on top of ``RECSYS_MONITOR_*``
            (:class:`recsys.promotion.retrain.RetrainPolicy` fields).

    Returns:
        ``{"registered_model", "retrain": bool, "action", "reason",
        "decisions": [{"batch", "action", "reason"}]}``: ``retrain`` is true
        when any new decision was ``retrain``; ``action``/``reason`` are the
        last decision's.
    """
    from recsys import registry
    from recsys.promotion.retrain import RetrainPolicy
    from recsys.promotion.retrain import decide_retraining as decide

    store = Path(data_path or config.data_path())
    name = model_name or config.model_name_for(str(store))
    policy = RetrainPolicy.with_overrides({**config.monitor_overrides(), **(settings or {})})
    records = MonitorLog(name)
    champion = registry.get_champion(name)
    version = int(champion["version"]) if champion else None
    erasures = _erasures_pending(name) if champion else 0
    decided = {(d.get("batch"), d.get("champion_version")) for d in records.decisions()}
    todo = [
        m
        for m in records.measurements()
        if m["champion_version"] == version and (m["batch"], version) not in decided
    ]
    made = []
    common = {"policy": policy, "has_champion": champion is not None, "erasures_pending": erasures}
    for m in todo:
        made.append(
            decide(
                m["metrics"],
                now=now,
                last_retrain_at=records.last_retrain_at(),
                changed=True,
                batch=m["batch"],
                champion_version=version,
                **common,
            )
        )
        records.add_decision(made[-1].to_dict())
    if not todo:
        made.append(
            decide(
                None,
                now=now,
                last_retrain_at=records.last_retrain_at(),
                changed=False,
                has_data=_has_rows(store),
                champion_version=version,
                **common,
            )
        )
        records.add_decision(made[-1].to_dict())
    for d in made:
        log.info("retraining decision for %s: %s (%s)", name, d.action, d.reason)
    return {
        "registered_model": name,
        "retrain": any(d.retrain for d in made),
        "action": made[-1].action,
        "reason": made[-1].reason,
        "decisions": [{"batch": d.batch, "action": d.action, "reason": d.reason} for d in made],
    }


def _has_rows(path: Path) -> bool:
    from recsys.data import ingest

    if ingest.is_store(path):
        return ingest.store_rows(path) > 0
    return path.exists()


def _erasures_pending(name: str) -> int:
    """Forgotten users the champion's training data still holds."""
    from recsys.pipeline.privacy import forgotten_known_by

    return forgotten_known_by(_served(name).id_map.users)


def monitor(
    *,
    data_path: str | Path | None = None,
    model_name: str | None = None,
    now: float,
    k: int = 10,
    settings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """:func:`measure_batches` then :func:`decide_retraining` (what ``recsys monitor`` runs)."""
    measured = measure_batches(data_path=data_path, model_name=model_name, now=now, k=k)
    decision = decide_retraining(
        data_path=data_path, model_name=measured["registered_model"], now=now, settings=settings
    )
    return {**measured, **decision}


def read_monitoring(name: str, root: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Both histories of registered model ``name``: ``{"measurements", "decisions"}``."""
    records = MonitorLog(name, root)
    return {"measurements": records.measurements(), "decisions": records.decisions()}
