"""Ranking metrics: hand-computed truths, limits, and a brute-force cross-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import InputError
from recsys.evaluation.metrics import MetricInputError, per_user_metrics, ranking_metrics


def truth_of(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Sparse relevance: row u marks the items in rows[u]."""
    dense = np.zeros((len(rows), n_items))
    for u, items in enumerate(rows):
        dense[u, items] = 1
    return sp.csr_matrix(dense)


# user 0: recs [0, 1, 2], relevant {0, 2}  -> hits at ranks 1 and 3
# user 1: no relevant item                  -> not averaged
# user 2: recs [4, 5, 6], relevant {7}      -> no hit
REC = np.array([[0, 1, 2], [3, -1, -1], [4, 5, 6]])
TRUTH = truth_of([[0, 2], [], [7]], n_items=8)


def test_hand_computed_values():
    m = ranking_metrics(REC, TRUTH, 3, n_items=8)
    ndcg_user0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m == pytest.approx(
        {
            "precision@3": (2 / 3 + 0) / 2,
            "recall@3": (1 + 0) / 2,
            "ndcg@3": ndcg_user0 / 2,
            "map@3": ((1 / 1 + 2 / 3) / 2) / 2,
            "mrr@3": 1 / 2,
            "hit_rate@3": 1 / 2,
            "coverage": 7 / 8,
        }
    )


def test_keys_are_exact():
    assert list(ranking_metrics(REC, TRUTH, 3, n_items=8)) == [
        "precision@3",
        "recall@3",
        "ndcg@3",
        "map@3",
        "mrr@3",
        "hit_rate@3",
        "coverage",
    ]


def test_map_divides_by_min_of_relevant_and_k():
    # 5 relevant items, k = 2, both slots hit -> AP = (1/1 + 2/2) / min(5, 2) = 1
    m = ranking_metrics(np.array([[0, 1]]), truth_of([[0, 1, 2, 3, 4]], 5), 2, n_items=5)
    assert m["map@2"] == 1.0
    assert m["ndcg@2"] == 1.0
    assert m["recall@2"] == pytest.approx(2 / 5)


def test_mrr_uses_first_hit_only():
    m = ranking_metrics(np.array([[3, 0, 1]]), truth_of([[0, 1]], 4), 3, n_items=4)
    assert m["mrr@3"] == pytest.approx(1 / 2)


def test_perfect_list_scores_one():
    rec = np.array([[2, 0, 1], [1, 2, 0]])
    m = ranking_metrics(rec, truth_of([[0, 1, 2], [0, 1, 2]], 3), 3, n_items=3)
    assert all(v == pytest.approx(1.0) for v in m.values())


def test_no_hit_scores_zero():
    rec = np.array([[0, 1], [0, 1]])
    m = ranking_metrics(rec, truth_of([[2], [3]], 4), 2, n_items=4)
    assert {k: v for k, v in m.items() if k != "coverage"} == dict.fromkeys(
        ["precision@2", "recall@2", "ndcg@2", "map@2", "mrr@2", "hit_rate@2"], 0.0
    )
    assert m["coverage"] == 0.5


def test_short_list_caps_precision_but_not_recall():
    rec = np.array([[0, -1, -1]])
    m = ranking_metrics(rec, truth_of([[0]], 3), 3, n_items=3)
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == m["ndcg@3"] == m["map@3"] == 1.0


def test_narrower_rec_is_padded_and_wider_is_cut():
    truth = truth_of([[0, 3]], 4)
    padded = ranking_metrics(np.array([[0]]), truth, 2, n_items=4)
    assert padded["precision@2"] == 0.5
    cut = ranking_metrics(np.array([[1, 2, 3]]), truth, 2, n_items=4)
    assert cut["precision@2"] == 0.0
    assert cut["coverage"] == 0.5


def test_unrecommendable_relevant_items_lower_recall():
    # truth has an extra column (4) beyond the 4-item catalogue
    m = ranking_metrics(np.array([[0, 1]]), truth_of([[0, 4]], 5), 2, n_items=4)
    assert m["recall@2"] == 0.5


def test_per_user_means_equal_aggregate_and_index_rows():
    frame = per_user_metrics(REC, TRUTH, 3)
    assert frame.index.tolist() == [0, 2]
    assert frame.index.name == "user_row"
    agg = ranking_metrics(REC, TRUTH, 3, n_items=8)
    for column in frame.columns:
        assert frame[column].mean() == pytest.approx(agg[column])


def brute_force(rec: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, float]:
    """Per-user loops over Python lists and sets, natural-log discount (as Microsoft's)."""
    sums = dict.fromkeys(["precision", "recall", "ndcg", "map", "mrr", "hit_rate"], 0.0)
    n = 0
    for u in range(rec.shape[0]):
        relevant = set(truth[u].indices.tolist())
        if not relevant:
            continue
        n += 1
        ranked = rec[u][:k].tolist()
        hit_ranks = [r + 1 for r, i in enumerate(ranked) if i >= 0 and i in relevant]
        sums["precision"] += len(hit_ranks) / k
        sums["recall"] += len(hit_ranks) / len(relevant)
        dcg = sum(1 / math.log(1 + r) for r in hit_ranks)
        idcg = sum(1 / math.log(1 + r) for r in range(1, min(len(relevant), k) + 1))
        sums["ndcg"] += dcg / idcg
        sums["map"] += sum((j + 1) / r for j, r in enumerate(hit_ranks)) / min(len(relevant), k)
        sums["mrr"] += 1 / hit_ranks[0] if hit_ranks else 0.0
        sums["hit_rate"] += 1.0 if hit_ranks else 0.0
    return {f"{name}@{k}": total / n for name, total in sums.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width, k = 60, 40, 12, 10
    truth = sp.random(n_users, n_items, density=0.15, format="csr", random_state=seed)
    rec = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :width]
    rec[rng.random(rec.shape) < 0.1] = -1  # some empty slots
    got = ranking_metrics(rec, truth, k, n_items=n_items)
    expected = brute_force(rec, truth, k)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    assert got["coverage"] == np.unique(rec[:, :k][rec[:, :k] >= 0]).size / n_items


@pytest.mark.parametrize(
    ("rec", "truth", "k", "message"),
    [
        (np.array([[0, 0]]), truth_of([[0]], 2), 2, "rec_items row 0 recommends the same item"),
        (np.array([[0, 5]]), truth_of([[0]], 2), 2, r"hold -1 or item indices in \[0, 2\)"),
        (np.array([[0.0, 1.0]]), truth_of([[0]], 2), 2, "must be a 2-D integer array"),
        (np.array([[0, 1]]), truth_of([[0], [1]], 2), 2, "truth must be a sparse matrix with 1"),
        (np.array([[0, 1]]), truth_of([[0]], 2), 0, "k must be a positive integer, got 0"),
        (np.array([[0, 1]]), truth_of([[]], 2), 2, "truth holds no relevant item for any user"),
    ],
)
def test_bad_input_raises_clear_error(rec, truth, k, message):
    with pytest.raises(InputError, match=message):
        ranking_metrics(rec, truth, k, n_items=2)


def test_metric_input_error_is_a_value_error():
    assert issubclass(MetricInputError, ValueError)


def test_explicit_zeros_in_truth_are_not_relevant():
    truth = sp.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 0]), np.array([0, 1]))), (1, 2))
    assert truth.nnz == 2  # the zero is stored
    m = ranking_metrics(np.array([[0, 1]]), truth, 2, n_items=2)
    assert m["recall@2"] == 1.0
    assert m["mrr@2"] == 0.5
