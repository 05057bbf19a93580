"""A social GCN (SOURCES.md §D): users aggregate their items and their friends, items
their users, on the train positives and the dataset's social ties (LastFM's trust
network, a custom dataset's social edges)."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.gnn import GNNConfig, GraphRecommender
from debias_pipeline.models.neighbors import bipartite_graph


class SocialGCNConfig(GNNConfig):
    """Social GCN hyperparameters.

    Attributes:
        min_overlap: keep only the ties whose two users share at least this many train
            items (0: every tie), the survey's remedy for noisy ties.
        fanouts: ``null`` (the whole graph every batch; the only option).
    """

    min_overlap: int = 0

    def check(self) -> None:
        super().check()
        require(self.min_overlap >= 0, f"min_overlap must be >= 0, got {self.min_overlap}")
        require(self.fanouts is None, "fanouts must be null: the social GCN propagates the whole graph")


def filter_ties(social: sp.spmatrix, interactions: sp.spmatrix, min_overlap: int) -> sp.csr_matrix:
    """The symmetric 0/1 ties of ``social`` (no self-ties) whose two users share at least
    ``min_overlap`` train items."""
    ties = (sp.csr_matrix(social) > 0).astype(np.float32)
    ties = ((ties + ties.T) > 0).astype(np.float32).tocoo()
    keep = ties.row != ties.col
    rows, cols = ties.row[keep], ties.col[keep]
    if min_overlap > 0:
        y = (sp.csr_matrix(interactions) > 0).astype(np.float32).tocsr()
        shared = np.asarray(y[rows].multiply(y[cols]).sum(axis=1)).ravel()
        rows, cols = rows[shared >= min_overlap], cols[shared >= min_overlap]
    n = social.shape[0]
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))


class SocialLayer(nn.Module):
    """``h'_u = W (mean of u's items + mean of u's friends) + b``, ``h'_i = W (mean of
    i's users) + b``: PyG's mean ``SimpleConv`` over the user-item edges and over the
    ties (a user without friends adds 0), one linear map."""

    def __init__(self, dim: int, social_edges: torch.Tensor) -> None:
        from torch_geometric.nn import SimpleConv  # PyG loads in seconds: only when a social GCN is built

        super().__init__()
        self.mean = SimpleConv(aggr="mean")
        self.linear = nn.Linear(dim, dim)
        self.register_buffer("social_edges", social_edges)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        messages = self.mean(h, edge_index)
        if self.social_edges.numel():
            messages = messages + self.mean(h, self.social_edges)
        return self.linear(messages)


class SocialGCN(GraphRecommender):
    """The social GCN: ``SocialLayer`` x ``num_layers`` (2), ReLU and dropout between
    them, BPR on mini-batches over the whole graph; the ties (optionally filtered by
    ``min_overlap``) come from the dataset's social network."""

    name = "socialgcn"
    Config = SocialGCNConfig

    def neighborhoods(self, data: TrainData, generator: torch.Generator) -> sp.csr_matrix:
        if data.social is None:
            raise ValueError(
                "socialgcn needs social ties: LastFM's trust network (dataset=lastfm) or a custom dataset's "
                "social edges (custom.social)"
            )
        ties = filter_ties(data.social, data.interactions, self.config.min_overlap).tocoo()
        # Users are nodes 0..n_users-1 in both graphs; messages flow friend -> user.
        self._social_edges = torch.from_numpy(np.stack([ties.col, ties.row]).astype(np.int64))
        return bipartite_graph(data.interactions)

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        # The ties are in the weights (a buffer of every layer): a restored model needs
        # no social network in ``data``.
        self._social_edges = state["weights"]["layers.0.social_edges"].clone()
        return super().load_state_dict(state, data)

    def make_layers(self, config: SocialGCNConfig) -> list[nn.Module]:
        return [SocialLayer(config.embedding_dim, self._social_edges) for _ in range(config.num_layers)]
