"""A seeded simulator of exposure-biased ratings whose true preference and exposure are known.

Generative story (every draw from one ``numpy`` generator seeded by ``seed``):

1. True preference ``P(r_ui = 1) = σ(c_r + b_i + s · u_u · v_i)``: user and item factors
   of rank ``rank`` with a long-tailed item spectrum (column j scaled by j^-0.5),
   s = 1.5 / sqrt(Σ_j j^-0.5), item biases b_i ~ N(0, 0.5²); c_r makes the mean
   preference ``preference_rate``.
2. True exposure ``P(o_ui = 1) = σ(c_o + β · (α · log(1 / q_i) + a_u + x_u · z_i))``:
   q_i the rank of item i in a Zipf-like popularity order (partly aligned with b_i, so
   that promoted items are also liked more), α = ``popularity_skew``; a_u ~ N(0,
   ``activity_scale``²) the user's activity; x_u · z_i a low-rank part of rank
   ``exposure_rank`` with standard deviation ``exposure_scale`` (flat spectrum); β =
   ``bias_strength``. c_o makes the expected number of biased ratings per user
   ``train_ratings_per_user``. ``bias_strength = 0`` shows items at random.
3. A shown item is rated with probability ``rate_if_liked`` when the user likes it
   (r = 1) and ``rate_if_disliked`` otherwise; a liked item gets 4 or 5, a disliked one
   1, 2 or 3 (uniformly), so the default binarization (>= 4) recovers r and a click
   y = 1 has probability ``rate_if_liked · P(o) · P(r)``.
4. The unbiased set shows ``test_items_per_user`` random items to ``test_users`` random
   users (0 = every user) and records fresh preference draws as ratings.

Nothing of size n_users x n_items is ever held at once: exposures are drawn in chunks
of users, the offsets are calibrated on all pairs when there are at most
``CALIBRATION_PAIRS`` of them and on a seeded sample otherwise, and the truth is kept
as factors (``GroundTruth``) from which probabilities are computed for given pairs or
chunks of users.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import model_validator

from debias_pipeline.config.params import Params, require

Kind = Literal["preference", "exposure"]
KINDS: tuple[Kind, ...] = ("preference", "exposure")

SPECTRUM_DECAY = 0.5  # item factor column j scaled by j^-0.5
PREFERENCE_SCALE = 1.5
ITEM_BIAS_SCALE = 0.5
POPULARITY_NOISE = 0.5  # popularity order = order of b_i + N(0, 0.5²)
CALIBRATION_PAIRS = 1_000_000  # offsets fitted on all pairs up to this many, else on a sample
CHUNK_PAIRS = 4_000_000  # users per chunk x n_items stays below this
DENSE_LIMIT = 25_000_000  # largest n_users x n_items the truth materializes as a whole

# Calibrated against PROTOCOL.md §2 and the targets in PRESET_TARGETS (see there).
PRESETS: dict[str, dict[str, Any]] = {
    # Today's built-in dataset: sized like Coat, exposure from popularity and activity only.
    "default": {
        "n_users": 300,
        "n_items": 300,
        "rank": 8,
        "preference_rate": 0.3,
        "exposure_rank": 0,
        "exposure_scale": 0.0,
        "activity_scale": 0.5,
        "popularity_skew": 1.0,
        "bias_strength": 1.0,
        "train_ratings_per_user": 24.0,
        "test_users": 0,
        "test_items_per_user": 16,
        "rate_if_liked": 0.9,
        "rate_if_disliked": 0.3,
    },
    # Coat: every user rated exactly 24 self-selected items, so no activity spread.
    "coat_like": {
        "n_users": 290,
        "n_items": 300,
        "rank": 8,
        "preference_rate": 0.185,
        "exposure_rank": 3,
        "exposure_scale": 1.0,
        "activity_scale": 0.0,
        "popularity_skew": 0.55,
        "bias_strength": 1.0,
        "train_ratings_per_user": 24.0,
        "test_users": 0,
        "test_items_per_user": 16,
        "rate_if_liked": 0.9,
        "rate_if_disliked": 0.62,
    },
    "yahoo_like": {
        "n_users": 15_400,
        "n_items": 1_000,
        "rank": 8,
        "preference_rate": 0.10,
        "exposure_rank": 4,
        "exposure_scale": 1.0,
        "activity_scale": 0.5,
        "popularity_skew": 0.92,
        "bias_strength": 1.0,
        "train_ratings_per_user": 311_704 / 15_400,
        "test_users": 5_400,
        "test_items_per_user": 10,
        "rate_if_liked": 0.9,
        "rate_if_disliked": 0.19,
    },
    # Gowalla's size (LightGCN's split: 29,858 x 40,981, 1,027,370 interactions) for
    # scale tests; Gowalla has no random-exposure set, so its unbiased part is invented.
    "gowalla": {
        "n_users": 30_000,
        "n_items": 40_000,
        "rank": 16,
        "preference_rate": 0.05,
        "exposure_rank": 8,
        "exposure_scale": 1.0,
        "activity_scale": 0.7,
        "popularity_skew": 0.5,
        "bias_strength": 1.0,
        "train_ratings_per_user": 1_000_000 / 30_000,
        "test_users": 0,
        "test_items_per_user": 10,
        "rate_if_liked": 0.9,
        "rate_if_disliked": 0.05,
    },
}

# What each preset aims at. Coat's figures are measured on Coat's own files (PROTOCOL.md
# §2); Yahoo!'s positive rates and popularity spread are assumptions (no data here): the
# random-song ratings are mostly 1s and 2s, the self-selected ones lean to 4s and 5s.
PRESET_TARGETS: dict[str, dict[str, float]] = {
    "coat_like": {
        "users": 290,
        "items": 300,
        "biased_ratings": 6_960,
        "unbiased_ratings": 4_640,
        "unbiased_users": 290,
        "biased_positive_rate": 0.274,
        "unbiased_positive_rate": 0.185,
        "popularity_gini": 0.293,
        "top10_share": 0.236,
    },
    "yahoo_like": {
        "users": 15_400,
        "items": 1_000,
        "biased_ratings": 311_704,
        "unbiased_ratings": 54_000,
        "unbiased_users": 5_400,
        "biased_positive_rate": 0.40,
        "unbiased_positive_rate": 0.10,
        "popularity_gini": 0.50,
    },
    "gowalla": {
        "users": 30_000,
        "items": 40_000,
        "biased_ratings": 1_000_000,
    },
}


class SyntheticConfig(Params):
    """Sizes and strengths of the simulator: a ``preset`` plus explicit overrides.

    Every field left ``None`` takes the preset's value, so ``SyntheticConfig(preset=
    "coat_like", bias_strength=0.0)`` is Coat-like with random exposure. After
    construction every field holds a value. (``replace`` keeps the resolved
    values: it overrides fields, it does not switch presets.)

    Attributes:
        preset: ``default`` (sized like Coat), ``coat_like``, ``yahoo_like`` or ``gowalla``.
        n_users, n_items: sizes.
        rank: rank of the preference factors.
        preference_rate: mean true P(like).
        exposure_rank: rank of the low-rank exposure part (0 = none).
        exposure_scale: standard deviation of the low-rank exposure logit.
        activity_scale: standard deviation of the user-activity exposure logit.
        popularity_skew: α, the weight of log(1 / popularity rank) in the exposure logit.
        bias_strength: β, scales all of the exposure logit's structure; 0 = random exposure.
        train_ratings_per_user: expected biased ratings per user.
        test_users: users with an unbiased set (0 = every user).
        test_items_per_user: random items shown to each of them in the unbiased set.
        rate_if_liked, rate_if_disliked: P(rate | shown, liked) and P(rate | shown, not liked).
    """

    preset: str = "default"
    n_users: int | None = None
    n_items: int | None = None
    rank: int | None = None
    preference_rate: float | None = None
    exposure_rank: int | None = None
    exposure_scale: float | None = None
    activity_scale: float | None = None
    popularity_skew: float | None = None
    bias_strength: float | None = None
    train_ratings_per_user: float | None = None
    test_users: int | None = None
    test_items_per_user: int | None = None
    rate_if_liked: float | None = None
    rate_if_disliked: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _preset_values(cls, data: Any) -> Any:
        """Every field left out or ``None`` takes the preset's value."""
        if not isinstance(data, Mapping) or data.get("preset", "default") not in PRESETS:
            return data
        preset = PRESETS[data.get("preset", "default")]
        return {**data, **{name: value for name, value in preset.items() if data.get(name) is None}}

    def check(self) -> None:
        require(self.preset in PRESETS, f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        require(self.n_users >= 2 and self.n_items >= 2, "n_users and n_items must be >= 2")
        smaller = min(self.n_users, self.n_items)
        require(1 <= self.rank <= smaller, f"rank must be in 1..min(n_users, n_items), got {self.rank}")
        require(
            0 <= self.exposure_rank <= smaller,
            f"exposure_rank must be in 0..min(n_users, n_items), got {self.exposure_rank}",
        )
        require(0 < self.preference_rate < 1, f"preference_rate must be in (0, 1), got {self.preference_rate}")
        for name in ("exposure_scale", "activity_scale", "popularity_skew", "bias_strength"):
            value = getattr(self, name)
            require(value >= 0, f"{name} must be >= 0, got {value}")
        require(
            0 < self.train_ratings_per_user < self.n_items,
            f"train_ratings_per_user must be in (0, n_items), got {self.train_ratings_per_user}",
        )
        require(0 <= self.test_users <= self.n_users, f"test_users must be in 0..n_users, got {self.test_users}")
        require(
            1 <= self.test_items_per_user <= self.n_items,
            f"test_items_per_user must be in 1..n_items, got {self.test_items_per_user}",
        )
        for name in ("rate_if_liked", "rate_if_disliked"):
            value = getattr(self, name)
            require(0 < value <= 1, f"{name} must be in (0, 1], got {value}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _row_dot(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", left, right)


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The true probabilities, kept as factors: ``logit P(· = 1) = users @ items.T``.

    Offsets, biases, popularity and activity are columns of the factors, so each logit
    matrix is exactly a product of two thin matrices; its singular values and rank come
    from them without forming it. ``truth["preference"]`` and ``truth["exposure"]`` give
    the dense probability matrices when n_users x n_items <= ``DENSE_LIMIT``.
    """

    preference_users: np.ndarray  # (n_users, rank + 1)
    preference_items: np.ndarray  # (n_items, rank + 1)
    exposure_users: np.ndarray  # (n_users, exposure_rank + 2)
    exposure_items: np.ndarray  # (n_items, exposure_rank + 2)

    @property
    def n_users(self) -> int:
        return int(self.preference_users.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.preference_items.shape[0])

    def factors(self, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
        """User (n_users, r) and item (n_items, r) factors of the ``kind`` logits."""
        if kind == "preference":
            return self.preference_users, self.preference_items
        if kind == "exposure":
            return self.exposure_users, self.exposure_items
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")

    def logits(self, kind: Kind, users: np.ndarray | None = None) -> np.ndarray:
        """True logits of ``users`` (all when None) against every item, (len(users), n_items)."""
        user_factors, item_factors = self.factors(kind)
        rows = user_factors if users is None else user_factors[np.asarray(users, dtype=np.int64)]
        return rows @ item_factors.T

    def probabilities(self, kind: Kind, users: np.ndarray | None = None) -> np.ndarray:
        """True probabilities of ``users`` (all when None) against every item."""
        return _sigmoid(self.logits(kind, users))

    def pair_probabilities(self, kind: Kind, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True probabilities of the given (user, item) pairs, (n_pairs,)."""
        user_factors, item_factors = self.factors(kind)
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        logits = np.empty(users.size)
        block = max(1, CHUNK_PAIRS // user_factors.shape[1])  # bounds the gathered (block, r) factor rows
        for start in range(0, users.size, block):
            part = slice(start, start + block)
            logits[part] = _row_dot(user_factors[users[part]], item_factors[items[part]])
        return _sigmoid(logits)

    def user_chunks(self, max_pairs: int = CHUNK_PAIRS) -> Iterator[np.ndarray]:
        """Consecutive user ids in blocks of at most ``max_pairs`` (user, item) pairs."""
        size = max(1, max_pairs // self.n_items)
        for start in range(0, self.n_users, size):
            yield np.arange(start, min(start + size, self.n_users))

    def singular_values(self, kind: Kind) -> np.ndarray:
        """Singular values of the true logit matrix, descending.

        With thin QR factorizations users = Q_u R_u and items = Q_v R_v, the logit matrix
        Q_u (R_u R_vᵀ) Q_vᵀ has the singular values of the small R_u R_vᵀ.
        """
        user_factors, item_factors = self.factors(kind)
        _, r_users = np.linalg.qr(user_factors)
        _, r_items = np.linalg.qr(item_factors)
        return np.linalg.svd(r_users @ r_items.T, compute_uv=False)

    def rank(self, kind: Kind, rtol: float = 1e-9) -> int:
        """Numerical rank of the true logit matrix."""
        values = self.singular_values(kind)
        return int(np.sum(values > rtol * values[0])) if values.size and values[0] > 0 else 0

    def __getitem__(self, kind: Kind) -> np.ndarray:
        """The dense (n_users, n_items) probability matrix of ``kind``, when small enough."""
        if kind not in KINDS:
            raise KeyError(kind)
        if self.n_users * self.n_items > DENSE_LIMIT:
            raise ValueError(
                f"the dense {kind} truth would hold {self.n_users} x {self.n_items} values; "
                "use probabilities(kind, users) on user_chunks() or pair_probabilities()"
            )
        return self.probabilities(kind)


@dataclass(frozen=True, eq=False)
class SyntheticData:
    """Generated ratings (own ids, 0-based) and the truth behind them."""

    ratings: pd.DataFrame  # user, item, rating, source
    truth: GroundTruth


def _calibrate_offset(logits: np.ndarray, target_mean: float, weights: np.ndarray | float = 1.0) -> float:
    """Offset c with mean(weights · σ(logits + c)) = target_mean, by bisection."""
    low, high = -60.0, 60.0
    for _ in range(64):
        mid = (low + high) / 2
        if np.mean(weights * _sigmoid(logits + mid)) < target_mean:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _calibration_pairs(n_users: int, n_items: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every (user, item) pair when there are few, else a seeded uniform sample of them."""
    if n_users * n_items <= CALIBRATION_PAIRS:
        return np.divmod(np.arange(n_users * n_items), n_items)
    return rng.integers(n_users, size=CALIBRATION_PAIRS), rng.integers(n_items, size=CALIBRATION_PAIRS)


def _draw_truth(config: SyntheticConfig, rng: np.random.Generator) -> GroundTruth:
    n_users, n_items = config.n_users, config.n_items
    ones_users, ones_items = np.ones((n_users, 1)), np.ones((n_items, 1))

    spectrum = np.arange(1, config.rank + 1) ** -SPECTRUM_DECAY
    user_factors = rng.normal(size=(n_users, config.rank)) * (PREFERENCE_SCALE / np.sqrt(spectrum.sum()))
    item_factors = rng.normal(size=(n_items, config.rank)) * spectrum
    item_bias = rng.normal(scale=ITEM_BIAS_SCALE, size=n_items)
    preference_users = np.hstack([user_factors, ones_users])
    preference_items = np.hstack([item_factors, item_bias[:, None]])

    # Popularity order partly follows the item bias: promoted items are also liked more.
    order = np.argsort(-(item_bias + rng.normal(scale=POPULARITY_NOISE, size=n_items)))
    popularity_rank = np.empty(n_items)
    popularity_rank[order] = np.arange(1, n_items + 1)
    activity = rng.normal(scale=config.activity_scale, size=n_users)
    low_rank_users = rng.normal(size=(n_users, config.exposure_rank))
    low_rank_items = rng.normal(size=(n_items, config.exposure_rank))
    beta = config.bias_strength
    low_rank_scale = config.exposure_scale / np.sqrt(max(config.exposure_rank, 1))
    # logit P(o) = β x_u·z_i + (β a_u + c_o) · 1 + 1 · β α log(1 / q_i)
    exposure_users = np.hstack([beta * low_rank_scale * low_rank_users, beta * activity[:, None], ones_users])
    exposure_items = np.hstack(
        [low_rank_items, ones_items, beta * config.popularity_skew * -np.log(popularity_rank)[:, None]]
    )

    users, items = _calibration_pairs(n_users, n_items, rng)
    preference_logits = _row_dot(preference_users[users], preference_items[items])
    preference_offset = _calibrate_offset(preference_logits, config.preference_rate)
    preference_items[:, -1] += preference_offset
    liked = _sigmoid(preference_logits + preference_offset)
    rate_probability = liked * config.rate_if_liked + (1 - liked) * config.rate_if_disliked
    exposure_logits = _row_dot(exposure_users[users], exposure_items[items])
    target = config.train_ratings_per_user / n_items
    exposure_offset = _calibrate_offset(exposure_logits, target, weights=rate_probability)
    exposure_users[:, -2] += exposure_offset
    reachable = float(np.mean(_sigmoid(exposure_logits + exposure_offset) * rate_probability)) * n_items
    if abs(reachable - config.train_ratings_per_user) > 1e-3 * config.train_ratings_per_user:
        raise ValueError(
            f"parameter 'synthetic.train_ratings_per_user' = {config.train_ratings_per_user} cannot be reached "
            f"with n_items = {n_items} and these rating rates (at most {reachable:.2f} per user)"
        )
    return GroundTruth(preference_users, preference_items, exposure_users, exposure_items)


def _ratings_from_likes(rng: np.random.Generator, liked: np.ndarray) -> np.ndarray:
    return np.where(liked, rng.integers(4, 6, size=liked.shape), rng.integers(1, 4, size=liked.shape))


def _draw_shown_pairs(truth: GroundTruth, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exposures o_ui ~ Bernoulli(P(o_ui)), drawn a chunk of users at a time."""
    user_factors = truth.exposure_users.astype(np.float32)
    item_factors = np.ascontiguousarray(truth.exposure_items.T, dtype=np.float32)  # (r, n_items)
    shown_users, shown_items = [], []
    for users in truth.user_chunks():
        odds = user_factors[users] @ item_factors  # (chunk, n_items) logits, turned in place into 1 + e^-logit
        draws = rng.random(odds.shape, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            np.negative(odds, out=odds)
            np.exp(odds, out=odds)
            odds += 1
            odds *= draws
        # u < σ(ℓ)  ⇔  u · (1 + e^-ℓ) < 1
        rows, items = np.divmod(np.flatnonzero(odds < 1), truth.n_items)
        shown_users.append(users[rows])
        shown_items.append(items)
    return np.concatenate(shown_users), np.concatenate(shown_items)


def generate_synthetic(config: SyntheticConfig, seed: int) -> SyntheticData:
    """Draw a biased train set, an unbiased test set and the truth behind them."""
    rng = np.random.default_rng(seed)
    truth = _draw_truth(config, rng)

    shown_users, shown_items = _draw_shown_pairs(truth, rng)
    liked = rng.random(shown_users.size) < truth.pair_probabilities("preference", shown_users, shown_items)
    rate = np.where(liked, config.rate_if_liked, config.rate_if_disliked)
    rated = rng.random(shown_users.size) < rate
    train_users, train_items = shown_users[rated], shown_items[rated]
    train_ratings = _ratings_from_likes(rng, liked[rated])

    n_users, n_items, per_user = config.n_users, config.n_items, config.test_items_per_user
    if config.test_users == 0:
        test_user_ids = np.arange(n_users)
    else:
        test_user_ids = np.sort(rng.choice(n_users, size=config.test_users, replace=False))
    test_items = np.concatenate([np.sort(rng.choice(n_items, size=per_user, replace=False)) for _ in test_user_ids])
    test_users = np.repeat(test_user_ids, per_user)
    test_liked = rng.random(test_users.size) < truth.pair_probabilities("preference", test_users, test_items)
    test_ratings = _ratings_from_likes(rng, test_liked)

    ratings = pd.DataFrame(
        {
            "user": np.r_[train_users, test_users].astype(np.int64),
            "item": np.r_[train_items, test_items].astype(np.int64),
            "rating": np.r_[train_ratings, test_ratings].astype(np.int64),
            "source": np.r_[np.full(train_users.size, "biased"), np.full(test_users.size, "unbiased")].astype(object),
        }
    )
    return SyntheticData(ratings=ratings, truth=truth)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, → 1 = all on one):
    with x_(1) <= ... <= x_(n) sorted, ``G = 2 Σ_k k x_(k) / (n Σ x) − (n + 1) / n``
    (0 for no counts or a zero total)."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = values.size, values.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(2 * np.sum(np.arange(1, n + 1) * values) / (n * total) - (n + 1) / n)


def ratings_statistics(ratings: pd.DataFrame, n_users: int, n_items: int, threshold: int = 4) -> dict[str, float]:
    """The statistics the presets are calibrated on, from a ratings table.

    Returns:
        ``users``, ``items``, ``biased_ratings``, ``unbiased_ratings``, ``unbiased_users``,
        ``biased_positive_rate`` and ``unbiased_positive_rate`` (share of ratings >=
        ``threshold``), ``popularity_gini`` (Gini of the items' biased-rating counts,
        unrated items included) and ``top10_share`` (share of biased ratings on the 10%
        most rated items).
    """
    biased = ratings[ratings["source"] == "biased"]
    unbiased = ratings[ratings["source"] == "unbiased"]
    counts = np.bincount(biased["item"].to_numpy(np.int64), minlength=n_items)
    top = np.sort(counts)[::-1][: max(1, n_items // 10)]
    return {
        "users": float(n_users),
        "items": float(n_items),
        "biased_ratings": float(len(biased)),
        "unbiased_ratings": float(len(unbiased)),
        "unbiased_users": float(unbiased["user"].nunique()),
        "biased_positive_rate": float((biased["rating"] >= threshold).mean()),
        "unbiased_positive_rate": float((unbiased["rating"] >= threshold).mean()),
        "popularity_gini": gini(counts),
        "top10_share": float(top.sum() / max(counts.sum(), 1)),
    }
