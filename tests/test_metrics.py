"""Ranking metrics of PROTOCOL.md §3, checked against a ranking worked out by hand.

Discounts used below (1 / log2(r + 1)):
    r=1: 1
    r=2: 1/log2(3) = 0.6309297535714575
    r=3: 1/log2(4) = 0.5
    r=4: 1/log2(5) = 0.43067655807339306
    r=5: 1/log2(6) = 0.38685280723454163
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from debias_pipeline.evaluation.metrics import RankingMetrics, per_user_metrics, ranking_metrics

D1, D2, D3, D4, D5 = 1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5), 1 / math.log2(6)

# User 0: six rows, ranked by score 0 > 1 > 2 > 3 > 4 > 5 (items = rank order),
#         positives at ranks 1, 3, 5 -> P = 3.
# User 1: a tie at score 0.5 between items 7 (negative) and 3 (positive); the lower
#         item id (3) ranks first, so the only positive (P = 1) is at rank 1.
# User 2: no positive -> skipped.
ROWS = [
    # user, item, label, score
    (0, 0, 1, 0.9),
    (0, 1, 0, 0.8),
    (0, 2, 1, 0.7),
    (0, 3, 0, 0.6),
    (0, 4, 1, 0.5),
    (0, 5, 0, 0.1),
    (1, 7, 0, 0.5),
    (1, 3, 1, 0.5),
    (1, 9, 0, 0.2),
    (2, 0, 0, 0.3),
    (2, 1, 0, 0.4),
]

# K = 2
#   user 0: top 2 = ranks 1, 2 -> rels 1, 0: hits 1, min(K, P) = min(2, 3) = 2
#           recall = 1/2; DCG = D1 = 1; IDCG = D1 + D2 = 1.6309297535714575
#           NDCG = 1 / 1.6309297535714575 = 0.6131471927654584
#   user 1: hits 1, min(2, 1) = 1 -> recall 1; DCG = D1, IDCG = D1 -> NDCG 1
#   mean recall = (0.5 + 1) / 2 = 0.75; mean NDCG = (0.6131471927654584 + 1) / 2 = 0.8065735963827292
U0_NDCG_AT_2 = 1.0 / (1.0 + 0.6309297535714575)
# K = 5
#   user 0: top 5 holds ranks 1, 3, 5 -> hits 3, min(5, 3) = 3 -> recall 1
#           DCG = D1 + D3 + D5 = 1 + 0.5 + 0.38685280723454163 = 1.8868528072345416
#           IDCG (min(K, P) = 3 positives on top) = D1 + D2 + D3 = 2.1309297535714575
#           NDCG = 1.8868528072345416 / 2.1309297535714575 = 0.8854598815714874
#           (an IDCG over K = 5 positives would be 2.9484591188793923 -> 0.6399 instead)
#   user 1: recall 1, NDCG 1
#   mean recall = 1; mean NDCG = (0.8854598815714874 + 1) / 2 = 0.9427299407857437
U0_NDCG_AT_5 = (1.0 + 0.5 + 0.38685280723454163) / (1.0 + 0.6309297535714575 + 0.5)


def _columns(rows):
    users, items, labels, scores = (np.array(column) for column in zip(*rows))
    return users, items, labels, scores.astype(float)


def test_discount_constants_match_the_formula():
    # guards the hand-written constants above
    assert D2 == pytest.approx(0.6309297535714575)
    assert D4 == pytest.approx(0.43067655807339306)
    assert D5 == pytest.approx(0.38685280723454163)


def test_per_user_metrics_at_2():
    user_ids, recall, ndcg = per_user_metrics(*_columns(ROWS), k=2)
    np.testing.assert_array_equal(user_ids, [0, 1])  # user 2 has no positive
    np.testing.assert_allclose(recall, [0.5, 1.0])
    np.testing.assert_allclose(ndcg, [0.6131471927654584, 1.0], rtol=1e-12)
    assert ndcg[0] == pytest.approx(U0_NDCG_AT_2, rel=1e-12)


def test_per_user_metrics_at_5_uses_min_k_p_positives_in_idcg():
    user_ids, recall, ndcg = per_user_metrics(*_columns(ROWS), k=5)
    np.testing.assert_array_equal(user_ids, [0, 1])
    np.testing.assert_allclose(recall, [1.0, 1.0])
    np.testing.assert_allclose(ndcg, [0.8854598815714874, 1.0], rtol=1e-12)
    assert ndcg[0] == pytest.approx(U0_NDCG_AT_5, rel=1e-12)


@pytest.mark.parametrize(
    ("k", "recall", "ndcg"),
    [
        (2, 0.75, 0.8065735963827292),
        (5, 1.0, 0.9427299407857437),
    ],
)
def test_ranking_metrics_means_and_skipped_count(k, recall, ndcg):
    result = ranking_metrics(*_columns(ROWS), k=k)
    assert result == RankingMetrics(k=k, recall=pytest.approx(recall), ndcg=pytest.approx(ndcg), n_users=2, n_skipped=1)
    assert isinstance(result.recall, float) and isinstance(result.ndcg, float)


def test_as_dict_names():
    result = RankingMetrics(k=5, recall=0.25, ndcg=0.5, n_users=3, n_skipped=1)
    assert result.as_dict("test") == {
        "test_recall_at_5": 0.25,
        "test_ndcg_at_5": 0.5,
        "test_users_evaluated": 3,
        "test_users_skipped": 1,
    }


@pytest.mark.parametrize(("positive_item", "expected_recall"), [(3, 1.0), (7, 0.0)])
def test_ties_broken_by_lower_item_id(positive_item, expected_recall):
    # Items 7 and 3 share score 0.5; item 3 (lower id) takes rank 1 whatever the row
    # order. Recall@1 = 1 iff the positive is item 3.
    rows = [(0, 7, int(positive_item == 7), 0.5), (0, 3, int(positive_item == 3), 0.5), (0, 9, 0, 0.1)]
    result = ranking_metrics(*_columns(rows), k=1)
    assert result.recall == expected_recall
    assert result.ndcg == expected_recall


def test_tie_rule_with_positive_second_gives_discounted_ndcg():
    # Tie between items 2 (negative) and 8 (positive): item 2 first, positive at rank 2.
    # NDCG@2 = D2 / D1 = 0.6309297535714575; Recall@2 = 1 / min(2, 1) = 1.
    rows = [(4, 8, 1, 1.0), (4, 2, 0, 1.0)]
    result = ranking_metrics(*_columns(rows), k=2)
    assert result.recall == 1.0
    assert result.ndcg == pytest.approx(0.6309297535714575, rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_row_order_does_not_matter(k):
    users, items, labels, scores = _columns(ROWS)
    expected = per_user_metrics(users, items, labels, scores, k)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(users.size)
        got = per_user_metrics(users[perm], items[perm], labels[perm], scores[perm], k)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=0)
    # reversed order too, which turns every tie around
    got = per_user_metrics(users[::-1], items[::-1], labels[::-1], scores[::-1], k)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)


def test_only_the_users_own_rows_are_ranked():
    # User 0's positive has a low score (0.1) but user 1's higher-scored rows do not
    # compete with it: it is rank 1 among user 0's own rows -> Recall@1 = 1.
    rows = [(0, 0, 1, 0.1), (1, 0, 1, 0.9), (1, 1, 0, 0.95)]
    user_ids, recall, _ = per_user_metrics(*_columns(rows), k=1)
    np.testing.assert_array_equal(user_ids, [0, 1])
    np.testing.assert_allclose(recall, [1.0, 0.0])  # user 1: item 1 (negative) on top


def test_all_users_skipped_gives_nan_means():
    rows = [(0, 0, 0, 0.3), (1, 1, 0, 0.2)]
    result = ranking_metrics(*_columns(rows), k=5)
    assert result.n_users == 0 and result.n_skipped == 2
    assert math.isnan(result.recall) and math.isnan(result.ndcg)


def test_nan_scores_raise():
    users, items, labels, scores = _columns(ROWS)
    scores[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(users, items, labels, scores, k=5)


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        per_user_metrics(*_columns(ROWS), k=k)


def test_mismatched_lengths_raise():
    users, items, labels, scores = _columns(ROWS)
    with pytest.raises(ValueError, match="one length"):
        per_user_metrics(users, items[:-1], labels, scores, k=5)


def test_more_positives_than_k_divides_the_hits_by_k():
    # One user, ten rows ranked by score (item i at rank i + 1); P = 7 positives at
    # ranks 1, 3, 4, 6, 7, 8, 9. K = 5: the top 5 holds 3 of them.
    #   Recall@5 = hits / min(K, P) = 3 / min(5, 7) = 3 / 5 = 0.6 (not 3 / 7 = 0.4286)
    #   DCG = D1 + D3 + D4 = 1.9306765580733931; IDCG (min(K, P) = 5 positives on top)
    #   = D1 + ... + D5 = 2.9484591188793923 -> NDCG = 0.6548086577531307
    labels = [1, 0, 1, 1, 0, 1, 1, 1, 1, 0]
    rows = [(0, item, label, 1.0 - item / 10) for item, label in enumerate(labels)]
    assert sum(labels) == 7
    user_ids, recall, ndcg = per_user_metrics(*_columns(rows), k=5)
    assert recall.tolist() == [0.6]
    assert ndcg.tolist() == [pytest.approx(0.6548086577531307, rel=1e-12)]
    assert ranking_metrics(*_columns(rows), k=5).recall == 0.6
