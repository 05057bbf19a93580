"""PinSage (Ying et al., KDD 2018) on the user-item graph: random-walk neighbourhoods,
weighted aggregation, hard negatives late in training."""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.gnn import GNNConfig, GraphRecommender
from debias_pipeline.models.neighbors import bipartite_graph, random_walk_neighbors
from debias_pipeline.models.sampling import WarmupHardSampler


class PinSageConfig(GNNConfig):
    """PinSage hyperparameters.

    Attributes:
        num_walks, walk_length, top_k: the importance neighbourhood of a node, its
            ``top_k`` most visited nodes over ``num_walks`` walks of ``walk_length``
            steps from it (the survey: 10, 5, 10).
        fanouts: neighbours sampled per hop among those (at most ``top_k`` each).
        hard_negative_share, hard_negative_start: from epoch ``hard_negative_start``
            on, the share of negatives drawn among the user's ``hard_pool_size``
            top-scored non-positives instead of uniformly (0: never).
    """

    num_walks: int = 10
    walk_length: int = 5
    top_k: int = 10
    fanouts: tuple[int, ...] | None = (10, 5)
    hard_negative_share: float = 0.25
    hard_negative_start: int = 20

    def check(self) -> None:
        super().check()
        for name in ("num_walks", "walk_length", "top_k", "hard_negative_start"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(0 <= self.hard_negative_share <= 1, f"hard_negative_share must be in [0, 1], got {self.hard_negative_share}")


class PinSage(GraphRecommender):
    """PinSage: v's neighbours are its ``top_k`` most visited nodes on random walks,
    weighted by their normalized visit counts w_vu; ``h_v ← W_1 h_v + W_2 Σ_u w_vu h_u``
    (PyG's ``GraphConv``, i.e. W [h_v ‖ Σ_u w_vu h_u]), ReLU and dropout between layers;
    each batch on neighbourhoods sampled among those; hard negatives mixed in from
    epoch ``hard_negative_start`` (``sampling.WarmupHardSampler``)."""

    name = "pinsage"
    Config = PinSageConfig
    weighted = True

    def make_layers(self, config: PinSageConfig) -> list[nn.Module]:
        from torch_geometric.nn import GraphConv  # PyG loads in seconds: only when a PinSage is built

        d = config.embedding_dim
        return [GraphConv(d, d, aggr="add") for _ in range(config.num_layers)]

    def neighborhoods(self, data: TrainData, generator: torch.Generator) -> sp.csr_matrix:
        config: PinSageConfig = self.config
        walks = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return random_walk_neighbors(bipartite_graph(data.interactions), walks, config.num_walks, config.walk_length, config.top_k)

    def negative_sampler(self, interactions: sp.spmatrix, generator: torch.Generator) -> WarmupHardSampler:
        config: PinSageConfig = self.config
        return WarmupHardSampler(
            interactions, generator, config.hard_pool_size, config.hard_negative_share, config.hard_negative_start
        )

    @property
    def inductive(self) -> bool:
        return True
