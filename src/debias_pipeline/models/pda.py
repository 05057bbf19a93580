"""PD and PDA, popularity deconfounding and adjusting (Zhang, Feng, He, Wei, Song, Ling
& Zhang, "Causal Intervention for Leveraging Popularity Bias in Recommendation",
SIGIR 2021)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.evaluation.propensity import item_popularity
from debias_pipeline.models.configs import TowerTrainingConfig
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import elu_plus_one, pda_bpr_loss
from debias_pipeline.models.mf import MF
from debias_pipeline.models.minibatch import triple_scores
from debias_pipeline.models.towers import EmbeddingTower


class PDAConfig(TowerTrainingConfig):
    """PD / PDA hyperparameters.

    Attributes:
        loss: ``bpr`` only: the paper's BPR on sampled triples (``batch_size``,
            ``negative_sampling``: uniform in the paper).
        gamma: γ >= 0, the exponent of the popularity in the training score
            ``ELU'(f) · m_i^γ`` (the paper tunes it in 0.02..0.25 on validation).
        inference: ``pd`` ranks by ``ELU'(f)`` alone (the deconfounded score); ``pda``
            by ``ELU'(f) · m̃_i^γ̃``, with m̃ the target popularity, here the train
            popularity (no time stages to predict the next one from).
        inference_gamma: γ̃ of ``pda`` (``null``: γ); only with ``inference: pda``.
    """

    loss: Literal["bpr"] = "bpr"
    gamma: float = 0.1
    inference: Literal["pd", "pda"] = "pd"
    inference_gamma: float | None = None

    def check(self) -> None:
        super().check()
        require(self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
        require(
            self.inference_gamma is None or (self.inference == "pda" and self.inference_gamma >= 0),
            f"inference_gamma must be >= 0 and needs inference: pda, got {self.inference_gamma} with {self.inference!r}",
        )

    @property
    def target_gamma(self) -> float | None:
        """γ̃ of the ranking score's popularity factor, ``None`` for PD."""
        if self.inference == "pd":
            return None
        return self.gamma if self.inference_gamma is None else self.inference_gamma


class PopularityTower(nn.Module):
    """An embedding tower and the items' popularity m_i (a buffer, saved with the weights)."""

    def __init__(self, tower: EmbeddingTower, popularity: torch.Tensor) -> None:
        super().__init__()
        self.tower = tower
        self.register_buffer("popularity", popularity)  # (n_items,), sums to 1


def normalized_popularity(data: TrainData) -> np.ndarray:
    """m_i = n_i / Σ_j n_j, n_i the train positives of item i; (n_items,) float32."""
    counts = item_popularity(data.interactions)
    return (counts / max(counts.sum(), 1.0)).astype(np.float32)


class PDA(MF):
    """PD / PDA: a matching model trained through the popularity it is confounded by,
    then ranked without it (Zhang et al., SIGIR 2021).

    The causal graph has item popularity Z confounding exposure of item I and the click
    C (Z → I, Z → C). Training models ``P(c | u, i, m_i) ∝ ELU'(f(u, i)) · m_i^γ``, with
    f the tower's score ``e_u · e_i`` (MF, or LightGCN with ``num_layers`` > 0) and
    ``ELU'(x) = e^x`` for x <= 0, ``x + 1`` otherwise (positive), by BPR over sampled
    triples: ``mean −log σ(ELU'(f_ui) m_i^γ − ELU'(f_uj) m_j^γ)`` + ``weight_decay`` ·
    the batch mean of ``||e_u||² + ||e_i||² + ||e_j||²`` on E^(0).

    Inference by the backdoor adjustment: PD (``inference: pd``) ranks by
    ``ELU'(f(u, i))``, the click with popularity's effect cut (the same order as f);
    PDA (``inference: pda``) puts a target popularity back in, ``ELU'(f(u, i)) · m̃_i^γ̃``.

    m_i is the item's *local* popularity at the interaction's time stage in the paper.
    Without time stages it is here the train popularity normalized to sum 1,
    ``m_i = n_i / Σ_j n_j``, the same for every triple; and PDA's m̃ is that same train
    popularity (the paper predicts the next stage's). An item without a train positive
    has m = 0: under PDA it scores 0, below every other item.

    Defaults: γ = 0.1, PD; TrainingConfig's: d = 200, lr = 0.04 (Adam), batch 2048,
    uniform negatives, weight_decay 1e-6, at most 300 epochs, patience 20;
    embeddings N(0, 0.01²).
    """

    name = "pda"
    Config = PDAConfig
    scores_by_embeddings = False  # ELU'(f) · m̃^γ̃ is not an inner product

    def num_layers(self) -> int:
        return self.config.num_layers

    def build_module(self, data: TrainData, generator: torch.Generator) -> PopularityTower:
        popularity = torch.from_numpy(normalized_popularity(data)).to(self.device)
        return PopularityTower(super().build_module(data, generator), popularity)

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.tower()

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("pda trains on sampled triples only (loss: bpr)")

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        positive, negative, penalty = triple_scores(self.module.tower, users, positives, negatives)
        popularity = self.module.popularity
        loss = pda_bpr_loss(positive, negative, popularity[positives], popularity[negatives], self.config.gamma)
        return loss + self.config.weight_decay * penalty

    def _ranking_score(self, matching: torch.Tensor, items: torch.Tensor | slice) -> torch.Tensor:
        """ELU'(f), times m̃^γ̃ of ``items`` under PDA; ``matching`` f on the CPU."""
        score = elu_plus_one(matching)
        gamma = self.config.target_gamma
        if gamma is None:
            return score
        return score * self.module.popularity.cpu()[items].pow(gamma)

    @torch.no_grad()
    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        matching = torch.from_numpy(super().score(users))  # (n_users, n_items) f
        return self._ranking_score(matching, slice(None)).numpy()

    @torch.no_grad()
    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        matching = torch.from_numpy(super().score_pairs(users, items))  # (n_pairs,) f
        return self._ranking_score(matching, torch.from_numpy(np.array(items, dtype=np.int64))).numpy()
