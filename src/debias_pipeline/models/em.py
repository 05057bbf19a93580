"""Models fitted by closed-form sweeps (alternating least squares, EM) rather than
gradient steps: the shared config, the sweep loop with early stopping, and the batched
weighted ridge solver they all use.

A sweep updates every table once in closed form; it plays the part of an epoch for
``eval_every``, ``patience`` and the learning curve. The fitted tables are buffers of
an ``nn.Module``, so saving, loading and scoring are those of ``FullBatchRecommender``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Self

import numpy as np
import torch
from torch import nn

from debias_pipeline.config.params import Params, require
from debias_pipeline.models.contract import EpochRecord, TrainData, Validator
from debias_pipeline.models.trainers import (
    FullBatchRecommender,
    check_dense_size,
    run_with_early_stopping,
    sparse_to_torch,
)

# Closed-form solves run in double precision: with a small ridge λ the normal equations
# of a d = 200 factorization are ill-conditioned enough for float32 to lose the
# monotone decrease of the objective.
DTYPE = torch.float64

# Upper bound on the elements of the (rows, columns, d) and (rows, d, d) temporaries of
# one chunk of ``solve_weighted_ridge`` (2^24 doubles = 128 MiB).
CHUNK_ELEMENTS = 2**24


class SweepConfig(Params):
    """Hyperparameters every closed-form model shares.

    Attributes:
        embedding_dim: d, the number of latent factors (the study: 200).
        weight_decay: λ of the penalty λ Σ ||x||² on the factor tables, added to the
            objective's mean over all |U|·|I| pairs as in the gradient models, so that
            the same λ means the same across models; on the summed objective of the
            papers it is the ridge |U|·|I|·λ.
        epochs: maximum number of sweeps.
        patience: evaluations without a better validation NDCG before stopping.
        eval_every: sweeps between two validation evaluations.
    """

    embedding_dim: int = 200
    weight_decay: float = 1e-4
    epochs: int = 50
    patience: int = 5
    eval_every: int = 1

    def check(self) -> None:
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.weight_decay > 0, f"weight_decay must be > 0, got {self.weight_decay}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        require(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")


class FactorTables(nn.Module):
    """The fitted tables of a closed-form model, held as buffers (no gradient)."""

    def __init__(self, **tables: torch.Tensor) -> None:
        super().__init__()
        for name, table in tables.items():
            self.register_buffer(name, table)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={tuple(table.shape)}" for name, table in self.named_buffers())


def normal_factors(n_rows: int, embedding_dim: int, generator: torch.Generator) -> torch.Tensor:
    """A (n_rows, d) table drawn from N(0, 0.01²) in double precision."""
    return torch.randn(n_rows, embedding_dim, generator=generator, dtype=DTYPE) * 0.01


class SweepRecommender(FullBatchRecommender):
    """A recommender fitted by closed-form sweeps, early-stopped like the gradient models.

    Subclasses build the initial tables (``build_module``, a ``FactorTables``), make one
    sweep in place (``update``), and give the objective the sweeps decrease (``loss``,
    recorded as ``train_loss``) and the preference factors. Validation NDCG@k is
    evaluated every ``eval_every`` sweeps; after ``patience`` evaluations without
    improvement the loop stops and the best sweep's tables are restored.
    """

    module: FactorTables
    dense_targets = True  # False: ``update`` and ``loss`` get Y as a sparse CSR tensor, never densified

    @abstractmethod
    def update(self, targets: torch.Tensor) -> None:
        """One sweep over every table, in place; ``targets`` is the (n_users, n_items) Y,
        dense, or sparse CSR where ``dense_targets`` is False."""

    @abstractmethod
    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """The objective of the current tables (a scalar the sweeps do not increase)."""

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        if self.dense_targets:
            check_dense_size(self.name, data, "this model's sweeps run over the dense Y")
            targets = torch.as_tensor(data.interactions.toarray(), dtype=DTYPE, device=self.device)  # (n_users, n_items)
        else:
            targets = sparse_to_torch(data.interactions, self.device, np.float64)  # (n_users, n_items), CSR
        self.module = self.build_module(data, torch.Generator().manual_seed(self.seed)).to(self.device)

        def sweep() -> float:
            self.update(targets)
            return float(self.loss(targets))

        run_with_early_stopping(self, sweep, validation, on_epoch)
        return self


def solve_weighted_ridge(
    factors: torch.Tensor,
    weights: torch.Tensor,
    rhs: torch.Tensor,
    ridge: float,
    gram: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Solve ``(G + Fᵀ diag(w_r) F + ridge·I) x_r = b_r`` for every row r.

    The shared part G (e.g. FᵀF, computed once) keeps the per-row work to the
    row's own weights: with sparse ``weights`` a row costs O(nnz_r d²), which is
    Hu et al.'s YᵀY + Yᵀ(C_u − I)Y speed-up. Rows are solved in chunks with one
    batched ``torch.linalg.solve``, so no temporary exceeds ``chunk_elements``.

    Args:
        factors: (m, d) the fixed side F.
        weights: (n, m) per-row weights w_rc, dense or sparse CSR.
        rhs: (n, d) right-hand sides b_r.
        ridge: the ridge λ added to the diagonal.
        gram: (d, d) the part G shared by every row; zero when ``None``.
        chunk_elements: bound on the elements of a chunk's temporaries.

    Returns:
        (n, d) the solutions x_r.
    """
    n_rows, d = rhs.shape
    base = ridge * torch.eye(d, dtype=factors.dtype, device=factors.device)  # (d, d)
    if gram is not None:
        base = base + gram
    sparse = weights.layout == torch.sparse_csr
    width = int(weights.crow_indices().diff().max()) if sparse else weights.shape[1]
    chunk = max(1, chunk_elements // (d * max(width, d)))
    solutions = torch.empty_like(rhs)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        if sparse:
            columns, row_weights = _padded_rows(weights, start, stop)  # (B, k), (B, k)
            gathered = factors[columns]  # (B, k, d)
        else:
            gathered = factors.expand(stop - start, -1, -1)  # (B, m, d), no copy
            row_weights = weights[start:stop]  # (B, m)
        systems = base + (gathered * row_weights[..., None]).mT @ gathered  # (B, d, d)
        solutions[start:stop] = torch.linalg.solve(systems, rhs[start:stop, :, None])[..., 0]
    return solutions


def _padded_rows(weights: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices and weights of CSR rows ``start:stop``, each (B, k), padded with weight 0."""
    row_starts = weights.crow_indices()[start : stop + 1]  # (B + 1,)
    lengths = row_starts.diff()  # (B,)
    offsets = torch.arange(max(int(lengths.max()), 1), device=weights.device)  # (k,)
    present = offsets < lengths[:, None]  # (B, k)
    if weights.values().numel() == 0:
        return torch.zeros_like(present, dtype=torch.int64), torch.zeros_like(present, dtype=weights.dtype)
    positions = torch.where(present, row_starts[:-1, None] + offsets, 0)  # (B, k) into col_indices
    return weights.col_indices()[positions], torch.where(present, weights.values()[positions], 0.0)
