"""Matrix factorization, trained full-batch with binary cross-entropy or on mini-batches
of sampled triples with BPR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from debias_pipeline.config.params import Params, require
from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import bce_all_pairs, l2_penalty
from debias_pipeline.models.minibatch import RowAdam, bpr_batch_loss, row_triple_scores, stale_rows, triple_loss
from debias_pipeline.models.towers import EmbeddingTower
from debias_pipeline.models.trainers import FullBatchRecommender, sparse_to_torch


def _compact_indices(matrix: torch.Tensor) -> torch.Tensor:
    """The CSR ``matrix`` with int32 indices where they fit: MKL and cuSPARSE take them as
    they are, while torch converts int64 ones to int32 on every product (the same
    numbers, without that copy)."""
    if matrix.values().numel() >= 2**31 or max(matrix.shape) >= 2**31:
        return matrix
    return torch.sparse_csr_tensor(
        matrix.crow_indices().to(torch.int32), matrix.col_indices().to(torch.int32), matrix.values(), size=matrix.shape
    )


class PlateauConfig(Params):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` on the validation metric: the
    learning rate times ``factor`` after ``patience`` evaluations without a better one
    (never below ``min_lr``).

    Attributes:
        factor: what the learning rate is multiplied by at each reduction.
        patience: validation evaluations without a better one before a reduction.
        min_lr: the floor of the learning rate.
    """

    factor: float = 0.5
    patience: int = 2
    min_lr: float = 1e-6

    def check(self) -> None:
        require(0 < self.factor < 1, f"factor must be in (0, 1), got {self.factor}")
        require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        require(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}")


class MFConfig(TrainingConfig):
    """MF hyperparameters: the study uses d = 200, lr = 0.04.

    Attributes:
        embedding_dim: d, the size of the user and item embeddings (the study: 200).
        loss: also ``enhanced_bpr`` (SOURCES.md §A), mini-batches like ``bpr`` with
            ``α · margin BPR + (1 − α) · temperature-scaled BPR`` (``margin`` m,
            ``temperature`` τ, ``alpha`` α; m = 0, α = 1 is BPR).
        margin: m of ``enhanced_bpr`` (no effect under another loss).
        temperature: τ of ``enhanced_bpr`` (no effect under another loss).
        alpha: α of ``enhanced_bpr``, the weight of the margin term (no effect under
            another loss).
        lr_plateau: reduce the learning rate when the validation metric stalls
            (``null``: a constant rate).
        grad_clip_norm: clip the gradient's norm to this before every mini-batch step
            (``null``: no clipping).
        optimizer: ``adam`` (dense Adam over both tables every step) or
            ``sparse_adam`` (MF with ``bpr`` or ``enhanced_bpr`` only: the lazy Adam of
            ``torch.optim.SparseAdam``, which updates, and decays the moments of, only
            the rows a batch touches, by ``minibatch.RowAdam``; the same loss, another
            optimizer).
    """

    loss: Literal["bce", "bpr", "enhanced_bpr"] = "bce"
    embedding_dim: int = 200
    margin: float = 0.05
    temperature: float = 0.2
    alpha: float = 0.8
    lr_plateau: PlateauConfig | None = None
    grad_clip_norm: float | None = None
    optimizer: Literal["adam", "sparse_adam"] = "adam"

    def check(self) -> None:
        super().check()
        if self.optimizer == "sparse_adam":
            require(
                self.loss in ("bpr", "enhanced_bpr") and self.grad_clip_norm is None and self.lr_plateau is None,
                f"optimizer 'sparse_adam' needs loss bpr or enhanced_bpr, no grad_clip_norm and no lr_plateau, got "
                f"loss {self.loss!r}, grad_clip_norm {self.grad_clip_norm}, lr_plateau {self.lr_plateau}",
            )
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.margin >= 0, f"margin must be >= 0, got {self.margin}")
        require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        require(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")
        require(self.grad_clip_norm is None or self.grad_clip_norm > 0, f"grad_clip_norm must be > 0, got {self.grad_clip_norm}")

    @property
    def enhanced(self) -> tuple[float, float, float] | None:
        """(margin, temperature, alpha) with ``loss: enhanced_bpr``, else ``None``."""
        return (self.margin, self.temperature, self.alpha) if self.loss == "enhanced_bpr" else None


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
        return bpr_batch_loss(self.module, users, positives, negatives, self.config.weight_decay, self.config.enhanced)

    def row_stepper(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The ``optimizer: sparse_adam`` step of the built module: per batch, the loss
        from the gathered rows (``batch_loss``'s value), its gradient with respect to
        those rows only, and ``RowAdam`` on them; the step returns the loss. A LightGCN
        tower (``propagation: stale``) takes its final rows from ``stale_rows``; at its
        exact steps (no tables) every row has a gradient and ``RowAdam`` steps them all."""
        tower = self.module
        adam = RowAdam([tower.user_embedding.data, tower.item_embedding.data], self.config.lr)
        all_users = torch.arange(tower.n_users, device=self.device)
        all_items = torch.arange(tower.n_items, device=self.device)

        def step(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            if tower.num_layers > 0 and tower.stale_layers is None:
                loss = self.batch_loss(users, positives, negatives)
                user_grad, item_grad = torch.autograd.grad(loss, [tower.user_embedding, tower.item_embedding])
                adam.step([(all_users, user_grad), (all_items, item_grad)])
                return loss.detach()
            items = torch.cat([positives, negatives])
            user_rows = tower.user_embedding.detach().index_select(0, users).requires_grad_()  # (batch, d)
            item_rows = tower.item_embedding.detach().index_select(0, items).requires_grad_()  # (2 batch, d)
            final = stale_rows(tower, user_rows, item_rows, users, items) if tower.num_layers > 0 else None
            loss = triple_loss(row_triple_scores(user_rows, item_rows, final), self.config.weight_decay, self.config.enhanced)
            user_grad, item_grad = torch.autograd.grad(loss, [user_rows, item_rows])
            adam.step([(users, user_grad), (items, item_grad)])
            return loss.detach()

        return step
