"""MLflow tracking, the served pyfunc model and the model registry.

This is the only module of recsys that imports ``mlflow``, and it does so
inside functions, so importing recsys stays cheap. Where MLflow lives comes
from :mod:`recsys.config`: a SQLite database in ``mlruns/`` with artifacts
beside it by default, a tracking server when ``MLFLOW_TRACKING_URI`` says so.

What one training run leaves behind (:func:`log_model_run`):

- params: the hyper-parameters plus the split description, flattened
  (``split.method``, ``split.test_fraction``...);
- metrics: names MLflow cannot store (``ndcg@10``) are logged as
  ``ndcg_at_10``; the run tag ``recsys.metric_names`` maps them back;
- tags ``recsys.data_hash`` and ``recsys.model_type``;
- artifacts ``split.json`` and ``plots/metrics.png``;
- dataset inputs: the feature tables the model was fitted with
  (:class:`InputTable`, context ``features``), each with its content hash;
- a pyfunc model named ``model``: ``predict`` takes a frame with a
  ``user_id`` column (optional params ``{"k": int}``) and returns the long
  table ``user_id, item_id, score, rank, served_by``.

The registry uses aliases, never stages: ``champion`` serves, and
``previous_champion`` keeps the one it replaced (:func:`apply_decision`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys import config
from recsys.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.ids import IdMap
from recsys.models.base import Recommender, check_matrix
from recsys.prepare import pseudonymise_ids

if TYPE_CHECKING:
    from recsys.coldstart import ColdStart
    from recsys.promotion import Decision

log = logging.getLogger(__name__)

#: Column of the served table that says who produced a row.
SERVED_BY_COL = "served_by"
SERVED_BY_MODEL = "model"
SERVED_COLS = (USER_COL, ITEM_COL, SCORE_COL, RANK_COL, SERVED_BY_COL)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
TAG_DATA_HASH = "recsys.data_hash"
TAG_MODEL_TYPE = "recsys.model_type"
TAG_METRIC_NAMES = "recsys.metric_names"
TAG_MODEL_URI = "recsys.model_uri"

_ARTIFACT_RECOMMENDER = "recommender"
_ARTIFACT_ID_MAP = "id_map"
_ARTIFACT_TRAIN = "train_matrix"
_ARTIFACT_COLD_START = "cold_start"
_REMOTE_SCHEMES = ("http", "https", "databricks")
_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "pyarrow", "cloudpickle")
_BAD_NAME_CHARS = re.compile(r"[^\w.\- /:]")


class TrackingError(ValueError):
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
        digest: its content hash (:func:`recsys.features.feature_hash`, hex).
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
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = config.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or config.experiment_name()
    client = _client()
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(name))
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _client() -> Any:
    from mlflow import MlflowClient

    uri = config.tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return f"{root.rstrip('/')}/{safe}"


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
            (:func:`recsys.coldstart.fit_cold_start` on the training frame
            with the items and users tables); ``None`` fits one from
            ``train_matrix`` alone (onboarding by co-liked items, global popularity).
        inputs: tables the model was fitted with, logged as dataset inputs
            (name, digest, schema, row count, source path).

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
    missing = [f"{name!r}: {path}" for name, path in (artifacts or {}).items()
               if not Path(path).exists()]
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
        mlflow.log_dict(_jsonable(dict(split_info)), "split.json")
        mlflow.log_artifact(str(_plot_metrics(metrics, run_name, Path(tmp))), "plots")
        _log_extra_artifacts(artifacts or {})
        model_uri = _log_pyfunc(model, id_map, X, k, Path(tmp), cold_start)
        mlflow.set_tag(TAG_MODEL_URI, model_uri)
    log.info("logged run %s (%s) with model %s", run.info.run_id, run_name, model_uri)
    return RunInfo(run_id=run.info.run_id, model_uri=model_uri)


def _log_inputs(inputs: Iterable[InputTable]) -> None:
    """Log each table as a pandas dataset input of the active run."""
    import mlflow

    for table in inputs:
        frame = pd.read_parquet(table.path)
        with warnings.catch_warnings():
            # Hints that do not apply: a local path is a local file whichever of
            # MLflow's two local sources reads it, and feature counts are never null.
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways",
                                    category=UserWarning)
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            dataset = mlflow.data.from_pandas(
                frame, source=str(Path(table.path).resolve()), name=table.name,
                digest=table.digest[:DIGEST_LENGTH])
            mlflow.log_input(dataset, context=table.context,
                             tags={TAG_INPUT_HASH: table.digest})


def _check_run_inputs(
    model: Recommender, id_map: IdMap, train_matrix: sp.spmatrix,
    metrics: Mapping[str, float], k: int,
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
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise TrackingError(f"k must be a positive integer, got {k!r}")
    bad = [name for name, v in metrics.items() if not _is_number(v)]
    if bad:
        raise TrackingError(f"metrics must be numbers; not numbers: {', '.join(map(str, bad))}")
    return X


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


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
        return json.dumps(_jsonable(value))
    except TypeError:
        return str(value)


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, arrays, tuples, sets and paths made JSON-ready."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | np.ndarray | pd.Index):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _run_tags(
    model: Recommender, data_hash: str, renamed: Mapping[str, str],
    tags: Mapping[str, str] | None,
) -> dict[str, str]:
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    run_tags[TAG_DATA_HASH] = str(data_hash)
    run_tags[TAG_MODEL_TYPE] = model_type_of(model)
    if renamed:
        run_tags[TAG_METRIC_NAMES] = json.dumps(dict(renamed), sort_keys=True)
    return run_tags


def model_type_of(model: Recommender) -> str:
    """The registry name of ``model`` (``popularity``...), or its class name."""
    return getattr(model, "name", "") or type(model).__name__


def _plot_metrics(metrics: Mapping[str, float], title: str, folder: Path) -> Path:
    """A horizontal bar chart of the metrics, written as ``metrics.png`` in ``folder``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [str(n) for n in metrics]
    values = [float(v) for v in metrics.values()]
    fig = Figure(figsize=(6, 0.45 * max(len(names), 1) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.barh(names, values, color="#4878a8")
    ax.bar_label(bars, fmt="%.4f", padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel("value")
    ax.margins(x=0.2)
    fig.tight_layout()
    path = folder / "metrics.png"
    fig.savefig(path, dpi=100)
    return path


def _log_extra_artifacts(artifacts: Mapping[str, Path]) -> None:
    import mlflow

    for name, path in artifacts.items():
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=name)
        else:
            mlflow.log_artifact(str(path), artifact_path=name)


# -------------------------------------------------------------- served model
class ServedRecommender:
    """Top-K lists by external id from a fitted model, for the pyfunc wrapper.

    Known users get the model's top-K with their training items removed
    (``served_by`` = ``model``); users not in the id map go down the cold-start
    chain (:mod:`recsys.coldstart`): ``onboarding`` when the request carries a
    ``liked_items``/``liked_genres`` answer, ``segment:<kind>`` when their
    demographics are known (users table or request columns ``age``, ``gender``,
    ``occupation``), ``global`` popularity otherwise. Never raises on an
    unknown user.

    Args:
        model: the fitted recommender.
        id_map: the id ↔ index map it was trained with.
        train_matrix: the training matrix (seen items).
        cold_start: the fitted chain; ``None`` fits one from ``train_matrix``
            when first needed (an unknown user, or :meth:`save`).
    """

    def __init__(self, model: Recommender, id_map: IdMap, train_matrix: sp.spmatrix,
                 cold_start: ColdStart | None = None) -> None:
        self.model = model
        self.id_map = id_map
        self.X = check_matrix(train_matrix)
        self._cold_start = cold_start

    @property
    def cold_start(self) -> ColdStart:
        """The cold-start chain (fitted from the training matrix if none was given)."""
        if self._cold_start is None:
            from recsys.coldstart import fit_cold_start_from_matrix

            self._cold_start = fit_cold_start_from_matrix(self.X, self.id_map)
        return self._cold_start

    def save(self, folder: Path) -> dict[str, str]:
        """Write model, id map and matrix under ``folder``; returns pyfunc artifact paths."""
        paths = {
            _ARTIFACT_RECOMMENDER: folder / _ARTIFACT_RECOMMENDER,
            _ARTIFACT_ID_MAP: folder / _ARTIFACT_ID_MAP,
            _ARTIFACT_TRAIN: folder / "train_matrix.npz",
            _ARTIFACT_COLD_START: folder / "cold_start.pkl",
        }
        self.model.save(paths[_ARTIFACT_RECOMMENDER])
        paths[_ARTIFACT_ID_MAP].mkdir(parents=True, exist_ok=True)
        pd.DataFrame({USER_COL: self.id_map.users}).to_parquet(
            paths[_ARTIFACT_ID_MAP] / "users.parquet"
        )
        pd.DataFrame({ITEM_COL: self.id_map.items}).to_parquet(
            paths[_ARTIFACT_ID_MAP] / "items.parquet"
        )
        sp.save_npz(paths[_ARTIFACT_TRAIN], self.X)
        paths[_ARTIFACT_COLD_START].write_bytes(pickle.dumps(self.cold_start))
        return {name: str(path) for name, path in paths.items()}

    @classmethod
    def from_artifacts(cls, artifacts: Mapping[str, str]) -> ServedRecommender:
        """Rebuild from the paths :meth:`save` returned (as MLflow hands them back)."""
        id_dir = Path(artifacts[_ARTIFACT_ID_MAP])
        id_map = IdMap(
            users=pd.Index(pd.read_parquet(id_dir / "users.parquet")[USER_COL], name=USER_COL),
            items=pd.Index(pd.read_parquet(id_dir / "items.parquet")[ITEM_COL], name=ITEM_COL),
        )
        model = Recommender.load(artifacts[_ARTIFACT_RECOMMENDER])
        chain_path = artifacts.get(_ARTIFACT_COLD_START)  # absent in models logged before it
        chain = pickle.loads(Path(chain_path).read_bytes()) if chain_path else None
        return cls(model, id_map, sp.load_npz(artifacts[_ARTIFACT_TRAIN]), chain)

    def recommend(self, users: pd.DataFrame, k: int) -> pd.DataFrame:
        """Top-``k`` rows per distinct ``user_id`` of ``users``, in input order.

        Args:
            users: ``user_id`` plus, optionally, an onboarding answer for users
                the model does not know: ``liked_items`` / ``liked_genres``
                (a list, or one ``|``-separated string), ``age``, ``gender``,
                ``occupation``; known users ignore them. A repeated id's first row counts.
            k: list length.

        Returns:
            Columns ``user_id, item_id, score, rank, served_by``; ranks run
            1..k per user (fewer only when a user has seen nearly every item).

        Raises:
            TrackingError: no ``user_id`` column, missing ids, or a bad ``k``.
        """
        ids = _user_ids(users)
        k = _check_k(k)
        idx = self.id_map.user_index(ids)
        known = idx >= 0
        items, scores = self._known_lists(idx[known], k)
        parts = [
            _long_frame(ids[known], items, scores, SERVED_BY_MODEL, self.id_map),
        ]
        if not known.all():
            parts.append(self._cold(users, ids[~known], k))
        out = pd.concat(parts, ignore_index=True)
        order = pd.Index(ids).get_indexer(out[USER_COL])
        return out.iloc[np.lexsort((out[RANK_COL].to_numpy(), order))].reset_index(drop=True)

    def _known_lists(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if rows.size == 0:
            return np.empty((0, 0), dtype=np.int64), np.empty((0, 0), dtype=np.float64)
        return self.model.recommend(rows, self.X, k, filter_seen=True)

    def _cold(self, users: pd.DataFrame, ids: np.ndarray, k: int) -> pd.DataFrame:
        """The cold-start chain's lists for the unknown ``ids`` (first request row each)."""
        first = users.drop_duplicates(USER_COL)
        requests = first[first[USER_COL].isin(ids)]
        return self.cold_start.recommend_many(requests, k)


def _user_ids(users: pd.DataFrame) -> np.ndarray:
    if not isinstance(users, pd.DataFrame) or USER_COL not in users.columns:
        raise TrackingError(f"input must be a DataFrame with a {USER_COL!r} column")
    column = users[USER_COL]
    missing = int(column.isna().sum())
    if missing:
        raise TrackingError(f"{USER_COL} has {missing} missing values")
    return pd.unique(column.to_numpy())


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise TrackingError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _long_frame(
    ids: np.ndarray, items: np.ndarray, scores: np.ndarray, served_by: str, id_map: IdMap
) -> pd.DataFrame:
    """The long table for a block of users × k slots; unfillable slots (-1) dropped."""
    k = items.shape[1] if items.ndim == 2 else 0
    filled = (items >= 0).ravel()
    flat_items = items.ravel()[filled]
    return pd.DataFrame({
        USER_COL: np.repeat(ids, k)[filled],
        ITEM_COL: id_map.items.to_numpy()[flat_items],
        SCORE_COL: scores.ravel()[filled].astype(np.float64),
        RANK_COL: np.tile(np.arange(1, k + 1, dtype=np.int64), ids.size)[filled],
        SERVED_BY_COL: np.full(int(filled.sum()), served_by, dtype=object),
    })


def _pyfunc_class() -> type:
    """Build the pyfunc wrapper class (needs mlflow, hence built on first use).

    The class is published as ``recsys.tracking.RecsysPyfuncModel`` through the
    module ``__getattr__`` so cloudpickle stores a reference to it, not its code.
    """
    import mlflow.pyfunc

    class RecsysPyfuncModel(mlflow.pyfunc.PythonModel):
        """Serves top-K recommendations by external user id (see :class:`ServedRecommender`)."""

        def __init__(self, k: int = 10) -> None:
            self.k = k
            self._served: ServedRecommender | None = None

        def load_context(self, context: Any) -> None:
            self._served = ServedRecommender.from_artifacts(context.artifacts)

        # A DataFrame hint tells MLflow to rely on the logged signature alone.
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict | None = None
        ) -> pd.DataFrame:
            if self._served is None:
                self.load_context(context)
            k = (params or {}).get("k", self.k)
            return self._served.recommend(model_input, int(k) if _is_number(k) else k)

        def __getstate__(self) -> dict:
            return {"k": self.k, "_served": None}

    RecsysPyfuncModel.__module__ = __name__
    RecsysPyfuncModel.__qualname__ = "RecsysPyfuncModel"
    return RecsysPyfuncModel


def __getattr__(name: str) -> Any:
    if name == "RecsysPyfuncModel":
        cls = _pyfunc_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _log_pyfunc(model: Recommender, id_map: IdMap, X: sp.csr_matrix, k: int, tmp: Path,
                cold_start: ColdStart | None = None) -> str:
    """Log the served model as pyfunc ``model`` of the active run; returns its URI."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    served = ServedRecommender(model, id_map, X, cold_start)
    artifact_paths = served.save(tmp / "served")
    example = pd.DataFrame({USER_COL: id_map.users[: min(2, id_map.n_users)].to_numpy()})
    with warnings.catch_warnings():
        # A hint that does not apply: served ids are never missing.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, served.recommend(example, k), params={"k": int(k)})
        signature.inputs = _with_onboarding_inputs(signature.inputs)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=__getattr__("RecsysPyfuncModel")(k=int(k)),
            artifacts=artifact_paths,
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
        )
    return info.model_uri


def _with_onboarding_inputs(inputs: Any) -> Any:
    """The input schema plus the optional onboarding columns (any type: list or string).

    Without them MLflow's schema enforcement would drop those columns before ``predict``.
    """
    from mlflow.types.schema import AnyType, ColSpec, Schema

    from recsys.coldstart import ONBOARDING_COLS

    return Schema(list(inputs.inputs) + [ColSpec(AnyType(), name, required=False)
                                         for name in ONBOARDING_COLS])


def _pip_requirements() -> list[str]:
    """Pinned requirements of the served model: this environment's versions.

    Pinned explicitly so MLflow skips its slow requirement inference; the
    model also needs the ``recsys`` package importable where it is loaded.
    """
    pins = []
    for package in _REQUIREMENTS:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def log_tuning(model_name: str, result: Mapping[str, Any], *, run_name: str,
               tags: Mapping[str, str] | None = None) -> str:
    """Log a tuning study: one parent run, one nested run per trial.

    Args:
        model_name: the tuned model's registry name.
        result: :meth:`recsys.tuning.TuningResult.to_dict` output.
        run_name: the parent run's name.
        tags: extra tags for the parent run.

    Returns:
        The parent run id. Trial runs carry the trial's params and
        ``validation_<metric>``; the parent carries the best of both.
    """
    import mlflow

    experiment_id = setup()
    metric = metric_key(f"validation_{result['metric']}")
    parent_tags = {TAG_MODEL_TYPE: model_name, "recsys.tuning": "study", **(tags or {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags=parent_tags, nested=mlflow.active_run() is not None) as parent:
        if result["params"]:
            mlflow.log_params({f"best.{k}": _param_value(v) for k, v in result["params"].items()})
        if result["trials"]:
            mlflow.log_metric(metric, float(result["score"]))
        for trial in result["trials"]:
            with mlflow.start_run(experiment_id=experiment_id, nested=True,
                                  run_name=f"{run_name}-trial-{trial['number']}",
                                  tags={TAG_MODEL_TYPE: model_name, "recsys.tuning": "trial"}):
                mlflow.log_params({k: _param_value(v) for k, v in trial["params"].items()})
                mlflow.log_metrics({metric: float(trial["score"]),
                                    "trial_seconds": float(trial["seconds"])})
    return parent.info.run_id


def log_files(run_id: str, paths: Iterable[Path], artifact_path: str) -> None:
    """Attach existing files to run ``run_id`` under ``artifact_path``."""
    client = _client()
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


# ------------------------------------------------------------------ registry
def register_model(run_id_or_model_uri: str, name: str | None = None) -> int:
    """Register a logged model as a new version of ``name``.

    Args:
        run_id_or_model_uri: a run id (its ``model`` artifact is registered)
            or any model URI (``models:/m-...``, ``runs:/ID/model``).
        name: registered model name; defaults to :func:`recsys.config.model_name`.

    Returns:
        The version number. The run's ``recsys.model_type`` and
        ``recsys.data_hash`` tags are copied onto the version. Registering the
        same run id again returns its existing version, so a retried task
        never creates a second version of one run.
    """
    import mlflow

    setup()
    name = name or config.model_name()
    if ":/" not in run_id_or_model_uri:
        existing = _client().search_model_versions(
            f"name = '{name}' and run_id = '{run_id_or_model_uri}'")
        if existing:
            return min(int(v.version) for v in existing)
    uri = _model_uri_of(run_id_or_model_uri)
    version = mlflow.register_model(uri, name)
    run_tags = _client().get_run(version.run_id).data.tags if version.run_id else {}
    copied = {t: run_tags[t] for t in (TAG_MODEL_TYPE, TAG_DATA_HASH) if t in run_tags}
    set_version_tags(name, int(version.version), copied)
    log.info("registered %s as %s version %s", uri, name, version.version)
    return int(version.version)


def _model_uri_of(run_id_or_model_uri: str) -> str:
    """A model URI as is; for a run id, the model that :func:`log_model_run` logged."""
    if ":/" in run_id_or_model_uri:
        return run_id_or_model_uri
    tags = _client().get_run(run_id_or_model_uri).data.tags
    return tags.get(TAG_MODEL_URI) or f"runs:/{run_id_or_model_uri}/{MODEL_ARTIFACT}"


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point ``alias`` of registered model ``name`` at ``version``."""
    _client().set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: int | str, tags: Mapping[str, Any]) -> None:
    """Set (or overwrite) tags on one model version; values are stored as strings."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def version_by_alias(name: str, alias: str) -> Any | None:
    """The ``ModelVersion`` that ``alias`` points at, or ``None`` (no model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def get_champion(name: str | None = None) -> dict[str, Any] | None:
    """The current champion of ``name``, or ``None`` when there is none yet.

    Returns:
        ``version`` (int), ``run_id``, ``model_type``, ``metrics`` (under the
        names they were logged with, e.g. ``ndcg@10``), ``tags`` (the
        version's tags), ``run_tags`` (the training run's tags) and
        ``model_uri`` (``models:/NAME/VERSION``).
    """
    setup()
    name = name or config.model_name()
    version = version_by_alias(name, CHAMPION)
    if version is None:
        return None
    run = _client().get_run(version.run_id) if version.run_id else None
    metrics = _original_metric_names(run) if run else {}
    run_tags = run.data.tags if run else {}
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "model_type": version.tags.get(TAG_MODEL_TYPE) or run_tags.get(TAG_MODEL_TYPE),
        "metrics": metrics,
        "tags": dict(version.tags),
        "run_tags": dict(run_tags),
        "model_uri": f"models:/{name}/{version.version}",
    }


def _original_metric_names(run: Any) -> dict[str, float]:
    renamed = json.loads(run.data.tags.get(TAG_METRIC_NAMES, "{}"))
    return {renamed.get(key, key): value for key, value in run.data.metrics.items()}


def champion_uri(name: str | None = None) -> str:
    """``models:/NAME@champion``, the URI that always serves the current champion."""
    return f"models:/{name or config.model_name()}@{CHAMPION}"


def load_model(uri: str) -> Any:
    """Load a logged or registered model as an MLflow pyfunc model."""
    import mlflow.pyfunc

    setup()
    return mlflow.pyfunc.load_model(uri)


def recommend_for_users(
    user_ids: Iterable[Any], k: int = 10, model_uri: str | None = None,
    answers: dict[str, Any] | None = None, pseudonymise: bool = True,
) -> pd.DataFrame:
    """Top-``k`` recommendations for ``user_ids`` from the champion (or ``model_uri``).

    The model is loaded on every call, so a moved alias takes effect at once.

    Args:
        user_ids: the users to serve.
        k: list length.
        model_uri: a model other than the champion.
        answers: an onboarding answer given to every unknown user of the call
            (``liked_items``, ``liked_genres``, ``age``, ``gender``,
            ``occupation``); known users are served by the model regardless.
        pseudonymise: with ``RECSYS_PSEUDONYM_KEY`` set (models then know
            pseudonyms only), ask the model for each id's pseudonym and answer
            under the id given; ``False`` for ids that are pseudonyms already.

    Returns:
        The long table ``user_id, item_id, score, rank, served_by``; unknown
        users are served by the cold-start chain (``served_by`` names its path).
    """
    k = _check_k(k)
    model = load_model(model_uri or champion_uri())
    ids = list(user_ids)
    key = config.pseudonym_key() if pseudonymise else None
    asked = pseudonymise_ids(ids, key) if key else ids
    users = pd.DataFrame({USER_COL: asked})
    for column, value in (answers or {}).items():
        users[column] = [value] * len(users)
    out = model.predict(users, params={"k": k})
    if key:
        out[USER_COL] = out[USER_COL].map(dict(zip(asked, ids, strict=True)))
    return out


# ----------------------------------------------------------------- promotion
def _with_versions(decision: Decision, candidate: int | str, champion: Any | None) -> Decision:
    """``decision`` with the registry versions filled in where the caller left them out."""
    fill: dict[str, int] = {}
    if decision.candidate_version is None:
        fill["candidate_version"] = int(candidate)
    if decision.champion_version is None and champion is not None:
        fill["champion_version"] = int(champion.version)
    return dataclasses.replace(decision, **fill) if fill else decision


def decision_artifact(name: str, version: int | str) -> str:
    """Artifact path, inside the candidate's run, of the decision on ``name`` ``version``."""
    return f"promotion/{name}-v{version}.json"


def apply_decision(name: str | None, candidate_version: int | str, decision: Decision) -> None:
    """Record ``decision`` on the candidate version and move aliases if it promotes.

    Always: the decision's tags (``recsys.decision.*``) go on the candidate version
    and ``promotion/<name>-v<version>.json`` on the candidate's run. On a
    promote: the old champion (if any, and not the candidate itself) becomes
    ``previous_champion`` and ``champion`` moves to the candidate. On a hold,
    no alias changes. Versions the decision leaves out are filled in from the
    registry before it is recorded.

    Raises:
        mlflow.exceptions.MlflowException: ``name`` has no such version.
    """
    setup()
    name = name or config.model_name()
    client = _client()
    version = client.get_model_version(name, str(candidate_version))
    current = version_by_alias(name, CHAMPION)
    decision = _with_versions(decision, version.version, current)
    set_version_tags(name, version.version, decision.as_tags())
    if version.run_id:
        _log_decision(client, version.run_id, decision, decision_artifact(name, version.version))
    if not decision.promote:
        log.info("%s version %s held: %s", name, version.version, decision.reason)
        return
    if current is not None and int(current.version) != int(version.version):
        set_alias(name, PREVIOUS_CHAMPION, current.version)
    set_alias(name, CHAMPION, version.version)
    challenger = version_by_alias(name, CHALLENGER)
    if challenger is not None and int(challenger.version) == int(version.version):
        client.delete_registered_model_alias(name, CHALLENGER)
    log.info("%s version %s is champion: %s", name, version.version, decision.reason)


def _log_decision(client: Any, run_id: str, decision: Decision, path: str) -> None:
    """The decision as JSON at ``path`` and, for a gated or manual one, as Markdown beside it."""
    client.log_dict(run_id, decision.to_dict(), path)
    if decision.kind != "rule":
        from recsys.gate import to_markdown

        client.log_text(run_id, to_markdown(decision), path.removesuffix(".json") + ".md")


def mark_challenger(name: str | None, version: int | str) -> None:
    """Point ``challenger`` at the version now being judged against the champion."""
    setup()
    set_alias(name or config.model_name(), CHALLENGER, version)


def aliases(name: str | None = None) -> dict[str, int]:
    """Which version each of ``champion``, ``challenger``, ``previous_champion`` points at."""
    setup()
    name = name or config.model_name()
    found = {alias: version_by_alias(name, alias)
             for alias in (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)}
    return {alias: int(v.version) for alias, v in found.items() if v is not None}


def rollback(name: str | None = None, reason: str = "rollback") -> Decision:
    """Move ``champion`` back to ``previous_champion``; the demoted version becomes previous.

    Leaves a manual decision record on the restored version.

    Raises:
        TrackingError: there is no champion or no previous champion.
    """
    from recsys.gate import manual_decision

    setup()
    name = name or config.model_name()
    current, previous = version_by_alias(name, CHAMPION), version_by_alias(name, PREVIOUS_CHAMPION)
    if current is None or previous is None:
        raise TrackingError(f"'{name}' has no champion and previous_champion to roll back between")
    decision = manual_decision("rollback", int(previous.version), int(current.version), reason)
    apply_decision(name, previous.version, decision)
    return decision


def promote_manually(version: int, reason: str, name: str | None = None) -> Decision:
    """Make ``version`` the champion by hand (the old one becomes ``previous_champion``).

    Raises:
        TrackingError: ``version`` does not exist.
    """
    from mlflow.exceptions import MlflowException

    from recsys.gate import manual_decision

    setup()
    name = name or config.model_name()
    try:
        _client().get_model_version(name, str(version))
    except MlflowException:
        raise TrackingError(f"'{name}' has no version {version}") from None
    current = version_by_alias(name, CHAMPION)
    decision = manual_decision("manual_promote", int(version),
                               int(current.version) if current else None, reason)
    apply_decision(name, version, decision)
    return decision



# ------------------------------------------------ read-only views (operator page)
# Used by recsys.ui. Nothing below writes to MLflow.
def list_training_runs(max_results: int = 200) -> list[dict[str, Any]]:
    """Runs of the training experiment, newest first, as plain dicts.

    Args:
        max_results: the most runs returned.

    Returns:
        One dict per run (see :func:`get_run_summary`); an empty list when the
        experiment does not exist yet. Nothing is created.
    """
    client = _client()
    experiment = client.get_experiment_by_name(config.experiment_name())
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], max_results=max_results,
                              order_by=["attributes.start_time DESC"])
    return [_run_summary(run) for run in runs]


def get_run_summary(run_id: str) -> dict[str, Any] | None:
    """One run as a plain dict, or ``None`` when MLflow does not know ``run_id``.

    Returns:
        ``run_id``, ``experiment_id``, ``run_name``, ``status``, ``start_time``
        and ``end_time`` (epoch milliseconds or ``None``), ``metrics`` (under
        their original names, e.g. ``ndcg@10``) and ``tags``.
    """
    from mlflow.exceptions import MlflowException

    try:
        run = _client().get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return _run_summary(run)


def _run_summary(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "metrics": _original_metric_names(run),
        "tags": dict(run.data.tags),
    }


def get_version_summary(name: str, version: int | str) -> dict[str, Any] | None:
    """Registry facts of one model version, or ``None`` when it does not exist.

    Returns:
        ``version`` (int), ``run_id``, ``creation_timestamp`` and
        ``last_updated_timestamp`` (epoch milliseconds), ``aliases`` and ``tags``.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = _client().get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return {
        "version": int(found.version),
        "run_id": found.run_id,
        "creation_timestamp": found.creation_timestamp,
        "last_updated_timestamp": found.last_updated_timestamp,
        "aliases": list(getattr(found, "aliases", []) or []),
        "tags": dict(found.tags),
    }


def list_run_artifacts(run_id: str, folder: str) -> list[str]:
    """Paths of the files directly inside artifact ``folder`` of a run (empty when none)."""
    return [f.path for f in _client().list_artifacts(run_id, folder) if not f.is_dir]


def read_run_artifact(run_id: str, path: str) -> bytes:
    """The bytes of one artifact file of a run."""
    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as tmp:
        local = _client().download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()
