"""GCN (Kipf & Welling, ICLR 2017) on the user-item graph, as the survey describes it."""

from __future__ import annotations

from torch import nn
from torch_geometric.nn import GCNConv

from debias_pipeline.models.gnn import GNNConfig, GraphRecommender


class GCN(GraphRecommender):
    """GCN: ``h_v ← Σ_{u ∈ N(v) ∪ {v}} h_u W / √(d_u d_v)`` (self-loops, symmetric
    normalization, a linear map per layer; PyG's ``GCNConv``), ReLU and dropout 0.5
    between the 2 layers; the whole graph every batch (``fanouts: null``)."""

    name = "gcn"
    Config = GNNConfig

    def make_layers(self, config: GNNConfig) -> list[nn.Module]:
        d = config.embedding_dim
        return [GCNConv(d, d, add_self_loops=True, normalize=True) for _ in range(config.num_layers)]

    @property
    def inductive(self) -> bool:
        """On features (``inputs: features | both``) a new user has an input of its own."""
        return self.config.inputs != "ids"
