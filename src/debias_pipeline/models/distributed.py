"""Data-parallel mini-batch training over ``torch.distributed`` replicas (``Replicas``).

Every replica (one process, one device) holds the whole model and draws the same
global batches: the shuffled order and the negatives come from the model's seed
(``minibatch.MiniBatchEpochs``), so each replica samples the full global batch of B
triples and trains on its own contiguous slice of it, ``n_r`` triples (Σ_r n_r = B,
the slices differing by at most one, an empty one when B < W). The model's
``batch_loss`` L_r is a mean over its slice (plus terms that do not depend on the
triples, such as the dual model's eigen penalty, c), so the global batch's loss is

    L = Σ_r (n_r / B) · L_r                      (the per-triple means weighted by slice size)

and its gradient Σ_r (n_r / B) ∇L_r. ``DistributedDataParallel`` averages the replicas'
gradients, (1/W) Σ_r ∇(·)_r, so each replica back-propagates ``W · (n_r / B) · L_r``:
the average is then exactly ∇L, for unequal slices too, and with one replica the step
is the single-process one. After the step every replica holds the same weights.

``optimizer: sparse_adam`` (MF's ``minibatch.RowAdam``) has no ``.grad`` on the tables
for DDP to reduce: its gradient lives on the batch's gathered rows. There the replicas
place their slice's row gradients, times n_r / B, at the slice's positions of the
global batch (zeros elsewhere) and ``all_reduce`` the sum: every replica then steps
RowAdam on the whole global batch's rows with the single-process gradient, and only
3 · B · d numbers cross the wire per step instead of both tables.

Only rank 0 computes the validation metric (``SharedValidator``); it is broadcast, so
every replica's early stopping (and learning-rate schedule) takes the same decision at
the same epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from debias_pipeline.models.contract import Recommender, Validator

# (users, positives, negatives) -> (the loss's share, the users' (batch, d) and the
# positives' then negatives' (2 batch, d) row gradients): MF's ``row_gradients``.
RowGradients = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
TripleStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Replicas:
    """This process's place among the replicas of one data-parallel fit.

    Attributes:
        rank: this replica's rank in ``group`` (0 evaluates).
        world_size: W, the number of replicas.
        device: this replica's device; the collectives' tensors live there (NCCL
            needs them on the GPU, gloo on the CPU).
        group: the process group (``None``: the default one, ``init_process_group``'s).
    """

    rank: int
    world_size: int
    device: torch.device
    group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """Whether this replica evaluates, saves and logs (rank 0)."""
        return self.rank == 0

    def part(self, batch: int) -> tuple[slice, float]:
        """This replica's slice of a global batch of ``batch`` triples and its share n_r / B.

        Contiguous and balanced: replica r takes [⌊rB/W⌋, ⌊(r+1)B/W⌋).
        """
        start, stop = self.rank * batch // self.world_size, (self.rank + 1) * batch // self.world_size
        return slice(start, stop), (stop - start) / batch

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the replicas, in place (every replica gets the sum)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def epoch_loss(self, share: torch.Tensor) -> float:
        """The global batch mean of an epoch from each replica's share of it (the
        ``MiniBatchEpochs`` value of a step that returns ``share · L_r``)."""
        return float(self.sum(share.detach().to(self.device, torch.float64).reshape(1))[0])

    def broadcast_score(self, score: float | None) -> float:
        """Rank 0's validation score, on every replica (others pass ``None``)."""
        value = torch.tensor([0.0 if score is None else score], dtype=torch.float64, device=self.device)
        dist.broadcast(value, src=self._global_rank(0), group=self.group)
        return float(value[0])

    def _global_rank(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def batch_step(self, model: Recommender, optimizer: torch.optim.Optimizer) -> TripleStep:
        """The ``MiniBatchEpochs`` step of a model with ``batch_loss`` and a dense
        optimizer: DDP over the model's module, this replica's slice, the loss scaled by
        W · n_r / B (module docstring), clipping after the reduction (every replica
        clips the same global gradient), then the optimizer. Returns n_r / B · L_r."""
        network = DistributedDataParallel(
            _BatchLoss(model),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            process_group=self.group,
            forward_sync_buffers=False,  # buffers (the popularity prior's logs) never change in training
        )
        clip = getattr(model.config, "grad_clip_norm", None)

        def step(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            part, share = self.part(users.numel())
            if share == 0:
                # An empty slice (B < W) still joins the reduction, with a zero gradient of the
                # same graph: one triple's loss times 0. DDP's reducer needs every replica to
                # build the same graph; one of another shape (a sum of the parameters) gets
                # other replicas' gradients mixed up between its parameters.
                part = slice(0, 1)
            optimizer.zero_grad(set_to_none=True)
            loss = network(users[part], positives[part], negatives[part])
            (loss * (share * self.world_size)).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.module.parameters(), clip)
            optimizer.step()
            return loss.detach() * share

        return step

    def row_gradients(self, gradients: RowGradients, width: int) -> RowGradients:
        """``gradients`` (one process's row gradients of a batch, rows of ``width`` d)
        made global: this replica's slice's, times n_r / B, at the slice's positions of
        the global batch, summed over the replicas (module docstring). Returns
        n_r / B · L_r and the users' (B, d) and the positives' then negatives' (2B, d)
        gradients."""

        def reduced(
            users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            part, share = self.part(users.numel())
            loss = torch.zeros((), device=users.device)
            rows = torch.zeros(3, users.numel(), width, device=users.device)  # users, positives, negatives
            if share > 0:  # an empty slice (B < W) joins the sum with zeros
                loss, user_grad, item_grad = gradients(users[part], positives[part], negatives[part])
                rows[0, part] = user_grad * share
                rows[1:, part] = item_grad.view(2, -1, width) * share
            self.sum(rows)
            return loss * share, rows[0], rows[1:].reshape(-1, width)

        return reduced


class _BatchLoss(nn.Module):
    """A model's ``batch_loss`` as a module's forward, so DDP can wrap it: its only
    submodule is the model's module, whose parameters the loss reads."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        self.network = model.module
        self._batch_loss = model.batch_loss

    def forward(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return self._batch_loss(users, positives, negatives)


@dataclass
class SharedValidator:
    """The validation metric computed on rank 0 and broadcast to every replica.

    Rank 0 scores the model with ``validation``; the others only receive the score,
    so every replica's ``trainers.run_with_early_stopping`` sees the same values and
    stops (and restores its best weights) at the same epoch.
    """

    validation: Validator
    replicas: Replicas

    @property
    def metric(self) -> str:
        return self.validation.metric

    @property
    def window(self) -> int:
        return int(getattr(self.validation, "window", 1))

    def score(self, model: Any) -> float:
        local = self.validation.score(model) if self.replicas.is_main else None
        return self.replicas.broadcast_score(local)
