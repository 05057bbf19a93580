"""Embedding towers: matrix factorization and LightGCN propagation on top of it.

A tower owns user and item embedding tables E^(0) (N(0, 0.01²)) and returns the final
embeddings. With ``num_layers = 0`` it is plain MF; with K layers it is LightGCN
(He et al., SIGIR 2020): ``E^(k+1) = Â E^(k)``, final ``E = mean_{k=0..K} E^(k)``,
Â = D^-1/2 A D^-1/2 the symmetric normalized bipartite adjacency.

``PopularityPrior`` is the dual model's optional exposure prior: a logit from log user
activity and log item popularity, added to the exposure tower's score.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


def sparse_mm(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` for a sparse CSR ``matrix``, into a fresh tensor.

    ``addmm`` with beta = 0 gives the same numbers as ``torch.sparse.mm`` without first
    zero-filling and copying the output (a third of the product's time on the CPU).
    """
    out = dense.new_empty(matrix.shape[0], dense.shape[1])
    return torch.addmm(out, matrix, dense, beta=0.0, out=out)


class _SymmetricSpMM(torch.autograd.Function):
    """``Â @ X`` for a symmetric sparse Â: the backward pass is ``Â @ grad``.

    Stock autograd through ``torch.sparse.mm`` builds Âᵀ for the backward pass; Â is
    symmetric, so the forward matrix serves both directions.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return sparse_mm(adjacency, x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, sparse_mm(ctx.adjacency, grad)


def propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, num_layers: int) -> torch.Tensor:
    """LightGCN layer combination: mean of ``Â^k E`` for k = 0..num_layers.

    Args:
        adjacency: (n_nodes, n_nodes) symmetric normalized adjacency, sparse.
        embeddings: (n_nodes, d) E^(0), users first, then items.
        num_layers: K >= 0.

    Returns:
        (n_nodes, d) the layer mean.
    """
    total = embeddings
    layer = embeddings
    for _ in range(num_layers):
        layer = _SymmetricSpMM.apply(adjacency, layer)
        total = total + layer
    return total / (num_layers + 1)


class EmbeddingTower(nn.Module):
    """User and item embeddings, optionally smoothed by LightGCN propagation.

    Args:
        n_users: number of users.
        n_items: number of items.
        embedding_dim: d.
        num_layers: LightGCN layers K (0 = MF).
        adjacency: (n_users + n_items)² normalized adjacency; required when K > 0.
        generator: seeded generator for the N(0, 0.01²) initialization.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        num_layers: int,
        adjacency: torch.Tensor | None,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        if num_layers > 0 and adjacency is None:
            raise ValueError("a LightGCN tower (num_layers > 0) needs the normalized adjacency")
        self.n_users, self.n_items = n_users, n_items
        self.embedding_dim, self.num_layers = embedding_dim, num_layers
        self.adjacency = adjacency
        # T of mini-batch ``propagation: stale`` (minibatch.StaleLayers), (n_users + n_items, d);
        # set and cleared by the epoch, None otherwise. Not a buffer: never saved.
        self.stale_layers: torch.Tensor | None = None
        self.user_embedding = nn.Parameter(torch.empty(n_users, embedding_dim))
        self.item_embedding = nn.Parameter(torch.empty(n_items, embedding_dim))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw E^(0) from N(0, 0.01²) with ``generator``."""
        with torch.no_grad():
            self.user_embedding.copy_(torch.randn(self.n_users, self.embedding_dim, generator=generator) * 0.01)
            self.item_embedding.copy_(torch.randn(self.n_items, self.embedding_dim, generator=generator) * 0.01)

    def base_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """E^(0) of users (n_users, d) and items (n_items, d): what L2 penalizes."""
        return self.user_embedding, self.item_embedding

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (n_users, d) and item (n_items, d) embeddings."""
        if self.num_layers == 0:
            return self.user_embedding, self.item_embedding
        nodes = torch.cat([self.user_embedding, self.item_embedding])  # (n_users + n_items, d)
        final = propagate(self.adjacency, nodes, self.num_layers)
        return final[: self.n_users], final[self.n_users :]

    def extra_repr(self) -> str:
        return (
            f"n_users={self.n_users}, n_items={self.n_items}, "
            f"embedding_dim={self.embedding_dim}, num_layers={self.num_layers}"
        )


def log_popularity(interactions: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Log user activity and log item popularity of the train positives, smoothed by one.

    ``q_u = (m_u + 1) / max_v (m_v + 1)`` and ``p_i = (n_i + 1) / max_j (n_j + 1)``, with
    m_u the positives of user u and n_i those of item i: in (0, 1], 1 for the most
    active user and the most popular item, finite for a user or item without any.

    Args:
        interactions: (n_users, n_items) CSR Y of the train positives.

    Returns:
        ``log q`` (n_users,) and ``log p`` (n_items,), float32.
    """
    binary = sp.csr_matrix(interactions, dtype=np.float64)
    binary.data = (binary.data > 0).astype(np.float64)
    activity = np.asarray(binary.sum(axis=1)).ravel() + 1.0  # (n_users,)
    popularity = np.asarray(binary.sum(axis=0)).ravel() + 1.0  # (n_items,)
    return (
        np.log(activity / activity.max()).astype(np.float32),
        np.log(popularity / popularity.max()).astype(np.float32),
    )


class PopularityPrior(nn.Module):
    """An exposure logit from user activity and item popularity alone.

    ``prior_ui = a · log p_i + b · log q_u + c`` (``log_popularity``). With a = b = ½ and
    c = 0 it is ``log(θ_i θ_u)``, the log of Rel-MF's propensity θ_i = p_i^½ (Saito et
    al., WSDM 2020) times its user analogue: for the small propensities of most pairs,
    the logit of the propensity. With ``learned`` the three scalars are parameters
    started at those values (an exposure model of ReCRec-F's kind restricted to these
    two features), else fixed buffers. The log features are buffers either way, so
    ``state_dict`` carries everything.

    Args:
        log_user_activity: (n_users,) log q_u.
        log_item_popularity: (n_items,) log p_i.
        item_weight: a.
        user_weight: b.
        offset: c.
        learned: whether a, b, c are trained.
    """

    def __init__(
        self,
        log_user_activity: torch.Tensor,
        log_item_popularity: torch.Tensor,
        item_weight: float,
        user_weight: float,
        offset: float,
        learned: bool,
    ) -> None:
        super().__init__()
        self.learned = learned
        self.register_buffer("log_user_activity", log_user_activity)  # (n_users,)
        self.register_buffer("log_item_popularity", log_item_popularity)  # (n_items,)
        device = log_item_popularity.device
        for name, value in (("item_weight", item_weight), ("user_weight", user_weight), ("offset", offset)):
            scalar = torch.tensor(float(value), dtype=torch.float32, device=device)
            if learned:
                self.register_parameter(name, nn.Parameter(scalar))
            else:
                self.register_buffer(name, scalar)

    def forward(self) -> torch.Tensor:
        """The prior of every pair, (n_users, n_items)."""
        users = self.user_weight * self.log_user_activity + self.offset  # (n_users,)
        items = self.item_weight * self.log_item_popularity  # (n_items,)
        return users[:, None] + items[None, :]

    def pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The prior of the pairs (users[k], items[k]), (batch,)."""
        return (
            self.item_weight * self.log_item_popularity[items]
            + self.user_weight * self.log_user_activity[users]
            + self.offset
        )

    def item_part(self) -> torch.Tensor:
        """a · log p_i, the prior's only item-dependent part, (n_items,)."""
        return self.item_weight * self.log_item_popularity

    def extra_repr(self) -> str:
        return (
            f"n_users={self.log_user_activity.numel()}, n_items={self.log_item_popularity.numel()}, "
            f"item_weight={self.item_weight.item():.4g}, user_weight={self.user_weight.item():.4g}, "
            f"offset={self.offset.item():.4g}, learned={self.learned}"
        )
