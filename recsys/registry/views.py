"""Read-only views of MLflow for the operator's page: runs, versions and their files.

Nothing here writes to MLflow or creates anything that is missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from recsys import config
from recsys.registry.runs import client, original_metric_names


def list_training_runs(max_results: int = 200) -> list[dict[str, Any]]:
    """Runs of the training experiment, newest first, as plain dicts.

    Args:
        max_results: the most runs returned.

    Returns:
        One dict per run (see :func:`get_run_summary`); an empty list when the
        experiment does not exist yet. Nothing is created.
    """
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(config.experiment_name())
    if experiment is None:
        return []
    runs = mlflow_client.search_runs(
        [experiment.experiment_id], max_results=max_results, order_by=["attributes.start_time DESC"]
    )
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
        run = client().get_run(run_id)
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
        "metrics": original_metric_names(run),
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
        found = client().get_model_version(name, str(version))
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
    """Paths of the files directly inside artifact ``folder`` of a run.

    Empty when the folder is missing, and when MLflow does not know ``run_id``.
    """
    from mlflow.exceptions import MlflowException

    try:
        return [f.path for f in client().list_artifacts(run_id, folder) if not f.is_dir]
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return []
        raise


def read_run_artifact(run_id: str, path: str) -> bytes:
    """The bytes of one artifact file of a run."""
    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as tmp:
        local = client().download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


#: Run tag naming the registered model a training run was logged for.
TAG_REGISTERED_MODEL = "recsys.registered_model"
#: Run tag of tuning studies and their trials (not training runs).
TAG_TUNING = "recsys.tuning"


def list_registered_models(max_results: int = 200) -> list[dict[str, Any]]:
    """Every registered model, sorted by name, as plain dicts.

    Returns:
        ``[{"name", "aliases" (alias → version), "champion_version" (int or
        ``None``), "challenger_version", "last_updated" (epoch ms or ``None``)}]``;
        empty when the registry holds no model. Nothing is created.
    """
    models = client().search_registered_models(max_results=max_results)
    out = []
    for model in models:
        aliases = {alias: int(v) for alias, v in (getattr(model, "aliases", None) or {}).items()}
        out.append(
            {
                "name": model.name,
                "aliases": aliases,
                "champion_version": aliases.get("champion"),
                "challenger_version": aliases.get("challenger"),
                "last_updated": model.last_updated_timestamp,
            }
        )
    return sorted(out, key=lambda m: m["name"])


def registered_model_of(run: dict[str, Any], default: str | None = None) -> str:
    """The registered model a training run belongs to: its ``recsys.registered_model``
    tag, else ``default`` (runs logged before the tag existed), else
    :func:`recsys.config.model_name`."""
    return run["tags"].get(TAG_REGISTERED_MODEL) or default or config.model_name()


def list_model_runs(name: str, max_results: int = 500) -> list[dict[str, Any]]:
    """Training runs of registered model ``name``, newest first (see :func:`get_run_summary`).

    A run belongs to ``name`` when its ``recsys.registered_model`` tag says so,
    or when it has no such tag and ``name`` is :func:`recsys.config.model_name`.
    Tuning studies and their trials are left out. ``max_results`` bounds the
    runs read from the experiment before they are filtered.
    """
    return [
        run
        for run in list_training_runs(max_results)
        if TAG_TUNING not in run["tags"] and registered_model_of(run) == name
    ]


def read_run_json(run_id: str, path: str) -> Any | None:
    """A JSON artifact of a run, or ``None`` when the run or file is missing or unreadable."""
    import json

    from mlflow.exceptions import MlflowException

    try:
        return json.loads(read_run_artifact(run_id, path))
    except (MlflowException, OSError, ValueError):
        return None
