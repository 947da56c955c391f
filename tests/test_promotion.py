"""The promotion rule: boundaries of the margin, first run, bad scores."""

from __future__ import annotations

import json
import math
import re

import pytest

from recsys.promotion import Decision, PromotionInputError, decide


def test_first_run_without_champion_is_promoted():
    d = decide(0.12, None, margin=0.05)
    assert d.promote is True
    assert d.champion_score is None
    assert d.reason == "promote: no champion yet; candidate ndcg@10=0.12"


def test_gain_exactly_at_margin_promotes_despite_rounding():
    # 0.3 - 0.2 is 0.09999999999999998 in floating point: equal on paper must promote.
    assert 0.3 - 0.2 < 0.1
    d = decide(0.3, 0.2, margin=0.1)
    assert d.promote is True
    assert d.reason.startswith("promote: candidate ndcg@10=0.3, champion ndcg@10=0.2")


def test_gain_just_under_margin_holds():
    d = decide(0.3, 0.2, margin=0.1 + 1e-9)
    assert d.promote is False
    assert d.reason.startswith("hold: ")
    assert "gain +0.1, required 0.1" in d.reason


def test_equal_scores_promote_only_with_zero_margin():
    assert decide(0.25, 0.25).promote is True
    assert decide(0.25, 0.25, margin=0.001).promote is False


def test_worse_candidate_holds_with_zero_margin():
    d = decide(0.19, 0.2, candidate_version=3, champion_version=2)
    assert d.promote is False
    assert (d.candidate_version, d.champion_version) == (3, 2)


@pytest.mark.parametrize(
    ("candidate", "champion", "bad"),
    [(math.nan, 0.2, "candidate"), (0.3, math.nan, "champion"), (math.inf, 0.2, "candidate")],
)
def test_non_finite_scores_hold_and_say_which(candidate, champion, bad):
    d = decide(candidate, champion)
    assert d.promote is False
    assert d.reason.startswith(f"hold: {bad} ndcg@10 is ")


def test_nan_candidate_holds_even_without_champion():
    d = decide(math.nan, None)
    assert d.promote is False
    assert d.reason == "hold: candidate ndcg@10 is nan, not a finite number"


def test_relative_margin_scales_with_champion_score():
    # 2 % of 0.5 is 0.01: 0.51 is exactly enough, 0.5099 is not.
    assert decide(0.51, 0.5, margin=0.02, relative=True).promote is True
    assert decide(0.5099, 0.5, margin=0.02, relative=True).promote is False
    # The same 0.01 gain in absolute terms would not pass a 0.02 absolute margin.
    assert decide(0.51, 0.5, margin=0.02).promote is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": -0.01}, "margin must be a finite number >= 0, got -0.01"),
        ({"margin": math.nan}, "margin must be a finite number >= 0, got nan"),
        ({"metric": " "}, "metric must be a non-empty name such as 'ndcg@10'"),
    ],
)
def test_bad_margin_or_metric_is_rejected(kwargs, message):
    with pytest.raises(PromotionInputError, match=f"^{re.escape(message)}$"):
        decide(0.3, 0.2, **kwargs)


def test_non_numeric_score_is_rejected():
    with pytest.raises(PromotionInputError, match="^candidate_score must be a number, got 'x'$"):
        decide("x", 0.2)  # type: ignore[arg-type]
    assert issubclass(PromotionInputError, ValueError)


def test_as_tags_records_everything_as_strings():
    tags = decide(0.3, 0.2, margin=0.05, metric="recall@20", candidate_version=4,
                  champion_version=3).as_tags()
    assert tags == {
        "recsys.decision.verdict": "promote",
        "recsys.decision.metric": "recall@20",
        "recsys.decision.candidate_score": "0.3",
        "recsys.decision.champion_score": "0.2",
        "recsys.decision.margin": "0.05",
        "recsys.decision.margin_mode": "absolute",
        "recsys.decision.reason": tags["recsys.decision.reason"],
        "recsys.decision.candidate_version": "4",
        "recsys.decision.champion_version": "3",
    }
    assert tags["recsys.decision.reason"].startswith("promote: candidate recall@20=0.3")


def test_as_tags_without_champion_says_none():
    tags = decide(0.3, None).as_tags()
    assert tags["recsys.decision.champion_score"] == "none"
    assert tags["recsys.decision.champion_version"] == "none"


def test_to_dict_is_json_safe_and_complete():
    d = decide(math.nan, 0.2, margin=0.01)
    out = d.to_dict()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["candidate_score"] is None
    assert out["verdict"] == "hold"
    assert set(out) == {*Decision.__dataclass_fields__, "verdict"}
