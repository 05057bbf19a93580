"""Propensities P(o_ui = 1): the probability that user u was exposed to (or rated) item i.

The estimators (each a propensity per item, per pair, or a callable on pairs):

- ``popularity``: θ_i = c · (pop_i / max_j pop_j)^η, pop_i the clicks of item i; Rel-MF
  (Saito et al., WSDM 2020) fixes η = 0.5, c = 1; ``fit_power_law`` fits both.
- ``naive_bayes`` (Schnabel et al., "Recommendations as Treatments", ICML 2016):
  P(O = 1 | Y = y) = P(Y = y | O = 1) · P(O = 1) / P(Y = y).
- ``logistic``: L2-regularized logistic regression of o_ui on user and item features.
- ``exposure_tower``: the dual model's exposure probabilities σ(ô_ui), as propensities.

Every estimator clips from below (``clip``), so that a weight 1/p is at most 1 / clip.
``DEFAULT_CLIP = 1e-3`` caps it at 1000: evaluation wants little bias, so the floor is
low and binds only near zero (an item never clicked has θ_i = 0 under the popularity
model); training losses use a higher one (``RelMFConfig.propensity_clip = 0.1``) to cap
gradient variance. ``score_propensities`` scores estimates against true probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import optimize
from scipy.special import expit

from debias_pipeline.evaluation.metrics import mean_log_likelihood, pooled_auc
from debias_pipeline.evaluation.truth import expected_auc, spearman

DEFAULT_CLIP = 1e-3
RELMF_ETA = 0.5  # Rel-MF's exponent: θ_i = (pop_i / max pop)^0.5

PairPropensity = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Maps (n,) user ids and (n,) item ids to the (n,) propensities of those pairs."""

PropensityLike = PairPropensity | np.ndarray | sp.spmatrix
"""A ``PairPropensity``, an (n_items,) item propensity, or an (n_users, n_items) matrix."""


def checked_probabilities(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as float64 after checking that they are finite and in [0, 1]."""
    p = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]")
    return p


def _check_clip(clip: float) -> None:
    if not 0.0 <= clip <= 1.0:
        raise ValueError(f"clip must be in [0, 1], got {clip}")


def clip_propensities(propensities: np.ndarray, clip: float = DEFAULT_CLIP, name: str = "propensities") -> np.ndarray:
    """max(p, clip), after checking p in [0, 1]: the IPS floor (weights at most 1 / clip)."""
    _check_clip(clip)
    return np.maximum(checked_probabilities(propensities, name), clip)


def inverse_propensity_weights(
    propensities: np.ndarray, clip: float = DEFAULT_CLIP, name: str = "propensities"
) -> np.ndarray:
    """1 / max(p, clip); a zero propensity left unclipped (clip = 0) is an error."""
    p = clip_propensities(propensities, clip, name)
    if np.any(p == 0.0):
        raise ValueError(f"{name} holds a zero propensity and clip is 0: its weight 1/p is infinite; set clip > 0")
    return 1.0 / p


def self_normalized_weights(
    propensities: np.ndarray, total: float | None = None, clip: float = DEFAULT_CLIP
) -> np.ndarray:
    """Inverse-propensity weights rescaled to sum to ``total`` (SNIPS).

    ``w_j = total · (1/p_j) / Σ_k 1/p_k``. Over the observed pairs of a log drawn from
    N pairs, Σ_{o=1} 1/p has expectation N, so with ``total = N`` the self-normalized
    estimate ``(1/N) Σ_{o=1} w δ = Σ δ/p / Σ 1/p`` replaces the random normalizer by its
    expectation (Swaminathan & Joachims, NeurIPS 2015; Schnabel et al., 2016): biased,
    consistent, bounded by the largest δ. ``total`` defaults to the number of weights.
    """
    w = inverse_propensity_weights(propensities, clip)
    if total is not None and total <= 0:
        raise ValueError(f"total must be > 0, got {total}")
    return w * ((w.size if total is None else total) / w.sum()) if w.size else w


def pair_propensities(
    source: PropensityLike, users: np.ndarray, items: np.ndarray, clip: float = DEFAULT_CLIP
) -> np.ndarray:
    """The clipped propensities of the pairs ``(users[j], items[j])``, (n,), from a
    ``PairPropensity``, an (n_items,) θ_i, or an (n_users, n_items) dense or sparse
    matrix (a sparse matrix's missing entries read as 0, hence as ``clip``)."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError(f"users and items must have one shape, got {users.shape} and {items.shape}")
    if callable(source):
        values = np.asarray(source(users, items), dtype=np.float64)
    elif sp.issparse(source):
        values = np.asarray(sp.csr_matrix(source)[users, items], dtype=np.float64).ravel()
    else:
        table = np.asarray(source, dtype=np.float64)
        if table.ndim not in (1, 2):
            raise ValueError(f"propensity must be 1-d (per item) or 2-d (per pair), got {table.ndim} dimensions")
        values = table[items] if table.ndim == 1 else table[users, items]
    if values.shape != users.shape:
        raise ValueError(f"propensity gave shape {values.shape} for {users.shape} pairs")
    return clip_propensities(values, clip, "propensity")


# ---- Popularity: θ_i = c · (pop_i / max pop)^η -------------------------------------------
@dataclass(frozen=True, eq=False)
class PopularityPropensity:
    """θ_i = max(c · (pop_i / max_j pop_j)^η, clip): the same for every user."""

    eta: float
    scale: float
    item_propensity: np.ndarray  # (n_items,) clipped θ

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.item_propensity[np.asarray(items, dtype=np.int64)]


def item_popularity(clicks: sp.spmatrix | np.ndarray) -> np.ndarray:
    """pop_i, the positive entries of column i of ``clicks`` (n_users, n_items); (n_items,)."""
    positive = sp.csr_matrix(clicks) > 0
    return np.asarray(positive.sum(axis=0), dtype=np.float64).ravel()


def _scale_given_eta(a: np.ndarray, k: np.ndarray, n: float) -> float:
    """The c maximizing Σ_i k_i log(c a_i) + (n − k_i) log(1 − c a_i) on (0, 1 / max a): its
    derivative f(c) = Σ k_i / c − Σ (n − k_i) a_i / (1 − c a_i) falls from +∞ at 0, so
    the maximum is f's one root, or the upper end when f stays positive there."""
    top = (1.0 - 1e-12) / a.max()

    def slope(c: float) -> float:
        return k.sum() / c - np.sum((n - k) * a / (1.0 - c * a))

    if slope(top) >= 0:
        return top
    low = top / 2
    while slope(low) <= 0:
        low /= 2
    return float(optimize.brentq(slope, low, top, xtol=1e-15, rtol=1e-12))


def fit_power_law(
    popularity: np.ndarray,
    exposures: np.ndarray,
    n_users: float,
    eta: float | None = None,
    eta_bounds: tuple[float, float] = (0.0, 4.0),
) -> tuple[float, float]:
    """Maximum-likelihood (c, η) of P(o_ui = 1) = c · x_i^η, x_i = pop_i / max_j pop_j.

    Each item's exposures are Binomial(n_users, q_i), q_i = c x_i^η, so the log-likelihood

        ℓ(c, η) = Σ_i k_i log q_i + (n_users − k_i) log(1 − q_i)

    depends only on the per-item exposure counts k_i. For fixed η the best c is the root
    of ∂ℓ/∂c (``_scale_given_eta``); η maximizes that profile likelihood on
    ``eta_bounds``. Maximum likelihood rather than least squares of log k_i on log x_i:
    the Binomial weighs each item by its information, where the log-log fit would drop
    items with k_i = 0 and weigh rare items' noisy logs like the head's.

    η is not identified from the clicks alone: with ``exposures = popularity`` the
    saturated fit q_i = pop_i / n_users is reached at η = 1 exactly. The counts must come
    from a log of exposures with or without a click (the simulator's exposures, the rated
    pairs of a rating log whose positives make ``popularity``). Items with pop_i = 0 are
    left out (q_i = 0 for η > 0).

    Args:
        popularity, exposures: (n_items,) pop_i >= 0 and k_i in [0, n_users] (expected
            counts Σ_u P(o_ui = 1) give the expected log-likelihood).
        n_users: trials per item.
        eta, eta_bounds: a fixed η (only c is fitted), or None and the search interval.
    """
    pop, k = np.asarray(popularity, dtype=np.float64).ravel(), np.asarray(exposures, dtype=np.float64).ravel()
    if pop.shape != k.shape:
        raise ValueError(f"popularity and exposures must have one length, got {pop.size} and {k.size}")
    if n_users <= 0 or np.any(k < 0) or np.any(k > n_users) or np.any(pop < 0):
        raise ValueError("exposures must lie in [0, n_users], popularity must be >= 0 and n_users > 0")
    keep = pop > 0
    if not keep.any() or k[keep].sum() == 0:
        raise ValueError("no item has both a click (popularity) and an exposure: nothing to fit")
    log_x = np.log(pop[keep] / pop.max())  # <= 0
    k = k[keep]

    def profile(e: float) -> tuple[float, float]:
        a = np.exp(e * log_x)  # x^η
        c = _scale_given_eta(a, k, n_users)
        q = c * a
        return c, float(-np.sum(k * np.log(q) + (n_users - k) * np.log1p(-q)))

    if eta is None:
        bounded = {"bounds": eta_bounds, "method": "bounded", "options": {"xatol": 1e-9}}
        eta = optimize.minimize_scalar(lambda e: profile(e)[1], **bounded).x
    return profile(eta)[0], float(eta)


def popularity(
    clicks: sp.spmatrix | np.ndarray,
    *,
    exposed: sp.spmatrix | np.ndarray | None = None,
    eta: float | None = None,
    clip: float = DEFAULT_CLIP,
    eta_bounds: tuple[float, float] = (0.0, 4.0),
) -> PopularityPropensity:
    """Item propensities θ_i = max(c · (pop_i / max_j pop_j)^η, clip): without ``exposed``,
    Rel-MF's c = 1 (``eta=RELMF_ETA``: θ_i = (pop_i / max pop)^0.5); with it, c (and η when
    ``eta`` is None) by maximum likelihood of the exposures (``fit_power_law``).

    Args:
        clicks: (n_users, n_items) Y; pop_i counts its positive entries.
        exposed: (n_users, n_items) exposure indicator (or probabilities); its column
            sums are the per-item exposures k_i.
        eta, eta_bounds: the exponent, or None to fit it (needs ``exposed``) on eta_bounds.
        clip: the floor of θ_i; an item without a click gets θ_i = clip (for η > 0).
    """
    pop = item_popularity(clicks)
    if pop.max(initial=0.0) == 0:
        raise ValueError("clicks has no positive entry: popularity is undefined")
    if exposed is None:
        if eta is None:
            message = "eta is not identified from clicks alone: pass exposed= (an exposure log) to fit it"
            raise ValueError(f"{message}, or eta= (Rel-MF's is {RELMF_ETA})")
        scale = 1.0
    else:
        matrix = sp.csr_matrix(exposed, dtype=np.float64)
        if matrix.shape != tuple(np.shape(clicks)):
            raise ValueError(f"exposed must have the shape of clicks {np.shape(clicks)}, got {matrix.shape}")
        counts = np.asarray(matrix.sum(axis=0)).ravel()
        scale, eta = fit_power_law(pop, counts, matrix.shape[0], eta=eta, eta_bounds=eta_bounds)
    theta = scale * (pop / pop.max()) ** eta
    return PopularityPropensity(float(eta), float(scale), clip_propensities(theta, clip, "item propensity"))


# ---- Naive Bayes on outcome values (Schnabel et al., 2016) -----------------------------------
@dataclass(frozen=True, eq=False)
class NaiveBayesPropensity:
    """P(O = 1 | Y = y) for each outcome value y; call it on the outcomes of pairs."""

    values: np.ndarray  # (n_values,) sorted distinct outcomes
    propensity: np.ndarray  # (n_values,) clipped P(O = 1 | Y = value)
    p_observed: float  # P(O = 1)

    def __call__(self, outcomes: np.ndarray) -> np.ndarray:
        y = np.asarray(outcomes, dtype=np.float64)
        at = np.minimum(np.searchsorted(self.values, y), self.values.size - 1)
        unknown = self.values[at] != y
        if np.any(unknown):
            raise ValueError(f"outcomes holds values the fit has not seen: {np.unique(y[unknown])[:5]}")
        return self.propensity[at]


def naive_bayes(
    biased_outcomes: np.ndarray,
    unbiased_outcomes: np.ndarray,
    n_pairs: int,
    *,
    smoothing: float = 0.0,
    clip: float = DEFAULT_CLIP,
) -> NaiveBayesPropensity:
    """Propensity of an observed pair from its outcome by Bayes' rule (Schnabel et al., 2016).

        P(O = 1 | Y = y) = P(Y = y | O = 1) · P(O = 1) / P(Y = y)

    with P(Y = y | O = 1) the share of y among the biased log's observed outcomes,
    P(Y = y) its share in the unbiased (MCAR) sample and P(O = 1) = #observed / n_pairs.
    Outcomes are rating values (1..5) or binary labels (0/1): with binary labels every
    observed pair must be listed, its negatives (a low rating) included. Finite samples
    can push the ratio above 1; it is capped at 1, then clipped from below.

    Args:
        biased_outcomes: (n_observed,) the outcome of every observed pair of the MNAR log
            (``sp.coo_matrix(train).data`` for Coat's rating matrix).
        unbiased_outcomes: (n_mcar,) outcomes of the MCAR sample.
        n_pairs: n_users · n_items, the pairs the observations are drawn from.
        smoothing: s >= 0 added to each value's count in both (Laplace), needed when a
            biased outcome never occurs in the MCAR sample; ``clip``: the floor.
    """
    biased = np.asarray(biased_outcomes, dtype=np.float64).ravel()
    unbiased = np.asarray(unbiased_outcomes, dtype=np.float64).ravel()
    if biased.size == 0 or unbiased.size == 0:
        raise ValueError("biased_outcomes and unbiased_outcomes must both be non-empty")
    if n_pairs < biased.size:
        raise ValueError(f"n_pairs ({n_pairs}) must be at least the number of observed pairs ({biased.size})")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    values = np.union1d(biased, unbiased)
    biased_counts = np.bincount(np.searchsorted(values, biased), minlength=values.size) + smoothing
    unbiased_counts = np.bincount(np.searchsorted(values, unbiased), minlength=values.size) + smoothing
    given_observed = biased_counts / biased_counts.sum()  # P(Y = y | O = 1)
    marginal = unbiased_counts / unbiased_counts.sum()  # P(Y = y)
    missing = (marginal == 0) & (given_observed > 0)
    if np.any(missing):
        raise ValueError(
            f"outcome(s) {values[missing]} never occur in unbiased_outcomes, so P(Y = y) = 0: pass smoothing > 0"
        )
    p_observed = biased.size / n_pairs
    ratio = np.divide(given_observed * p_observed, marginal, out=np.zeros(values.size), where=marginal > 0)
    return NaiveBayesPropensity(values, clip_propensities(np.minimum(ratio, 1.0), clip), float(p_observed))


# ---- Logistic regression of the exposure indicator ------------------------------------------
@dataclass(frozen=True, eq=False)
class LogisticPropensity:
    """σ(b + a_u + c_i), clipped: the model is additive, so every user feature folds
    into a per-user logit term a_u and every item feature into c_i."""

    intercept: float
    user_logit: np.ndarray  # (n_users,) a_u
    item_logit: np.ndarray  # (n_items,) c_i
    clip: float = DEFAULT_CLIP

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        return self.intercept + self.user_logit[users] + self.item_logit[items]

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.maximum(expit(self.logits(users, items)), self.clip)


def _sample_unobserved(observed: sp.csr_matrix, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``size`` pairs drawn uniformly, with replacement, among the unobserved pairs."""
    n_users, n_items = observed.shape
    n_all = n_users * n_items
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(observed.indptr))
    keys = rows * n_items + observed.indices  # sorted: canonical CSR is row-major with sorted columns
    drawn = np.zeros(0, dtype=np.int64)
    while drawn.size < size:  # rejection: draw all pairs, keep the unobserved ones
        candidates = rng.integers(n_all, size=int((size - drawn.size) * n_all / (n_all - keys.size) * 1.1) + 16)
        at = np.minimum(np.searchsorted(keys, candidates), max(keys.size - 1, 0))
        drawn = np.concatenate([drawn, candidates[keys[at] != candidates] if keys.size else candidates])
    pairs = drawn[:size]
    return pairs // n_items, pairs % n_items


def _feature_block(
    counts: np.ndarray, one_hot: bool, extra: sp.spmatrix | np.ndarray | None, name: str
) -> sp.csr_matrix:
    """[one-hot id | standardized log(1 + count) | extra features] of users or items."""
    n = counts.size
    blocks: list[sp.spmatrix] = [sp.identity(n, format="csr")] if one_hot else []
    log_count = np.log1p(counts)
    if log_count.std() > 0:  # a constant column only duplicates the intercept
        blocks.append(sp.csr_matrix(((log_count - log_count.mean()) / log_count.std())[:, None]))
    if extra is not None:
        extra = sp.csr_matrix(extra, dtype=np.float64)
        if extra.shape[0] != n:
            raise ValueError(f"{name} must have {n} rows, got {extra.shape[0]}")
        blocks.append(extra)
    return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((n, 0))


def logistic(
    observed: sp.spmatrix | np.ndarray,
    *,
    user_features: sp.spmatrix | np.ndarray | None = None,
    item_features: sp.spmatrix | np.ndarray | None = None,
    id_features: bool = True,
    negative_ratio: float = 4.0,
    l2: float = 1.0,
    clip: float = DEFAULT_CLIP,
    seed: int = 0,
    max_iter: int = 1000,
) -> LogisticPropensity:
    """P(o_ui = 1) = σ(b + x_u·β_U + z_i·β_I), fitted on observed vs sampled unobserved pairs.

    Features: one-hot user and item ids (``id_features``), the standardized log(1 +
    activity) of the user and log(1 + popularity) of the item (both from ``observed``),
    and the given feature matrices. Objective, minimized by L-BFGS:

        Σ_pairs w_j [softplus(s_j) − o_j s_j] + (l2 / 2) ||β||²,   s_j the logit,

    the intercept b unpenalized: ``l2`` is the precision of a N(0, 1/l2) prior on every
    coefficient. Sampling correction: each observed pair has w = 1; m = ``negative_ratio``
    · n_observed unobserved pairs are drawn uniformly with replacement, each with w =
    n_unobserved / m. An unobserved pair is drawn m / n_unobserved times in expectation,
    so the weighted sum is an unbiased estimate of the log-likelihood over all pairs: no
    shift of the intercept by log(n_unobserved / m) as in an unweighted case-control fit
    (King & Zeng, 2001), and the penalty keeps its weight relative to the data.

    Args:
        observed: (n_users, n_items) observation indicator (nonzero = observed).
        user_features, item_features: (n_users, d_u) and (n_items, d_i) extra features.
        id_features: include one-hot user and item ids.
        negative_ratio: sampled unobserved pairs per observed pair (m / n_observed).
        l2, clip, seed, max_iter: the L2 weight (> 0), the floor, the sample's seed,
            L-BFGS iterations.
    """
    matrix = sp.csr_matrix(sp.csr_matrix(observed) != 0, dtype=np.float64)
    matrix.sum_duplicates()
    n_users, n_items = matrix.shape
    pos_users, pos_items = matrix.nonzero()
    n_pos, n_unobserved = pos_users.size, n_users * n_items - pos_users.size
    if n_pos == 0 or n_unobserved == 0 or negative_ratio <= 0 or l2 <= 0:
        raise ValueError(
            "observed must hold both observed and unobserved pairs, and negative_ratio and l2 must be > 0, "
            f"got {n_pos} observed of {n_users * n_items}, negative_ratio {negative_ratio}, l2 {l2}"
        )
    n_neg = max(1, round(negative_ratio * n_pos))
    neg_users, neg_items = _sample_unobserved(matrix, n_neg, np.random.default_rng(seed))
    users, items = np.concatenate([pos_users, neg_users]), np.concatenate([pos_items, neg_items])
    labels = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    weights = np.concatenate([np.ones(n_pos), np.full(n_neg, n_unobserved / n_neg)])

    activity = np.diff(matrix.indptr).astype(np.float64)
    user_block = _feature_block(activity, id_features, user_features, "user_features")
    item_block = _feature_block(item_popularity(matrix), id_features, item_features, "item_features")
    design = sp.hstack([user_block[users], item_block[items]], format="csr")  # (n_rows, d_u + d_i)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        beta = theta[1:]
        logits = design @ beta + theta[0]
        value = np.sum(weights * (np.logaddexp(0.0, logits) - labels * logits)) + 0.5 * l2 * beta @ beta
        residual = weights * (expit(logits) - labels)
        return float(value), np.concatenate([[residual.sum()], design.T @ residual + l2 * beta])

    start = np.r_[np.log(n_pos / n_unobserved), np.zeros(design.shape[1])]  # b at the observed share's logit
    fit = optimize.minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    user_beta, item_beta = fit.x[1 : 1 + user_block.shape[1]], fit.x[1 + user_block.shape[1] :]
    return LogisticPropensity(float(fit.x[0]), user_block @ user_beta, item_block @ item_beta, clip)


# ---- The dual model's exposure tower --------------------------------------------------------
def exposure_tower(
    exposure: np.ndarray | PairPropensity, *, logits: bool = False, clip: float = DEFAULT_CLIP
) -> PairPropensity:
    """The dual model's exposure probabilities σ(ô_ui) as a propensity on pairs: from an
    (n_users, n_items) matrix (numpy or CPU tensor) or a callable on (users, items);
    ``logits``: it holds ô rather than σ(ô). A matrix is checked at once."""
    if callable(exposure):
        source = exposure
    else:
        matrix = np.asarray(exposure, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"exposure must be an (n_users, n_items) matrix, got shape {matrix.shape}")
        matrix = checked_probabilities(expit(matrix) if logits else matrix, "exposure")
        logits = False  # already σ(ô)

        def source(users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return matrix[users, items]

    def propensity(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        values = np.asarray(source(np.asarray(users, np.int64), np.asarray(items, np.int64)), dtype=np.float64)
        return clip_propensities(expit(values) if logits else values, clip, "exposure")

    _check_clip(clip)  # here, not at the first call
    return propensity


# ---- Scoring against the truth --------------------------------------------------------------
def _expected_log_loss(estimated: np.ndarray, probabilities: np.ndarray) -> float:
    """E_o[−log P̂(o)] for o ~ Bernoulli(p): −mean(p log p̂ + (1 − p) log(1 − p̂))."""
    q = np.clip(estimated, 1e-12, 1.0 - 1e-12)  # a propensity of exactly 0 or 1 would give an infinite loss
    return float(-np.mean(probabilities * np.log(q) + (1.0 - probabilities) * np.log1p(-q)))


def score_propensities(
    estimated: np.ndarray, true_probabilities: np.ndarray, observed: np.ndarray | None = None
) -> dict[str, float]:
    """Estimated P(o = 1) of n pairs (n,) against the true ones (the simulator's), and
    against the drawn exposure indicator ``observed`` (n,) when given.

    Returns:
        ``expected_auc`` (``truth.expected_auc``, on exposures drawn from the truth) and
        its ceiling ``oracle_auc``; ``expected_log_loss`` −mean(p log p̂ + (1 − p)
        log(1 − p̂)) and its floor ``oracle_log_loss`` (the entropy, at p̂ = p);
        ``spearman``; ``mean_estimated``, ``mean_true``. With ``observed``: ``auc``
        (``metrics.pooled_auc``) and ``log_loss`` (−``metrics.mean_log_likelihood``), NaN
        for a single class. p̂ is kept in [1e-12, 1 − 1e-12] in logs.
    """
    est = checked_probabilities(estimated, "estimated").ravel()
    true = checked_probabilities(true_probabilities, "true_probabilities").ravel()
    if est.shape != true.shape:
        raise ValueError(f"estimated and true_probabilities must have one length, got {est.size} and {true.size}")
    scores = {
        "expected_auc": expected_auc(est, true),
        "oracle_auc": expected_auc(true, true),
        "expected_log_loss": _expected_log_loss(est, true),
        "oracle_log_loss": _expected_log_loss(true, true),
        "spearman": spearman(est, true),
        "mean_estimated": float(np.mean(est)) if est.size else float("nan"),
        "mean_true": float(np.mean(true)) if true.size else float("nan"),
    }
    if observed is not None:
        drawn = np.asarray(observed).ravel()
        if drawn.shape != est.shape:
            raise ValueError(f"observed must have {est.size} entries, got {drawn.size}")
        q = np.clip(est, 1e-12, 1.0 - 1e-12)
        auc, log_likelihood = pooled_auc(drawn, est), mean_log_likelihood(drawn, np.log(q) - np.log1p(-q))
        scores["auc"] = float("nan") if auc is None else auc
        scores["log_loss"] = float("nan") if log_likelihood is None else -log_likelihood
    return scores
