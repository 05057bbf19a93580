"""The dual model: a preference tower and an exposure tower trained jointly on clicks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from debias_pipeline.models.base import FullBatchRecommender, TowerConfig, TrainData, TrainingConfig, sparse_to_torch
from debias_pipeline.models.losses import dual_bce_all_pairs, l2_penalty
from debias_pipeline.models.towers import EmbeddingTower


@dataclass(frozen=True)
class DualConfig(TrainingConfig):
    """Dual-model hyperparameters: one tower config for each of P and O."""

    preference: TowerConfig = field(default_factory=TowerConfig)
    exposure: TowerConfig = field(default_factory=TowerConfig)


class DualTowers(nn.Module):
    """The preference tower P and the exposure tower O."""

    def __init__(self, preference: EmbeddingTower, exposure: EmbeddingTower) -> None:
        super().__init__()
        self.preference = preference
        self.exposure = exposure


class DualModel(FullBatchRecommender):
    """Preference × exposure model of the clicks (PROTOCOL.md §4, the study's method).

    ``ξ̂_ui = σ(r̂_ui) · σ(ô_ui)``, with r̂ from the preference tower and ô from the
    exposure tower, each MF (``num_layers = 0``) or LightGCN with its own embedding
    size and layer count. Loss: mean BCE(ξ̂, Y) over all pairs + ``weight_decay`` ·
    Σ ||E^(0)||² of both towers; one Adam optimizer updates both. Ranking and
    evaluation use the preference r̂ alone.
    """

    name = "dual"
    Config = DualConfig

    def build_module(self, data: TrainData, generator: torch.Generator) -> DualTowers:
        needs_graph = self.config.preference.num_layers > 0 or self.config.exposure.num_layers > 0
        if needs_graph and data.adjacency is None:
            raise ValueError("dual: a LightGCN tower needs the normalized adjacency in its TrainData")
        adjacency = sparse_to_torch(data.adjacency, self.device) if needs_graph else None
        towers = [
            EmbeddingTower(data.n_users, data.n_items, tower.embedding_dim, tower.num_layers, adjacency, generator)
            for tower in (self.config.preference, self.config.exposure)
        ]
        return DualTowers(*towers)

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.preference()

    @torch.no_grad()
    def exposure_scores(self) -> torch.Tensor:
        """Exposure logits ô, (n_users, n_items)."""
        users, items = self.module.exposure()
        return users @ items.T

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        pref_users, pref_items = self.module.preference()
        expo_users, expo_items = self.module.exposure()
        preference = pref_users @ pref_items.T  # (n_users, n_items)
        exposure = expo_users @ expo_items.T  # (n_users, n_items)
        penalty = l2_penalty([*self.module.preference.base_embeddings(), *self.module.exposure.base_embeddings()])
        return dual_bce_all_pairs(preference, exposure, targets) + self.config.weight_decay * penalty
