"""DICE, disentangled interest and conformity embeddings (Zheng, Gao, Li, He & Jin,
"Disentangling User Interest and Conformity for Recommendation with Causal Embedding",
WWW 2021)."""

from __future__ import annotations

import math
from typing import Literal

import scipy.sparse as sp
import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TowerTrainingConfig
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import dice_loss, distance_correlation, l2_penalty
from debias_pipeline.models.mf import MF
from debias_pipeline.models.minibatch import tower_rows
from debias_pipeline.models.sampling import MarginSampler
from debias_pipeline.models.towers import EmbeddingTower


class DICEConfig(TowerTrainingConfig):
    """DICE hyperparameters (defaults: the authors' code).

    Attributes:
        loss: ``bpr`` only: sampled triples, their negatives drawn by
            ``sampling.MarginSampler`` (``negative_sampling`` must stay at its default).
        batch_size: triples per step (the authors' 128).
        embedding_dim: the size of each of the two embeddings (interest, conformity).
        alpha: α, the weight of the interest and conformity losses at the first epoch.
        alpha_decay: α is multiplied by it every epoch (the paper: the cause-specific
            terms fade so that the click loss dominates late in training).
        beta: β, the weight of the discrepancy term, the distance correlation of the
            interest and conformity embeddings of the batch's users and items.
        margin: m, in train positives: O1 negatives are more popular than the positive
            by more than m, O2 ones less popular by more than m.
        margin_decay: m is multiplied by it every epoch.
        ranking: ``interest`` ranks by ⟨u_int, i_int⟩ (the debiased score); ``both`` by
            the click score ⟨u_int, i_int⟩ + ⟨u_con, i_con⟩ (what the authors' code ranks by).
    """

    loss: Literal["bpr"] = "bpr"
    batch_size: int = 128
    alpha: float = 0.1
    alpha_decay: float = 0.9
    beta: float = 0.01
    margin: float = 40.0
    margin_decay: float = 0.9
    ranking: Literal["interest", "both"] = "interest"

    def check(self) -> None:
        super().check()
        require(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        require(self.margin >= 0, f"margin must be >= 0, got {self.margin}")
        for name in ("alpha_decay", "margin_decay"):
            require(0 < getattr(self, name) <= 1, f"{name} must be in (0, 1], got {getattr(self, name)}")
        require(
            self.negative_sampling == "uniform",
            f"negative_sampling must stay 'uniform': dice draws its own negatives by popularity with a margin, got {self.negative_sampling!r}",
        )


class CauseTowers(nn.Module):
    """The interest and the conformity towers, of one size and layer count."""

    def __init__(self, interest: EmbeddingTower, conformity: EmbeddingTower) -> None:
        super().__init__()
        self.interest = interest
        self.conformity = conformity


class DICE(MF):
    """DICE: every user and item has an interest and a conformity embedding, a click
    is the sum of both causes (Zheng et al., WWW 2021).

    ``s^click_ui = s^int_ui + s^con_ui = ⟨u_int, i_int⟩ + ⟨u_con, i_con⟩``, each
    tower MF or LightGCN (``num_layers`` > 0). Training on triples (u, i, j) whose j is
    drawn by popularity with a margin (``sampling.MarginSampler``, PNSM): if j is more
    popular than i (O1), i's click came despite popularity, so interest ranks i over j
    and conformity j over i; if j is less popular (O2), conformity ranks i over j; the
    click score ranks i over j on both. The loss (``losses.dice_loss``) is
    ``L_click + α (L_int + L_con) + β L_discrepancy`` + ``weight_decay`` · the batch
    mean of ``||e_u||² + ||e_i||² + ||e_j||²`` over both towers' E^(0). The
    discrepancy is the distance correlation ``dCor(U_int, U_con) + dCor(I_int, I_con)``
    over the batch's distinct users and items (final embeddings), the paper's
    choice: in [0, 2], so the loss stays non-negative (the L1 and L2 alternatives
    subtract a distance and are unbounded below). α and the margin m decay by
    ``alpha_decay`` and ``margin_decay`` every epoch, as in the authors' code
    (α_t = α · decay^(t − 1)).

    Ranking uses the interest score (``ranking: interest``), the effect of interest
    alone; ``ranking: both`` ranks by the click score.

    Embeddings start as U(−1/√d, 1/√d), the authors' initialization, not N(0, 0.01²):
    the distance correlation does not change when the embeddings are scaled, so its
    gradient grows as they shrink, and at N(0, 0.01²) β · dCor would outweigh the
    ranking losses from the first step. Defaults (the authors' code): α = 0.1 decaying
    by 0.9 per epoch, β = 0.01, margin 40 decaying by 0.9, batch 128; TrainingConfig's
    d = 200 (each embedding), lr = 0.04 (Adam), weight_decay 1e-6, at most 300 epochs,
    patience 20.
    """

    name = "dice"
    Config = DICEConfig

    def __init__(self, config: DICEConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._sampler: MarginSampler | None = None

    def num_layers(self) -> int:
        return self.config.num_layers

    def build_module(self, data: TrainData, generator: torch.Generator) -> CauseTowers:
        towers = CauseTowers(super().build_module(data, generator), super().build_module(data, generator))
        # dCor is scale-free, so its gradient grows as 1 / scale: at N(0, 0.01²) β · dCor's is
        # about twice BPR's (d = 16, β = 0.01), at the authors' scale under a fortieth of it.
        bound = 1.0 / math.sqrt(self.config.embedding_dim)
        with torch.no_grad():
            for tower in (towers.interest, towers.conformity):
                for table in tower.base_embeddings():
                    table.uniform_(-bound, bound, generator=generator)
        return towers

    def negative_sampler(self, interactions: sp.spmatrix, generator: torch.Generator) -> MarginSampler:
        """The sampler of a fit (``minibatch.MiniBatchEpochs`` asks for it); it also keeps
        the epoch count that α decays with."""
        self._sampler = MarginSampler(interactions, generator, self.config.margin, self.config.margin_decay)
        return self._sampler

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.module.interest()
        if self.config.ranking == "interest":
            return users, items
        conformity_users, conformity_items = self.module.conformity()
        return torch.cat([users, conformity_users], dim=1), torch.cat([items, conformity_items], dim=1)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("dice trains on sampled triples only (loss: bpr)")

    @property
    def alpha(self) -> float:
        """α of the current epoch."""
        epoch = 1 if self._sampler is None else max(self._sampler.epoch, 1)
        return self.config.alpha * self.config.alpha_decay ** (epoch - 1)

    def batch_loss_splits(self) -> bool:
        # The discrepancy is the distance correlation of the batch's distinct rows, a
        # statistic of the whole batch, not a sum over its triples.
        return False

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        # Each tower's rows once per distinct user and item: the scores gather from them,
        # the discrepancy compares them.
        distinct_users, user_index = torch.unique(users, return_inverse=True)
        distinct_items, item_index = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
        positive_index, negative_index = item_index.split(users.numel())
        scores, rows, penalty = [], [], 0.0
        for tower in (self.module.interest, self.module.conformity):
            user_rows, item_rows, base = tower_rows(tower, distinct_users, distinct_items)  # (n_u, d), (n_i, d)
            user_vectors = user_rows[user_index]  # (batch, d)
            scores += [
                (user_vectors * item_rows[positive_index]).sum(dim=1),
                (user_vectors * item_rows[negative_index]).sum(dim=1),
            ]
            rows.append((user_rows, item_rows))
            base_users, base_items = base.split([distinct_users.numel(), distinct_items.numel()])
            penalty = penalty + l2_penalty([base_users[user_index], base_items[item_index]]) / users.numel()
        (interest_users, interest_items), (conformity_users, conformity_items) = rows
        discrepancy = distance_correlation(interest_users, conformity_users) + distance_correlation(
            interest_items, conformity_items
        )
        interest_positive, interest_negative, conformity_positive, conformity_negative = scores
        loss = dice_loss(
            interest_positive,
            interest_negative,
            conformity_positive,
            conformity_negative,
            self._sampler.kinds(positives, negatives),
            self.alpha,
        )
        return loss + self.config.beta * discrepancy + self.config.weight_decay * penalty
