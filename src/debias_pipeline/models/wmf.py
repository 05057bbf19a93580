"""Weighted matrix factorization for implicit feedback (Hu, Koren & Volinsky,
"Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008), fitted by
alternating least squares."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import require
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.em import (
    FactorTables,
    SweepConfig,
    SweepRecommender,
    normal_factors,
    solve_weighted_ridge,
)
from debias_pipeline.models.trainers import sparse_to_torch


class WMFConfig(SweepConfig):
    """WMF hyperparameters.

    Attributes:
        alpha: confidence slope α of c_ui = 1 + α y_ui (Hu et al. use 40).
        weight_decay: the ridge λ on both factor tables, per pair (see ``SweepConfig``).
            This α and λ were picked on Coat's validation split (seed 0) among
            α in {1, 10} x λ in {1e-5, 1e-4}.
        solver: how each half-sweep solves its rows on the CPU: ``exact`` (``implicit``'s
            Cholesky solve per row), ``cg`` (``implicit``'s conjugate gradient, ``cg_steps``
            steps from the current factors: an approximate, faster solve) or ``torch`` (the
            project's batched solve, the reference path). On CUDA every solver is the
            project's batched solve on the GPU (``implicit``'s wheel has no GPU kernels).
        cg_steps: conjugate-gradient steps per row and half-sweep (``cg``).
    """

    alpha: float = 1.0
    weight_decay: float = 1e-4
    solver: Literal["exact", "cg", "torch"] = "exact"
    cg_steps: int = 3

    def check(self) -> None:
        super().check()
        require(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        require(self.cg_steps >= 1, f"cg_steps must be >= 1, got {self.cg_steps}")


class WMF(SweepRecommender):
    """WMF: every unclicked pair is a negative, a click a more confident positive.

    Objective (Hu et al., written as a mean over the N = |U|·|I| pairs like every
    loss of the project), with p_ui = y_ui and ``c_ui = 1 + α y_ui``:
    ``(1/N) Σ c_ui (y_ui − x_uᵀ v_i)² + λ (Σ ||x_u||² + Σ ||v_i||²)``, λ = ``weight_decay``.
    Alternating least squares: with V fixed,
    ``x_u = (VᵀV + Vᵀ(C_u − I)V + NλI)⁻¹ Vᵀ C_u y_u``, where ``C_u − I = α diag(y_u)``
    touches only u's clicks, so VᵀV is formed once per half-sweep; then the same for
    v_i with X fixed. One sweep (users, then items) is one epoch; ``train_loss`` is the
    objective, which never increases. Ranking: ``x_uᵀ v_i``.

    Defaults: d = 200, α = 1, λ = 1e-4 (the ridge Nλ ≈ 8.7 on Coat), at most 50
    sweeps, patience 5, eval_every 1; factors start as N(0, 0.01²) in double precision
    (the item table is used first).
    """

    name = "wmf"
    Config = WMFConfig
    supports_fold_in = True
    dense_targets = False  # the sweeps and the objective touch Y's non-zeros only

    def build_module(self, data: TrainData, generator: torch.Generator) -> FactorTables:
        d = self.config.embedding_dim
        return FactorTables(
            user_embedding=normal_factors(data.n_users, d, generator),  # (n_users, d)
            item_embedding=normal_factors(data.n_items, d, generator),  # (n_items, d)
        )

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.user_embedding, self.module.item_embedding

    @torch.no_grad()
    def update(self, targets: torch.Tensor) -> None:
        rows = _csr(targets)  # (n_users, n_items)
        if self.config.solver != "torch" and self.device.type == "cpu":
            self._implicit_sweep(rows)
            return
        columns = rows.to_sparse_coo().t().coalesce().to_sparse_csr()  # (n_items, n_users)
        self.module.user_embedding.copy_(self._solve_rows(rows, self.module.item_embedding))
        self.module.item_embedding.copy_(self._solve_rows(columns, self.module.user_embedding))

    def _implicit_sweep(self, rows: torch.Tensor) -> None:
        """One sweep (users, then items) by ``implicit``'s ALS, in place on the factor
        tables (its solvers write into the arrays the tensors share).

        ``implicit`` solves ``(VᵀV + Vᵀ(C_u − I)V + rI) x_u = Vᵀ C_u p_u`` with C_u the
        values of the given matrix on u's clicks, 1 elsewhere, and p_u = 1 on the clicks:
        the project's objective with those values set to c = 1 + α y and r = Nλ.
        """
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        y = rows.values().cpu().numpy()
        shape = tuple(rows.shape)
        confidence = sp.csr_matrix(
            (1.0 + self.config.alpha * y, rows.col_indices().cpu().numpy(), rows.crow_indices().cpu().numpy()), shape
        )
        with threadpool_limits(1, user_api="blas"):  # implicit parallelizes over rows itself
            als = AlternatingLeastSquares(
                factors=self.config.embedding_dim,
                regularization=self.config.weight_decay * shape[0] * shape[1],  # Nλ
                alpha=1.0,
                dtype=np.float64,
                use_cg=self.config.solver == "cg",
                iterations=1,
                num_threads=torch.get_num_threads(),
            )
            if self.config.solver == "cg":
                als.cg_steps = self.config.cg_steps
            als.user_factors = self.module.user_embedding.detach().numpy()  # shares memory with the tensor
            als.item_factors = self.module.item_embedding.detach().numpy()
            als.fit(confidence, show_progress=False)

    def _solve_rows(self, clicks: torch.Tensor, fixed: torch.Tensor, ridge: float | None = None) -> torch.Tensor:
        """Least-squares factors of every row of ``clicks`` (n, m, sparse) given ``fixed`` (m, d)."""
        alpha = self.config.alpha
        rhs = (1.0 + alpha) * (clicks @ fixed)  # (n, d) = Fᵀ C_r y_r, since c y = (1 + α) y
        if ridge is None:
            ridge = self.config.weight_decay * clicks.shape[0] * fixed.shape[0]  # Nλ
        return solve_weighted_ridge(fixed, alpha * clicks, rhs, ridge, gram=fixed.T @ fixed)

    @torch.no_grad()
    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores of new users from their clicks: each user's factors are the user
        half-sweep's least-squares solve against the fitted item factors, with the ridge
        Nλ of training (N the train |U| x |I|), then ``x_uᵀ v_i``."""
        self._require_fitted()
        items = self.module.item_embedding  # (n_items, d)
        clicks = sparse_to_torch(sp.csr_matrix(history) > 0, self.device, np.float64)  # (n_rows, n_items)
        ridge = self.config.weight_decay * self.module.user_embedding.shape[0] * items.shape[0]
        users = self._solve_rows(clicks, items, ridge)  # (n_rows, d)
        return (users @ items.T).cpu().numpy()

    @torch.no_grad()
    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """The objective from Y's non-zeros alone: with s = XVᵀ and c = 1 + αy,
        ``Σ c (y − s)² = Σ s² − 2 Σ_nz y s + Σ_nz y² + α Σ_nz y (y − s)²`` and
        ``Σ s² = Σ (XᵀX) ⊙ (VᵀV)``, so no (n_users, n_items) matrix is formed."""
        user, item = self.module.user_embedding, self.module.item_embedding
        rows = _csr(targets)
        counts = rows.crow_indices().diff()
        users = torch.repeat_interleave(torch.arange(rows.shape[0], device=counts.device), counts)  # (nnz,)
        y = rows.values()  # (nnz,)
        s = (user[users] * item[rows.col_indices()]).sum(dim=1)  # (nnz,)
        squares = ((user.T @ user) * (item.T @ item)).sum()
        summed = squares - 2.0 * (y * s).sum() + y.pow(2).sum() + self.config.alpha * (y * (y - s).pow(2)).sum()
        penalty = self.config.weight_decay * (user.pow(2).sum() + item.pow(2).sum())
        return summed / (rows.shape[0] * rows.shape[1]) + penalty


def _csr(targets: torch.Tensor) -> torch.Tensor:
    """Y as a sparse CSR tensor (given dense or CSR)."""
    return targets if targets.layout == torch.sparse_csr else targets.to_sparse_csr()
