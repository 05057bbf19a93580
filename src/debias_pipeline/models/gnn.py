"""What the survey's graph models share (SOURCES.md §D): message passing with PyTorch
Geometric's layers over the user-item graph, node inputs from ID embeddings and/or
side features, BPR on mini-batches of sampled triples, and, for the sampled models,
a neighbourhood drawn anew for every batch (``neighbors.sample_subgraph``).

Nodes are the users then the items (``n_users + n_items``). A layer maps every node's
vector with its neighbours' to a new one; between layers ReLU and dropout; the final
vectors score ``r̂_ui = h_u · h_i``. For validation, test and serving every node is
computed on the whole graph (no sampling, no dropout).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import bpr_loss, l2_penalty
from debias_pipeline.models.ncf import glorot_linear, normal_embedding
from debias_pipeline.models.neighbors import SampledSubgraph, bipartite_graph, sample_subgraph
from debias_pipeline.models.trainers import FullBatchRecommender


class GNNConfig(TrainingConfig):
    """Hyperparameters of the graph models (the survey's defaults; the training ones
    the LightGCN papers': d 64, BPR, batch 2048, Adam 1e-3, λ 1e-4).

    Attributes:
        embedding_dim: d, the size of every layer's node vectors (the LightGCN papers: 64).
        num_layers: message-passing layers (the survey: 2).
        dropout: dropout between layers, in training only (the survey's GCN: 0.5).
        inputs: a node's input vector: ``ids`` (an embedding per node), ``features``
            (the dataset's user and item features, each side projected to
            ``embedding_dim`` by a linear map) or ``both`` (their sum).
        fanouts: neighbours sampled per hop for each batch, without replacement
            (``null``: the whole graph every batch); as many hops as layers.
        loss: ``bpr`` (mini-batches of sampled triples; the only loss).
        weight_decay: λ · mean over the batch of the squared norms of the triple's
            input rows (ID embeddings, where there are).
    """

    embedding_dim: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    inputs: Literal["ids", "features", "both"] = "ids"
    fanouts: tuple[int, ...] | None = None
    loss: Literal["bpr"] = "bpr"
    lr: float = 0.001
    weight_decay: float = 1e-4
    epochs: int = 1000
    patience: int = 10
    eval_every: int = 10

    def check(self) -> None:
        super().check()
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        if self.fanouts is not None:
            require(
                len(self.fanouts) == self.num_layers and all(f >= 1 for f in self.fanouts),
                f"fanouts must hold one count >= 1 per layer ({self.num_layers}), got {list(self.fanouts)}",
            )


class NodeInputs(nn.Module):
    """Every node's input vector: its ID embedding, its projected features, or both.
    With ``inputs: features``, a side without features (users of a dataset with item
    genres only) has ID embeddings, as the survey gives nodes without features."""

    def __init__(self, data: TrainData, config: GNNConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.n_users, n_nodes, self.dim = data.n_users, data.n_users + data.n_items, config.embedding_dim
        self.user_projection = self.item_projection = None
        has_ids = torch.full((n_nodes,), config.inputs in ("ids", "both"))
        if config.inputs in ("features", "both"):
            if data.user_features is None and data.item_features is None:
                raise ValueError(
                    f"inputs: {config.inputs} needs user or item features, and this dataset has none; use inputs: ids"
                )
            projections = []
            for side, table in (("user", data.user_features), ("item", data.item_features)):
                rows = data.n_users if side == "user" else data.n_items
                table = np.zeros((rows, 0), np.float32) if table is None else np.asarray(table, np.float32)
                self.register_buffer(f"{side}_features", torch.from_numpy(table))
                projections.append(glorot_linear(table.shape[1], self.dim, generator) if table.shape[1] else None)
                if not table.shape[1]:  # this side has no features: ID embeddings instead
                    side_nodes = slice(0, data.n_users) if side == "user" else slice(data.n_users, n_nodes)
                    has_ids[side_nodes] = True
            self.user_projection, self.item_projection = projections
        self.register_buffer("has_ids", has_ids)
        self.embedding = normal_embedding(n_nodes, self.dim, generator) if bool(has_ids.any()) else None

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        """Input vectors (len(nodes), d) of the given global node ids."""
        out = torch.zeros(nodes.numel(), self.dim, device=nodes.device)
        if self.embedding is not None:
            out = out + self.embedding(nodes) * self.has_ids[nodes, None]
        is_user = nodes < self.n_users
        if self.user_projection is not None:
            out[is_user] = out[is_user] + self.user_projection(self.user_features[nodes[is_user]])
        if self.item_projection is not None:
            out[~is_user] = out[~is_user] + self.item_projection(self.item_features[nodes[~is_user] - self.n_users])
        return out

    def new_users(self, users: torch.Tensor) -> torch.Tensor:
        """Input vectors (len(users), d) of users the model never trained on: their
        projected features where it reads features, zero for the ID part."""
        out = torch.zeros(users.numel(), self.dim, device=users.device)
        if self.user_projection is not None:
            out = out + self.user_projection(self.user_features[users])
        return out

    def regularized(self, nodes: torch.Tensor) -> list[torch.Tensor]:
        """The rows the L2 term weighs: the ID embeddings of ``nodes``, if any."""
        return [] if self.embedding is None else [self.embedding(nodes) * self.has_ids[nodes, None]]


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def dropout(x: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout from an explicit generator (``None``: no dropout)."""
    if generator is None or rate == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= rate
    return x * keep / (1.0 - rate)


class GraphNetwork(nn.Module):
    """Inputs, then ``layers`` (PyG convolutions), ReLU and dropout between them."""

    def __init__(self, inputs: NodeInputs, layers: list[nn.Module], rate: float) -> None:
        super().__init__()
        self.inputs, self.layers, self.rate = inputs, nn.ModuleList(layers), rate

    def forward(
        self,
        nodes: torch.Tensor,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final vectors of ``nodes`` (global ids) over the graph ``edge_index`` of local
        ids; ``inputs`` replaces the nodes' input vectors (new users)."""
        h = self.inputs(nodes) if inputs is None else inputs
        for k, layer in enumerate(self.layers):
            h = layer(h, edge_index) if edge_weight is None else layer(h, edge_index, edge_weight)
            if k < len(self.layers) - 1:
                h = dropout(torch.relu(h), self.rate, generator)
        return h


class GraphRecommender(FullBatchRecommender):
    """A graph model trained with BPR on mini-batches; subclasses give the layers and,
    where they differ from the bipartite graph of the positives, the neighbourhoods."""

    Config = GNNConfig

    @abstractmethod
    def make_layers(self, config: GNNConfig) -> list[nn.Module]:
        """The PyG layers, ``config.num_layers`` of them, d → d."""

    def neighborhoods(self, data: TrainData, generator: torch.Generator) -> sp.csr_matrix:
        """The (n, n) matrix whose row v weighs v's neighbours (a 0/1 adjacency when
        unweighted): the bipartite graph of the train positives."""
        return bipartite_graph(data.interactions)

    weighted = False  # whether the layers take the neighbourhood's weights

    def build_module(self, data: TrainData, generator: torch.Generator) -> GraphNetwork:
        config: GNNConfig = self.config
        restored = getattr(self, "_restored_graph", None)
        self._graph = self.neighborhoods(data, generator) if restored is None else restored
        # Neighbourhoods are drawn on the CPU (numpy), dropout on the model's device, each
        # from its own stream of the seed (no stream of one seed is another seed's).
        self._sampling = torch.Generator().manual_seed(_stream_seed(self.seed, 1))
        self._dropout = torch.Generator(device=self.device).manual_seed(_stream_seed(self.seed, 2))
        self._n_users = data.n_users
        inputs = NodeInputs(data, config, generator)
        # PyG initializes its layers from the global generator: fork it, seeded from
        # ours, so the same seed gives the same layers and no global state changes.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            layers = self.make_layers(config)
        return GraphNetwork(inputs, layers, config.dropout)

    def state_dict(self) -> dict[str, Any]:
        """``FullBatchRecommender``'s, the neighbourhoods the model was trained with
        (drawn at random for PinSage), so a restored model aggregates the same ones, and
        the node features it read."""
        state = super().state_dict()  # refuses an unfitted model
        inputs = self.module.inputs
        features = {
            f"{side}_features": getattr(inputs, f"{side}_features").cpu().numpy().copy()
            for side in ("user", "item")
            if hasattr(inputs, f"{side}_features")
        }
        return {**state, "neighborhoods": self._graph.copy(), **features}

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        self._restored_graph = state.get("neighborhoods")
        data = dataclasses.replace(
            data,
            user_features=data.user_features if data.user_features is not None else state.get("user_features"),
            item_features=data.item_features if data.item_features is not None else state.get("item_features"),
        )
        try:
            return super().load_state_dict(state, data)
        finally:
            self._restored_graph = None

    def layer_graph(
        self, edge_index: torch.Tensor, weight: torch.Tensor | None, n_nodes: int, symmetric: bool = False
    ) -> tuple[Any, torch.Tensor | None]:
        """The graph as the layers take it, from the edges source -> target (and their
        weights) over ``n_nodes`` nodes, ``symmetric`` when every edge has its reverse
        with the same weight: the edges themselves unless a model prepares them once per
        graph (GCN: its normalized sparse adjacency)."""
        return edge_index, weight

    def _edges(self, graph: sp.csr_matrix, symmetric: bool = False) -> tuple[Any, torch.Tensor | None]:
        coo = graph.tocoo()
        # Row v of the matrix lists v's neighbours: messages flow column -> row.
        edge_index = torch.from_numpy(np.stack([coo.col, coo.row]).astype(np.int64)).to(self.device)
        weight = torch.from_numpy(coo.data.astype(np.float32)).to(self.device) if self.weighted else None
        return self.layer_graph(edge_index, weight, graph.shape[0], symmetric)

    def _full_graph_edges(self) -> tuple[Any, torch.Tensor | None]:
        """``_edges`` of the train graph, built once per fit or load (every batch of a
        model without ``fanouts`` and every evaluation read it)."""
        cached = getattr(self, "_full_edges", None)
        if cached is None or cached[0] is not self._graph:
            symmetric = abs(self._graph - self._graph.T).nnz == 0
            cached = self._full_edges = (self._graph, self._edges(self._graph, symmetric))
        return cached[1]

    def _subgraph_edges(self, sub: SampledSubgraph) -> tuple[Any, torch.Tensor | None]:
        edge_index = torch.from_numpy(sub.edge_index).to(self.device)
        if not self.weighted:
            return self.layer_graph(edge_index, None, sub.nodes.size)
        sources, targets = sub.nodes[sub.edge_index[0]], sub.nodes[sub.edge_index[1]]
        weight = np.asarray(self._graph[targets, sources]).ravel().astype(np.float32)
        # A target keeps some of its weighted neighbours: their weights renormalized to
        # sum to one, as over the whole neighbourhood at evaluation.
        totals = np.bincount(sub.edge_index[1], weights=weight, minlength=sub.nodes.size)
        weight = weight / totals[sub.edge_index[1]]
        return self.layer_graph(edge_index, torch.from_numpy(weight.astype(np.float32)).to(self.device), sub.nodes.size)

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        edge_index, weight = self._full_graph_edges()
        nodes = torch.arange(self._graph.shape[0], device=self.device)
        final = self.module(nodes, edge_index, weight)
        return final[: self._n_users], final[self._n_users :]

    @property
    def inductive(self) -> bool:
        """Whether it embeds a node it never trained on from its neighbours (and features)."""
        return False

    @torch.no_grad()
    def fold_in_users(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """Scores (n_rows, n_items) of users it never trained on: each joins the graph as
        a new node whose neighbours are their known items (equal weights where the
        aggregation is weighted), its input its features (where the model reads them) and
        no ID embedding; its final vector against the trained items'. The trained nodes
        receive nothing from the new ones, so they keep their vectors."""
        self._require_fitted()
        clicks = (sp.csr_matrix(history) > 0).astype(np.float32).tocsr()
        n, rows = self._graph.shape[0], clicks.shape[0]
        degree = np.maximum(np.diff(clicks.indptr), 1).astype(np.float32)
        joining = sp.csr_matrix(
            (clicks.data / np.repeat(degree, np.diff(clicks.indptr)), clicks.indices + self._n_users, clicks.indptr),
            shape=(rows, n),
        )
        extended = sp.bmat([[self._graph, None], [joining, sp.csr_matrix((rows, rows))]], format="csr")
        if not self.weighted:
            extended.data[:] = 1.0
        edge_index, weight = self._edges(extended)
        warm = self.module.inputs(torch.arange(n, device=self.device))
        fresh = self.module.inputs.new_users(torch.from_numpy(np.asarray(users, dtype=np.int64)).to(self.device))
        final = self.module(None, edge_index, weight, inputs=torch.cat([warm, fresh]))[n:]
        return (final @ self._item_emb.T).cpu().numpy()

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} trains on mini-batches only (loss: bpr)")

    def batch_loss_splits(self) -> bool:
        # With fanouts each batch samples its own subgraph, which a slice's seeds would not.
        return self.config.fanouts is None

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """BPR of the triples + ``weight_decay`` x the mean over the batch of the
        triple's input rows' squared norms; the vectors come from the batch's sampled
        subgraph (``fanouts``) or from the whole graph."""
        config: GNNConfig = self.config
        ids = torch.cat([users, positives + self._n_users, negatives + self._n_users])
        seeds, inverse = torch.unique(ids, return_inverse=True)
        if config.fanouts is None:
            edge_index, weight = self._full_graph_edges()
            nodes = torch.arange(self._graph.shape[0], device=self.device)
            final = self.module(nodes, edge_index, weight, self._dropout)[seeds]
        else:
            sub = sample_subgraph(self._graph, seeds.cpu().numpy(), config.fanouts, self._sampling)
            edge_index, weight = self._subgraph_edges(sub)
            nodes = torch.from_numpy(sub.nodes).to(self.device)
            final = self.module(nodes, edge_index, weight, self._dropout)[: sub.n_seeds]
        user_vectors, positive_vectors, negative_vectors = final[inverse].split(users.numel())
        positive_scores = (user_vectors * positive_vectors).sum(dim=1)
        negative_scores = (user_vectors * negative_vectors).sum(dim=1)
        rows = self.module.inputs.regularized(ids)
        penalty = l2_penalty(rows) / users.numel() if rows else torch.zeros((), device=self.device)
        return bpr_loss(positive_scores, negative_scores) + config.weight_decay * penalty
