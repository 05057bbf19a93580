"""Metrics against the simulator's ground truth: what no real dataset lets anyone measure.

- **Ranking against the true preference** (full ranking): every item a user has no
  train positive on is ranked by the model's preference score (the train positives are
  masked, as in the LightGCN papers' protocol); the relevant items are that user's
  ``top_n`` unmasked items by true P(r = 1) (ties: lower item id first). Recall@K and
  NDCG@K then follow the thesis protocol's formulas (PROTOCOL.md §3, via
  ``metrics.per_user_metrics``): Recall@K = hits in the top K / min(K, top_n).
- **Recovery of a true probability matrix** by a score matrix (σ(ô) against the true
  exposure, σ(r̂) against the true preference), over all pairs or a seeded sample:
  Spearman's rank correlation, and the *expected AUC*: the AUC the scores would reach on
  events (exposures, likes) drawn from the true probabilities, in ratio-of-expectations
  form (``expected_auc``). The true probabilities themselves score the highest expected
  AUC any scores can reach (``oracle_auc``), so an AUC is read against that ceiling.
- **Effective rank** of a spectrum, to set model spectra beside the true ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from debias_pipeline.data.simulation import CHUNK_PAIRS, GroundTruth, Kind
from debias_pipeline.evaluation.metrics import RankingMetrics, per_user_metrics


def top_n_relevance(true_preference: np.ndarray, masked: np.ndarray, top_n: int) -> np.ndarray:
    """Each row's ``top_n`` unmasked entries by true preference (ties: lower column first).

    Args:
        true_preference: (n_users, n_items) true P(r = 1).
        masked: (n_users, n_items) bool, True for items that cannot be relevant (train positives).
        top_n: how many relevant items per user (fewer when fewer are unmasked).

    Returns:
        (n_users, n_items) bool relevance.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    keys = np.where(masked, np.inf, -np.asarray(true_preference, dtype=np.float64))
    order = np.argsort(keys, axis=1, kind="stable")[:, :top_n]  # stable: equal keys keep the lower item first
    relevant = np.zeros(keys.shape, dtype=bool)
    np.put_along_axis(relevant, order, True, axis=1)
    return relevant & ~masked


def truth_ranking_per_user(
    scores: np.ndarray, true_preference: np.ndarray, masked: np.ndarray, k: int, top_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@K and NDCG@K of each user (rows) against that user's top-N true items.

    Args:
        scores: (n_users, n_items) the model's preference scores.
        true_preference: (n_users, n_items) true P(r = 1).
        masked: (n_users, n_items) bool, items left out of the ranking (train positives).
        k: the cut-off K.
        top_n: size of each user's relevant set.

    Returns:
        ``(recall, ndcg)``, one value per user with at least one unmasked item.
    """
    relevant = top_n_relevance(true_preference, masked, top_n)
    rows, items = np.nonzero(~masked)
    _, recall, ndcg = per_user_metrics(rows, items, relevant[rows, items], scores[rows, items], k)
    return recall, ndcg


def truth_ranking_metrics(
    score: Callable[[np.ndarray], np.ndarray],
    truth: GroundTruth,
    train_matrix: sp.csr_matrix,
    k: int,
    top_n: int,
    max_pairs: int = CHUNK_PAIRS,
) -> RankingMetrics:
    """Full-ranking Recall@K / NDCG@K against the true preference, averaged over users.

    Args:
        score: maps user ids to their (len(users), n_items) preference scores
            (``Recommender.score``).
        truth: the simulator's truth.
        train_matrix: (n_users, n_items) Y; its positives are masked.
        k: the cut-off K.
        top_n: size of each user's relevant set.
        max_pairs: users are scored in chunks of at most this many (user, item) pairs.
    """
    train = sp.csr_matrix(train_matrix)
    recalls, ndcgs = [], []
    for users in truth.user_chunks(max_pairs):
        masked = train[users].toarray() > 0
        recall, ndcg = truth_ranking_per_user(
            score(users), truth.probabilities("preference", users), masked, k, top_n
        )
        recalls.append(recall)
        ndcgs.append(ndcg)
    recall, ndcg = np.concatenate(recalls), np.concatenate(ndcgs)
    return RankingMetrics(
        k=k,
        recall=float(recall.mean()) if recall.size else float("nan"),
        ndcg=float(ndcg.mean()) if ndcg.size else float("nan"),
        n_users=int(recall.size),
        n_skipped=truth.n_users - int(recall.size),
    )


def expected_auc(scores: np.ndarray, probabilities: np.ndarray) -> float:
    """AUC of ``scores`` for events drawn from ``probabilities``, in expectation.

    Each element a is an event (an exposure) with probability p_a. Over ordered pairs
    a ≠ b, weighting "a is an event, b is not" by p_a (1 − p_b):

        AUC = Σ_{a≠b} p_a (1 − p_b) [s_a > s_b] + ½ [s_a = s_b]  /  Σ_{a≠b} p_a (1 − p_b)

    With 0/1 probabilities this is the ordinary AUC (ties count one half). One sort,
    O(n log n).

    Returns:
        The AUC, or NaN when no pair has weight (every p is 0, or every p is 1).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if s.shape != p.shape:
        raise ValueError(f"scores and probabilities must have the same size, got {s.size} and {p.size}")
    _, group = np.unique(s, return_inverse=True)  # score groups, ascending
    events = np.bincount(group, weights=p)
    non_events = np.bincount(group, weights=1 - p)
    below = np.cumsum(non_events) - non_events  # Σ (1 − p_b) over strictly lower scores
    self_pairs = np.sum(p * (1 - p))  # the a = b terms, not pairs
    wins = np.sum(events * below) + 0.5 * (np.sum(events * non_events) - self_pairs)
    total = p.sum() * (1 - p).sum() - self_pairs
    return float(wins / total) if total > 0 else float("nan")


def spearman(scores: np.ndarray, values: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if s.size < 2 or np.ptp(s) == 0 or np.ptp(v) == 0:
        return float("nan")
    from scipy import stats  # scipy.stats takes ~0.7 s to import: only when needed

    return float(stats.spearmanr(s, v).statistic)


def recovery_metrics(
    scores: np.ndarray, truth: GroundTruth, kind: Kind, max_pairs: int, seed: int
) -> dict[str, float]:
    """How well a score matrix recovers the true ``kind`` probabilities.

    Args:
        scores: (n_users, n_items) logits (σ is monotone: the metrics are rank-based).
        truth: the simulator's truth.
        kind: ``preference`` or ``exposure``.
        max_pairs: all pairs when n_users x n_items <= max_pairs, else a sample of this
            many pairs drawn with ``seed``.
        seed: seed of that sample.

    Returns:
        ``auc`` (expected AUC), ``oracle_auc`` (the truth's own expected AUC on the same
        pairs, the ceiling) and ``spearman``.
    """
    n_users, n_items = truth.n_users, truth.n_items
    if scores.shape != (n_users, n_items):
        raise ValueError(f"scores must be ({n_users}, {n_items}), got {scores.shape}")
    if n_users * n_items <= max_pairs:
        users, items = np.divmod(np.arange(n_users * n_items), n_items)
    else:
        rng = np.random.default_rng(seed)
        users, items = rng.integers(n_users, size=max_pairs), rng.integers(n_items, size=max_pairs)
    probabilities = truth.pair_probabilities(kind, users, items)
    values = scores[users, items]
    return {
        "auc": expected_auc(values, probabilities),
        "oracle_auc": expected_auc(probabilities, probabilities),
        "spearman": spearman(values, probabilities),
    }


def effective_rank(spectrum: np.ndarray) -> float:
    """exp(entropy of e / Σ e) (Roy & Vetterli, 2007): d for a flat spectrum, 1 for one value."""
    values = np.asarray(spectrum, dtype=np.float64)
    values = values[values > 0]
    if values.size == 0:
        return 0.0
    shares = values / values.sum()
    return float(np.exp(-np.sum(shares * np.log(shares))))

