"""NGCF (Wang, He, Wang, Feng & Chua, "Neural Graph Collaborative Filtering",
SIGIR 2019), trained full-batch with the study's BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import bce_all_pairs, l2_penalty
from debias_pipeline.models.mf import MFConfig
from debias_pipeline.models.towers import EmbeddingTower, _SymmetricSpMM
from debias_pipeline.models.trainers import FullBatchRecommender, sparse_to_torch

# Negative slope of the LeakyReLU; the paper leaves it unstated, 0.2 is TensorFlow's default.
NEGATIVE_SLOPE = 0.2


class NGCFConfig(MFConfig):
    """NGCF hyperparameters.

    Attributes:
        num_layers: propagation layers K.
        message_dropout: probability of dropping an entry of each layer's output while
            training (0 keeps training deterministic given the seed's draws).
    """

    num_layers: int = 3
    message_dropout: float = 0.0

    def check(self) -> None:
        super().check()
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")
        require(0 <= self.message_dropout < 1, f"message_dropout must be in [0, 1), got {self.message_dropout}")
        require(self.loss == "bce", f"loss must be 'bce' (NGCF is trained full-batch), got {self.loss!r}")


def ngcf_layer(
    adjacency: torch.Tensor, embeddings: torch.Tensor, weight_self: torch.Tensor, weight_product: torch.Tensor
) -> torch.Tensor:
    """One NGCF layer: ``LeakyReLU((L + I) E W1 + ((L E) ⊙ E) W2)`` (Wang et al., matrix form).

    Args:
        adjacency: (n_nodes, n_nodes) L = D^-1/2 A D^-1/2, sparse and symmetric.
        embeddings: (n_nodes, d) E^(k), users first, then items.
        weight_self: (d, d) W1.
        weight_product: (d, d) W2.

    Returns:
        (n_nodes, d) E^(k+1).
    """
    neighbours = _SymmetricSpMM.apply(adjacency, embeddings)  # (n_nodes, d) L E
    messages = (neighbours + embeddings) @ weight_self + (neighbours * embeddings) @ weight_product
    return F.leaky_relu(messages, NEGATIVE_SLOPE)


class NGCFNetwork(nn.Module):
    """E^(0) tables and the per-layer weights W1^(k), W2^(k) (Xavier-uniform).

    Args:
        tower: the E^(0) user and item tables (an MF tower).
        num_layers: K.
        adjacency: (n_users + n_items)² normalized adjacency L.
        message_dropout: dropout probability of each layer's output while training.
        generator: seeded generator for the weights; it also seeds the dropout masks.
    """

    def __init__(
        self,
        tower: EmbeddingTower,
        num_layers: int,
        adjacency: torch.Tensor,
        message_dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.tower = tower
        self.adjacency = adjacency
        self.message_dropout = message_dropout
        d = tower.embedding_dim
        self.weight_self = nn.ParameterList(nn.Parameter(torch.empty(d, d)) for _ in range(num_layers))
        self.weight_product = nn.ParameterList(nn.Parameter(torch.empty(d, d)) for _ in range(num_layers))
        for weight in (*self.weight_self, *self.weight_product):
            nn.init.xavier_uniform_(weight, generator=generator)
        # Dropout masks come from their own generator, on the adjacency's device.
        self.dropout_generator = torch.Generator(device=adjacency.device).manual_seed(
            int(torch.randint(2**62, (1,), generator=generator))
        )

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (n_users, d(K+1)) and item (n_items, d(K+1)) embeddings: [E^(0), ..., E^(K)]."""
        layer = torch.cat(self.tower())  # (n_users + n_items, d)
        layers = [layer]
        for weight_self, weight_product in zip(self.weight_self, self.weight_product, strict=True):
            layer = ngcf_layer(self.adjacency, layer, weight_self, weight_product)
            if self.training and self.message_dropout > 0:
                keep = torch.rand(layer.shape, generator=self.dropout_generator, device=layer.device)
                layer = layer * (keep >= self.message_dropout) / (1.0 - self.message_dropout)
            layers.append(layer)
        final = torch.cat(layers, dim=1)  # (n_users + n_items, d(K+1))
        return final[: self.tower.n_users], final[self.tower.n_users :]

    def extra_repr(self) -> str:
        return f"num_layers={len(self.weight_self)}, message_dropout={self.message_dropout}"


class NGCF(FullBatchRecommender):
    """NGCF: graph propagation with feature transforms and a user-item interaction term.

    ``E^(k+1) = LeakyReLU((L + I) E^(k) W1^(k) + ((L E^(k)) ⊙ E^(k)) W2^(k))`` (Wang et
    al., matrix form; negative slope 0.2, no bias terms), L = D^-1/2 A D^-1/2 the normalized
    adjacency of the train positives; the final embedding concatenates all layers,
    ``e = [E^(0), E^(1), ..., E^(K)]`` (d(K+1) columns), and ``r̂_ui = e_u · e_i``.
    Message dropout (the output of every layer, inverted scaling) is off by default.

    Trained as the study trains MF: mean BCE of σ(r̂) against Y over all |U| x |I|
    pairs + ``weight_decay`` · (Σ ||E^(0)||² + Σ ||W||²), the paper's L2 on every
    parameter; one full-batch Adam step per epoch.

    Defaults: d = 200, K = 3, message_dropout = 0, and TrainingConfig's: lr = 0.04 (Adam,
    full batch; ``loss`` must stay ``bce``), weight_decay = 1e-6, at most 300 epochs,
    patience 20, eval_every 1; E^(0) ~ N(0, 0.01²) and W Xavier-uniform from the seeded
    generator.
    """

    name = "ngcf"
    Config = NGCFConfig

    def build_module(self, data: TrainData, generator: torch.Generator) -> NGCFNetwork:
        if data.adjacency is None:
            raise ValueError(f"{self.name} needs the normalized adjacency in its TrainData")
        config = self.config
        tower = EmbeddingTower(data.n_users, data.n_items, config.embedding_dim, 0, None, generator)
        adjacency = sparse_to_torch(data.adjacency, self.device)
        return NGCFNetwork(tower, config.num_layers, adjacency, config.message_dropout, generator)

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module()

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        users, items = self.module()
        logits = users @ items.T  # (n_users, n_items)
        parameters = [*self.module.tower.base_embeddings(), *self.module.weight_self, *self.module.weight_product]
        return bce_all_pairs(logits, targets) + self.config.weight_decay * l2_penalty(parameters)
