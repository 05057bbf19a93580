"""A seeded simulator of exposure-biased ratings with known ground truth.

Generative story (everything drawn from one ``numpy`` generator seeded by ``seed``):

1. True preference ``P(r_ui = 1) = σ(c_r + b_i + u_u · v_i)`` with user and item factors
   of rank ``rank`` whose item spectrum decays (column j scaled by j^-0.5), and item
   biases b_i ~ N(0, 0.5²); c_r is set so that the mean preference is
   ``preference_rate``.
2. True exposure ``P(o_ui = 1) = σ(c_o + skew · log q_i + a_u)``: q_i a Zipf-like item
   popularity (rank^-1 over a random item order, partly aligned with b_i so that
   popular items are also liked more), a_u ~ N(0, 0.5²) the user's activity; c_o is
   set so that the expected number of biased ratings per user is
   ``train_ratings_per_user``. ``popularity_skew = 0`` shows items at random.
3. A shown item is rated with probability ``rate_if_liked`` when the user likes it
   (r = 1) and ``rate_if_disliked`` otherwise (users rate what they like more often).
4. Ratings: a liked item gets 4 or 5, a disliked one 1, 2 or 3 (uniformly), so the
   default binarization (>= 4) recovers r.
5. The unbiased set shows ``test_items_per_user`` random items to every user and
   records fresh preference draws as ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from debias_pipeline.config import require


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and strengths of the simulator; defaults are sized like Coat."""

    n_users: int = 300
    n_items: int = 300
    rank: int = 8
    preference_rate: float = 0.3
    popularity_skew: float = 1.0
    train_ratings_per_user: float = 24.0
    test_items_per_user: int = 16
    rate_if_liked: float = 0.9
    rate_if_disliked: float = 0.3

    def __post_init__(self) -> None:
        require(self.n_users >= 2 and self.n_items >= 2, "n_users and n_items must be >= 2")
        require(1 <= self.rank <= min(self.n_users, self.n_items), f"rank must be in 1..min(n_users, n_items), got {self.rank}")
        require(0 < self.preference_rate < 1, f"preference_rate must be in (0, 1), got {self.preference_rate}")
        require(self.popularity_skew >= 0, f"popularity_skew must be >= 0, got {self.popularity_skew}")
        require(
            0 < self.train_ratings_per_user < self.n_items,
            f"train_ratings_per_user must be in (0, n_items), got {self.train_ratings_per_user}",
        )
        require(
            1 <= self.test_items_per_user <= self.n_items,
            f"test_items_per_user must be in 1..n_items, got {self.test_items_per_user}",
        )
        for name in ("rate_if_liked", "rate_if_disliked"):
            value = getattr(self, name)
            require(0 < value <= 1, f"{name} must be in (0, 1], got {value}")


@dataclass(frozen=True)
class SyntheticData:
    """Generated ratings (own ids, 0-based) and the truth behind them."""

    ratings: pd.DataFrame  # user, item, rating, source
    true_preference: np.ndarray  # (n_users, n_items) P(r = 1)
    true_exposure: np.ndarray  # (n_users, n_items) P(o = 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrate_offset(logits: np.ndarray, target_mean: float, weights: np.ndarray | float = 1.0) -> float:
    """Offset c with mean(weights · σ(logits + c)) = target_mean, by bisection."""
    low, high = -50.0, 50.0
    for _ in range(100):
        mid = (low + high) / 2
        if np.mean(weights * _sigmoid(logits + mid)) < target_mean:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _ratings_from_likes(rng: np.random.Generator, liked: np.ndarray) -> np.ndarray:
    return np.where(liked, rng.integers(4, 6, size=liked.shape), rng.integers(1, 4, size=liked.shape))


def generate_synthetic(config: SyntheticConfig, seed: int) -> SyntheticData:
    """Draw a biased train set, an unbiased test set and the true probabilities."""
    rng = np.random.default_rng(seed)
    n_users, n_items = config.n_users, config.n_items

    spectrum = np.arange(1, config.rank + 1) ** -0.5
    user_factors = rng.normal(size=(n_users, config.rank))
    item_factors = rng.normal(size=(n_items, config.rank)) * spectrum
    item_bias = rng.normal(scale=0.5, size=n_items)
    preference_logits = user_factors @ item_factors.T * (1.5 / np.sqrt(spectrum.sum())) + item_bias
    preference_logits += _calibrate_offset(preference_logits, config.preference_rate)
    true_preference = _sigmoid(preference_logits)

    # Popularity order partly follows the item bias: promoted items are also liked more.
    order = np.argsort(-(item_bias + rng.normal(scale=0.5, size=n_items)))
    popularity_rank = np.empty(n_items)
    popularity_rank[order] = np.arange(1, n_items + 1)
    user_activity = rng.normal(scale=0.5, size=(n_users, 1))
    exposure_logits = config.popularity_skew * -np.log(popularity_rank)[None, :] + user_activity
    rate_probability = true_preference * config.rate_if_liked + (1 - true_preference) * config.rate_if_disliked
    exposure_logits = exposure_logits + _calibrate_offset(
        exposure_logits, config.train_ratings_per_user / n_items, weights=rate_probability
    )
    true_exposure = _sigmoid(exposure_logits)
    reachable = float(np.mean(true_exposure * rate_probability)) * n_items
    if abs(reachable - config.train_ratings_per_user) > 1e-3 * config.train_ratings_per_user:
        raise ValueError(
            f"parameter 'synthetic.train_ratings_per_user' = {config.train_ratings_per_user} cannot be reached "
            f"with n_items = {n_items} and these rating rates (at most {reachable:.2f} per user)"
        )

    liked = rng.random((n_users, n_items)) < true_preference
    shown = rng.random((n_users, n_items)) < true_exposure
    rated = shown & (rng.random((n_users, n_items)) < np.where(liked, config.rate_if_liked, config.rate_if_disliked))
    train_users, train_items = np.nonzero(rated)
    train_ratings = _ratings_from_likes(rng, liked[train_users, train_items])

    test_items = np.argsort(rng.random((n_users, n_items)), axis=1)[:, : config.test_items_per_user]
    test_users = np.repeat(np.arange(n_users), config.test_items_per_user)
    test_items = np.sort(test_items, axis=1).ravel()
    test_liked = rng.random(test_users.size) < true_preference[test_users, test_items]
    test_ratings = _ratings_from_likes(rng, test_liked)

    ratings = pd.DataFrame(
        {
            "user": np.r_[train_users, test_users].astype(np.int64),
            "item": np.r_[train_items, test_items].astype(np.int64),
            "rating": np.r_[train_ratings, test_ratings].astype(np.int64),
            "source": np.r_[np.full(train_users.size, "biased"), np.full(test_users.size, "unbiased")],
        }
    )
    return SyntheticData(ratings=ratings, true_preference=true_preference, true_exposure=true_exposure)
