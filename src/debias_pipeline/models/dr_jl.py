"""DR-JL, doubly robust joint learning (Wang, Zhang, Sun & Qi, "Doubly Robust Joint
Learning for Recommendation on Data Missing Not at Random", ICML 2019), on implicit
feedback."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TowerConfig, TrainingConfig
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import doubly_robust_bce, imputation_loss, l2_penalty
from debias_pipeline.models.mf_ips import pair_propensity_table
from debias_pipeline.models.towers import EmbeddingTower
from debias_pipeline.models.trainers import FullBatchRecommender, sparse_to_torch


class DRJLConfig(TrainingConfig):
    """DR-JL hyperparameters: the prediction and imputation towers and the propensity floor.

    Attributes:
        prediction: the prediction model r̂ (MF, or LightGCN with ``num_layers`` > 0).
        imputation: the imputation model of the relevance r̃ = σ(g) (MF or LightGCN).
        propensity_clip: lower bound of θ (a click weighs at most 1 / propensity_clip).
    """

    prediction: TowerConfig = Field(default_factory=TowerConfig)
    imputation: TowerConfig = Field(default_factory=TowerConfig)
    propensity_clip: float = 0.1

    def check(self) -> None:
        super().check()
        require(0 < self.propensity_clip <= 1, f"propensity_clip must be in (0, 1], got {self.propensity_clip}")
        # Every pair carries its own weight and imputation: there is no sampled-triple form.
        require(self.loss == "bce", f"loss must be 'bce' (DR-JL weighs all pairs), got {self.loss!r}")


class DRJLTowers(nn.Module):
    """The prediction tower and the imputation tower."""

    def __init__(self, prediction: EmbeddingTower, imputation: EmbeddingTower) -> None:
        super().__init__()
        self.prediction = prediction
        self.imputation = imputation


class DRJL(FullBatchRecommender):
    """DR-JL: a prediction model trained on the doubly robust loss, an imputation model
    trained on the propensity-weighted squared error of its imputed errors, alternately.

    Wang et al. estimate the loss over all pairs D from the observed ones (o_ui = 1,
    propensity p_ui = P(o_ui = 1)) with an imputed error ê_ui for every pair:

        L_DR = (1/|D|) Σ_{u,i} [ ê_ui + o_ui (e_ui − ê_ui) / p_ui ],

    unbiased when either the propensities or the imputed errors are right. Joint
    learning alternates one step of the prediction model on L_DR (imputation fixed) and
    one of the imputation model on ``(1/|D|) Σ o_ui (e_ui − ê_ui)² / p_ui`` (prediction
    fixed).

    On implicit feedback y = o · r the exposure o of a non-click is never observed, so
    the method needs a reading of o, e and ê. This model's (``losses.doubly_robust_bce``):

    - the target is the BCE against relevance r, as Rel-MF's: on an exposed pair y = r,
      so its error is the click's BCE ``e = y δ1 + (1 − y) δ0`` (δ1 = −log σ(r̂),
      δ0 = −log(1 − σ(r̂)));
    - the imputation model imputes the relevance r̃ = σ(g_ui), and the imputed error is
      the BCE of r̂ against it, ``ê = r̃ δ1 + (1 − r̃) δ0`` (so ê depends on r̂ and the
      imputed pairs pull the prediction, which an ê free of r̂ would not);
    - a click was exposed: o/p = 1/θ; for a non-click o is replaced by its posterior
      E[o | y = 0] = θ(1 − r̃)/(1 − θ r̃) under the imputation (held fixed), so
      o/p = (1 − r̃)/(1 − θ r̃) (``losses.exposure_weights``).

    Then each pair's term is the BCE of r̂ against the DR label ``r̃ + (o/p)(y − r̃)``;
    with r̃ = 0 the loss is Saito et al.'s IPS (``relmf.ipw_bce``), with r̃ = r it is the
    BCE against relevance whatever θ, with θ = 1 the BCE against the clicks. Because
    the exposure of a non-click comes from the imputation, the estimate is robust to a
    wrong propensity only through a right imputation, not the other way round: the
    double robustness of the paper needs o observed. The imputation loss is
    ``(1/N) Σ (o/p) (y − r̃)² r̂²`` (``losses.imputation_loss``).

    θ is ``TrainData.propensity`` per item (or per pair, dense), clipped at
    ``propensity_clip``, or Rel-MF's popularity^0.5 without an estimate; a per-click
    estimate (CSR) is refused, the non-clicks need θ too. Each tower is MF or LightGCN
    (``num_layers``); the L2 term ``weight_decay · Σ ||E^(0)||²`` of a tower is in its
    own loss; each tower has its own Adam. Embeddings N(0, 0.01²), so r̃ starts at ½.
    Ranking: r̂. ``train_loss`` is L_DR (+ L2) before the epoch's steps.

    Defaults: both towers d = 200, K = 0; propensity_clip = 0.1; and TrainingConfig's:
    lr = 0.04 (``loss`` must stay ``bce``), weight_decay = 1e-6, at most 300 epochs, patience 20.
    """

    name = "dr_jl"
    Config = DRJLConfig

    def __init__(self, config: DRJLConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._propensity: torch.Tensor | None = None  # (n_items,) or (n_users, n_items) θ

    def build_module(self, data: TrainData, generator: torch.Generator) -> DRJLTowers:
        self._propensity = pair_propensity_table(data, self.config.propensity_clip, self.name).to(self.device)
        towers = (self.config.prediction, self.config.imputation)
        adjacency = None
        if any(tower.num_layers > 0 for tower in towers):
            if data.adjacency is None:
                raise ValueError(f"{self.name}: a LightGCN tower needs the normalized adjacency in its TrainData")
            adjacency = sparse_to_torch(data.adjacency, self.device)
        return DRJLTowers(
            *(
                EmbeddingTower(data.n_users, data.n_items, tower.embedding_dim, tower.num_layers, adjacency, generator)
                for tower in towers
            )
        )

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.prediction()

    def _logits(self, tower: EmbeddingTower) -> torch.Tensor:
        users, items = tower()
        return users @ items.T  # (n_users, n_items)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """The prediction model's objective: L_DR + ``weight_decay`` Σ ||E^(0)||² of its tower,
        the imputation held fixed."""
        with torch.no_grad():
            imputed = torch.sigmoid(self._logits(self.module.imputation))  # (n_users, n_items) r̃
        penalty = l2_penalty(self.module.prediction.base_embeddings())
        logits = self._logits(self.module.prediction)
        return doubly_robust_bce(logits, targets, imputed, self._propensity) + self.config.weight_decay * penalty

    def imputation_objective(self, targets: torch.Tensor) -> torch.Tensor:
        """The imputation model's objective: ``losses.imputation_loss`` + ``weight_decay``
        Σ ||E^(0)||² of its tower, the prediction held fixed."""
        with torch.no_grad():
            logits = self._logits(self.module.prediction)
        imputed = torch.sigmoid(self._logits(self.module.imputation))
        penalty = l2_penalty(self.module.imputation.base_embeddings())
        return imputation_loss(logits, targets, imputed, self._propensity) + self.config.weight_decay * penalty

    def _full_batch_epochs(self, data: TrainData, optimizer: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
        """Joint learning: per epoch one Adam step of the prediction tower on ``loss``, then
        one of the imputation tower on ``imputation_objective`` against the updated
        prediction. (``optimizer``, one Adam over both towers, is not used.)"""
        run_prediction_step = super()._full_batch_epochs(
            data, torch.optim.Adam(self.module.prediction.parameters(), lr=self.config.lr)
        )
        targets = torch.as_tensor(data.interactions.toarray(), dtype=torch.float32, device=self.device)
        imputation_optimizer = torch.optim.Adam(self.module.imputation.parameters(), lr=self.config.lr)

        def run_epoch() -> torch.Tensor:
            loss = run_prediction_step()
            imputation_optimizer.zero_grad(set_to_none=True)
            self.imputation_objective(targets).backward()
            imputation_optimizer.step()
            return loss

        return run_epoch
