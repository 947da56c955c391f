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
    """Paths of the files directly inside artifact ``folder`` of a run (empty when none)."""
    return [f.path for f in client().list_artifacts(run_id, folder) if not f.is_dir]


def read_run_artifact(run_id: str, path: str) -> bytes:
    """The bytes of one artifact file of a run."""
    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as tmp:
        local = client().download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


def list_registered_models() -> list[dict[str, Any]]:
    """Every registered model, most recently updated first.

    Returns:
        ``[{"name", "champion" (version or None), "updated" (epoch ms)}]``;
        empty when the store has none. Nothing is created.
    """
    found = client().search_registered_models(max_results=1000)
    models = [
        {
            "name": m.name,
            "champion": int(m.aliases["champion"]) if "champion" in (m.aliases or {}) else None,
            "updated": m.last_updated_timestamp,
        }
        for m in found
    ]
    return sorted(models, key=lambda m: m["updated"] or 0, reverse=True)
