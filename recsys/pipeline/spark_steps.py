"""The data steps under ``RECSYS_ENGINE=spark``: what :mod:`recsys.pipeline.steps` calls
instead of pandas for validation, preparation and the feature tables.

Each function reads and writes the same run-folder files as the local step
(single Parquet files, JSON records), so every later step, the registry and
the gate work unchanged; the Spark code itself is :mod:`recsys.engines.spark`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recsys import config
from recsys.constants import ITEM_COL, USER_COL
from recsys.data import Dataset
from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder
from recsys.progress import log as progress

log = logging.getLogger(__name__)


def validate_input(
    run: RunFolder,
    data_path: str,
    data_format: str | None,
    columns: dict[str, str] | None,
    now: float | None,
) -> dict[str, Any]:
    """Read the input on Spark, run the suites on it and write ``raw/`` of the run.

    A failing batch is quarantined as its source files (the data stays where it
    is; nothing is gathered onto one machine) and
    :class:`recsys.data.validation.DataValidationError` is raised.

    Returns:
        ``{"rows", "users", "items", "data_docs"}`` of the validated input.
    """
    from pyspark.sql import functions as F

    from recsys.data import validation
    from recsys.data.loaders import INTERACTIONS_FILE, write_dataset
    from recsys.engines import spark as engine

    spark = engine.session()
    data = engine.read_input(spark, data_path, data_format, columns)
    checked = Dataset(
        data.interactions.drop(engine.ROW), data.items, data.users, data.name, data.meta
    )
    report = validation.validate_dataset(checked, now=now, docs_dir=run.data_docs)
    run.write_json(rf.VALIDATION, report.to_dict())
    if not report.success:
        dest = config.recsys_home() / "quarantine" / run.path.name
        validation.quarantine(Path(data_path), report, dest)
        log.error("validation failed; batch quarantined in %s", dest)
        raise validation.DataValidationError(report)
    interactions = data.interactions
    key = config.pseudonym_key()
    users = data.users
    if key is not None:
        from recsys.data.prepare import pseudonymise_users

        interactions = engine.pseudonymise_users(interactions, key)
        if users is not None and USER_COL in users.columns:
            users = pseudonymise_users(users, key)
    write_dataset(Dataset(None, data.items, users, data.name, data.meta), run.raw)  # type: ignore[arg-type]
    engine.write_parquet_file(interactions, run.raw / INTERACTIONS_FILE)
    counts = interactions.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(USER_COL).alias("users"),
        F.countDistinct(ITEM_COL).alias("items"),
    ).first()
    progress.info("validated %s interactions on Spark", f"{counts['rows']:,}")
    return {
        "rows": int(counts["rows"]),
        "users": int(counts["users"]),
        "items": int(counts["items"]),
        "data_docs": str(report.docs_path) if report.docs_path else None,
    }


def prepare(run: RunFolder, protocol: str, dedupe: str, split_options: dict) -> dict[str, Any]:
    """De-duplicate and split the run's validated interactions on Spark; write
    ``train.parquet`` / ``test.parquet`` in the local split's row order.

    Returns:
        The split description (as the local step's, ``data_hash`` from
        :func:`recsys.engines.spark.data_hash`).
    """
    from recsys.data.loaders import INTERACTIONS_FILE
    from recsys.engines import spark as engine

    spark = engine.session()
    raw = engine.read_ordered(spark, [run.raw / INTERACTIONS_FILE])
    clean, cleaning = engine.clean_interactions(raw, dedupe=dedupe)
    used, note = engine.protocol_for(clean, protocol)
    if note:
        progress.warning("%s", note)
        split_options = {}
    train, test, order = engine.split_interactions(clean, used, **split_options)
    engine.write_parquet_file(train, run.file(rf.TRAIN), order)
    engine.write_parquet_file(test, run.file(rf.TEST), order)
    info = engine.describe_split(train, test, used, split_options)
    info.update(
        cleaning=cleaning,
        data_hash=engine.data_hash(clean)[:16],
        protocol=used,
        protocol_requested=protocol,
        notes=[note] if note else [],
        engine="spark",
    )
    clean.unpersist()
    return info


def write_feature_tables(run: RunFolder, *, max_len: int = 50) -> dict[str, Path]:
    """Build the feature tables of the run's training split on Spark, check each
    against its suite (on Spark), then write them as the local step does.

    The TF-IDF content vectors come from the items table alone (catalogue-sized)
    and are built by the local code.

    Raises:
        recsys.data.features.FeatureValidationError: a table broke its suite.
    """
    from recsys.constants import GENRES_COL, TITLE_COL
    from recsys.data import features
    from recsys.engines import spark as engine

    spark = engine.session()
    train = engine.read_ordered(spark, [run.file(rf.TRAIN)]).persist()
    dataset = run.side_tables()
    items = dataset.items
    genres = items if items is not None and GENRES_COL in items.columns else None
    tables: dict[str, Any] = {
        "user_profiles": engine.build_user_profiles(train, dataset.users, genres),
        "item_features": engine.build_item_features(train, items),
        "sequences": engine.build_sequences(train, max_len=max_len),
    }
    if items is not None and ({TITLE_COL, GENRES_COL} & set(items.columns)):
        tables["item_content"] = features.content_table(items)
    tables = {name: _cached(table) for name, table in tables.items()}
    features.check_feature_tables(tables, engine.suite_parameters(train, max_len=max_len))
    run.features_dir.mkdir(parents=True, exist_ok=True)
    keys = {"user_profiles": [USER_COL], "item_features": [ITEM_COL], "sequences": [USER_COL]}
    paths = {}
    for name, table in tables.items():
        path = run.features_dir / f"{name}.parquet"
        if name in keys:
            engine.write_parquet_file(table, path, keys[name])
            table.unpersist()
        else:
            features.write_features(run.features_dir, **{name: table})
        paths[name] = path
    train.unpersist()
    return paths


def fit_cold_start(run: RunFolder, *, min_segment_users: int = 20, **options: Any) -> Any:
    """The run's cold-start chain (:func:`recsys.serving.coldstart.fit_cold_start`)
    with the training split counted on Spark: the driver gathers the distinct ids,
    the pairs per item and per segment, and the pairs of the users the co-liked
    similarity learns from (``RECSYS_COLD_START_PAIRS``), never the whole split.
    The same split gives the local engine's chain; ``options`` are the chain's
    weights (:func:`recsys.serving.coldstart.cold_start_from_counts`).
    """
    import numpy as np

    from recsys.engines import spark as engine
    from recsys.ids import IdMap
    from recsys.serving import coldstart

    spark = engine.session()
    train = engine.read_ordered(spark, [run.file(rf.TRAIN)])
    side = run.side_tables()
    table, lookup = coldstart.segment_lookup(side.users)
    segments = None
    if table is not None and lookup:
        segments = table.melt(
            id_vars=[USER_COL], value_vars=list(lookup), var_name="kind", value_name="key"
        ).dropna(subset=["key"])
        segments["key"] = segments["key"].astype(str)
    max_pairs = config.cold_start_pairs()
    counts = engine.cold_start_counts(
        train, segments, lambda pairs: coldstart.similarity_threshold(pairs, max_pairs)
    )
    catalogue = side.items[ITEM_COL] if side.items is not None else None
    id_map = IdMap.from_ids(counts.users, counts.item_pairs[ITEM_COL], extra_items=catalogue)
    popularity = np.zeros(id_map.n_items, dtype=np.float32)  # as a sum of to_matrix's ones
    popularity[id_map.item_index(counts.item_pairs[ITEM_COL])] = counts.item_pairs["n"]
    segment_pop: dict[str, dict[str, np.ndarray]] = {}
    for kind in lookup:
        sizes = counts.segment_users[counts.segment_users["kind"] == kind]
        pairs = counts.segment_pairs[counts.segment_pairs["kind"] == kind]
        segment_pop[kind] = {}
        for key in sizes.loc[sizes["n"] >= min_segment_users, "key"]:
            rows = pairs[pairs["key"] == key]
            vector = np.zeros(id_map.n_items)
            vector[id_map.item_index(rows[ITEM_COL])] = rows["n"]
            segment_pop[kind][str(key)] = vector
    similar = id_map.to_matrix(counts.similarity_rows, weight_col=None)
    similar.data[:] = 1.0
    progress.info(
        "cold-start chain counted on Spark: %s pairs, co-liked similarity from %s of them",
        f"{counts.pairs:,}",
        f"{len(counts.similarity_rows):,}",
    )
    return coldstart.cold_start_from_counts(
        id_map,
        popularity,
        lookup,
        segment_pop,
        similar,
        side.items,
        min_segment_users=min_segment_users,
        **options,
    )


def _cached(table: Any) -> Any:
    """A Spark table persisted (it is validated, then written); a pandas one as is."""
    return table.persist() if hasattr(table, "sparkSession") else table


def spark_als_lists(run: RunFolder, users: Any, k: int, name: str) -> Any:
    """Top-``k`` lists of ``users`` when the champion is this run's ``spark_als``:
    every user it was fitted on from ``recommendForAllUsers`` on the cluster, the
    others (test-only users) from the champion's pyfunc and its cold-start chain.

    Returns:
        The long table of :func:`recsys.registry.recommend_for_users`
        (``user_id, item_id, score, rank, served_by``).
    """
    import numpy as np
    import pandas as pd

    from recsys import registry
    from recsys.constants import RANK_COL, SCORE_COL, SERVED_BY_COL
    from recsys.data.forgotten import default_list
    from recsys.engines import spark as engine
    from recsys.models.spark_als import SPARK_MODEL_DIR
    from recsys.pipeline.steps import load_training_data

    data = load_training_data(run.run_key)
    lists = engine.als_top_k(run.saved_model_dir("spark_als") / SPARK_MODEL_DIR, data.X, k)
    known = pd.DataFrame(
        {
            USER_COL: data.id_map.users.to_numpy()[lists["user"].to_numpy()],
            ITEM_COL: data.id_map.items.to_numpy()[lists["item"].to_numpy()],
            SCORE_COL: lists["score"].to_numpy(dtype=np.float32),
            RANK_COL: lists["rank"].to_numpy(dtype=np.int64),
            SERVED_BY_COL: "model",
        }
    )
    # A user a forget request named since training gets the pyfunc's answer (its
    # cold-start chain), as the served model gives them, never the fitted list.
    forgotten = default_list().mask(known[USER_COL].to_numpy())
    known = known[~forgotten]
    others = pd.Index(users).difference(pd.Index(known[USER_COL].unique()))
    progress.info(
        "spark_als: lists of %s users from recommendForAllUsers, %s from the pyfunc "
        "(%s of them forgotten since training)",
        f"{known[USER_COL].nunique():,}",
        f"{len(others):,}",
        f"{len(pd.unique(lists['user'].to_numpy()[forgotten])):,}",
    )
    if not len(others):
        return known
    rest = registry.recommend_for_users(others, k=k, pseudonymise=False, name=name)
    return pd.concat([known, rest], ignore_index=True).sort_values([USER_COL, RANK_COL])
