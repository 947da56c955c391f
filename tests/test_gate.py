"""The promotion gate holds what it should: slice regressions, noise, slow models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.promotion.decision import Check, PromotionInputError, manual_decision, to_markdown
from recsys.promotion.gate import (
    Evidence,
    GateConfig,
    GateInputError,
    check_load,
    decide_gate,
    paired_bootstrap,
)

LOADS = Check("load", True, "loaded", value=0.01, threshold=5.0)


def _evidence(
    label: str, ndcg: np.ndarray, groups: np.ndarray, coverage: float = 0.5, version: int = 1
) -> Evidence:
    per_user = pd.DataFrame(
        {"ndcg@10": ndcg, "activity": groups}, index=pd.Index(np.arange(ndcg.size), name="user_id")
    )
    return Evidence(
        label=label, per_user=per_user, version=version, metrics={"catalogue_coverage": coverage}
    )


def test_bootstrap_of_a_constant_difference_is_that_difference():
    out = paired_bootstrap(np.full(50, 0.3), np.full(50, 0.1), n_resamples=200, seed=1)
    assert out["diff"] == pytest.approx(0.2)
    assert out["low"] == pytest.approx(0.2) and out["high"] == pytest.approx(0.2)
    assert out["candidate_low"] == pytest.approx(0.3)


def test_bootstrap_is_seeded_and_pairs_users():
    rng = np.random.default_rng(0)
    base = rng.random(300)
    a = paired_bootstrap(base + 0.01, base, seed=7)
    assert a == paired_bootstrap(base + 0.01, base, seed=7)
    # Paired: the shared per-user variation cancels, so the interval is a point.
    assert a["high"] - a["low"] == pytest.approx(0.0, abs=1e-12)
    assert a["candidate_high"] - a["candidate_low"] > 0.01


def test_bootstrap_rejects_unpaired_input():
    with pytest.raises(GateInputError, match="one non-zero length"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_gate_promotes_a_clear_improvement():
    groups = np.array(["light", "heavy"] * 200)
    base = np.random.default_rng(0).random(400) * 0.5
    decision = decide_gate(
        _evidence("new", base + 0.05, groups, version=2), _evidence("old", base, groups), LOADS
    )
    assert decision.promote and decision.kind == "gate"
    assert [c.name for c in decision.checks] == [
        "margin",
        "bootstrap",
        "coverage",
        "slices",
        "load",
    ]
    assert decision.evidence["gain"]["interval"][0] == pytest.approx(0.05)


def test_gate_holds_a_challenger_better_on_average_but_worse_on_a_slice():
    # Heavy users gain 0.2, light users lose 0.1: +0.05 on average, yet the
    # light slice drops by twice the 0.05 guardrail.
    groups = np.array(["heavy"] * 200 + ["light"] * 200)
    champion = np.full(400, 0.4)
    challenger = np.where(groups == "heavy", 0.6, 0.3)
    decision = decide_gate(
        _evidence("new", challenger, groups, version=2),
        _evidence("old", champion, groups),
        LOADS,
        GateConfig(max_slice_drop=0.05),
    )
    verdicts = {c.name: c.passed for c in decision.checks}
    assert decision.candidate_score > decision.champion_score
    assert verdicts == {
        "margin": True,
        "bootstrap": True,
        "coverage": True,
        "slices": False,
        "load": True,
    }
    assert not decision.promote
    slices = next(c for c in decision.checks if c.name == "slices")
    assert slices.value == pytest.approx(-0.1)
    assert "activity=light" in slices.detail


def test_gate_holds_a_challenger_whose_gain_is_inside_the_bootstrap_noise():
    rng = np.random.default_rng(3)
    groups = np.array(["light"] * 300)
    champion = rng.random(300)
    challenger = champion + rng.normal(0.005, 0.2, 300)  # tiny gain, large noise
    decision = decide_gate(
        _evidence("new", challenger, groups, version=2),
        _evidence("old", champion, groups),
        LOADS,
        GateConfig(max_slice_drop=1.0),
    )
    verdicts = {c.name: c.passed for c in decision.checks}
    assert decision.candidate_score > decision.champion_score
    assert verdicts["margin"] and not verdicts["bootstrap"]
    assert not decision.promote
    low, high = decision.evidence["gain"]["interval"]
    assert low < 0 < high


def test_gate_holds_on_coverage_and_on_a_failed_load():
    groups = np.array(["light"] * 100)
    base = np.linspace(0, 0.5, 100)
    narrow = decide_gate(
        _evidence("new", base + 0.1, groups, coverage=0.2, version=2),
        _evidence("old", base, groups, coverage=0.5),
        LOADS,
    )
    assert {c.name for c in narrow.checks if not c.passed} == {"coverage"}
    broken = Check("load", False, "did not load")
    first = decide_gate(_evidence("new", base, groups), None, broken)
    assert first.kind == "first_run" and not first.promote
    assert decide_gate(_evidence("new", base, groups), None, LOADS).promote


def test_small_slices_are_reported_but_not_gated():
    groups = np.array(["heavy"] * 195 + ["cold"] * 5)
    champion = np.full(200, 0.4)
    challenger = np.where(groups == "cold", 0.0, 0.5)
    decision = decide_gate(
        _evidence("new", challenger, groups, version=2),
        _evidence("old", champion, groups),
        LOADS,
        GateConfig(min_slice_users=20),
    )
    assert decision.promote
    rows = {r["group"]: r for r in decision.evidence["slices"]}
    assert rows["cold"]["change"] == pytest.approx(-0.4)


def test_decision_record_is_json_safe_tagged_and_readable():
    groups = np.array(["heavy"] * 200 + ["light"] * 200)
    decision = decide_gate(
        _evidence("new", np.where(groups == "heavy", 0.6, 0.3), groups, 2),
        _evidence("old", np.full(400, 0.4), groups),
        LOADS,
    )
    out = decision.to_dict()
    assert out["verdict"] == "hold" and out["kind"] == "gate"
    assert out["checks"][3] == {
        "name": "slices",
        "passed": False,
        "detail": out["checks"][3]["detail"],
        "value": pytest.approx(-0.1),
        "threshold": -0.05,
    }
    tags = decision.as_tags()
    assert tags["recsys.decision.check.slices"] == "fail"
    assert tags["recsys.decision.manual"] == "false"
    report = to_markdown(decision)
    assert report.startswith("# Promotion decision: HOLD")
    assert "| slices | FAIL |" in report


def test_check_load_times_the_answer_and_fails_on_errors():
    class Model:
        def predict(self, frame, params):
            return pd.DataFrame({"user_id": frame["user_id"], "item_id": 1})

    ok = check_load(lambda: Model(), np.array([1, 2]), k=5, budget_s=10.0)
    assert ok.passed and ok.threshold == 10.0

    def broken():
        raise OSError("no such model")

    failed = check_load(broken, np.array([1]), k=5, budget_s=10.0)
    assert not failed.passed and "OSError: no such model" in failed.detail
    assert not check_load(lambda: Model(), np.array([1]), k=5, budget_s=-1.0).passed


def test_manual_decisions_need_a_reason():
    decision = manual_decision("rollback", 1, 2, "bad recommendations in production")
    assert decision.promote and decision.manual and decision.kind == "rollback"
    assert decision.as_tags()["recsys.decision.manual"] == "true"
    with pytest.raises(PromotionInputError, match="needs a reason"):
        manual_decision("manual_promote", 1, None, "  ")


def test_rollback_and_manual_promote_move_aliases_and_leave_records(
    isolated_mlflow, tmp_path, make_decision
):
    import json

    import scipy.sparse as sp
    from mlflow import MlflowClient

    from recsys import registry
    from recsys.errors import NotFoundError
    from recsys.ids import IdMap
    from recsys.models import make_model

    frame = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12]})
    id_map = IdMap.from_frame(frame)
    X = sp.csr_matrix(id_map.to_matrix(frame))
    info = registry.log_model_run(
        make_model("popularity").fit(X),
        id_map=id_map,
        train_matrix=X,
        params={},
        metrics={"ndcg@10": 0.1},
        split_info={},
        data_hash="h",
        run_name="pop",
        k=2,
    )
    v1, v2 = (registry.register_model(info.model_uri) for _ in range(2))
    with pytest.raises(NotFoundError, match="no champion and previous_champion"):
        registry.rollback()
    registry.apply_decision(None, v1, make_decision(0.1, None))
    registry.mark_challenger(None, v2)
    registry.apply_decision(None, v2, make_decision(0.2, 0.1))
    assert registry.aliases() == {"champion": v2, "previous_champion": v1}

    back = registry.rollback(reason="complaints about v2")
    assert registry.aliases() == {"champion": v1, "previous_champion": v2}
    assert back.kind == "rollback" and back.champion_version == v2

    registry.promote_manually(v2, "fixed upstream data")
    assert registry.aliases() == {"champion": v2, "previous_champion": v1}
    client = MlflowClient(isolated_mlflow)
    tags = client.get_model_version("recsys", str(v2)).tags
    assert tags["recsys.decision.kind"] == "manual_promote"
    assert tags["recsys.decision.manual"] == "true"
    record = client.download_artifacts(info.run_id, f"promotion/recsys-v{v2}.json", str(tmp_path))
    reason = json.loads(open(record).read())["reason"]
    assert reason == "manual_promote (manual): fixed upstream data"
    with pytest.raises(NotFoundError, match="has no version 99"):
        registry.promote_manually(99, "typo")
