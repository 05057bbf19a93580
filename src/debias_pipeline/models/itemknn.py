"""ItemKNN: item-based collaborative filtering with a shrunk cosine similarity and the
top-k neighbours of each item (Sarwar, Karypis, Konstan & Riedl, "Item-Based
Collaborative Filtering Recommendation Algorithms", WWW 2001; Deshpande & Karypis,
"Item-Based Top-N Recommendation Algorithms", TOIS 2004), in the form Dacrema,
Cremonesi & Jannach tune as a baseline ("Are We Really Making Much Progress?",
RecSys 2019)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import Params, require
from debias_pipeline.models.closed_form import ItemToItemRecommender, Solution
from debias_pipeline.models.neighbors import _segment_ranks

# Bound on the target items of one block of the co-occurrence product: a block's
# (n_items, block) product has at most 2^24 entries (its sparse form at most ~200 MiB),
# so no dense n_items² table is formed.
BLOCK_ELEMENTS = 2**24


class ItemKNNConfig(Params):
    """ItemKNN hyperparameters.

    Attributes:
        neighbors: k, the most similar items kept per target item.
        shrink: h, added to the cosine's denominator; it shrinks the similarity of
            pairs with few users behind them (0: the plain cosine).
    """

    neighbors: int = 100
    shrink: float = 10.0

    def check(self) -> None:
        require(self.neighbors >= 1, f"neighbors must be >= 1, got {self.neighbors}")
        require(math.isfinite(self.shrink) and self.shrink >= 0, f"shrink must be a finite number >= 0, got {self.shrink}")


def cosine_neighbors(train: sp.csr_matrix, neighbors: int, shrink: float) -> sp.csr_matrix:
    """W (n_items, n_items): ``W_ji = sim_ij`` for the ``neighbors`` items j ≠ i most
    similar to item i, 0 elsewhere, with
    ``sim_ij = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)`` (U_i: the users with a
    train positive on i). Ties at the k-th place keep the lower item id.

    The co-occurrence counts XᵀX are formed sparsely, a block of target items
    (columns) at a time, and pruned to k per column before the next block.

    Args:
        train: (n_users, n_items) binary train matrix X.
        neighbors: k.
        shrink: h >= 0.
    """
    n_items = train.shape[1]
    counts = np.asarray(train.sum(axis=0)).ravel()  # (n_items,) |U_i|
    by_item = sp.csr_matrix(train.T)  # (n_items, n_users)
    columns = sp.csc_matrix(train)  # (n_users, n_items)
    block = max(1, BLOCK_ELEMENTS // max(n_items, 1))
    kept_rows, kept_columns, kept_values = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        overlap = sp.csc_matrix(by_item @ columns[:, start:stop])  # (n_items, b) |U_j ∩ U_i|
        overlap.sort_indices()
        neighbor = overlap.indices  # (nnz,) j
        target = np.repeat(np.arange(start, stop), np.diff(overlap.indptr))  # (nnz,) i, in runs
        similarity = overlap.data / (np.sqrt(counts[neighbor] * counts[target]) + shrink)
        other = neighbor != target  # an item does not vote for itself
        neighbor, target, similarity = neighbor[other], target[other], similarity[other]
        # Rank within each target's run by decreasing similarity; lexsort is stable, so
        # ties stay in row order, the lower item id first.
        top = _segment_ranks(target, -similarity) < neighbors
        kept_rows.append(neighbor[top])
        kept_columns.append(target[top])
        kept_values.append(similarity[top])
    rows, cols, values = (np.concatenate(parts) if parts else np.zeros(0) for parts in (kept_rows, kept_columns, kept_values))
    weights = sp.csr_matrix((values.astype(np.float32), (rows.astype(np.int64), cols.astype(np.int64))), shape=(n_items, n_items))
    weights.sort_indices()
    return weights


class ItemKNN(ItemToItemRecommender):
    """ItemKNN: ``score_ui = Σ_{j ∈ I_u} W_ji``, W the pruned shrunk cosine of
    ``cosine_neighbors``: the target item i collects the similarity of each of the
    user's train items j that is among i's ``neighbors`` nearest items.

    ``sim_ij = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + h)`` on the binary train matrix; the
    diagonal is left out (an item's similarity to itself would only add a constant to
    the items the user already has). There is no training objective (``train_loss``
    is NaN) and nothing random. W is sparse (at most k entries per column) and scores
    are computed with scipy on the CPU.

    Defaults: k = 100, h = 10.
    """

    name = "itemknn"
    Config = ItemKNNConfig

    def __init__(self, config: ItemKNNConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._weights: sp.csr_matrix | None = None  # (n_items, n_items) W

    def solve(self, train: sp.csr_matrix) -> Iterator[Solution]:
        weights = cosine_neighbors(train, self.config.neighbors, self.config.shrink)
        tables = {
            "indptr": torch.from_numpy(weights.indptr.astype(np.int64)),
            "indices": torch.from_numpy(weights.indices.astype(np.int64)),
            "values": torch.from_numpy(weights.data),
        }
        yield Solution(tables, math.nan)

    def _use(self, tables: dict[str, torch.Tensor]) -> None:
        super()._use(tables)
        n_items = tables["indptr"].numel() - 1
        parts = (tables["values"].cpu().numpy(), tables["indices"].cpu().numpy(), tables["indptr"].cpu().numpy())
        self._weights = sp.csr_matrix(parts, shape=(n_items, n_items))

    def propagate(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray((rows @ self._weights).toarray(), dtype=np.float32)  # (n_rows, n_items)
