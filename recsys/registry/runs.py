"""MLflow runs: where the store lives, and what one training or tuning run records.

The registry package is the only part of recsys that imports ``mlflow``, and
it does so inside functions, so importing recsys stays cheap. Where MLflow
lives comes from :mod:`recsys.config`: a SQLite database in ``mlruns/`` with
artifacts beside it by default, a tracking server when ``MLFLOW_TRACKING_URI``
says so.

What one training run leaves behind (:func:`log_model_run`):

- params: the hyper-parameters plus the split description, flattened
  (``split.method``, ``split.test_fraction``...);
- metrics: names MLflow cannot store (``ndcg@10``) are logged as
  ``ndcg_at_10``; the run tag ``recsys.metric_names`` maps them back;
- tags ``recsys.data_hash`` and ``recsys.model_type``, and the process that
  logged it (``recsys.owner.*``: :mod:`recsys.registry.recovery` ends the runs
  of a killed try);
- artifact ``split.json`` (the metrics are charted by MLflow's UI and the
  Recommender page from the logged values);
- dataset inputs: the feature tables the model was fitted with
  (:class:`InputTable`, context ``features``), each with its content hash;
- the served model as a pyfunc named ``model`` (:mod:`recsys.registry.pyfunc`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys import config
from recsys.errors import InputError, check_k
from recsys.ids import IdMap
from recsys.models.base import Recommender, check_matrix
from recsys.registry.pyfunc import log_pyfunc
from recsys.serialize import json_safe

if TYPE_CHECKING:
    from recsys.serving.coldstart import ColdStart

log = logging.getLogger(__name__)

TAG_DATA_HASH = "recsys.data_hash"
TAG_MODEL_TYPE = "recsys.model_type"
TAG_METRIC_NAMES = "recsys.metric_names"
TAG_MODEL_URI = "recsys.model_uri"

_REMOTE_SCHEMES = ("http", "https", "databricks")
_BAD_NAME_CHARS = re.compile(r"[^\w.\- /:]")


class TrackingError(InputError):
    """A tracking or registry call got input it cannot use."""


@dataclass(frozen=True)
class RunInfo:
    """Where a logged training run and its model can be found.

    Attributes:
        run_id: the MLflow run id.
        model_uri: URI of the logged pyfunc model (``models:/m-...``), usable
            with :func:`load_model` and :func:`register_model`.
    """

    run_id: str
    model_uri: str


@dataclass(frozen=True)
class InputTable:
    """A table a run used, logged as an MLflow dataset input.

    Attributes:
        name: the table's name (``user_profiles``, ``sequences``...).
        path: the Parquet file holding it.
        digest: its content hash (:func:`recsys.data.features.feature_hash`, hex).
            MLflow stores at most 36 characters of a digest, so a longer one is
            logged cut to its first :data:`DIGEST_LENGTH` and whole in the
            input tag :data:`TAG_INPUT_HASH`.
        context: what the run used it for.
    """

    name: str
    path: Path
    digest: str
    context: str = "features"


#: Characters of an :class:`InputTable` digest kept as the MLflow dataset digest.
DIGEST_LENGTH = 32
#: Dataset-input tag holding the whole content hash of an input table.
TAG_INPUT_HASH = "recsys.feature_hash"


# --------------------------------------------------------------------- setup
def setup(experiment: str | None = None) -> str:
    """Point MLflow at the configured store and make sure the experiment exists.

    Safe to call any number of times and from parallel tasks: an existing
    experiment is reused (restored if it was deleted); a lost creation race
    falls back to the winner's experiment.

    Args:
        experiment: experiment name; defaults to :func:`recsys.config.experiment_name`.

    Returns:
        The experiment id.
    """
    # Download progress bars are noise in task logs and CLI output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    _quiet_mlflow()
    uri = config.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or config.experiment_name()
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return mlflow_client.create_experiment(name, artifact_location=_artifact_location(name))
        except MlflowException:
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id


#: How long :func:`check_store` waits for a tracking server to answer.
STORE_PROBE_SECONDS = 5.0


def check_store(uri: str | None = None) -> str:
    """The tracking URI, once it is known to hold a store a read can use.

    For commands that only read the registry (``recsys recommend``,
    ``status``, ``rollback``, ``promote``): without this, MLflow would create
    a missing SQLite file (and its folder) and answer "no champion", or retry
    an unreachable server for minutes and end in a traceback. Nothing is
    created here, and a server gets one short request.

    Raises:
        UnavailableError: a SQLite store that does not exist or is not an
            MLflow store, or a tracking server that does not answer.
    """
    from urllib.parse import urlparse

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or _embedded_uri()
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    return uri


def _embedded_uri() -> str:
    """The embedded default's URI, without creating its folder."""
    return f"sqlite:///{config.mlruns_dir() / 'mlflow.db'}"


def _check_sqlite(uri: str) -> None:
    import sqlite3

    from recsys.errors import UnavailableError

    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    where = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default"
    if not path.is_file():
        raise UnavailableError(
            f"no MLflow store at {path} ({where}): train a model first (`recsys train`), "
            "or point MLFLOW_TRACKING_URI at the store that holds one"
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as err:
        raise UnavailableError(f"{path} cannot be read as an MLflow store: {err}") from None
    if "registered_models" not in tables:
        raise UnavailableError(
            f"{path} is not an MLflow store (no registry tables); point MLFLOW_TRACKING_URI "
            "at the store your training runs use"
        )


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    from recsys.errors import UnavailableError

    probe = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(probe, timeout=STORE_PROBE_SECONDS):  # noqa: S310 - http(s) only
            return
    except urllib.error.HTTPError:
        return  # it answered (perhaps 401/403/404): reachable; MLflow reports the rest
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UnavailableError(
            f"the MLflow tracking server at {uri} does not answer ({reason}); start it, "
            "or set MLFLOW_TRACKING_URI to one that runs"
        ) from None


class _DropKnownNoise(logging.Filter):
    """MLflow's warnings that say nothing to a recsys user: the served model is
    pickled by design, and its two-row input example is validated in milliseconds."""

    NOISE = ("serialized using CloudPickle", "Validating input example")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.NOISE)


def _quiet_mlflow() -> None:
    for name in ("mlflow.pyfunc", "mlflow.models.model"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in target.filters):
            target.addFilter(_DropKnownNoise())


def client() -> Any:
    """An ``MlflowClient`` on the configured tracking and registry store.

    The first call of a process on a database store creates or migrates its
    schema under the store's lock (:func:`migrate_store`).
    """
    from mlflow import MlflowClient

    uri = config.tracking_uri()
    migrate_store(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


#: Database stores this process has seen migrated.
_MIGRATED: set[str] = set()
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


def migrate_store(uri: str) -> None:
    """Create or upgrade the MLflow schema of database store ``uri``, once, under a lock.

    MLflow migrates a database when it first opens it, without a lock: two
    processes opening one fresh SQLite file at once both add the same columns
    (``duplicate column name``). Here the first opener of a process migrates
    under :func:`recsys.registry.locks.store_lock`; whoever comes next finds
    the schema current. A tracking server migrates its own store: nothing to do.
    """
    if uri in _MIGRATED or uri.split(":", 1)[0].split("+")[0] not in _DATABASE_SCHEMES:
        return
    from mlflow import MlflowClient

    from recsys.registry.locks import store_lock

    with store_lock():
        opened = MlflowClient(tracking_uri=uri, registry_uri=uri)
        opened.search_experiments(max_results=1)  # opens (and migrates) the tracking store
        opened.search_registered_models(max_results=1)  # and the registry's
    _MIGRATED.add(uri)


def _artifact_location(experiment: str) -> str | None:
    """Artifact folder of a new experiment: ``<artifact root>/<experiment>``.

    A tracking server decides for itself (its ``--artifacts-destination``)
    unless an artifact root was configured explicitly.
    """
    root = config.artifact_root()
    default_root = (config.mlruns_dir() / "artifacts").as_uri()
    remote = config.tracking_uri().split(":", 1)[0] in _REMOTE_SCHEMES
    if remote and root == default_root:
        return None
    return f"{root.rstrip('/')}/{config.safe_name(experiment)}"


def original_metric_names(run: Any) -> dict[str, float]:
    """A run's metrics under the names they were logged with (``ndcg@10``, not ``ndcg_at_10``)."""
    renamed = json.loads(run.data.tags.get(TAG_METRIC_NAMES, "{}"))
    return {renamed.get(key, key): value for key, value in run.data.metrics.items()}


# ------------------------------------------------------------------- logging
def log_model_run(
    model: Recommender,
    *,
    id_map: IdMap,
    train_matrix: sp.spmatrix,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    split_info: Mapping[str, Any],
    data_hash: str,
    run_name: str,
    k: int = 10,
    tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, Path] | None = None,
    parent_run_id: str | None = None,
    cold_start: ColdStart | None = None,
    inputs: Iterable[InputTable] = (),
    saved: Mapping[str, Path] | None = None,
) -> RunInfo:
    """Record one trained model as an MLflow run with a servable pyfunc model.

    Args:
        model: a fitted recommender.
        id_map: the id ↔ index map the model was trained with.
        train_matrix: the training matrix (users × items of ``id_map``); the
            served model filters these seen items.
        params: hyper-parameters and other run settings (nested dicts are
            flattened with ``.``).
        metrics: evaluation results, name → value.
        split_info: how train and holdout were split; logged as params under
            ``split.`` and as the ``split.json`` artifact.
        data_hash: fingerprint of the training data (tag ``recsys.data_hash``).
        run_name: the run's display name.
        k: default list length of the served model.
        tags: extra run tags.
        artifacts: extra files or folders to log, artifact folder name → path.
        parent_run_id: make this run a child of that run.
        cold_start: the fallback chain for users the model does not know
            (:func:`recsys.serving.coldstart.fit_cold_start` on the training frame
            with the items and users tables); ``None`` fits one from
            ``train_matrix`` alone (onboarding by co-liked items, global popularity).
        inputs: tables the model was fitted with, logged as dataset inputs
            (name, digest, schema, row count, source path).
        saved: parts of the pyfunc already on disk, linked rather than written
            again (see :meth:`recsys.serving.served.ServedRecommender.save`).

    Returns:
        The run id and the logged model's URI.

    Raises:
        TrackingError: the model is not fitted, shapes disagree, ``k`` is not
            positive, a metric is not a number, or an artifact path or input
            table is missing; raised before any run is created.
    """
    import mlflow

    X = _check_run_inputs(model, id_map, train_matrix, metrics, k)
    inputs = tuple(inputs)
    missing = [
        f"{name!r}: {path}" for name, path in (artifacts or {}).items() if not Path(path).exists()
    ]
    missing += [f"input {t.name!r}: {t.path}" for t in inputs if not Path(t.path).is_file()]
    if missing:
        raise TrackingError(f"artifacts do not exist: {', '.join(missing)}")
    experiment_id = setup()
    logged_metrics, renamed = _mlflow_metrics(metrics)
    run_tags = _run_tags(model, data_hash, renamed, tags)
    nested = parent_run_id is not None or mlflow.active_run() is not None
    with (
        tempfile.TemporaryDirectory(prefix="recsys-log-") as tmp,
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            parent_run_id=parent_run_id,
            nested=nested,
            tags=run_tags,
        ) as run,
    ):
        mlflow.log_params(_mlflow_params(params, split_info, k))
        mlflow.log_metrics(logged_metrics)
        _log_inputs(inputs)
        mlflow.log_dict(json_safe(dict(split_info)), "split.json")
        _log_extra_artifacts(artifacts or {})
        model_uri = log_pyfunc(model, id_map, X, k, Path(tmp), cold_start, saved)
        mlflow.set_tag(TAG_MODEL_URI, model_uri)
    log.info("logged run %s (%s) with model %s", run.info.run_id, run_name, model_uri)
    return RunInfo(run_id=run.info.run_id, model_uri=model_uri)


#: Rows of a table MLflow reads to describe its columns (its own inference looks at
#: every value: 50 s for the sequence lists of 2M interactions).
_SCHEMA_SAMPLE_ROWS = 500
#: Dataset-input tag holding a table's row count.
TAG_INPUT_ROWS = "recsys.rows"


def _log_inputs(inputs: Iterable[InputTable]) -> None:
    """Log each table as a dataset input of the active run: its source, digest and
    schema (read off a sample of rows; the digest is the whole table's hash)."""
    import mlflow
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for table in inputs:
        sample = pq.ParquetFile(table.path)
        rows = sample.metadata.num_rows
        frame = next(sample.iter_batches(batch_size=_SCHEMA_SAMPLE_ROWS)).to_pandas()
        with warnings.catch_warnings():
            # Hints that do not apply: a local path is a local file whichever of
            # MLflow's two local sources reads it, and feature counts are never null.
            warnings.filterwarnings(
                "ignore", message=".*interpreted in multiple ways", category=UserWarning
            )
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            schema = mlflow.data.from_pandas(frame).schema
            dataset = MetaDataset(
                resolve_dataset_source(str(Path(table.path).resolve())),
                name=table.name,
                digest=table.digest[:DIGEST_LENGTH],
                schema=schema,
            )
            mlflow.log_input(
                dataset,
                context=table.context,
                tags={TAG_INPUT_HASH: table.digest, TAG_INPUT_ROWS: str(rows)},
            )


def _check_run_inputs(
    model: Recommender,
    id_map: IdMap,
    train_matrix: sp.spmatrix,
    metrics: Mapping[str, float],
    k: int,
) -> sp.csr_matrix:
    if not isinstance(model, Recommender):
        raise TrackingError(f"model must be a Recommender, got {type(model).__name__}")
    if not hasattr(model, "n_items_"):
        raise TrackingError(f"{type(model).__name__} is not fitted; call fit() first")
    X = check_matrix(train_matrix)
    if X.shape != (id_map.n_users, id_map.n_items):
        raise TrackingError(
            f"train_matrix has shape {X.shape} but id_map has "
            f"{id_map.n_users} users and {id_map.n_items} items"
        )
    if X.shape[1] != model.n_items_:
        raise TrackingError(
            f"train_matrix has {X.shape[1]} items but the model was fitted on {model.n_items_}"
        )
    check_k(k)
    bad = [name for name, v in metrics.items() if not _is_number(v)]
    if bad:
        raise TrackingError(f"metrics must be numbers; not numbers: {', '.join(map(str, bad))}")
    return X


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def metric_key(name: str) -> str:
    """The name MLflow stores metric ``name`` under (``ndcg@10`` → ``ndcg_at_10``)."""
    return _BAD_NAME_CHARS.sub("_", str(name).replace("@", "_at_"))


def _mlflow_metrics(metrics: Mapping[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics under MLflow-safe names, and the stored → original map of renamed ones."""
    logged: dict[str, float] = {}
    renamed: dict[str, str] = {}
    for name, value in metrics.items():
        key = metric_key(name)
        if key in logged:
            other = renamed.get(key, key)
            raise TrackingError(f"metrics {name!r} and {other!r} both log as {key!r}")
        logged[key] = float(value)
        if key != name:
            renamed[key] = str(name)
    return logged, renamed


def _mlflow_params(
    params: Mapping[str, Any], split_info: Mapping[str, Any], k: int
) -> dict[str, str]:
    flat = _flatten(params)
    flat.update(_flatten(split_info, prefix="split."))
    flat.setdefault("serve_k", k)
    return {metric_key(key): _param_value(value) for key, value in flat.items()}


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _param_value(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(json_safe(value))
    except TypeError:
        return str(value)


def _run_tags(
    model: Recommender,
    data_hash: str,
    renamed: Mapping[str, str],
    tags: Mapping[str, str] | None,
) -> dict[str, str]:
    from recsys.registry.recovery import owner_tags

    run_tags = {**owner_tags(), **{str(k): str(v) for k, v in (tags or {}).items()}}
    run_tags[TAG_DATA_HASH] = str(data_hash)
    run_tags[TAG_MODEL_TYPE] = model_type_of(model)
    if renamed:
        run_tags[TAG_METRIC_NAMES] = json.dumps(dict(renamed), sort_keys=True)
    return run_tags


def model_type_of(model: Recommender) -> str:
    """The registry name of ``model`` (``popularity``...), or its class name."""
    return getattr(model, "name", "") or type(model).__name__


def _log_extra_artifacts(artifacts: Mapping[str, Path]) -> None:
    import mlflow

    for name, path in artifacts.items():
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=name)
        else:
            mlflow.log_artifact(str(path), artifact_path=name)


def log_tuning(
    model_name: str,
    result: Mapping[str, Any],
    *,
    run_name: str,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log a tuning study: one parent run, one nested run per trial.

    Args:
        model_name: the tuned model's registry name.
        result: :meth:`recsys.training.tuning.TuningResult.to_dict` output.
        run_name: the parent run's name.
        tags: extra tags for the parent run.

    Returns:
        The parent run id. Trial runs carry the trial's params and
        ``validation_<metric>``; the parent carries the best of both.
    """
    import mlflow

    from recsys.registry.recovery import owner_tags

    experiment_id = setup()
    metric = metric_key(f"validation_{result['metric']}")
    owner = owner_tags()
    parent_tags = {TAG_MODEL_TYPE: model_name, "recsys.tuning": "study", **owner, **(tags or {})}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags=parent_tags,
        nested=mlflow.active_run() is not None,
    ) as parent:
        if result["params"]:
            mlflow.log_params({f"best.{k}": _param_value(v) for k, v in result["params"].items()})
        if result["trials"]:
            mlflow.log_metric(metric, float(result["score"]))
        for trial in result["trials"]:
            trial_tags = {TAG_MODEL_TYPE: model_name, "recsys.tuning": "trial", **owner}
            with mlflow.start_run(
                experiment_id=experiment_id,
                nested=True,
                run_name=f"{run_name}-trial-{trial['number']}",
                tags=trial_tags,
            ):
                mlflow.log_params({k: _param_value(v) for k, v in trial["params"].items()})
                mlflow.log_metrics(
                    {metric: float(trial["score"]), "trial_seconds": float(trial["seconds"])}
                )
    return parent.info.run_id


def log_files(run_id: str, paths: Iterable[Path], artifact_path: str) -> None:
    """Attach existing files to run ``run_id`` under ``artifact_path``."""
    mlflow_client = client()
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path), artifact_path)
