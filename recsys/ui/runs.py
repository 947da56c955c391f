"""One registered model's pipeline runs: the latest run's leaderboard and the metric history.

Every figure the leaderboard compares is on one basis: every test user,
scored exactly as served (candidates' ``served`` figures in
``models/<name>/result.json`` or their leaderboard entry, and the champion's
scores in ``evaluation.json``). The warm-user figures the pipeline ranks
candidates on (and logs to MLflow) are kept apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recsys import config, registry
from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder
from recsys.registry import views
from recsys.ui import words
from recsys.ui.common import format_time, is_number, numbers, run_url, score_of

log = logging.getLogger(__name__)

#: Artifact folder of the plots a training run logs.
PLOTS_FOLDER = "plots"
#: Plots not shown: every metric of a run on one linear axis (counts beside scores),
#: which runs logged before 2026-12-07 carry; the page's own metric-by-model chart
#: replaces it.
HIDDEN_PLOTS = frozenset({"metrics.png"})
#: Top-level field of ``evaluation.json`` / ``decision.json`` naming the registered model.
FOLDER_MODEL_FIELD = "registered_model"
#: Field of ``evaluation.json`` holding a re-ranking trade-off (the benchmark's shape).
RERANK_FIELD = "rerank"


def group_runs(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """MLflow runs grouped by pipeline run (tag ``recsys.run_key``), newest first.

    Runs without the tag were not logged by the pipeline and are not listed.

    Returns:
        ``[{"run_key", "start_time" (earliest of the group, epoch ms), "runs"}]``.
    """
    groups: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = run["tags"].get("recsys.run_key")
        if not key:
            log.debug("run %s has no recsys.run_key tag; not a pipeline run", run["run_id"])
            continue
        group = groups.setdefault(key, {"run_key": key, "start_time": None, "runs": []})
        group["runs"].append(run)
        start = run.get("start_time")
        if start is not None and (group["start_time"] is None or start < group["start_time"]):
            group["start_time"] = start
    return sorted(groups.values(), key=lambda g: g["start_time"] or 0, reverse=True)


def folder_model(folder: RunFolder) -> str | None:
    """The registered model a run folder's evaluation or decision was made for.

    ``registered_model`` in ``evaluation.json`` (else ``decision.json``); a
    folder whose records predate that field belongs to
    :func:`recsys.config.model_name`; ``None`` when it holds neither record.
    """
    for name in (rf.EVALUATION, rf.DECISION):
        record = folder.read_json_or_none(name)
        if isinstance(record, dict):
            return str(record.get(FOLDER_MODEL_FIELD) or config.model_name())
    return None


def model_of(run: Mapping[str, Any]) -> str:
    return run["tags"].get(registry.TAG_MODEL_TYPE) or run["run_name"] or run["run_id"]


def primary_metric(
    evaluation: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    runs: Iterable[Mapping[str, Any]] = (),
) -> str | None:
    """The metric promotion compares: from the evaluation, the champion's decision,
    else the first ``ndcg@K`` any run logged; ``None`` when nothing names one."""
    if evaluation and evaluation.get("primary"):
        return str(evaluation["primary"])
    decision = (champion or {}).get("decision") or {}
    if decision.get("metric"):
        return decision["metric"]
    names = sorted({m for run in runs for m in run.get("metrics", {}) if m.startswith("ndcg@")})
    return names[0] if names else None


def leaderboard_rows(
    evaluation: Mapping[str, Any] | None,
    folder: RunFolder,
    group: Mapping[str, Any],
    base_url: str,
) -> dict[str, list[dict[str, Any]]]:
    """One pipeline run's candidates and the champion, on one basis, and the warm figures apart.

    ``served`` rows hold every candidate's figures on every test user as
    served (its ``served`` result) and the champion's scores on the same
    users; a candidate whose result has no ``served`` figures keeps its
    warm-user ones and says so (``basis`` ``"warm"``). ``warm`` rows hold the
    candidates' warm-user figures, which the champion has no counterpart of.
    Without ``evaluation.json`` the candidates' MLflow metrics (warm) are used.

    Returns:
        ``{"served": [...], "warm": [...]}``; each row ``{"label", "model",
        "model_type", "role" ("candidate" | "champion"), "run_id", "run_url",
        "basis", "metrics"}``.
    """
    experiments = {run["run_id"]: run["experiment_id"] for run in group["runs"]}
    if not (evaluation and evaluation.get("leaderboard")):
        rows = [
            _row(
                model_of(r),
                "candidate",
                r["run_id"],
                base_url,
                r["experiment_id"],
                numbers(r["metrics"]),
                "warm",
            )
            for r in group["runs"]
        ]
        return {"served": rows, "warm": []}
    served, warm = [], []
    for entry in evaluation["leaderboard"]:
        model = str(entry.get("model", "?"))
        run_id = entry.get("run_id")
        warm_metrics = numbers(
            entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else entry
        )
        figures = _served_figures(entry, folder, model)
        timings = {k: v for k, v in warm_metrics.items() if k.endswith("_seconds")}
        if figures is None:
            row = _row(
                model, "candidate", run_id, base_url, experiments.get(run_id), warm_metrics, "warm"
            )
        else:
            users = _parquet_rows(folder.model_dir(model) / rf.PER_USER)
            metrics = {**figures, **timings, **({"users": users} if users else {})}
            row = _row(
                model, "candidate", run_id, base_url, experiments.get(run_id), metrics, "served"
            )
        served.append(row)
        warm.append(
            _row(
                model, "candidate", run_id, base_url, experiments.get(run_id), warm_metrics, "warm"
            )
        )
    champion = evaluation.get("champion")
    if isinstance(champion, Mapping):
        served.append(_champion_row(champion, folder, base_url))
    return {"served": served, "warm": warm}


def _served_figures(entry: Mapping[str, Any], folder: RunFolder, model: str) -> dict | None:
    """A candidate's served figures: in its leaderboard entry, else in its ``result.json``."""
    if isinstance(entry.get("served"), Mapping):
        return numbers(entry["served"])
    try:
        served = folder.model_result(model).get("served")
    except (OSError, ValueError):
        return None
    return numbers(served) if isinstance(served, Mapping) else None


def _row(
    model: str,
    role: str,
    run_id: str | None,
    base_url: str,
    experiment_id: str | None,
    metrics: dict[str, float],
    basis: str,
) -> dict[str, Any]:
    return {
        "label": model,
        "model": model,
        "model_type": model,
        "role": role,
        "run_id": run_id,
        "run_url": run_url(base_url, experiment_id, run_id) if run_id else None,
        "basis": basis,
        "metrics": metrics,
    }


def _champion_row(champion: Mapping[str, Any], folder: RunFolder, base_url: str) -> dict:
    version = champion.get("version")
    model_type = champion.get("model_type") or "champion"
    run_id = champion.get("run_id")
    run = views.get_run_summary(run_id) if run_id else None
    users = _parquet_rows(folder.file(rf.CHAMPION_PER_USER))
    metrics = {**numbers(champion.get("metrics")), **({"users": users} if users else {})}
    row = _row(
        str(model_type),
        "champion",
        run_id,
        base_url,
        run and run["experiment_id"],
        metrics,
        "served",
    )
    row["label"] = f"champion v{version} ({model_type})" if version is not None else "champion"
    row["version"] = version
    return row


def _parquet_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (one per test user scored), ``None`` if unreadable."""
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError, ImportError):
        return None


def judged_note(rows: list[dict[str, Any]], decision: Mapping[str, Any] | None) -> None:
    """Mark the candidate the run's decision was about with its version and verdict (in place)."""
    if not decision:
        return
    judged = ((decision.get("evidence") or {}).get("candidate") or {}).get("run_id")
    version = decision.get("candidate_version")
    verdict = "promoted" if decision.get("promote") else "held"
    for row in rows:
        if row["role"] == "candidate" and judged and row["run_id"] == judged:
            row["note"] = f"judged as v{version}: {verdict}"


def build_latest(
    groups: list[dict[str, Any]],
    champion: Mapping[str, Any] | None,
    root: Path,
    base_url: str,
) -> dict[str, Any] | None:
    """The newest pipeline run of the model: leaderboard, columns, decision, plots, trade-off.

    Returns:
        ``None`` when no pipeline run was logged; else ``run_key``,
        ``started_at``, ``primary``, ``rows`` (served basis, best first),
        ``warm_rows``, ``columns`` and ``warm_columns`` (reading order),
        ``decision`` (:func:`recsys.ui.words.describe_decision` of
        ``decision.json``), ``rerank`` (a trade-off, or ``None``) and
        ``plots`` (``[{"model", "run_id", "path"}]`` logged under ``plots/``).
    """
    if not groups:
        return None
    group = groups[0]
    folder = RunFolder(group["run_key"], root)
    evaluation = folder.read_json_or_none(rf.EVALUATION)
    evaluation = evaluation if isinstance(evaluation, dict) else None
    board = leaderboard_rows(evaluation, folder, group, base_url)
    primary = primary_metric(evaluation, champion, group["runs"])
    rows = sorted(board["served"], key=lambda r: score_of(r, primary), reverse=True)
    warm = sorted(board["warm"], key=lambda r: score_of(r, primary), reverse=True)
    record = folder.read_json_or_none(rf.DECISION)
    record = record if isinstance(record, dict) else None
    judged_note(rows, record)
    return {
        "run_key": group["run_key"],
        "started_at": format_time(group["start_time"]),
        "primary": primary,
        "rows": rows,
        "warm_rows": warm,
        "columns": words.order_columns({m for r in rows for m in r["metrics"]}, primary),
        "warm_columns": words.order_columns({m for r in warm for m in r["metrics"]}, primary),
        "mixed_basis": any(r["basis"] != "served" for r in rows),
        "decision": words.describe_decision(record),
        "rerank": (evaluation or {}).get(RERANK_FIELD),
        "plots": list_plots(group["runs"]),
    }


def list_plots(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The PNG plots each run logged under ``plots/`` (but :data:`HIDDEN_PLOTS`), by model."""
    plots = []
    for run in runs:
        model = model_of(run)
        for path in views.list_run_artifacts(run["run_id"], PLOTS_FOLDER):
            if path.lower().endswith(".png") and Path(path).name not in HIDDEN_PLOTS:
                plots.append({"model": model, "run_id": run["run_id"], "path": path})
    return sorted(plots, key=lambda p: (p["model"], p["path"]))


def metric_history(
    groups: Iterable[Mapping[str, Any]], primary: str | None, root: Path
) -> list[dict[str, Any]]:
    """``primary`` of every model in every pipeline run of the model, oldest run first.

    Figures come from each run folder on the served basis (every test user);
    where a folder or a served figure is missing, MLflow's logged figure (warm
    users) stands in and ``basis`` says so.

    Returns:
        ``[{"run_key", "started_at", "scores": {model: value}, "basis":
        {model: "served" | "warm"}, "champion" (the champion of the day on
        that run's users, or ``None``), "best_model", "best_score"}]``; runs
        with no figure for ``primary`` are left out.
    """
    history = []
    for group in reversed(list(groups)):
        folder = RunFolder(group["run_key"], root)
        scores, basis = {}, {}
        for run in group["runs"]:
            model = model_of(run)
            value = _served_value(folder, model, primary)
            if value is not None:
                scores[model], basis[model] = value, "served"
            elif primary in run["metrics"]:
                scores[model], basis[model] = run["metrics"][primary], "warm"
        if not scores:
            continue
        best = max(scores, key=scores.__getitem__)
        evaluation = folder.read_json_or_none(rf.EVALUATION) or {}
        champion = (evaluation.get("champion") or {}) if isinstance(evaluation, dict) else {}
        history.append(
            {
                "run_key": group["run_key"],
                "started_at": format_time(group["start_time"]),
                "scores": scores,
                "basis": basis,
                "champion": (champion.get("metrics") or {}).get(primary),
                "best_model": best,
                "best_score": scores[best],
            }
        )
    return history


def _served_value(folder: RunFolder, model: str, primary: str | None) -> float | None:
    try:
        served = folder.model_result(model).get("served") or {}
    except (OSError, ValueError):
        return None
    value = served.get(primary) if primary else None
    return value if is_number(value) else None
