"""Hyper-parameter tuning on a validation split carved from the training data.

The test split is never an input here: :func:`tune_model` takes the training
interactions only, carves ``(fit, validation)`` out of them with
:func:`recsys.data.splits.validation_split` (same protocol as the run), fits each
trial on ``fit`` and scores it on ``validation``. Optuna's TPE sampler
(seeded) proposes the trials; a trial budget and a time budget both stop it.
Tracking the trials (one nested MLflow run each) is the caller's job, with
:func:`recsys.registry.log_tuning`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recsys.data import Dataset
from recsys.data.features import build_feature_tables
from recsys.data.splits import validation_split
from recsys.errors import InputError
from recsys.evaluation.holdout import evaluate_model
from recsys.models import make_model, model_class
from recsys.progress import Ticker
from recsys.training.data import build_training_data

log = logging.getLogger(__name__)

#: Split options of the validation carve, per protocol.
VALIDATION_OPTIONS: dict[str, dict[str, Any]] = {
    "temporal": {"ratio": 0.8},
    "loo": {"n": 1},
    "msr": {},
    "stratified": {"ratio": 0.8},
    "random": {},
}


class TuningInputError(InputError):
    """A tuning request that cannot run (bad budget, empty validation part...)."""


@dataclass
class TuningResult:
    """What a study found.

    Attributes:
        model: registry name.
        params: the best trial's hyper-parameters (``{}`` = the defaults, when
            no trial ran or the model has no search space).
        score: the best validation score (NaN when no trial ran).
        metric: the validation metric.
        trials: every finished trial: ``number``, ``params``, ``score``, ``seconds``.
    """

    model: str
    params: dict[str, Any] = field(default_factory=dict)
    score: float = float("nan")
    metric: str = "ndcg@10"
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (a NaN score, when no trial ran, becomes ``None``)."""
        score = self.score if self.score == self.score else None
        return {
            "model": self.model,
            "params": self.params,
            "score": score,
            "metric": self.metric,
            "trials": self.trials,
        }


def tune_model(
    name: str,
    train: pd.DataFrame,
    *,
    protocol: str = "temporal",
    n_trials: int = 0,
    timeout_s: float | None = None,
    k: int = 10,
    seed: int = 0,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
) -> TuningResult:
    """Search ``name``'s hyper-parameters on a validation carve of ``train``.

    Args:
        name: registry name of the model.
        train: the run's training interactions (never the test split).
        protocol: how to carve validation out of ``train``.
        n_trials: most trials; 0 returns the defaults at once.
        timeout_s: stop starting new trials after this many seconds.
        k: cut-off of the validation metric ``ndcg@k``.
        seed: seed of the sampler.
        items, users: side tables handed to models that use them.

    Raises:
        TuningInputError: negative budget, unknown protocol, or no validation
            user with training history.
    """
    if n_trials < 0 or (timeout_s is not None and timeout_s <= 0):
        raise TuningInputError(
            f"budgets must be positive: n_trials={n_trials}, timeout_s={timeout_s}"
        )
    if protocol not in VALIDATION_OPTIONS:
        raise TuningInputError(
            f"unknown protocol {protocol!r}; choose one of {sorted(VALIDATION_OPTIONS)}"
        )
    metric = f"ndcg@{k}"
    if n_trials == 0 or not model_class(name).search_space:
        return TuningResult(model=name, metric=metric)
    objective = _objective(name, train, protocol, k, items, users)
    return _run_study(name, objective, n_trials, timeout_s, seed, metric)


def _objective(
    name: str,
    train: pd.DataFrame,
    protocol: str,
    k: int,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
) -> Callable:
    """A function of a trial: fit on the fit part, return validation NDCG@k."""
    fit, validation = validation_split(train, protocol, **VALIDATION_OPTIONS[protocol])
    if validation.empty or not validation["user_id"].isin(fit["user_id"]).any():
        raise TuningInputError(
            f"the {protocol} validation carve of train has no user with history left to fit on"
        )
    # The same context a training run gives the model, built from the fit part
    # alone: feature tables, timestamps and side tables included.
    data = build_training_data(
        fit,
        validation,
        Dataset(fit, items, users),
        {},
        features=build_feature_tables(fit, items, users),
    )

    space = model_class(name).search_space

    def objective(trial: Any) -> float:
        model = make_model(name, **suggest(trial, space)).fit(data.X, data.context)
        return evaluate_model(model, data.X, validation, data.id_map, k=k)[f"ndcg@{k}"]

    return objective


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """One trial's hyper-parameters from a model's declared search space.

    Each entry of ``space`` (:attr:`recsys.models.base.Recommender.search_space`)
    is ``("int", low, high, log)``, ``("float", low, high, log)``,
    ``("choice", values)``, or a plain value used as is.
    """
    params = {}
    for name, spec in space.items():
        kind = spec[0] if isinstance(spec, tuple) and spec else None
        if kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        elif kind == "float":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            params[name] = spec
    return params


def _run_study(
    name: str, objective: Callable, n_trials: int, timeout_s: float | None, seed: int, metric: str
) -> TuningResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    trials_done = Ticker(f"tuning {name}: trials", n_trials)
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout_s,
        callbacks=[lambda study, trial: trials_done.tick()],
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trials = [
        {
            "number": t.number,
            "params": dict(t.params),
            "score": float(t.value),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds(),
        }
        for t in done
    ]
    log.info("tuned %s: %d trials, best %s=%.4f", name, len(done), metric, study.best_value)
    return TuningResult(
        model=name,
        params=dict(study.best_params),
        score=float(study.best_value),
        metric=metric,
        trials=trials,
    )
