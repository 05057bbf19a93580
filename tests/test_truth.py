"""Truth-based metrics, checked against values computed by hand on tiny examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from debias_pipeline.data.simulation import GroundTruth
from debias_pipeline.evaluation.truth import (
    effective_rank,
    expected_auc,
    recovery_metrics,
    spearman,
    top_n_relevance,
    truth_ranking_metrics,
    truth_ranking_per_user,
)

# ---- expected AUC ------------------------------------------------------------------------------


def test_expected_auc_with_certain_labels_is_the_ordinary_auc():
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (pos, neg) pairs,
    # 0.35 > 0.1, 0.35 < 0.4, 0.8 > 0.1, 0.8 > 0.4 -> 3 / 4
    assert expected_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_expected_auc_counts_ties_one_half():
    # pairs (pos 0.5, neg 0.5) tie and (pos 0.5, neg 0.2) win: (0.5 + 1) / 2
    assert expected_auc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0])) == pytest.approx(0.75)


def test_expected_auc_with_soft_labels_by_hand():
    # p = (0.2, 0.6) at scores (1, 2). Ordered pairs a != b weighted p_a (1 - p_b):
    # (a=2, b=1) wins: 0.6 · 0.8 = 0.48; (a=1, b=2) loses: 0.2 · 0.4 = 0.08 -> 0.48 / 0.56
    assert expected_auc(np.array([1.0, 2.0]), np.array([0.2, 0.6])) == pytest.approx(0.48 / 0.56)
    # reversed scores: 0.08 / 0.56
    assert expected_auc(np.array([2.0, 1.0]), np.array([0.2, 0.6])) == pytest.approx(0.08 / 0.56)


def test_expected_auc_of_three_soft_labels_by_brute_force():
    scores = np.array([0.3, -1.0, 0.3, 2.0])
    p = np.array([0.9, 0.1, 0.4, 0.7])
    wins = total = 0.0
    for a in range(4):
        for b in range(4):
            if a != b:
                weight = p[a] * (1 - p[b])
                total += weight
                wins += weight * (1.0 if scores[a] > scores[b] else 0.5 if scores[a] == scores[b] else 0.0)
    assert expected_auc(scores, p) == pytest.approx(wins / total)


def test_expected_auc_is_one_half_when_every_probability_is_equal():
    # nothing to discriminate: every pair weighs the same, wins and losses cancel
    assert expected_auc(np.array([3.0, 1.0, 2.0]), np.full(3, 0.3)) == pytest.approx(0.5)


def test_expected_auc_is_nan_without_events_or_non_events():
    assert math.isnan(expected_auc(np.array([1.0, 2.0]), np.zeros(2)))
    assert math.isnan(expected_auc(np.array([1.0, 2.0]), np.ones(2)))


def test_the_truth_is_the_auc_ceiling():
    rng = np.random.default_rng(0)
    p = rng.random(200)
    oracle = expected_auc(p, p)
    assert oracle > expected_auc(p + rng.normal(scale=0.2, size=200), p)
    assert oracle == pytest.approx(expected_auc(np.log(p / (1 - p)), p))  # rank-based: σ does not matter


def test_expected_auc_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same size"):
        expected_auc(np.zeros(3), np.zeros(2))


# ---- Spearman ----------------------------------------------------------------------------------


def test_spearman_by_hand():
    # ranks 1 2 3 4 vs 1 3 2 4: Σd² = 2, ρ = 1 − 6 · 2 / (4 · 15) = 0.8
    assert spearman(np.array([10.0, 20.0, 30.0, 40.0]), np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx(0.8)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([0.9, 0.5, 0.1])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1.0, 1.0, 1.0]), np.array([0.1, 0.2, 0.3])))


# ---- ranking against the true preference -------------------------------------------------------


def test_top_n_relevance_skips_masked_items_and_breaks_ties_by_item():
    true_preference = np.array([[0.9, 0.5, 0.7, 0.5, 0.1]])
    masked = np.array([[True, False, False, False, False]])  # item 0 is a train positive
    # unmasked by preference: item 2 (0.7), then items 1 and 3 tie at 0.5 -> item 1 first
    np.testing.assert_array_equal(
        top_n_relevance(true_preference, masked, top_n=2), [[False, True, True, False, False]]
    )
    # asking for more than there are: every unmasked item
    assert top_n_relevance(true_preference, masked, top_n=9).sum() == 4


def test_truth_ranking_per_user_by_hand():
    # user 0: item 0 masked; relevant (top 2 true) = items 2 and 1.
    #   scores rank the unmasked items 3, 2, 4, 1 -> K = 2 list (3, 2): 1 hit.
    #   Recall@2 = 1 / min(2, 2) = 0.5; DCG = 1 / log2(3); IDCG = 1 + 1 / log2(3).
    # user 1: nothing masked; relevant = items 4 and 0; scores put 4 then 0 on top -> perfect.
    true_preference = np.array([[0.9, 0.6, 0.7, 0.2, 0.1], [0.8, 0.1, 0.2, 0.3, 0.95]])
    masked = np.array([[True, False, False, False, False], [False] * 5])
    scores = np.array([[5.0, 0.1, 0.9, 1.0, 0.5], [0.8, 0.1, 0.2, 0.3, 0.9]])
    recall, ndcg = truth_ranking_per_user(scores, true_preference, masked, k=2, top_n=2)
    np.testing.assert_allclose(recall, [0.5, 1.0])
    np.testing.assert_allclose(ndcg, [(1 / np.log2(3)) / (1 + 1 / np.log2(3)), 1.0])


def tiny_truth() -> GroundTruth:
    # preference logits = users @ items.T, a 3 x 4 matrix; exposure: rank 1
    preference_users = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    preference_items = np.array([[2.0, -1.0], [0.5, 0.5], [-1.0, 2.0], [0.0, 0.0]])
    exposure_users = np.array([[1.0], [2.0], [0.5]])
    exposure_items = np.array([[1.0], [-1.0], [0.0], [2.0]])
    return GroundTruth(preference_users, preference_items, exposure_users, exposure_items)


def test_ranking_by_the_true_preference_is_perfect_in_any_chunking():
    truth = tiny_truth()
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    for max_pairs in (4, 8, 100):  # 1, 2 or 3 users per chunk
        result = truth_ranking_metrics(lambda users: truth.logits("preference", users), truth, train, 2, 2, max_pairs)
        assert (result.recall, result.ndcg, result.n_users, result.n_skipped) == (1.0, 1.0, 3, 0)


def test_ranking_against_the_truth_by_hand():
    # true preference logits: u0 = (2, 0.5, -1, 0), u1 = (-1, 0.5, 2, 0), u2 = (1, 1, 1, 0).
    # u0 has item 0 masked: relevant top 1 = item 1; scores below rank item 3 first -> 0.
    # u1 relevant = item 2, ranked first -> 1. u2 relevant = item 0 (tie of 1, 1, 1: lowest id),
    # masked none; ranked first -> 1. Mean Recall@1 = NDCG@1 = 2 / 3.
    truth = tiny_truth()
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    scores = np.array([[9.0, 0.0, 1.0, 2.0], [0.0, 0.0, 3.0, 1.0], [3.0, 2.0, 1.0, 0.0]])
    result = truth_ranking_metrics(lambda users: scores[users], truth, train, k=1, top_n=1)
    assert result.recall == pytest.approx(2 / 3) and result.ndcg == pytest.approx(2 / 3)


# ---- recovery ------------------------------------------------------------------------------------


def test_recovery_of_the_truth_by_the_truth():
    truth = tiny_truth()
    result = recovery_metrics(truth.logits("exposure"), truth, "exposure", max_pairs=100, seed=0)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["auc"] == pytest.approx(result["oracle_auc"])
    assert 0.5 < result["auc"] < 1.0


def test_recovery_by_reversed_scores_and_on_a_seeded_sample():
    truth = tiny_truth()
    reversed_scores = -truth.logits("preference")
    result = recovery_metrics(reversed_scores, truth, "preference", max_pairs=100, seed=0)
    assert result["spearman"] == pytest.approx(-1.0)
    assert result["auc"] == pytest.approx(1 - result["oracle_auc"])
    sampled = recovery_metrics(reversed_scores, truth, "preference", max_pairs=6, seed=1)
    assert sampled == recovery_metrics(reversed_scores, truth, "preference", max_pairs=6, seed=1)


def test_recovery_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        recovery_metrics(np.zeros((3, 3)), tiny_truth(), "exposure", max_pairs=100, seed=0)


# ---- effective rank ------------------------------------------------------------------------------


def test_effective_rank_by_hand():
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    # shares 1/2, 1/4, 1/4: entropy = 1.5 log 2 -> 2^1.5
    assert effective_rank(np.array([2.0, 1.0, 1.0])) == pytest.approx(2**1.5)
    assert effective_rank(np.zeros(3)) == 0.0
