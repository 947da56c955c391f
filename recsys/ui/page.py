"""The operator's page, as data: which model serves, what the last runs did, whether data held.

Everything the page shows is gathered for one registered model at a time,
from two sources and nothing else (the page keeps no state of its own):

- MLflow, through :mod:`recsys.registry`: the registered models, the versions
  behind the ``champion`` and ``challenger`` aliases with their decision
  records, and the training runs (grouped by their ``recsys.run_key`` tag);
  a run belongs to the registered model its ``recsys.registered_model`` tag
  names, or to :func:`recsys.config.model_name` when it has none;
- the run folders ``<RECSYS_HOME>/runs/<run_key>/`` written by the pipeline
  (:class:`recsys.pipeline.runfolder.RunFolder`): ``evaluation.json``,
  ``models/<name>/result.json``, ``decision.json`` and ``validation.json``;
- the monitoring records ``<RECSYS_HOME>/monitor/<model>/`` (drift and decay
  per batch, retraining decisions; :mod:`recsys.ui.monitoring`).

:func:`build_page` returns plain dicts (:mod:`recsys.ui.runs` gathers the
runs, :mod:`recsys.ui.datadocs` the validations); :mod:`recsys.ui.render`
turns them into HTML and :mod:`recsys.ui.app` serves them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recsys import config, registry
from recsys.pipeline.runfolder import RunFolder
from recsys.promotion.decision import TAG_PREFIX
from recsys.registry import views
from recsys.ui import words
from recsys.ui.common import (
    PageError,
    format_time,
    mlflow_ui_url,
    numbers,
    pseudonym_key,
    run_url,
    version_url,
)
from recsys.ui.datadocs import validation_runs
from recsys.ui.monitoring import monitoring_view
from recsys.ui.runs import build_latest, group_runs, metric_history, primary_metric

log = logging.getLogger(__name__)

#: How many MLflow runs are read at most (all registered models together).
HISTORY_MLFLOW_RUNS = 500


# --------------------------------------------------------------- small helpers
# ---------------------------------------------------------- registered models
def model_choices(selected: str) -> list[dict[str, Any]]:
    """Every registered model for the picker, plus the deployment's default name.

    Returns:
        ``[{"name", "champion_version", "challenger_version", "last_updated",
        "selected", "is_default"}]`` sorted by name.
    """
    default = config.model_name()
    found = {m["name"]: m for m in views.list_registered_models()}
    found.setdefault(
        default, {"name": default, "champion_version": None, "challenger_version": None}
    )
    return [
        {
            "name": name,
            "champion_version": m.get("champion_version"),
            "challenger_version": m.get("challenger_version"),
            "last_updated": format_time(m.get("last_updated")),
            "selected": name == selected,
            "is_default": name == default,
        }
        for name, m in sorted(found.items())
    ]


def resolve_model(requested: str | None, choices: Iterable[Mapping[str, Any]]) -> str:
    """The registered model to show: ``requested`` when it is one, else the default.

    Raises:
        PageError: ``requested`` names no registered model.
    """
    names = [c["name"] for c in choices]
    if requested in (None, ""):
        return config.model_name()
    if requested not in names:
        raise PageError(f"no registered model named {requested!r}")
    return requested


# ------------------------------------------------------- champion, challenger
def build_version(
    name: str, alias: str, base_url: str, root: Path | None = None
) -> dict[str, Any] | None:
    """The version behind ``alias`` of ``name``, or ``None`` when the alias is unset.

    Returns:
        ``alias``, ``version``, ``model_type``, ``run_id``, ``run_key``,
        ``registered_at``, ``decision`` (:func:`recsys.ui.words.describe_decision`
        of the last decision recorded on this version), ``metrics`` and
        ``basis`` (``"served"`` from its run folder, else ``"warm"`` from its
        MLflow run), ``run_url`` and ``version_url``.
    """
    found = registry.version_by_alias(name, alias)
    if found is None:
        return None
    version = int(found.version)
    run = views.get_run_summary(found.run_id) if found.run_id else None
    tags = dict(found.tags)
    model_type = (
        tags.get(registry.TAG_MODEL_TYPE)
        or (run and run["tags"].get(registry.TAG_MODEL_TYPE))
        or "unknown"
    )
    run_key = run["tags"].get("recsys.run_key") if run else None
    metrics, basis = _version_metrics(run, run_key, model_type, root)
    return {
        "alias": alias,
        "version": version,
        "model_type": model_type,
        "run_id": found.run_id,
        "run_key": run_key,
        "registered_at": format_time(found.creation_timestamp),
        "decision": words.describe_decision(version_decision(name, version, found.run_id, tags)),
        "metrics": metrics,
        "basis": basis,
        "run_url": run_url(base_url, run["experiment_id"], found.run_id) if run else None,
        "version_url": version_url(base_url, name, version),
    }


def version_decision(
    name: str, version: int, run_id: str | None, tags: Mapping[str, str]
) -> dict[str, Any]:
    """The last decision recorded on a version: the JSON record on its run, else its tags."""
    if run_id:
        record = views.read_run_json(run_id, registry.decision_artifact(name, version))
        if isinstance(record, dict):
            return record
    return words.decision_from_tags(tags, TAG_PREFIX)


def _version_metrics(
    run: Mapping[str, Any] | None, run_key: str | None, model_type: str, root: Path | None
) -> tuple[dict[str, float], str]:
    """Accuracy figures of a version's training: served basis from its run folder if kept."""
    if run_key:
        folder = RunFolder(run_key, root)
        try:
            served = folder.model_result(model_type).get("served")
        except (OSError, ValueError):
            served = None
        if isinstance(served, Mapping):
            return _accuracy(served), "served"
    return _accuracy(run["metrics"] if run else {}), "warm"


def _accuracy(metrics: Mapping[str, Any]) -> dict[str, float]:
    found = numbers(metrics)
    return {m: found[m] for m in words.order_columns(found) if words.column_rank(m)[0] <= 1}


# --------------------------------------------------------------- training runs
# ----------------------------------------------------------------- leaderboard
# --------------------------------------------------------------------- history
# ------------------------------------------------------------------ validation
# ------------------------------------------------------------------------ page
def build_page(
    *,
    root: Path | None = None,
    base_url: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows for one registered model, as plain data.

    Args:
        root: folder of the run folders; defaults to ``<RECSYS_HOME>/runs``.
        base_url: MLflow UI address for links; defaults to :func:`mlflow_ui_url`.
        name: registered model to show; defaults to :func:`recsys.config.model_name`.

    Returns:
        ``model_name``, ``models`` (:func:`model_choices`), ``mlflow_url``,
        ``pseudonymised``, ``champion`` and ``challenger``
        (:func:`build_version`), ``latest`` (:func:`build_latest`),
        ``primary``, ``history`` (:func:`metric_history`), ``validations``
        (:func:`validation_runs`) and ``monitoring``
        (:func:`recsys.ui.monitoring.monitoring_view`: drift, decay and
        retraining decisions per batch, or ``None``).

    Raises:
        PageError: ``name`` is no registered model (and not the default name).
    """
    root = root or config.runs_root()
    base_url = base_url or mlflow_ui_url()
    choices = model_choices(name or config.model_name())
    name = resolve_model(name, choices)
    champion = build_version(name, registry.CHAMPION, base_url, root)
    challenger = build_version(name, registry.CHALLENGER, base_url, root)
    groups = group_runs(views.list_model_runs(name, HISTORY_MLFLOW_RUNS))
    latest = build_latest(groups, champion, root, base_url)
    primary = latest["primary"] if latest else primary_metric(None, champion)
    return {
        "model_name": name,
        "models": choices,
        "mlflow_url": base_url,
        "pseudonymised": pseudonym_key() is not None,
        "champion": champion,
        "challenger": challenger,
        "latest": latest,
        "primary": primary,
        "history": metric_history(groups, primary, root),
        "validations": validation_runs(root, name, [g["run_key"] for g in groups]),
        "monitoring": monitoring_view(name),
    }
