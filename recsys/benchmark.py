"""Offline benchmark: several models, one split, one table of metrics.

The same fit/evaluate functions as the pipeline, without MLflow or Airflow, so
figures from ``recsys benchmark`` and from a DAG run are comparable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from recsys.constants import ITEM_COL, USER_COL

log = logging.getLogger(__name__)

#: Options each protocol is run with; ``msr`` is Microsoft Recommenders' protocol.
PROTOCOL_OPTIONS: dict[str, dict[str, Any]] = {
    "msr": {},
    "temporal": {"ratio": 0.8},
    "loo": {"n": 1},
}


def run_benchmark(data_path: str, *, protocol: str = "msr", models: list[str],
                  k: int = 10, data_format: str | None = None,
                  columns: dict[str, str] | None = None,
                  model_params: dict[str, dict] | None = None,
                  cold_users: bool = True) -> dict:
    """Train and evaluate ``models`` on one split of the data at ``data_path``.

    Returns:
        ``{"protocol", "dataset": {...}, "results": {model: {metric: value}}}``
        with ``ndcg@k``, ``precision@k``, ``recall@k``, ``map@k``, ``mrr@k``,
        ``hit_rate@k``, ``coverage``, ``train_seconds`` and ``score_seconds``
        (recommending for every test user) per model; with ``cold_users``, a
        ``"cold_users"`` section from :func:`recsys.coldstart.evaluate_cold_users`
        (global popularity vs the fallback chain vs each model on test users
        trimmed to at most 3 training interactions).
    """
    from recsys.ids import IdMap
    from recsys.models.base import FitContext
    from recsys.pipeline import TrainingData, fit_and_evaluate, load_input
    from recsys.splits import describe_split, split_interactions

    if protocol not in PROTOCOL_OPTIONS:
        raise ValueError(f"unknown protocol '{protocol}'; choose one of "
                         f"{', '.join(PROTOCOL_OPTIONS)}")
    dataset = load_input(data_path, data_format, columns)
    inter = dataset.interactions
    options = PROTOCOL_OPTIONS[protocol]
    train, test = split_interactions(inter, protocol, **options)
    extra = dataset.items[ITEM_COL] if dataset.items is not None else None
    id_map = IdMap.from_frame(train, extra_items=extra)
    context = FitContext(sequences=id_map.sequences(train),
                         extra={"items": dataset.items, "users": dataset.users,
                                "item_ids": id_map.items})
    split = describe_split(train, test, protocol, options)
    data = TrainingData(train, test, id_map, id_map.to_matrix(train), context, split)
    results = {}
    for name in models:
        start = time.perf_counter()
        _, metrics, seconds = fit_and_evaluate(
            name, data, params=(model_params or {}).get(name), k=k)
        total = time.perf_counter() - start
        results[name] = {**metrics, "train_seconds": round(seconds, 3),
                         "score_seconds": round(total - seconds, 3)}
        log.info("%s: %s", name, results[name])
    report = {
        "protocol": protocol,
        "k": k,
        "dataset": {"name": dataset.name, "path": str(data_path), "rows": int(len(inter)),
                    "users": int(inter[USER_COL].nunique()),
                    "items": int(inter[ITEM_COL].nunique()),
                    "train_rows": int(len(train)), "test_rows": int(len(test))},
        "results": results,
    }
    if cold_users:
        from recsys.coldstart import evaluate_cold_users

        report["cold_users"] = evaluate_cold_users(
            train, test, dataset.items, dataset.users, models=tuple(models),
            model_params=model_params, k=k)
    return report


def format_table(report: dict, k: int = 10) -> str:
    """The benchmark report as a Markdown table."""
    cols = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", "coverage",
            "train_seconds", "score_seconds"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in report["results"].items():
        cells = [f"{row.get(c, float('nan')):.4f}" if not c.endswith("_seconds")
                 else f"{row.get(c, float('nan')):.2f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "cold_users" in report:
        cold = report["cold_users"]
        lines += ["", f"cold users ({cold['n_users']} test users, at most "
                      f"{cold['max_history']} training interactions):",
                  f"| model | ndcg@{k} | recall@{k} |", "|---|---|---|"]
        lines += [f"| {name} | {row[f'ndcg@{k}']:.4f} | {row[f'recall@{k}']:.4f} |"
                  for name, row in cold["results"].items()]
    return "\n".join(lines)
