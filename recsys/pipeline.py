"""The training pipeline's steps: what each Airflow task (and the CLI) calls.

Every step takes and returns small things (a run key, paths, small dicts of
metrics); data moves through files in the run folder
(:func:`recsys.config.run_dir`). A rerun of the same run key overwrites the
same outputs, and nothing here reads the wall clock for what it computes.

Run folder layout::

    <RECSYS_HOME>/runs/<run_key>/
        raw/                  the validated input, normalised (recsys format)
        data_docs/            Great Expectations Data Docs of the validation
        train.parquet test.parquet split.json
        models/<name>/        each fitted model
        evaluation.json       leaderboard: every candidate and the champion
        decision.json         the promotion decision
        recommendations.parquet
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import config
from recsys.constants import ITEM_COL, USER_COL

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("popularity", "itemknn", "als", "ease")


@dataclass
class PipelineOptions:
    """Everything a run can be told; the DAG's params map onto these fields.

    Attributes:
        data_path: file or folder with interactions (format detected).
        data_format: name the format instead of detecting it.
        columns: generic-file column names: user_col, item_col, rating_col,
            time_col, sep.
        models: registry names to train.
        model_params: per-model hyper-parameters, ``{name: {param: value}}``.
        protocol: split protocol (see :func:`recsys.splits.split_interactions`).
        k: list length for evaluation and batch recommendations.
        margin: how much the primary metric must improve to replace the champion.
        dedupe: duplicate policy of the cleaning step.
    """

    data_path: str
    data_format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = DEFAULT_MODELS
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: str = "temporal"
    k: int = 10
    margin: float = 0.0
    dedupe: str = "last"


# --------------------------------------------------------------------- helpers
def _dir(run_key: str) -> Path:
    return config.run_dir(run_key)


def _write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def frame_hash(df: pd.DataFrame) -> str:
    """A stable content hash of a frame (row order and values)."""
    row_hashes = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def load_input(data_path: str, data_format: str | None = None,
               columns: dict[str, str] | None = None):
    """Load a dataset the way every entry point does (CLI, DAG, benchmark).

    ``data_path`` may also be an interaction store kept by :mod:`recsys.ingest`.
    """
    from recsys import ingest
    from recsys.data.loaders import load_dataset

    if data_format in (None, "store") and ingest.is_store(data_path):
        return ingest.read_store(data_path)
    return load_dataset(data_path, data_format, **(columns or {}))


def input_rows(data_path: str, data_format: str | None = None,
               columns: dict[str, str] | None = None) -> int:
    """How many interactions the input holds (a store answers from its manifest)."""
    from recsys import ingest

    if ingest.is_store(data_path):
        return ingest.store_rows(data_path)
    return len(load_input(data_path, data_format, columns).interactions)


def new_interactions(data_path: str, data_format: str | None = None,
                     columns: dict[str, str] | None = None) -> dict:
    """Interactions in the input beyond those the current champion was trained on.

    Returns:
        ``{"rows": int, "champion_rows": int | None, "new": int}``; with no
        champion every row is new.
    """
    from recsys import tracking

    rows = input_rows(data_path, data_format, columns)
    champion = tracking.get_champion()
    seen = champion["run_tags"].get("recsys.input_rows") if champion else None
    seen = int(seen) if seen is not None else None
    return {"rows": rows, "champion_rows": seen, "new": rows - (seen or 0)}


# ------------------------------------------------------------------- the steps
def validate_data(run_key: str, data_path: str, *, data_format: str | None = None,
                  columns: dict[str, str] | None = None, now: float | None = None) -> dict:
    """Load and validate the input; on success write it to the run folder.

    A failing batch is copied with its report to ``<RECSYS_HOME>/quarantine``
    and :class:`recsys.validation.DataValidationError` is raised, so nothing
    downstream runs on it.

    Returns:
        ``{"rows": int, "users": int, "items": int, "data_docs": str | None}``.
    """
    from recsys import validation
    from recsys.data.loaders import write_dataset

    run = _dir(run_key)
    dataset = load_input(data_path, data_format, columns)
    report = validation.validate_dataset(dataset, now=now, docs_dir=run / "data_docs")
    _write_json(run / "validation.json", report.to_dict())
    if not report.success:
        dest = config.recsys_home() / "quarantine" / run.name
        validation.quarantine(dataset, report, dest)
        log.error("validation failed; batch quarantined in %s", dest)
        raise validation.DataValidationError(report)
    write_dataset(dataset, run / "raw")
    inter = dataset.interactions
    summary = {
        "data_path": str(data_path),
        "rows": int(len(inter)),
        "users": int(inter[USER_COL].nunique()),
        "items": int(inter[ITEM_COL].nunique()),
        "data_docs": str(report.docs_path) if report.docs_path else None,
    }
    _write_json(run / "input.json", summary)
    return summary


def prepare_data(run_key: str, *, protocol: str = "temporal", dedupe: str = "last",
                 **split_options: Any) -> dict:
    """Clean the validated interactions and split them into train and test.

    Returns:
        The split description (rows, users, items per part, options, data hash).
    """
    from recsys.data.loaders import load_dataset
    from recsys.prepare import clean_interactions
    from recsys.splits import describe_split, split_interactions

    run = _dir(run_key)
    dataset = load_dataset(run / "raw", "recsys")
    clean, cleaning = clean_interactions(dataset.interactions, dedupe=dedupe)
    train, test = split_interactions(clean, protocol, **split_options)
    train.to_parquet(run / "train.parquet", index=False)
    test.to_parquet(run / "test.parquet", index=False)
    info = describe_split(train, test, protocol, split_options)
    info.update(cleaning=cleaning, data_hash=frame_hash(clean), protocol=protocol)
    _write_json(run / "split.json", info)
    return info


@dataclass
class TrainingData:
    """What every model of one run is fitted and evaluated on."""

    train: pd.DataFrame
    test: pd.DataFrame
    id_map: Any
    X: Any
    context: Any
    split: dict


def load_training_data(run_key: str) -> TrainingData:
    """Read a run's split back and build the matrix, id map and fit context."""
    from recsys.data.loaders import load_dataset
    from recsys.ids import IdMap
    from recsys.models.base import FitContext

    run = _dir(run_key)
    train = pd.read_parquet(run / "train.parquet")
    test = pd.read_parquet(run / "test.parquet")
    dataset = load_dataset(run / "raw", "recsys")
    extra = dataset.items[ITEM_COL] if dataset.items is not None else None
    id_map = IdMap.from_frame(train, extra_items=extra)
    context = FitContext(sequences=id_map.sequences(train),
                         extra={"items": dataset.items, "users": dataset.users})
    return TrainingData(train, test, id_map, id_map.to_matrix(train), context,
                        _read_json(run / "split.json"))


def fit_and_evaluate(name: str, data: TrainingData, *, params: dict | None = None,
                     k: int = 10) -> tuple[Any, dict[str, float], float]:
    """Fit one registered model and score it on the test split.

    Returns:
        ``(model, metrics, train_seconds)``.
    """
    from recsys.evaluate import evaluate_model
    from recsys.models import make_model

    model = make_model(name, **(params or {}))
    start = time.perf_counter()
    model.fit(data.X, data.context)
    seconds = time.perf_counter() - start
    metrics = evaluate_model(model, data.X, data.test, data.id_map, k=k)
    return model, metrics, seconds


def train_model(run_key: str, model_name: str, *, params: dict | None = None,
                k: int = 10) -> dict:
    """Train one model, evaluate it on the test split and log it as an MLflow run.

    Returns:
        ``{"model": name, "run_id": str, "model_uri": str, "metrics": {...}}``.
    """
    from recsys import tracking

    data = load_training_data(run_key)
    n_rows = _read_json(_dir(run_key) / "input.json")["rows"]
    model, metrics, seconds = fit_and_evaluate(model_name, data, params=params, k=k)
    metrics = {**metrics, "train_seconds": seconds}
    model_dir = model.save(_dir(run_key) / "models" / model_name)
    tracking.setup()
    info = tracking.log_model_run(
        model, id_map=data.id_map, train_matrix=data.X, params=model.get_params(),
        metrics=metrics, split_info=data.split, data_hash=data.split["data_hash"],
        run_name=f"{model_name}-{run_key}", k=k,
        tags={"recsys.run_key": run_key, "recsys.input_rows": str(n_rows)},
    )
    log.info("trained %s: %s", model_name, metrics)
    result = {"model": model_name, "run_id": info.run_id, "model_uri": info.model_uri,
              "metrics": metrics}
    _write_json(model_dir / "result.json", result)
    return result


def evaluate_candidates(run_key: str, models: list[str] | tuple[str, ...], *, k: int = 10,
                        primary: str | None = None) -> dict:
    """Rank this run's candidates and score the current champion on the same test split.

    Each candidate's result is read from ``models/<name>/result.json``, written
    by :func:`train_model`; a model named here without a result is an error.

    Returns:
        ``{"best": candidate dict, "champion": {...} | None, "leaderboard": [...]}``
        (also written to ``evaluation.json``).
    """
    from recsys import tracking

    primary = primary or f"ndcg@{k}"
    if not models:
        raise ValueError("no candidate models were named for this run")
    results = _dir(run_key) / "models"
    missing = [m for m in models if not (results / m / "result.json").exists()]
    if missing:
        raise RuntimeError(f"run '{run_key}' has no trained result for: {', '.join(missing)}")
    candidates = [_read_json(results / m / "result.json") for m in models]
    board = sorted(candidates, key=lambda c: c["metrics"].get(primary, float("-inf")),
                   reverse=True)
    champion = tracking.get_champion()
    if champion is not None:
        test = pd.read_parquet(_dir(run_key) / "test.parquet")
        champion = {**champion, "metrics": score_model_uri(
            tracking.champion_uri(), test, k=k)}
    result = {"primary": primary, "best": board[0], "champion": champion,
              "leaderboard": [{"model": c["model"], "run_id": c["run_id"], **c["metrics"]}
                              for c in board]}
    _write_json(_dir(run_key) / "evaluation.json", result)
    return result


def score_model_uri(model_uri: str, test: pd.DataFrame, *, k: int = 10) -> dict[str, float]:
    """Metrics of a logged pyfunc model on ``test``: its own top-K for the test users."""
    from recsys import tracking
    from recsys.evaluate import evaluate_recommendations

    model = tracking.load_model(model_uri)
    users = pd.DataFrame({USER_COL: np.sort(test[USER_COL].unique())})
    recs = model.predict(users, params={"k": k})
    n_items = int(test[ITEM_COL].nunique())
    return evaluate_recommendations(recs, test, k=k, n_items=n_items)


def promote(run_key: str, evaluation: dict, *, margin: float = 0.0) -> dict:
    """Register the best candidate and move ``champion`` when it wins by ``margin``.

    Returns:
        The decision as a dict (both scores, margin, verdict, reason, version).
    """
    from recsys import tracking
    from recsys.promotion import decide

    primary = evaluation["primary"]
    best = evaluation["best"]
    champion = evaluation.get("champion")
    version = tracking.register_model(best["run_id"])
    decision = decide(
        best["metrics"][primary],
        champion["metrics"][primary] if champion else None,
        margin=margin, metric=primary, candidate_version=version,
        champion_version=champion["version"] if champion else None,
    )
    tracking.apply_decision(config.model_name(), version, decision)
    payload = decision.to_dict()
    _write_json(_dir(run_key) / "decision.json", payload)
    log.info("promotion decision: %s", payload)
    return payload


def recommend_all(run_key: str, *, k: int = 10) -> dict:
    """Write the champion's top-K for every user of the run to Parquet.

    Returns:
        ``{"path": str, "users": int, "rows": int, "model_version": ...}``.
    """
    from recsys import tracking
    from recsys.data.loaders import load_dataset

    run = _dir(run_key)
    champion = tracking.get_champion()
    if champion is None:
        raise RuntimeError(f"no model holds the champion alias of '{config.model_name()}'")
    users = load_dataset(run / "raw", "recsys").interactions[USER_COL].unique()
    recs = tracking.recommend_for_users(np.sort(users), k=k)
    recs = recs.assign(model_version=str(champion["version"]))
    path = run / "recommendations.parquet"
    recs.to_parquet(path, index=False)
    return {"path": str(path), "users": int(recs[USER_COL].nunique()),
            "rows": int(len(recs)), "model_version": champion["version"]}


def ingest(*, arrival: str, now: float | None = None) -> dict:
    """Ingest the landing folder into the interaction store (see :mod:`recsys.ingest`).

    Returns:
        ``{"accepted": [...], "rejected": [...], "already_ingested": [...],
        "new_rows": int}``.
    """
    from recsys import ingest as ingest_mod

    result = ingest_mod.ingest_landing(
        config.landing_path(), config.data_path(), config.recsys_home() / "quarantine",
        arrival=arrival, now=now)
    return result.to_dict()


def run_pipeline(options: PipelineOptions, run_key: str, *, now: float | None = None) -> dict:
    """Every step in order, in-process: what ``recsys train`` runs.

    The Airflow DAG calls the same functions, one per task.
    """
    summary: dict[str, Any] = {"run_key": run_key}
    summary["validation"] = validate_data(run_key, options.data_path,
                                          data_format=options.data_format,
                                          columns=options.columns, now=now)
    summary["split"] = prepare_data(run_key, protocol=options.protocol, dedupe=options.dedupe)
    for name in options.models:
        train_model(run_key, name, params=options.model_params.get(name), k=options.k)
    evaluation = evaluate_candidates(run_key, options.models, k=options.k)
    summary["leaderboard"] = evaluation["leaderboard"]
    summary["decision"] = promote(run_key, evaluation, margin=options.margin)
    summary["recommendations"] = recommend_all(run_key, k=options.k)
    return summary
