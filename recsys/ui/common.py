"""Small pieces every part of the page shares: its error, links into MLflow, times, numbers."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from recsys import config
from recsys.errors import InputError

#: Where the MLflow UI is reached from the operator's browser.
DEFAULT_MLFLOW_UI_URL = "http://localhost:5000"
#: Leaderboard entries that are identifiers, not metrics.
_ROW_KEYS = frozenset({"model", "run_id", "model_uri", "role", "version", "model_type"})


class PageError(InputError):
    """A request named a model, run, file or plot the page does not serve."""


def mlflow_ui_url() -> str:
    """Base address of the MLflow UI: ``MLFLOW_UI_URL`` or ``http://localhost:5000``."""
    return os.environ.get("MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL).rstrip("/")


def run_url(base: str, experiment_id: str | None, run_id: str) -> str:
    """Link to one run in the MLflow UI."""
    return f"{base}/#/experiments/{quote(str(experiment_id or '0'))}/runs/{quote(run_id)}"


def version_url(base: str, name: str, version: int | str) -> str:
    """Link to one registered model version in the MLflow UI."""
    return f"{base}/#/models/{quote(name, safe='')}/versions/{quote(str(version))}"


def format_time(epoch_ms: float | None) -> str | None:
    """``2026-11-27 22:31 UTC`` for an epoch in milliseconds; ``None`` stays ``None``."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: v for k, v in (metrics or {}).items() if k not in _ROW_KEYS and is_number(v)}


def score_of(row: Mapping[str, Any], metric: str | None) -> float:
    value = row["metrics"].get(metric) if metric else None
    return value if is_number(value) and math.isfinite(value) else -math.inf


def pseudonym_key() -> bytes | None:
    """The deployment's pseudonym key (:func:`recsys.config.pseudonym_key`)."""
    return config.pseudonym_key()
