"""Popularity bias and coverage of top-K recommendation lists.

Every metric reads each user's top-K item ids, an int array ``(n_users, K)`` in which
``-1`` marks an empty slot (a user with fewer than K rankable items, or K larger than
the catalogue), and, where it needs them, the items' train popularity φ(i) (the number
of train positives of i).

- ARP, average recommendation popularity: ``(1/|U|) Σ_u Σ_{i ∈ L_u} φ(i) / |L_u|``;
- APLT, average percentage of long-tail items: ``(1/|U|) Σ_u |L_u ∩ T| / |L_u|``, T the
  long tail;
- the Gini index of item exposure: of the times each catalogue item appears in the
  lists (0: every item shown equally often, → 1: all exposure on one item);
- item coverage: the share of catalogue items in at least one list.

ARP and APLT are as Abdollahpouri, Burke & Mobasher measure popularity bias ("Managing
Popularity Bias in Recommender Systems with Personalized Re-ranking", FLAIRS 2019). The
long tail follows the same authors' split of the catalogue by item count ("the top 20%
of items by popularity" are the short head, arXiv 1802.05382): the short head H is the
⌈0.2 |I|⌉ items of highest train popularity and T every other item, however many
interactions the head holds (not the variant whose head is the items that make up a
given share of the interactions). |U| counts the users with at least one recommended
item; ``L_u`` is user u's list without its empty slots.

PyTorch Geometric's ``LinkPredAveragePopularity`` and ``LinkPredCoverage`` compute ARP
and coverage for full lists, but they index with every entry of the list, so a ``-1``
slot counts the last item (its popularity, its coverage) and an empty slot is averaged
in as an item; with padding allowed they do not fit, and these are computed here (the
tests check both against them on full lists). PyG has no long-tail share or Gini.
"""

from __future__ import annotations

import math

import numpy as np

from debias_pipeline.data.simulation import gini

PADDING = -1  # an empty slot of a top-K list


def _lists(top_k: np.ndarray, n_items: int) -> np.ndarray:
    """``top_k`` as an int64 (n_users, K) array, checked.

    Raises:
        ValueError: For a shape other than 2-D, non-integer ids, ids outside
            [-1, n_items), or an item twice in one list.
    """
    lists = np.asarray(top_k)
    if lists.ndim != 2:
        raise ValueError(f"top_k must be a (n_users, K) array of item ids, got shape {lists.shape}")
    if lists.size and not np.issubdtype(lists.dtype, np.integer):
        raise ValueError(f"top_k must hold integer item ids, got dtype {lists.dtype}")
    lists = lists.astype(np.int64, copy=False)
    if lists.size and (lists.min() < PADDING or lists.max() >= n_items):
        raise ValueError(f"top_k ids must be in [-1, {n_items}) (-1: an empty slot), got {lists.min()}..{lists.max()}")
    ordered = np.sort(lists, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PADDING)
    if repeated.any():
        user = int(np.flatnonzero(repeated.any(axis=1))[0])
        raise ValueError(f"top_k lists an item twice for user row {user}: {lists[user].tolist()}")
    return lists


def _popularity(popularity: np.ndarray) -> np.ndarray:
    values = np.asarray(popularity, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)) or (values.size and values.min() < 0):
        raise ValueError("popularity must be a 1-D array of finite counts >= 0, one per item")
    return values


def _mean_over_lists(per_slot: np.ndarray, present: np.ndarray) -> float:
    """Mean over the users with a non-empty list of the mean of ``per_slot`` over their
    present slots; NaN when no user has one."""
    sizes = present.sum(axis=1)  # (n_users,) |L_u|
    shown = sizes > 0
    if not shown.any():
        return math.nan
    return float(np.mean(np.where(present, per_slot, 0.0).sum(axis=1)[shown] / sizes[shown]))


def head_items(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Whether each item is in the short head: the ⌈head_share · |I|⌉ most popular items
    (equal popularity: the lower id first), (n_items,) bool.

    Raises:
        ValueError: For ``head_share`` outside [0, 1].
    """
    if not 0 <= head_share <= 1:
        raise ValueError(f"head_share must be in [0, 1], got {head_share}")
    values = _popularity(popularity)
    # round first: 0.07 · 100 is 7.000000000000001 in floating point, whose ceiling is 8
    size = math.ceil(round(head_share * values.size, 9))
    order = np.argsort(-values, kind="stable")  # most popular first, ties by id
    head = np.zeros(values.size, dtype=bool)
    head[order[:size]] = True
    return head


def average_recommendation_popularity(top_k: np.ndarray, popularity: np.ndarray) -> float:
    """ARP: the mean over users of the mean train popularity of their listed items."""
    values = _popularity(popularity)
    lists = _lists(top_k, values.size)
    present = lists != PADDING
    return _mean_over_lists(values[np.where(present, lists, 0)], present)


def long_tail_share(top_k: np.ndarray, popularity: np.ndarray, head_share: float = 0.2) -> float:
    """APLT: the mean over users of the share of their listed items in the long tail
    (outside the ``head_share`` most popular items, ``head_items``)."""
    tail = ~head_items(popularity, head_share)
    lists = _lists(top_k, tail.size)
    present = lists != PADDING
    return _mean_over_lists(tail[np.where(present, lists, 0)].astype(np.float64), present)


def exposure_counts(top_k: np.ndarray, n_items: int) -> np.ndarray:
    """How many lists show each item, (n_items,) int64."""
    lists = _lists(top_k, n_items)
    return np.bincount(lists[lists != PADDING], minlength=n_items)


def exposure_gini(top_k: np.ndarray, n_items: int) -> float:
    """Gini index of the items' exposure counts over the whole catalogue (items never
    listed count as 0)."""
    return gini(exposure_counts(top_k, n_items))


def item_coverage(top_k: np.ndarray, n_items: int) -> float:
    """Share of the catalogue's ``n_items`` items listed for at least one user (NaN for
    an empty catalogue)."""
    if n_items == 0:
        return math.nan
    return float(np.mean(exposure_counts(top_k, n_items) > 0))


def popularity_metrics(top_k: np.ndarray, popularity: np.ndarray, head_share: float = 0.2) -> dict[str, float]:
    """``arp``, ``aplt``, ``exposure_gini`` and ``item_coverage`` of the lists, the
    catalogue being the items of ``popularity``."""
    n_items = np.asarray(popularity).size
    return {
        "arp": average_recommendation_popularity(top_k, popularity),
        "aplt": long_tail_share(top_k, popularity, head_share),
        "exposure_gini": exposure_gini(top_k, n_items),
        "item_coverage": item_coverage(top_k, n_items),
    }
