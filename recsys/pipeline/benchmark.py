"""Offline benchmark: several models, one split, one table of metrics.

The same fit/evaluate functions as the pipeline, without MLflow or Airflow, so
figures from ``recsys benchmark`` and from a DAG run are comparable.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recsys.constants import ITEM_COL, USER_COL
from recsys.data.features import build_feature_tables
from recsys.data.loaders import load_input
from recsys.data.splits import describe_split, protocol_for, split_interactions
from recsys.errors import InputError
from recsys.evaluation.beyond import build_catalogue, evaluate_detailed
from recsys.evaluation.cold_users import evaluate_cold_users
from recsys.ids import long_frame
from recsys.models import make_model, model_class, training_order
from recsys.models.ranker import fused_params
from recsys.serving.rerank import rerank
from recsys.training.data import build_training_data
from recsys.training.fit import beyond_figures, fit_and_evaluate, served_evaluation

log = logging.getLogger(__name__)

#: Options each protocol is run with; ``msr`` is Microsoft Recommenders' protocol.
PROTOCOL_OPTIONS: dict[str, dict[str, Any]] = {
    "msr": {},
    "temporal": {"ratio": 0.8},
    "loo": {"n": 1},
}


def run_benchmark(
    data_path: str,
    *,
    protocol: str = "msr",
    models: list[str],
    k: int = 10,
    data_format: str | None = None,
    columns: dict[str, str] | None = None,
    model_params: dict[str, dict] | None = None,
    cold_users: bool = True,
    rerank: dict | None = None,
) -> dict:
    """Train and evaluate ``models`` on one split of the data at ``data_path``.

    Returns:
        ``{"protocol", "dataset": {...}, "results": {model: {metric: value}}}``
        with ``ndcg@k``, ``precision@k``, ``recall@k``, ``map@k``, ``mrr@k``,
        ``hit_rate@k``, ``coverage``, ``train_seconds`` and ``score_seconds``
        (recommending for every test user) per model; with ``cold_users``, a
        ``"cold_users"`` section from :func:`recsys.evaluation.cold_users.evaluate_cold_users`
        (global popularity vs the fallback chain vs each model on test users
        trimmed to at most 3 training interactions). Each model's results also
        hold the beyond-accuracy and slice figures of :mod:`recsys.evaluation.beyond`
        (``catalogue_coverage``, ``novelty``, ``diversity``, ``avg_popularity``,
        ``gini``, ``long_tail_share``, ``slice.*``, ``gap.*``, ``fairness_gap.*``).
        With ``rerank`` (``{"model", "method", "lams", "pool"}``), a
        ``"rerank"`` section from :func:`rerank_tradeoff`.
    """
    if protocol not in PROTOCOL_OPTIONS:
        raise InputError(
            f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOL_OPTIONS)}"
        )
    dataset = load_input(data_path, data_format, columns)
    inter = dataset.interactions
    options = PROTOCOL_OPTIONS[protocol]
    used, note = protocol_for(inter, protocol)
    if note:
        log.warning("%s", note)
        protocol, options = used, {}
    train, test = split_interactions(inter, protocol, **options)
    # The same feature tables a DAG run builds, so models that read profiles
    # or item features see the same inputs here as in production.
    tables = build_feature_tables(train, dataset.items, dataset.users)
    data = build_training_data(
        train, test, dataset, describe_split(train, test, protocol, options), features=tables
    )
    results = {}
    fitted: dict[str, Any] = {}
    for name in training_order(models):
        params = (model_params or {}).get(name)
        if name == "ranker":
            params = fused_params(models, protocol=protocol, params=params)
            data.context.fitted = {n: (lambda m=m: m) for n, m in fitted.items()}
        start = time.perf_counter()
        model, metrics, seconds = fit_and_evaluate(name, data, params=params, k=k)
        fitted[name] = model
        total = time.perf_counter() - start
        results[name] = {
            **metrics,
            **beyond_figures(served_evaluation(model, data, k=k).metrics),
            "train_seconds": round(seconds, 3),
            "score_seconds": round(total - seconds, 3),
        }
        log.info("%s: %s", name, results[name])
    report = {
        "protocol": protocol,
        "k": k,
        "model_params": model_params or {},
        "dataset": {
            "name": dataset.name,
            "path": str(data_path),
            "rows": int(len(inter)),
            "users": int(inter[USER_COL].nunique()),
            "items": int(inter[ITEM_COL].nunique()),
            "train_rows": int(len(train)),
            "test_rows": int(len(test)),
        },
        "results": {name: results[name] for name in models},
    }
    if rerank:
        report["rerank"] = rerank_tradeoff(
            data, k=k, params=(model_params or {}).get(rerank.get("model", "ease")), **rerank
        )
    if cold_users:
        report["cold_users"] = evaluate_cold_users(
            train,
            test,
            dataset.items,
            dataset.users,
            models=tuple(models),
            model_params=model_params,
            k=k,
        )
    return report


#: Knob values of the re-ranking trade-off when none are given, per method
#: (each method's knob bites over a different range).
DEFAULT_LAMS = {
    "discount": (0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.8),
    "popularity": (0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8),
    "mmr": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8),
}


def seeded_params(models: Iterable[str], seed: int | None) -> dict[str, dict] | None:
    """``random_state=seed`` for each of ``models`` that takes one (``None``: no seed given).

    The ranker hands its seed on to its generators (so they are the models the
    run fitted beside it, which it then takes instead of fitting them again).
    """
    if seed is None:
        return None
    from recsys.models import MODELS

    def seeded(names: Iterable[str]) -> dict[str, dict]:
        return {
            name: {"random_state": int(seed)}
            for name in names
            if "random_state" in inspect.signature(model_class(name)).parameters
        }

    params = seeded(models)
    if "ranker" in params:
        params["ranker"]["generator_params"] = seeded(n for n in MODELS if n != "ranker")
    return params


def rerank_tradeoff(
    data: Any,
    *,
    k: int = 10,
    model: str = "ease",
    method: str = "discount",
    lams: tuple[float, ...] | None = None,
    pool: int = 100,
    params: dict | None = None,
) -> dict:
    """NDCG@k against popularity and diversity as the re-ranking knob turns.

    One ``model`` is fitted on ``data.X``; each test user with training
    history gets its top-``pool`` list, re-ranked to ``k`` by
    :func:`recsys.serving.rerank.rerank` at each ``lam``; every setting is scored by
    :func:`recsys.evaluation.beyond.evaluate_detailed` on those users.

    Returns:
        ``{"model", "method", "pool", "points": [{"lam", "ndcg@k",
        "avg_popularity", "diversity", "novelty", "catalogue_coverage",
        "ndcg_change", "popularity_change"}, ...]}``; the two ``*_change``
        figures are relative to ``lam = 0`` (the model's own order).
    """
    lams = DEFAULT_LAMS.get(method, (0.0,)) if lams is None else lams
    fitted = make_model(model, **(params or {})).fit(data.X, data.context)
    catalogue = build_catalogue(data.train, data.context.items)
    rows = np.unique(data.id_map.user_index(data.test[USER_COL].unique()))
    rows = rows[(rows >= 0) & (np.diff(data.X.indptr)[rows.clip(min=0)] > 0)]
    test = data.test[data.test[USER_COL].isin(data.id_map.users[rows])]
    items, scores = fitted.recommend(rows, data.X, pool)
    points = []
    for lam in lams:
        picked = rerank(
            items,
            scores,
            k,
            method=method,
            lam=lam,
            popularity=catalogue.popularity,
            features=catalogue.features,
        )
        recs = long_frame(data.id_map.users[rows], picked, None, catalogue.items)
        m = evaluate_detailed(recs, test, data.train, k=k, catalogue=catalogue).metrics
        points.append(
            {
                "lam": float(lam),
                **{
                    key: m[key]
                    for key in (
                        f"ndcg@{k}",
                        "avg_popularity",
                        "diversity",
                        "novelty",
                        "catalogue_coverage",
                    )
                },
            }
        )
    base = points[0]
    for point in points:
        point["ndcg_change"] = point[f"ndcg@{k}"] / base[f"ndcg@{k}"] - 1
        point["popularity_change"] = point["avg_popularity"] / base["avg_popularity"] - 1
    return {"model": model, "method": method, "pool": pool, "points": points}


def format_rerank_table(report: dict, k: int = 10) -> str:
    """The re-ranking trade-off as a Markdown table."""
    section = report["rerank"]
    lines = [
        f"re-ranking {section['model']} ({section['method']}, pool {section['pool']}):",
        f"| lam | ndcg@{k} | ndcg change | avg popularity | popularity change "
        "| diversity | novelty | coverage |",
        "|---" * 8 + "|",
    ]
    lines += [
        f"| {p['lam']:.2f} | {p[f'ndcg@{k}']:.4f} | {p['ndcg_change']:+.1%} | "
        f"{p['avg_popularity']:.1f} | {p['popularity_change']:+.1%} | "
        f"{p['diversity']:.4f} | {p['novelty']:.3f} | {p['catalogue_coverage']:.4f} |"
        for p in section["points"]
    ]
    return "\n".join(lines)


def plot_rerank_tradeoff(report: dict, path: str | Path, k: int = 10) -> Path:
    """NDCG@k against average popularity (and diversity), one point per knob value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["rerank"]["points"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("avg_popularity", "diversity"), strict=True):
        ax.plot([p[key] for p in points], [p[f"ndcg@{k}"] for p in points], "o-")
        for p in points:
            ax.annotate(f"{p['lam']:g}", (p[key], p[f"ndcg@{k}"]), fontsize=8)
        ax.set_xlabel(key.replace("_", " "))
        ax.set_ylabel(f"NDCG@{k}")
    fig.suptitle(
        f"re-ranking {report['rerank']['model']} ({report['rerank']['method']}): "
        "knob values annotated"
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: Beyond-accuracy columns of the benchmark table.
BEYOND_COLUMNS = ("novelty", "diversity", "avg_popularity", "gini", "long_tail_share")


def format_table(report: dict, k: int = 10) -> str:
    """The benchmark report as a Markdown table (accuracy, beyond accuracy, fairness gap)."""
    cols = [
        f"ndcg@{k}",
        f"precision@{k}",
        f"recall@{k}",
        f"map@{k}",
        "coverage",
        *BEYOND_COLUMNS,
        f"fairness_gap.ndcg@{k}",
        "train_seconds",
        "score_seconds",
    ]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in report["results"].items():
        cells = [_cell(row.get(c), c) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "cold_users" in report:
        cold = report["cold_users"]
        lines += [
            "",
            f"cold users ({cold['n_users']} test users, at most "
            f"{cold['max_history']} training interactions):",
            f"| model | ndcg@{k} | recall@{k} |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {row[f'ndcg@{k}']:.4f} | {row[f'recall@{k}']:.4f} |"
            for name, row in cold["results"].items()
        ]
    return "\n".join(lines)


def _cell(value: float | None, column: str) -> str:
    """One table cell: '-' for a missing figure, seconds and popularity with fewer digits."""
    if value is None:
        return "-"
    if column.endswith("_seconds"):
        return f"{value:.2f}"
    return f"{value:.1f}" if column == "avg_popularity" else f"{value:.4f}"
