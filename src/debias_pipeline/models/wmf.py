"""Weighted matrix factorization for implicit feedback (Hu, Koren & Volinsky,
"Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008), fitted by
alternating least squares."""

from __future__ import annotations


import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.config import require
from debias_pipeline.models.base import TrainData
from debias_pipeline.models.em import DTYPE, FactorTables, SweepConfig, SweepRecommender, normal_factors, solve_weighted_ridge


class WMFConfig(SweepConfig):
    """WMF hyperparameters.

    Attributes:
        alpha: confidence slope α of c_ui = 1 + α y_ui (Hu et al. use 40).
        weight_decay: the ridge λ on both factor tables, per pair (see ``SweepConfig``).
    """

    alpha: float = 1.0

    def check(self) -> None:
        super().check()
        require(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")


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
        self.module.user_embedding.copy_(self._solve_rows(targets.to_sparse_csr(), self.module.item_embedding))
        self.module.item_embedding.copy_(self._solve_rows(targets.T.to_sparse_csr(), self.module.user_embedding))

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
        clicks = torch.as_tensor((sp.csr_matrix(history) > 0).toarray(), dtype=DTYPE, device=self.device)
        ridge = self.config.weight_decay * self.module.user_embedding.shape[0] * items.shape[0]
        users = self._solve_rows(clicks.to_sparse_csr(), items, ridge)  # (n_rows, d)
        return (users @ items.T).cpu().numpy()

    @torch.no_grad()
    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        user, item = self.module.user_embedding, self.module.item_embedding
        residual = targets - user @ item.T  # (n_users, n_items)
        confidence = 1.0 + self.config.alpha * targets  # (n_users, n_items)
        penalty = self.config.weight_decay * (user.pow(2).sum() + item.pow(2).sum())
        return (confidence * residual.pow(2)).mean() + penalty
