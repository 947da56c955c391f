"""Data validation: Great Expectations suites guard every batch before it is used.

The suites are plain JSON files in the top-level ``expectations/`` folder, one
per data asset (``interactions.json``, ``items.json``, ``users.json``; feature
tables bring their own ``features_*.json``). They use GX's own suite format, so
a user edits them by hand or through a GX file context (``gx/`` points its
expectations store at them). At run time this module reads the JSON itself and
runs it in an *ephemeral* GX context: nothing is written into the repository,
nothing goes over the network, and the only files produced are the Data Docs
the caller asks for.

How a suite is applied to one frame:

- ``{"$PARAMETER": name}`` values are filled from the caller's parameters, else
  from the defaults in the suite's ``meta.recsys_parameters``. An expectation
  whose parameter resolves to ``null`` is not run (for example the
  future-timestamp check when no reference time ``now`` is given).
- An expectation on a column the frame lacks is not run; a required column is
  one with an ``expect_column_to_exist`` expectation, whose failure names it.
- Range expectations (``expect_column_values_to_be_between``) run only on
  numeric columns: ids may legitimately be strings, and a non-numeric rating,
  year or age is caught by its own "values are numbers" expectation, which
  counts the offending rows instead of failing on a comparison error.
- An expectation whose ``meta`` holds ``recsys_each_column_matching`` (a
  regular expression) runs once per frame column whose name matches it, for
  tables whose columns are known only at run time (one ``genre_<name>`` column
  per genre); its ``column`` kwarg in the file is a readable stand-in such as
  ``"genre_*"``. No matching column: it is not run.

A frame is a pandas DataFrame or, under ``RECSYS_ENGINE=spark``, a Spark
DataFrame: the same suites run through GX's Spark data source, the data
staying on the cluster.

Every outcome, structural problems included, ends up as a :class:`Failure` in
one :class:`ValidationReport`; GX errors never escape as tracebacks.

With ``RECSYS_PSEUDONYM_KEY`` set, :func:`validate_dataset` checks the raw
batch (so every rule sees the real values) but no raw user id leaves it: the
report's examples, its log lines, the error's message and the Data Docs pages
all hold the ids' keyed pseudonyms (the ones the run's later steps use), and
the report says ``pseudonymised``.
``great_expectations`` is imported lazily (a cold import takes seconds).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import config
from recsys.constants import USER_COL
from recsys.data import RATING_SCALE, Dataset
from recsys.errors import InputError
from recsys.serialize import json_safe

logger = logging.getLogger(__name__)

#: Folder holding one JSON expectation suite per data asset.
EXPECTATIONS_DIR = config.expectations_dir()

#: Data Docs site name inside the ephemeral context.
_SITE = "recsys"
#: Expectation types that compare values with numbers: run on numeric columns only.
_NUMERIC_ONLY = frozenset({"expect_column_values_to_be_between"})
#: ``Failure.expectation`` of a suite that GX could not evaluate at all.
SUITE_ERROR = "suite_error"
#: How many offending values a failure keeps as examples.
_EXAMPLES = 5


class DataValidationError(InputError):
    """A batch broke its expectation suites; ``report`` says which and how many rows."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass(frozen=True)
class Failure:
    """One expectation a batch broke.

    Attributes:
        suite: the suite (data asset) it belongs to.
        expectation: the GX expectation type, e.g. ``expect_column_values_to_be_between``.
        column: the column it checks (columns joined by ``,`` for compound
            checks), ``None`` for table-level checks.
        unexpected_count: number of rows that broke it, ``None`` when the
            check is not row-by-row (missing column, row count, an error).
        description: short human explanation of the rule, and the cause when
            the check could not be evaluated.
        observed: what GX observed for table-level checks (e.g. the row
            count), else ``None``.
        examples: up to five offending values.
    """

    suite: str
    expectation: str
    column: str | None
    unexpected_count: int | None
    description: str
    observed: Any = None
    examples: list = field(default_factory=list)

    def line(self) -> str:
        """One readable line: where, which expectation, how many rows, why."""
        where = f"[{self.suite}] {self.column or '(table)'}"
        if self.unexpected_count is not None:
            rows = "row" if self.unexpected_count == 1 else "rows"
            what = f"{self.unexpected_count} {rows} broke it"
        elif self.expectation == "expect_column_to_exist":
            what = "column is missing"
        elif self.expectation == SUITE_ERROR:
            what = "not evaluated"
        else:
            what = f"observed {self.observed!r}"
        tail = f"; e.g. {', '.join(map(repr, self.examples))}" if self.examples else ""
        return f"{where}: {self.expectation}: {what} — {self.description}{tail}"


@dataclass
class SuiteResult:
    """Outcome of one suite on one frame.

    Attributes:
        suite: suite name.
        success: ``True`` when every expectation that ran held.
        row_count: rows in the validated frame.
        evaluated: number of expectations that ran.
        failures: the expectations that did not hold.
        skipped: expectations not run, each with the reason.
        parameters: the parameter values the suite ran with.
    """

    suite: str
    success: bool
    row_count: int
    evaluated: int
    failures: list[Failure]
    skipped: list[str]
    parameters: dict[str, Any]


@dataclass
class ValidationReport:
    """Outcome of validating one dataset (or one frame) against its suites.

    Attributes:
        success: ``True`` when every suite passed.
        suites: per-suite results, keyed by suite name.
        failures: every broken expectation across suites, in suite order.
        name: the dataset's label.
        docs_path: the ``index.html`` of the Data Docs built, or ``None``.
        pseudonymised: user ids in the examples (and the Data Docs) are keyed
            pseudonyms, not the batch's raw ids.
    """

    success: bool
    suites: dict[str, SuiteResult]
    failures: list[Failure]
    name: str = "dataset"
    docs_path: Path | None = None
    pseudonymised: bool = False

    def summary(self) -> str:
        """Readable multi-line text naming each failed expectation and its broken rows."""
        verdict = "passed" if self.success else "FAILED"
        counts = ", ".join(f"{s.suite}: {s.row_count} rows" for s in self.suites.values())
        head = f"Validation of {self.name!r} {verdict} ({counts})"
        if self.success:
            return head
        return "\n".join([head, *(f"- {failure.line()}" for failure in self.failures)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as strings, numbers as plain Python numbers)."""
        return json_safe(
            {
                "name": self.name,
                "success": self.success,
                "docs_path": str(self.docs_path) if self.docs_path else None,
                "pseudonymised": self.pseudonymised,
                "suites": {name: asdict(result) for name, result in self.suites.items()},
                "failures": [asdict(failure) for failure in self.failures],
            }
        )


def validate_dataset(
    dataset: Dataset,
    *,
    now: float | None = None,
    rating_range: tuple[float, float] | None = None,
    max_duplicate_share: float = 0.01,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Validate a dataset's interactions, and its items and users when present.

    Args:
        dataset: the loaded batch; never modified.
        now: reference time in epoch seconds; events after it fail. ``None``
            skips the future check (the CLI passes ``time.time()``; a DAG
            passes its logical date, so a rerun gives the same verdict). It
            also caps item years at its year + 1.
        rating_range: the dataset's declared rating scale ``(low, high)``,
            inclusive; ``None`` uses the scale the loader declared in
            ``dataset.meta["rating_scale"]`` (MovieLens: 1-5), else the
            deployment's ``RECSYS_RATING_SCALE``, else only non-negative
            ratings are required (implicit counts have no top).
        max_duplicate_share: largest tolerated share of rows that belong to a
            group of exact duplicate ``(user_id, item_id, timestamp)`` events.
        docs_dir: folder to build Data Docs HTML into (created); ``None``
            builds none. Its index lists this call's suites and results;
            pages from earlier calls into the same folder stay in place.

    Returns:
        The report; ``success`` is ``False`` when any suite failed. With
        ``RECSYS_PSEUDONYM_KEY`` set, its user-id examples and the Data Docs
        hold pseudonyms.

    Raises:
        ValueError: a parameter is malformed (not the data: bad data is
            reported, not raised).
    """
    frames = _dataset_frames(dataset)
    rating_range = rating_range or dataset.meta.get(RATING_SCALE) or config.rating_scale()
    params = _dataset_params(now, rating_range, max_duplicate_share)
    key = config.pseudonym_key()
    with _Session(docs_dir, key=key) as session:
        results = {name: session.run(frame, name, params[name]) for name, frame in frames.items()}
        docs_path = session.build_docs()
    return _report(results, dataset.name, docs_path, pseudonymised=key is not None)


def check_dataset(
    dataset: Dataset,
    *,
    now: float | None = None,
    rating_range: tuple[float, float] | None = None,
    max_duplicate_share: float = 0.01,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Like :func:`validate_dataset`, but a failing batch raises.

    Raises:
        DataValidationError: any suite failed; its ``report`` holds the details
            and its message is ``report.summary()``.
    """
    report = validate_dataset(
        dataset,
        now=now,
        rating_range=rating_range,
        max_duplicate_share=max_duplicate_share,
        docs_dir=docs_dir,
    )
    if not report.success:
        raise DataValidationError(report)
    return report


def validate_frame(
    df: pd.DataFrame,
    suite_name: str,
    *,
    docs_dir: Path | None = None,
    suites_dir: Path | None = None,
    **params: Any,
) -> ValidationReport:
    """Validate one frame against ``<suites_dir>/<suite_name>.json``.

    Args:
        df: the frame; never modified.
        suite_name: suite file name without ``.json`` (e.g. ``features_users``).
        docs_dir: folder to build Data Docs into, or ``None``.
        suites_dir: where suites live; default the project's ``expectations/``.
        **params: values for the suite's ``$PARAMETER`` placeholders; those
            not given take the suite's defaults (``None`` skips the check).

    Returns:
        A report holding this one suite.

    Raises:
        ValueError: the suite file is missing or unreadable, or a parameter is
            not one the suite declares.
    """
    return validate_frames(
        {suite_name: df},
        params={suite_name: params},
        name=suite_name,
        docs_dir=docs_dir,
        suites_dir=suites_dir,
    )


def validate_frames(
    frames: Mapping[str, pd.DataFrame],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "frames",
    docs_dir: Path | None = None,
    suites_dir: Path | None = None,
) -> ValidationReport:
    """Validate several frames, each against the suite named by its key, in one GX session.

    Args:
        frames: suite name → frame; frames are never modified.
        params: suite name → values for that suite's ``$PARAMETER`` placeholders.
        name: the report's label.
        docs_dir: folder to build Data Docs into, or ``None``.
        suites_dir: where suites live; default the project's ``expectations/``.

    Returns:
        One report holding every suite, in the order of ``frames``.

    Raises:
        ValueError: a suite file is missing or unreadable, a parameter is not
            one its suite declares, or ``params`` names a suite not in ``frames``.
    """
    params = dict(params or {})
    stray = sorted(set(params) - set(frames))
    if stray:
        raise InputError(f"parameters given for suite(s) {stray} that validate no frame")
    with _Session(docs_dir, suites_dir) as session:
        results = {
            suite: session.run(frame, suite, dict(params.get(suite, {})))
            for suite, frame in frames.items()
        }
        docs_path = session.build_docs()
    return _report(results, name, docs_path)


def quarantine(
    dataset_or_path: Dataset | Path | str, report: ValidationReport, dest_dir: Path
) -> Path:
    """Set a rejected batch aside, unchanged, with the report that rejected it.

    Writes into ``dest_dir`` (created; files of the same names are
    overwritten, so a rerun is idempotent): ``report.json``
    (:meth:`ValidationReport.to_dict`), ``summary.txt`` and the batch itself —
    a path is copied as is under ``batch/``; a :class:`Dataset` is written one
    table per file under ``batch/`` (Parquet when Arrow can hold the columns,
    else CSV, so malformed values survive: read it back with ``dtype=str,
    keep_default_na=False`` to see the raw text), every row kept, with
    ``batch/manifest.json`` naming the files and their row counts.

    Returns:
        ``dest_dir``.
    """
    if not isinstance(dataset_or_path, Dataset) and not Path(dataset_or_path).exists():
        raise InputError(f"cannot quarantine {dataset_or_path}: no such file or folder")
    dest = Path(dest_dir)
    batch = dest / "batch"
    if batch.exists():
        shutil.rmtree(batch)
    batch.mkdir(parents=True)
    if isinstance(dataset_or_path, Dataset):
        _write_tables(dataset_or_path, batch)
    else:
        _copy_source(Path(dataset_or_path), batch)
    (dest / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    (dest / "summary.txt").write_text(report.summary() + "\n")
    logger.warning("quarantined batch %r in %s", report.name, dest)
    return dest


# --------------------------------------------------------------------------- parameters


def _dataset_frames(dataset: Dataset) -> dict[str, pd.DataFrame]:
    """The frames of a dataset keyed by the suite that checks them."""
    frames = {"interactions": dataset.interactions, "items": dataset.items, "users": dataset.users}
    return {name: frame for name, frame in frames.items() if frame is not None}


def _dataset_params(
    now: float | None, rating_range: tuple[float, float] | None, max_duplicate_share: float
) -> dict[str, dict[str, Any]]:
    """Per-suite parameter values from the public arguments."""
    if not 0.0 <= max_duplicate_share <= 1.0:
        raise InputError(f"max_duplicate_share must lie in [0, 1], got {max_duplicate_share!r}")
    interactions: dict[str, Any] = {
        "now": now,
        "min_unique_event_share": 1.0 - max_duplicate_share,
    }
    if rating_range is not None:
        low, high = rating_range
        if not low <= high:
            raise InputError(
                f"rating_range must be (low, high) with low <= high, got {rating_range!r}"
            )
        interactions.update(min_rating=low, max_rating=high)
    items = {} if now is None else {"max_year": datetime.fromtimestamp(now, UTC).year + 1}
    return {"interactions": interactions, "items": items, "users": {}}


def _load_suite(suites_dir: Path, name: str) -> dict[str, Any]:
    """The suite's JSON as a dict, or a ValueError naming the file."""
    path = suites_dir / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no expectation suite {name!r}: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise InputError(f"expectation suite {path} is not valid JSON: {err}") from None


def _resolve_params(suite: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Suite defaults overlaid with the caller's values; unknown names are an error."""
    defaults = dict(suite.get("meta", {}).get("recsys_parameters", {}))
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InputError(
            f"suite {suite.get('name')!r} has no parameter(s) {unknown}; "
            f"it declares {sorted(defaults)}"
        )
    return {**defaults, **given}


def _placeholder(value: Any) -> str | None:
    """The parameter name of a ``{"$PARAMETER": name}`` kwarg value, else None."""
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return value["$PARAMETER"]
    return None


def _fill(kwargs: dict[str, Any], params: dict[str, Any], suite: str) -> dict[str, Any]:
    """Kwargs with every placeholder replaced by its parameter value."""
    filled = dict(kwargs)
    for key, value in kwargs.items():
        name = _placeholder(value)
        if name is None:
            continue
        if name not in params:
            raise InputError(
                f"suite {suite!r} uses parameter {name!r} but declares no default for it"
            )
        filled[key] = params[name]
    return filled


# --------------------------------------------------------------------------- planning


def _columns_of(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation reads."""
    if "column_list" in kwargs:
        return list(kwargs["column_list"])
    return [kwargs[key] for key in ("column", "column_A", "column_B") if key in kwargs]


#: Range bounds: a null one is an open end; the expectation is skipped only when both are.
_BOUNDS = ("min_value", "max_value")
#: Expectation ``meta`` key: columns that must hold some value for it to mean anything.
SKIP_WHEN_ALL_NULL = "recsys_skip_when_all_null"


def _skip_reason(expectation: dict[str, Any], df: pd.DataFrame) -> str | None:
    """Why an (already filled) expectation cannot run on this frame, or None."""
    kind, kwargs = expectation["type"], expectation["kwargs"]
    if kind == "expect_column_to_exist":
        return None
    missing = [col for col in _columns_of(kwargs) if col not in df.columns]
    if missing:
        return f"column(s) {missing} absent"
    empty = [
        c
        for c in (expectation.get("meta") or {}).get(SKIP_WHEN_ALL_NULL, [])
        if c in df.columns and _all_null(df, c)
    ]
    if empty:
        return f"column(s) {empty} hold no value"
    if kind in _NUMERIC_ONLY and not _is_numeric(df, kwargs["column"]):
        return f"column {kwargs['column']!r} is not numeric (dtype {_dtype(df, kwargs['column'])})"
    return None


# A Spark DataFrame (RECSYS_ENGINE=spark) is validated by the same suites: these
# three questions and the row count are all the planning asks of a frame.
def _is_spark(df: Any) -> bool:
    return not isinstance(df, pd.DataFrame) and hasattr(df, "sparkSession")


def _all_null(df: Any, col: str) -> bool:
    if _is_spark(df):
        return df.filter(df[col].isNotNull()).limit(1).count() == 0
    return bool(df[col].isna().all())


def _is_numeric(df: Any, col: str) -> bool:
    if _is_spark(df):
        from pyspark.sql.types import NumericType

        return isinstance(df.schema[col].dataType, NumericType)
    return pd.api.types.is_numeric_dtype(df[col])


def _dtype(df: Any, col: str) -> str:
    return df.schema[col].dataType.simpleString() if _is_spark(df) else str(df[col].dtype)


def _row_count(df: Any) -> int:
    return int(df.count()) if _is_spark(df) else len(df)


#: Expectation ``meta`` key: run the expectation once per column matching this regex.
EACH_COLUMN = "recsys_each_column_matching"


def _expand_columns(
    expectations: list[dict[str, Any]], df: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[str]]:
    """One copy per matching column of each :data:`EACH_COLUMN` expectation; skip notes."""
    out, skipped = [], []
    for expectation in expectations:
        pattern = (expectation.get("meta") or {}).get(EACH_COLUMN)
        if pattern is None:
            out.append(expectation)
            continue
        matches = [str(c) for c in df.columns if re.search(pattern, str(c))]
        if not matches:
            skipped.append(f"{expectation['type']}({pattern}): no column matches")
        for column in matches:
            one = copy.deepcopy(expectation)
            one["kwargs"] = {**one.get("kwargs", {}), "column": column}
            out.append(one)
    return out, skipped


def _plan(
    suite: dict[str, Any], df: pd.DataFrame, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Split a suite into expectations to run (filled) and skip notes."""
    expectations, skipped = _expand_columns(suite.get("expectations", []), df)
    runnable = []
    for raw in expectations:
        expectation = copy.deepcopy(raw)
        kwargs = expectation.get("kwargs", {})
        expectation["kwargs"] = _fill(kwargs, params, suite.get("name", "?"))
        unset = [_placeholder(v) for k, v in kwargs.items() if _placeholder(v) and k not in _BOUNDS]
        unset = [name for name in unset if params[name] is None]
        bounds = [k for k in _BOUNDS if k in kwargs]
        if bounds and all(expectation["kwargs"][k] is None for k in bounds):
            unset.append("|".join(_placeholder(kwargs[k]) or k for k in bounds))
        reason = f"parameter(s) {unset} not given" if unset else _skip_reason(expectation, df)
        if reason:
            skipped.append(f"{expectation['type']}({', '.join(_columns_of(kwargs))}): {reason}")
        else:
            runnable.append(expectation)
    return runnable, skipped


# --------------------------------------------------------------------------- GX session


class _Session:
    """One ephemeral GX context: runs suites on frames, then builds Data Docs."""

    def __init__(
        self, docs_dir: Path | None, suites_dir: Path | None = None, *, key: bytes | None = None
    ) -> None:
        self.docs_dir = Path(docs_dir) if docs_dir is not None else None
        self.suites_dir = Path(suites_dir) if suites_dir is not None else config.expectations_dir()
        self.key = key
        self.context: Any = None
        self.source: Any = None
        self.spark_source: Any = None

    def __enter__(self) -> _Session:
        self.context = _ephemeral_context(self.docs_dir)
        self.source = self.context.data_sources.add_pandas("recsys")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.context = self.source = self.spark_source = None

    def _source_for(self, df: Any) -> Any:
        """The pandas data source, or for a Spark DataFrame the Spark one (made once)."""
        if not _is_spark(df):
            return self.source
        if self.spark_source is None:
            self.spark_source = self.context.data_sources.add_spark("recsys-spark")
        return self.spark_source

    def run(self, df: pd.DataFrame, suite_name: str, given: dict[str, Any]) -> SuiteResult:
        """Validate ``df`` against one suite and summarise the outcome."""
        suite = _load_suite(self.suites_dir, suite_name)
        params = _resolve_params(suite, given)
        runnable, skipped = _plan(suite, df, params)
        for note in skipped:
            logger.info("suite %s: not run: %s", suite_name, note)
        failures = self._failures(df, suite_name, suite, runnable)
        return SuiteResult(
            suite=suite_name,
            success=not failures,
            row_count=_row_count(df),
            evaluated=len(runnable),
            failures=failures,
            skipped=skipped,
            parameters=params,
        )

    def _failures(
        self, df: pd.DataFrame, name: str, suite: dict, runnable: list[dict]
    ) -> list[Failure]:
        """Run the expectations; a GX crash becomes one failure instead of a traceback."""
        try:
            results = self._validate(df, name, suite, runnable).results
        except Exception as err:  # any GX error must end up in the report
            logger.exception("suite %s could not run", name)
            message = f"the suite could not run: {type(err).__name__}: {err}"
            return [Failure(name, SUITE_ERROR, None, None, message)]
        failures = [_failure(name, result) for result in results if not result.success]
        return [_masked_failure(f, self.key) for f in failures] if self.key else failures

    def _validate(self, df: pd.DataFrame, name: str, suite: dict, runnable: list[dict]) -> Any:
        import great_expectations as gx

        gx_suite = self.context.suites.add(
            gx.ExpectationSuite(name=name, expectations=runnable, meta=suite.get("meta", {}))
        )
        source = self._source_for(df)
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=gx_suite)
        )
        return definition.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")

    def build_docs(self) -> Path | None:
        """Build the Data Docs site into ``docs_dir``; its index.html, or None."""
        if self.docs_dir is None:
            return None
        if self.key:
            _mask_stored_results(self.context.validation_results_store, self.key)
        self.context.build_data_docs(site_names=[_SITE])
        index = self.docs_dir / "index.html"
        logger.info("data docs written to %s", index)
        return index


def _ephemeral_context(docs_dir: Path | None) -> Any:
    """An in-memory GX context, quiet and offline, with a docs site in ``docs_dir``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {} if docs_dir is None else {_SITE: _site_config(docs_dir)}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _site_config(docs_dir: Path) -> dict[str, Any]:
    """A local-files Data Docs site rooted at ``docs_dir``."""
    Path(docs_dir).mkdir(parents=True, exist_ok=True)
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(Path(docs_dir).resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


# --------------------------------------------------------------------------- results


def _failure(suite: str, result: Any) -> Failure:
    """A Failure from one GX expectation result that did not hold."""
    config = result.expectation_config
    kwargs = config.kwargs
    column = ",".join(_columns_of(kwargs)) or None
    description = (config.description or config.type) + _bounds(kwargs)
    info = result.exception_info or {}
    error = _exception_message(info)
    details = result.result or {}
    if error:
        description = f"{description} (could not be evaluated: {error})"
    examples = details.get("partial_unexpected_list") or []
    return Failure(
        suite=suite,
        expectation=config.type,
        column=column,
        unexpected_count=details.get("unexpected_count") if not error else None,
        description=description,
        observed=details.get("observed_value"),
        examples=list(examples[:_EXAMPLES]),
    )


def _bounds(kwargs: dict[str, Any]) -> str:
    """The numeric limits an expectation ran with, e.g. `` (min_value=1, max_value=5)``."""
    keys = ("min_value", "max_value", "mostly")
    parts = [f"{key}={kwargs[key]:g}" for key in keys if isinstance(kwargs.get(key), int | float)]
    return f" ({', '.join(parts)})" if parts else ""


def _exception_message(info: dict[str, Any]) -> str | None:
    """The first error GX caught while evaluating an expectation, or None."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _report(
    results: dict[str, SuiteResult],
    name: str,
    docs_path: Path | None,
    *,
    pseudonymised: bool = False,
) -> ValidationReport:
    """Assemble the report from per-suite results."""
    failures = [failure for result in results.values() for failure in result.failures]
    report = ValidationReport(
        success=all(result.success for result in results.values()),
        suites=results,
        failures=failures,
        name=name,
        docs_path=docs_path,
        pseudonymised=pseudonymised,
    )
    log = logger.info if report.success else logger.warning
    log("%s", report.summary())
    return report


# --------------------------------------------------------------------------- pseudonyms


def _mask_id(value: Any, key: bytes) -> Any:
    """A user id's pseudonym; a missing id (None, NaN) stays missing."""
    from recsys.data.prepare import pseudonymise_ids

    if value is None or (isinstance(value, float) and value != value):
        return value
    return pseudonymise_ids([value], key)[0]


def _mask_values(values: Any, columns: list[str], key: bytes) -> Any:
    """Offending values of an expectation on ``columns``, user ids replaced.

    One ``user_id`` column: each value is an id. Several columns: each value
    is a row, a mapping whose ``user_id`` field is an id or a sequence in
    ``columns`` order.
    """
    if not isinstance(values, list):
        return values
    if columns == [USER_COL]:
        return [_mask_id(v, key) for v in values]
    at = columns.index(USER_COL)
    out = []
    for v in values:
        if isinstance(v, Mapping) and USER_COL in v:
            v = {**v, USER_COL: _mask_id(v[USER_COL], key)}
        elif isinstance(v, list | tuple) and len(v) == len(columns):
            v = type(v)(_mask_id(x, key) if i == at else x for i, x in enumerate(v))
        out.append(v)
    return out


def _masked_failure(failure: Failure, key: bytes) -> Failure:
    """``failure`` with its user-id examples (and observed value) as pseudonyms."""
    columns = (failure.column or "").split(",")
    if USER_COL not in columns:
        return failure
    observed = failure.observed
    if columns == [USER_COL] and isinstance(observed, str | int) and not isinstance(observed, bool):
        observed = _mask_id(observed, key)
    return dataclasses.replace(
        failure, examples=_mask_values(failure.examples, columns, key), observed=observed
    )


#: Fields of a GX expectation result that hold the batch's values.
_VALUE_FIELDS = ("partial_unexpected_list", "unexpected_list")


def _mask_stored_results(store: Any, key: bytes) -> None:
    """Rewrite every validation result in the context's (in-memory) store so that
    Data Docs, which are rendered from it, show pseudonyms for user ids."""
    for result_key in store.list_keys():
        suite_result = store.get(result_key)
        for result in suite_result.results:
            columns = _columns_of(result.expectation_config.kwargs)
            details = result.result
            if USER_COL not in columns or not isinstance(details, dict):
                continue
            for name in _VALUE_FIELDS:
                if name in details:
                    details[name] = _mask_values(details[name], columns, key)
            counts = details.get("partial_unexpected_counts")
            if isinstance(counts, list):
                details["partial_unexpected_counts"] = [
                    {**c, "value": _mask_values([c.get("value")], columns, key)[0]}
                    if isinstance(c, Mapping)
                    else c
                    for c in counts
                ]
        store.set(result_key, suite_result)


# --------------------------------------------------------------------------- quarantine


def _write_tables(dataset: Dataset, batch: Path) -> None:
    """Write each table of the dataset unchanged; record files in a manifest."""
    manifest = {"name": dataset.name, "meta": json_safe(dataset.meta), "tables": {}}
    for table, frame in _dataset_frames(dataset).items():
        path = _write_frame(frame, batch / table)
        manifest["tables"][table] = {"file": path.name, "rows": len(frame)}
    (batch / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _write_frame(frame: pd.DataFrame, stem: Path) -> Path:
    """Parquet when Arrow can represent every column, else CSV; returns the file."""
    path = stem.with_suffix(".parquet")
    try:
        frame.to_parquet(path, index=False)
    except (ValueError, TypeError, ImportError) as err:  # mixed-type object columns
        path.unlink(missing_ok=True)
        logger.info("%s: Parquet impossible (%s); writing CSV", stem.name, err)
        path = stem.with_suffix(".csv")
        frame.to_csv(path, index=False)
    return path


def _copy_source(source: Path, batch: Path) -> None:
    """Copy a source file or folder into the quarantine's batch folder."""
    if source.is_dir():
        shutil.copytree(source, batch / source.name)
    else:
        shutil.copy2(source, batch / source.name)
