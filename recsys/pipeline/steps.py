"""The training pipeline's steps: what each Airflow task (and the CLI) calls.

Every step takes and returns small things (a run key, paths, small dicts of
metrics); data moves through files in the run folder (:class:`RunFolder`,
which also documents the layout). A rerun of the same run key overwrites the
same outputs, and nothing here reads the wall clock for what it computes.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import config
from recsys.constants import ITEM_COL, USER_COL
from recsys.data.prepare import NO_KEY, key_fingerprint
from recsys.errors import InputError, NotFoundError
from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder
from recsys.progress import log as progress
from recsys.serialize import json_safe

log = logging.getLogger(__name__)

#: Run tag naming the registered model a training run belongs to.
TAG_REGISTERED_MODEL = "recsys.registered_model"
#: Run tag: rows the store had erased (right to erasure) when the run read it.
TAG_INPUT_ERASED = "recsys.input_erased"
#: Training run tag: :func:`recsys.data.prepare.key_fingerprint` of the key its
#: user ids were pseudonymised under (``none``: raw ids).
TAG_PSEUDONYM_KEY = "recsys.pseudonym_key"


def new_interactions(
    data_path: str,
    data_format: str | None = None,
    columns: dict[str, str] | None = None,
    *,
    model_name: str | None = None,
) -> dict:
    """Interactions in the input beyond those its model's champion was trained on.

    ``model_name`` defaults to the data's own registered model
    (:func:`recsys.config.model_name_for`).

    Returns:
        ``{"rows": int, "champion_rows": int | None, "new": int}``; with no
        champion every row is new. ``new`` counts rows added: rows erased from
        the store since (:func:`recsys.pipeline.privacy.forget_user`) do not
        make it negative.
    """
    from recsys import registry
    from recsys.data import ingest
    from recsys.data.loaders import input_rows

    rows = input_rows(data_path, data_format, columns)
    champion = registry.get_champion(model_name or config.model_name_for(data_path))
    tags = champion["run_tags"] if champion else {}
    seen = int(tags["recsys.input_rows"]) if "recsys.input_rows" in tags else None
    # Rows erased (right to erasure) since the champion's data was read left the count too.
    erased = ingest.erased_rows(data_path) - int(tags.get(TAG_INPUT_ERASED, 0))
    return {"rows": rows, "champion_rows": seen, "new": rows - (seen or 0) + max(erased, 0)}


# ------------------------------------------------------------------- the steps
def validate_data(
    run_key: str,
    data_path: str,
    *,
    data_format: str | None = None,
    columns: dict[str, str] | None = None,
    now: float | None = None,
    model_name: str | None = None,
) -> dict:
    """Load and validate the input; on success write it to the run folder.

    The run trains into registered model ``model_name``, by default the data's
    own (:func:`recsys.config.model_name_for`: one registered model per data
    set); it is recorded in ``input.json`` and every later step reads it there.

    With ``RECSYS_PSEUDONYM_KEY`` set, the copy in the run folder carries
    keyed pseudonyms instead of user ids (interactions and users table alike),
    so every later step, feature table, MLflow run and model sees pseudonyms
    only; :func:`recsys.registry.recommend_for_users` maps a real id to its
    pseudonym at serving time. A failing batch is copied with its report to
    ``<RECSYS_HOME>/quarantine`` and
    :class:`recsys.data.validation.DataValidationError` is raised, so nothing
    downstream runs on it.

    Returns:
        ``{"rows": int, "users": int, "items": int, "data_docs": str | None,
        "registered_model": str, ...}``.
    """
    run = RunFolder(run_key).create()
    if config.engine() == "spark":
        from recsys.pipeline import spark_steps

        counts = spark_steps.validate_input(run, data_path, data_format, columns, now)
    else:
        counts = _validate_locally(run, data_path, data_format, columns, now)
    summary = {
        "registered_model": model_name or config.model_name_for(data_path),
        "pseudonymised": config.pseudonym_key() is not None,
        "pseudonym_key": key_fingerprint(config.pseudonym_key()),
        "data_path": str(data_path),
        **counts,
        "engine": config.engine(),
        **_store_state(data_path),
    }
    run.write_json(rf.INPUT, summary)
    return summary


def _validate_locally(
    run: RunFolder,
    data_path: str,
    data_format: str | None,
    columns: dict[str, str] | None,
    now: float | None,
) -> dict:
    """The local engine's validation: load, check, quarantine or write ``raw/``;
    returns the input's ``rows``, ``users``, ``items`` and ``data_docs``."""
    from recsys.data import validation
    from recsys.data.loaders import load_input, write_dataset

    dataset = load_input(data_path, data_format, columns)
    report = validation.validate_dataset(dataset, now=now, docs_dir=run.data_docs)
    run.write_json(rf.VALIDATION, report.to_dict())
    if not report.success:
        dest = config.recsys_home() / "quarantine" / run.path.name
        validation.quarantine(dataset, report, dest)
        log.error("validation failed; batch quarantined in %s", dest)
        raise validation.DataValidationError(report)
    dataset = _pseudonymised(dataset)
    write_dataset(dataset, run.raw)
    inter = dataset.interactions
    return {
        "rows": int(len(inter)),
        "users": int(inter[USER_COL].nunique()),
        "items": int(inter[ITEM_COL].nunique()),
        "data_docs": str(report.docs_path) if report.docs_path else None,
    }


def _store_state(data_path: str) -> dict:
    """For an interaction store: the batches it held and the rows erased from it so far
    (what monitoring and "new rows since the champion" compare against)."""
    from recsys.data import ingest

    if not ingest.is_store(data_path):
        return {}
    return {
        "store_batches": sorted(ingest.read_manifest(Path(data_path))["batches"]),
        "erased_rows": ingest.erased_rows(data_path),
    }


def _pseudonymised(dataset: Any) -> Any:
    """``dataset`` with keyed pseudonyms for user ids when a key is configured."""
    import dataclasses

    from recsys.data.prepare import pseudonymise_users

    key = config.pseudonym_key()
    if key is None:
        return dataset
    users = dataset.users
    if users is not None and USER_COL in users.columns:
        users = pseudonymise_users(users, key)
    return dataclasses.replace(
        dataset, interactions=pseudonymise_users(dataset.interactions, key), users=users
    )


def prepare_data(
    run_key: str, *, protocol: str = "temporal", dedupe: str = "last", **split_options: Any
) -> dict:
    """Clean the validated interactions and split them into train and test.

    A time protocol on data without timestamps falls back to a per-user random
    split (:func:`recsys.data.splits.protocol_for`); ``protocol`` then says what
    was used, ``protocol_requested`` what was asked for and ``notes`` why.

    Returns:
        The split description (rows, users, items per part, options, data hash,
        protocol, protocol_requested, notes).
    """
    from recsys.data.features import feature_hash
    from recsys.data.prepare import clean_interactions
    from recsys.data.splits import describe_split, protocol_for, split_interactions

    run = RunFolder(run_key)
    run.file(rf.COLD_START).unlink(missing_ok=True)  # fitted on the split this step replaces
    if config.engine() == "spark":
        from recsys.pipeline import spark_steps

        info = spark_steps.prepare(run, protocol, dedupe, split_options)
        run.write_json(rf.SPLIT, info)
        return info
    clean, cleaning = clean_interactions(run.dataset().interactions, dedupe=dedupe)
    used, note = protocol_for(clean, protocol)
    if note:
        progress.warning("%s", note)
        split_options = {}
    train, test = split_interactions(clean, used, **split_options)
    train.to_parquet(run.file(rf.TRAIN), index=False)
    test.to_parquet(run.file(rf.TEST), index=False)
    info = describe_split(train, test, used, split_options)
    info.update(
        cleaning=cleaning,
        data_hash=feature_hash(clean)[:16],
        protocol=used,
        protocol_requested=protocol,
        notes=[note] if note else [],
    )
    run.write_json(rf.SPLIT, info)
    return info


def build_features(run_key: str, *, max_len: int = 50) -> dict:
    """Build, validate and write the feature tables of this run's training split.

    Builds user profiles, item features, interaction sequences (each user's
    last ``max_len`` items) and, when items have titles or genres, their
    TF-IDF content vectors (:func:`recsys.data.features.build_feature_tables`);
    checks every table against its suite in ``expectations/`` before writing
    any. Outputs of an earlier attempt of the same run are removed first, so
    a failure leaves no feature table behind for training to pick up. Last,
    the run's cold-start chain is fitted once (``cold_start.pkl``) for every
    model of the run to serve unknown users with.

    Returns:
        ``{"max_len": int, "tables": {name: {"path", "rows", "columns",
        "feature_hash", "suite"}}}`` (also ``features.json``); the hash is
        :func:`recsys.data.features.feature_hash` of the table as read back
        from its Parquet file.

    Raises:
        recsys.data.features.FeatureValidationError: a table broke its suite;
            the message names the table and each failed expectation.
    """
    from recsys.data import features

    run = RunFolder(run_key)
    run.remove_features()
    if config.engine() == "spark":
        from recsys.pipeline import spark_steps

        paths = spark_steps.write_feature_tables(run, max_len=max_len)
    else:
        train = run.train()
        dataset = run.side_tables()
        tables = features.build_feature_tables(train, dataset.items, dataset.users, max_len=max_len)
        features.check_feature_tables(tables, features.suite_parameters(train, max_len=max_len))
        paths = features.write_features(run.features_dir, **tables)
    summary = {
        "max_len": max_len,
        "tables": {name: _table_summary(run, name, path) for name, path in paths.items()},
    }
    run.write_json(rf.FEATURES_JSON, summary)
    started = time.perf_counter()
    _write_cold_start(run, _fit_run_cold_start(run))
    progress.info("cold-start chain of the run fitted in %.1fs", time.perf_counter() - started)
    return summary


def _fit_run_cold_start(run: RunFolder, **options: Any) -> Any:
    """The run's cold-start chain from its training pairs and side tables (on Spark
    under ``RECSYS_ENGINE=spark``: the driver then holds counts, not the split);
    ``options`` go to :func:`recsys.serving.coldstart.fit_cold_start`."""
    if config.engine() == "spark":
        from recsys.pipeline import spark_steps

        return spark_steps.fit_cold_start(run, **options)
    from recsys.ids import IdMap
    from recsys.serving.coldstart import fit_cold_start

    train = run.train([USER_COL, ITEM_COL])
    side = run.side_tables()
    catalogue = side.items[ITEM_COL] if side.items is not None else None
    return fit_cold_start(
        train,
        side.items,
        side.users,
        id_map=IdMap.from_frame(train, extra_items=catalogue),
        similarity_pairs=config.cold_start_pairs(),
        **options,
    )


def _table_summary(run: RunFolder, name: str, path: Path) -> dict:
    from recsys.data.features import TABLE_SUITES, feature_hash

    stored = pd.read_parquet(path)
    return {
        "path": str(path.relative_to(run.path)),
        "rows": int(len(stored)),
        "columns": [str(c) for c in stored.columns],
        "feature_hash": feature_hash(stored),
        "suite": TABLE_SUITES[name],
    }


def read_feature_summary(run_key: str) -> dict | None:
    """The run's ``features.json`` (see :func:`build_features`), or ``None`` before it ran."""
    return RunFolder(run_key).read_json_or_none(rf.FEATURES_JSON)


def load_training_data(run_key: str) -> Any:
    """Read a run's split back as :class:`recsys.training.data.TrainingData`.

    When :func:`build_features` has run, the user profiles and item features
    go into the fit context too. A holdout of more than ``RECSYS_EVAL_MAX_USERS``
    users is cut to a seeded sample of them (:func:`sample_test_users`).
    """
    from recsys.training.data import CONTEXT_TABLES, build_training_data, sample_test_users

    run = RunFolder(run_key)
    data = build_training_data(
        run.train(),
        run.test(),
        run.side_tables(),
        run.split_info(),
        features=run.feature_tables(CONTEXT_TABLES) or None,
    )
    return sample_test_users(data, config.eval_max_users())


def feature_inputs(run_key: str) -> list[Any]:
    """This run's feature tables as :class:`recsys.registry.InputTable` (none before
    :func:`build_features` ran)."""
    from recsys.registry import InputTable

    run = RunFolder(run_key)
    summary = run.read_json_or_none(rf.FEATURES_JSON) or {"tables": {}}
    return [
        InputTable(name=name, path=run.path / table["path"], digest=table["feature_hash"])
        for name, table in summary["tables"].items()
    ]


def tune_model(
    run_key: str,
    model_name: str,
    *,
    n_trials: int = 0,
    timeout_s: float | None = None,
    k: int = 10,
    seed: int = 0,
) -> dict:
    """Tune one model on a validation carve of this run's training split.

    Trials are logged as nested MLflow runs under one study run (none when
    ``n_trials`` is 0). The test split is never read.

    Returns:
        :meth:`recsys.training.tuning.TuningResult.to_dict` (also
        ``models/<name>/tuned.json``).
    """
    from recsys import registry
    from recsys.training.tuning import tune_model as run_study

    run = RunFolder(run_key)
    dataset = run.side_tables()
    result = run_study(
        model_name,
        run.train(),
        protocol=run.split_info().get("protocol", "temporal"),
        n_trials=n_trials,
        timeout_s=timeout_s,
        k=k,
        seed=seed,
        items=dataset.items,
        users=dataset.users,
    ).to_dict()
    if result["trials"]:
        registry.log_tuning(
            model_name,
            result,
            run_name=f"tune-{model_name}-{run_key}",
            tags={"recsys.run_key": run_key},
        )
    folder = run.model_dir(model_name)
    folder.mkdir(parents=True, exist_ok=True)
    run.write_json(f"{rf.MODELS}/{model_name}/{rf.TUNED}", result)
    return result


def train_model(
    run_key: str,
    model_name: str,
    *,
    params: dict | None = None,
    k: int = 10,
    models: list[str] | None = None,
) -> dict:
    """Train one model, evaluate it on the test split and log it as an MLflow run.

    The model's hyper-parameters are what :func:`tune_model` found for it in
    this run (``models/<name>/tuned.json``, when it ran), overridden by
    ``params``. The run's feature tables (:func:`build_features`), when present,
    are fed to the model through its fit context and logged as the MLflow run's
    dataset inputs (context ``features``; see :class:`recsys.registry.InputTable`
    for how their content hash becomes the digest).

    A retry replaces what an earlier try left: that try's MLflow run, if still
    ``RUNNING`` (the try was killed), is ended ``FAILED``, and a finished one is
    tagged ``recsys.replaced_by`` the new run (runs are tagged with the run key
    and ``recsys.task`` = ``train_<model>``, the DAG's task id). Runs any killed
    task left open are ended too (:func:`recsys.registry.end_abandoned_runs`).

    ``models`` are every model the run trains: the ranker fuses the sequential
    ones among them, and takes the settings of the run's split protocol
    (:func:`recsys.models.ranker.fused_params`) even when ``models`` is not given.
    The ranker takes the models this run has trained already in place of those of
    its generators with the same parameters (they are the same fit), so it trains
    after them where it can (the DAG's and ``recsys train``'s order).

    Returns:
        ``{"model": name, "run_id": str, "model_uri": str, "metrics": {...},
        "served": {...}}``.
    """
    from recsys import registry
    from recsys.pipeline.reports import model_plots
    from recsys.serving.served import ARTIFACT_COLD_START, ARTIFACT_RECOMMENDER
    from recsys.training.fit import beyond_figures, fit_model, score_once

    started = time.perf_counter()
    run = RunFolder(run_key)
    task = train_task_id(model_name)
    registry.setup()
    # A killed earlier try of this task, or of any task, left its run RUNNING.
    registry.replace_earlier_tries(run_key, task)
    registry.end_abandoned_runs()
    tuned = run.read_json_or_none(f"{rf.MODELS}/{model_name}/{rf.TUNED}") or {}
    params = {**tuned.get("params", {}), **(params or {})} or None
    if model_name == "ranker":
        from recsys.models.ranker import fused_params

        protocol = run.split_info().get("protocol")
        params = fused_params(models or (), protocol=protocol, params=params) or None
    clock = time.perf_counter()
    data = load_training_data(run_key)
    if model_name == "ranker":
        data.context.fitted = _fitted_models(run)
    loaded = time.perf_counter()
    read = run.read_json(rf.INPUT)
    n_rows = read["rows"]
    progress.info(
        "%s: fitting on %s users x %s items (%s interactions)",
        model_name,
        f"{data.X.shape[0]:,}",
        f"{data.X.shape[1]:,}",
        f"{data.X.nnz:,}",
    )
    model, seconds = fit_model(model_name, data, params=params)
    progress.info("%s: fitted in %.1fs", model_name, seconds)
    saved_at = time.perf_counter()
    model_dir = run.model_dir(model_name)
    saved_dir = model.save(model_dir / rf.SAVED_MODEL)
    chain = _shared_cold_start(run, data)
    scoring_at = time.perf_counter()
    scored = score_once(model, data, k=k, cold_start=chain)
    detail = scored.detail
    detail.per_user.to_parquet(model_dir / rf.PER_USER)
    progress.info(
        "%s: %s test users scored as served in %.1fs, their figures and slices in %.1fs "
        "(NDCG@%d %.4f on those with history)",
        model_name,
        f"{len(detail.per_user):,}",
        scored.score_seconds,
        scored.evaluate_seconds,
        k,
        scored.warm[f"ndcg@{k}"],
    )
    metrics = {
        **scored.warm,
        **beyond_figures(detail.metrics),
        "train_seconds": seconds,
        "score_seconds": scored.score_seconds,
        "evaluate_seconds": scored.evaluate_seconds,
    }
    logged_at = time.perf_counter()
    info = registry.log_model_run(
        model,
        id_map=data.id_map,
        train_matrix=data.X,
        params=model.get_params(),
        metrics=metrics,
        split_info=data.split,
        data_hash=data.split["data_hash"],
        run_name=f"{model_name}-{run_key}",
        k=k,
        tags={
            "recsys.run_key": run_key,
            registry.TAG_TASK: task,
            "recsys.input_rows": str(n_rows),
            TAG_INPUT_ERASED: str(read.get("erased_rows", 0)),
            TAG_PSEUDONYM_KEY: read.get("pseudonym_key") or key_fingerprint(config.pseudonym_key()),
            TAG_REGISTERED_MODEL: run.registered_model(),
        },
        artifacts=model_plots(model, model_dir / "plots"),
        cold_start=chain,
        inputs=feature_inputs(run_key),
        saved={ARTIFACT_RECOMMENDER: saved_dir, ARTIFACT_COLD_START: run.file(rf.COLD_START)},
    )
    registry.replace_earlier_tries(run_key, task, keep=info.run_id)
    done = time.perf_counter()
    progress.info(
        "%s: logged to MLflow run %s in %.1fs (%.1fs in all)",
        model_name,
        info.run_id,
        done - logged_at,
        done - clock,
    )
    result = json_safe(
        {
            "model": model_name,
            "run_id": info.run_id,
            "model_uri": info.model_uri,
            "metrics": metrics,
            "served": detail.metrics,
            # Where the step's time went, for the scale benchmark: opening MLflow's
            # store, reading the run, fitting, saving the model and reading the
            # run's cold-start chain, scoring, evaluating, logging to MLflow.
            "seconds": {
                "mlflow_start": clock - started,
                "load": loaded - clock,
                "fit": seconds,
                "save": scoring_at - saved_at,
                "score": scored.score_seconds,
                "evaluate": scored.evaluate_seconds,
                "log": done - logged_at,
                "total": done - started,
            },
        }
    )
    run.write_json(f"{rf.MODELS}/{model_name}/{rf.RESULT}", result)
    return result


def _fitted_models(run: RunFolder) -> dict[str, Any]:
    """Loaders of the models this run has trained already (their step finished), by
    name: the ranker takes those that match its generators instead of fitting them
    again (:class:`recsys.models.base.FitContext`'s ``fitted``)."""
    from recsys.models import MODELS
    from recsys.models.base import load_saved

    return {
        name: partial(load_saved, run.saved_model_dir(name))
        for name in MODELS
        if name != "ranker" and run.has_model_result(name)
    }


def train_task_id(model_name: str) -> str:
    """The task that trains ``model_name`` (the DAG's task id, the runs' ``recsys.task``)."""
    return f"train_{model_name}"


def _shared_cold_start(run: RunFolder, data: Any) -> Any:
    """The run's cold-start chain, fitted by the first model that needs it and kept in
    the run folder for the others (it depends on the training split alone)."""
    import pickle

    from recsys.training.fit import cold_start_chain

    path = run.file(rf.COLD_START)
    if path.is_file():
        return pickle.loads(path.read_bytes())
    chain = cold_start_chain(data)
    _write_cold_start(run, chain)
    return chain


def _write_cold_start(run: RunFolder, chain: Any) -> None:
    """``cold_start.pkl`` of the run, written aside and moved into place."""
    import os
    import pickle

    path = run.file(rf.COLD_START)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(pickle.dumps(chain, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(partial, path)  # a task beside this one may have written it too: same content


def evaluate_candidates(
    run_key: str, models: list[str] | tuple[str, ...], *, k: int = 10, primary: str | None = None
) -> dict:
    """Rank this run's candidates and score the current champion on the same test split.

    Each candidate's result is read from ``models/<name>/result.json``, written
    by :func:`train_model`; a model named here without a result is an error.
    A champion that cannot serve this run's data (:func:`_incomparable`) is not
    scored: ``champion["comparable"]`` is ``False`` and ``champion["incomparable"]``
    says why, for the gate to record.

    Returns:
        ``{"best": candidate dict, "champion": {...} | None, "leaderboard": [...]}``
        (also written to ``evaluation.json``).
    """
    from recsys import registry
    from recsys.pipeline.reports import write_leaderboard

    primary = primary or f"ndcg@{k}"
    if not models:
        raise InputError("no candidate models were named for this run")
    run = RunFolder(run_key)
    missing = [m for m in models if not run.has_model_result(m)]
    if missing:
        raise NotFoundError(f"run '{run_key}' has no trained result for: {', '.join(missing)}")
    candidates = [run.model_result(m) for m in models]
    # Ranked on the served basis (every test user, as the gate and the champion are scored).
    board = sorted(
        candidates,
        key=lambda c: c.get("served", c["metrics"]).get(primary, float("-inf")),
        reverse=True,
    )
    name = run.registered_model()
    champion = registry.get_champion(name)
    if champion is not None:
        champion = {**champion, **_score_champion(run, name, champion, k)}
    result = {
        "registered_model": name,
        "primary": primary,
        "best": board[0],
        "champion": champion,
        "candidates": [c["model"] for c in board],
        "leaderboard": [
            {"model": c["model"], "run_id": c["run_id"], **c["metrics"], "served": c.get("served")}
            for c in board
        ],
    }
    result["leaderboard_files"] = write_leaderboard(run, board, champion, primary)
    result = json_safe(result)
    run.write_json(rf.EVALUATION, result)
    return result


def _score_champion(run: RunFolder, name: str, champion: dict, k: int) -> dict[str, Any]:
    """The champion's pyfunc on this run's test users: ``{"metrics", "comparable"}``,
    and its per-user rows on disk; or, when it cannot serve this data,
    ``{"metrics": {}, "comparable": False, "incomparable": why}``.

    A champion trained under another pseudonym key (its run's
    :data:`TAG_PSEUDONYM_KEY`) is not even loaded: it knows other names for
    every user (and may expect another id type), so it is incomparable by
    construction."""
    from recsys import registry
    from recsys.evaluation.beyond import evaluate_detailed

    why = _key_changed(run, champion)
    if why:
        log.warning("the champion of %s cannot be compared with this run: %s", name, why)
        return {"metrics": {}, "comparable": False, "incomparable": why}
    test = run.test()
    dataset = run.side_tables()
    # The version read above, not the alias: another run may move the alias meanwhile.
    model = registry.load_model(champion["model_uri"])
    why = _incomparable(model.unwrap_python_model().served(), run, dataset, test)
    if why:
        log.warning("the champion of %s cannot be compared with this run: %s", name, why)
        return {"metrics": {}, "comparable": False, "incomparable": why}
    recs = model.predict(
        pd.DataFrame({USER_COL: np.sort(test[USER_COL].unique())}), params={"k": k}
    )
    detail = evaluate_detailed(
        recs, test, run.train(), k=k, items=dataset.items, users=dataset.users
    )
    detail.per_user.to_parquet(run.file(rf.CHAMPION_PER_USER))
    return {"metrics": detail.metrics, "comparable": True}


def _key_changed(run: RunFolder, champion: dict) -> str | None:
    """Why the champion's user ids cannot be this run's, when the pseudonym key changed."""
    then = (champion.get("run_tags") or {}).get(TAG_PSEUDONYM_KEY)
    now = (run.read_json_or_none(rf.INPUT) or {}).get("pseudonym_key")
    if then is None or now is None or then == now:
        return None  # a champion from before the tag: the user check below decides
    what = {
        (True, False): "RECSYS_PSEUDONYM_KEY was set since it was trained",
        (False, True): "RECSYS_PSEUDONYM_KEY was unset since it was trained",
    }.get((then == NO_KEY, now == NO_KEY), "RECSYS_PSEUDONYM_KEY changed since it was trained")
    return (
        f"its user ids were pseudonymised under another key ({what}), so it knows none "
        "of this run's users; see 'Changing the pseudonym key' in the README"
    )


def _incomparable(served: Any, run: RunFolder, dataset: Any, test: pd.DataFrame) -> str | None:
    """Why the champion cannot be measured on this run's data, or ``None``.

    Its lists can name only items of its own catalogue: items this data does
    not have cannot be scored. And a champion that knows none of this data's
    users (another data set, or pseudonyms under a changed key) would be
    judged on its fallback alone.
    """
    catalogue = pd.Index(run.train([ITEM_COL])[ITEM_COL].unique())
    if dataset.items is not None:
        catalogue = catalogue.union(pd.Index(dataset.items[ITEM_COL]))
    foreign = served.id_map.items.difference(catalogue)
    if len(foreign):
        return (
            f"it was trained on another catalogue: {len(foreign)} of its "
            f"{served.id_map.n_items} items are not in this data (e.g. {list(foreign[:3])})"
        )
    users = test[USER_COL].unique()
    if users.size and (served.id_map.user_index(served.id_map.match_user_ids(users)) < 0).all():
        return (
            "it knows none of this data's users (another data set, or user ids "
            "pseudonymised under a different RECSYS_PSEUDONYM_KEY)"
        )
    return None


def promote(
    run_key: str, evaluation: dict, *, margin: float = 0.0, gate: dict | None = None
) -> dict:
    """Judge this run's best candidate with the promotion gate and record the decision.

    With a champion: the best candidate is registered, marked ``challenger``
    and compared with the champion on this run's test users
    (:func:`recsys.promotion.gate.decide_gate`). Without one: candidates are
    tried best first and the first that loads and answers as a pyfunc is
    promoted. Every decision is logged (JSON, Markdown, version tags) and the
    last one is written to ``decision.json`` / ``decision.md``; the
    leaderboard files are attached to the judged candidate's run under
    ``leaderboard/``.

    The decision is applied as a compare-and-set on the champion it was made
    against (:func:`recsys.registry.apply_decision`): when another run moved the
    champion in between, the new champion is scored on this run's test users
    and the candidate judged again (at most :data:`PROMOTE_ATTEMPTS` times).
    First, versions that another, killed run registered without a decision are
    archived (:func:`recsys.registry.archive_undecided_versions`); this run's own
    (a retry) are finished, since registering a run again returns its version.

    Returns:
        The decision as a dict (:meth:`recsys.promotion.decision.Decision.to_dict`).
    """
    from recsys import registry
    from recsys.promotion.gate import GateConfig

    run = RunFolder(run_key)
    settings = GateConfig(**{"metric": evaluation["primary"], "margin": margin, **(gate or {})})
    board = [
        run.model_result(name)
        for name in evaluation.get("candidates", [evaluation["best"]["model"]])
    ]
    name = run.registered_model()
    registry.archive_undecided_versions(name, run_key)
    champion = evaluation.get("champion")
    for _attempt in range(PROMOTE_ATTEMPTS):
        if champion is None or not champion.get("comparable", True):
            decision, judged = _first_champion(run, board, settings, champion)
        else:
            judged = board[0]
            decision = _challenge(run, judged, champion, settings)
        if not decision.stale:
            break
        # Another run moved the champion meanwhile: judge again against the new one.
        champion = _current_champion(run, name, settings)
    files = evaluation.get("leaderboard_files") or {}
    if files:
        registry.log_files(
            judged["run_id"], [Path(p) for p in files.values()], f"leaderboard/{run_key}"
        )
    return _record(run, decision)


#: Decisions a promote step makes at most when other runs keep moving the champion;
#: the last one, still stale, is recorded as held.
PROMOTE_ATTEMPTS = 3


def _current_champion(run: RunFolder, name: str, settings: Any) -> dict | None:
    """The champion as it is now, scored on this run's test users (as in evaluation)."""
    from recsys import registry

    champion = registry.get_champion(name)
    if champion is None:
        return None
    return {**champion, **_score_champion(run, name, champion, _gate_k(settings))}


def _gate_k(settings: Any) -> int:
    return int(settings.metric.rsplit("@", 1)[-1]) if "@" in settings.metric else 10


def _first_champion(
    run: RunFolder, board: list[dict], settings: Any, champion: dict | None
) -> tuple[Any, dict]:
    """The best candidate that passes the load check becomes the first champion
    (or replaces a ``champion`` that cannot be compared, saying why)."""
    from recsys import registry
    from recsys.promotion.gate import Incomparable, decide_gate

    name = run.registered_model()
    incomparable = (
        Incomparable(int(champion["version"]), champion.get("incomparable", "not comparable"))
        if champion
        else None
    )
    decision = None
    expected = int(champion["version"]) if champion else None
    for candidate in board:
        version = registry.register_model(candidate["run_id"], name)
        decision = decide_gate(
            _evidence(run, candidate, version),
            None,
            _load_check(run, candidate, settings),
            settings,
            incomparable=incomparable,
        )
        decision = registry.apply_decision(name, version, decision, expected_champion=expected)
        if decision.promote or decision.stale:
            return decision, candidate
    return decision, board[-1]


def _challenge(run: RunFolder, candidate: dict, champion: dict, settings: Any) -> Any:
    """Gate the best candidate against the champion on this run's test users."""
    from recsys import registry
    from recsys.promotion.gate import Evidence, decide_gate

    name = run.registered_model()
    version = registry.register_model(candidate["run_id"], name)
    if version != champion["version"]:
        registry.mark_challenger(name, version)
    held = Evidence(
        label=str(champion.get("model_type")),
        version=champion["version"],
        run_id=champion.get("run_id"),
        metrics=champion["metrics"],
        per_user=pd.read_parquet(run.file(rf.CHAMPION_PER_USER)),
    )
    decision = decide_gate(
        _evidence(run, candidate, version), held, _load_check(run, candidate, settings), settings
    )
    return registry.apply_decision(
        name, version, decision, expected_champion=int(champion["version"])
    )


def _evidence(run: RunFolder, candidate: dict, version: int) -> Any:
    from recsys.promotion.gate import Evidence

    per_user = pd.read_parquet(run.model_dir(candidate["model"]) / rf.PER_USER)
    return Evidence(
        label=candidate["model"],
        version=version,
        run_id=candidate["run_id"],
        metrics=candidate.get("served", candidate["metrics"]),
        per_user=per_user,
    )


#: Test users the load check asks the candidate's pyfunc for.
LOAD_CHECK_USERS = 20


def _load_check(run: RunFolder, candidate: dict, settings: Any) -> Any:
    """Load the candidate's logged pyfunc and time an answer for sample test users."""
    from recsys import registry
    from recsys.promotion.gate import check_load

    users = np.sort(run.test([USER_COL])[USER_COL].unique())[:LOAD_CHECK_USERS]
    k = _gate_k(settings)
    return check_load(
        lambda: registry.load_model(candidate["model_uri"]),
        users,
        k=k,
        budget_s=settings.latency_budget_s,
    )


def _record(run: RunFolder, decision: Any) -> dict:
    from recsys.promotion.decision import to_markdown

    payload = {**decision.to_dict(), "registered_model": run.registered_model()}
    run.write_json(rf.DECISION, payload)
    run.file(rf.DECISION_MD).write_text(to_markdown(decision))
    log.info("promotion decision: %s", decision.reason)
    return payload


#: Candidates per user that the optional re-ranking chooses the top-K from.
RERANK_POOL = 100


def recommend_all(run_key: str, *, k: int = 10, rerank_strength: float = 0.0) -> dict:
    """Write the champion's top-K for every user of the run to Parquet.

    With ``rerank_strength`` > 0, each user's top-:data:`RERANK_POOL` is
    re-ranked against popularity bias (:func:`recsys.serving.rerank.rerank_frame`,
    method ``discount``, knob = the strength; popularity = distinct training
    users per item) before the top-K is kept.

    Returns:
        ``{"path": str, "users": int, "rows": int, "model_version": ...,
        "rerank_strength": float, "related_items": str | None}``.
    """
    from recsys import registry
    from recsys.serving.rerank import rerank_frame

    run = RunFolder(run_key)
    name = run.registered_model()
    champion = registry.get_champion(name)
    if champion is None:
        raise NotFoundError(f"no model holds the champion alias of '{name}'")
    # The run's own copy: pseudonyms already when pseudonymisation is on.
    users = run.raw_interactions([USER_COL])[USER_COL].unique()
    pool = max(k, RERANK_POOL) if rerank_strength > 0 else k
    if config.engine() == "spark" and _champion_is_runs_spark_als(run, champion):
        from recsys.pipeline import spark_steps

        recs = spark_steps.spark_als_lists(run, np.sort(users), pool, name)
    else:
        recs = registry.recommend_for_users(np.sort(users), k=pool, pseudonymise=False, name=name)
    if rerank_strength > 0:
        train = run.train([USER_COL, ITEM_COL])
        popularity = train.groupby(ITEM_COL)[USER_COL].nunique()
        recs = rerank_frame(recs, popularity, k, lam=rerank_strength)
    recs = recs.assign(model_version=str(champion["version"]))
    path = run.file(rf.RECOMMENDATIONS)
    recs.to_parquet(path, index=False)
    related = write_related_items(run_key, k=k)
    return {
        "path": str(path),
        "users": int(recs[USER_COL].nunique()),
        "rows": int(len(recs)),
        "model_version": champion["version"],
        "rerank_strength": float(rerank_strength),
        "related_items": str(related) if related else None,
        "cache": _cache_lists(recs, name, int(champion["version"])),
    }


def _champion_is_runs_spark_als(run: RunFolder, champion: dict) -> bool:
    """Whether the champion is the ``spark_als`` this run trained (its Spark model is
    then in the run folder, for ``recommendForAllUsers``)."""
    if champion.get("model_type") != "spark_als" or not run.has_model_result("spark_als"):
        return False
    return run.model_result("spark_als")["run_id"] == champion.get("run_id")


def _cache_lists(recs: pd.DataFrame, name: str, version: int) -> dict | None:
    """The batch lists into the service's Redis cache when ``RECSYS_REDIS_URL`` is set.

    The Parquet file stays the record: a cache that cannot be reached is logged
    and skipped (the service then answers from the model), never a failed task.
    """
    url = config.redis_url()
    if not url:
        return None
    from recsys.serving import cache

    try:
        return cache.write_batch(recs, name, version, url, prefix=config.cache_prefix())
    except Exception as exc:  # noqa: BLE001 - any Redis failure; the lists are on disk
        log.warning("could not cache the batch lists in Redis: %s", exc)
        return {"error": str(exc)}


def write_related_items(run_key: str, *, k: int = 10) -> Path | None:
    """Write the top-K content-similar items of every catalogue item.

    Uses this run's ``content`` model when it trained one, else fits one on
    the run's training data; a data set without an item table has no content
    to compare, and gets no table (``None``).
    """
    from recsys.models.base import load_saved
    from recsys.models.content import ContentRecommender
    from recsys.models.content import write_related_items as write_table

    run = RunFolder(run_key)
    if run.has_model_result("content"):
        model = load_saved(run.saved_model_dir("content"))
    else:
        data = load_training_data(run_key)
        if data.context.items is None:
            return None
        model = ContentRecommender().fit(data.X, data.context)
    return write_table(model, run.file(rf.RELATED_ITEMS), k=k)


def ingest(
    *,
    arrival: str,
    now: float | None = None,
    settle_seconds: float | None = None,
    landing: str | Path | None = None,
    data_path: str | Path | None = None,
) -> dict:
    """Ingest the landing folder into the interaction store (see :mod:`recsys.data.ingest`):
    what the ``recsys_ingest`` DAG's task and ``recsys ingest`` both run.

    Args:
        arrival: the store partition of accepted batches (the DAG: its logical date).
        now: reference time of the "no future timestamps" expectation.
        settle_seconds: how long a batch without a marker must stay unchanged
            (default ``RECSYS_INGEST_SETTLE_SECONDS``).
        landing, data_path: the landing folder and the store (default
            ``RECSYS_LANDING``, ``RECSYS_DATA_PATH``).

    Returns:
        :meth:`recsys.data.ingest.IngestResult.to_dict` plus the folders used:
        ``{"accepted", "rejected", "already_ingested", "duplicates", "refused",
        "waiting", "new_rows", "duplicate_rows", "landing", "store", "quarantine"}``.
    """
    from recsys.data import ingest as ingest_mod

    settle = config.ingest_settle_seconds() if settle_seconds is None else settle_seconds
    folders = _ingest_folders(landing, data_path)
    result = ingest_mod.ingest_landing(
        folders["landing"],
        folders["store"],
        folders["quarantine"],
        arrival=arrival,
        now=now,
        settle_seconds=settle,
    )
    return {**result.to_dict(), **{k: str(v) for k, v in folders.items()}}


def replay_quarantined(
    batch: str,
    *,
    arrival: str,
    now: float | None = None,
    drop_invalid: bool = False,
    data_path: str | Path | None = None,
) -> dict:
    """Take a quarantined batch back into the store (``recsys ingest --replay``); see
    :func:`recsys.data.ingest.replay_quarantined`."""
    from recsys.data import ingest as ingest_mod

    folders = _ingest_folders(None, data_path)
    outcome = ingest_mod.replay_quarantined(
        batch,
        folders["store"],
        folders["quarantine"],
        arrival=arrival,
        now=now,
        drop_invalid=drop_invalid,
    )
    return {**outcome, **{k: str(v) for k, v in folders.items()}}


def _ingest_folders(landing: str | Path | None, data_path: str | Path | None) -> dict[str, Path]:
    return {
        "landing": Path(landing) if landing else config.landing_path(),
        "store": Path(data_path or config.data_path()),
        "quarantine": config.recsys_home() / "quarantine",
    }
