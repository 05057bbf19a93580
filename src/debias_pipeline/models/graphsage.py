"""GraphSAGE (Hamilton et al., NeurIPS 2017) on the user-item graph, trained on sampled
neighbourhoods."""

from __future__ import annotations

from typing import Literal

from torch import nn

from debias_pipeline.models.gnn import GNNConfig, GraphRecommender


class GraphSAGEConfig(GNNConfig):
    """GraphSAGE hyperparameters.

    Attributes:
        aggregator: ``mean``, or ``max`` (max-pool: max over neighbours of
            σ(W_pool h_u + b)).
        normalize: scale every layer's output to unit L2 norm.
        fanouts: neighbours sampled per hop (the survey: [10, 5]).
    """

    aggregator: Literal["mean", "max"] = "mean"
    normalize: bool = False
    fanouts: tuple[int, ...] | None = (10, 5)


class GraphSAGE(GraphRecommender):
    """GraphSAGE: ``h_v ← W [h_v ‖ AGG({h_u : u ∈ N(v)})]`` (PyG's ``SAGEConv``, whose
    two linear maps are that one map on the concatenation), ReLU and dropout between
    layers; each batch on a neighbourhood sampled anew (fan-out [10, 5]). Inductive:
    any node with a neighbour gets a vector."""

    name = "graphsage"
    Config = GraphSAGEConfig

    def make_layers(self, config: GraphSAGEConfig) -> list[nn.Module]:
        from torch_geometric.nn import SAGEConv  # PyG loads in seconds: only when a GraphSAGE is built

        d = config.embedding_dim
        project = config.aggregator == "max"
        return [
            SAGEConv(d, d, aggr=config.aggregator, project=project, normalize=config.normalize)
            for _ in range(config.num_layers)
        ]

    @property
    def inductive(self) -> bool:
        return True
