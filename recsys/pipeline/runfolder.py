"""The run folder: everything one pipeline run writes, and the one place that knows where.

Layout of ``<RECSYS_HOME>/runs/<run key>/``::

    input.json            what was read (path, rows, users, items)
    validation.json       the validation report
    data_docs/            Great Expectations Data Docs of the validation
    raw/                  the validated input, normalised (recsys format)
    train.parquet test.parquet split.json
    features/             feature tables of the training split (Parquet)
    features.json         each feature table's rows, columns and content hash
    cold_start.pkl        the cold-start chain every model of the run serves with
    models/<name>/        each model's result.json, per_user.parquet (per-user
                          metrics and groups), tuned.json and plots/
      recommender/        the fitted model (Recommender.save)
    evaluation.json       leaderboard: every candidate and the champion
    champion_per_user.parquet  the champion scored on this run's test users
    leaderboard.md leaderboard.png  the same leaderboard as a table and a chart
    decision.json decision.md       the promotion decision record
    recommendations.parquet related_items.parquet

Steps, the page and the CLI reach these files only through :class:`RunFolder`,
so the layout can change in one place. A rerun of the same run key overwrites
the same files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import config
from recsys.serialize import read_json, write_json

INPUT = "input.json"
VALIDATION = "validation.json"
DATA_DOCS = "data_docs"
RAW = "raw"
TRAIN = "train.parquet"
TEST = "test.parquet"
SPLIT = "split.json"
FEATURES = "features"
FEATURES_JSON = "features.json"
MODELS = "models"
#: Folder of a model's folder that holds the fitted model.
SAVED_MODEL = "recommender"
RESULT = "result.json"
PER_USER = "per_user.parquet"
TUNED = "tuned.json"
EVALUATION = "evaluation.json"
CHAMPION_PER_USER = "champion_per_user.parquet"
LEADERBOARD_TABLE = "leaderboard.md"
LEADERBOARD_CHART = "leaderboard.png"
DECISION = "decision.json"
DECISION_MD = "decision.md"
COLD_START = "cold_start.pkl"
RECOMMENDATIONS = "recommendations.parquet"
RELATED_ITEMS = "related_items.parquet"


class RunFolder:
    """One run's folder and the paths of what it holds.

    Args:
        run_key: the run's key (an Airflow run id, ``cli-...``); its folder
            name is :func:`recsys.config.safe_name` of it.
        root: the folder of all runs; default :func:`recsys.config.runs_root`.

    Nothing is created until :meth:`create` (readers such as the page never write).
    """

    def __init__(self, run_key: str, root: Path | None = None) -> None:
        self.run_key = run_key
        self.path = (root or config.runs_root()) / config.safe_name(run_key)

    def __repr__(self) -> str:
        return f"RunFolder({self.run_key!r}, path={str(self.path)!r})"

    def create(self) -> RunFolder:
        """Make the folder (and its parents) if missing; returns ``self``."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.path.is_dir()

    # ------------------------------------------------------------------ paths
    def file(self, name: str) -> Path:
        """The path of top-level output ``name`` (one of this module's constants)."""
        return self.path / name

    @property
    def raw(self) -> Path:
        return self.path / RAW

    @property
    def data_docs(self) -> Path:
        return self.path / DATA_DOCS

    @property
    def features_dir(self) -> Path:
        return self.path / FEATURES

    def model_dir(self, model: str) -> Path:
        """Where model ``model`` of this run keeps its result, plots and saved model."""
        return self.path / MODELS / model

    def saved_model_dir(self, model: str) -> Path:
        """The folder :meth:`recsys.models.base.Recommender.save` wrote model ``model`` to
        (its model folder itself in runs from before the model had a folder of its own)."""
        own = self.model_dir(model) / SAVED_MODEL
        return own if own.is_dir() else self.model_dir(model)

    # ------------------------------------------------------------ JSON records
    def write_json(self, name: str, payload: Any) -> Path:
        """Write record ``name`` (strict JSON, :func:`recsys.serialize.write_json`)."""
        return write_json(self.create().file(name), payload)

    def read_json(self, name: str) -> Any:
        """Record ``name``; ``FileNotFoundError`` when the step that writes it has not run."""
        return read_json(self.file(name))

    def read_json_or_none(self, name: str) -> Any | None:
        """Record ``name``, or ``None`` when it is missing or unreadable (for readers)."""
        try:
            return read_json(self.file(name))
        except (OSError, ValueError):
            return None

    def model_result(self, model: str) -> dict:
        """``models/<model>/result.json``, written by the model's training step."""
        return read_json(self.model_dir(model) / RESULT)

    def has_model_result(self, model: str) -> bool:
        return (self.model_dir(model) / RESULT).exists()

    def registered_model(self) -> str:
        """The registered model this run trains into (``input.json``, written by
        validation); :func:`recsys.config.model_name` for a run from before it was kept."""
        summary = self.read_json_or_none(INPUT) or {}
        return summary.get("registered_model") or config.model_name()

    # ------------------------------------------------------------------- data
    def dataset(self) -> Any:
        """The validated input as a :class:`recsys.data.Dataset` (pseudonyms when on)."""
        from recsys.data.loaders import load_dataset

        return load_dataset(self.raw, "recsys")

    def side_tables(self) -> Any:
        """The validated input's item and user tables, without reading its interactions
        (a :class:`recsys.data.SideTables`)."""
        from recsys.data.loaders import read_side_tables

        return read_side_tables(self.raw)

    def raw_interactions(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The validated input's interactions (``columns`` of them)."""
        from recsys.data.loaders import INTERACTIONS_FILE

        return pd.read_parquet(self.raw / INTERACTIONS_FILE, columns=columns)

    def train(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.file(TRAIN), columns=columns)

    def test(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.file(TEST), columns=columns)

    def split_info(self) -> dict:
        return self.read_json(SPLIT)

    def remove_features(self) -> None:
        """Drop the feature tables of an earlier attempt, so none is picked up by mistake."""
        self.file(FEATURES_JSON).unlink(missing_ok=True)
        shutil.rmtree(self.features_dir, ignore_errors=True)

    def feature_tables(self, names: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
        """The feature tables :func:`recsys.pipeline.build_features` wrote (all, or ``names``);
        empty before it ran."""
        summary = self.read_json_or_none(FEATURES_JSON)
        if summary is None:
            return {}
        return {
            name: pd.read_parquet(self.path / table["path"])
            for name, table in summary["tables"].items()
            if names is None or name in names
        }
