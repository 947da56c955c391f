"""The Spark engine: the heavy data steps as Spark DataFrame code.

Each function here gives, on a Spark DataFrame, what its namesake in
:mod:`recsys.data` gives on a pandas frame: the same rows in the same order,
the same values (floats within rounding). Two things make that possible:

- **Row order.** Ties (de-duplication, leave-last-out, sequences) and the
  random splits depend on the input's row order, which a Spark DataFrame does
  not have. :func:`read_ordered` reads files in the order the local loaders
  concatenate them and numbers the rows in that order (column :data:`ROW`);
  every later step sorts on it and :func:`write_parquet_file` writes in it.
- **Random draws.** The ``random`` split draws from NumPy's PCG64, which can
  jump ahead, so each Spark task makes the draws of its own rows; the
  ``stratified`` and ``msr`` splits reproduce Microsoft Recommenders' legacy
  Mersenne Twister, which cannot, so each task replays the stream up to its
  rows (cheap next to the shuffle for data of tens of millions of rows; give
  more rows to fewer draw tasks with :data:`DRAWS_PER_TASK`). Row positions
  for the draws come from one sort of the row numbers alone.

Side tables (items, users) are catalogue-sized: they stay pandas and go to
Spark as Arrow tables. The session comes from :func:`session`, configured by
:func:`recsys.config.spark_master` / :func:`recsys.config.spark_remote` and
:func:`recsys.config.spark_conf`. Only this module imports ``pyspark``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys import config
from recsys.constants import (
    GENRES_COL,
    INTERACTION_COLS,
    ITEM_COL,
    RATING_COL,
    TIME_COL,
    USER_COL,
    YEAR_COL,
)
from recsys.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: Column holding each row's place in the input order (internal; never written).
ROW = "_row"
_POS = "_pos"
_DRAW = "_draw"
#: Rows per task of the positional draws (see the module's docstring).
DRAWS_PER_TASK = 4_000_000
_SECONDS_PER_DAY = 86_400
#: JVM thread stack size of the engine's session (see :func:`session`).
_THREAD_STACK = "-Xss16m"


# ------------------------------------------------------------------ session
def session() -> SparkSession:
    """The active Spark session, or a new one on the configured cluster.

    ``SPARK_REMOTE`` (Spark Connect) wins over ``SPARK_MASTER``; the settings of
    :func:`recsys.config.spark_conf` are applied. In local mode the Python
    workers run this interpreter, so they see the same packages.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("recsys")
    remote = config.spark_remote()
    if remote:
        builder = builder.remote(remote)
    else:
        master = config.spark_master()
        builder = builder.master(master).config("spark.sql.session.timeZone", "UTC")
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            # Spark's 200 shuffle partitions cost more in task overhead than one
            # machine's cores can use; a cluster keeps its own default.
            builder = builder.config("spark.sql.shuffle.partitions", str(_local_partitions()))
    # MLlib ALS builds a long lineage per sweep; reading it back overflows the JVM's
    # default 1 MB thread stacks (StackOverflowError) unless checkpointing is set up
    # (spark.checkpoint.dir). Settings given in the configuration win.
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        builder = builder.config(key, _THREAD_STACK)
    for key, value in config.spark_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    log.info("Spark %s session on %s", spark.version, remote or config.spark_master())
    return spark


def _local_partitions() -> int:
    """Shuffle partitions in local mode: two per core."""
    return 2 * (os.cpu_count() or 1)


def to_spark(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """A (small) pandas frame as a Spark DataFrame, through Arrow."""
    import pyarrow as pa

    return spark.createDataFrame(pa.Table.from_pandas(frame, preserve_index=False))


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """A (small) Spark DataFrame as pandas, through Arrow."""
    return df.toArrow().to_pandas()


# ------------------------------------------------------------------ reading
@dataclass
class SparkDataset:
    """:class:`recsys.data.Dataset` with its interactions on Spark (column :data:`ROW`
    numbers them in input order); the side tables stay pandas."""

    interactions: DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    name: str = "dataset"
    meta: dict = field(default_factory=dict)


def read_ordered(spark: SparkSession, paths: list[Path]) -> DataFrame:
    """Parquet files as one DataFrame in the order given, rows numbered in :data:`ROW`.

    Files are read one by one and concatenated (a union keeps its inputs'
    partitions in order), so the numbering follows each file's rows in turn:
    the order :func:`pandas.concat` of the same files gives.
    """
    from pyspark.sql import functions as F

    if not paths:
        raise InputError("no Parquet file to read")
    frames = [spark.read.parquet(str(p)) for p in paths]
    union = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    return union.withColumn(ROW, F.monotonically_increasing_id())


def read_input(
    spark: SparkSession,
    data_path: str | Path,
    data_format: str | None = None,
    columns: dict[str, str] | None = None,
) -> SparkDataset:
    """Read a data set the way :func:`recsys.data.loaders.load_input` does.

    An interaction store (:mod:`recsys.data.ingest`) and a ``recsys`` folder are
    read by Spark from their Parquet files, batches in manifest order after the
    folder's own interactions, as :func:`recsys.data.ingest.read_store` orders
    them. Other formats (MovieLens text files, CSV, a Parquet table that needs
    its columns renamed) are parsed by the local loader and handed to Spark.
    """
    from recsys.data import ingest
    from recsys.data.loaders import INTERACTIONS_FILE, load_dataset, load_input

    path = Path(data_path)
    if data_format in (None, "store") and ingest.is_store(path):
        batches = ingest.read_manifest(path)["batches"]
        ordered = sorted(batches.values(), key=lambda b: (b["arrival"], b["file"]))
        files = [path / b["file"] for b in ordered]
        base = path / INTERACTIONS_FILE
        if base.is_file():
            files.insert(0, base)
        if not files:
            raise InputError(f"interaction store {path} holds no accepted batch yet")
        items, users, name, meta = _side_tables(path)
        meta = {**meta, "path": str(path), "format": "store", "batches": len(ordered)}
        return SparkDataset(read_ordered(spark, files), items, users, name or path.name, meta)
    if _is_recsys_folder(path, data_format):
        items, users, name, meta = _side_tables(path)
        frame = read_ordered(spark, [path / INTERACTIONS_FILE])
        return SparkDataset(frame, items, users, name or path.name, meta)
    dataset = (
        load_input(path, data_format, columns)
        if data_format != "recsys"
        else load_dataset(path, "recsys")
    )
    frame = to_spark(spark, dataset.interactions)
    from pyspark.sql import functions as F

    frame = frame.withColumn(ROW, F.monotonically_increasing_id())
    return SparkDataset(frame, dataset.items, dataset.users, dataset.name, dataset.meta)


def _is_recsys_folder(path: Path, data_format: str | None) -> bool:
    from recsys.data.loaders import INTERACTIONS_FILE

    return (
        data_format in (None, "recsys") and path.is_dir() and (path / INTERACTIONS_FILE).is_file()
    )


def _side_tables(folder: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str, dict]:
    """Items, users, name and meta of a ``recsys`` folder (without its interactions)."""
    import json

    from recsys.data.loaders import ITEMS_FILE, META_FILE, USERS_FILE

    items = pd.read_parquet(folder / ITEMS_FILE) if (folder / ITEMS_FILE).is_file() else None
    users = pd.read_parquet(folder / USERS_FILE) if (folder / USERS_FILE).is_file() else None
    meta_path = folder / META_FILE
    info = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return items, users, info.get("name", ""), info.get("meta", {})


def pseudonymise_users(df: DataFrame, key: bytes) -> DataFrame:
    """User ids replaced by the pseudonyms :func:`recsys.data.prepare.pseudonymise_users`
    gives (HMAC once per distinct user, on the driver; the map is joined back)."""
    from recsys.data.prepare import pseudonymise_ids

    spark = df.sparkSession
    ids = to_pandas(df.select(USER_COL).distinct())[USER_COL]
    mapping = pd.DataFrame({USER_COL: ids, "_pseudonym": pseudonymise_ids(ids.tolist(), key)})
    joined = df.join(to_spark(spark, mapping), USER_COL, "left")
    renamed = joined.drop(USER_COL).withColumnRenamed("_pseudonym", USER_COL)
    return renamed.select(*df.columns)


# ------------------------------------------------------------------ writing
def write_parquet_file(df: DataFrame, target: Path, order: list[str] | None = None) -> Path:
    """Write ``df`` sorted by ``order`` (default :data:`ROW`) as the one Parquet file ``target``.

    Spark writes part files into a staging folder beside ``target`` (so the run
    folder must lie on storage the executors share with the driver); they are
    then streamed, in order, one row group each, into a single file, so every
    reader of the run folder finds the file the local engine writes. Internal
    columns are dropped; an earlier file at ``target`` is replaced.
    """
    import pyarrow.parquet as pq

    target = Path(target)
    staging = target.with_name(f".{target.name}.parts")
    shutil.rmtree(staging, ignore_errors=True)
    internal = [c for c in df.columns if c.startswith("_")]
    df.orderBy(*(order or [ROW])).drop(*internal).write.mode("overwrite").parquet(str(staging))
    parts = sorted(staging.glob("part-*.parquet"))
    partial = target.with_name(f".{target.name}.partial")
    schema = pq.read_schema(parts[0]) if parts else df.drop(*internal).limit(0).toArrow().schema
    with pq.ParquetWriter(partial, schema) as writer:
        for part in parts:  # a row group at a time: the driver never holds a whole part
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                if table.num_rows:
                    writer.write_table(table.cast(schema))
    os.replace(partial, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


# ------------------------------------------------------------------ checks
def has_time(df: DataFrame, time_col: str = TIME_COL) -> bool:
    """Whether every row has a numeric timestamp (the local ``_has_time`` / ``_time_order``)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType

    if time_col not in df.columns or not isinstance(df.schema[time_col].dataType, NumericType):
        return False
    return df.filter(F.col(time_col).isNull()).limit(1).count() == 0


def all_null(df: DataFrame, col: str) -> bool:
    from pyspark.sql import functions as F

    return col not in df.columns or df.filter(F.col(col).isNotNull()).limit(1).count() == 0


# ------------------------------------------------------------- de-duplication
def deduplicate(df: DataFrame, policy: str = "last") -> tuple[DataFrame, int]:
    """:func:`recsys.data.prepare.deduplicate` on Spark: one row per (user, item).

    ``last``/``first`` keep the latest/earliest event by time, the input order
    breaking ties (and deciding alone without usable timestamps); ``mean`` keeps
    the latest with the pair's mean rating. Returns ``(frame, n_merged)``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys.data.prepare import DEDUPE_POLICIES

    if policy not in DEDUPE_POLICIES:
        raise InputError(
            f"unknown dedupe policy '{policy}'; choose one of {', '.join(DEDUPE_POLICIES)}"
        )
    keys = [TIME_COL, ROW] if has_time(df) else [ROW]
    order = [F.col(k).asc() if policy == "first" else F.col(k).desc() for k in keys]
    pair = Window.partitionBy(USER_COL, ITEM_COL)
    out = df.withColumn("_keep", F.row_number().over(pair.orderBy(*order)))
    if policy == "mean":
        out = out.withColumn(RATING_COL, F.avg(RATING_COL).over(pair))
    out = out.filter(F.col("_keep") == 1).drop("_keep")
    before = df.count()
    return out, before - out.count()


def clean_interactions(df: DataFrame, *, dedupe: str | None = "last") -> tuple[DataFrame, dict]:
    """What :func:`recsys.data.prepare.clean_interactions` does with its defaults
    (de-duplication only), and the same report."""
    out, merged = deduplicate(df, dedupe) if dedupe is not None else (df, 0)
    out = out.persist()
    rows_out = out.count()
    report = {
        "rows_in": int(rows_out + merged),
        "dedupe": dedupe,
        "duplicates_merged": int(merged),
        "rows_dropped_min_counts": 0,
        "users_dropped": 0,
        "items_dropped": 0,
        "normalise": "none",
        "pseudonymised": False,
        "rows_out": int(rows_out),
    }
    return out, report


def data_hash(df: DataFrame) -> str:
    """A content hash of the interactions, independent of partitioning: SHA-256 of the
    row count and the sum of each row's 64-bit hash (not the local engine's hash)."""
    from pyspark.sql import functions as F

    cols = [c for c in INTERACTION_COLS if c in df.columns]
    row = df.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.xxhash64(*cols).cast("decimal(38,0)")).alias("h"),
    ).first()
    return hashlib.sha256(f"{row['n']}:{row['h']}".encode()).hexdigest()


# -------------------------------------------------------------------- splits
def protocol_for(df: DataFrame, protocol: str) -> tuple[str, str | None]:
    """:func:`recsys.data.splits.protocol_for` on Spark."""
    from recsys.data import splits

    if protocol in splits.TIME_PROTOCOLS and all_null(df, TIME_COL):
        return splits.protocol_for(pd.DataFrame({TIME_COL: [None]}), protocol)
    return protocol, None


def split_interactions(
    df: DataFrame, protocol: str, **options: Any
) -> tuple[DataFrame, DataFrame, list[str]]:
    """:func:`recsys.data.splits.split_interactions` on Spark.

    Returns:
        ``(train, test, order)``: both parts, and the columns that sort them into
        the order the local split returns its rows in.
    """
    from recsys.data import splits

    splits.check_split_options(protocol, options)
    if protocol == "msr":
        return _stratified(df, 0.75, by="item", seed=42)
    handlers = {
        "stratified": _stratified,
        "temporal": _temporal,
        "loo": _leave_last_out,
        "random": _random,
    }
    return handlers[protocol](df, **options)


def _stratified(
    df: DataFrame, ratio: float = 0.75, *, by: str = "user", seed: int = 42, min_rating: int = 1
) -> tuple[DataFrame, DataFrame, list[str]]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys.data import splits

    splits.check_ratio(ratio)
    group = splits.group_column(by, USER_COL, ITEM_COL)
    if min_rating < 1:
        raise InputError(f"min_rating must be an integer >= 1, got {min_rating}")
    if min_rating > 1:
        size = F.count(F.lit(1)).over(Window.partitionBy(group))
        df = df.withColumn("_size", size).filter(F.col("_size") >= min_rating).drop("_size")
    drawn = _with_draws(df, "mt19937", seed)
    train, test = _ranked_cut(drawn, group, ratio)
    return train, test, [group, _DRAW]


def _random(
    df: DataFrame, ratio: float = 0.8, seed: int = 42
) -> tuple[DataFrame, DataFrame, list[str]]:
    from recsys.data import splits

    splits.check_ratio(ratio)
    train, test = _ranked_cut(_with_draws(df, "pcg64", seed), USER_COL, ratio)
    return train, test, [ROW]


def _ranked_cut(drawn: DataFrame, group: str, ratio: float) -> tuple[DataFrame, DataFrame]:
    """In each group, rows by draw (position breaking ties): the first
    ``round(ratio * n)`` (halves to even, as NumPy) train, the rest test."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    in_group = Window.partitionBy(group)
    ranked = drawn.withColumn("_rank", F.row_number().over(in_group.orderBy(_DRAW, _POS)))
    ranked = ranked.withColumn("_n", F.count(F.lit(1)).over(in_group))
    in_train = F.col("_rank") <= F.bround(F.lit(float(ratio)) * F.col("_n"), 0)
    ranked = ranked.withColumn("_train", in_train).drop("_rank", "_n").persist()
    return ranked.filter("_train").drop("_train"), ranked.filter(~F.col("_train")).drop("_train")


def _with_draws(df: DataFrame, kind: str, seed: int) -> DataFrame:
    """``df`` with :data:`_POS` (0-based place in :data:`ROW` order) and :data:`_DRAW`,
    the draw NumPy's generator ``kind`` gives that row in the local split."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = df.sparkSession
    positions = df.select(ROW).withColumn(_POS, F.row_number().over(Window.orderBy(ROW)) - 1)
    n = positions.count()
    tasks = max(1, -(-n // DRAWS_PER_TASK))
    ids = spark.range(0, n, 1, numPartitions=tasks).withColumnRenamed("id", _POS)

    def draws(batches):
        stream = None
        for batch in batches:
            pos = batch[_POS].to_numpy()
            if not len(pos):
                continue
            if stream is None:
                stream = _draw_stream(kind, seed, int(pos[0]))
            yield pd.DataFrame({_POS: pos, _DRAW: stream(len(pos))})

    drawn = ids.mapInPandas(draws, f"{_POS} long, {_DRAW} double")
    return df.join(positions, ROW).join(drawn, _POS)


def _draw_stream(kind: str, seed: int, start: int) -> Any:
    """A function ``n -> the next n draws``, positioned at draw ``start`` of the stream
    ``np.random.default_rng(seed).random`` (``pcg64``) or
    ``np.random.RandomState(seed).rand`` (``mt19937``) gives."""
    if kind == "pcg64":
        bits = np.random.PCG64(seed)
        bits.advance(start)
        return np.random.Generator(bits).random
    legacy = np.random.RandomState(seed)
    chunk = 1 << 20
    for done in range(0, start, chunk):
        legacy.random_sample(min(chunk, start - done))
    return legacy.random_sample


def _temporal(df: DataFrame, ratio: float = 0.8) -> tuple[DataFrame, DataFrame, list[str]]:
    from pyspark.sql import functions as F

    from recsys.data import splits

    splits.check_ratio(ratio)
    _check_times(df, "temporal")
    n_train = int(round(ratio * df.count()))
    if n_train == 0:
        return df.limit(0), df, [ROW]
    cutoff = _nth_smallest(df, TIME_COL, n_train)
    in_train = F.col(TIME_COL) <= F.lit(cutoff)
    return df.filter(in_train), df.filter(~in_train), [ROW]


#: Buckets of the value histogram :func:`_nth_smallest` counts first.
_HISTOGRAM_BUCKETS = 1 << 16


def _nth_smallest(df: DataFrame, col: str, n: int) -> int:
    """The ``n``-th smallest (1-based) of the integer column ``col``, exactly, without a
    global sort: a histogram of :data:`_HISTOGRAM_BUCKETS` equal-width buckets
    finds the bucket that holds it, then that bucket's distinct values are counted.
    The driver holds two small tables; a sort with an offset would keep ``n``
    rows in one task (the whole training part of a temporal split)."""
    from pyspark.sql import functions as F

    low, high = df.agg(F.min(col), F.max(col)).first()
    width = (int(high) - int(low)) // _HISTOGRAM_BUCKETS + 1
    bucket = ((F.col(col) - F.lit(int(low))) / F.lit(width)).cast("long")
    counts = to_pandas(df.groupBy(bucket.alias("_b")).count()).sort_values("_b")
    through = counts["count"].cumsum().to_numpy()
    at = int(np.searchsorted(through, n))
    before = int(through[at - 1]) if at else 0
    inside = df.filter(bucket == F.lit(int(counts["_b"].iloc[at])))
    values = to_pandas(inside.groupBy(col).count()).sort_values(col)
    within = int(np.searchsorted(values["count"].cumsum().to_numpy(), n - before))
    return int(values[col].iloc[within])


def _leave_last_out(df: DataFrame, n: int = 1) -> tuple[DataFrame, DataFrame, list[str]]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if n < 1:
        raise InputError(f"leave_last_out needs n >= 1, got {n}")
    _check_times(df, "loo")
    user = Window.partitionBy(USER_COL)
    latest = user.orderBy(F.col(TIME_COL).desc(), F.col(ROW).desc())
    ranked = df.withColumn("_from_end", F.row_number().over(latest))
    ranked = ranked.withColumn("_n", F.count(F.lit(1)).over(user))
    held = (F.col("_from_end") <= n) & (F.col("_n") > n)
    ranked = ranked.withColumn("_held", held).drop("_from_end", "_n").persist()
    return ranked.filter(~F.col("_held")).drop("_held"), ranked.filter("_held").drop("_held"), [ROW]


def _check_times(df: DataFrame, protocol: str) -> None:
    from pyspark.sql import functions as F

    if TIME_COL not in df.columns:
        raise InputError(
            f"split protocol '{protocol}' needs timestamps, but column '{TIME_COL}' is missing"
        )
    row = df.agg(F.count(F.lit(1)).alias("n"), F.count(TIME_COL).alias("t")).first()
    if row["n"] != row["t"]:
        raise InputError(
            f"split protocol '{protocol}' needs timestamps, but column "
            f"'{TIME_COL}' has {row['n'] - row['t']} missing value(s) of {row['n']}"
        )


def describe_split(
    train: DataFrame, test: DataFrame, protocol: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """:func:`recsys.data.splits.describe_split` on Spark (the same keys and counts)."""
    from pyspark.sql import functions as F

    facts: dict[str, Any] = {"protocol": protocol, "options": dict(options or {})}
    for name, part in (("train", train), ("test", test)):
        row = part.agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct(USER_COL).alias("users"),
            F.countDistinct(ITEM_COL).alias("items"),
        ).first()
        facts.update({f"{name}_{key}": int(row[key]) for key in ("rows", "users", "items")})
    known_users = train.select(USER_COL).distinct().withColumn("_ku", F.lit(True))
    known_items = train.select(ITEM_COL).distinct().withColumn("_ki", F.lit(True))
    marked = test.join(known_users, USER_COL, "left").join(known_items, ITEM_COL, "left")
    cold = marked.agg(
        F.countDistinct(F.when(F.col("_ku").isNull(), F.col(USER_COL))).alias("users"),
        F.countDistinct(F.when(F.col("_ki").isNull(), F.col(ITEM_COL))).alias("items"),
        F.sum((F.col("_ku").isNull() | F.col("_ki").isNull()).cast("long")).alias("rows"),
    ).first()
    total = facts["train_rows"] + facts["test_rows"]
    facts.update(
        cold_users=int(cold["users"] or 0),
        cold_items=int(cold["items"] or 0),
        cold_rows=int(cold["rows"] or 0),
        test_share=float(facts["test_rows"] / total) if total else 0.0,
    )
    return facts


# ----------------------------------------------------------------- features
def _check_train(train: DataFrame, cols: tuple[str, ...]) -> None:
    from pyspark.sql import functions as F

    from recsys.data.features import FeatureError

    missing = [c for c in cols if c not in train.columns]
    if missing:
        raise FeatureError(f"train is missing required column(s) {missing}")
    if train.limit(1).count() == 0:
        raise FeatureError("train has no rows; features need at least one interaction")
    if RATING_COL in cols:
        bad = train.filter(F.col(RATING_COL).isNull() | (F.col(RATING_COL) < 0)).limit(1)
        if bad.count():
            raise FeatureError("train.rating must be non-negative and not null")


def genre_pairs(items: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Distinct ``(item_id, genre column)`` pairs of the items table and the genre
    columns in the local engine's order (:func:`recsys.data.features.genre_column`)."""
    from recsys.data.features import FeatureError, genre_column

    lists = items[GENRES_COL].fillna("").astype(str).str.split("|")
    exploded = lists.explode()
    keep = exploded.str.len() > 0
    names = sorted(exploded[keep].unique(), key=genre_column)
    cols = [genre_column(n) for n in names]
    if len(set(cols)) != len(cols):
        raise FeatureError(f"genre names collide once turned into columns: {names}")
    pairs = pd.DataFrame(
        {
            ITEM_COL: items[ITEM_COL].to_numpy()[lists.index.get_indexer(exploded[keep].index)],
            "_genre": [genre_column(n) for n in exploded[keep]],
        }
    ).drop_duplicates()
    return pairs, cols


def build_user_profiles(
    train: DataFrame,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    *,
    now_ts: float | None = None,
    half_life_days: float = 90,
) -> DataFrame:
    """:func:`recsys.data.features.build_user_profiles` on Spark (same columns, one row
    per training user; sort by ``user_id`` when writing)."""
    from pyspark.sql import functions as F

    from recsys.data.features import (
        ACTIVE_DAYS,
        N_INTERACTIONS,
        RATING_MEAN,
        RATING_STD,
        RECENCY_DAYS,
        USER_DEMOGRAPHICS,
        USER_FEATURES,
        FeatureError,
    )

    _check_train(train, (USER_COL, ITEM_COL, RATING_COL))
    if half_life_days <= 0:
        raise FeatureError(f"half_life_days must be positive, got {half_life_days}")
    timed = has_time(train)
    reference = _reference(train, now_ts) if timed else None
    aggs = [
        F.count(F.lit(1)).alias(N_INTERACTIONS),
        F.avg(RATING_COL).cast("double").alias(RATING_MEAN),
        F.stddev_pop(RATING_COL).cast("double").alias(RATING_STD),
    ]
    if timed:
        aggs += [
            F.countDistinct(F.floor(F.col(TIME_COL) / _SECONDS_PER_DAY)).alias(ACTIVE_DAYS),
            ((F.lit(reference) - F.max(TIME_COL).cast("double")) / _SECONDS_PER_DAY).alias(
                RECENCY_DAYS
            ),
        ]
    else:
        none = F.lit(None).cast("double")
        aggs += [none.alias(ACTIVE_DAYS), none.alias(RECENCY_DAYS)]
    out = train.groupBy(USER_COL).agg(*aggs).select(USER_COL, *USER_FEATURES)
    if items is not None:
        out = _with_tastes(out, train, items, reference, half_life_days)
    if users is not None:
        from recsys.data.features import _check_unique, _require

        _require(users, (USER_COL,), "users")
        _check_unique(users, USER_COL, "users")
        cols = [c for c in USER_DEMOGRAPHICS if c in users.columns]
        table = to_spark(train.sparkSession, users[[USER_COL, *cols]])
        out = out.join(table, USER_COL, "left")
    return out


def _reference(train: DataFrame, now_ts: float | None) -> float:
    from pyspark.sql import functions as F

    if now_ts is not None:
        return float(now_ts)
    return float(train.agg(F.max(TIME_COL)).first()[0])


def _with_tastes(
    out: DataFrame,
    train: DataFrame,
    items: pd.DataFrame,
    reference: float | None,
    half_life_days: float,
) -> DataFrame:
    """Genre tastes: weights ``rating * 0.5 ** (age_days / half_life)`` summed per genre,
    each user's row summing to 1 (all 0 for a user who touched no genre)."""
    from pyspark.sql import functions as F

    from recsys.data.features import _check_unique, _require

    _require(items, (ITEM_COL, GENRES_COL), "items")
    _check_unique(items, ITEM_COL, "items")
    pairs, cols = genre_pairs(items)
    weight = F.col(RATING_COL).cast("double")
    if reference is not None:
        age = (F.lit(reference) - F.col(TIME_COL).cast("double")) / _SECONDS_PER_DAY
        weight = weight * F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))
    weighted = train.select(USER_COL, ITEM_COL, weight.alias("_w"))
    genres = to_spark(train.sparkSession, pairs)
    per_genre = (
        weighted.join(genres, ITEM_COL).groupBy(USER_COL, "_genre").agg(F.sum("_w").alias("_w"))
    )
    taste = per_genre.groupBy(USER_COL).pivot("_genre", cols).agg(F.first("_w"))
    taste = taste.fillna(0.0, subset=cols) if cols else taste
    total = reduce(lambda a, b: a + b, [F.col(c) for c in cols]) if cols else F.lit(0.0)
    shares = [F.when(total > 0, F.col(c) / total).otherwise(F.lit(0.0)).alias(c) for c in cols]
    taste = taste.select(USER_COL, *shares)
    joined = out.join(taste, USER_COL, "left")
    return joined.fillna(0.0, subset=cols) if cols else joined


def build_item_features(train: DataFrame, items: pd.DataFrame | None = None) -> DataFrame:
    """:func:`recsys.data.features.build_item_features` on Spark (same columns; sort
    by ``item_id`` when writing)."""
    from pyspark.sql import functions as F

    from recsys.data.features import (
        ITEM_FEATURES,
        N_USERS,
        POPULARITY,
        POPULARITY_TREND,
        RATING_AVG,
        TREND_WINDOW,
    )

    _check_train(train, (USER_COL, ITEM_COL, RATING_COL))
    aggs = [
        F.count(F.lit(1)).alias(POPULARITY),
        F.avg(RATING_COL).cast("double").alias(RATING_AVG),
        F.countDistinct(USER_COL).alias(N_USERS),
    ]
    frame = train
    if has_time(train):
        span = train.agg(F.min(TIME_COL).alias("t0"), F.max(TIME_COL).alias("t1")).first()
        t0, t1 = float(span["t0"]), float(span["t1"])
        recent = (F.col(TIME_COL).cast("double") >= F.lit(t1 - TREND_WINDOW * (t1 - t0))).cast(
            "double"
        )
        frame = train.withColumn("_recent", recent)
        overall = float(frame.agg(F.avg("_recent")).first()[0])
        aggs.append((F.avg("_recent") / F.lit(overall)).alias(POPULARITY_TREND))
    else:
        aggs.append(F.lit(None).cast("double").alias(POPULARITY_TREND))
    out = frame.groupBy(ITEM_COL).agg(*aggs).select(ITEM_COL, *ITEM_FEATURES)
    if items is not None:
        out = _join_item_table(out, items)
    return out


def _join_item_table(out: DataFrame, items: pd.DataFrame) -> DataFrame:
    """Catalogue items without training rows get a row too (popularity 0, null rating
    and trend); the genre one-hot columns and the year come from the items table."""
    from pyspark.sql import functions as F

    from recsys.data.features import N_USERS, POPULARITY, _check_unique, _require

    _require(items, (ITEM_COL,), "items")
    _check_unique(items, ITEM_COL, "items")
    spark = out.sparkSession
    catalogue = items[[ITEM_COL]].copy()
    if YEAR_COL in items.columns:
        catalogue[YEAR_COL] = items[YEAR_COL]
    joined = out.join(to_spark(spark, catalogue), ITEM_COL, "full_outer")
    joined = joined.fillna(0, subset=[POPULARITY, N_USERS])
    columns = [c for c in out.columns]
    if GENRES_COL in items.columns:
        pairs, cols = genre_pairs(items)
        onehot = (
            to_spark(spark, pairs).groupBy(ITEM_COL).pivot("_genre", cols).agg(F.count(F.lit(1)))
        )
        flags = [F.coalesce(F.col(c), F.lit(0)).cast("byte").alias(c) for c in cols]
        joined = joined.join(onehot.select(ITEM_COL, *flags), ITEM_COL, "left")
        joined = joined.fillna(0, subset=cols) if cols else joined
        columns += cols
    if YEAR_COL in items.columns:
        columns.append(YEAR_COL)
    return joined.select(*columns)


def build_sequences(train: DataFrame, *, max_len: int = 50) -> DataFrame:
    """:func:`recsys.data.features.build_sequences` on Spark: each user's last
    ``max_len`` items, oldest first, ties in time in the order of ``train``'s rows."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys.data.features import SEQUENCE_COL, SEQUENCE_LENGTH, FeatureError

    _check_train(train, (USER_COL, ITEM_COL))
    if max_len < 1:
        raise FeatureError(f"max_len must be at least 1, got {max_len}")
    keys = [TIME_COL, ROW] if has_time(train) else [ROW]
    latest = Window.partitionBy(USER_COL).orderBy(*[F.col(k).desc() for k in keys])
    last = train.withColumn("_from_end", F.row_number().over(latest)).filter(
        F.col("_from_end") <= max_len
    )
    events = F.sort_array(F.collect_list(F.struct(*[F.col(k) for k in keys], F.col(ITEM_COL))))
    seqs = last.groupBy(USER_COL).agg(
        F.transform(events, lambda e: e[ITEM_COL]).alias(SEQUENCE_COL)
    )
    return seqs.withColumn(SEQUENCE_LENGTH, F.size(SEQUENCE_COL).cast("long"))


def suite_parameters(train: DataFrame, *, max_len: int = 50) -> dict[str, dict[str, float]]:
    """:func:`recsys.data.features.suite_parameters` from a Spark DataFrame."""
    from pyspark.sql import functions as F

    row = train.agg(F.min(RATING_COL).alias("lo"), F.max(RATING_COL).alias("hi")).first()
    low, high = float(row["lo"]), float(row["hi"])
    scale = {"min_rating": low, "max_rating": high}
    return {
        "features_users": {**scale, "max_rating_std": (high - low) / 2},
        "features_items": scale,
        "features_sequences": {"max_len": max_len},
    }


# --------------------------------------------------------------- cold start
@dataclass
class ColdStartCounts:
    """What the cold-start chain learns from the training split, counted on Spark
    (:func:`cold_start_counts`); every table is small enough for the driver."""

    users: np.ndarray  # distinct training users
    pairs: int  # distinct (user, item) pairs
    item_pairs: pd.DataFrame  # item_id, n: pairs per item
    segment_pairs: pd.DataFrame  # kind, key, item_id, n: pairs per segment and item
    segment_users: pd.DataFrame  # kind, key, n: training users per segment
    similarity_rows: pd.DataFrame  # user_id, item_id: the pairs similarity learns from


def cold_start_counts(
    train: DataFrame, segments: pd.DataFrame | None, similarity_cut: Any
) -> ColdStartCounts:
    """Count on the cluster what :func:`recsys.serving.coldstart.fit_cold_start`
    counts in memory, so the driver never holds the training split.

    Args:
        train: the training split (``user_id``, ``item_id``).
        segments: the users' segment keys, long (``user_id, kind, key``), or ``None``.
        similarity_cut: a function of the number of distinct pairs giving the cut of
            :func:`recsys.serving.coldstart.similarity_threshold` (``None``: all pairs
            go to the similarity).
    """
    from pyspark.sql import functions as F

    pairs = train.select(USER_COL, ITEM_COL).distinct().persist()
    try:
        n_pairs = pairs.count()
        users = to_pandas(pairs.select(USER_COL).distinct())[USER_COL].to_numpy()
        item_pairs = to_pandas(pairs.groupBy(ITEM_COL).agg(F.count(F.lit(1)).alias("n")))
        if segments is not None and len(segments):
            keys = to_spark(train.sparkSession, segments)
            known = keys.join(pairs.select(USER_COL).distinct(), USER_COL)
            segment_users = to_pandas(known.groupBy("kind", "key").agg(F.count("*").alias("n")))
            joined = keys.join(pairs, USER_COL)
            segment_pairs = to_pandas(
                joined.groupBy("kind", "key", ITEM_COL).agg(F.count("*").alias("n"))
            )
        else:
            segment_users = pd.DataFrame({"kind": [], "key": [], "n": []})
            segment_pairs = pd.DataFrame({"kind": [], "key": [], ITEM_COL: [], "n": []})
        cut = similarity_cut(n_pairs)
        drawn = pairs
        if cut is not None:
            digits = F.substring(F.sha2(F.col(USER_COL).cast("string"), 256), 1, 15)
            drawn = pairs.filter(F.conv(digits, 16, 10).cast("long") < F.lit(int(cut)))
        similarity_rows = to_pandas(drawn)
    finally:
        pairs.unpersist()
    return ColdStartCounts(
        users=users,
        pairs=int(n_pairs),
        item_pairs=item_pairs,
        segment_pairs=segment_pairs,
        segment_users=segment_users,
        similarity_rows=similarity_rows,
    )


# ---------------------------------------------------------------- MLlib ALS
def fit_als(
    X: Any,
    *,
    rank: int,
    regularization: float,
    alpha: float,
    iterations: int,
    blocks: int,
    seed: int,
) -> Any:
    """MLlib ALS (implicit preferences) fitted on the non-zeros of the CSR matrix ``X``
    (row = user index, column = item index, value = weight)."""
    from pyspark.ml.recommendation import ALS

    coo = X.tocoo()
    triples = pd.DataFrame(
        {
            "user": coo.row.astype(np.int32),
            "item": coo.col.astype(np.int32),
            "weight": coo.data.astype(np.float32),
        }
    )
    ratings = to_spark(session(), triples)
    als = ALS(
        rank=rank,
        maxIter=iterations,
        regParam=regularization,
        alpha=alpha,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="weight",
        seed=seed,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )
    return als.fit(ratings)


def als_blocks(nnz: int) -> int:
    """MLlib ALS's user and item blocks for ``nnz`` ratings: one per million, at least
    one per core the session runs tasks on (each block is one task: a single block
    leaves every core but one idle), at most MLlib's default of 10."""
    spark = session()
    if config.spark_remote():  # Spark Connect has no SparkContext to ask
        cores = int(spark.conf.get("spark.default.parallelism", "1") or 1)
    else:
        cores = spark.sparkContext.defaultParallelism
    return int(np.clip(max(nnz // 1_000_000, cores), 1, 10))


def als_factors(model: Any, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted user and item factors as dense float32 arrays indexed by matrix position
    (zeros where MLlib has no factor: a row or column without interactions)."""

    def dense(frame: DataFrame, n: int) -> np.ndarray:
        table = to_pandas(frame)
        out = np.zeros((n, model.rank), dtype=np.float32)
        if len(table):
            out[table["id"].to_numpy()] = np.stack(table["features"].to_numpy())
        return out

    return dense(model.userFactors, n_users), dense(model.itemFactors, n_items)


def save_als(model: Any, path: Path) -> None:
    """Write the fitted MLlib model into ``path`` (replacing an earlier one)."""
    model.write().overwrite().save(str(path))


def als_top_k(path: Path, seen: Any, k: int) -> pd.DataFrame:
    """Every fitted user's top-``k`` unseen items from the MLlib model saved in ``path``,
    by ``recommendForAllUsers`` on the cluster.

    Args:
        path: a folder :func:`save_als` wrote.
        seen: the users × items CSR matrix of the training interactions; its
            items are left out of each user's list.
        k: list length.

    Returns:
        ``user`` (row index), ``item`` (column index), ``score``, ``rank``
        (1 = best; ties broken by the lower item index), ``k`` rows per user
        where the catalogue allows.
    """
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = session()
    model = ALSModel.load(str(path))
    longest = int(np.diff(seen.indptr).max()) if seen.shape[0] else 0
    asked = int(min(k + longest, seen.shape[1]))
    coo = seen.tocoo()
    pairs = pd.DataFrame({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32)})
    lists = model.recommendForAllUsers(asked).select(
        "user", F.explode("recommendations").alias("r")
    )
    lists = lists.select("user", F.col("r.item").alias("item"), F.col("r.rating").alias("score"))
    unseen = lists.join(to_spark(spark, pairs), ["user", "item"], "left_anti")
    order = Window.partitionBy("user").orderBy(F.col("score").desc(), F.col("item"))
    ranked = unseen.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= k)
    return to_pandas(ranked.orderBy("user", "rank"))
