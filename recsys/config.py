"""Where recsys keeps its files, read from environment variables.

Everything that differs between the embedded default (a laptop, CI) and the
production-like stack is configuration, read here and nowhere else:

- ``RECSYS_HOME``: root of run folders and batch outputs (default ``./var``).
- ``RECSYS_DATA_PATH``: the training DAG's default input (default ``<RECSYS_HOME>/data``).
- ``RECSYS_EXPECTATIONS_DIR``: the suites (default ``expectations/`` in the checkout).
- ``RECSYS_LANDING``: folder the ingest DAG reads new batches from.
- ``RECSYS_INGEST_SETTLE_SECONDS``: how long a landed batch without a marker
  must stay unchanged before ingest takes it (default 10).
- ``RECSYS_STORE_LOCK_TIMEOUT``: how long a writer waits for the store's lock (default 300).
- ``MLFLOW_TRACKING_URI``: MLflow tracking store (default: SQLite inside ``mlruns/``).
- ``RECSYS_MODEL_NAME``: name of the registered model (default ``recsys``).
- ``RECSYS_REGISTRY_LOCK_URL``: a Postgres database whose advisory locks
  serialise promotions (default: the tracking URI when it is Postgres, else a
  file lock beside the store); ``RECSYS_LOCK_TIMEOUT_S``: how long to wait.
- ``RECSYS_REDIS_URL``: the Redis cache of the batch lists (unset = no cache).
- ``RECSYS_CACHE_PREFIX``: first part of its keys (default ``recsys``).
- ``RECSYS_ENGINE``: ``local`` (pandas, the default) or ``spark``, which runs
  reading, validation, cleaning, splits and feature tables on Spark.
- ``SPARK_MASTER`` / ``SPARK_REMOTE``: the cluster the Spark engine uses
  (default ``local[*]``; a ``sc://`` URL means Spark Connect);
  ``SPARK_EXECUTOR_MEMORY``, ``SPARK_DRIVER_MEMORY`` and ``RECSYS_SPARK_CONF``
  (a JSON object of any other Spark settings) size it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def recsys_home() -> Path:
    """Root folder for run-scoped data, models and recommendations."""
    return Path(os.environ.get("RECSYS_HOME", PROJECT_ROOT / "var")).resolve()


def data_path() -> str:
    """Default input of a training run: ``RECSYS_DATA_PATH`` or ``<RECSYS_HOME>/data``."""
    return os.environ.get("RECSYS_DATA_PATH", str(recsys_home() / "data"))


def expectations_dir() -> Path:
    """The Great Expectations suites: ``RECSYS_EXPECTATIONS_DIR`` or ``expectations/``."""
    return Path(os.environ.get("RECSYS_EXPECTATIONS_DIR", PROJECT_ROOT / "expectations"))


def landing_path() -> Path:
    """Where new interaction batches are dropped: ``RECSYS_LANDING`` or ``<home>/landing``."""
    return Path(os.environ.get("RECSYS_LANDING", recsys_home() / "landing")).resolve()


def safe_name(name: str) -> str:
    """``name`` as a file or folder name: anything but letters, digits, ``-_.`` becomes ``_``.

    The one rule for run folders, experiment artifact folders and the page's
    look-ups, so each finds what the others wrote.
    """
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def runs_root() -> Path:
    """The folder holding one sub-folder per pipeline run."""
    return recsys_home() / "runs"


def mlruns_dir() -> Path:
    """The local MLflow folder of the embedded default (database and artifacts)."""
    return Path(os.environ.get("RECSYS_MLRUNS", PROJECT_ROOT / "mlruns")).resolve()


def tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a SQLite file in ``mlruns/``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = mlruns_dir()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root() -> str:
    """Default artifact location for experiments created by the embedded default."""
    return os.environ.get("RECSYS_ARTIFACT_ROOT", (mlruns_dir() / "artifacts").as_uri())


def registry_lock_url() -> str | None:
    """``RECSYS_REGISTRY_LOCK_URL``: the Postgres database to take registry locks in, if set."""
    return os.environ.get("RECSYS_REGISTRY_LOCK_URL") or None


def lock_timeout_s() -> float:
    """``RECSYS_LOCK_TIMEOUT_S``: how long to wait for a registry lock (default 300 s)."""
    return float(os.environ.get("RECSYS_LOCK_TIMEOUT_S", "300"))


#: Minutes a pipeline task may run by default (the DAGs' ``execution_timeout``).
DEFAULT_TASK_TIMEOUT_MINUTES = 120


def time_limit(variable: str, default: float, unit: str = "minutes") -> timedelta:
    """A time limit read from environment variable ``variable`` (``default`` when
    unset), in ``unit`` (``"minutes"`` or ``"hours"``): the DAGs' timeouts."""
    return timedelta(**{unit: float(os.environ.get(variable) or default)})


def task_timeout_s() -> float:
    """``RECSYS_TASK_TIMEOUT_MINUTES`` (default 120) in seconds: the DAGs' task timeout."""
    minutes = os.environ.get("RECSYS_TASK_TIMEOUT_MINUTES", str(DEFAULT_TASK_TIMEOUT_MINUTES))
    return float(minutes) * 60


def abandoned_after_s() -> float:
    """``RECSYS_ABANDONED_AFTER_S``: how long an MLflow run or an undecided version may
    stay open before the next run takes it for a killed task's leftover (default: the
    task timeout plus ten minutes, since no task outlives its timeout)."""
    raw = os.environ.get("RECSYS_ABANDONED_AFTER_S")
    return float(raw) if raw else task_timeout_s() + 600


def model_name() -> str:
    """Name of the registered model whose ``champion`` alias serves recommendations."""
    return os.environ.get("RECSYS_MODEL_NAME", "recsys")


#: File names that say nothing about the data set: its folder names it instead.
_GENERIC_STEMS = frozenset({"ratings", "interactions", "data", "u", "events", "train", "raw"})


def model_name_for(source: str | Path | None) -> str:
    """The registered model a run on data ``source`` (a path) trains into: one per data set.

    The deployment's own data (``RECSYS_DATA_PATH``, or no path) trains
    :func:`model_name`; any other data set trains ``<model_name>-<its name>``
    (``recsys-other`` for ``other.csv``, ``recsys-ml-100k`` for the MovieLens
    folder), so a second data set gets its own champion and history instead of
    being scored against a champion of another catalogue. A run that names its
    model (``recsys train --model-name``, the DAG's ``model_name``) overrides this.
    """
    base = model_name()
    if not source:
        return base
    path = Path(source).expanduser().resolve()
    if path == Path(data_path()).expanduser().resolve():
        return base
    name = path.stem if path.is_file() or path.suffix else path.name
    if name.lower() in _GENERIC_STEMS:
        name = path.parent.name
    return f"{base}-{safe_name(name).lower().strip('-_.') or 'data'}"


def experiment_name() -> str:
    """MLflow experiment that holds every training run."""
    return os.environ.get("RECSYS_EXPERIMENT", "recsys")


def rating_scale() -> tuple[float, float] | None:
    """``RECSYS_RATING_SCALE`` (``"1,5"``): the rating scale every batch of this
    deployment must lie on; ``None`` (unset) checks only that ratings are non-negative.

    Raises:
        recsys.errors.InputError: the value is not two numbers ``low,high``.
    """
    raw = os.environ.get("RECSYS_RATING_SCALE", "").strip()
    if not raw:
        return None
    try:
        low, high = (float(part) for part in raw.split(","))
    except ValueError:
        from recsys.errors import InputError

        raise InputError(
            f"RECSYS_RATING_SCALE must be two numbers 'low,high' such as '1,5', got {raw!r}"
        ) from None
    return low, high


def pseudonym_key() -> bytes | None:
    """``RECSYS_PSEUDONYM_KEY``: when set, user ids are pseudonymised (keyed
    HMAC) before anything of a run is stored; ``None`` when unset or empty."""
    key = os.environ.get("RECSYS_PSEUDONYM_KEY", "")
    return key.encode() if key else None


def privacy_dir() -> Path:
    """Where erasure keeps its records: the forgotten-users list, the audit log and the
    salt of their hashes (``<RECSYS_HOME>/privacy``)."""
    return recsys_home() / "privacy"


def forget_salt() -> bytes | None:
    """``RECSYS_FORGET_SALT``: the secret the forgotten-users list and the erasure audit
    hash ids with; ``None`` (unset) keeps a random one in :func:`privacy_dir`."""
    salt = os.environ.get("RECSYS_FORGET_SALT", "")
    return salt.encode() if salt else None


#: The Redis an erasure still purges when RECSYS_REDIS_URL is unset (a cache the
#: embedded default's service may have written to by its own flag).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def monitor_dir() -> Path:
    """Drift and decay measurements and retraining decisions (``<RECSYS_HOME>/monitor``)."""
    return recsys_home() / "monitor"


#: ``RECSYS_MONITOR_<NAME>`` overrides field ``<name>`` of
#: :class:`recsys.promotion.retrain.RetrainPolicy` (e.g. ``RECSYS_MONITOR_COOLDOWN_HOURS=12``).
MONITOR_ENV_PREFIX = "RECSYS_MONITOR_"


def monitor_overrides() -> dict[str, float]:
    """The retraining policy's settings given as ``RECSYS_MONITOR_*`` variables (numbers).

    Raises:
        recsys.errors.InputError: a value that is not a number.
    """
    found = {}
    for key, raw in os.environ.items():
        if key.startswith(MONITOR_ENV_PREFIX) and raw.strip():
            try:
                found[key.removeprefix(MONITOR_ENV_PREFIX).lower()] = float(raw)
            except ValueError:
                from recsys.errors import InputError

                raise InputError(f"{key} must be a number, got {raw!r}") from None
    return found


def redis_url() -> str | None:
    """``RECSYS_REDIS_URL``: where the batch lists are cached for the service
    (``redis://[:password@]host:port/db``); ``None`` when unset (no cache)."""
    return os.environ.get("RECSYS_REDIS_URL", "").strip() or None


def cache_prefix() -> str:
    """``RECSYS_CACHE_PREFIX``: first part of every cache key (default ``recsys``)."""
    return os.environ.get("RECSYS_CACHE_PREFIX", "").strip() or "recsys"


#: Seconds a landed batch without a marker must stay unchanged (``RECSYS_INGEST_SETTLE_SECONDS``).
DEFAULT_SETTLE_SECONDS = 10.0
#: Seconds a writer waits for the store's lock (``RECSYS_STORE_LOCK_TIMEOUT``).
DEFAULT_STORE_LOCK_TIMEOUT = 300.0


def ingest_settle_seconds() -> float:
    """``RECSYS_INGEST_SETTLE_SECONDS``: a landed batch without a ``.done`` / ``_SUCCESS``
    marker is ingested once unchanged this long (default 10).

    Raises:
        recsys.errors.InputError: the value is not a number >= 0.
    """
    return _seconds("RECSYS_INGEST_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS)


def store_lock_timeout() -> float:
    """``RECSYS_STORE_LOCK_TIMEOUT``: seconds ingest and erasure wait for the store's
    lock before they give up with a clear error (default 300).

    Raises:
        recsys.errors.InputError: the value is not a number >= 0.
    """
    return _seconds("RECSYS_STORE_LOCK_TIMEOUT", DEFAULT_STORE_LOCK_TIMEOUT)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        from recsys.errors import InputError

        raise InputError(f"{name} must be seconds >= 0, got {raw!r}")
    return value


#: Test users a run scores at most (``RECSYS_EVAL_MAX_USERS``); a seeded sample beyond.
DEFAULT_EVAL_MAX_USERS = 20_000


def eval_max_users() -> int | None:
    """``RECSYS_EVAL_MAX_USERS``: the most test users a training run evaluates every
    model on (a seeded sample of them when the holdout has more; the same sample
    for every model and for the champion); ``0`` = every test user (default 20,000).

    Raises:
        recsys.errors.InputError: the value is not a whole number >= 0.
    """
    return _count_or_all("RECSYS_EVAL_MAX_USERS", DEFAULT_EVAL_MAX_USERS, "users")


DEFAULT_COLD_START_PAIRS = 5_000_000


def cold_start_pairs() -> int | None:
    """``RECSYS_COLD_START_PAIRS``: about how many training (user, item) pairs the
    cold-start chain's co-liked item similarity learns from (a sample of users,
    drawn by a hash of their ids, when the split has more; popularity counts
    every pair); ``0`` = all (default 5,000,000).

    Raises:
        recsys.errors.InputError: the value is not a whole number >= 0.
    """
    return _count_or_all("RECSYS_COLD_START_PAIRS", DEFAULT_COLD_START_PAIRS, "pairs")


def _count_or_all(name: str, default: int, unit: str) -> int | None:
    """The whole number in ``name`` (``default`` when unset); ``0`` means no limit (``None``)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        from recsys.errors import InputError

        raise InputError(f"{name} must be a whole number of {unit} >= 0 (0 = all), got {raw!r}")
    return int(raw) or None


#: The engines ``RECSYS_ENGINE`` chooses between.
ENGINES = ("local", "spark")


def engine() -> str:
    """``RECSYS_ENGINE``: ``local`` (default: pandas, NumPy, SciPy in each task) or
    ``spark`` (the heavy data steps on a Spark cluster, :mod:`recsys.engines.spark`).

    Raises:
        recsys.errors.InputError: any other value.
    """
    value = os.environ.get("RECSYS_ENGINE", "").strip().lower() or "local"
    if value not in ENGINES:
        from recsys.errors import InputError

        raise InputError(
            f"RECSYS_ENGINE must be one of {', '.join(ENGINES)}, got {value!r}; "
            "unset it for the local engine"
        )
    return value


def spark_master() -> str:
    """``SPARK_MASTER``: the cluster manager URL (``spark://host:7077``, ``yarn``,
    ``k8s://...``); default ``local[*]``, Spark inside the task's own process."""
    return os.environ.get("SPARK_MASTER", "").strip() or "local[*]"


def spark_remote() -> str | None:
    """``SPARK_REMOTE``: a Spark Connect server (``sc://host:15002``); when set it wins
    over :func:`spark_master`. ``None`` when unset."""
    return os.environ.get("SPARK_REMOTE", "").strip() or None


def spark_conf() -> dict[str, str]:
    """Spark settings of the engine's session: ``spark.executor.memory`` and
    ``spark.driver.memory`` from ``SPARK_EXECUTOR_MEMORY`` / ``SPARK_DRIVER_MEMORY``
    when set, then everything in ``RECSYS_SPARK_CONF`` (a JSON object such as
    ``{"spark.sql.shuffle.partitions": "64"}``).

    Raises:
        recsys.errors.InputError: ``RECSYS_SPARK_CONF`` is not a JSON object.
    """
    import json

    conf = {}
    for env, key in (
        ("SPARK_EXECUTOR_MEMORY", "spark.executor.memory"),
        ("SPARK_DRIVER_MEMORY", "spark.driver.memory"),
    ):
        if os.environ.get(env, "").strip():
            conf[key] = os.environ[env].strip()
    raw = os.environ.get("RECSYS_SPARK_CONF", "").strip()
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError:
            extra = None
        if not isinstance(extra, dict):
            from recsys.errors import InputError

            raise InputError(
                "RECSYS_SPARK_CONF must be a JSON object of Spark settings such as "
                f'{{"spark.sql.shuffle.partitions": "64"}}, got {raw!r}'
            )
        conf.update({str(k): str(v) for k, v in extra.items()})
    return conf
