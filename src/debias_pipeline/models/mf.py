"""Matrix factorization, trained full-batch with binary cross-entropy or on mini-batches
of sampled triples with BPR."""

from __future__ import annotations


import torch

from debias_pipeline.config import require
from debias_pipeline.models.base import FullBatchRecommender, TrainData, TrainingConfig, sparse_to_torch
from debias_pipeline.models.losses import bce_all_pairs, l2_penalty
from debias_pipeline.models.minibatch import bpr_batch_loss
from debias_pipeline.models.towers import EmbeddingTower


def _compact_indices(matrix: torch.Tensor) -> torch.Tensor:
    """The CSR ``matrix`` with int32 indices where they fit: MKL and cuSPARSE take them as
    they are, while torch converts int64 ones to int32 on every product (the same
    numbers, without that copy)."""
    if matrix.values().numel() >= 2**31 or max(matrix.shape) >= 2**31:
        return matrix
    return torch.sparse_csr_tensor(
        matrix.crow_indices().to(torch.int32), matrix.col_indices().to(torch.int32), matrix.values(), size=matrix.shape
    )


class MFConfig(TrainingConfig):
    """MF hyperparameters: the study uses d = 200, lr = 0.04."""

    embedding_dim: int = 200

    def check(self) -> None:
        super().check()
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")


class MF(FullBatchRecommender):
    """Matrix factorization: ``r̂_ui = u_u · v_i``.

    Loss (PROTOCOL.md §4): mean BCE of σ(r̂) against Y over all |U| x |I| pairs
    + ``weight_decay`` · Σ ||E||². With ``loss: bpr``, mini-batches of sampled triples
    (u, i, j): mean ``-log σ(r̂_ui - r̂_uj)`` + ``weight_decay`` · mean over the batch of
    ``||e_u||² + ||e_i||² + ||e_j||²`` (Rendle et al., UAI 2009). Embeddings start as
    N(0, 0.01²).
    """

    name = "mf"
    Config = MFConfig

    def num_layers(self) -> int:
        """Propagation layers of the tower (0 for MF)."""
        return 0

    def build_module(self, data: TrainData, generator: torch.Generator) -> EmbeddingTower:
        adjacency = None
        if self.num_layers() > 0:
            if data.adjacency is None:
                raise ValueError(f"{self.name} needs the normalized adjacency in its TrainData")
            adjacency = _compact_indices(sparse_to_torch(data.adjacency, self.device))
        return EmbeddingTower(
            data.n_users, data.n_items, self.config.embedding_dim, self.num_layers(), adjacency, generator
        )

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module()

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        users, items = self.module()
        logits = users @ items.T  # (n_users, n_items)
        return bce_all_pairs(logits, targets) + self.config.weight_decay * l2_penalty(self.module.base_embeddings())

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return bpr_batch_loss(self.module, users, positives, negatives, self.config.weight_decay)
