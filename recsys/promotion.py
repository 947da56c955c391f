"""Whether a candidate model replaces the champion: pure decision logic.

This module only compares numbers; it never talks to MLflow. The tracking
module records a :class:`Decision` on the registry and moves the ``champion``
alias when :attr:`Decision.promote` is true.

The rule, for a metric where higher is better (NDCG, recall, ...):

- no champion yet (``champion_score is None``): the candidate is promoted, as
  long as its own score is a finite number;
- either score NaN or infinite: hold, and the reason says which score is bad;
- absolute margin (default): promote when ``candidate - champion >= margin``;
- relative margin (``relative=True``): promote when
  ``candidate - champion >= margin * |champion|``, i.e. the candidate improves
  on the champion by at least the fraction ``margin`` (0.02 = 2 %).

"At least" is tested with a tolerance of :data:`TOLERANCE`, so a difference
that equals the margin on paper (``0.3 - 0.2`` against ``0.1``) promotes even
though floating point makes it ``0.09999999999999998``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from recsys.serialize import json_safe

#: Slack when comparing the improvement with the margin (absorbs rounding).
TOLERANCE = 1e-12

#: Prefix of every registry tag written from a decision.
TAG_PREFIX = "recsys.decision."


#: How a decision was reached: the margin rule, the gate, or a person.
KINDS = ("rule", "gate", "first_run", "manual_promote", "rollback")


class PromotionInputError(ValueError):
    """A decision was asked for with a meaningless margin or metric name."""


@dataclass(frozen=True)
class Check:
    """One condition of a gated decision and how it came out.

    Attributes:
        name: short identifier (``margin``, ``bootstrap``, ``coverage``,
            ``slices``, ``load``).
        passed: whether the condition holds.
        detail: one sentence with the numbers behind the verdict.
        value: the measured figure, if one number says it.
        threshold: the figure ``value`` was held against.
    """

    name: str
    passed: bool
    detail: str
    value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict on one candidate, with everything needed to audit it later.

    Attributes:
        promote: True when the candidate becomes the champion.
        candidate_score: the candidate's score on ``metric``.
        champion_score: the current champion's score on the same holdout, or
            ``None`` when there is no champion yet.
        margin: the improvement required (absolute, or a fraction of the
            champion's score when ``relative``).
        metric: name of the compared metric, e.g. ``ndcg@10``.
        reason: one human-readable sentence explaining the verdict.
        candidate_version: registry version of the candidate, if known.
        champion_version: registry version of the champion, if any.
        relative: whether ``margin`` is relative to the champion's score.
        checks: each condition of a gated decision (empty for the plain rule).
        evidence: what the checks were computed from: both models' metrics
            and bootstrap intervals, the thresholds, slice tables (JSON-ready).
        manual: True when a person decided (override or rollback).
        kind: one of :data:`KINDS`.
    """

    promote: bool
    candidate_score: float
    champion_score: float | None
    margin: float
    metric: str
    reason: str
    candidate_version: int | str | None = None
    champion_version: int | str | None = None
    relative: bool = False
    checks: tuple[Check, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    manual: bool = False
    kind: str = "rule"

    @property
    def verdict(self) -> str:
        """``"promote"`` or ``"hold"``."""
        return "promote" if self.promote else "hold"

    def as_tags(self) -> dict[str, str]:
        """The decision as registry tags (all strings, keys prefixed ``recsys.decision.``).

        A missing champion or version is written as ``"none"``; scores use
        ``repr`` so no precision is lost (``nan`` stays readable).
        """
        values = {
            "verdict": self.verdict,
            "metric": self.metric,
            "candidate_score": _format(self.candidate_score),
            "champion_score": _format(self.champion_score),
            "margin": _format(self.margin),
            "margin_mode": "relative" if self.relative else "absolute",
            "reason": self.reason,
            "candidate_version": _format(self.candidate_version),
            "champion_version": _format(self.champion_version),
        }
        if self.kind != "rule":
            values.update(kind=self.kind, manual=str(self.manual).lower())
        values.update({f"check.{c.name}": "pass" if c.passed else "fail" for c in self.checks})
        return {TAG_PREFIX + key: value for key, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field plus ``verdict``; NaN/inf become ``None``."""
        out = {key: json_safe(value) for key, value in asdict(self).items()}
        out["checks"] = list(out["checks"])
        out["verdict"] = self.verdict
        return out


def decide(
    candidate_score: float,
    champion_score: float | None,
    *,
    margin: float = 0.0,
    metric: str = "ndcg@10",
    relative: bool = False,
    candidate_version: int | str | None = None,
    champion_version: int | str | None = None,
) -> Decision:
    """Decide whether the candidate replaces the champion (higher score is better).

    Args:
        candidate_score: the candidate's score on ``metric``.
        champion_score: the champion's score on the same data, or ``None`` when
            no champion exists (the first run is then promoted).
        margin: required improvement, ``>= 0``. Absolute by default; with
            ``relative=True`` a fraction of the champion's score.
        metric: the metric's name, recorded in the decision.
        relative: read ``margin`` as a fraction of ``|champion_score|``.
        candidate_version: registry version of the candidate, recorded only.
        champion_version: registry version of the champion, recorded only.

    Returns:
        A :class:`Decision`; NaN or infinite scores always give a hold.

    Raises:
        PromotionInputError: ``margin`` is negative or not finite, ``metric``
            is empty, or a score is not a number.
    """
    _check_inputs(margin, metric)
    candidate_score = _to_float(candidate_score, "candidate_score")
    champion = None if champion_score is None else _to_float(champion_score, "champion_score")
    promote, reason = _verdict(candidate_score, champion, margin, metric, relative)
    return Decision(
        promote=promote,
        candidate_score=candidate_score,
        champion_score=champion,
        margin=float(margin),
        metric=metric,
        reason=reason,
        candidate_version=candidate_version,
        champion_version=champion_version,
        relative=relative,
    )


def _check_inputs(margin: float, metric: str) -> None:
    if not isinstance(metric, str) or not metric.strip():
        raise PromotionInputError("metric must be a non-empty name such as 'ndcg@10'")
    if not math.isfinite(float(margin)) or margin < 0:
        raise PromotionInputError(f"margin must be a finite number >= 0, got {margin!r}")


def _verdict(
    candidate: float, champion: float | None, margin: float, metric: str, relative: bool
) -> tuple[bool, str]:
    if not math.isfinite(candidate):
        return False, f"hold: candidate {metric} is {candidate!r}, not a finite number"
    if champion is None:
        return True, f"promote: no champion yet; candidate {metric}={candidate:.6g}"
    if not math.isfinite(champion):
        return False, f"hold: champion {metric} is {champion!r}, scores cannot be compared"
    required = margin * abs(champion) if relative else margin
    gain = candidate - champion
    mode = f"{margin:.6g} x |champion|" if relative else f"{margin:.6g}"
    facts = (
        f"candidate {metric}={candidate:.6g}, champion {metric}={champion:.6g}, "
        f"gain {gain:+.6g}, required {required:.6g} (margin {mode})"
    )
    if gain >= required - TOLERANCE:
        return True, f"promote: {facts}"
    return False, f"hold: {facts}"


def _to_float(value: object, what: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PromotionInputError(f"{what} must be a number, got {value!r}") from None


def _format(value: object) -> str:
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)
