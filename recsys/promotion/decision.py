"""The record of a promotion decision: what was decided, why, and on what evidence.

A :class:`Decision` comes from the gate (:func:`recsys.promotion.gate.decide_gate`,
kinds ``gate`` and ``first_run``) or from a person (:func:`manual_decision`,
kinds ``manual_promote`` and ``rollback``). It is pure data: the registry
(:func:`recsys.registry.apply_decision`) records it as version tags, JSON and
Markdown (:func:`to_markdown`) and moves the ``champion`` alias when
:attr:`Decision.promote` is true.

A decision names the champion it was judged against (``champion_version``).
When the registry finds, under its promotion lock, that the champion moved
since, it records the decision as :func:`stale` instead: held, with the failed
check :data:`STALE_CHECK`, so no two versions are ever promoted against the
same champion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from recsys.errors import InputError
from recsys.serialize import json_safe

#: Prefix of every registry tag written from a decision.
TAG_PREFIX = "recsys.decision."


#: How a decision was reached: the gate (against a champion, with none, or replacing
#: one that cannot be compared), or a person.
KINDS = ("gate", "first_run", "replace_incomparable", "manual_promote", "rollback")


#: The check a decision fails when the champion moved after it was made.
STALE_CHECK = "champion_unchanged"


class PromotionInputError(InputError):
    """A manual decision without a reason, or of an unknown kind."""


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
        margin: the absolute improvement of ``metric`` required.
        metric: name of the compared metric, e.g. ``ndcg@10``.
        reason: one human-readable sentence explaining the verdict.
        candidate_version: registry version of the candidate, if known.
        champion_version: registry version of the champion, if any.
        checks: each condition of the decision and how it came out.
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
    checks: tuple[Check, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    manual: bool = False
    kind: str = "gate"

    @property
    def stale(self) -> bool:
        """True when the champion had moved before this decision could be applied."""
        return any(c.name == STALE_CHECK and not c.passed for c in self.checks)

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
            "reason": self.reason,
            "candidate_version": _format(self.candidate_version),
            "champion_version": _format(self.champion_version),
            "kind": self.kind,
            "manual": str(self.manual).lower(),
        }
        values.update({f"check.{c.name}": "pass" if c.passed else "fail" for c in self.checks})
        return {TAG_PREFIX + key: value for key, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field plus ``verdict``; NaN/inf become ``None``."""
        out = {key: json_safe(value) for key, value in asdict(self).items()}
        out["checks"] = list(out["checks"])
        out["verdict"] = self.verdict
        return out


def _format(value: object) -> str:
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)


def stale(decision: Decision, champion_now: int | None) -> Decision:
    """``decision`` as a hold: it was judged against a champion that is no longer one.

    Args:
        decision: a decision judged against ``decision.champion_version``.
        champion_now: the version holding the alias when it was to be applied
            (``None``: no champion).
    """
    detail = (
        f"decided against champion {_format(decision.champion_version)}, but the champion "
        f"is now {_format(champion_now)}: not promoted, to be decided again against it"
    )
    return dataclasses.replace(
        decision,
        promote=False,
        reason=f"stale: {detail}",
        checks=(*decision.checks, Check(STALE_CHECK, False, detail)),
    )


# --------------------------------------------------------------- manual moves
def manual_decision(
    kind: str,
    version: int,
    champion_version: int | None,
    reason: str,
    metric: str = "ndcg@10",
    score: float = float("nan"),
    champion_score: float | None = None,
) -> Decision:
    """The record of a person's move: ``manual_promote`` or ``rollback``.

    Raises:
        PromotionInputError: an unknown kind or an empty reason.
    """
    if kind not in ("manual_promote", "rollback"):
        raise PromotionInputError(
            f"a manual decision is 'manual_promote' or 'rollback', got {kind!r}"
        )
    if not reason or not reason.strip():
        raise PromotionInputError("a manual decision needs a reason")
    return Decision(
        promote=True,
        candidate_score=score,
        champion_score=champion_score,
        margin=0.0,
        metric=metric,
        reason=f"{kind} (manual): {reason.strip()}",
        candidate_version=version,
        champion_version=champion_version,
        checks=(Check("manual", True, reason.strip()),),
        evidence={"thresholds": None},
        manual=True,
        kind=kind,
    )


# -------------------------------------------------------------------- reports
def to_markdown(decision: Decision) -> str:
    """A readable report of ``decision``: verdict, reason, metrics, checks, slices."""
    lines = [
        f"# Promotion decision: {decision.verdict.upper()}",
        "",
        f"- kind: {decision.kind}{' (manual)' if decision.manual else ''}",
        f"- candidate version: {decision.candidate_version}",
        f"- champion version: {decision.champion_version}",
        f"- metric: {decision.metric}",
        "",
        f"> {decision.reason}",
        "",
    ]
    lines += _metric_lines(decision.evidence)
    lines += ["## Checks", "", "| check | verdict | detail |", "|---|---|---|"]
    lines += [
        f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in decision.checks
    ]
    slices = decision.evidence.get("slices") or []
    if slices:
        lines += [
            "",
            "## Slices",
            "",
            "| slicing | group | users | candidate | champion | change |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['slicing']} | {s['group']} | {s['n_users']} | {s['candidate']:.4f} "
            f"| {s['champion']:.4f} | {s['change']:+.4f} |"
            for s in slices
        ]
    thresholds = decision.evidence.get("thresholds")
    if thresholds:
        lines += ["", "## Thresholds", ""]
        lines += [f"- {key}: {value}" for key, value in thresholds.items()]
    return "\n".join(lines) + "\n"


def _metric_lines(evidence: dict) -> list[str]:
    models = [(name, evidence.get(name)) for name in ("candidate", "champion")]
    models = [(n, m) for n, m in models if m]
    if not models:
        return []
    lines = ["## Models", "", "| | model | version | score | interval |", "|---|---|---|---|---|"]
    for name, m in models:
        interval = m.get("interval")
        shown = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-"
        lines.append(f"| {name} | {m['label']} | {m['version']} | {m['score']:.4f} | {shown} |")
    gain = evidence.get("gain")
    if gain:
        lines.append(
            f"\nGain {gain['mean']:+.4f}, interval [{gain['interval'][0]:+.4f}, "
            f"{gain['interval'][1]:+.4f}] over {gain['paired_users']} paired users."
        )
    return lines + [""]
