"""Embedding towers: matrix factorization and LightGCN propagation on top of it.

A tower owns user and item embedding tables E^(0) (N(0, 0.01²)) and returns the final
embeddings. With ``num_layers = 0`` it is plain MF; with K layers it is LightGCN
(He et al., SIGIR 2020): ``E^(k+1) = Â E^(k)``, final ``E = mean_{k=0..K} E^(k)``,
Â = D^-1/2 A D^-1/2 the symmetric normalized bipartite adjacency.
"""

from __future__ import annotations

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
