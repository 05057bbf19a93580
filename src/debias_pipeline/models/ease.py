"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): an
item-to-item linear model with a zero diagonal, fitted in closed form."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import model_validator

from debias_pipeline.config.params import Params, require
from debias_pipeline.models.closed_form import ItemToItemRecommender, Solution
from debias_pipeline.models.trainers import sparse_to_torch

# Bytes per item² the fit holds at its peak: XᵀX + λI, its Cholesky factor and the
# inverse P in float64 (3 x 8), B of the candidate and of the best one so far in
# float32 (2 x 4).
PEAK_BYTES_PER_ITEM_PAIR = 32


def frobenius_inner(a: torch.Tensor, b: torch.Tensor, chunk_elements: int = 2**24) -> torch.Tensor:
    """<A, B> = Σ_ij A_ij B_ij of two (n, m) matrices, a block of rows at a time, so the
    products never take another n x m table."""
    rows = max(1, chunk_elements // max(a.shape[1], 1))
    return sum((a[start : start + rows] * b[start : start + rows]).sum() for start in range(0, a.shape[0], rows))


class EASEConfig(Params):
    """EASE hyperparameters: the ridge λ, one value or candidates chosen on validation.

    Attributes:
        l2: λ of ``||X − XB||² + λ||B||²`` (Steck uses 500 on ML-20M, 1000 on
            Netflix, 200 on MSD). Leave it out (or null) when ``l2_grid`` is given.
        l2_grid: candidate λ values; each is solved and the one with the best validation
            metric is kept (``history`` holds one record per candidate, its λ in
            ``candidate``; ties keep the earlier one).
        max_memory_gib: bound on the fit's memory, about 32 bytes per item pair
            (``PEAK_BYTES_PER_ITEM_PAIR``); a catalogue beyond it (about 23,000 items
            at 16 GiB) is refused before anything is allocated.
    """

    l2: float | None = 500.0
    l2_grid: tuple[float, ...] | None = None
    max_memory_gib: float = 16.0

    @model_validator(mode="before")
    @classmethod
    def _grid_replaces_l2(cls, data: Any) -> Any:
        """A grid stands instead of ``l2``: the default λ goes, an explicit one is refused."""
        if isinstance(data, Mapping) and data.get("l2_grid") is not None:
            if data.get("l2") is not None:
                raise ValueError(f"l2_grid and l2 exclude each other: give one λ or a grid, got l2 = {data['l2']!r} and a grid")
            return {**data, "l2": None}
        return data

    def check(self) -> None:
        require(self.l2 is not None or self.l2_grid is not None, "l2 must be a number > 0 unless l2_grid is given, got null")
        if self.l2 is not None:
            require(self.l2 > 0, f"l2 must be > 0, got {self.l2}")
        if self.l2_grid is not None:
            require(len(self.l2_grid) > 0, "l2_grid must hold at least one λ")
            require(all(value > 0 for value in self.l2_grid), f"l2_grid must hold numbers > 0, got {list(self.l2_grid)}")
            require(len(set(self.l2_grid)) == len(self.l2_grid), f"l2_grid must not repeat a value, got {list(self.l2_grid)}")
        require(self.max_memory_gib > 0, f"max_memory_gib must be > 0, got {self.max_memory_gib}")

    @property
    def candidates(self) -> tuple[float, ...]:
        """The λ values the fit solves for, in order."""
        return self.l2_grid if self.l2_grid is not None else (self.l2,)


class EASE(ItemToItemRecommender):
    """EASE: ``scores = X B`` with the item-item weights

    ``B = argmin_B ||X − XB||²_F + λ||B||²_F  subject to  diag(B) = 0``,

    solved in closed form (Steck's derivation from the Lagrangian of the constraint):
    with ``P = (XᵀX + λI)⁻¹``,
    ``B = I − P · diagMat(1 / diag(P))``, i.e. ``B_ij = −P_ij / P_jj`` off the diagonal
    and 0 on it. The zero diagonal keeps an item from predicting itself.

    X is the binary train matrix. The solve runs on ``device`` in double precision
    (a Cholesky factorization of XᵀX + λI, SPD for λ > 0); B is kept in float32. The
    recorded ``train_loss`` is the objective divided by the |U|·|I| pairs, computed
    without the dense XB: with GB = G − diagMat(1/diag(P)) + λ(I − B) (G = XᵀX) and
    diag(B) = 0, ``||X − XB||² + λ||B||² = tr(G) − <G, B>``.

    Defaults: λ = 500 (one value; ``l2_grid`` chooses among several on validation);
    catalogues whose fit needs more than ``max_memory_gib`` = 16 GiB are refused.
    """

    name = "ease"
    Config = EASEConfig

    def candidate_count(self) -> int:
        return len(self.config.candidates)

    @property
    def l2(self) -> float | None:
        """The λ of the fitted B (the validation's choice with ``l2_grid``), or None before fit."""
        if self.best_epoch is None:
            return None
        return self.config.candidates[self.best_epoch - 1]

    def check_memory(self, n_items: int) -> None:
        """Refuse a catalogue whose dense item x item matrices exceed ``max_memory_gib``.

        Raises:
            ValueError: Naming ``max_memory_gib``, the items and the memory needed.
        """
        needed = PEAK_BYTES_PER_ITEM_PAIR * n_items**2 / 2**30
        if needed > self.config.max_memory_gib:
            raise ValueError(
                f"ease: {n_items:,} items need dense {n_items:,} x {n_items:,} matrices, about {needed:.1f} GiB at "
                f"the solve's peak, above max_memory_gib = {self.config.max_memory_gib:g}; raise max_memory_gib "
                "where the device has the memory"
            )

    def solve(self, train: sp.csr_matrix) -> Iterator[Solution]:
        n_users, n_items = train.shape
        self.check_memory(n_items)
        gram = torch.from_numpy((train.T @ train).toarray()).to(self.device)  # (n_items, n_items) G
        diagonal = gram.diagonal().clone()  # (n_items,) item counts
        for l2 in self.config.candidates:
            gram.diagonal().copy_(diagonal + l2)  # G + λI, in place: no second n² table
            precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # (n_items, n_items) P
            gram.diagonal().copy_(diagonal)  # G again, exactly
            weights = precision.div_(-precision.diagonal())  # B_ij = −P_ij / P_jj (column j), in place
            weights.diagonal().zero_()  # 1 − P_jj / P_jj
            objective = float(diagonal.sum() - frobenius_inner(gram, weights))  # tr(G) − <G, B>
            yield Solution({"item_weights": weights.float()}, objective / (n_users * n_items), {"l2": l2})
            del precision, weights

    def _use(self, tables: dict[str, torch.Tensor]) -> None:
        super()._use({key: table.to(self.device) for key, table in tables.items()})

    def propagate(self, rows: sp.csr_matrix) -> np.ndarray:
        users = sparse_to_torch(rows, self.device)  # (n_rows, n_items) CSR
        return (users @ self._tables["item_weights"]).cpu().numpy()  # (n_rows, n_items) = X_rows B
