"""CausE, causal embeddings (Bonner & Vasile, "Causal Embeddings for Recommendation",
RecSys 2018): item embeddings under the biased logging policy (control) and under a
random one (treatment), tied by a discrepancy penalty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import torch
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import EpochRecord, TrainData, Validator
from debias_pipeline.models.losses import bce_all_pairs, l2_penalty, sampled_bce_loss
from debias_pipeline.models.towers import EmbeddingTower, propagate
from debias_pipeline.models.trainers import FullBatchRecommender, sparse_to_torch


class CausEConfig(TrainingConfig):
    """CausE hyperparameters.

    Attributes:
        embedding_dim: d of the user table and of both item tables.
        num_layers: LightGCN propagation layers K over the train graph (0: the paper's MF).
        lambda_dist: weight of the discrepancy ``Σ ||V_t − V_c||²`` between the two
            item tables.
    """

    embedding_dim: int = 200
    num_layers: int = 0
    lambda_dist: float = 1e-3

    def check(self) -> None:
        super().check()
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")
        require(self.lambda_dist >= 0, f"lambda_dist must be >= 0, got {self.lambda_dist}")
        # The control loss runs over all pairs: there is no sampled-triple form.
        require(self.loss == "bce", f"loss must be 'bce' (CausE fits all pairs), got {self.loss!r}")


class CausEEmbeddings(nn.Module):
    """Shared user embeddings U and control item embeddings V_c (an ``EmbeddingTower``:
    MF, or LightGCN over the train graph Â), and treatment item embeddings V_t drawn
    after them, N(0, 0.01²); with K > 0 layers the pair (U, V_t) is propagated over Â
    as the tower propagates (U, V_c).

    Args:
        control: the tower of U and V_c.
        generator: seeded generator of V_t's initialization.
    """

    def __init__(self, control: EmbeddingTower, generator: torch.Generator) -> None:
        super().__init__()
        self.control_tower = control
        shape = (control.n_items, control.embedding_dim)
        self.treatment_item_embedding = nn.Parameter(torch.randn(*shape, generator=generator) * 0.01)

    def base_embeddings(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """U (n_users, d), V_c and V_t (n_items, d): what L2 penalizes."""
        return (*self.control_tower.base_embeddings(), self.treatment_item_embedding)

    def control(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final users (n_users, d) and control items (n_items, d)."""
        return self.control_tower()

    def treatment(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final users (n_users, d) and treatment items (n_items, d): the ranking's."""
        tower = self.control_tower
        if tower.num_layers == 0:
            return tower.user_embedding, self.treatment_item_embedding
        nodes = torch.cat([tower.user_embedding, self.treatment_item_embedding])  # (n_users + n_items, d)
        final = propagate(tower.adjacency, nodes, tower.num_layers)
        return final[: tower.n_users], final[tower.n_users :]


class CausE(FullBatchRecommender):
    """CausE (Bonner & Vasile, RecSys 2018), the product version with shared users.

    Two samples of the same users: the control set, logged under the biased policy (the
    train clicks Y, all |U| x |I| pairs), and the treatment set S_t, logged under a
    random policy (a few labelled pairs of the unbiased sample, ``TrainData.treatment``).
    Users share one table U; items have a control table V_c and a treatment table V_t:

        L = (1/|U||I|) Σ_{u,i} BCE(σ(u_u · c_i), y_ui)
          + (1/|S_t|) Σ_{(u,i) ∈ S_t} BCE(σ(u_u · t_i), l_ui)
          + lambda_dist · Σ_i ||t_i − c_i||²  +  weight_decay · (||U||² + ||V_c||² + ||V_t||²)

    (the paper's L_c + L_t + Ω_disc(t − c) + Ω_embed, with the log loss it uses). The
    discrepancy carries what the biased clicks say of an item into its treatment
    embedding, which few unbiased labels reach. Ranking: r̂_ui = u_u · t_i, the
    prediction under the random policy.

    The treatment set is cut from the unbiased validation split
    (``training.inputs.treatment_inputs``: the rows of half of the validation users,
    drawn with the model's seed); early stopping and the reported validation metrics
    use the other half only, so nothing is selected on rows the model trained on. With
    ``num_layers`` > 0 the users and each item table are propagated over the train
    graph (LightGCN, mean of layers 0..K), the penalties stay on the base tables.

    Defaults: d = 200, K = 0, lambda_dist = 1e-3, and TrainingConfig's: lr = 0.04 (Adam,
    full batch; ``loss`` must stay ``bce``), weight_decay = 1e-6, at most 300 epochs,
    patience 20; embeddings N(0, 0.01²).
    """

    name = "cause"
    Config = CausEConfig
    needs_treatment = True

    def __init__(self, config: CausEConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        # The treatment set's users, items (n_treatment,) and labels, set by fit.
        self._treatment: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        sample = data.treatment
        if sample is None or len(sample) == 0:
            raise ValueError(
                "cause fits its treatment item embeddings on labelled pairs of an unbiased sample "
                "(TrainData.treatment), and this train data has none: the training run cuts them from the "
                "validation split of a dataset with one (thesis protocol)"
            )
        self._treatment = sample.tensors(self.device)
        return super().fit(data, validation, on_epoch)

    def build_module(self, data: TrainData, generator: torch.Generator) -> CausEEmbeddings:
        adjacency = None
        if self.config.num_layers > 0:
            if data.adjacency is None:
                raise ValueError(f"{self.name} needs the normalized adjacency in its TrainData")
            adjacency = sparse_to_torch(data.adjacency, self.device)
        control = EmbeddingTower(
            data.n_users, data.n_items, self.config.embedding_dim, self.config.num_layers, adjacency, generator
        )
        return CausEEmbeddings(control, generator)

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.treatment()

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        users, control_items = self.module.control()
        control = bce_all_pairs(users @ control_items.T, targets)  # over (n_users, n_items)
        treated_users, treatment_items = self.module.treatment()
        pair_users, pair_items, labels = self._treatment
        treatment_logits = (treated_users[pair_users] * treatment_items[pair_items]).sum(dim=1)  # (n_treatment,)
        treatment = sampled_bce_loss(treatment_logits, labels)
        _, control_base, treatment_base = self.module.base_embeddings()
        discrepancy = (treatment_base - control_base).pow(2).sum()
        penalty = l2_penalty(self.module.base_embeddings())
        return control + treatment + self.config.lambda_dist * discrepancy + self.config.weight_decay * penalty
