"""One registered model's monitoring, for the page: drift and decay per batch, and the decisions.

Read from the records :mod:`recsys.pipeline.monitor` keeps (nothing else):
each measured batch becomes a point with its figures and the decision made
on it; the thresholds are those the latest decision was made with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys import config
from recsys.pipeline.monitor import read_monitoring

#: How many of the latest measured batches the page draws.
POINTS = 60
#: How many of the latest decisions the page lists.
DECISIONS = 12

#: The drawn figures, in reading order: (measurement key, title, kind).
PANELS = (
    ("item_psi", "item popularity PSI", "drift"),
    ("activity_ks", "user activity KS", "drift"),
    ("unknown_user_share", "unknown users' share of interactions", "drift"),
    ("unknown_item_share", "unknown items' share of interactions", "drift"),
    ("rating_js", "rating distribution JS distance", "drift"),
    ("hit_rate_drop", "prequential hit-rate drop vs. baseline", "decay"),
    ("ndcg_drop", "prequential NDCG drop vs. baseline", "decay"),
)


def epoch_label(seconds: float | None) -> str | None:
    """``2026-11-27 22:31 UTC`` for epoch seconds."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def monitoring_view(name: str, root: Path | None = None) -> dict[str, Any] | None:
    """What the page shows of ``name``'s monitoring, or ``None`` before the first record.

    Returns:
        ``points`` (oldest first, at most :data:`POINTS`: ``label``, ``source``,
        ``at``, ``champion_version``, ``k``, ``metrics``, ``action``),
        ``thresholds`` (policy field → value), ``decisions`` (latest first:
        ``at``, ``batch``, ``action``, ``reason``), ``actions`` (how many of
        each) and ``k``.
    """
    found = read_monitoring(name, root)
    if not found["measurements"] and not found["decisions"]:
        return None
    by_batch = {(d.get("batch"), d.get("champion_version")): d for d in found["decisions"]}
    sources = {m["batch"]: m.get("source") or m["batch"][:8] for m in found["measurements"]}
    points = [_point(m, by_batch) for m in found["measurements"][-POINTS:]]
    latest = found["decisions"][-1] if found["decisions"] else None
    return {
        "points": points,
        "thresholds": _thresholds(latest),
        "decisions": [
            {
                "at": epoch_label(d.get("at")),
                "batch": sources.get(d.get("batch"), d.get("batch")) or "(no new batch)",
                "action": d.get("action"),
                "reason": d.get("reason"),
                "champion_version": d.get("champion_version"),
            }
            for d in reversed(found["decisions"][-DECISIONS:])
        ],
        "actions": dict(Counter(d.get("action") for d in found["decisions"])),
        "k": points[-1]["k"] if points else None,
    }


def _point(measurement: Mapping[str, Any], decisions: Mapping[tuple, Any]) -> dict[str, Any]:
    decision = decisions.get((measurement["batch"], measurement["champion_version"])) or {}
    return {
        "label": (epoch_label(measurement.get("measured_at")) or "")[5:16],
        "source": measurement.get("source") or measurement["batch"][:8],
        "at": epoch_label(measurement.get("measured_at")),
        "champion_version": measurement["champion_version"],
        "k": measurement.get("k"),
        "metrics": dict(measurement["metrics"]),
        "action": decision.get("action"),
    }


def _thresholds(latest: Mapping[str, Any] | None) -> dict[str, float]:
    if latest and latest.get("policy"):
        return dict(latest["policy"])
    import dataclasses

    from recsys.promotion.retrain import RetrainPolicy

    return dataclasses.asdict(RetrainPolicy.with_overrides(config.monitor_overrides()))
