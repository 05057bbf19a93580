"""Popularity-bias and coverage metrics on small lists computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.metrics import LinkPredAveragePopularity, LinkPredCoverage

from debias_pipeline.evaluation.popularity import (
    average_recommendation_popularity,
    exposure_counts,
    exposure_gini,
    gini,
    head_items,
    item_coverage,
    long_tail_share,
    popularity_metrics,
)

# Six items; train popularity φ. Head (⌈0.2 · 6⌉ = 2 most popular): items 0 (10) and 3 (6);
# long tail: items 1, 2, 4, 5.
POPULARITY = np.array([10, 0, 4, 6, 1, 3])
TOP_K = np.array(
    [
        [0, 3, 2],  # φ 10, 6, 4; tail: item 2
        [2, 5, -1],  # φ 4, 3; tail: both
        [-1, -1, -1],  # nothing recommended: left out of ARP and APLT
        [4, 0, -1],  # φ 1, 10; tail: item 4
    ]
)


def test_gini_by_hand() -> None:
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    # sorted 0, 0, 0, 4: 2 · (4 · 4) / (4 · 4) - 5/4 = 0.75
    assert gini(np.array([0, 4, 0, 0])) == pytest.approx(0.75)
    # sorted 1, 2, 3: 2 · (1 + 4 + 9) / (3 · 6) - 4/3 = 2/9
    assert gini(np.array([3, 1, 2])) == pytest.approx(2 / 9)
    assert gini(np.zeros(3)) == 0.0


def test_head_is_the_top_fifth_of_items_by_popularity() -> None:
    np.testing.assert_array_equal(head_items(POPULARITY), [True, False, False, True, False, False])
    # ⌈0.5 · 6⌉ = 3: items 0, 3 and 2 (φ 4)
    np.testing.assert_array_equal(head_items(POPULARITY, 0.5), [True, False, True, True, False, False])
    # equal popularity at the boundary: the lower id goes first (⌈0.2 · 5⌉ = 1)
    np.testing.assert_array_equal(head_items(np.array([5, 5, 5, 1, 1])), [True, False, False, False, False])
    # 0.07 · 100 = 7.000000000000001 in floating point: still 7 head items
    assert head_items(np.arange(100), 0.07).sum() == 7


def test_arp_by_hand() -> None:
    # users 0, 1, 3: (10 + 6 + 4) / 3 = 20/3, (4 + 3) / 2 = 7/2, (1 + 10) / 2 = 11/2
    # ARP = (20/3 + 7/2 + 11/2) / 3 = (40 + 21 + 33) / 18 = 47/9
    assert average_recommendation_popularity(TOP_K, POPULARITY) == pytest.approx(47 / 9)


def test_aplt_by_hand() -> None:
    # users 0, 1, 3: 1/3, 2/2, 1/2; APLT = (2 + 6 + 3) / 18 = 11/18
    assert long_tail_share(TOP_K, POPULARITY) == pytest.approx(11 / 18)
    # no head: every listed item is in the tail; all head: none is
    assert long_tail_share(TOP_K, POPULARITY, head_share=0.0) == 1.0
    assert long_tail_share(TOP_K, POPULARITY, head_share=1.0) == 0.0


def test_exposure_gini_and_coverage_by_hand() -> None:
    # listed: item 0 twice (users 0, 3), item 1 never, item 2 twice (users 0, 1), items 3, 4, 5 once
    np.testing.assert_array_equal(exposure_counts(TOP_K, 6), [2, 0, 2, 1, 1, 1])
    # sorted 0, 1, 1, 1, 2, 2 (total 7): 2 · (0 + 2 + 3 + 4 + 10 + 12) / (6 · 7) - 7/6 = 62/42 - 49/42 = 13/42
    assert exposure_gini(TOP_K, 6) == pytest.approx(13 / 42)
    # 5 of the 6 items are listed
    assert item_coverage(TOP_K, 6) == pytest.approx(5 / 6)


def test_popularity_metrics_gathers_the_four() -> None:
    assert popularity_metrics(TOP_K, POPULARITY) == pytest.approx(
        {"arp": 47 / 9, "aplt": 11 / 18, "exposure_gini": 13 / 42, "item_coverage": 5 / 6}
    )


def test_k_larger_than_the_catalogue() -> None:
    # Two items, K = 4: the lists are padded. Head: ⌈0.2 · 2⌉ = 1 item, item 0 (φ 3).
    lists = np.array([[1, 0, -1, -1], [0, -1, -1, -1]])
    popularity = np.array([3, 1])
    # ARP: ((1 + 3) / 2 + 3) / 2 = 5/2; APLT: (1/2 + 0) / 2 = 1/4
    # exposure 1, 2 (sorted): 2 · (1 + 4) / (2 · 3) - 3/2 = 1/6; coverage 2/2
    assert popularity_metrics(lists, popularity) == pytest.approx(
        {"arp": 5 / 2, "aplt": 1 / 4, "exposure_gini": 1 / 6, "item_coverage": 1.0}
    )


def test_zero_popularity() -> None:
    # Every φ = 0: ARP 0; the head is ⌈0.2 · 5⌉ = 1 item, item 0 by the id rule.
    lists = np.array([[0, 1], [2, 3]])
    popularity = np.zeros(5)
    assert average_recommendation_popularity(lists, popularity) == 0.0
    # user 0: 1 of 2 in the tail (item 1); user 1: 2 of 2 → (1/2 + 1) / 2 = 3/4
    assert long_tail_share(lists, popularity) == pytest.approx(3 / 4)
    # an item with no train positive is always in the long tail
    assert not head_items(np.array([4, 0, 2, 0, 0]))[[1, 3, 4]].any()


def test_no_recommendation_at_all() -> None:
    lists = np.full((3, 2), -1)
    assert math.isnan(average_recommendation_popularity(lists, POPULARITY))
    assert math.isnan(long_tail_share(lists, POPULARITY))
    assert exposure_gini(lists, 6) == 0.0
    assert item_coverage(lists, 6) == 0.0
    assert math.isnan(item_coverage(np.zeros((2, 0), dtype=np.int64), 0))


def test_full_lists_agree_with_pytorch_geometric() -> None:
    # Without padding PyG's ARP and coverage compute the same quantities.
    rng = np.random.default_rng(3)
    popularity = rng.integers(0, 50, size=40)
    lists = np.stack([rng.choice(40, size=5, replace=False) for _ in range(30)])  # (30, 5)
    ground_truth = torch.zeros((2, 0), dtype=torch.long)  # not read by either metric
    arp = LinkPredAveragePopularity(k=5, popularity=torch.as_tensor(popularity, dtype=torch.float64))
    arp.update(torch.as_tensor(lists), ground_truth)
    coverage = LinkPredCoverage(k=5, num_dst_nodes=40)
    coverage.update(torch.as_tensor(lists), ground_truth)
    assert average_recommendation_popularity(lists, popularity) == pytest.approx(float(arp.compute()), rel=1e-6)
    assert item_coverage(lists, 40) == pytest.approx(float(coverage.compute()))


def test_padding_is_where_pytorch_geometric_differs() -> None:
    # PyG reads -1 as the last item: coverage counts item 2 as listed and ARP averages its
    # popularity in; here only items 0 and 1 are listed.
    lists = np.array([[0, -1], [1, -1]])
    popularity = np.array([2, 4, 100])
    ground_truth = torch.zeros((2, 0), dtype=torch.long)
    coverage = LinkPredCoverage(k=2, num_dst_nodes=3)
    coverage.update(torch.as_tensor(lists), ground_truth)
    assert float(coverage.compute()) == pytest.approx(1.0)
    arp = LinkPredAveragePopularity(k=2, popularity=torch.as_tensor(popularity, dtype=torch.float64))
    arp.update(torch.as_tensor(lists), ground_truth)
    assert float(arp.compute()) == pytest.approx(51.5)  # ((2 + 100) / 2 + (4 + 100) / 2) / 2 = (51 + 52) / 2
    assert item_coverage(lists, 3) == pytest.approx(2 / 3)
    assert average_recommendation_popularity(lists, popularity) == pytest.approx(3.0)  # (2 + 4) / 2


@pytest.mark.parametrize(
    ("lists", "n_items", "message"),
    [
        (np.array([0, 1]), 3, r"\(n_users, K\) array"),
        (np.array([[0.0, 1.0]]), 3, "integer item ids"),
        (np.array([[0, 3]]), 3, r"ids must be in \[-1, 3\)"),
        (np.array([[0, -2]]), 3, r"ids must be in \[-1, 3\)"),
        (np.array([[1, -1, -1], [2, 0, 2]]), 3, "lists an item twice for user row 1"),
    ],
)
def test_malformed_lists_are_refused(lists: np.ndarray, n_items: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        item_coverage(lists, n_items)


@pytest.mark.parametrize(
    ("popularity", "head_share", "message"),
    [
        (np.array([1, -1, 2]), 0.2, "finite counts >= 0"),
        (np.array([[1, 2]]), 0.2, "1-D array"),
        (np.array([1.0, np.nan]), 0.2, "finite counts"),
        (np.array([1, 2]), 1.5, r"head_share must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_popularity_or_head_share_is_refused(popularity: np.ndarray, head_share: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        long_tail_share(np.array([[0, 1]]), popularity, head_share)
