"""The MLP of NCF (He et al., WWW 2017, §3.3): a tower over the concatenated user and
item embeddings."""

from __future__ import annotations

import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.ncf import (
    NCFConfig,
    NCFRecommender,
    PairNetwork,
    glorot_linear,
    lecun_linear,
    normal_embedding,
)


class MLPConfig(NCFConfig):
    """MLP hyperparameters.

    Attributes:
        embedding_dim: predictive factors f, the width of the last hidden layer.
        num_layers: hidden layers L of the NCF tower, which halves its width at each
            layer: ``[f·2^(L−1), …, 2f, f]``, fed the concatenation of a user and an
            item embedding of f·2^(L−1) each (L = 0: of f/2 each, straight into the
            prediction layer). The paper's MLP-3 with 8 factors is 64 → 32 → 16 → 8.
        hidden_sizes: the hidden widths as a list instead (each embedding then has the
            first width; ``[]`` with embeddings of f/2); ``null``: the NCF tower above.
    """

    num_layers: int = 3
    hidden_sizes: tuple[int, ...] | None = None

    def check(self) -> None:
        super().check()
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")
        if self.hidden_sizes is not None:
            require(all(size >= 1 for size in self.hidden_sizes), f"hidden_sizes must be >= 1, got {list(self.hidden_sizes)}")
        require(
            bool(self.tower) or self.embedding_dim % 2 == 0,
            f"embedding_dim must be even without hidden layers (two embeddings of f/2), got {self.embedding_dim}",
        )

    @property
    def tower(self) -> tuple[int, ...]:
        """The hidden widths, first to last."""
        if self.hidden_sizes is not None:
            return tuple(self.hidden_sizes)
        return tuple(self.embedding_dim * 2 ** (self.num_layers - 1 - k) for k in range(self.num_layers))

    @property
    def side_dim(self) -> int:
        """The size of each of the user and item embeddings."""
        return self.tower[0] if self.tower else self.embedding_dim // 2

    @property
    def output_dim(self) -> int:
        """The width of the tower's output φ (the prediction layer's input)."""
        return self.tower[-1] if self.tower else 2 * self.side_dim


class MLPNetwork(PairNetwork):
    """``φ = ReLU(W_L … ReLU(W_1 [p_u ; q_i] + b_1) … + b_L)``, ``f(u, i) = hᵀ φ + b``."""

    def __init__(
        self, n_users: int, n_items: int, config: MLPConfig, generator: torch.Generator, with_output: bool = True
    ) -> None:
        super().__init__()
        self.n_users = n_users
        self.user_embedding = normal_embedding(n_users, config.side_dim, generator)
        self.item_embedding = normal_embedding(n_items, config.side_dim, generator)
        layers: list[nn.Module] = []
        width = 2 * config.side_dim
        for size in config.tower:
            layers += [glorot_linear(width, size, generator), nn.ReLU()]
            width = size
        self.tower = nn.Sequential(*layers)
        self.output = lecun_linear(config.output_dim, 1, generator) if with_output else None

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The tower's output φ (n, output_dim)."""
        return self.tower(torch.cat([self.user_embedding(users), self.item_embedding(items)], dim=1))



class MLP(NCFRecommender):
    """NCF's MLP: ``ŷ_ui = σ(hᵀ φ_L([p_u ; q_i]))`` with the halving ReLU tower,
    trained with BCE on sampled negatives (``ncf``). Defaults: 8 factors, 3 hidden
    layers (64 → 32 → 16 → 8), 4 negatives, batch 256, Adam 1e-3; embeddings
    N(0, 0.01²), hidden layers Glorot-uniform, h LeCun-uniform."""

    name = "mlp"
    Config = MLPConfig

    def build_module(self, data: TrainData, generator: torch.Generator) -> MLPNetwork:
        return MLPNetwork(data.n_users, data.n_items, self.config, generator)
