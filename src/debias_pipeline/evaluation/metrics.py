"""Ranking metrics of the thesis protocol (PROTOCOL.md §3).

For each user with at least one positive among that user's rows of the evaluated
split, the user's rows are ranked by score, descending, ties broken by the lower item
id. With ``P`` the user's number of positives in the split:

- ``Recall@K = hits in the top K / min(K, P)``
- ``NDCG@K = DCG / IDCG``, ``DCG = sum_{r=1..K} rel_r / log2(r + 1)``, IDCG the same
  with ``min(K, P)`` positives at the top.

Both are averaged over the users that have a positive; the others are counted as
skipped. Everything is vectorized: one lexicographic sort, no loop over users.

``full_ranking_metrics`` offers the LightGCN papers' protocol instead: every item
ranked, the user's train items masked, computed on the model's device in user chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


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


def candidate_relevance(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, scores: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The relevance of each user's ``depth`` best-scored rows (the thesis protocol's ranking).

    Each user's rows are ranked by score, descending, ties broken by the lower item id.

    Args:
        users: (n_rows,) user id of each row.
        items: (n_rows,) item id of each row.
        labels: (n_rows,) 1 for a positive row, 0 otherwise.
        scores: (n_rows,) predicted preference of each row.
        depth: how many ranks to keep (the largest cut-off, >= 1).

    Returns:
        ``(user_ids, relevance, n_relevant, n_skipped)`` for the users with at least one
        positive row, sorted by user id: ``relevance`` (n, depth) is 1 where the row at
        that rank is positive (0 past the user's last row), ``n_relevant`` (n,) the
        user's positives; ``n_skipped`` counts the users without a positive.
    """
    if depth < 1:
        raise ValueError(f"cut-off k must be >= 1, got {depth}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not (users.shape == items.shape == labels.shape == scores.shape) or users.ndim != 1:
        raise ValueError("users, items, labels and scores must be 1-d arrays of one length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; the model diverged")
    if users.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, depth)), np.zeros(0), 0

    # Sort by user, then score descending, then item ascending (the tie rule).
    order = np.lexsort((items, -scores, users))
    sorted_users = users[order]
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    group_sizes = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, group_sizes)  # 0-based rank within user
    group_ids = np.repeat(np.arange(starts.size), group_sizes)
    positives = np.bincount(group_ids, weights=sorted_labels, minlength=starts.size)
    relevance = np.zeros((starts.size, depth))
    in_top = rank < depth
    relevance[group_ids[in_top], rank[in_top]] = sorted_labels[in_top]
    has_positive = positives > 0
    user_ids = sorted_users[starts][has_positive]
    return user_ids, relevance[has_positive], positives[has_positive], int(starts.size - user_ids.size)


def metrics_from_relevance(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user Recall, NDCG, Precision and HR at ``k`` from a ranked relevance matrix.

    Args:
        relevance: (n_users, depth >= k) 1 where the item at that rank is relevant.
        n_relevant: (n_users,) P, the user's relevant items (>= 1).
        k: the cut-off.

    Returns:
        ``recall`` = hits / min(k, P), ``ndcg`` = DCG / IDCG with IDCG for min(k, P)
        relevant items at the top, ``precision`` = hits / k and ``hr`` = 1 when a hit
        is in the top k; each (n_users,).
    """
    top = relevance[:, :k]
    discount = _discounts(k)
    hits = top.sum(axis=1)
    ideal_count = np.minimum(n_relevant, k).astype(np.int64)
    ideal_dcg = np.r_[0.0, np.cumsum(discount)][ideal_count]
    return {
        "recall": hits / ideal_count,
        "ndcg": (top @ discount[: top.shape[1]]) / ideal_dcg,
        "precision": hits / k,
        "hr": (hits > 0).astype(np.float64),
    }


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
    user_ids, relevance, n_relevant, _ = candidate_relevance(users, items, labels, scores, k)
    values = metrics_from_relevance(relevance, n_relevant, k)
    return user_ids, values["recall"], values["ndcg"]


def ranking_metrics(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> RankingMetrics:
    """Mean Recall@K and NDCG@K over users with a positive (see module docstring)."""
    user_ids, recall, ndcg = per_user_metrics(users, items, labels, scores, k)
    n_all = np.unique(np.asarray(users)).size
    return _averaged(k, recall, ndcg, n_skipped=int(n_all - user_ids.size))


def _averaged(k: int, recall: np.ndarray, ndcg: np.ndarray, n_skipped: int) -> RankingMetrics:
    """The means of per-user metrics (NaN without any user)."""
    n_eval = recall.size
    return RankingMetrics(
        k=k,
        recall=float(recall.mean()) if n_eval else float("nan"),
        ndcg=float(ndcg.mean()) if n_eval else float("nan"),
        n_users=int(n_eval),
        n_skipped=n_skipped,
    )


# ---- Full ranking (the LightGCN papers' protocol) ------------------------------------------
#
# Every item is ranked for the user, the user's train items masked out; Recall@K and
# NDCG@K are those of PROTOCOL.md §3 with the user's positives of the evaluated split as
# the relevant items. Scores are compared in float32, ties broken by the lower item id,
# on the scores' device, a chunk of users at a time.

ScoreUsers = Callable[[torch.Tensor], torch.Tensor]
"""Maps (n,) user ids (int64, on the device) to their (n, n_items) preference scores."""

# Elements of one chunk's (users x items) score table (32 MB of float32 scores): large
# enough that the item table is read once per couple of hundred users.
FULL_RANKING_CHUNK_ELEMENTS = 1 << 23
# Items per block of the block-maxima pre-selection of the top k.
_RANKING_BLOCK = 64


def train_positives(train: sp.spmatrix) -> sp.csr_matrix:
    """The positive entries of ``train`` as a canonical CSR matrix (sorted, no duplicates,
    no stored zeros), leaving ``train`` alone."""
    return sp.csr_matrix(sp.csr_matrix(train) > 0, dtype=np.float32)


def _ranking_keys(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """int64 keys that order (score, item) pairs like (score descending, item ascending).

    The float32 bit pattern is mapped to an int32 that sorts like the float (negative
    floats get their magnitude bits flipped) and put in the high half; the low half holds
    ``2^32 - 1 - item``, so that among equal scores the lower item id has the larger key.

    Args:
        scores: (n, m) scores.
        items: item ids, broadcastable to ``scores``.
    """
    bits = (scores.to(torch.float32) + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    keys = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(torch.int64)
    return keys.mul_(1 << 32).add_((1 << 32) - 1 - items)


def _item_of_key(keys: torch.Tensor) -> torch.Tensor:
    return (1 << 32) - 1 - (keys & 0xFFFFFFFF)


def _top_by_blocks(scores: torch.Tensor, take: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.topk(take, dim=1)`` up to the order of values equal to the last one.

    The items are cut into blocks of ``_RANKING_BLOCK``; any item outside the ``take``
    blocks with the highest maxima scores at most the take-th of those maxima, so at most
    the take-th best value among those blocks: a topk over their items (plus the last,
    partial block) returns the same values, and the same items unless the last value
    ties. About ``take`` x ``_RANKING_BLOCK`` items per row are ranked instead of all.
    """
    n_rows, n_items = scores.shape
    n_blocks = n_items // _RANKING_BLOCK
    if n_blocks <= 4 * take:
        return scores.topk(take, dim=1)
    body = scores[:, : n_blocks * _RANKING_BLOCK].view(n_rows, n_blocks, _RANKING_BLOCK)
    blocks = body.amax(dim=2).topk(take, dim=1).indices  # (n, take)
    offsets = torch.arange(_RANKING_BLOCK, device=scores.device)
    candidates = body.gather(1, blocks[:, :, None].expand(-1, -1, _RANKING_BLOCK)).reshape(n_rows, -1)
    items = (blocks[:, :, None] * _RANKING_BLOCK + offsets).reshape(n_rows, -1)
    if n_items > n_blocks * _RANKING_BLOCK:
        tail = torch.arange(n_blocks * _RANKING_BLOCK, n_items, device=scores.device)
        candidates = torch.cat([candidates, scores[:, n_blocks * _RANKING_BLOCK :]], dim=1)
        items = torch.cat([items, tail.expand(n_rows, -1)], dim=1)
    values, position = candidates.topk(take, dim=1)
    return values, items.gather(1, position)


def top_k_unseen(
    scores: torch.Tensor, users: np.ndarray, train: sp.csr_matrix, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best-scored items of each user among the items without a train positive.

    The best k + 1 scores of each row are found among the k + 1 blocks of items with the
    highest maxima (``_top_by_blocks``); the (k+1)-th tells whether an item outside the
    best k ties with the k-th, and only such rows are ranked again with exact (score,
    item id) keys over all items.

    Args:
        scores: (n, n_items) scores of ``users``; overwritten (train items set to -inf).
        users: (n,) the users' ids, rows of ``train``.
        train: (n_users, n_items) canonical CSR matrix of train positives (``train_positives``).
        k: how many items (at most n_items).

    Returns:
        ``items`` (n, k) int64, best first (ties: lower item id first), and ``valid``
        (n, k) bool, False where the user had fewer than k items left to rank.
    """
    n_items = train.shape[1]
    seen = train[users].tocoo()
    rows = torch.from_numpy(seen.row.astype(np.int64)).to(scores.device)
    cols = torch.from_numpy(seen.col.astype(np.int64)).to(scores.device)
    scores[rows, cols] = -math.inf
    values, items = _top_by_blocks(scores, min(k + 1, n_items))  # (n, k + 1), best first; NaN counts as largest
    if torch.isnan(values).any():
        raise ValueError("scores contain NaN; the model diverged")
    if values.shape[1] > k:
        tied = torch.nonzero(values[:, k] == values[:, k - 1]).squeeze(1)
        values, items = values[:, :k], items[:, :k]
    else:
        tied = torch.zeros(0, dtype=torch.int64, device=scores.device)
    items = _item_of_key(_ranking_keys(values, items).sort(dim=1, descending=True).values)
    if tied.numel():
        all_items = torch.arange(n_items, device=scores.device)
        items[tied] = _item_of_key(_ranking_keys(scores[tied], all_items).topk(k, dim=1).values)
    remaining = torch.from_numpy(n_items - np.diff(train.indptr)[users]).to(scores.device)
    valid = torch.arange(k, device=scores.device)[None, :] < remaining[:, None]
    return items, valid


def full_ranking_relevance(
    score_users: ScoreUsers,
    mask: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    depth: int = 20,
    *,
    device: torch.device | str = "cpu",
    chunk_elements: int = FULL_RANKING_CHUNK_ELEMENTS,
    ranked: list[torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The relevance of each user's ``depth`` best-scored items among all unmasked items.

    The relevant items of a user are the split's positive rows of that user that are
    not masked (masked items, the train items, are never ranked). Users of the split
    without such a positive are skipped.

    Args:
        score_users: the model's scores of a chunk of users (see ``ScoreUsers``).
        mask: (n_users, n_items) CSR matrix whose positive entries are masked.
        users: (n_rows,) user id of each row of the evaluated split.
        items: (n_rows,) item id of each row.
        labels: (n_rows,) 1 for a positive row, 0 otherwise.
        depth: ranks kept (the largest cut-off, >= 1).
        device: where the scores live and the ranking runs.
        chunk_elements: bound on users x items scored at once.
        ranked: when given, each chunk's (c, depth) ranked item ids are appended to it.

    Returns:
        ``(user_ids, relevance, n_relevant, n_skipped)``: the users with a relevant item,
        sorted by id; ``relevance`` (n, min(depth, n_items)) 1 where the item at that rank
        is relevant; ``n_relevant`` (n,) their relevant items; the users skipped.
    """
    if depth < 1:
        raise ValueError(f"cut-off k must be >= 1, got {depth}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float64)
    if not (users.shape == items.shape == labels.shape) or users.ndim != 1:
        raise ValueError("users, items and labels must be 1-d arrays of one length")
    mask = train_positives(mask)
    n_items = mask.shape[1]
    device = torch.device(device)
    positive = labels > 0
    candidates = np.unique(users[positive] * n_items + items[positive])  # sorted keys user * n_items + item
    rows = np.repeat(np.arange(mask.shape[0], dtype=np.int64), np.diff(mask.indptr))
    mask_keys = rows * n_items + mask.indices  # sorted: CSR is row-major with sorted columns
    found = np.minimum(np.searchsorted(mask_keys, candidates), max(mask_keys.size - 1, 0))
    relevant = candidates if mask_keys.size == 0 else candidates[mask_keys[found] != candidates]
    user_ids, n_relevant = np.unique(relevant // n_items, return_counts=True)
    n_skipped = int(np.unique(users).size - user_ids.size)
    top = min(depth, n_items)
    relevance = torch.zeros(user_ids.size, top, dtype=torch.float64, device=device)
    if user_ids.size == 0:
        return user_ids, relevance.cpu().numpy(), n_relevant.astype(np.float64), n_skipped

    relevant_keys = torch.from_numpy(relevant).to(device)
    rows_per_chunk = max(1, chunk_elements // max(n_items, 1))
    for start in range(0, user_ids.size, rows_per_chunk):
        chunk = user_ids[start : start + rows_per_chunk]
        chunk_ids = torch.from_numpy(chunk).to(device)
        top_items, _ = top_k_unseen(score_users(chunk_ids).to(device), chunk, mask, top)  # (c, top)
        if ranked is not None:
            ranked.append(top_items)
        keys = chunk_ids[:, None] * n_items + top_items
        found = torch.searchsorted(relevant_keys, keys).clamp_(max=relevant_keys.numel() - 1)
        relevance[start : start + chunk.size] = (relevant_keys[found] == keys).to(torch.float64)
    return user_ids, relevance.cpu().numpy(), n_relevant.astype(np.float64), n_skipped


def per_user_full_ranking(
    score_users: ScoreUsers,
    train: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    k: int = 20,
    *,
    device: torch.device | str = "cpu",
    chunk_elements: int = FULL_RANKING_CHUNK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Full-ranking Recall@K and NDCG@K of every user with a positive in the split
    (``full_ranking_relevance`` with ``train`` as the mask).

    Returns:
        ``(user_ids, recall, ndcg, n_skipped)``, the first three sorted by user id.
    """
    user_ids, relevance, n_relevant, n_skipped = full_ranking_relevance(
        score_users, train, users, items, labels, k, device=device, chunk_elements=chunk_elements
    )
    values = metrics_from_relevance(relevance, n_relevant, k)
    return user_ids, values["recall"], values["ndcg"], n_skipped


def full_ranking_metrics(
    score_users: ScoreUsers,
    train: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    k: int = 20,
    *,
    device: torch.device | str = "cpu",
    chunk_elements: int = FULL_RANKING_CHUNK_ELEMENTS,
) -> RankingMetrics:
    """Mean full-ranking Recall@K and NDCG@K (see ``per_user_full_ranking``)."""
    _, recall, ndcg, n_skipped = per_user_full_ranking(
        score_users, train, users, items, labels, k, device=device, chunk_elements=chunk_elements
    )
    return _averaged(k, recall, ndcg, n_skipped)


def pooled_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUC of ``scores`` against binary ``labels`` over all rows pooled (every user's
    rows together, users without a positive included): the share of (positive,
    negative) row pairs the positive row wins, a tie counting one half (Mann-Whitney).

    Returns:
        The AUC, or ``None`` when the rows hold no positive or no negative.
    """
    positive = np.asarray(labels) > 0
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        return None
    from scipy import stats  # scipy.stats takes ~0.7 s to import: only when needed

    ranks = stats.rankdata(np.asarray(scores, dtype=np.float64))
    wins = ranks[positive].sum() - n_positive * (n_positive + 1) / 2
    return float(wins / (n_positive * n_negative))


def mean_log_likelihood(labels: np.ndarray, logits: np.ndarray) -> float | None:
    """Mean Bernoulli log-likelihood of binary ``labels`` under σ(``logits``) over all
    rows: ``−mean(y softplus(−s) + (1 − y) softplus(s))``, at most 0.

    Returns:
        The mean, or ``None`` for no rows.
    """
    if len(labels) == 0:
        return None
    s = np.asarray(logits, dtype=np.float64)
    y = (np.asarray(labels) > 0).astype(np.float64)
    softplus = np.logaddexp(0.0, s)  # softplus(s); softplus(-s) = softplus(s) - s
    return float(-np.mean(y * (softplus - s) + (1.0 - y) * softplus))
