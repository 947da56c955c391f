"""Decision records: registry tags as strings, strict JSON, every field kept.

The gate that makes decisions is tested in ``test_gate.py``.
"""

from __future__ import annotations

import json
import math

from recsys.promotion.decision import Check, Decision


def _decision(candidate: float, champion: float | None, **fields) -> Decision:
    return Decision(
        promote=True,
        candidate_score=candidate,
        champion_score=champion,
        margin=fields.pop("margin", 0.0),
        metric=fields.pop("metric", "ndcg@10"),
        reason=f"promote: {candidate} vs {champion}",
        **fields,
    )


def test_as_tags_records_everything_as_strings():
    tags = _decision(
        0.3,
        0.2,
        margin=0.05,
        metric="recall@20",
        candidate_version=4,
        champion_version=3,
        checks=(Check("margin", True, "gain 0.1"),),
    ).as_tags()
    assert tags == {
        "recsys.decision.verdict": "promote",
        "recsys.decision.metric": "recall@20",
        "recsys.decision.candidate_score": "0.3",
        "recsys.decision.champion_score": "0.2",
        "recsys.decision.margin": "0.05",
        "recsys.decision.reason": "promote: 0.3 vs 0.2",
        "recsys.decision.candidate_version": "4",
        "recsys.decision.champion_version": "3",
        "recsys.decision.kind": "gate",
        "recsys.decision.manual": "false",
        "recsys.decision.check.margin": "pass",
    }


def test_as_tags_without_champion_says_none():
    tags = _decision(0.3, None).as_tags()
    assert tags["recsys.decision.champion_score"] == "none"
    assert tags["recsys.decision.champion_version"] == "none"


def test_to_dict_is_json_safe_and_complete():
    out = _decision(math.nan, 0.2, margin=0.01).to_dict()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["candidate_score"] is None
    assert out["verdict"] == "promote"
    assert set(out) == {*Decision.__dataclass_fields__, "verdict"}
