"""Drift figures and the retraining policy on hand-made data with hand-computed truths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys.evaluation import drift
from recsys.promotion.retrain import RetrainPolicy, decide_retraining, evidence_checks


def _frame(users, items, ratings=None, times=None) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            USER_COL: users,
            ITEM_COL: items,
            RATING_COL: ratings if ratings is not None else [4.0] * n,
            TIME_COL: times if times is not None else list(range(n)),
        }
    )


def test_psi_is_zero_for_the_same_distribution_and_matches_a_hand_computed_value():
    reference = pd.Series([1] * 50 + [2] * 50)  # two items, two groups of equal mass
    assert drift.item_psi(reference, pd.Series([1, 2] * 10), bins=2) == pytest.approx(0.0)
    # Batch shares 0.8 / 0.2 against 0.5 / 0.5 (plus the epsilon, renormalised).
    eps = drift.PSI_EPSILON
    p = np.array([0.5 + eps, 0.5 + eps]) / (1 + 2 * eps)
    q = np.array([0.8 + eps, 0.2 + eps]) / (1 + 2 * eps)
    expected = float(np.sum((q - p) * np.log(q / p)))
    batch = pd.Series([1] * 8 + [2] * 2)
    assert drift.item_psi(reference, batch, bins=2) == pytest.approx(expected)
    assert expected == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5), rel=1e-3)


def test_psi_leaves_new_items_to_the_unknown_share_and_is_nan_without_known_items():
    reference = pd.Series([1, 1, 2, 2])
    assert drift.item_psi(reference, pd.Series([1, 2, 99, 98]), bins=2) == pytest.approx(0.0)
    assert math.isnan(drift.item_psi(reference, pd.Series([99])))


def test_popularity_groups_give_the_head_item_its_own_group():
    groups = drift.popularity_groups(pd.Series([1] * 6 + [2, 3, 4, 5]), bins=4)
    assert groups.to_dict() == {1: 0, 2: 2, 3: 2, 4: 3, 5: 3}


def test_js_distance_limits():
    same = pd.Series([1, 2, 3])
    assert drift.distribution_js(same, same) == pytest.approx(0.0)
    assert drift.distribution_js(pd.Series([1, 1]), pd.Series([2, 2])) == pytest.approx(1.0)


def test_rating_js_bins_a_continuous_scale():
    rng = np.random.default_rng(0)
    reference = pd.Series(rng.normal(0, 1, 5000))
    assert drift.rating_js(reference, pd.Series(rng.normal(0, 1, 5000))) < 0.05
    assert drift.rating_js(reference, pd.Series(rng.normal(3, 1, 5000))) > 0.7


def test_activity_compares_the_batch_with_an_equally_large_latest_slice():
    # Early reference users are heavy (5 rows each), the latest slice light (1 each).
    early = [u for u in range(10) for _ in range(5)]
    late = list(range(100, 120))
    reference = _frame(early + late, list(range(70)), times=list(range(70)))
    light = _frame(list(range(200, 220)), list(range(20)))
    heavy = _frame([u for u in range(300, 304) for _ in range(5)], list(range(20)))
    assert drift.activity(reference, light)["activity_ks"] == pytest.approx(0.0)
    assert drift.activity(reference, heavy)["activity_ks"] == pytest.approx(1.0)


def test_unknown_shares_count_rows():
    reference = drift.Reference(_frame([1, 2], [10, 11]))
    batch = _frame([1, 1, 3, 4], [10, 12, 11, 13])
    assert drift.unknown_shares(batch, reference) == {
        "unknown_user_share": 0.5,
        "unknown_item_share": 0.5,
    }


def test_decay_is_the_relative_drop_and_none_without_a_baseline():
    k = 10
    assert drift.decay(
        {"hit_rate@10": 0.2, "ndcg@10": 0.1}, {"hit_rate@10": 0.4, "ndcg@10": 0.1}, k
    ) == {
        "hit_rate_drop": pytest.approx(0.5),
        "ndcg_drop": pytest.approx(0.0),
    }
    assert drift.decay(
        {"hit_rate@10": None, "ndcg@10": 0.1}, {"hit_rate@10": 0.4, "ndcg@10": 0}, k
    ) == {
        "hit_rate_drop": None,
        "ndcg_drop": None,
    }


def test_prequential_scores_the_batch_of_known_users_without_their_training_items(tmp_path):
    """Hand-computed: popularity ranks item 3 (20 users), 0 (10), 1 (5), 2 (none)."""
    import scipy.sparse as sp

    from recsys.data.forgotten import ForgottenUsers
    from recsys.ids import IdMap
    from recsys.models import make_model
    from recsys.serving.served import ServedRecommender

    pairs = [(u, 3) for u in range(20)] + [(u, 0) for u in range(10)] + [(u, 1) for u in range(5)]
    rows, cols = zip(*pairs, strict=True)
    X = sp.csr_matrix((np.ones(len(pairs), np.float32), (rows, cols)), shape=(20, 4))
    forgotten = ForgottenUsers(tmp_path / "privacy")
    served = ServedRecommender(
        make_model("popularity").fit(X),
        IdMap(pd.Index(range(20), name=USER_COL), pd.Index(range(4), name=ITEM_COL)),
        X,
        forgotten=forgotten,
    )
    # Every user's batch holds items 0 and 2; user 999 is unknown.
    batch = _frame([u for u in range(20) for _ in (0, 1)] + [999], [0, 2] * 20 + [0])
    # Top-1, seen items left out: users 0-4 get item 2 (a hit: their new item is 2),
    # users 5-9 item 1 (a miss), users 10-19 item 0 (a hit).
    found = drift.prequential(served, batch, 1, min_users=1)
    assert found == {"hit_rate@1": 15 / 20, "ndcg@1": 15 / 20, "prequential_users": 20}
    forgotten.add(19, at=0.0)  # a forgotten user no longer counts as known
    assert drift.prequential(served, batch, 1, min_users=1)["hit_rate@1"] == 14 / 19
    assert drift.prequential(served, batch, 1, min_users=20)["hit_rate@1"] is None


# ------------------------------------------------------------------- policy
def _quiet(**changes) -> dict:
    figures = {
        "item_psi": 0.02,
        "activity_ks": 0.05,
        "unknown_user_share": 0.01,
        "unknown_item_share": 0.0,
        "rating_js": 0.03,
        "hit_rate_drop": 0.05,
        "ndcg_drop": None,
    }
    return {**figures, **changes}


def test_every_check_records_its_figure_and_threshold():
    checks = evidence_checks(_quiet(item_psi=0.31), RetrainPolicy())
    psi = next(c for c in checks if c.name == "item_psi")
    assert (psi.value, psi.threshold, psi.breached) == (0.31, 0.2, True)
    assert psi.sentence() == "item popularity PSI 0.310 > 0.2"
    ndcg = next(c for c in checks if c.name == "ndcg_drop")
    assert ndcg.value is None and not ndcg.breached
    assert len(checks) == 7


def _decide(measurement, **kw):
    args = {"now": 100_000.0, "last_retrain_at": None, "has_champion": True, "changed": True}
    return decide_retraining(measurement, RetrainPolicy(), **{**args, **kw})


def test_quiet_figures_hold_and_say_what_was_measured():
    decision = _decide(_quiet())
    assert decision.action == "hold" and not decision.retrain
    assert "item popularity PSI 0.020 <= 0.2" in decision.reason


def test_a_breach_retrains_and_names_the_figure_and_threshold():
    decision = _decide(_quiet(unknown_item_share=0.3))
    assert decision.action == "retrain"
    assert decision.reason == "unknown items' share 0.300 > 0.1"


def test_a_breach_within_the_cooldown_is_deferred_until_it_ends():
    decision = _decide(_quiet(item_psi=0.5), last_retrain_at=100_000.0 - 3600)
    assert decision.action == "defer"
    assert decision.cooldown_until == 100_000.0 - 3600 + 6 * 3600
    assert "1.0 h ago (cooldown 6 h)" in decision.reason
    assert _decide(_quiet(item_psi=0.5), last_retrain_at=100_000.0 - 7 * 3600).retrain


def test_unchanged_data_is_skipped_and_no_champion_or_an_erasure_retrains():
    assert _decide(None, changed=False).action == "skip"
    first = _decide(None, changed=False, has_champion=False)
    assert first.retrain and first.reason == "there is no champion yet"
    assert _decide(None, changed=False, has_champion=False, has_data=False).action == "skip"
    erased = _decide(None, changed=False, erasures_pending=2)
    assert erased.retrain and erased.reason == "the champion still knows 2 forgotten user(s)"


def test_the_policy_takes_overrides_and_refuses_unknown_settings():
    from recsys.errors import InputError

    assert RetrainPolicy.with_overrides({"cooldown_hours": 1}).cooldown_hours == 1.0
    with pytest.raises(InputError, match="unknown retraining setting"):
        RetrainPolicy.with_overrides({"psi": 0.1})
    with pytest.raises(InputError, match=">= 0"):
        RetrainPolicy.with_overrides({"item_psi": -1})


def test_decisions_serialise_with_every_check():
    record = _decide(_quiet(item_psi=0.4), batch="abc").to_dict()
    assert record["retrain"] is True and record["batch"] == "abc"
    assert {c["name"] for c in record["checks"]} >= {"item_psi", "hit_rate_drop"}
    assert record["policy"]["item_psi"] == 0.2
