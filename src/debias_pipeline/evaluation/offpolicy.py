"""Off-policy estimates of ranking metrics on a biased log: Recall@K, NDCG@K and DCG@K as
they would be measured if every item had been exposed (on true preference).

**Setting.** For user u and item i: relevance r_ui in {0, 1} (true preference), exposure
o_ui ~ Bernoulli(p_ui) independent of r_ui, click y_ui = r_ui · o_ui. The model ranks
each user's candidate items (all items, less the ``mask``); g(rank) is the metric's gain.
The targets, per user, with N_u = Σ_i r_ui g(rank_ui) and n_u = Σ_i r_ui:

- DCG@K_u = N_u, g(rank) = 1[rank <= K] / log2(rank + 1);
- Recall@K_u = N_u / min(K, n_u), g(rank) = 1[rank <= K] (PROTOCOL §3's Recall);
- NDCG@K_u = N_u / IDCG_K(n_u), g the DCG's, IDCG_K(n) = Σ_{j <= min(K, n)} 1/log2(j + 1),
  taken between integers by linear interpolation (a fraction of an item at the next rank).

DCG is averaged over every evaluated user, Recall and NDCG over those with n_u > 0,
for which the estimates read the users with a click in the log (or ``n_relevant`` > 0).

**Estimators** of (N_u, n_u), one sum per user:

- ``naive``: Σ_{y=1} g, Σ_{y=1} 1: clicks read as relevance, biased towards exposed items.
- ``ips`` (Yang et al., RecSys 2018): Σ_{y=1} g/p, Σ_{y=1} 1/p.
- ``snips`` (self-normalized, Schnabel et al., ICML 2016): both IPS sums times
  λ = Σ_u |I_u| / Σ_u Σ_{o_ui=1} 1/p_ui, |I_u| the user's candidates, over the evaluated users.
- ``dr`` (doubly robust; Saito, RecSys 2020), with an imputed relevance r̂_ui for every pair:
  Σ_i r̂_ui g + Σ_{o=1} (y − r̂) g/p and Σ_i r̂_ui + Σ_{o=1} (y − r̂)/p.

**Unbiasedness.** E[o_ui] = p_ui and y_ui = r_ui when o_ui = 1, so E[y_ui / p_ui] = r_ui,
and for DR E[r̂ + o (y − r̂)/p] = r̂ + p (r − r̂)/p = r_ui, whatever r̂. The ranking
does not depend on the log, so by linearity E[N̂_u] = Σ_i r_ui g(rank_ui) = N_u and
E[n̂_u] = n_u for IPS and DR: DCG@K is estimated without bias (given the true p >= clip).
Recall and NDCG divide by a function of n_u; with the normalizer estimated by n̂_u the
ratio is consistent, not unbiased (E[X/Y] ≠ E[X]/E[Y]), so those estimates are projected
onto [0, 1], the metric's range, which never moves a user's estimate away from the
truth. Pass the true ``n_relevant`` (a simulation) and Recall and NDCG are unbiased too
(no projection). Yang et al. divide Recall by n_u = |S_u| rather than min(K, n_u) (the
same for n_u <= K); with n̂_u <= K, ``ips`` Recall is their self-normalized Σ c/p / Σ 1/p.

SNIPS: E[Σ_{o=1} 1/p] = |I_u| (all candidates, clicked or not), so λ replaces a random
normalizer by its expectation: bounded weights, biased, consistent as users grow. SNIPS
and DR read o_ui, so they need the ``exposed`` log (the rated pairs of a rating log,
the simulator's exposures); with clicks alone DR would be IPS (r̂ + (y − p r̂)/p = y/p).

**Uncertainty.** A percentile bootstrap over users (rows resampled with replacement,
λ recomputed for each resample) gives the interval; the effective sample size is Kish's
(Σ w)² / Σ w² of the importance weights 1/p the estimator applies (to clicks; to every
exposed pair for DR; 1 per click for ``naive``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp

from debias_pipeline.evaluation.metrics import _discounts
from debias_pipeline.evaluation.propensity import (
    DEFAULT_CLIP,
    PropensityLike,
    inverse_propensity_weights,
    pair_propensities,
)

Metric = Literal["recall", "ndcg", "dcg"]
Estimator = Literal["naive", "ips", "snips", "dr"]
ImputedLike = np.ndarray | Callable[[np.ndarray], np.ndarray]
"""r̂: an (n_users, n_items) matrix, or a callable mapping user ids to their (len, n_items) rows."""

# Bound on the elements of one dense block: imputed rows, or bootstrap resamples x users.
MAX_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Estimate:
    """A metric's estimate, its bootstrap interval and the effective sample size."""

    value: float
    ci_low: float
    ci_high: float
    ess: float
    n_users: int  # users averaged over
    n_skipped: int  # evaluated rows without a defined value (no click, no relevant item)
    per_user: np.ndarray = field(repr=False, compare=False)  # (n_rows,) NaN where skipped

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        """``<prefix>``, ``<prefix>_ci_low``, ``<prefix>_ci_high``, ``<prefix>_ess``, user counts."""
        return {
            prefix: self.value,
            f"{prefix}_ci_low": self.ci_low,
            f"{prefix}_ci_high": self.ci_high,
            f"{prefix}_ess": self.ess,
            f"{prefix}_users": self.n_users,
            f"{prefix}_users_skipped": self.n_skipped,
        }


def rank_gains(k: int, metric: Metric) -> np.ndarray:
    """g at ranks 1..k, (k,): 1/log2(rank + 1) for DCG and NDCG, 1 for Recall."""
    return np.ones(k) if metric == "recall" else _discounts(k)


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """IDCG_K(n) for real n >= 0: Σ_{j <= m} 1/log2(j + 1), m = min(K, n), linear between integers."""
    m = np.minimum(np.asarray(n_relevant, dtype=np.float64), k)
    cumulative = np.r_[0.0, np.cumsum(_discounts(k)), 0.0]  # padded: index k + 1 only meets a zero fraction
    whole = np.floor(np.maximum(m, 0.0)).astype(np.int64)
    return cumulative[whole] + (m - whole) * (cumulative[whole + 1] - cumulative[whole])


def kish_ess(weights: np.ndarray) -> float:
    """Kish's effective sample size (Σ w)² / Σ w²; 0 for no weights."""
    w = np.asarray(weights, dtype=np.float64)
    squares = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / squares) if squares > 0 else 0.0


def _log_pairs(
    matrix: sp.spmatrix | np.ndarray,
    name: str,
    shape: tuple[int, int],
    rows_of_user: np.ndarray,
    masked_keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (of the evaluated users) and items of ``matrix``'s nonzero entries, sorted
    by (row, item), leaving out other users' entries and masked pairs."""
    coo = sp.coo_matrix(matrix)
    if coo.shape != shape:
        raise ValueError(f"{name} must have the shape of clicks {shape}, got {coo.shape}")
    n_items = shape[1]
    keep = coo.data != 0
    users, items = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
    rows = rows_of_user[users]
    keep = rows >= 0
    keys = np.unique(rows[keep] * n_items + items[keep])
    keys = keys[~np.isin(keys, masked_keys, assume_unique=True)]
    return keys // n_items, keys % n_items


def _imputed_sums(
    imputed: ImputedLike,
    users: np.ndarray,
    top: np.ndarray,
    gains: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    masked: tuple[np.ndarray, np.ndarray],
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Σ over candidates of r̂, Σ over the top k of r̂ g (both (n_rows,)), and r̂ at ``pairs``,
    reading r̂ a block of users at a time."""
    n_rows = users.size
    total, top_gain = np.zeros(n_rows), np.zeros(n_rows)
    at_pairs = np.zeros(pairs[0].size)
    size = max(1, MAX_BLOCK_ELEMENTS // max(n_items, 1))
    for start in range(0, n_rows, size):
        stop = min(start + size, n_rows)
        chunk = users[start:stop]
        block = np.asarray(imputed(chunk) if callable(imputed) else np.asarray(imputed)[chunk], dtype=np.float64)
        if block.shape != (chunk.size, n_items) or not np.all(np.isfinite(block)):
            raise ValueError(f"imputed must give finite (n, {n_items}) rows, got shape {block.shape}")
        # (c, n_items)
        total[start:stop] = block.sum(axis=1)
        lo, hi = np.searchsorted(masked[0], [start, stop])
        np.subtract.at(total, masked[0][lo:hi], block[masked[0][lo:hi] - start, masked[1][lo:hi]])
        ranked = top[start:stop]  # (c, k)
        values = np.take_along_axis(block, np.maximum(ranked, 0), axis=1) * (ranked >= 0)
        top_gain[start:stop] = values @ gains
        lo, hi = np.searchsorted(pairs[0], [start, stop])
        at_pairs[lo:hi] = block[pairs[0][lo:hi] - start, pairs[1][lo:hi]]
    return total, top_gain, at_pairs


def _user_values(
    gain: np.ndarray,
    count: np.ndarray,
    scale: np.ndarray | float,
    defined: np.ndarray,
    metric: Metric,
    k: int,
    n_relevant: np.ndarray | None,
    project: bool = True,
) -> np.ndarray:
    """Per-user metric from the estimated sums (N̂, n̂) times ``scale``; NaN where undefined;
    with ``project``, Recall and NDCG estimated with n̂ are projected onto [0, 1]."""
    numerator = scale * gain
    if metric == "dcg":
        return numerator
    normalizer = np.broadcast_to(n_relevant if n_relevant is not None else scale * count, numerator.shape)
    denominator = np.minimum(normalizer, k) if metric == "recall" else ideal_dcg(normalizer, k)
    ok = defined & (denominator > 0)
    values = np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=ok)
    return values if n_relevant is not None or not project else np.clip(values, 0.0, 1.0)


def _check_choice(value: str, name: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


def _checked_ranking(top_items: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """The first k columns of ``top_items`` as int64 (n_rows, k), checked."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranking = np.asarray(top_items)
    if ranking.ndim != 2 or not np.issubdtype(ranking.dtype, np.integer):
        raise ValueError(f"top_items must be a 2-d integer array, got shape {ranking.shape} of {ranking.dtype}")
    if ranking.shape[1] < k:
        raise ValueError(f"top_items has depth {ranking.shape[1]} < k = {k}")
    top = ranking[:, :k].astype(np.int64)
    if top.size and (top.min() < -1 or top.max() >= n_items):
        raise ValueError(f"top_items must hold item ids in [0, {n_items}) or -1")
    return top


def _gain_lookup(top: np.ndarray, gains: np.ndarray, n_items: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """g(rank) of (row, item) pairs, 0 outside the row's top k, by the sorted keys row * n_items + item."""
    rows, columns = np.nonzero(top >= 0)
    keys = rows * n_items + top[rows, columns]
    order = np.argsort(keys, kind="stable")
    keys, pair_gains = keys[order], gains[columns[order]]
    if np.any(keys[1:] == keys[:-1]):
        raise ValueError("top_items repeats an item within a row")

    def gain_of(pair_rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        if keys.size == 0:
            return np.zeros(pair_rows.size)
        wanted = pair_rows * n_items + items
        at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
        return np.where(keys[at] == wanted, pair_gains[at], 0.0)

    return gain_of


@dataclass(frozen=True)
class _UserSums:
    """Per evaluated user (n_rows,): the estimator's sums N̂ and n̂ (before SNIPS's λ)."""

    gain: np.ndarray
    count: np.ndarray
    has_click: np.ndarray
    inverse_exposed: np.ndarray  # Σ_{o=1} 1/p (zeros unless SNIPS or DR)
    candidates: np.ndarray  # |I_u|, the items not masked
    ess: float


def _user_sums(
    top: np.ndarray,
    row_ids: np.ndarray,
    clicks: sp.spmatrix | np.ndarray,
    propensity: PropensityLike,
    metric: Metric,
    estimator: Estimator,
    exposed: sp.spmatrix | np.ndarray | None,
    imputed: ImputedLike | None,
    mask: sp.spmatrix | np.ndarray | None,
    clip: float,
) -> _UserSums:
    """The per-user sums of ``estimator`` (module docstring) over the evaluated users' log entries."""
    n_rows, k = top.shape
    log_shape = (int(np.shape(clicks)[0]), int(np.shape(clicks)[1]))
    n_items = log_shape[1]
    rows_of_user = np.full(max(log_shape[0], int(row_ids.max(initial=-1)) + 1), -1, dtype=np.int64)
    rows_of_user[row_ids] = np.arange(n_rows)
    no_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    masked = no_pairs if mask is None else _log_pairs(mask, "mask", log_shape, rows_of_user, no_pairs[0])
    masked_keys = masked[0] * n_items + masked[1]
    click_rows, click_items = _log_pairs(clicks, "clicks", log_shape, rows_of_user, masked_keys)
    gains = rank_gains(k, metric)
    gain_of = _gain_lookup(top, gains, n_items)

    def weights_at(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        p = pair_propensities(propensity, row_ids[rows], items, clip)
        return inverse_propensity_weights(p, clip, "propensity")

    def per_row(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        # float64 even for no entries, where a weighted bincount returns int64
        return np.bincount(rows, weights=values, minlength=n_rows).astype(np.float64, copy=False)

    has_click = per_row(click_rows, np.ones(click_rows.size)) > 0
    candidates = n_items - per_row(masked[0], np.ones(masked[0].size))
    if estimator in ("naive", "ips", "snips"):
        weights = np.ones(click_rows.size) if estimator == "naive" else weights_at(click_rows, click_items)
        gain = per_row(click_rows, weights * gain_of(click_rows, click_items))
        count = per_row(click_rows, weights)
    inverse_exposed = np.zeros(n_rows)
    if estimator in ("snips", "dr"):
        exp_rows, exp_items = _log_pairs(exposed, "exposed", log_shape, rows_of_user, masked_keys)
        labels = np.isin(exp_rows * n_items + exp_items, click_rows * n_items + click_items, assume_unique=True)
        if labels.sum() < click_rows.size:
            raise ValueError(
                f"every click must be an exposed pair; {click_rows.size - labels.sum()} are not in exposed"
            )
        exp_weights = weights_at(exp_rows, exp_items)
        inverse_exposed = per_row(exp_rows, exp_weights)
    if estimator == "dr":
        total, top_gain, at_exposed = _imputed_sums(
            imputed, row_ids, top, gains, (exp_rows, exp_items), masked, n_items
        )
        residual = exp_weights * (labels - at_exposed)  # o (y − r̂) / p
        gain = top_gain + per_row(exp_rows, residual * gain_of(exp_rows, exp_items))
        count = total + per_row(exp_rows, residual)
        weights = exp_weights
    return _UserSums(gain, count, has_click, inverse_exposed, candidates, kish_ess(weights))


def _percentile_interval(
    statistic: Callable[[np.ndarray], np.ndarray], n_rows: int, n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    """The (alpha/2, 1 − alpha/2) quantiles of ``statistic`` over ``n_boot`` resamples of
    the rows with replacement; ``statistic`` maps (b, n_rows) row indices to (b,) values."""
    if n_boot == 0 or n_rows == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    batch = max(1, MAX_BLOCK_ELEMENTS // n_rows)  # a block's resamples hold about MAX_BLOCK_ELEMENTS indices
    values = np.concatenate(
        [
            statistic(rng.integers(n_rows, size=(min(batch, n_boot - start), n_rows)))
            for start in range(0, n_boot, batch)
        ]
    )
    low, high = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def estimate(
    top_items: np.ndarray,
    clicks: sp.spmatrix | np.ndarray,
    propensity: PropensityLike,
    k: int,
    metric: Metric = "ndcg",
    estimator: Estimator = "ips",
    *,
    exposed: sp.spmatrix | np.ndarray | None = None,
    imputed: ImputedLike | None = None,
    users: np.ndarray | None = None,
    mask: sp.spmatrix | np.ndarray | None = None,
    n_relevant: np.ndarray | None = None,
    clip: float = DEFAULT_CLIP,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    project: bool = True,
) -> Estimate:
    """Off-policy estimate of Recall@K, NDCG@K or DCG@K on a biased log (module docstring).

    Args:
        top_items: (n_rows, depth >= k) int, each evaluated user's ranked item ids, best
            first (``metrics.top_k_unseen``); -1 pads a user with fewer candidates.
        clicks: (n_users, n_items) the log's positives y = 1 (nonzero entries).
        propensity: p_ui: a pair callable, an (n_items,) item propensity or a matrix
            (``propensity.pair_propensities``); clipped from below at ``clip``.
        k: the cut-off K (>= 1).
        metric: ``recall``, ``ndcg`` or ``dcg``.
        estimator: ``naive``, ``ips``, ``snips`` or ``dr``.
        exposed: (n_users, n_items) the log's exposed pairs o = 1, clicks included;
            required by ``snips`` and ``dr``.
        imputed: r̂ for every pair, required by ``dr``.
        users: (n_rows,) distinct user ids of ``top_items``' rows (default 0..n_rows-1);
            log entries of other users are left out.
        mask: (n_users, n_items) pairs outside the ranking and the relevant sets (train
            positives): their log entries are left out, and DR and SNIPS leave them out
            of the candidates.
        n_relevant: (n_rows,) the true n_u, when known: Recall and NDCG then divide by it.
        clip: the propensity floor.
        n_boot: bootstrap resamples (0: no interval, NaN bounds).
        alpha: the interval covers 1 − alpha.
        seed: seed of the bootstrap.
        project: project each user's Recall / NDCG estimated with n̂ onto [0, 1]. Per user
            that never moves an estimate away from the truth, but the mean over users of
            projected values is biased low when most users' logs hold a click or two (each
            user's estimate then mostly 0 or above 1); ``False`` keeps every user's ratio,
            whose mean is unbiased where n_u >= K and p is right.
    """
    _check_choice(metric, "metric", get_args(Metric))
    _check_choice(estimator, "estimator", get_args(Estimator))
    if n_boot < 0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"n_boot must be >= 0 and alpha in (0, 1), got {n_boot} and {alpha}")
    top = _checked_ranking(top_items, k, int(np.shape(clicks)[1]))  # (n_rows, k)
    n_rows = top.shape[0]
    row_ids = np.arange(n_rows) if users is None else np.asarray(users, dtype=np.int64)
    if row_ids.shape != (n_rows,) or np.unique(row_ids).size != n_rows or (n_rows and row_ids.min() < 0):
        raise ValueError(f"users must hold {n_rows} distinct non-negative ids, one per row of top_items")
    if estimator in ("snips", "dr") and exposed is None:
        raise ValueError(f"estimator {estimator!r} needs exposed= (every exposed pair, clicks included)")
    if estimator == "dr" and imputed is None:
        raise ValueError("estimator 'dr' needs imputed= (a relevance estimate for every pair)")
    known = None if n_relevant is None else np.asarray(n_relevant, dtype=np.float64)
    if known is not None and (known.shape != (n_rows,) or np.any(known < 0)):
        raise ValueError(f"n_relevant must hold {n_rows} counts >= 0, got shape {known.shape}")

    sums = _user_sums(top, row_ids, clicks, propensity, metric, estimator, exposed, imputed, mask, clip)
    if metric == "dcg":
        defined = np.ones(n_rows, dtype=bool)
    else:  # with the normalizer estimated, a user without a click stands for n_u = 0 under every estimator
        defined = sums.has_click if known is None else known > 0

    def user_values(index: np.ndarray) -> np.ndarray:
        """Per-user values of the rows ``index`` (b, n), one resample a row (λ per resample)."""
        lam: np.ndarray | float = 1.0
        if estimator == "snips":
            weight_sum = sums.inverse_exposed[index].sum(axis=-1, keepdims=True)  # (b, 1)
            candidates = sums.candidates[index].sum(axis=-1, keepdims=True)
            # without any exposure every sum λ multiplies is 0: any finite λ will do
            lam = np.divide(candidates, weight_sum, out=np.ones(weight_sum.shape), where=weight_sum > 0)
        relevant = None if known is None else known[index]
        return _user_values(sums.gain[index], sums.count[index], lam, defined[index], metric, k, relevant, project)

    def mean_value(index: np.ndarray) -> np.ndarray:
        values = user_values(index)
        ok = np.isfinite(values)
        with np.errstate(invalid="ignore"):  # a resample without a defined user has no mean: NaN
            return np.where(ok, values, 0.0).sum(axis=1) / ok.sum(axis=1)

    per_user = user_values(np.arange(n_rows)[None, :])[0]
    n_defined = int(np.isfinite(per_user).sum())
    value = float(np.nanmean(per_user)) if n_defined else float("nan")
    low, high = _percentile_interval(mean_value, n_rows, n_boot, alpha, seed)
    return Estimate(value, low, high, sums.ess, n_defined, n_rows - n_defined, per_user)


def true_value(
    top_items: np.ndarray,
    relevance: sp.spmatrix | np.ndarray,
    k: int,
    metric: Metric = "ndcg",
    *,
    users: np.ndarray | None = None,
    mask: sp.spmatrix | np.ndarray | None = None,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    """The estimand: the metric on the full 0/1 relevance (every item exposed, p = 1),
    which the naive estimator computes exactly; ``ess`` is the number of relevant pairs."""
    n_items = int(np.shape(relevance)[1])
    return estimate(
        top_items, relevance, np.ones(n_items), k, metric, "naive", users=users, mask=mask, n_boot=n_boot, seed=seed
    )
