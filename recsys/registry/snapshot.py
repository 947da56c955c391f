"""A local copy of each registered model's champion (or challenger), so answers need no
MLflow on the hot path.

Asking MLflow for the champion costs seconds before any work (importing
``mlflow``, opening its store, downloading the model's artifacts). A served
model version never changes once registered, so the copy is safe to keep:

- :meth:`Snapshot.refresh` asks the registry which version ``champion``
  points at and, when that is not the copy held, downloads that version's
  pyfunc artifacts into ``<RECSYS_HOME>/serving/<model>/v<version>/`` with
  the item titles of its training run, then records it in ``champion.json``;
- :func:`champion_version` reads the alias straight from the tracking store,
  cheaply: a read-only query of MLflow's ``registered_model_aliases`` table on
  SQLite or PostgreSQL, or the REST endpoint of a tracking server. Any failure
  answers ``None`` ("cannot tell"), and callers then take the MLflow path;
- :meth:`Snapshot.served` loads the copy as a
  :class:`recsys.serving.served.ServedRecommender`.

``Snapshot(name, alias="challenger")`` follows another alias the same way
(its record is ``challenger.json``); both share the version folders, so a
challenger that becomes champion is not downloaded again.

:func:`current_served` puts the three together: the champion's served model,
fresh against the registry, in well under a second when the copy is current.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from recsys import config
from recsys.errors import NotFoundError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHAMPION_FILE = "champion.json"
TITLES_FILE = "titles.parquet"
BATCH_FILE = "batch.parquet"
_ALIAS_SQL = "SELECT version FROM registered_model_aliases WHERE name = {p} AND alias = {p}"
_CHAMPIONS_SQL = (
    "SELECT a.name FROM registered_model_aliases a JOIN registered_models m ON a.name = m.name "
    "WHERE a.alias = 'champion' ORDER BY m.last_updated_time DESC"
)


@dataclass(frozen=True)
class Copy:
    """One champion version held locally.

    Attributes:
        name: the registered model.
        version: its version the copy holds.
        run_id: the training run behind it.
        model_type: ``ease``, ``ranker``...
        path: the folder of the downloaded pyfunc model.
    """

    name: str
    version: int
    run_id: str | None
    model_type: str | None
    path: Path


def serving_root() -> Path:
    """Where the local copies live: ``<RECSYS_HOME>/serving``."""
    return config.recsys_home() / "serving"


class Snapshot:
    """The local copy of the version that alias ``alias`` of registered model ``name``
    points at (the champion unless told otherwise)."""

    def __init__(self, name: str, root: Path | None = None, alias: str = CHAMPION) -> None:
        self.name = name
        self.alias = alias
        self.folder = (root or serving_root()) / config.safe_name(name)
        self.record = self.folder / (
            CHAMPION_FILE if alias == CHAMPION else f"{config.safe_name(alias)}.json"
        )

    def current(self) -> Copy | None:
        """The copy held now, or ``None`` before the first :meth:`refresh`."""
        try:
            info = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        path = self.folder / info["folder"]
        if not (path / "MLmodel").is_file():
            return None
        return Copy(
            self.name, int(info["version"]), info.get("run_id"), info.get("model_type"), path
        )

    def refresh(self) -> Copy:
        """Make the copy match the registry's alias (downloading a new version once).

        A version folder already on disk (another alias held it) is reused.

        Raises:
            recsys.errors.NotFoundError: the model has no version under the alias.
        """
        info = _alias_info(self.name, self.alias)
        if info is None:
            raise NotFoundError(
                f"registered model {self.name!r} has no {self.alias} yet; train one with "
                "`recsys train` or the recsys_training DAG"
            )
        held = self.current()
        if held is not None and held.version == info["version"]:
            return held
        folder = f"v{info['version']}"
        target = self.folder / folder
        if not (target / "MLmodel").is_file():
            self._download(info, target)
        record = {
            "version": info["version"],
            "run_id": info["run_id"],
            "model_type": info.get("model_type"),
            "folder": folder,
        }
        tmp = self.folder / f".{self.record.name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.record)
        log.info("local copy of %s@%s is now version %s", self.name, self.alias, info["version"])
        return self.current()

    def _download(self, info: dict[str, Any], target: Path) -> None:
        """Download a version's pyfunc into ``target`` through a private partial folder
        (two processes refreshing at once never share one)."""
        import mlflow.artifacts

        partial = self.folder / f".{target.name}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(info["model_uri"], dst_path=str(partial))
        _copy_titles(info["run_tags"].get("recsys.run_key"), partial)
        if (target / "MLmodel").is_file():  # another process finished the same version first
            shutil.rmtree(partial, ignore_errors=True)
            return
        shutil.rmtree(target, ignore_errors=True)  # a leftover without its MLmodel
        try:
            os.replace(partial, target)
        except OSError:  # another process put the same version there meanwhile
            shutil.rmtree(partial, ignore_errors=True)
            if not (target / "MLmodel").is_file():
                raise

    def served(self, copy: Copy | None = None) -> Any:
        """The copy as a :class:`~recsys.serving.served.ServedRecommender`."""
        from recsys.serving.served import ServedRecommender

        copy = copy or self.current()
        if copy is None:
            raise NotFoundError(f"no local copy of {self.name!r}; refresh it first")
        return ServedRecommender.from_artifacts(_artifact_paths(copy.path))

    def batch_lists(self, copy: Copy | None = None) -> Any | None:
        """The champion's batch top-K lists (``recommendations.parquet`` of the newest
        run folder whose lists this version wrote), copied beside it once; ``None``
        when no run wrote lists with this version (a manual promotion, say)."""
        import pandas as pd

        copy = copy or self.current()
        if copy is None:
            return None
        kept = copy.path / BATCH_FILE
        if not kept.is_file():
            source = _batch_file_of(self.name, copy.version)
            if source is None:
                return None
            shutil.copyfile(source, kept)
        return pd.read_parquet(kept)

    def cold_start(self, copy: Copy | None = None) -> Any:
        """The champion's cold-start chain alone (no model loaded)."""
        import pickle

        copy = copy or self.current()
        paths = _artifact_paths(copy.path)
        return pickle.loads(Path(paths["cold_start"]).read_bytes())

    def titles(self, copy: Copy | None = None) -> dict[Any, str]:
        """Item id → title of the champion's catalogue (empty when the data has none)."""
        import pandas as pd

        copy = copy or self.current()
        path = copy.path / TITLES_FILE if copy else None
        if path is None or not path.is_file():
            return {}
        frame = pd.read_parquet(path)
        return dict(zip(frame["item_id"], frame["title"], strict=True))


def current_copy(name: str, snapshot: Snapshot | None = None) -> tuple[Snapshot, Copy]:
    """The champion's local copy, refreshed first when the registry has moved on
    (or when the registry cannot be asked cheaply)."""
    snapshot = snapshot or Snapshot(name)
    held = snapshot.current()
    version = champion_version(name)
    if held is None or version is None or version != held.version:
        held = snapshot.refresh()
    return snapshot, held


def models_with_a_champion() -> list[str]:
    """Names of the registered models that have a champion, most recently updated first
    (read cheaply from the store where it can be, else through MLflow)."""
    uri = config.tracking_uri()
    try:
        if urlparse(uri).scheme == "sqlite":
            path = uri.removeprefix("sqlite:///")
            if not Path(path).is_file():
                return []
            import sqlite3

            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as db:
                rows = db.execute(_CHAMPIONS_SQL).fetchall()
            return [name for (name,) in rows]
    except Exception:  # noqa: BLE001 - fall back to MLflow's own client
        log.debug("cannot list champions cheaply", exc_info=True)
    from recsys.registry.views import list_registered_models

    models = sorted(list_registered_models(), key=lambda m: m["last_updated"] or 0, reverse=True)
    return [m["name"] for m in models if m["champion_version"] is not None]


def default_model() -> str:
    """The registered model a command serves when none is named: the deployment's
    (:func:`recsys.config.model_name`) if it has a champion, else the most recently
    updated model that has one (``recsys train other.csv`` trains ``recsys-other``)."""
    base = config.model_name()
    names = models_with_a_champion()
    return base if base in names or not names else names[0]


def champion_version(name: str, alias: str = CHAMPION) -> int | None:
    """The version ``alias`` of ``name`` points at, read cheaply from the store.

    Returns:
        The version; ``None`` when it cannot be told this way (no such alias,
        another kind of store, any error): the caller then asks MLflow.
    """
    told, version = read_alias(name, alias)
    return version if told else None


def read_alias(name: str, alias: str = CHAMPION) -> tuple[bool, int | None]:
    """Like :func:`champion_version`, telling "no such alias" from "cannot tell".

    Returns:
        ``(True, version)`` or ``(True, None)`` when the store was read (``None``:
        the alias is not set); ``(False, None)`` when it cannot be read cheaply
        (another kind of store, any error): the caller then asks MLflow.
    """
    uri = config.tracking_uri()
    try:
        scheme = urlparse(uri).scheme
        if scheme == "sqlite":
            return True, _sqlite_alias(uri, name, alias)
        if scheme.startswith("postgresql"):
            return True, _postgres_alias(uri, name, alias)
        if scheme in ("http", "https"):
            return _rest_alias(uri, name, alias)
    except Exception:  # noqa: BLE001 - any failure means "ask MLflow instead"
        log.debug("cannot read the alias of %s cheaply", name, exc_info=True)
    return False, None


def _alias_info(name: str, alias: str) -> dict[str, Any] | None:
    """What a refresh needs of the version under ``alias`` (through MLflow), or ``None``."""
    from recsys.registry.aliases import get_champion, version_by_alias
    from recsys.registry.runs import TAG_MODEL_TYPE, client, setup

    if alias == CHAMPION:
        return get_champion(name)
    setup()
    version = version_by_alias(name, alias)
    if version is None:
        return None
    run_tags = dict(client().get_run(version.run_id).data.tags) if version.run_id else {}
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "model_type": version.tags.get(TAG_MODEL_TYPE) or run_tags.get(TAG_MODEL_TYPE),
        "run_tags": run_tags,
        "model_uri": f"models:/{name}/{version.version}",
    }


def _sqlite_alias(uri: str, name: str, alias: str) -> int | None:
    import sqlite3

    path = uri.removeprefix("sqlite:///")
    if not Path(path).is_file():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as db:
        try:
            rows = db.execute(_ALIAS_SQL.format(p="?"), (name, alias)).fetchall()
        except sqlite3.OperationalError as exc:  # a store not migrated yet: no aliases
            if "no such table" in str(exc):
                return None
            raise
    return int(rows[0][0]) if len(rows) == 1 else None


def _postgres_alias(uri: str, name: str, alias: str) -> int | None:
    import psycopg2

    dsn = uri.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(dsn, connect_timeout=2) as db, db.cursor() as cursor:
        cursor.execute(_ALIAS_SQL.format(p="%s"), (name, alias))
        rows = cursor.fetchall()
    return int(rows[0][0]) if len(rows) == 1 else None


def _rest_alias(uri: str, name: str, alias: str) -> tuple[bool, int | None]:
    import requests

    answer = requests.get(
        f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias",
        params={"name": name, "alias": alias},
        timeout=2,
    )
    if answer.status_code == 404:
        return True, None
    if answer.status_code != 200:
        return False, None
    return True, int(answer.json()["model_version"]["version"])


def _artifact_paths(model_dir: Path) -> dict[str, str]:
    """The pyfunc artifacts of a downloaded model folder, as its ``MLmodel`` lists them."""
    import yaml

    spec = yaml.safe_load((model_dir / "MLmodel").read_text())
    artifacts = spec["flavors"]["python_function"]["artifacts"]
    return {key: str(model_dir / value["path"]) for key, value in artifacts.items()}


def _batch_file_of(name: str, version: int) -> Path | None:
    """The newest run's ``recommendations.parquet`` written by ``name`` version ``version``."""
    import pyarrow.parquet as pq

    found = []
    for path in config.runs_root().glob("*/recommendations.parquet"):
        summary = path.parent / "input.json"
        try:
            owner = json.loads(summary.read_text()).get("registered_model") or config.model_name()
            versions = pq.read_table(path, columns=["model_version"]).column(0).unique()
        except (OSError, ValueError, KeyError):
            continue
        if owner == name and [str(v) for v in versions.to_pylist()] == [str(version)]:
            found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _copy_titles(run_key: str | None, target: Path) -> None:
    """The item titles of the champion's training data, when its run folder has them."""
    if not run_key:
        return
    from recsys.constants import ITEM_COL, TITLE_COL
    from recsys.data.loaders import ITEMS_FILE

    items = config.runs_root() / config.safe_name(run_key) / "raw" / ITEMS_FILE
    if not items.is_file():
        return
    import pandas as pd

    frame = pd.read_parquet(items)
    if TITLE_COL in frame.columns:
        frame[[ITEM_COL, TITLE_COL]].rename(columns={TITLE_COL: "title"}).to_parquet(
            target / TITLES_FILE
        )
