"""The promotion gate: does a challenger replace the champion?

Both models are scored on the same holdout, user by user (the per-user frames
of :func:`recsys.evaluation.beyond.evaluate_detailed`), and the challenger is promoted
only when every check holds:

- ``margin``: the primary metric's mean improves by at least ``margin``;
- ``bootstrap``: a paired bootstrap over users (seeded, ``n_resamples``
  resamples of the per-user differences) puts the lower end of the
  ``confidence`` interval of the improvement above zero;
- ``coverage``: catalogue coverage is at least ``min_coverage_ratio`` times
  the champion's;
- ``slices``: no group (activity bucket, gender, age band, head or tail
  items) with at least ``min_slice_users`` users loses more than
  ``max_slice_drop`` of the primary metric;
- ``load``: the challenger loads as a pyfunc model and answers sample users
  within ``latency_budget_s`` (measured by the caller, :func:`check_load`).

With no champion the only check is ``load``. This module is pure: it takes
numbers and a prediction callable, and returns a
:class:`recsys.promotion.decision.Decision`; the pipeline records it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from recsys.constants import USER_COL
from recsys.errors import InputError
from recsys.evaluation.beyond import slice_summary
from recsys.promotion.decision import Check, Decision

log = logging.getLogger(__name__)


class GateInputError(InputError):
    """Evidence the gate cannot compare (no common users, missing metric...)."""


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds (all recorded in every decision).

    Attributes:
        metric: the primary per-user metric, e.g. ``ndcg@10``.
        margin: required absolute improvement of its mean.
        n_resamples: bootstrap resamples (at least 1000 for a real decision).
        seed: seed of the bootstrap's generator.
        confidence: two-sided level of the bootstrap interval.
        min_coverage_ratio: challenger coverage / champion coverage floor.
        max_slice_drop: largest allowed loss of the metric in any group.
        min_slice_users: smaller groups are reported but not gated.
        latency_budget_s: most seconds the sample request may take.
    """

    metric: str = "ndcg@10"
    margin: float = 0.0
    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    min_coverage_ratio: float = 0.9
    max_slice_drop: float = 0.05
    min_slice_users: int = 20
    latency_budget_s: float = 5.0


@dataclass(frozen=True)
class Evidence:
    """One model's results on the holdout.

    Attributes:
        label: what to call it in reports (model type).
        version: registry version, if registered.
        run_id: MLflow run id, if any.
        per_user: one row per test user (index ``user_id``) with the metric
            and group columns.
        metrics: aggregate figures (``catalogue_coverage`` is gated).
    """

    label: str
    per_user: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    version: int | None = None
    run_id: str | None = None


# ------------------------------------------------------------------- bootstrap
def paired_bootstrap(
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Percentile bootstrap of the mean paired difference ``candidate - champion``.

    Users are resampled with replacement, the same draw for both models (the
    pairing); all resamples are drawn in one ``(n_resamples, n_users)`` array.

    Returns:
        ``diff`` (observed mean difference), ``low``/``high`` (its interval),
        and ``candidate_low/high``, ``champion_low/high`` (each mean's
        interval from the same resamples).

    Raises:
        GateInputError: arrays of different length, empty, non-finite values,
            fewer than 1 resample or a confidence outside (0, 1).
    """
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise GateInputError(
            f"paired values must be two 1-D arrays of one non-zero length, "
            f"got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise GateInputError("paired values must all be finite numbers")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise GateInputError(
            f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples} and {confidence}"
        )
    draws = np.random.default_rng(seed).integers(0, a.size, size=(n_resamples, a.size))
    tails = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    out = {"diff": float(a.mean() - b.mean())}
    for name, values in (("", a - b), ("candidate_", a), ("champion_", b)):
        low, high = np.percentile(values[draws].mean(axis=1), tails)
        out[f"{name}low"], out[f"{name}high"] = float(low), float(high)
    return out


# ------------------------------------------------------------------ load check
def check_load(load: Callable[[], Any], user_ids: np.ndarray, *, k: int, budget_s: float) -> Check:
    """Load a model and ask it for ``k`` items for ``user_ids``, against a time budget.

    Args:
        load: returns an object with ``predict(frame, params={"k": k})`` (an
            MLflow pyfunc model); any exception it raises fails the check.
        user_ids: sample users; each must get at least one row back.
        k: list length asked for.
        budget_s: most seconds the ``predict`` call may take.
    """
    users = pd.DataFrame({USER_COL: np.asarray(user_ids)})
    try:
        model = load()
        start = time.perf_counter()
        answer = model.predict(users, params={"k": int(k)})
        seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - any failure to load or serve fails the check
        log.warning("load check failed", exc_info=True)
        return Check(
            "load", False, f"the model did not load and answer: {type(exc).__name__}: {exc}"
        )
    answered = set(pd.unique(answer[USER_COL])) if USER_COL in answer else set()
    missing = len(set(users[USER_COL]) - answered)
    ok = missing == 0 and seconds <= budget_s
    return Check(
        "load",
        ok,
        f"loaded; {len(users)} sample users answered in {seconds:.3f}s "
        f"(budget {budget_s:g}s), {missing} without a list",
        value=seconds,
        threshold=budget_s,
    )


# ----------------------------------------------------------------- the verdict
@dataclass(frozen=True)
class Incomparable:
    """A champion the candidate cannot be measured against, and why.

    Attributes:
        version: the champion's registry version.
        reason: what makes the comparison meaningless (another catalogue, ids
            it cannot know such as pseudonyms under a changed key).
    """

    version: int
    reason: str


def decide_gate(
    candidate: Evidence,
    champion: Evidence | None,
    load: Check,
    config: GateConfig | None = None,
    *,
    incomparable: Incomparable | None = None,
) -> Decision:
    """The gate's verdict on ``candidate`` against ``champion`` (``None`` = first run).

    A champion that cannot be compared (``incomparable``, with ``champion``
    ``None``) is judged like no champion at all: the candidate replaces it when
    it loads and answers, and the decision (kind ``replace_incomparable``)
    says why the champion could not be scored.

    Returns:
        A :class:`Decision` of kind ``gate`` (``first_run`` without a
        champion, ``replace_incomparable`` with one that cannot be compared)
        whose ``checks`` hold every verdict and whose ``evidence`` holds both
        models' metrics and intervals, the thresholds and the slice tables.

    Raises:
        GateInputError: the metric is missing or the two share no user.
    """
    config = config or GateConfig()
    metric = config.metric
    if metric not in candidate.per_user.columns:
        raise GateInputError(f"candidate per-user results have no {metric!r} column")
    if champion is None:
        return _first_run(candidate, load, config, incomparable)
    if metric not in champion.per_user.columns:
        raise GateInputError(f"champion per-user results have no {metric!r} column")
    users = candidate.per_user.index.intersection(champion.per_user.index)
    if users.empty:
        raise GateInputError("candidate and champion were scored on no common user")
    a = candidate.per_user.loc[users, metric].to_numpy()
    b = champion.per_user.loc[users, metric].to_numpy()
    boot = paired_bootstrap(
        a, b, n_resamples=config.n_resamples, seed=config.seed, confidence=config.confidence
    )
    slices = _slice_comparison(candidate.per_user.loc[users], champion.per_user.loc[users], metric)
    checks = (
        _margin_check(boot["diff"], config),
        _bootstrap_check(boot, config),
        _coverage_check(candidate.metrics, champion.metrics, config),
        _slice_check(slices, config),
        load,
    )
    evidence = _evidence(candidate, champion, boot, slices, config, int(users.size))
    return _decision(
        candidate, champion, float(a.mean()), float(b.mean()), checks, evidence, config, "gate"
    )


def _first_run(
    candidate: Evidence, load: Check, config: GateConfig, incomparable: Incomparable | None
) -> Decision:
    score = float(candidate.per_user[config.metric].mean())
    evidence = {
        "candidate": _model_evidence(candidate, config.metric),
        "champion": None,
        "thresholds": asdict(config),
    }
    if incomparable is not None:
        evidence["incomparable_champion"] = asdict(incomparable)
    decision = _decision(candidate, None, score, None, (load,), evidence, config, "first_run")
    if incomparable is None:
        return decision
    lead = f"champion v{incomparable.version} cannot be compared: {incomparable.reason}"
    reason = decision.reason.replace("no champion yet", lead, 1)
    return replace(
        decision,
        reason=reason,
        kind="replace_incomparable",
        champion_version=incomparable.version,
    )


def _decision(
    candidate: Evidence,
    champion: Evidence | None,
    score: float,
    champion_score: float | None,
    checks: tuple[Check, ...],
    evidence: dict,
    config: GateConfig,
    kind: str,
) -> Decision:
    failed = [c for c in checks if not c.passed]
    promote = not failed
    if champion is None:
        lead = "no champion yet" + ("; the candidate loads and answers" if promote else "")
    else:
        lead = (
            f"{config.metric} {score:.4f} vs champion {champion_score:.4f}, "
            f"gain {score - champion_score:+.4f}"
        )
    why = (
        "all checks pass"
        if promote
        else "failed: " + "; ".join(f"{c.name} ({c.detail})" for c in failed)
    )
    return Decision(
        promote=promote,
        candidate_score=score,
        champion_score=champion_score,
        margin=float(config.margin),
        metric=config.metric,
        reason=f"{'promote' if promote else 'hold'}: {lead}; {why}",
        candidate_version=candidate.version,
        champion_version=champion.version if champion else None,
        checks=checks,
        evidence=evidence,
        kind=kind,
    )


def _margin_check(diff: float, config: GateConfig) -> Check:
    ok = diff >= config.margin - 1e-12
    return Check(
        "margin",
        ok,
        f"mean {config.metric} gain {diff:+.4f}, required {config.margin:.4f}",
        value=diff,
        threshold=config.margin,
    )


def _bootstrap_check(boot: dict[str, float], config: GateConfig) -> Check:
    ok = boot["low"] > 0
    return Check(
        "bootstrap",
        ok,
        f"{config.confidence:.0%} interval of the gain [{boot['low']:+.4f}, "
        f"{boot['high']:+.4f}] from {config.n_resamples} paired resamples "
        f"(seed {config.seed}); its lower end must be above 0",
        value=boot["low"],
        threshold=0.0,
    )


def _coverage_check(candidate: dict, champion: dict, config: GateConfig) -> Check:
    mine, theirs = candidate.get("catalogue_coverage"), champion.get("catalogue_coverage")
    if mine is None or theirs is None or not math.isfinite(theirs) or theirs <= 0:
        return Check("coverage", True, "champion coverage unknown; not gated")
    ratio = mine / theirs
    ok = ratio >= config.min_coverage_ratio - 1e-12
    return Check(
        "coverage",
        ok,
        f"catalogue coverage {mine:.4f} is {ratio:.2f} x the "
        f"champion's {theirs:.4f} (floor {config.min_coverage_ratio:g})",
        value=ratio,
        threshold=config.min_coverage_ratio,
    )


def _slice_comparison(candidate: pd.DataFrame, champion: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each group's mean for both models on the common users, and the change."""
    mine = slice_summary(candidate, metric).rename(columns={"mean": "candidate"})
    theirs = slice_summary(champion, metric).rename(
        columns={"mean": "champion", "n_users": "n_champion"}
    )
    both = mine.merge(theirs, on=["slicing", "group"], how="inner")
    both["n_users"] = np.minimum(both["n_users"], both.pop("n_champion"))
    return both.assign(change=both["candidate"] - both["champion"])


def _slice_check(slices: pd.DataFrame, config: GateConfig) -> Check:
    gated = slices[slices["n_users"] >= config.min_slice_users]
    if gated.empty:
        return Check("slices", True, f"no group has {config.min_slice_users}+ users; not gated")
    worst = gated.loc[gated["change"].idxmin()]
    ok = worst["change"] >= -config.max_slice_drop - 1e-12
    return Check(
        "slices",
        ok,
        f"worst group {worst['slicing']}={worst['group']} ({int(worst['n_users'])} "
        f"users) changes {config.metric} by {worst['change']:+.4f}; the most "
        f"allowed loss is {config.max_slice_drop:.4f}",
        value=float(worst["change"]),
        threshold=-config.max_slice_drop,
    )


def _model_evidence(
    model: Evidence, metric: str, low: float | None = None, high: float | None = None
) -> dict[str, Any]:
    return {
        "label": model.label,
        "version": model.version,
        "run_id": model.run_id,
        "n_users": int(len(model.per_user)),
        "score": float(model.per_user[metric].mean()),
        "interval": None if low is None else [low, high],
        "metrics": {k: float(v) for k, v in model.metrics.items() if v is not None},
    }


def _evidence(
    candidate: Evidence,
    champion: Evidence,
    boot: dict,
    slices: pd.DataFrame,
    config: GateConfig,
    n_users: int,
) -> dict[str, Any]:
    return {
        "candidate": _model_evidence(
            candidate, config.metric, boot["candidate_low"], boot["candidate_high"]
        ),
        "champion": _model_evidence(
            champion, config.metric, boot["champion_low"], boot["champion_high"]
        ),
        "gain": {
            "mean": boot["diff"],
            "interval": [boot["low"], boot["high"]],
            "paired_users": n_users,
        },
        "thresholds": asdict(config),
        "slices": slices.to_dict(orient="records"),
    }
