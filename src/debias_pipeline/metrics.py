"""Ranking metrics of the thesis protocol (PROTOCOL.md §3).

For each user with at least one positive among that user's rows of the evaluated
split, the user's rows are ranked by score, descending, ties broken by the lower item
id. With ``P`` the user's number of positives in the split:

- ``Recall@K = hits in the top K / min(K, P)``
- ``NDCG@K = DCG / IDCG``, ``DCG = sum_{r=1..K} rel_r / log2(r + 1)``, IDCG the same
  with ``min(K, P)`` positives at the top.

Both are averaged over the users that have a positive; the others are counted as
skipped. Everything is vectorized: one lexicographic sort, no loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankingMetrics:
    """Averaged metrics of one split at one cut-off."""

    k: int
    recall: float
    ndcg: float
    n_users: int
    n_skipped: int

    def as_dict(self, split: str) -> dict[str, float | int]:
        """Flat metric names ``<split>_<metric>_at_<k>`` plus user counts."""
        return {
            f"{split}_recall_at_{self.k}": self.recall,
            f"{split}_ndcg_at_{self.k}": self.ndcg,
            f"{split}_users_evaluated": self.n_users,
            f"{split}_users_skipped": self.n_skipped,
        }


def _discounts(length: int) -> np.ndarray:
    # 1 / log2(r + 1) for ranks r = 1..length
    return 1.0 / np.log2(np.arange(2, length + 2, dtype=np.float64))


def per_user_metrics(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall@K and NDCG@K of every user that has at least one positive.

    Args:
        users: (n_rows,) user id of each row.
        items: (n_rows,) item id of each row.
        labels: (n_rows,) 1 for a positive row, 0 otherwise.
        scores: (n_rows,) predicted preference of each row.
        k: the cut-off K (>= 1).

    Returns:
        ``(user_ids, recall, ndcg)`` for the users with a positive, sorted by user id,
        and ``n_skipped`` is ``len(unique(users)) - len(user_ids)``.
    """
    if k < 1:
        raise ValueError(f"cut-off k must be >= 1, got {k}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not (users.shape == items.shape == labels.shape == scores.shape) or users.ndim != 1:
        raise ValueError("users, items, labels and scores must be 1-d arrays of one length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the model diverged")
    if users.size == 0:
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.int64), empty, empty

    # Sort by user, then score descending, then item ascending (the tie rule).
    order = np.lexsort((items, -scores, users))
    sorted_users = users[order]
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    group_sizes = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, group_sizes)  # 0-based rank within user

    in_top = rank < k
    discount = _discounts(k)
    gains = np.where(in_top, sorted_labels * discount[np.minimum(rank, k - 1)], 0.0)
    group_ids = np.repeat(np.arange(starts.size), group_sizes)
    hits = np.bincount(group_ids, weights=np.where(in_top, sorted_labels, 0.0), minlength=starts.size)
    dcg = np.bincount(group_ids, weights=gains, minlength=starts.size)
    positives = np.bincount(group_ids, weights=sorted_labels, minlength=starts.size)

    has_positive = positives > 0
    ideal_count = np.minimum(positives, k).astype(np.int64)
    ideal_dcg = np.r_[0.0, np.cumsum(discount)][ideal_count]
    user_ids = sorted_users[starts][has_positive]
    recall = hits[has_positive] / ideal_count[has_positive]
    ndcg = dcg[has_positive] / ideal_dcg[has_positive]
    return user_ids, recall, ndcg


def ranking_metrics(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> RankingMetrics:
    """Mean Recall@K and NDCG@K over users with a positive (see module docstring)."""
    user_ids, recall, ndcg = per_user_metrics(users, items, labels, scores, k)
    n_all = np.unique(np.asarray(users)).size
    n_eval = user_ids.size
    return RankingMetrics(
        k=k,
        recall=float(recall.mean()) if n_eval else float("nan"),
        ndcg=float(ndcg.mean()) if n_eval else float("nan"),
        n_users=int(n_eval),
        n_skipped=int(n_all - n_eval),
    )
