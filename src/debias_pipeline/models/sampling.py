"""Vectorized negative samplers for mini-batch training on (user, positive, negative) triples.

A negative of user u is an item without a train positive of u. Every sampler draws a
whole batch at once on the training device from an explicit generator: no loop over
users, no host round trip per batch.

- ``uniform``: uniform over the user's non-positives, exactly (no rejection): the r-th
  non-positive is found by one binary search over the user's sorted positives.
- ``popularity``: proportional to the item's number of train positives, by rejection
  from the popularity distribution (a fixed number of candidates per triple).
- ``hard``: uniform over the user's ``pool_size`` top-scored non-positives, the pool
  ranked with the current preference scores by ``refresh`` (called once per epoch).
- ``MarginSampler`` (DICE's): against the triple's positive, from the items more
  popular, or less popular, than it by a margin.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.evaluation.metrics import (
    FULL_RANKING_CHUNK_ELEMENTS,
    ScoreUsers,
    top_k_unseen,
    train_positives,
)

# Candidates per triple of the popularity sampler. A user whose positives hold a share s
# of all train positives gets all of them rejected with probability s^16 (3e-5 at
# s = 0.5); that triple then falls back to a uniform negative.
POPULARITY_CANDIDATES = 16


class NegativeSampler(ABC):
    """Draws one negative item per user of a batch.

    Args:
        interactions: (n_users, n_items) train positives Y (any sparse format).
        generator: the random source, on the training device.
    """

    needs_scores: ClassVar[bool] = False  # whether ``refresh`` wants the model's scores

    def __init__(self, interactions: sp.spmatrix, generator: torch.Generator) -> None:
        self.train = train_positives(interactions)  # canonical CSR: sorted, no duplicates
        self.n_users, self.n_items = self.train.shape
        self.generator = generator
        self.device = generator.device
        if self.train.nnz == 0:
            raise ValueError("the train matrix has no positive: there is no triple to sample")
        degree = np.diff(self.train.indptr)
        full = np.flatnonzero(degree >= self.n_items)
        if full.size:
            raise ValueError(
                f"user {int(full[0])} has a train positive for every one of the {self.n_items} items: "
                "no negative item exists for it"
            )
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), degree)
        cols = self.train.indices.astype(np.int64)
        self._indptr = torch.from_numpy(self.train.indptr.astype(np.int64)).to(self.device)
        self._degree = torch.from_numpy(degree.astype(np.int64)).to(self.device)
        # Sorted keys u * n_items + i of the positives (CSR order is row-major, sorted).
        self._positive_keys = torch.from_numpy(rows * self.n_items + cols).to(self.device)
        # Key u * n_items + (i_k - k), k the rank of positive i_k within its row: the
        # number of u's keys <= u * n_items + r is the number of u's positives below the
        # r-th non-positive item.
        rank = np.arange(cols.size, dtype=np.int64) - np.repeat(self.train.indptr[:-1].astype(np.int64), degree)
        self._shifted_keys = torch.from_numpy(rows * self.n_items + cols - rank).to(self.device)

    @abstractmethod
    def sample(self, users: torch.Tensor) -> torch.Tensor:
        """(batch,) negative items of the (batch,) users (int64, on the device)."""

    def sample_for(self, users: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """(batch,) negatives of the (batch,) triples' users, given their positives;
        only a sampler that draws against the positive (``MarginSampler``) reads them."""
        return self.sample(users)

    def begin_epoch(self) -> None:
        """Called at the start of every epoch, before ``refresh``."""

    def _uniform_draw(self, bounds: torch.Tensor) -> torch.Tensor:
        """Integers uniform in [0, bounds) elementwise (float64 keeps them exact)."""
        draw = torch.rand(bounds.shape, generator=self.generator, device=self.device, dtype=torch.float64)
        return torch.minimum((draw * bounds).long(), bounds - 1)

    def uniform_negatives(self, users: torch.Tensor) -> torch.Tensor:
        """Uniform over each user's non-positive items."""
        offset = self._uniform_draw(self.n_items - self._degree[users])  # r: which non-positive
        below = torch.searchsorted(self._shifted_keys, users * self.n_items + offset, right=True) - self._indptr[users]
        return offset + below

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is a train positive; any matching shapes."""
        keys = users * self.n_items + items
        found = torch.searchsorted(self._positive_keys, keys).clamp_(max=self._positive_keys.numel() - 1)
        return self._positive_keys[found] == keys


class UniformSampler(NegativeSampler):
    """Uniform over the user's non-positive items."""

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        return self.uniform_negatives(users)


class PopularitySampler(NegativeSampler):
    """P(j) proportional to item j's number of train positives, over the user's
    non-positives (items without any train positive are never drawn)."""

    def __init__(self, interactions: sp.spmatrix, generator: torch.Generator) -> None:
        super().__init__(interactions, generator)
        popularity = np.bincount(self.train.indices, minlength=self.n_items).astype(np.float64)
        self._cumulative = torch.from_numpy(np.cumsum(popularity)).to(self.device)  # (n_items,)

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        shape = (users.numel(), POPULARITY_CANDIDATES)
        mass = torch.rand(shape, generator=self.generator, device=self.device, dtype=torch.float64)
        candidates = torch.searchsorted(self._cumulative, mass * self._cumulative[-1], right=True)
        candidates = candidates.clamp_(max=self.n_items - 1)
        accepted = ~self.is_positive(users[:, None], candidates)  # (batch, candidates)
        first = accepted.to(torch.int8).argmax(dim=1, keepdim=True)  # first accepted candidate
        chosen = candidates.gather(1, first).squeeze(1)
        return torch.where(accepted.any(dim=1), chosen, self.uniform_negatives(users))


class HardSampler(NegativeSampler):
    """Uniform over the user's ``pool_size`` top-scored non-positive items.

    The pool is ranked by ``refresh`` with the model's current preference scores (a
    chunk of users at a time, the memory of one chunk bounded); until the first refresh
    the sampler is uniform.
    """

    needs_scores = True

    def __init__(self, interactions: sp.spmatrix, generator: torch.Generator, pool_size: int) -> None:
        super().__init__(interactions, generator)
        self.pool_size = min(pool_size, self.n_items)
        self._pool: torch.Tensor | None = None  # (n_users, pool_size) item ids, best first
        self._pool_counts = torch.clamp(self.n_items - self._degree, max=self.pool_size)  # valid entries per user

    def refresh(self, score_users: ScoreUsers) -> None:
        """Rank every user's pool with ``score_users``, the model's current scores."""
        dtype = torch.int32 if self.n_items < 2**31 else torch.int64
        pool = torch.empty(self.n_users, self.pool_size, dtype=dtype, device=self.device)
        rows_per_chunk = max(1, FULL_RANKING_CHUNK_ELEMENTS // self.n_items)
        for start in range(0, self.n_users, rows_per_chunk):
            chunk = np.arange(start, min(start + rows_per_chunk, self.n_users))
            scores = score_users(torch.from_numpy(chunk).to(self.device))
            items, _ = top_k_unseen(scores, chunk, self.train, self.pool_size)
            pool[start : start + chunk.size] = items.to(dtype)
        self._pool = pool

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        if self._pool is None:
            return self.uniform_negatives(users)
        slot = self._uniform_draw(self._pool_counts[users])
        return self._pool[users, slot].long()


class WarmupHardSampler(HardSampler):
    """Uniform negatives for the first ``start_epoch − 1`` epochs; from epoch
    ``start_epoch`` on, each negative is a hard one (``HardSampler``) with probability
    ``share`` and uniform otherwise (PinSage's hard negatives, mixed in late)."""

    def __init__(
        self, interactions: sp.spmatrix, generator: torch.Generator, pool_size: int, share: float, start_epoch: int
    ) -> None:
        super().__init__(interactions, generator, pool_size)
        self.share, self.start_epoch, self.epoch = share, start_epoch, 0

    @property
    def needs_scores(self) -> bool:  # type: ignore[override]
        return self.epoch >= self.start_epoch and self.share > 0

    def begin_epoch(self) -> None:
        self.epoch += 1

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        uniform = self.uniform_negatives(users)
        if not self.needs_scores or self._pool is None:
            return uniform
        hard = super().sample(users)
        mixed = torch.rand(users.shape, generator=self.generator, device=self.device) < self.share
        return torch.where(mixed, hard, uniform)


class MarginSampler(NegativeSampler):
    """DICE's popularity-based negative sampling with a margin (Zheng et al., WWW 2021,
    PNSM): against a positive i of popularity p_i (its train positives), the negative j
    is drawn, with probability ½ each, from the items more popular than p_i + m (O1) or
    from those less popular than p_i − m (O2), uniformly within the side and among the
    user's non-positives; from the other side when one is empty. A triple whose side
    offers no non-positive among ``POPULARITY_CANDIDATES`` draws (or has no side: the
    margin exceeds every difference) gets a uniform negative instead, which ``kinds``
    then places by its own popularity (usually 0: within the margin).

    The margin m decays by ``margin_decay`` every epoch from ``margin`` (the authors'
    code: 40 and 0.9), ``epoch`` counting the epochs begun. Here the one margin serves
    both sides; the authors' code takes O2 as the items below p_i / 2, and a side only
    when it holds at least ``pool`` items.
    """

    def __init__(
        self, interactions: sp.spmatrix, generator: torch.Generator, margin: float, margin_decay: float
    ) -> None:
        super().__init__(interactions, generator)
        popularity = np.bincount(self.train.indices, minlength=self.n_items).astype(np.float64)
        order = np.argsort(popularity, kind="stable")
        self.popularity = torch.from_numpy(popularity).to(self.device)  # (n_items,)
        self._order = torch.from_numpy(order).to(self.device)  # (n_items,) ascending popularity
        self._sorted_popularity = torch.from_numpy(popularity[order]).to(self.device)  # (n_items,)
        self.initial_margin, self.margin_decay = margin, margin_decay
        self.epoch = 0

    @property
    def margin(self) -> float:
        """m of the current epoch: ``margin · margin_decay^(epoch − 1)``."""
        return self.initial_margin * self.margin_decay ** max(self.epoch - 1, 0)

    def begin_epoch(self) -> None:
        self.epoch += 1

    def kinds(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """(batch,) +1 where p_j > p_i + m (O1), −1 where p_j < p_i − m (O2), else 0."""
        difference = self.popularity[negatives] - self.popularity[positives]
        margin = self.margin
        return (difference > margin).to(torch.int8) - (difference < -margin).to(torch.int8)

    def sample(self, users: torch.Tensor) -> torch.Tensor:
        raise TypeError("MarginSampler draws against each positive: call sample_for(users, positives)")

    def sample_for(self, users: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        pop = self.popularity[positives]  # (batch,)
        margin = self.margin
        # The items sorted by popularity: O2 is the prefix [0, low), O1 the suffix [high, n).
        low = torch.searchsorted(self._sorted_popularity, pop - margin)
        high = torch.searchsorted(self._sorted_popularity, pop + margin, right=True)
        n_low, n_high = low, self.n_items - high
        coin = torch.rand(users.shape, generator=self.generator, device=self.device) < 0.5
        use_high = (coin & (n_high > 0)) | (n_low == 0)
        start = torch.where(use_high, high, torch.zeros_like(high))
        size = torch.where(use_high, n_high, n_low)  # (batch,) 0 when neither side exists
        shape = (users.numel(), POPULARITY_CANDIDATES)
        draw = torch.rand(shape, generator=self.generator, device=self.device, dtype=torch.float64)
        offset = torch.minimum((draw * size[:, None]).long(), (size[:, None] - 1).clamp(min=0))
        candidates = self._order[(start[:, None] + offset).clamp(max=self.n_items - 1)]
        accepted = ~self.is_positive(users[:, None], candidates) & (size > 0)[:, None]  # (batch, candidates)
        first = accepted.to(torch.int8).argmax(dim=1, keepdim=True)
        chosen = candidates.gather(1, first).squeeze(1)
        return torch.where(accepted.any(dim=1), chosen, self.uniform_negatives(users))


def build_negative_sampler(
    kind: str, interactions: sp.spmatrix, generator: torch.Generator, *, hard_pool_size: int = 100
) -> NegativeSampler:
    """The sampler named ``kind`` (``uniform``, ``popularity`` or ``hard``)."""
    if kind == "uniform":
        return UniformSampler(interactions, generator)
    if kind == "popularity":
        return PopularitySampler(interactions, generator)
    if kind == "hard":
        return HardSampler(interactions, generator, hard_pool_size)
    raise ValueError(f"unknown negative sampling {kind!r}; valid: hard, popularity, uniform")
