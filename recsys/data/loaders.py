"""Read interaction data from common formats into one :class:`~recsys.data.Dataset`.

Supported formats (detected from the path, or named with ``fmt``):

- ``ml-100k``: the MovieLens 100K folder (``u.data``, ``u.item``, ``u.genre``,
  ``u.user``), or the path of ``u.data`` itself.
- ``ml-latest``: MovieLens "latest" / "latest-small" (``ratings.csv`` with
  ``movies.csv`` beside it when present).
- ``ml-1m``: MovieLens 1M (``ratings.dat``, ``movies.dat``, ``users.dat``).
- ``recsys``: a folder written by :func:`write_dataset`.
- ``csv``, ``tsv``, ``parquet``: one generic interactions table whose column
  names are given by the caller.

The loader checks structure only (the path exists, the format is known, the
file has rows, the named columns exist) and raises :class:`DataFormatError`
otherwise. It never judges values: a rating or timestamp it cannot parse is
kept exactly as read, in an ``object`` column, so that the validation module
can name it. No row is ever dropped here.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

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
from recsys.data import RATING_SCALE, Dataset, SideTables
from recsys.errors import InputError

log = logging.getLogger(__name__)

FORMATS = ("ml-100k", "ml-latest", "ml-1m", "recsys", "csv", "tsv", "parquet")

INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
META_FILE = "meta.json"

#: Occupation codes of MovieLens 1M (its README), mapped to names.
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


class DataFormatError(InputError):
    """The input cannot be read as interactions: a structural problem, not a bad value."""


# --------------------------------------------------------------------------- public
def load_dataset(
    path: str | Path,
    fmt: str | None = None,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
    sep: str | None = None,
) -> Dataset:
    """Load interactions (and item/user tables when the format has them).

    Args:
        path: a folder or a file; what it holds is detected unless ``fmt`` names it.
        fmt: one of :data:`FORMATS`, or ``None`` to detect.
        user_col, item_col: column names of the ids in a generic table
            (default ``user_id`` / ``item_id``).
        rating_col: rating column of a generic table (default ``rating``); when
            left at the default and absent, every row gets 1.0 (implicit feedback).
        time_col: time column of a generic table (default ``timestamp``); when left
            at the default and absent, the timestamp column is all null. Datetime
            strings become int64 seconds since the epoch (naive times read as UTC).
        sep: field separator of a CSV/TSV table (default ``,`` / tab).

    Returns:
        A :class:`Dataset` whose interactions have exactly the columns
        ``user_id, item_id, rating, timestamp`` in the source's row order. Integer
        ids stay integers; ratings are float64; timestamps int64 (nullable
        ``Int64`` when some are missing). A value that does not parse keeps its
        column as read (``object``) for validation to report.

    Raises:
        DataFormatError: the path is missing, the format unknown or undetectable,
            a file empty, or a named column absent.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    generic = sep is not None or any(
        c is not None for c in (user_col, item_col, rating_col, time_col)
    )
    fmt = fmt or _detected(path, generic)
    if fmt not in FORMATS:
        raise DataFormatError(f"{path}: unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt in ("csv", "tsv", "parquet"):
        columns = {
            USER_COL: user_col,
            ITEM_COL: item_col,
            RATING_COL: rating_col,
            TIME_COL: time_col,
        }
        dataset = _read_table(path, fmt, columns, sep)
    else:
        dataset = _READERS[fmt](path)
    log.info("loaded %s from %s: %d interactions", fmt, path, len(dataset.interactions))
    return dataset


def load_input(
    data_path: str | Path, data_format: str | None = None, columns: dict[str, str] | None = None
) -> Dataset:
    """Load a data set the way every entry point does (CLI, DAG, benchmark).

    ``data_path`` may also be an interaction store kept by
    :mod:`recsys.data.ingest` (detected, or named with ``data_format="store"``);
    anything else goes to :func:`load_dataset` with ``columns`` as its
    generic-table options.
    """
    from recsys.data import ingest

    if data_format in (None, "store") and ingest.is_store(data_path):
        return ingest.read_store(data_path)
    return load_dataset(data_path, data_format, **(columns or {}))


def input_rows(
    data_path: str | Path, data_format: str | None = None, columns: dict[str, str] | None = None
) -> int:
    """How many interactions the input holds (a store answers from its manifest)."""
    from recsys.data import ingest

    if ingest.is_store(data_path):
        return ingest.store_rows(data_path)
    return len(load_input(data_path, data_format, columns).interactions)


def _detected(path: Path, generic: bool) -> str:
    """The detected format; a file whose name says nothing is delimited text (``csv``,
    with the caller's ``sep``) when the caller described its columns or separator."""
    try:
        return detect_format(path)
    except DataFormatError:
        if generic and path.is_file():
            return "csv"
        raise


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from the files it holds or its file name.

    Raises:
        DataFormatError: nothing recognisable is there.
    """
    path = Path(path)
    if path.is_dir():
        for marker, fmt in (
            ("u.data", "ml-100k"),
            ("ratings.dat", "ml-1m"),
            (INTERACTIONS_FILE, "recsys"),
            ("ratings.csv", "ml-latest"),
        ):
            if (path / marker).is_file():
                return fmt
        found = sorted(p.name for p in path.iterdir())[:20]
        raise DataFormatError(
            f"{path}: cannot detect the data format of this folder "
            f"(holds {found}); name it with --format (data_format in a DAG run): "
            f"{', '.join(FORMATS)}"
        )
    by_name = {"u.data": "ml-100k", "ratings.dat": "ml-1m"}
    if path.name in by_name:
        return by_name[path.name]
    if path.name == "ratings.csv" and _first_line(path).startswith("userId,movieId"):
        return "ml-latest"
    by_suffix = {
        ".parquet": "parquet",
        ".pq": "parquet",
        ".tsv": "tsv",
        ".csv": "csv",
        ".txt": "csv",
    }
    if path.suffix.lower() in by_suffix:
        return by_suffix[path.suffix.lower()]
    raise DataFormatError(
        f"{path}: cannot detect the data format from the file name; name it with --format "
        f"(data_format in a DAG run): {', '.join(FORMATS)}, or give --sep and the column "
        "flags to read it as delimited text"
    )


def write_dataset(dataset: Dataset, out_dir: str | Path) -> Path:
    """Write ``dataset`` in the ``recsys`` folder format and return the folder.

    The folder holds ``interactions.parquet``, ``items.parquet`` and
    ``users.parquet`` when those tables exist, and ``meta.json`` (name and meta).
    Files from an earlier write of the same folder are replaced, so a rerun is safe.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        INTERACTIONS_FILE: dataset.interactions,
        ITEMS_FILE: dataset.items,
        USERS_FILE: dataset.users,
    }
    for name, frame in tables.items():
        target = out / name
        if frame is None:
            target.unlink(missing_ok=True)
            continue
        _write_parquet(frame, target)
    meta = {"name": dataset.name, "meta": dataset.meta}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return out


# ------------------------------------------------------------------ value parsing
def _parse_numeric(values: pd.Series) -> pd.Series:
    """float64 when every present value parses as a number; else unchanged."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    parsed = pd.to_numeric(values, errors="coerce")
    if (parsed.isna() & values.notna()).any():
        return values.astype(object)
    return parsed.astype("float64")


def _parse_ids(values: pd.Series) -> pd.Series:
    """int64 when every id is present and integral; otherwise as read."""
    if pd.api.types.is_integer_dtype(values) and not values.isna().any():
        return values.astype("int64")
    numbers = _parse_numeric(values)
    if numbers.dtype == object or numbers.isna().any():
        return values
    if not np.all(np.mod(numbers.to_numpy(), 1) == 0):
        return values
    return numbers.astype("int64")


def _parse_times(values: pd.Series) -> pd.Series:
    """Epoch seconds: int64 when complete, Int64 with gaps; unparseable stays as read."""
    if values.isna().all():
        return pd.Series(pd.NA, index=values.index, dtype="Int64")
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetimes_to_seconds(values)
    if not pd.api.types.is_numeric_dtype(values):
        stamps = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
        if not (stamps.isna() & values.notna()).any():
            return _datetimes_to_seconds(stamps)
    numbers = _parse_numeric(values)
    if numbers.dtype == object or not np.all(np.mod(numbers.dropna().to_numpy(), 1) == 0):
        return values.astype(object)
    return numbers.astype("Int64" if numbers.isna().any() else "int64")


def _datetimes_to_seconds(stamps: pd.Series) -> pd.Series:
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype("Int64" if seconds.isna().any() else "int64")


def _interactions(
    users: pd.Series, items: pd.Series, ratings: pd.Series | None, times: pd.Series | None
) -> pd.DataFrame:
    """Assemble the normalised interactions table from raw columns."""
    index = pd.RangeIndex(len(users))
    ratings = (
        pd.Series(1.0, index=index)
        if ratings is None
        else _parse_numeric(ratings.reset_index(drop=True))
    )
    times = (
        pd.Series(pd.NA, index=index, dtype="Int64")
        if times is None
        else _parse_times(times.reset_index(drop=True))
    )
    return pd.DataFrame(
        {
            USER_COL: _parse_ids(users.reset_index(drop=True)),
            ITEM_COL: _parse_ids(items.reset_index(drop=True)),
            RATING_COL: ratings,
            TIME_COL: times,
        }
    )


# ------------------------------------------------------------------ file helpers
def _first_line(path: Path) -> str:
    with path.open("r", encoding="latin-1") as handle:
        return handle.readline()


def _read_text(
    path: Path,
    sep: str,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    header: int | None = None,
) -> pd.DataFrame:
    """Read a delimited file, or raise DataFormatError.

    Only empty fields count as missing ("NA", "null" stay as text). A column the C
    parser cannot read entirely as numbers keeps every value as the text read.
    """
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=header,
            names=names,
            encoding=encoding,
            keep_default_na=False,
            na_values=[""],
            engine="c" if len(sep) == 1 else "python",
        )
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{path}: the file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot be parsed as '{sep}'-separated text: {exc}") from exc
    if frame.empty:
        raise DataFormatError(f"{path}: the file holds no rows")
    return frame


def _read_double_colon(path: Path, n_fields: int, names: list[str]) -> pd.DataFrame:
    """Read a MovieLens ``::`` file whose fields hold no colon (fast C parser)."""
    raw = _read_text(path, ":", encoding="latin-1")
    if raw.shape[1] != 2 * n_fields - 1:
        raise DataFormatError(
            f"{path}: expected {n_fields} '::'-separated fields, found {(raw.shape[1] + 1) // 2}"
        )
    frame = raw.iloc[:, ::2]
    frame.columns = names
    return frame


def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    import pyarrow as pa

    try:
        frame.to_parquet(target, index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise DataFormatError(f"{target}: cannot write this table as Parquet: {exc}") from exc


# ---------------------------------------------------------------------- ML-100K
def _read_ml100k(path: Path) -> Dataset:
    folder = path.parent if path.is_file() else path
    ratings = _read_text(folder / "u.data", "\t", names=[USER_COL, ITEM_COL, RATING_COL, TIME_COL])
    inter = _interactions(
        ratings[USER_COL], ratings[ITEM_COL], ratings[RATING_COL], ratings[TIME_COL]
    )
    genres = _ml100k_genres(folder / "u.genre") if (folder / "u.genre").is_file() else None
    items = _ml100k_items(folder / "u.item", genres) if (folder / "u.item").is_file() else None
    users = _ml100k_users(folder / "u.user") if (folder / "u.user").is_file() else None
    meta = {"path": str(folder), "format": "ml-100k", "genres": genres, RATING_SCALE: (1, 5)}
    return Dataset(inter, items, users, name="ml-100k", meta=meta)


def _ml100k_genres(path: Path) -> list[str]:
    table = _read_text(path, "|", names=["genre", "index"], encoding="latin-1")
    table = table.dropna(subset=["genre"])
    return table.sort_values("index", key=lambda s: s.astype(int))["genre"].tolist()


def _ml100k_items(path: Path, genres: list[str] | None) -> pd.DataFrame:
    raw = _read_text(path, "|", encoding="latin-1")
    n_flags = raw.shape[1] - 5
    names = genres if genres and len(genres) == n_flags else [f"genre_{g}" for g in range(n_flags)]
    flags = (raw.iloc[:, 5:].astype(str) == "1").to_numpy()
    title = raw[1].fillna("")
    year = _year_from_title(title).fillna(
        pd.to_datetime(raw[2], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64")
    )
    return pd.DataFrame(
        {
            ITEM_COL: _parse_ids(raw[0]),
            TITLE_COL: title,
            GENRES_COL: _join_flags(flags, names),
            YEAR_COL: year,
        }
    )


def _ml100k_users(path: Path) -> pd.DataFrame:
    raw = _read_text(
        path, "|", names=[USER_COL, AGE_COL, GENDER_COL, OCCUPATION_COL, "zip"], encoding="latin-1"
    )
    return pd.DataFrame(
        {
            USER_COL: _parse_ids(raw[USER_COL]),
            AGE_COL: _parse_ids(raw[AGE_COL]),
            GENDER_COL: raw[GENDER_COL],
            OCCUPATION_COL: raw[OCCUPATION_COL],
        }
    )


def _join_flags(flags: np.ndarray, names: list[str]) -> pd.Series:
    """Pipe-join the names of the set flags of each row (vectorised over columns)."""
    joined = pd.Series("", index=range(flags.shape[0]), dtype=object)
    for col, name in enumerate(names):  # loop over the 19 genres, not the catalogue
        on = flags[:, col]
        joined[on] = np.where(joined[on] == "", name, joined[on] + "|" + name)
    return joined


def _year_from_title(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.str.extract(_YEAR_IN_TITLE)[0], errors="coerce").astype("Int64")


# ------------------------------------------------------------------- ML-latest
def _read_ml_latest(path: Path) -> Dataset:
    folder = path.parent if path.is_file() else path
    ratings = _read_text(folder / "ratings.csv", ",", header=0)
    _require_columns(ratings, ["userId", "movieId", "rating", "timestamp"], folder / "ratings.csv")
    inter = _interactions(
        ratings["userId"], ratings["movieId"], ratings["rating"], ratings["timestamp"]
    )
    movies = folder / "movies.csv"
    items = _ml_latest_items(movies) if movies.is_file() else None
    return Dataset(
        inter,
        items,
        None,
        name="ml-latest",
        meta={"path": str(folder), "format": "ml-latest", RATING_SCALE: (0.5, 5)},
    )


def _ml_latest_items(path: Path) -> pd.DataFrame:
    raw = _read_text(path, ",", header=0)
    _require_columns(raw, ["movieId", "title", "genres"], path)
    title = raw["title"].fillna("").str.strip()
    genres = raw["genres"].fillna("").replace("(no genres listed)", "")
    return pd.DataFrame(
        {
            ITEM_COL: _parse_ids(raw["movieId"]),
            TITLE_COL: title,
            GENRES_COL: genres,
            YEAR_COL: _year_from_title(title),
        }
    )


# ----------------------------------------------------------------------- ML-1M
def _read_ml1m(path: Path) -> Dataset:
    folder = path.parent if path.is_file() else path
    raw = _read_double_colon(folder / "ratings.dat", 4, [USER_COL, ITEM_COL, RATING_COL, TIME_COL])
    inter = _interactions(raw[USER_COL], raw[ITEM_COL], raw[RATING_COL], raw[TIME_COL])
    items = _ml1m_items(folder / "movies.dat") if (folder / "movies.dat").is_file() else None
    users = _ml1m_users(folder / "users.dat") if (folder / "users.dat").is_file() else None
    return Dataset(
        inter,
        items,
        users,
        name="ml-1m",
        meta={
            "path": str(folder),
            "format": "ml-1m",
            RATING_SCALE: (1, 5),
            "age": "lower bound of the ML-1M age bracket",
        },
    )


def _ml1m_items(path: Path) -> pd.DataFrame:
    lines = path.read_text(encoding="latin-1").splitlines()
    parts = pd.Series([line for line in lines if line.strip()], dtype=object).str.split(
        "::", n=2, expand=True
    )
    if parts.shape[1] != 3:
        raise DataFormatError(f"{path}: expected 'MovieID::Title::Genres' lines")
    title = parts[1].fillna("").str.strip()
    return pd.DataFrame(
        {
            ITEM_COL: _parse_ids(parts[0]),
            TITLE_COL: title,
            GENRES_COL: parts[2].fillna(""),
            YEAR_COL: _year_from_title(title),
        }
    )


def _ml1m_users(path: Path) -> pd.DataFrame:
    raw = _read_double_colon(path, 5, [USER_COL, GENDER_COL, AGE_COL, OCCUPATION_COL, "zip"])
    codes = _parse_ids(raw[OCCUPATION_COL])
    occupation = (
        codes.map(dict(enumerate(ML1M_OCCUPATIONS))).fillna(raw[OCCUPATION_COL])
        if codes.dtype != object
        else codes
    )
    return pd.DataFrame(
        {
            USER_COL: _parse_ids(raw[USER_COL]),
            AGE_COL: _parse_ids(raw[AGE_COL]),
            GENDER_COL: raw[GENDER_COL],
            OCCUPATION_COL: occupation,
        }
    )


# ---------------------------------------------------------------------- recsys
def _read_recsys(path: Path) -> Dataset:
    folder = path.parent if path.is_file() else path
    inter_path = folder / INTERACTIONS_FILE
    if not inter_path.is_file():
        raise DataFormatError(f"{folder}: not a recsys folder (no {INTERACTIONS_FILE})")
    inter = _read_parquet(inter_path)
    _require_columns(inter, [USER_COL, ITEM_COL, RATING_COL, TIME_COL], inter_path)
    side = read_side_tables(folder)
    meta_path = folder / META_FILE
    info = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return Dataset(
        inter, side.items, side.users, name=info.get("name", folder.name), meta=info.get("meta", {})
    )


def read_side_tables(folder: Path) -> SideTables:
    """The item and user tables of a recsys-format folder, not its interactions."""
    items = _read_parquet(folder / ITEMS_FILE) if (folder / ITEMS_FILE).is_file() else None
    users = _read_parquet(folder / USERS_FILE) if (folder / USERS_FILE).is_file() else None
    return SideTables(items, users)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(f"{path}: cannot be read as Parquet: {exc}") from exc


# --------------------------------------------------------------- generic tables
def _read_table(path: Path, fmt: str, columns: dict[str, str | None], sep: str | None) -> Dataset:
    if path.is_dir():
        raise DataFormatError(f"{path}: format '{fmt}' needs a file, not a folder")
    if fmt == "parquet":
        raw = _read_parquet(path)
        if raw.empty:
            raise DataFormatError(f"{path}: the file holds no rows")
    else:
        raw = _read_text(path, sep or ("\t" if fmt == "tsv" else ","), header=0)
    names = {key: name or key for key, name in columns.items()}
    required = [names[USER_COL], names[ITEM_COL]]
    required += [names[key] for key in (RATING_COL, TIME_COL) if columns[key] is not None]
    _require_columns(raw, required, path, _COLUMN_FLAGS)
    ratings = raw[names[RATING_COL]] if names[RATING_COL] in raw else None
    times = raw[names[TIME_COL]] if names[TIME_COL] in raw else None
    inter = _interactions(raw[names[USER_COL]], raw[names[ITEM_COL]], ratings, times)
    meta = {
        "path": str(path),
        "format": fmt,
        "columns": names,
        "implicit": ratings is None,
        "has_time": times is not None,
    }
    return Dataset(inter, None, None, name=path.stem, meta=meta)


def _require_columns(frame: pd.DataFrame, required: list[str], path: Path, hint: str = "") -> None:
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; "
            f"the columns are {[str(c) for c in frame.columns]}{hint}"
        )


#: What a user of a generic table can do about a missing column.
_COLUMN_FLAGS = (
    "; name yours with --user-col, --item-col, --rating-col and --time-col "
    "(user_col, item_col, rating_col, time_col in Python), or --sep if the file is not "
    "split by the separator its extension suggests"
)


_READERS = {
    "ml-100k": _read_ml100k,
    "ml-latest": _read_ml_latest,
    "ml-1m": _read_ml1m,
    "recsys": _read_recsys,
}
