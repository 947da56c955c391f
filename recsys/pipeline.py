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
        features/             feature tables of the training split (Parquet): user_profiles,
                              item_features, sequences, item_content
        features.json         each feature table's rows, columns and content hash
        models/<name>/        each fitted model, its result.json, per_user.parquet
                              (per-user metrics and groups) and tuned.json
        evaluation.json       leaderboard: every candidate and the champion
        champion_per_user.parquet  the champion scored on this run's test users
        leaderboard.md leaderboard.png  the same leaderboard as a table and a chart
        decision.json decision.md       the promotion decision record
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
from recsys.serialize import json_safe

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
        tuning_trials: Optuna trials per model (0 = keep the defaults).
        tuning_timeout_s: time budget of each model's study.
        gate: overrides of :class:`recsys.gate.GateConfig` fields.
        max_sequence_length: items kept of each user's interaction sequence.
        rerank_strength: popularity re-ranking of the batch recommendations
            (0 = off; see :func:`recommend_all`).
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
    tuning_trials: int = 0
    tuning_timeout_s: float | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    max_sequence_length: int = 50
    rerank_strength: float = 0.0


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

    With ``RECSYS_PSEUDONYM_KEY`` set, the copy in the run folder carries
    keyed pseudonyms instead of user ids (interactions and users table alike),
    so every later step, feature table, MLflow run and model sees pseudonyms
    only; :func:`recsys.tracking.recommend_for_users` maps a real id to its
    pseudonym at serving time. A failing batch is copied with its report to
    ``<RECSYS_HOME>/quarantine`` and :class:`recsys.validation.DataValidationError`
    is raised, so nothing downstream runs on it.

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
    dataset = _pseudonymised(dataset)
    write_dataset(dataset, run / "raw")
    inter = dataset.interactions
    summary = {
        "pseudonymised": config.pseudonym_key() is not None,
        "data_path": str(data_path),
        "rows": int(len(inter)),
        "users": int(inter[USER_COL].nunique()),
        "items": int(inter[ITEM_COL].nunique()),
        "data_docs": str(report.docs_path) if report.docs_path else None,
    }
    _write_json(run / "input.json", summary)
    return summary


def _pseudonymised(dataset: Any) -> Any:
    """``dataset`` with keyed pseudonyms for user ids when a key is configured."""
    import dataclasses

    from recsys.prepare import pseudonymise_users

    key = config.pseudonym_key()
    if key is None:
        return dataset
    users = dataset.users
    if users is not None and USER_COL in users.columns:
        users = pseudonymise_users(users, key)
    return dataclasses.replace(dataset, interactions=pseudonymise_users(
        dataset.interactions, key), users=users)


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


#: Sub-folder of a run holding its feature tables, and their summary file.
FEATURES_DIR = "features"
FEATURES_JSON = "features.json"
#: Feature tables handed to models through :class:`recsys.models.base.FitContext`.
_CONTEXT_TABLES = ("user_profiles", "item_features")


def build_features(run_key: str, *, max_len: int = 50) -> dict:
    """Build, validate and write the feature tables of this run's training split.

    Builds user profiles, item features, interaction sequences (each user's
    last ``max_len`` items) and, when items have titles or genres, their
    TF-IDF content vectors (:func:`recsys.features.build_feature_tables`);
    checks every table against its suite in ``expectations/`` before writing
    any. Outputs of an earlier attempt of the same run are removed first, so
    a failure leaves no feature table behind for training to pick up.

    Returns:
        ``{"max_len": int, "tables": {name: {"path", "rows", "columns",
        "feature_hash", "suite"}}}`` (also ``features.json``); the hash is
        :func:`recsys.features.feature_hash` of the table as read back from
        its Parquet file.

    Raises:
        recsys.features.FeatureValidationError: a table broke its suite; the
            message names the table and each failed expectation.
    """
    from recsys import features
    from recsys.data.loaders import load_dataset

    run = _dir(run_key)
    _remove_features(run)
    train = pd.read_parquet(run / "train.parquet")
    dataset = load_dataset(run / "raw", "recsys")
    tables = features.build_feature_tables(train, dataset.items, dataset.users,
                                           max_len=max_len)
    features.check_feature_tables(tables, features.suite_parameters(train, max_len=max_len))
    paths = features.write_features(run / FEATURES_DIR, **tables)
    summary = {"max_len": max_len,
               "tables": {name: _table_summary(run, name, path) for name, path in paths.items()}}
    _write_json(run / FEATURES_JSON, summary)
    return summary


def _remove_features(run: Path) -> None:
    import shutil

    (run / FEATURES_JSON).unlink(missing_ok=True)
    shutil.rmtree(run / FEATURES_DIR, ignore_errors=True)


def _table_summary(run: Path, name: str, path: Path) -> dict:
    from recsys.features import TABLE_SUITES, feature_hash

    stored = pd.read_parquet(path)
    return {"path": str(path.relative_to(run)), "rows": int(len(stored)),
            "columns": [str(c) for c in stored.columns], "feature_hash": feature_hash(stored),
            "suite": TABLE_SUITES[name]}


def read_feature_summary(run_key: str) -> dict | None:
    """The run's ``features.json`` (see :func:`build_features`), or ``None`` before it ran."""
    path = _dir(run_key) / FEATURES_JSON
    return _read_json(path) if path.exists() else None


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
    """Read a run's split back and build the matrix, id map and fit context.

    When :func:`build_features` has run, the user profiles and item features
    go into the fit context too.
    """
    from recsys.data.loaders import load_dataset

    run = _dir(run_key)
    return build_training_data(pd.read_parquet(run / "train.parquet"),
                               pd.read_parquet(run / "test.parquet"),
                               load_dataset(run / "raw", "recsys"),
                               _read_json(run / "split.json"),
                               features=_context_tables(run_key))


def _context_tables(run_key: str) -> dict[str, pd.DataFrame] | None:
    summary = read_feature_summary(run_key)
    if summary is None:
        return None
    return {name: pd.read_parquet(_dir(run_key) / summary["tables"][name]["path"])
            for name in _CONTEXT_TABLES if name in summary["tables"]}


def build_training_data(train: pd.DataFrame, test: pd.DataFrame, dataset: Any,
                        split: dict, *,
                        features: dict[str, pd.DataFrame] | None = None) -> TrainingData:
    """The matrix, id map and fit context every model of a run or benchmark shares.

    The id map covers every catalogue item (so content models can recommend
    items nobody interacted with yet); ``context.extra`` carries the item and
    user tables, ``item_ids`` (the external id of each matrix column) and
    ``timestamps`` (each pair's latest time, :meth:`recsys.ids.IdMap.time_matrix`).
    ``features`` (``user_profiles`` and/or ``item_features``, as
    :func:`build_features` writes them) become ``context.user_features``
    (row ``r`` = matrix row ``r``) and ``context.item_features`` (row ``j`` =
    matrix column ``j``), nulls filled (:func:`recsys.features.indexed_features`).
    """
    from recsys.features import indexed_features
    from recsys.ids import IdMap
    from recsys.models.base import FitContext

    catalogue = dataset.items[ITEM_COL] if dataset.items is not None else None
    id_map = IdMap.from_frame(train, extra_items=catalogue)
    features = features or {}
    context = FitContext(sequences=id_map.sequences(train),
                         extra={"items": dataset.items, "users": dataset.users,
                                "item_ids": id_map.items,
                                "timestamps": id_map.time_matrix(train)})
    if "user_profiles" in features:
        context.user_features = indexed_features(features["user_profiles"], USER_COL,
                                                 id_map.users)
    if "item_features" in features:
        context.item_features = indexed_features(features["item_features"], ITEM_COL,
                                                 id_map.items)
    return TrainingData(train, test, id_map, id_map.to_matrix(train), context, split)


def feature_inputs(run_key: str) -> list[Any]:
    """This run's feature tables as :class:`recsys.tracking.InputTable` (none before
    :func:`build_features` ran)."""
    from recsys.tracking import InputTable

    summary = read_feature_summary(run_key) or {"tables": {}}
    return [InputTable(name=name, path=_dir(run_key) / table["path"],
                       digest=table["feature_hash"])
            for name, table in summary["tables"].items()]


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

    The run's feature tables (:func:`build_features`), when present, are fed to
    the model through its fit context and logged as the MLflow run's dataset
    inputs (context ``features``; see :class:`recsys.tracking.InputTable` for
    how their content hash becomes the digest).

    Returns:
        ``{"model": name, "run_id": str, "model_uri": str, "metrics": {...}}``.
    """
    from recsys import tracking

    data = load_training_data(run_key)
    n_rows = _read_json(_dir(run_key) / "input.json")["rows"]
    model, metrics, seconds = fit_and_evaluate(model_name, data, params=params, k=k)
    model_dir = model.save(_dir(run_key) / "models" / model_name)
    chain = cold_start_chain(data)
    detail = served_evaluation(model, data, k=k, cold_start=chain)
    detail.per_user.to_parquet(model_dir / "per_user.parquet")
    metrics = {**metrics, **_beyond_figures(detail.metrics), "train_seconds": seconds}
    tracking.setup()
    info = tracking.log_model_run(
        model, id_map=data.id_map, train_matrix=data.X, params=model.get_params(),
        metrics=metrics, split_info=data.split, data_hash=data.split["data_hash"],
        run_name=f"{model_name}-{run_key}", k=k,
        tags={"recsys.run_key": run_key, "recsys.input_rows": str(n_rows)},
        artifacts=model_plots(model, model_dir / "plots"), cold_start=chain,
        inputs=feature_inputs(run_key),
    )
    log.info("trained %s: %s", model_name, metrics)
    result = json_safe({"model": model_name, "run_id": info.run_id,
                          "model_uri": info.model_uri, "metrics": metrics,
                          "served": detail.metrics})
    _write_json(model_dir / "result.json", result)
    return result


def model_plots(model: Any, folder: Path) -> dict[str, Path]:
    """Write the figures a model has beyond its metrics, for its MLflow run.

    The attention model's training curves (loss and validation NDCG per
    epoch) and the ranker's feature importances, as PNGs under ``folder``.

    Returns:
        ``{"plots": folder}`` when anything was drawn, else ``{}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    if getattr(model, "history_", None):
        from recsys.models.attention import plot_history

        figures["training_curves.png"] = plot_history(model.history_)
    if getattr(model, "feature_importances_", None):
        from recsys.models.ranker import plot_feature_importances

        figures["feature_importances.png"] = plot_feature_importances(model)
    if not figures:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return {"plots": folder}


def cold_start_chain(data: TrainingData) -> Any:
    """The fallback chain served models use for users they have never seen."""
    from recsys.coldstart import fit_cold_start

    extra = data.context.extra
    return fit_cold_start(data.train, extra.get("items"), extra.get("users"),
                          id_map=data.id_map)


def served_evaluation(model: Any, data: TrainingData, *, k: int = 10,
                      cold_start: Any = None) -> Any:
    """Score ``model`` exactly as its served pyfunc answers: every test user, unknown
    users through the cold-start chain (:class:`recsys.tracking.ServedRecommender`).

    Returns:
        A :class:`recsys.beyond.DetailedEvaluation`: the figures the gate and the
        leaderboard compare, on the same users as the champion's.
    """
    from recsys.tracking import ServedRecommender

    served = ServedRecommender(model, data.id_map, data.X, cold_start=cold_start)
    recs = served.recommend(pd.DataFrame({USER_COL: np.sort(data.test[USER_COL].unique())}), k)
    return _detailed(recs, data.train, data.test, data.context.extra, k)


def _detailed(recs: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, extra: dict,
              k: int) -> Any:
    from recsys.beyond import evaluate_detailed

    return evaluate_detailed(recs, test, train, k=k, items=extra.get("items"),
                             users=extra.get("users"))


def _beyond_figures(metrics: dict[str, float]) -> dict[str, float]:
    """The beyond-accuracy and slice figures of a detailed evaluation (no accuracy means)."""
    from recsys.beyond import BEYOND_METRICS

    return {name: value for name, value in metrics.items()
            if name in BEYOND_METRICS or name.startswith(("slice.", "gap.", "fairness_gap."))}


def tune_model(run_key: str, model_name: str, *, n_trials: int = 0,
               timeout_s: float | None = None, k: int = 10, seed: int = 0) -> dict:
    """Tune one model on a validation carve of this run's training split.

    Trials are logged as nested MLflow runs under one study run (none when
    ``n_trials`` is 0). The test split is never read.

    Returns:
        :meth:`recsys.tuning.TuningResult.to_dict` (also ``models/<name>/tuned.json``).
    """
    from recsys import tracking
    from recsys.data.loaders import load_dataset
    from recsys.tuning import tune_model as run_study

    run = _dir(run_key)
    train = pd.read_parquet(run / "train.parquet")
    dataset = load_dataset(run / "raw", "recsys")
    split = _read_json(run / "split.json")
    result = run_study(model_name, train, protocol=split.get("protocol", "temporal"),
                       n_trials=n_trials, timeout_s=timeout_s, k=k, seed=seed,
                       items=dataset.items, users=dataset.users).to_dict()
    if result["trials"]:
        tracking.log_tuning(model_name, result, run_name=f"tune-{model_name}-{run_key}",
                            tags={"recsys.run_key": run_key})
    folder = run / "models" / model_name
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "tuned.json", result)
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
        champion = {**champion, "metrics": _score_champion(run_key, k)}
    result = {"primary": primary, "best": board[0], "champion": champion,
              "candidates": [c["model"] for c in board],
              "leaderboard": [{"model": c["model"], "run_id": c["run_id"], **c["metrics"]}
                              for c in board]}
    result["leaderboard_files"] = write_leaderboard(run_key, board, champion, primary)
    result = json_safe(result)
    _write_json(_dir(run_key) / "evaluation.json", result)
    return result


def _score_champion(run_key: str, k: int) -> dict[str, float]:
    """The champion's pyfunc on this run's test users: figures, and per-user rows on disk."""
    from recsys import tracking
    from recsys.data.loaders import load_dataset

    run = _dir(run_key)
    train = pd.read_parquet(run / "train.parquet")
    test = pd.read_parquet(run / "test.parquet")
    dataset = load_dataset(run / "raw", "recsys")
    model = tracking.load_model(tracking.champion_uri())
    recs = model.predict(pd.DataFrame({USER_COL: np.sort(test[USER_COL].unique())}),
                         params={"k": k})
    detail = _detailed(recs, train, test, {"items": dataset.items, "users": dataset.users}, k)
    detail.per_user.to_parquet(run / "champion_per_user.parquet")
    return detail.metrics


#: Leaderboard columns besides the primary metric (served basis, all test users).
LEADERBOARD_COLUMNS = ("catalogue_coverage", "novelty", "diversity", "avg_popularity",
                       "gini", "long_tail_share")


def write_leaderboard(run_key: str, board: list[dict], champion: dict | None,
                      primary: str) -> dict[str, str]:
    """One Markdown table and one bar chart of every candidate and the champion.

    Every figure is on the served basis (all test users, as the gate compares).

    Returns:
        ``{"table": path, "chart": path}``.
    """
    rows = [{"model": c["model"], **c.get("served", c["metrics"])} for c in board]
    if champion is not None:
        rows.append({"model": f"champion v{champion['version']} ({champion.get('model_type')})",
                     **champion["metrics"]})
    frame = pd.DataFrame(rows).set_index("model").apply(pd.to_numeric, errors="coerce")
    columns = [c for c in (primary, *LEADERBOARD_COLUMNS, f"fairness_gap.{primary}")
               if c in frame.columns]
    run = _dir(run_key)
    table = run / "leaderboard.md"
    table.write_text(_markdown_table(frame[columns]) + "\n")
    chart = run / "leaderboard.png"
    _bar_chart(frame[primary], primary, chart)
    return {"table": str(table), "chart": str(chart)}


def _markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| model | " + " | ".join(frame.columns) + " |",
             "|---" * (len(frame.columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |"
              for name, row in zip(frame.index, frame.to_numpy(), strict=True)]
    return "\n".join(lines)


def _bar_chart(values: pd.Series, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 * len(values) + 1.2))
    ax.barh(list(values.index), values.to_numpy(), color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title("Candidates and champion on this run's test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_model_uri(model_uri: str, test: pd.DataFrame, *, k: int = 10) -> dict[str, float]:
    """Metrics of a logged pyfunc model on ``test``: its own top-K for the test users."""
    from recsys import tracking
    from recsys.evaluate import evaluate_recommendations

    model = tracking.load_model(model_uri)
    users = pd.DataFrame({USER_COL: np.sort(test[USER_COL].unique())})
    recs = model.predict(users, params={"k": k})
    n_items = int(test[ITEM_COL].nunique())
    return evaluate_recommendations(recs, test, k=k, n_items=n_items)


def promote(run_key: str, evaluation: dict, *, margin: float = 0.0,
            gate: dict | None = None) -> dict:
    """Judge this run's best candidate with the promotion gate and record the decision.

    With a champion: the best candidate is registered, marked ``challenger``
    and compared with the champion on this run's test users
    (:func:`recsys.gate.decide_gate`). Without one: candidates are tried best
    first and the first that loads and answers as a pyfunc is promoted.
    Every decision is logged (JSON, Markdown, version tags) and the last one is
    written to ``decision.json`` / ``decision.md``; the leaderboard files are
    attached to the judged candidate's run under ``leaderboard/``.

    Returns:
        The decision as a dict (:meth:`recsys.promotion.Decision.to_dict`).
    """
    from recsys import tracking
    from recsys.gate import GateConfig

    settings = GateConfig(**{"metric": evaluation["primary"], "margin": margin, **(gate or {})})
    results = _dir(run_key) / "models"
    board = [_read_json(results / name / "result.json")
             for name in evaluation.get("candidates", [evaluation["best"]["model"]])]
    if evaluation.get("champion") is None:
        decision, judged = _first_champion(run_key, board, settings)
    else:
        judged = board[0]
        decision = _challenge(run_key, judged, evaluation["champion"], settings)
    files = evaluation.get("leaderboard_files") or {}
    if files:
        tracking.log_files(judged["run_id"], [Path(p) for p in files.values()],
                           f"leaderboard/{run_key}")
    return _record(run_key, decision)


def _first_champion(run_key: str, board: list[dict], settings: Any) -> tuple[Any, dict]:
    """The best candidate that passes the load check becomes the first champion."""
    from recsys import tracking
    from recsys.gate import decide_gate

    decision = None
    for candidate in board:
        version = tracking.register_model(candidate["run_id"])
        decision = decide_gate(_evidence(run_key, candidate, version), None,
                               _load_check(run_key, candidate, settings), settings)
        tracking.apply_decision(config.model_name(), version, decision)
        if decision.promote:
            return decision, candidate
    return decision, board[-1]


def _challenge(run_key: str, candidate: dict, champion: dict, settings: Any) -> Any:
    """Gate the best candidate against the champion on this run's test users."""
    from recsys import tracking
    from recsys.gate import Evidence, decide_gate

    version = tracking.register_model(candidate["run_id"])
    if version != champion["version"]:
        tracking.mark_challenger(None, version)
    held = Evidence(label=str(champion.get("model_type")), version=champion["version"],
                    run_id=champion.get("run_id"), metrics=champion["metrics"],
                    per_user=pd.read_parquet(_dir(run_key) / "champion_per_user.parquet"))
    decision = decide_gate(_evidence(run_key, candidate, version), held,
                           _load_check(run_key, candidate, settings), settings)
    tracking.apply_decision(config.model_name(), version, decision)
    return decision


def _evidence(run_key: str, candidate: dict, version: int) -> Any:
    from recsys.gate import Evidence

    per_user = pd.read_parquet(_dir(run_key) / "models" / candidate["model"] / "per_user.parquet")
    return Evidence(label=candidate["model"], version=version, run_id=candidate["run_id"],
                    metrics=candidate.get("served", candidate["metrics"]), per_user=per_user)


#: Test users the load check asks the candidate's pyfunc for.
LOAD_CHECK_USERS = 20


def _load_check(run_key: str, candidate: dict, settings: Any) -> Any:
    """Load the candidate's logged pyfunc and time an answer for sample test users."""
    from recsys import tracking
    from recsys.gate import check_load

    test = pd.read_parquet(_dir(run_key) / "test.parquet")
    users = np.sort(test[USER_COL].unique())[:LOAD_CHECK_USERS]
    k = int(settings.metric.rsplit("@", 1)[-1]) if "@" in settings.metric else 10
    return check_load(lambda: tracking.load_model(candidate["model_uri"]), users, k=k,
                      budget_s=settings.latency_budget_s)


def _record(run_key: str, decision: Any) -> dict:
    from recsys.gate import to_markdown

    payload = decision.to_dict()
    _write_json(_dir(run_key) / "decision.json", payload)
    (_dir(run_key) / "decision.md").write_text(to_markdown(decision))
    log.info("promotion decision: %s", decision.reason)
    return payload


#: Candidates per user that the optional re-ranking chooses the top-K from.
RERANK_POOL = 100


def recommend_all(run_key: str, *, k: int = 10, rerank_strength: float = 0.0) -> dict:
    """Write the champion's top-K for every user of the run to Parquet.

    With ``rerank_strength`` > 0, each user's top-:data:`RERANK_POOL` is
    re-ranked against popularity bias (:func:`recsys.rerank.rerank_frame`,
    method ``discount``, knob = the strength; popularity = distinct training
    users per item) before the top-K is kept.

    Returns:
        ``{"path": str, "users": int, "rows": int, "model_version": ...,
        "rerank_strength": float}``.
    """
    from recsys import tracking
    from recsys.data.loaders import load_dataset
    from recsys.rerank import rerank_frame

    run = _dir(run_key)
    champion = tracking.get_champion()
    if champion is None:
        raise RuntimeError(f"no model holds the champion alias of '{config.model_name()}'")
    # The run's own copy: pseudonyms already when pseudonymisation is on.
    users = load_dataset(run / "raw", "recsys").interactions[USER_COL].unique()
    pool = max(k, RERANK_POOL) if rerank_strength > 0 else k
    recs = tracking.recommend_for_users(np.sort(users), k=pool, pseudonymise=False)
    if rerank_strength > 0:
        train = pd.read_parquet(run / "train.parquet", columns=[USER_COL, ITEM_COL])
        popularity = train.groupby(ITEM_COL)[USER_COL].nunique()
        recs = rerank_frame(recs, popularity, k, lam=rerank_strength)
    recs = recs.assign(model_version=str(champion["version"]))
    path = run / "recommendations.parquet"
    recs.to_parquet(path, index=False)
    related = write_related_items(run_key, k=k)
    return {"path": str(path), "users": int(recs[USER_COL].nunique()),
            "rows": int(len(recs)), "model_version": champion["version"],
            "rerank_strength": float(rerank_strength),
            "related_items": str(related) if related else None}


def write_related_items(run_key: str, *, k: int = 10) -> Path | None:
    """Write the top-K content-similar items of every catalogue item.

    Uses this run's ``content`` model when it trained one, else fits one on
    the run's training data; a data set without an item table has no content
    to compare, and gets no table (``None``).
    """
    from recsys.models.content import ContentRecommender
    from recsys.models.content import write_related_items as write_table

    run = _dir(run_key)
    saved = run / "models" / "content"
    if (saved / "model.pkl").exists():
        model = ContentRecommender.load(saved)
    else:
        data = load_training_data(run_key)
        if data.context.extra.get("items") is None:
            return None
        model = ContentRecommender().fit(data.X, data.context)
    return write_table(model, run / "related_items.parquet", k=k)


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
    summary["features"] = build_features(run_key, max_len=options.max_sequence_length)
    for name in options.models:
        tuned = tune_model(run_key, name, n_trials=options.tuning_trials,
                           timeout_s=options.tuning_timeout_s, k=options.k)
        params = {**tuned["params"], **options.model_params.get(name, {})}
        train_model(run_key, name, params=params or None, k=options.k)
    evaluation = evaluate_candidates(run_key, options.models, k=options.k)
    summary["leaderboard"] = evaluation["leaderboard"]
    summary["decision"] = promote(run_key, evaluation, margin=options.margin,
                                  gate=options.gate)
    summary["recommendations"] = recommend_all(run_key, k=options.k,
                                               rerank_strength=options.rerank_strength)
    return summary
