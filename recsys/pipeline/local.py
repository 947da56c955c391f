"""The local runner: every step in order, in-process, the way ``recsys train`` runs them.

The Airflow DAG calls the same step functions, one per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recsys.models import DEFAULT_MODELS, training_order
from recsys.options import check_options
from recsys.pipeline.steps import (
    build_features,
    evaluate_candidates,
    prepare_data,
    promote,
    recommend_all,
    train_model,
    tune_model,
    validate_data,
)
from recsys.progress import step


@dataclass
class PipelineOptions:
    """Everything a run can be told; the DAG's params map onto these fields.

    Attributes:
        data_path: file or folder with interactions (format detected).
        data_format: name the format instead of detecting it.
        columns: generic-file column names: user_col, item_col, rating_col,
            time_col, sep.
        models: registry names to train.
        model_params: per-model hyper-parameters, ``{name: {param: value}}``.
        protocol: split protocol (see :func:`recsys.data.splits.split_interactions`).
        k: list length for evaluation and batch recommendations.
        margin: how much the primary metric must improve to replace the champion.
        dedupe: duplicate policy of the cleaning step.
        tuning_trials: Optuna trials per model (0 = keep the defaults).
        tuning_timeout_s: time budget of each model's study.
        gate: overrides of :class:`recsys.promotion.gate.GateConfig` fields.
        max_sequence_length: items kept of each user's interaction sequence.
        rerank_strength: popularity re-ranking of the batch recommendations
            (0 = off; see :func:`recsys.pipeline.steps.recommend_all`).
        model_name: the registered model to train into; ``None`` = the data's
            own (:func:`recsys.config.model_name_for`).
    """

    data_path: str
    data_format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = DEFAULT_MODELS
    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: str = "temporal"
    k: int = 10
    margin: float = 0.0
    dedupe: str = "last"
    tuning_trials: int = 0
    tuning_timeout_s: float | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    max_sequence_length: int = 50
    rerank_strength: float = 0.0
    model_name: str | None = None

    def __post_init__(self) -> None:
        """The fields the DAG's params share, checked by the same rules
        (:mod:`recsys.options`), so a bad value fails here, before any step."""
        checked = check_options(
            {
                "data_path": self.data_path,
                "data_format": self.data_format or "auto",
                "models": self.models,
                "protocol": self.protocol,
                "k": self.k,
                "margin": self.margin,
                "tuning_trials": self.tuning_trials,
                "max_sequence_length": self.max_sequence_length,
                "rerank_strength": self.rerank_strength,
                "model_name": self.model_name,
            }
        )
        self.models = checked["models"]


def run_pipeline(options: PipelineOptions, run_key: str, *, now: float | None = None) -> dict:
    """Every step in order, in-process: what ``recsys train`` runs.

    Returns:
        ``{"run_key", "validation", "split", "features", "leaderboard",
        "decision", "recommendations"}``: each step's own summary.
    """
    summary: dict[str, Any] = {"run_key": run_key}
    with step(f"validate {options.data_path}"):
        summary["validation"] = validate_data(
            run_key,
            options.data_path,
            data_format=options.data_format,
            columns=options.columns,
            now=now,
            model_name=options.model_name,
        )
    with step(f"prepare ({options.protocol} split)"):
        summary["split"] = prepare_data(run_key, protocol=options.protocol, dedupe=options.dedupe)
    with step("build_features"):
        summary["features"] = build_features(run_key, max_len=options.max_sequence_length)
    order = training_order(options.models)
    for i, name in enumerate(order, 1):
        with step(f"train {name} ({i}/{len(order)})"):
            tune_model(
                run_key,
                name,
                n_trials=options.tuning_trials,
                timeout_s=options.tuning_timeout_s,
                k=options.k,
            )
            train_model(
                run_key,
                name,
                params=options.model_params.get(name),
                k=options.k,
                models=list(options.models),
            )
    with step("evaluate candidates and the champion"):
        evaluation = evaluate_candidates(run_key, options.models, k=options.k)
    summary["leaderboard"] = evaluation["leaderboard"]
    with step("promote"):
        summary["decision"] = promote(run_key, evaluation, margin=options.margin, gate=options.gate)
    with step("recommend for every user"):
        summary["recommendations"] = recommend_all(
            run_key, k=options.k, rerank_strength=options.rerank_strength
        )
    return summary
