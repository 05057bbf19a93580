"""GMF, the generalized matrix factorization of NCF (He et al., WWW 2017, §3.2)."""

from __future__ import annotations

import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.ncf import NCFConfig, NCFRecommender, PairNetwork, lecun_linear, normal_embedding


class GMFNetwork(PairNetwork):
    """``f(u, i) = hᵀ (p_u ⊙ q_i) + b``."""

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator, with_output: bool = True) -> None:
        super().__init__()
        self.n_users = n_users
        self.user_embedding = normal_embedding(n_users, dim, generator)  # (n_users, d)
        self.item_embedding = normal_embedding(n_items, dim, generator)  # (n_items, d)
        # NeuMF keeps the features and has its own prediction layer.
        self.output = lecun_linear(dim, 1, generator) if with_output else None

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The last layer's input, p_u ⊙ q_i (n, d)."""
        return self.user_embedding(users) * self.item_embedding(items)



class GMF(NCFRecommender):
    """GMF: ``ŷ_ui = σ(hᵀ (p_u ⊙ q_i))``, trained with BCE on sampled negatives
    (``ncf``). Defaults: 8 predictive factors, 4 negatives, batch 256, Adam 1e-3;
    embeddings N(0, 0.01²), h LeCun-uniform."""

    name = "gmf"
    Config = NCFConfig

    def build_module(self, data: TrainData, generator: torch.Generator) -> GMFNetwork:
        return GMFNetwork(data.n_users, data.n_items, self.config.embedding_dim, generator)
