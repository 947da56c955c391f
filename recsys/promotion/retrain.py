"""When to retrain: the evidence (drift, decay, erasures) against thresholds, with a cooldown.

:func:`decide_retraining` turns one batch's measurements
(:mod:`recsys.evaluation.drift`) into a :class:`RetrainDecision`. In order:

1. no champion yet: retrain (there is nothing to serve), unless there is no
   data at all;
2. the data did not change since the champion was trained, or since the
   last decision (no new batch, no erasure): ``skip``;
3. every threshold of the :class:`RetrainPolicy` is checked: a drift figure
   above its threshold, or a prequential figure that fell more than its
   allowed drop below the champion's baseline, is a breach; a champion that
   still knows a user who asked to be forgotten is one too;
4. nothing breached: ``hold``;
5. a breach within ``cooldown_hours`` of the last triggered retraining:
   ``defer`` (the next batch measures again);
6. otherwise ``retrain``.

Each decision keeps every check (what was measured, the threshold, whether
it breached), so the record says why, in numbers. Pure: the caller passes
the clock (the DAG's logical date, never the wall clock) and the history.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recsys.errors import InputError
from recsys.serialize import json_safe

#: The outcomes; only ``retrain`` starts a training run.
ACTIONS = ("retrain", "hold", "defer", "skip")


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds of the evidence and the pace of retraining.

    Attributes:
        item_psi: item popularity PSI above which popularity has shifted.
        activity_ks: KS statistic of interactions per user above which activity changed.
        unknown_user_share: share of a batch's interactions by users the champion never saw.
        unknown_item_share: share on items without a training interaction (a new-item surge).
        rating_js: Jensen–Shannon distance of the rating distributions.
        hit_rate_drop: relative fall of the prequential hit rate below the baseline.
        ndcg_drop: relative fall of the prequential NDCG below the baseline (NDCG of
            a few items per user is the noisier of the two: on unshifted batches of
            ~300 known users the synthetic replay sees hit-rate drops within ±0.3 and
            NDCG drops within ±0.4; smaller batches need larger limits).
        cooldown_hours: at least this long between two triggered retrainings.
    """

    item_psi: float = 0.2
    activity_ks: float = 0.3
    unknown_user_share: float = 0.5
    unknown_item_share: float = 0.1
    rating_js: float = 0.15
    hit_rate_drop: float = 0.35
    ndcg_drop: float = 0.4
    cooldown_hours: float = 6.0

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, float] | None) -> RetrainPolicy:
        """The defaults with ``overrides`` (field name → value) applied.

        Raises:
            InputError: a name that is no field, or a negative value.
        """
        overrides = dict(overrides or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(
                f"unknown retraining setting(s) {unknown}; choose from {sorted(names)}"
            )
        negative = sorted(n for n, v in overrides.items() if float(v) < 0)
        if negative:
            raise InputError(f"retraining settings must be >= 0: {negative}")
        return cls(**{n: float(v) for n, v in overrides.items()})


#: Each thresholded figure: measurement key, policy field, words, kind.
CHECKS: tuple[tuple[str, str, str, str], ...] = (
    ("item_psi", "item_psi", "item popularity PSI", "drift"),
    ("activity_ks", "activity_ks", "user activity KS", "drift"),
    ("unknown_user_share", "unknown_user_share", "unknown users' share", "drift"),
    ("unknown_item_share", "unknown_item_share", "unknown items' share", "drift"),
    ("rating_js", "rating_js", "rating distribution JS", "drift"),
    ("hit_rate_drop", "hit_rate_drop", "prequential hit rate drop", "decay"),
    ("ndcg_drop", "ndcg_drop", "prequential NDCG drop", "decay"),
)


@dataclass(frozen=True)
class EvidenceCheck:
    """One figure held against its threshold.

    Attributes:
        name: the measurement (``item_psi``...).
        label: how a person reads it.
        kind: ``drift`` or ``decay``.
        value: what was measured (``None``: not measurable on this batch).
        threshold: the policy's limit.
        breached: ``value > threshold``.
    """

    name: str
    label: str
    kind: str
    value: float | None
    threshold: float
    breached: bool

    def sentence(self) -> str:
        if self.value is None:
            return f"{self.label}: not measured (threshold {self.threshold:g})"
        sign = ">" if self.breached else "<="
        return f"{self.label} {self.value:.3f} {sign} {self.threshold:g}"


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, and the evidence.

    Attributes:
        action: one of :data:`ACTIONS`.
        reason: one sentence with the numbers.
        at: when it was decided (epoch seconds, the caller's clock).
        checks: every thresholded figure of the batch.
        batch: the batch it was decided on, or ``None`` (no new batch).
        champion_version: the champion measured against, or ``None``.
        erasures_pending: forgotten users the champion still knows.
        cooldown_until: while deferred, when the cooldown ends.
        policy: the settings in force.
    """

    action: str
    reason: str
    at: float
    checks: list[EvidenceCheck] = field(default_factory=list)
    batch: str | None = None
    champion_version: int | None = None
    erasures_pending: int = 0
    cooldown_until: float | None = None
    policy: dict[str, float] = field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**dataclasses.asdict(self), "retrain": self.retrain})


def evidence_checks(measurement: Mapping[str, Any], policy: RetrainPolicy) -> list[EvidenceCheck]:
    """Every figure of :data:`CHECKS` in ``measurement`` against ``policy``."""
    checks = []
    for key, setting, label, kind in CHECKS:
        value = measurement.get(key)
        value = None if value is None or not math.isfinite(float(value)) else float(value)
        threshold = float(getattr(policy, setting))
        breached = value is not None and value > threshold
        checks.append(EvidenceCheck(key, label, kind, value, threshold, breached))
    return checks


def decide_retraining(
    measurement: Mapping[str, Any] | None,
    policy: RetrainPolicy,
    *,
    now: float,
    last_retrain_at: float | None,
    has_champion: bool,
    changed: bool,
    erasures_pending: int = 0,
    has_data: bool = True,
    batch: str | None = None,
    champion_version: int | None = None,
) -> RetrainDecision:
    """The decision for one batch (or for "nothing new", ``measurement`` ``None``).

    Args:
        measurement: the batch's figures (:mod:`recsys.evaluation.drift`).
        policy: thresholds and cooldown.
        now: the decision's time (epoch seconds).
        last_retrain_at: when retraining was last triggered, or ``None``.
        has_champion: whether a champion exists to measure against.
        changed: whether the data changed since the champion (a new batch, an erasure).
        erasures_pending: forgotten users the champion still knows.
        has_data: whether there is anything to train on at all.
        batch, champion_version: recorded with the decision.
    """
    checks = evidence_checks(measurement or {}, policy)
    common = {
        "at": float(now),
        "checks": checks,
        "batch": batch,
        "champion_version": champion_version,
        "erasures_pending": int(erasures_pending),
        "policy": dataclasses.asdict(policy),
    }
    if not has_data:
        return RetrainDecision("skip", "there are no interactions to train on yet", **common)
    if has_champion and not changed and not erasures_pending:
        return RetrainDecision("skip", "the data has not changed since the last decision", **common)
    reasons = [c.sentence() for c in checks if c.breached]
    if erasures_pending:
        reasons.append(f"the champion still knows {erasures_pending} forgotten user(s)")
    if not has_champion:
        reasons = ["there is no champion yet"]
    if not reasons:
        measured = "; ".join(c.sentence() for c in checks if c.value is not None)
        return RetrainDecision(
            "hold", f"no drift or decay past its threshold ({measured})", **common
        )
    cooldown = policy.cooldown_hours * 3600.0
    if last_retrain_at is not None and now - last_retrain_at < cooldown:
        until = last_retrain_at + cooldown
        return RetrainDecision(
            "defer",
            f"{'; '.join(reasons)}, but retraining was triggered "
            f"{(now - last_retrain_at) / 3600:.1f} h ago (cooldown {policy.cooldown_hours:g} h)",
            cooldown_until=until,
            **common,
        )
    return RetrainDecision("retrain", "; ".join(reasons), **common)
