"""Synthetic interaction graphs of a given size, for the benchmarks and the scale run."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Gowalla as used by the LightGCN paper: 29,858 users, 40,981 items, 1,027,370
# interactions, so Â has 70,839 nodes and 2,054,740 nonzeros.
GOWALLA = (29_858, 40_981, 1_027_370)
# The Yahoo! R3 shape of PROTOCOL.md §2 and the full-ranking scale of the issue.
YAHOO_LIKE = (15_400, 1_000)
SCALE = (30_000, 40_000, 1_000_000)


def power_law_interactions(n_users: int, n_items: int, n_interactions: int, seed: int = 0) -> sp.csr_matrix:
    """A binary (n_users, n_items) CSR matrix with exactly ``n_interactions`` distinct
    positives, user activity and item popularity drawn from Zipf-like weights (the long
    tails of real implicit-feedback data)."""
    if n_interactions > n_users * n_items:
        raise ValueError(f"{n_interactions} interactions do not fit in {n_users} x {n_items}")
    rng = np.random.default_rng(seed)
    user_weight = rng.permutation(1.0 / np.arange(1, n_users + 1) ** 0.6)
    item_weight = rng.permutation(1.0 / np.arange(1, n_items + 1) ** 0.8)
    user_weight /= user_weight.sum()
    item_weight /= item_weight.sum()
    keys = np.zeros(0, dtype=np.int64)
    while keys.size < n_interactions:
        draws = int((n_interactions - keys.size) * 1.3) + 1_000
        users = rng.choice(n_users, size=draws, p=user_weight).astype(np.int64)
        items = rng.choice(n_items, size=draws, p=item_weight)
        keys = np.unique(np.r_[keys, users * n_items + items])
    keys = np.sort(rng.choice(keys, size=n_interactions, replace=False))
    data = np.ones(n_interactions, dtype=np.float32)
    return sp.csr_matrix((data, (keys // n_items, keys % n_items)), shape=(n_users, n_items))
