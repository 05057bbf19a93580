"""Matrix factorization, trained full-batch with binary cross-entropy or on mini-batches
of sampled triples with BPR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Self

import torch
import torch.nn.functional as F

from debias_pipeline.config.params import Params, require
from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import EpochRecord, TrainData, Validator
from debias_pipeline.models.distributed import RowGradients
from debias_pipeline.models.implicit_bpr import ImplicitBprEpochs, bias_columns
from debias_pipeline.models.losses import bce_all_pairs, l2_penalty
from debias_pipeline.models.minibatch import RowAdam, bpr_batch_loss, row_triple_scores, stale_rows, triple_loss
from debias_pipeline.models.towers import EmbeddingTower
from debias_pipeline.models.trainers import FullBatchRecommender, run_with_early_stopping, sparse_to_torch


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
            optimizer) or ``sgd`` (MF with ``bpr`` only: LearnBPR's SGD step for every
            triple of a batch, written by hand, ``lr`` the step per triple as in
            ``implicit``, 0.01; see ``row_stepper``).
        solver: ``torch`` (the project's mini-batch epochs above) or ``implicit_bpr``
            (MF with ``loss: bpr`` on the CPU: ``implicit``'s compiled BPR, SGD one
            triple at a time, ``models.implicit_bpr``; ``lr`` is then the SGD step,
            ``implicit``'s default 0.01, its regularization 2 ``weight_decay``, the last
            of the ``embedding_dim`` columns the item bias; ``batch_size`` and
            ``optimizer`` unused; ``negative_sampling: popularity``, the negatives
            ``implicit`` draws).
        num_threads: ``implicit_bpr``'s threads: 1, the same seed gives the same
            numbers; more (0: all cores) is faster but not repeatable (Hogwild steps
            race on shared rows).
    """

    loss: Literal["bce", "bpr", "enhanced_bpr"] = "bce"
    embedding_dim: int = 200
    margin: float = 0.05
    temperature: float = 0.2
    alpha: float = 0.8
    lr_plateau: PlateauConfig | None = None
    grad_clip_norm: float | None = None
    optimizer: Literal["adam", "sparse_adam", "sgd"] = "adam"
    solver: Literal["torch", "implicit_bpr"] = "torch"
    num_threads: int = 1

    def check(self) -> None:
        super().check()
        if self.solver == "implicit_bpr":
            require(
                self.loss == "bpr"
                and self.optimizer == "adam"
                and self.negative_sampling == "popularity"
                and self.grad_clip_norm is None
                and self.lr_plateau is None
                and self.embedding_dim >= 2,
                f"solver 'implicit_bpr' needs loss bpr, negative_sampling popularity (implicit's), embedding_dim >= 2 (the last column "
                f"is the item bias), no optimizer, grad_clip_norm or lr_plateau, got loss {self.loss!r}, "
                f"negative_sampling {self.negative_sampling!r}, embedding_dim {self.embedding_dim}, optimizer "
                f"{self.optimizer!r}, grad_clip_norm {self.grad_clip_norm}, lr_plateau {self.lr_plateau}",
            )
        require(self.num_threads >= 0, f"num_threads must be >= 0, got {self.num_threads}")
        if self.optimizer != "adam":
            losses = ("bpr", "enhanced_bpr") if self.optimizer == "sparse_adam" else ("bpr",)
            require(
                self.loss in losses and self.grad_clip_norm is None and self.lr_plateau is None,
                f"optimizer {self.optimizer!r} needs loss {' or '.join(losses)}, no grad_clip_norm and no lr_plateau, "
                f"got loss {self.loss!r}, grad_clip_norm {self.grad_clip_norm}, lr_plateau {self.lr_plateau}",
            )
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.margin >= 0, f"margin must be >= 0, got {self.margin}")
        require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        require(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")
        require(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            f"grad_clip_norm must be > 0, got {self.grad_clip_norm}",
        )

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
    N(0, 0.01²). With ``solver: implicit_bpr`` the same objective per triple, by
    ``implicit``'s SGD (``implicit_bpr.ImplicitBprEpochs``), the last column holding
    the item bias (the users' fixed at 1).
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
        tower = EmbeddingTower(
            data.n_users, data.n_items, self.config.embedding_dim, self.num_layers(), adjacency, generator
        )
        if self._solver() == "implicit_bpr":
            bias_columns(tower)
        return tower

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        """``FullBatchRecommender.fit``; with ``solver: implicit_bpr``, ``implicit``'s
        epochs under the same early stopping."""
        config = self.config
        if self._solver() == "torch":
            return super().fit(data, validation, on_epoch)
        if self.replicas is not None:
            raise ValueError(
                f"{self.name}: solver 'implicit_bpr' trains in one process; use solver: torch with torchrun"
            )
        if self.device.type != "cpu" or self.num_layers() > 0:
            raise ValueError(
                f"{self.name}: solver 'implicit_bpr' runs MF (num_layers 0) on the CPU only, got device "
                f"{self.device.type} and num_layers {self.num_layers()}; use solver: torch"
            )
        self.module = self.build_module(data, torch.Generator().manual_seed(self.seed))
        run_epoch = ImplicitBprEpochs(
            self.module, data.interactions, config.lr, config.weight_decay, config.num_threads, self.seed
        )
        run_with_early_stopping(self, lambda: float(run_epoch()), validation, on_epoch)
        return self

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module()

    def _solver(self) -> str:
        """``MFConfig.solver``; the subclasses whose configs have none (PDA, MACR, DICE)
        train with the project's own epochs."""
        return getattr(self.config, "solver", "torch")

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        users, items = self.module()
        logits = users @ items.T  # (n_users, n_items)
        return bce_all_pairs(logits, targets) + self.config.weight_decay * l2_penalty(self.module.base_embeddings())

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return bpr_batch_loss(self.module, users, positives, negatives, self.config.weight_decay, self.config.enhanced)

    def row_gradients(
        self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch_loss``'s value from the built module's gathered rows, and its gradient
        with respect to those rows only: the users' (batch, d) and the positives' then
        the negatives' (2 batch, d). A LightGCN tower (``propagation: stale``) takes its
        final rows from ``stale_rows``."""
        tower = self.module
        items = torch.cat([positives, negatives])
        user_rows = tower.user_embedding.detach().index_select(0, users).requires_grad_()  # (batch, d)
        item_rows = tower.item_embedding.detach().index_select(0, items).requires_grad_()  # (2 batch, d)
        final = stale_rows(tower, user_rows, item_rows, users, items) if tower.num_layers > 0 else None
        loss = triple_loss(
            row_triple_scores(user_rows, item_rows, final), self.config.weight_decay, self.config.enhanced
        )
        user_grad, item_grad = torch.autograd.grad(loss, [user_rows, item_rows])
        return loss.detach(), user_grad, item_grad

    def row_stepper(
        self, gradients: RowGradients | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The ``optimizer: sparse_adam`` step of the built module: per batch, the loss
        and its row gradients (``row_gradients``, or ``gradients``: those reduced over
        data-parallel replicas) and ``RowAdam`` on those rows; the step returns the loss.
        With ``optimizer: sgd``, ``_sgd_stepper``'s step (one process only: its update is
        written out per triple, so there is no gradient to reduce). A LightGCN tower
        (``propagation: stale``, one process only) at its exact steps (no tables) has a
        gradient at every row, and ``RowAdam`` steps them all."""
        tower = self.module
        if gradients is not None and (self.config.optimizer == "sgd" or tower.num_layers > 0):
            raise ValueError(
                f"{self.name}: optimizer {self.config.optimizer!r} with {tower.num_layers} layers trains in one "
                "process; use 'adam' (or 'sparse_adam' for MF) with torchrun"
            )
        if self.config.optimizer == "sgd":
            return self._sgd_stepper()
        adam = RowAdam([tower.user_embedding.data, tower.item_embedding.data], self.config.lr)
        gradients = gradients or self.row_gradients
        all_users = torch.arange(tower.n_users, device=self.device)
        all_items = torch.arange(tower.n_items, device=self.device)

        def step(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            if tower.num_layers > 0 and tower.stale_layers is None:
                loss = self.batch_loss(users, positives, negatives)
                user_grad, item_grad = torch.autograd.grad(loss, [tower.user_embedding, tower.item_embedding])
                adam.step([(all_users, user_grad), (all_items, item_grad)])
                return loss.detach()
            loss, user_grad, item_grad = gradients(users, positives, negatives)
            adam.step([(users, user_grad), (torch.cat([positives, negatives]), item_grad)])
            return loss

        return step

    def _sgd_stepper(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """``optimizer: sgd``: every triple of the batch takes LearnBPR's SGD step on its
        own ``−log σ(x) + λ (‖u‖² + ‖v_i‖² + ‖v_j‖²)``, x = u · (v_i − v_j) (Rendle et
        al., UAI 2009, Algorithm 1): with z = σ(−x), ``u += lr (z (v_i − v_j) − 2λ u)``,
        ``v_i += lr (z u − 2λ v_i)``, ``v_j += lr (−z u − 2λ v_j)``, every step from the
        rows as the batch found them, summed where a row repeats. That is the update of
        ``solver: implicit_bpr``, a batch at a time; the gradient is written out, so no
        graph is built. The step returns the batch's loss before it (``batch_loss``'s value)."""
        users_table, items_table = self.module.user_embedding.data, self.module.item_embedding.data
        lr, decay = self.config.lr, self.config.weight_decay

        def step(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            user_rows = users_table.index_select(0, users)  # (batch, d)
            positive_rows = items_table.index_select(0, positives)  # (batch, d)
            negative_rows = items_table.index_select(0, negatives)  # (batch, d)
            difference = positive_rows - negative_rows
            margin = (user_rows * difference).sum(dim=1, keepdim=True)  # (batch, 1): x
            z = torch.sigmoid(-margin)  # −d(−log σ(x))/dx
            squares = user_rows.square().sum() + positive_rows.square().sum() + negative_rows.square().sum()
            loss = F.softplus(-margin).mean() + decay * squares / users.numel()
            users_table.index_add_(0, users, z * difference - 2 * decay * user_rows, alpha=lr)
            items_table.index_add_(0, positives, z * user_rows - 2 * decay * positive_rows, alpha=lr)
            items_table.index_add_(0, negatives, -z * user_rows - 2 * decay * negative_rows, alpha=lr)
            return loss

        return step
