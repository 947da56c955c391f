"""Features computed from the training split: user profiles, item features,
content vectors and interaction sequences.

Every builder is a pure function: it reads the frames it is given, never
mutates them, and returns a new frame. Nothing here looks at the wall clock:
"now" is the latest training timestamp unless the caller passes ``now_ts``, so
the same training split always yields the same features.

All feature column names live in the block right below, so writers, models
and tests agree on one schema.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.constants import (
    AGE_COL,
    GENDER_COL,
    GENRES_COL,
    ITEM_COL,
    OCCUPATION_COL,
    RATING_COL,
    TIME_COL,
    TITLE_COL,
    USER_COL,
    YEAR_COL,
)
from recsys.errors import InputError

if TYPE_CHECKING:
    from recsys.data.validation import ValidationReport

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- FEATURES
#: Prefix of the per-genre columns (taste vector for users, one-hot for items).
GENRE_PREFIX = "genre_"

N_INTERACTIONS = "n_interactions"
ACTIVE_DAYS = "active_days"
RECENCY_DAYS = "recency_days"
RATING_MEAN = "rating_mean"
RATING_STD = "rating_std"
POPULARITY = "popularity"
POPULARITY_TREND = "popularity_trend"
RATING_AVG = "rating_avg"
N_USERS = "n_users"
SEQUENCE_COL = "sequence"
SEQUENCE_LENGTH = "sequence_length"
TERM_COL = "term"
WEIGHT_COL = "weight"

#: Numeric user columns every profile has, in output order (genre taste columns
#: follow, then whichever demographics the users table provides).
USER_FEATURES = (N_INTERACTIONS, ACTIVE_DAYS, RECENCY_DAYS, RATING_MEAN, RATING_STD)
#: Demographic columns copied from the users table when present.
USER_DEMOGRAPHICS = (AGE_COL, GENDER_COL, OCCUPATION_COL)
#: Numeric item columns every item row has, in output order (genre one-hot
#: columns follow, then the release year when the items table has one).
ITEM_FEATURES = (POPULARITY, POPULARITY_TREND, RATING_AVG, N_USERS)
#: Optional item columns copied from the items table.
ITEM_EXTRAS = (YEAR_COL,)

#: What each named feature means; a test keeps it in step with the tuples above.
FEATURE_DESCRIPTIONS: dict[str, str] = {
    N_INTERACTIONS: "training interactions of the user",
    ACTIVE_DAYS: "distinct UTC days with at least one interaction",
    RECENCY_DAYS: "days from the user's last interaction to the reference time",
    RATING_MEAN: "mean rating given",
    RATING_STD: "population standard deviation of ratings given (0 for one rating)",
    AGE_COL: "age from the users table",
    GENDER_COL: "gender from the users table",
    OCCUPATION_COL: "occupation from the users table",
    POPULARITY: "training interactions of the item",
    POPULARITY_TREND: "item's share of its interactions in the last 10% of the time range, "
    "divided by the same share over all interactions (1 = steady, > 1 = rising)",
    RATING_AVG: "mean rating received",
    N_USERS: "distinct users who interacted with the item",
    YEAR_COL: "release year from the items table",
}

#: The tables of one run's feature step, each with the suite in ``expectations/``
#: that must pass before it is written (``<run>/features/<table>.parquet``).
TABLE_SUITES: dict[str, str] = {
    "user_profiles": "features_users",
    "item_features": "features_items",
    "sequences": "features_sequences",
    "item_content": "features_content",
}

#: Fraction of the training time range that counts as "recent" for the trend.
TREND_WINDOW = 0.1
_SECONDS_PER_DAY = 86_400


class FeatureError(InputError):
    """Input to a feature builder is malformed (missing columns, bad values)."""


# ------------------------------------------------------------------ helpers
def _require(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise FeatureError(f"{what} is missing required column(s) {missing}")


def _check_train(train: pd.DataFrame, cols: tuple[str, ...]) -> None:
    _require(train, cols, "train")
    if train.empty:
        raise FeatureError("train has no rows; features need at least one interaction")
    if RATING_COL in cols and (train[RATING_COL].isna().any() or (train[RATING_COL] < 0).any()):
        raise FeatureError("train.rating must be non-negative and not null")


def _check_unique(df: pd.DataFrame, col: str, what: str) -> None:
    dup = df[col][df[col].duplicated()]
    if len(dup):
        raise FeatureError(f"{what}.{col} has duplicate ids, e.g. {dup.tolist()[0]!r}")


def _has_time(train: pd.DataFrame) -> bool:
    return TIME_COL in train.columns and train[TIME_COL].notna().all()


def genre_column(name: str) -> str:
    """Column name of one genre: ``genre_`` + the name lower-cased, runs of
    other characters than letters and digits turned into ``_``
    (``"Children's"`` → ``genre_children_s``)."""
    slug = re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")
    if not slug:
        raise FeatureError(f"genre name {name!r} has no letters or digits")
    return GENRE_PREFIX + slug


def _genre_matrix(items: pd.DataFrame) -> tuple[sp.csr_matrix, list[str]]:
    """One-hot items × genres (rows in ``items`` order) and the sorted genre columns."""
    lists = items[GENRES_COL].fillna("").astype(str).str.split("|")
    exploded = lists.explode()
    exploded = exploded[exploded.str.len() > 0]
    names = sorted(exploded.unique(), key=genre_column)
    cols = [genre_column(n) for n in names]
    if len(set(cols)) != len(cols):
        raise FeatureError(f"genre names collide once turned into columns: {names}")
    rows = items.index.get_indexer(exploded.index)
    col_idx = pd.Index(names).get_indexer(exploded.to_numpy())
    G = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, col_idx)), shape=(len(items), len(names))
    )
    G.sum_duplicates()
    G.data[:] = 1.0  # an item listing a genre twice is still one-hot
    return G, cols


def _reference_ts(train: pd.DataFrame, now_ts: float | None) -> float:
    return float(train[TIME_COL].max()) if now_ts is None else float(now_ts)


# ------------------------------------------------------------ user profiles
def build_user_profiles(
    train: pd.DataFrame,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    *,
    now_ts: float | None = None,
    half_life_days: float = 90,
) -> pd.DataFrame:
    """One row per training user: activity, ratings, genre tastes, demographics.

    Args:
        train: training interactions (``user_id``, ``item_id``, ``rating``,
            ``timestamp`` in epoch seconds; timestamp may be all null).
        users: optional users table; ``age``, ``gender``, ``occupation`` are
            copied where present (missing users get nulls).
        items: optional items table with ``genres`` (pipe-separated); gives
            the ``genre_<name>`` taste columns.
        now_ts: reference time in epoch seconds; defaults to the latest
            training timestamp (never the wall clock).
        half_life_days: an interaction this many days older than the
            reference weighs half as much in the taste vector.

    Returns:
        Frame sorted by ``user_id`` with columns ``user_id``,
        :data:`USER_FEATURES`, the genre taste columns (each row sums to 1
        when the user touched any genre, else all 0) and the demographics.
        Without timestamps, ``active_days`` and ``recency_days`` are null and
        tastes are weighted by rating alone.
    """
    _check_train(train, (USER_COL, ITEM_COL, RATING_COL))
    if half_life_days <= 0:
        raise FeatureError(f"half_life_days must be positive, got {half_life_days}")
    out = _user_activity(train, now_ts)
    if items is not None:
        out = out.join(_user_tastes(train, items, now_ts, half_life_days))
    if users is not None:
        out = out.join(_user_demographics(users))
    return out.reset_index()


def _user_activity(train: pd.DataFrame, now_ts: float | None) -> pd.DataFrame:
    g = train.groupby(USER_COL, sort=True)
    out = pd.DataFrame({N_INTERACTIONS: g.size().astype(np.int64)})
    if _has_time(train):
        days = train[TIME_COL].to_numpy(dtype=np.int64) // _SECONDS_PER_DAY
        out[ACTIVE_DAYS] = pd.Series(days, index=train.index).groupby(train[USER_COL]).nunique()
        last = g[TIME_COL].max().astype(np.float64)
        out[RECENCY_DAYS] = (_reference_ts(train, now_ts) - last) / _SECONDS_PER_DAY
    else:
        out[ACTIVE_DAYS] = np.nan
        out[RECENCY_DAYS] = np.nan
    out[RATING_MEAN] = g[RATING_COL].mean().astype(np.float64)
    out[RATING_STD] = g[RATING_COL].std(ddof=0).astype(np.float64)
    return out[list(USER_FEATURES)]


def _user_tastes(
    train: pd.DataFrame, items: pd.DataFrame, now_ts: float | None, half_life_days: float
) -> pd.DataFrame:
    """Users × genres, weights ``rating * 0.5 ** (age_days / half_life)``, rows summing to 1."""
    _require(items, (ITEM_COL, GENRES_COL), "items")
    _check_unique(items, ITEM_COL, "items")
    items = items.reset_index(drop=True)
    G, cols = _genre_matrix(items)
    user_ids = pd.Index(np.sort(train[USER_COL].unique()), name=USER_COL)
    w = train[RATING_COL].to_numpy(dtype=np.float64)
    if _has_time(train):
        age_days = (_reference_ts(train, now_ts) - train[TIME_COL].to_numpy(np.float64)) / (
            _SECONDS_PER_DAY
        )
        w = w * np.power(0.5, age_days / half_life_days)
    u = user_ids.get_indexer(train[USER_COL])
    i = pd.Index(items[ITEM_COL]).get_indexer(train[ITEM_COL])
    known = i >= 0
    W = sp.csr_matrix((w[known], (u[known], i[known])), shape=(len(user_ids), len(items)))
    taste = np.asarray((W @ G).todense())
    totals = taste.sum(axis=1, keepdims=True)
    taste = np.divide(taste, totals, out=np.zeros_like(taste), where=totals > 0)
    return pd.DataFrame(taste, index=user_ids, columns=cols)


def _user_demographics(users: pd.DataFrame) -> pd.DataFrame:
    _require(users, (USER_COL,), "users")
    _check_unique(users, USER_COL, "users")
    cols = [c for c in USER_DEMOGRAPHICS if c in users.columns]
    return users.set_index(USER_COL)[cols]


# ------------------------------------------------------------ item features
def build_item_features(train: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per item: popularity, its trend, average rating, genres, year, reach.

    Args:
        train: training interactions.
        items: optional items table; its items without training interactions
            get a row too (popularity 0, null rating and trend), and it gives
            the genre one-hot columns and ``year``.

    Returns:
        Frame sorted by ``item_id`` with ``item_id``, :data:`ITEM_FEATURES`,
        then ``genre_<name>`` (0/1) columns and ``year`` when ``items`` has
        them. ``popularity_trend`` is null when ``train`` has no timestamps.
    """
    _check_train(train, (USER_COL, ITEM_COL, RATING_COL))
    g = train.groupby(ITEM_COL, sort=True)
    out = pd.DataFrame({POPULARITY: g.size().astype(np.int64)})
    out[POPULARITY_TREND] = _popularity_trend(train) if _has_time(train) else np.nan
    out[RATING_AVG] = g[RATING_COL].mean().astype(np.float64)
    out[N_USERS] = g[USER_COL].nunique().astype(np.int64)
    if items is not None:
        out = _join_item_table(out, items)
    return out.reset_index()


def _popularity_trend(train: pd.DataFrame) -> pd.Series:
    """Per item: (recent share of its interactions) / (recent share of all interactions)."""
    ts = train[TIME_COL].to_numpy(dtype=np.float64)
    t0, t1 = ts.min(), ts.max()
    recent = ts >= t1 - TREND_WINDOW * (t1 - t0)
    item_recent_share = pd.Series(recent, index=train.index).groupby(train[ITEM_COL]).mean()
    return item_recent_share / recent.mean()


def _join_item_table(out: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    _require(items, (ITEM_COL,), "items")
    _check_unique(items, ITEM_COL, "items")
    ids = pd.Index(np.union1d(out.index.to_numpy(), items[ITEM_COL].to_numpy()), name=ITEM_COL)
    out = out.reindex(ids)
    out[POPULARITY] = out[POPULARITY].fillna(0).astype(np.int64)
    out[N_USERS] = out[N_USERS].fillna(0).astype(np.int64)
    table = items.set_index(ITEM_COL)
    if GENRES_COL in items.columns:
        G, cols = _genre_matrix(items.reset_index(drop=True))
        onehot = pd.DataFrame(G.toarray().astype(np.int8), index=table.index, columns=cols)
        out = out.join(onehot)
        out[cols] = out[cols].fillna(0).astype(np.int8)
    if YEAR_COL in items.columns:
        out[YEAR_COL] = table[YEAR_COL].reindex(ids)
    return out


# ---------------------------------------------------------- content vectors
def build_content_vectors(
    items: pd.DataFrame, *, max_features: int | None = 5000
) -> tuple[sp.csr_matrix, dict[str, int]]:
    """TF-IDF vectors of each item's title words and genre tokens.

    Genres become tokens like ``genre_sci_fi`` so they never collide with a
    title word. Rows are L2-normalised (cosine similarity is a dot product).

    Args:
        items: items table with ``item_id`` and at least one of ``title`` and
            ``genres``.
        max_features: keep the most frequent terms only (``None`` keeps all).

    Returns:
        ``(matrix, vocabulary)``: a CSR matrix whose row ``r`` is
        ``items.item_id.iloc[r]``, and the term → column map.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    _require(items, (ITEM_COL,), "items")
    _check_unique(items, ITEM_COL, "items")
    if TITLE_COL not in items.columns and GENRES_COL not in items.columns:
        raise FeatureError("items needs a 'title' or 'genres' column for content vectors")
    docs = _content_documents(items)
    vectorizer = TfidfVectorizer(max_features=max_features, token_pattern=r"(?u)\b\w+\b")
    try:
        matrix = vectorizer.fit_transform(docs)
    except ValueError as err:  # sklearn: "empty vocabulary"
        raise FeatureError(f"items have no title or genre words to vectorise: {err}") from err
    vocabulary = {term: int(col) for term, col in vectorizer.vocabulary_.items()}
    return sp.csr_matrix(matrix), vocabulary


def content_table(items: pd.DataFrame, *, max_features: int | None = 5000) -> pd.DataFrame:
    """:func:`build_content_vectors` stored long, one row per non-zero weight.

    A CSR matrix has no Parquet form, and a dense items × terms frame would be
    mostly zeros (ML-100K: 1,682 items × ~2,500 terms, 0.2% non-zero),
    so the vectors are kept as ``(item_id, term, weight)`` triples, sorted by
    item then term; pivoting them back gives the matrix.
    """
    matrix, vocabulary = build_content_vectors(items, max_features=max_features)
    terms = np.empty(len(vocabulary), dtype=object)
    for term, col in vocabulary.items():
        terms[col] = term
    coo = matrix.tocoo()
    out = pd.DataFrame(
        {
            ITEM_COL: items[ITEM_COL].to_numpy()[coo.row],
            TERM_COL: pd.array(terms[coo.col], dtype="str"),
            WEIGHT_COL: coo.data.astype(np.float64),
        }
    )
    return out.sort_values([ITEM_COL, TERM_COL], ignore_index=True)


def _content_documents(items: pd.DataFrame) -> list[str]:
    n = len(items)
    titles = (
        items[TITLE_COL].fillna("").astype(str)
        if TITLE_COL in items.columns
        else pd.Series([""] * n, index=items.index)
    )
    if GENRES_COL in items.columns:
        genre_tokens = (
            items[GENRES_COL]
            .fillna("")
            .astype(str)
            .str.split("|")
            .map(lambda names: " ".join(genre_column(g) for g in names if g))
        )
    else:
        genre_tokens = pd.Series([""] * n, index=items.index)
    return (titles.str.lower() + " " + genre_tokens).tolist()


# ---------------------------------------------------------------- sequences
def build_sequences(train: pd.DataFrame, *, max_len: int = 50) -> pd.DataFrame:
    """Each user's item ids in time order (oldest first), the last ``max_len`` kept.

    Ties in time keep the order of ``train``'s rows; without timestamps the
    row order is the time order.

    Returns:
        Frame sorted by ``user_id`` with ``user_id``, ``sequence`` (a list
        of item ids) and ``sequence_length`` (its length, 1 to ``max_len``).
    """
    _check_train(train, (USER_COL, ITEM_COL))
    if max_len < 1:
        raise FeatureError(f"max_len must be at least 1, got {max_len}")
    order = np.arange(len(train))
    keys = [train[USER_COL].to_numpy(), order]
    if _has_time(train):
        keys = [train[USER_COL].to_numpy(), train[TIME_COL].to_numpy(), order]
    sorted_rows = train.iloc[np.lexsort(keys[::-1])]
    last = sorted_rows.groupby(USER_COL, sort=True).tail(max_len)
    seqs = last.groupby(USER_COL, sort=True)[ITEM_COL].agg(list).rename(SEQUENCE_COL)
    out = seqs.reset_index()
    out[SEQUENCE_LENGTH] = seqs.map(len).to_numpy(dtype=np.int64)
    return out


# ------------------------------------------------------------- the tables
def build_feature_tables(
    train: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    max_len: int = 50,
) -> dict[str, pd.DataFrame]:
    """Every feature table of one run, keyed as in :data:`TABLE_SUITES`.

    Profiles get genre tastes only when ``items`` has genres; ``item_content``
    is left out when ``items`` is missing or has neither titles nor genres
    (there is no text to vectorise).
    """
    genres = items if items is not None and GENRES_COL in items.columns else None
    tables = {
        "user_profiles": build_user_profiles(train, users, genres),
        "item_features": build_item_features(train, items),
        "sequences": build_sequences(train, max_len=max_len),
    }
    if items is not None and ({TITLE_COL, GENRES_COL} & set(items.columns)):
        tables["item_content"] = content_table(items)
    return tables


def suite_parameters(train: pd.DataFrame, *, max_len: int = 50) -> dict[str, dict[str, float]]:
    """Values for the feature suites' ``$PARAMETER`` placeholders, keyed by suite.

    The rating scale is the one of ``train`` itself (the input already passed
    the interactions suite's declared scale): every mean must lie within it and
    every population standard deviation within half its width.
    """
    low, high = float(train[RATING_COL].min()), float(train[RATING_COL].max())
    scale = {"min_rating": low, "max_rating": high}
    return {
        "features_users": {**scale, "max_rating_std": (high - low) / 2},
        "features_items": scale,
        "features_sequences": {"max_len": max_len},
    }


class FeatureValidationError(InputError):
    """A feature table broke its expectation suite; nothing was written.

    Attributes:
        tables: the tables that failed.
        report: the :class:`recsys.data.validation.ValidationReport` of every table.
    """

    def __init__(self, tables: list[str], report: ValidationReport) -> None:
        super().__init__(
            f"feature table(s) {', '.join(tables)} broke their expectation "
            f"suites; nothing was written\n{report.summary()}"
        )
        self.tables = tables
        self.report = report


def check_feature_tables(
    tables: dict[str, pd.DataFrame],
    params: dict[str, dict[str, float]] | None = None,
    *,
    suites_dir: Path | None = None,
) -> ValidationReport:
    """Validate each table against its suite (:data:`TABLE_SUITES`).

    Returns:
        The :class:`recsys.data.validation.ValidationReport` when every table passed.

    Raises:
        FeatureValidationError: a table broke its suite; the message names the
            table, and each failed expectation with its column and row count.
        FeatureError: a table has no suite.
    """
    from recsys.data.validation import validate_frames

    unknown = sorted(set(tables) - set(TABLE_SUITES))
    if unknown:
        raise FeatureError(f"no expectation suite for feature table(s) {unknown}")
    frames = {TABLE_SUITES[name]: table for name, table in tables.items()}
    given = {suite: p for suite, p in (params or {}).items() if suite in frames}
    report = validate_frames(frames, params=given, name="feature tables", suites_dir=suites_dir)
    if not report.success:
        failed = [
            name
            for name, suite in TABLE_SUITES.items()
            if suite in report.suites and not report.suites[suite].success
        ]
        raise FeatureValidationError(failed, report)
    return report


# ------------------------------------------------------- tables for models
#: What a missing text value becomes in :func:`indexed_features`.
UNKNOWN = "unknown"


def indexed_features(table: pd.DataFrame, id_col: str, ids: pd.Index) -> pd.DataFrame:
    """A feature table re-indexed by matrix position, with no nulls left.

    Row ``r`` holds the features of ``ids[r]`` (the id of matrix row or column
    ``r``), so the frame fits :class:`recsys.models.base.FitContext`. Every
    null — a feature the data lacks (``recency_days`` without timestamps, an
    unrated item's ``rating_avg``, a user missing from the users table) or an
    id the table has no row for — is filled: numbers with the column's mean
    (0 when the column has no value at all), text with ``"unknown"``. A model
    therefore never meets a NaN, and a filled number carries no signal after
    standardisation.
    """
    _require(table, (id_col,), "feature table")
    _check_unique(table, id_col, "feature table")
    frame = table.set_index(id_col).reindex(ids)
    frame.index = pd.RangeIndex(len(ids))
    numeric = frame.select_dtypes("number").columns
    # float64 first: a nullable integer column (a year) cannot hold its mean.
    values = frame[numeric].astype("float64")
    frame[numeric] = values.fillna(values.mean().fillna(0.0))
    for col in frame.columns.difference(numeric):
        frame[col] = frame[col].fillna(UNKNOWN)
    return frame


# ------------------------------------------------------------------ writing
def write_features(out_dir: str | Path, **tables: pd.DataFrame) -> dict[str, Path]:
    """Write each frame to ``out_dir/<name>.parquet`` (overwriting), return the paths."""
    for name, table in tables.items():
        if not isinstance(table, pd.DataFrame):
            raise FeatureError(f"table {name!r} is a {type(table).__name__}, not a DataFrame")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, table in tables.items():
        paths[name] = out_dir / f"{name}.parquet"
        table.to_parquet(paths[name], index=False)
        log.info("wrote %s: %d rows × %d columns", paths[name], *table.shape)
    return paths


def feature_hash(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's column names, dtypes and values (row order matters).

    The same content always gives the same hex digest, across processes and
    machines; list cells (sequences) are hashed through their text form.
    """
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    for col in df.columns:
        values = df[col]
        if values.dtype == object:
            values = values.map(repr)
        h.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return h.hexdigest()
