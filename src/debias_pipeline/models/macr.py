"""MACR, model-agnostic counterfactual reasoning against popularity bias (Wei, Feng,
Chen, Xia, Chen & He, "Model-Agnostic Counterfactual Reasoning for Eliminating
Popularity Bias in Recommender System", KDD 2021)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Self

import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TowerTrainingConfig
from debias_pipeline.models.contract import EpochRecord, TrainData, Validator
from debias_pipeline.models.losses import l2_penalty, macr_loss
from debias_pipeline.models.mf import MF
from debias_pipeline.models.minibatch import tower_rows
from debias_pipeline.models.towers import EmbeddingTower

logger = logging.getLogger(__name__)


class MACRConfig(TowerTrainingConfig):
    """MACR hyperparameters.

    Attributes:
        loss: ``bce``, L_O + α L_I + β L_U over all |U| x |I| pairs, full batch (the
            study's setting); ``bpr``, the same losses on the two pairs of sampled
            (user, positive, negative) triples, the authors' mini-batch setting.
        item_weight: α, the weight of the item module's loss L_I.
        user_weight: β, the weight of the user module's loss L_U.
        c_grid: the candidates of the reference matching score c of the
            counterfactual ranking ``(ŷ_k − c) · σ(ŷ_i) · σ(ŷ_u)``, on the scale of ŷ_k
            (negative where most ŷ_k are); the one with the best validation signal is
            kept, the one closest to 0 on ties and without a validation split (c = 0
            is the factual ranking by ŷ_ui).
    """

    item_weight: float = 1e-3
    user_weight: float = 1e-3
    c_grid: tuple[float, ...] = (-10.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0)

    def check(self) -> None:
        super().check()
        require(self.item_weight >= 0, f"item_weight must be >= 0, got {self.item_weight}")
        require(self.user_weight >= 0, f"user_weight must be >= 0, got {self.user_weight}")
        require(len(self.c_grid) >= 1, "c_grid must hold at least one value")


class MACRModules(nn.Module):
    """The matching tower, the item and user modules (affine maps of the tower's final
    embeddings, started at 0: σ = ½ everywhere) and the chosen reference c (a buffer,
    saved with the weights)."""

    def __init__(self, tower: EmbeddingTower, reference: float) -> None:
        super().__init__()
        self.tower = tower
        self.item_module = nn.Linear(tower.embedding_dim, 1)
        self.user_module = nn.Linear(tower.embedding_dim, 1)
        for module in (self.item_module, self.user_module):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        self.register_buffer("reference", torch.tensor(float(reference)))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final user (n_users, d) and item (n_items, d) embeddings, ŷ_u (n_users,) and ŷ_i (n_items,)."""
        users, items = self.tower()
        return users, items, self.user_module(users).squeeze(1), self.item_module(items).squeeze(1)


def reference_order(grid: tuple[float, ...]) -> list[float]:
    """The candidates c by distance to 0 (the negative first at equal distance): the
    order that breaks ties, the first being the choice without validation."""
    return sorted(grid, key=lambda reference: (abs(reference), reference))


class ReferenceSearch:
    """The validator of a MACR fit: at every evaluation, the validation signal of each
    c of the grid; it leaves the best c in the model (so the best epoch's weights carry
    their own c) and returns its signal."""

    def __init__(self, validation: Validator, grid: tuple[float, ...]) -> None:
        self.validation, self.grid = validation, reference_order(grid)
        self.window = getattr(validation, "window", 1)

    @property
    def metric(self) -> str:
        return self.validation.metric

    def score(self, model: MACR) -> float:
        signals = []
        for reference in self.grid:
            model.module.reference.fill_(reference)
            model._cache_embeddings()
            signals.append(self.validation.score(model))
        best = max(range(len(signals)), key=lambda index: (signals[index], -index))  # closest to 0 on ties
        model.module.reference.fill_(self.grid[best])
        model._cache_embeddings()
        return signals[best]


class MACR(MF):
    """MACR: a click model with item and user modules, ranked counterfactually
    (Wei et al., KDD 2021).

    The causal graph has three paths to the click: user-item matching (U, I → K → Y),
    item popularity (I → Y) and user conformity (U → Y). Training fuses three branches,
    ``ŷ_ui = ŷ_k · σ(ŷ_i) · σ(ŷ_u)``: ŷ_k = e_u · e_i the tower's score (MF, or
    LightGCN with ``num_layers`` > 0), ŷ_i = w_I · e_i + b_I the item module and
    ŷ_u = w_U · e_u + b_U the user module, affine maps of the same final embeddings. The
    loss is ``L_O + α L_I + β L_U``, the BCE of σ(ŷ_ui), σ(ŷ_i) and σ(ŷ_u)
    against the clicks: over all |U| x |I| pairs with ``loss: bce`` (+ ``weight_decay``
    · Σ ||E^(0)||²), or over the two pairs of sampled triples with ``loss: bpr``
    (+ ``weight_decay`` · the batch mean of ``||e_u||² + ||e_i||² + ||e_j||²``). The
    modules' weights carry no L2 term. Over all pairs L_I alone would fit σ(ŷ_i) to the
    item's click rate, and over sampled triples L_U alone would hold σ(ŷ_u) at ½ (each
    user's pairs are half clicks); at α = β = 1e-3 L_O dominates both modules (on Coat
    σ(ŷ_i) ends between 0.95 and 1 over all pairs).

    Inference subtracts the natural direct effect of the item and the user, the
    counterfactual world where the matching is fixed at a reference c:
    ``(ŷ_k − c) · σ(ŷ_i) · σ(ŷ_u)``. σ(ŷ_u) is one positive constant per user: it
    changes no user's ranking (it is kept so the score is the paper's). c is chosen
    among ``c_grid`` on the validation signal at every evaluation
    (``ReferenceSearch``): early stopping follows the best c's signal, and the kept
    epoch's c is stored with its weights (``reference``). The score is the inner
    product of ``σ(ŷ_u) [e_u, −c]`` and ``σ(ŷ_i) [e_i, 1]``, so it ranks from
    ``preference_embeddings`` like MF.

    Defaults: α = β = 1e-3 (the authors' code), full batch, c among −10..40 (the
    authors' scripts searched ranges such as 0..60 on their scale; a negative c, below most ŷ_k, favours
    the items σ(ŷ_i) favours); TrainingConfig's: d = 200,
    lr = 0.04 (Adam), weight_decay 1e-6, at most 300 epochs, patience 20; embeddings
    N(0, 0.01²).
    """

    name = "macr"
    Config = MACRConfig

    def num_layers(self) -> int:
        return self.config.num_layers

    def build_module(self, data: TrainData, generator: torch.Generator) -> MACRModules:
        return MACRModules(super().build_module(data, generator), reference_order(self.config.c_grid)[0])

    @property
    def reference(self) -> float:
        """The chosen c."""
        self._require_fitted()
        return float(self.module.reference)

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        search = None if validation is None else ReferenceSearch(validation, self.config.c_grid)
        super().fit(data, search, on_epoch)
        logger.info(
            "%s: counterfactual reference c = %g (c_grid %s)", self.name, self.reference, list(self.config.c_grid)
        )
        return self

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items, user_logits, item_logits = self.module()
        reference = self.module.reference.expand(users.shape[0], 1)
        user_side = torch.sigmoid(user_logits)[:, None] * torch.cat([users, -reference], dim=1)  # (n_users, d + 1)
        item_side = torch.sigmoid(item_logits)[:, None] * torch.cat([items, torch.ones_like(items[:, :1])], dim=1)
        return user_side, item_side  # their inner product: (ŷ_k − c) σ(ŷ_i) σ(ŷ_u)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        users, items, user_logits, item_logits = self.module()
        matching = users @ items.T  # (n_users, n_items) ŷ_k
        loss = macr_loss(
            matching,
            item_logits[None, :],
            user_logits[:, None],
            targets,
            self.config.item_weight,
            self.config.user_weight,
        )
        return loss + self.config.weight_decay * l2_penalty(self.module.tower.base_embeddings())

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        user_rows, item_rows, base = tower_rows(self.module.tower, users, torch.cat([positives, negatives]))
        pair_users = torch.cat([user_rows, user_rows])  # (2 batch, d): each user's positive, then negative
        matching = (pair_users * item_rows).sum(dim=1)  # (2 batch,)
        clicks = torch.cat([torch.ones_like(positives), torch.zeros_like(negatives)]).to(matching.dtype)
        item_logits = self.module.item_module(item_rows).squeeze(1)
        user_logits = self.module.user_module(pair_users).squeeze(1)
        # macr_loss averages over the 2 batch pairs; the loss is per triple, like the dual model's.
        loss = 2.0 * macr_loss(
            matching, item_logits, user_logits, clicks, self.config.item_weight, self.config.user_weight
        )
        return loss + self.config.weight_decay * l2_penalty(base.split(users.numel())) / users.numel()
