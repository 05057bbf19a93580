"""GAT (Veličković et al., ICLR 2018) on the user-item graph, trained on sampled
neighbourhoods."""

from __future__ import annotations

from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.gnn import GNNConfig, GraphRecommender


class GATConfig(GNNConfig):
    """GAT hyperparameters.

    Attributes:
        heads: attention heads per layer; concatenated in the hidden layers (each head
            of ``embedding_dim / heads``), averaged in the last.
        fanouts: neighbours sampled per hop (the survey: [10, 5]).
    """

    heads: int = 2
    fanouts: tuple[int, ...] | None = (10, 5)

    def check(self) -> None:
        super().check()
        require(self.heads >= 1, f"heads must be >= 1, got {self.heads}")
        require(
            self.num_layers == 1 or self.embedding_dim % self.heads == 0,
            f"embedding_dim ({self.embedding_dim}) must be a multiple of heads ({self.heads})",
        )


class GAT(GraphRecommender):
    """GAT: ``e_vu = LeakyReLU_0.2(aᵀ [W h_v ‖ W h_u])``, ``α_vu = softmax_u(e_vu)`` over
    v's neighbours and v itself, ``h_v ← Σ_u α_vu W h_u`` (PyG's ``GATConv``); heads
    concatenated except in the last layer, where they are averaged; ReLU and dropout
    between layers; sampled neighbourhoods (fan-out [10, 5])."""

    name = "gat"
    Config = GATConfig

    def make_layers(self, config: GATConfig) -> list[nn.Module]:
        from torch_geometric.nn import GATConv  # PyG loads in seconds: only when a GAT is built

        d, heads = config.embedding_dim, config.heads
        hidden = [GATConv(d, d // heads, heads=heads, concat=True, negative_slope=0.2) for _ in range(config.num_layers - 1)]
        return [*hidden, GATConv(d, d, heads=heads, concat=False, negative_slope=0.2)]
