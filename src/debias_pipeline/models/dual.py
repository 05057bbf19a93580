"""The dual model: a preference tower and an exposure tower trained jointly on clicks."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Literal, Self

import numpy as np
import torch
from pydantic import Field
from torch import nn

from debias_pipeline.config.params import Params, require
from debias_pipeline.models.configs import TowerConfig, TrainingConfig
from debias_pipeline.models.contract import EpochRecord, TrainData, Validator
from debias_pipeline.models.losses import centered_tie_penalty, dual_bce_all_pairs, l2_penalty, sampled_bce_loss
from debias_pipeline.models.minibatch import dual_batch_loss
from debias_pipeline.models.spectra import column_spectrum, required_dimensions, spectral_penalty
from debias_pipeline.models.towers import EmbeddingTower, PopularityPrior, log_popularity
from debias_pipeline.models.trainers import FullBatchRecommender, sparse_to_torch

EigenForm = Literal["none", "f1", "f2", "power"]
ExposurePrior = Literal["none", "popularity"]
Embeddings = tuple[torch.Tensor, torch.Tensor]  # users (n_users, d), items (n_items, d)


class EigenConfig(Params):
    """The *eigen* penalty (PROTOCOL.md §4): loss += λ_r f(e^P) + λ_o f(e^O).

    e is the sorted column spectrum ``e_j = ||U[:, j]|| · ||V[:, j]||`` of a tower's
    final embeddings (see ``models.spectra``). The study used λ_r >= 0, λ_o <= 0 with
    |λ| in [1e-8, 1e-4]; its best run used f2 on the exposure tower with k = 6.

    Attributes:
        form: f: ``none`` (no penalty, the plain dual loss), ``f1`` (mean of the top k
            e_j), ``f2`` (top k minus the next k) or ``power`` (the top singular value
            by one power-iteration step from the all-ones vector; ignores k).
        k: the k of f1 and f2, 1..30; the penalized towers need embedding_dim >= k
            (f1) or >= 2k (f2).
        lambda_preference: λ_r, the weight on the preference tower (either sign).
        lambda_exposure: λ_o, the weight on the exposure tower (either sign).
    """

    form: EigenForm = "none"
    k: int = 6
    lambda_preference: float = 0.0
    lambda_exposure: float = 0.0

    def check(self) -> None:
        forms = typing.get_args(EigenForm)
        require(self.form in forms, f"form must be one of {list(forms)}, got {self.form!r}")
        require(1 <= self.k <= 30, f"k must be in 1..30, got {self.k}")
        for name in ("lambda_preference", "lambda_exposure"):
            weight = getattr(self, name)
            require(math.isfinite(weight), f"{name} must be finite, got {weight}")
            # A weight with no penalty to scale would be silently ignored: refuse it.
            require(
                self.form != "none" or weight == 0,
                f"{name} must be 0 when form is 'none' (pick f1, f2 or power to use it), got {weight}",
            )


class ExposureConfig(TowerConfig):
    """The exposure tower O and its optional prior, the identifying device of the dual model.

    The click likelihood alone cannot tell σ(r̂)·σ(ô) from σ(ô)·σ(r̂): two like towers
    may swap roles. The prior gives exposure what is known to drive it, user activity
    and item popularity (the propensities of Rel-MF and ReCRec-F), so that the low-rank
    tower (``embedding_dim``, small sizes such as 1..4 included) models only what is
    left: ``ô_ui = u_u · v_i + prior_ui``, with
    ``prior_ui = a · log p_i + b · log q_u + c`` (``towers.PopularityPrior``,
    ``towers.log_popularity``: p_i, q_u the train positives of item i and user u, + 1,
    over their maximum).

    Attributes:
        prior: ``none`` (ô is the tower's score, the study's model) or ``popularity``.
        prior_learned: train a, b and c (from the values below) with the towers, no
            L2 on them; ``false`` keeps them fixed.
        prior_item_weight: a (½: Rel-MF's θ_i = p_i^½, so prior = log θ_i θ_u).
        prior_user_weight: b.
        prior_offset: c (0: the most active user meets the most popular item with
            exposure logit 0, σ = ½, before the tower's part).
        supervision_weight: λ_s of the unbiased-sample term (0: none). On a sample where
            items were shown at random and rated (the thesis protocol's validation
            split), exposure is known, o_ui = 1, so the dual likelihood of a label l_ui
            is that of σ(r̂_ui) alone: the term ``λ_s · mean BCE(σ(r̂_ui), l_ui)`` over
            the treatment set (the rows of half of the validation users, as CausE's,
            ``training.inputs.treatment_split``) anchors the preference tower where
            the click likelihood cannot tell it from exposure. The model then
            early-stops on the other half only.
        popularity_tie_weight: λ_c of the popularity tie (0: none): ``λ_c · (1/|I|)
            Σ_i ((m_i − m̄) − s (log p_i − mean log p))²``, m_i = mean_u ô_ui the mean
            exposure logit of item i (the prior included), p_i the train popularity of
            ``towers.log_popularity`` (``losses.centered_tie_penalty``): each item's
            exposure is tied to its popularity propensity p_i^s (Rel-MF's θ_i for
            s = ½), up to one shared level, the constraint-based identification of
            exposure from popularity; users' exposure stays free.
        popularity_tie_slope: s, the exponent of the popularity propensity p_i^s.
    """

    prior: ExposurePrior = "none"
    prior_learned: bool = False
    prior_item_weight: float = 0.5
    prior_user_weight: float = 0.5
    prior_offset: float = 0.0
    supervision_weight: float = 0.0
    popularity_tie_weight: float = 0.0
    popularity_tie_slope: float = 0.5

    def check(self) -> None:
        super().check()
        for name in ("supervision_weight", "popularity_tie_weight"):
            weight = getattr(self, name)
            require(math.isfinite(weight) and weight >= 0, f"{name} must be finite and >= 0, got {weight}")
        require(math.isfinite(self.popularity_tie_slope), f"popularity_tie_slope must be finite, got {self.popularity_tie_slope}")
        require(
            self.popularity_tie_weight > 0 or self.popularity_tie_slope == 0.5,
            f"popularity_tie_slope needs popularity_tie_weight > 0, got {self.popularity_tie_slope}",
        )
        if self.prior == "none":
            # Options of a prior that is not there would be silently ignored: refuse them.
            for name in ("prior_learned", "prior_item_weight", "prior_user_weight", "prior_offset"):
                value = getattr(self, name)
                require(
                    value == type(self).model_fields[name].default,
                    f"{name} needs prior: popularity (prior is 'none'), got {value}",
                )


class DualConfig(TrainingConfig):
    """Dual-model hyperparameters: one tower config for each of P and O (O with its
    optional exposure prior), and the optional *eigen* penalty on their spectra.

    Attributes:
        preference: the preference tower P (MF at the study's d = 200 by default).
        exposure: the exposure tower O and its optional prior.
        eigen: the optional *eigen* penalty on the towers' spectra.
        weight_decay: λ of the L2 term on both towers' base embeddings; 1e-6 was chosen
            on Coat's validation split (mean validation NDCG@5 over seeds 0..4 among
            λ in {0, 1e-6, 1e-5, 1e-4}).
    """

    weight_decay: float = 1e-6
    preference: TowerConfig = Field(default_factory=TowerConfig)
    exposure: ExposureConfig = Field(default_factory=ExposureConfig)
    eigen: EigenConfig = Field(default_factory=EigenConfig)

    def check(self) -> None:
        super().check()
        eigen = self.eigen
        needed = required_dimensions(eigen.form, eigen.k)
        for name, weight in (("preference", eigen.lambda_preference), ("exposure", eigen.lambda_exposure)):
            embedding_dim = getattr(self, name).embedding_dim
            require(
                weight == 0 or embedding_dim >= needed,
                f"eigen.k = {eigen.k} with form {eigen.form!r} needs {name}.embedding_dim >= {needed}, "
                f"got {embedding_dim}",
            )


class DualTowers(nn.Module):
    """The preference tower P, the exposure tower O and O's optional prior."""

    def __init__(
        self, preference: EmbeddingTower, exposure: EmbeddingTower, prior: PopularityPrior | None = None
    ) -> None:
        super().__init__()
        self.preference = preference
        self.exposure = exposure
        # None registers nothing: without a prior the state_dict is the study model's.
        self.prior = prior


class DualModel(FullBatchRecommender):
    """Preference × exposure model of the clicks (PROTOCOL.md §4, the study's method).

    ``ξ̂_ui = σ(r̂_ui) · σ(ô_ui)``, with r̂ from the preference tower and ô from the
    exposure tower, each MF (``num_layers = 0``) or LightGCN with its own embedding
    size and layer count. Loss: mean BCE(ξ̂, Y) over all pairs + ``weight_decay`` ·
    Σ ||E^(0)||² of both towers (+ the *eigen* penalty of ``config.eigen``, see
    ``eigen_penalty``); one Adam optimizer updates both. Ranking and evaluation use
    the preference r̂ alone.

    With ``exposure.prior: popularity`` the exposure logit is
    ``ô_ui = u^O_u · v^O_i + a · log p_i + b · log q_u + c`` (``ExposureConfig``), in the
    full-batch loss, the mini-batch loss and ``exposure_scores`` alike; the tower's
    spectrum and the eigen penalty stay those of the tower's embeddings.

    Two more identifying devices add a term to either loss (``ExposureConfig``):
    ``exposure.supervision_weight`` fits σ(r̂) to the labels of an unbiased sample
    (the model then ``needs_treatment``, as CausE), and
    ``exposure.popularity_tie_weight`` ties each item's mean exposure to its
    popularity propensity.
    """

    name = "dual"
    Config = DualConfig

    def __init__(self, config: DualConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        # Set from the config: the run cuts the treatment set only for a supervised fit.
        self.needs_treatment = config.exposure.supervision_weight > 0
        self._treatment: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # users, items, labels (n,)
        self._log_item_popularity: torch.Tensor | None = None  # (n_items,) log p_i, for the popularity tie

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        self._treatment = None
        if self.needs_treatment:
            if data.treatment is None or len(data.treatment) == 0:
                raise ValueError(
                    "dual with exposure.supervision_weight > 0 fits σ(r̂) on labelled pairs of an unbiased sample "
                    "(TrainData.treatment), and this train data has none: the training run cuts them from the "
                    "validation split of a dataset with one (thesis protocol); set supervision_weight: 0 otherwise"
                )
            self._treatment = data.treatment.tensors(self.device)
        return super().fit(data, validation, on_epoch)

    def build_module(self, data: TrainData, generator: torch.Generator) -> DualTowers:
        needs_graph = self.config.preference.num_layers > 0 or self.config.exposure.num_layers > 0
        if needs_graph and data.adjacency is None:
            raise ValueError("dual: a LightGCN tower needs the normalized adjacency in its TrainData")
        adjacency = sparse_to_torch(data.adjacency, self.device) if needs_graph else None
        towers = [
            EmbeddingTower(data.n_users, data.n_items, tower.embedding_dim, tower.num_layers, adjacency, generator)
            for tower in (self.config.preference, self.config.exposure)
        ]
        if self.config.exposure.popularity_tie_weight > 0:
            self._log_item_popularity = torch.from_numpy(log_popularity(data.interactions)[1]).to(self.device)
        return DualTowers(*towers, prior=self.build_prior(data))

    def build_prior(self, data: TrainData) -> PopularityPrior | None:
        """The exposure prior of ``config.exposure`` from the train positives (None without one)."""
        exposure = self.config.exposure
        if exposure.prior == "none":
            return None
        log_activity, log_popularity_ = log_popularity(data.interactions)  # (n_users,), (n_items,)
        return PopularityPrior(
            torch.from_numpy(log_activity).to(self.device),
            torch.from_numpy(log_popularity_).to(self.device),
            exposure.prior_item_weight,
            exposure.prior_user_weight,
            exposure.prior_offset,
            exposure.prior_learned,
        )

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.preference()

    def _exposure_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """ô from the exposure tower's final embeddings, plus the prior: (n_users, n_items)."""
        logits = users @ items.T
        if self.module.prior is None:
            return logits
        return logits + self.module.prior()

    @torch.no_grad()
    def exposure_scores(self) -> torch.Tensor:
        """Exposure logits ô (the prior included), (n_users, n_items)."""
        return self._exposure_logits(*self.module.exposure())

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Click likelihood of a batch of sampled triples (``loss: bpr``): both towers
        score the same (user, positive, negative) triples."""
        loss = dual_batch_loss(
            self.module.preference,
            self.module.exposure,
            users,
            positives,
            negatives,
            self.config.weight_decay,
            exposure_prior=self.module.prior,
        )
        if self.config.eigen.form == "none" and not self._has_identification_terms():
            return loss
        # The spectrum, the tie and the supervised pairs need the full tables: one propagation per batch.
        preference, exposure = self.module.preference(), self.module.exposure()
        return loss + self.eigen_penalty(preference, exposure) + self.identification_terms(preference, exposure)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        pref_users, pref_items = self.module.preference()
        expo_users, expo_items = self.module.exposure()
        preference = pref_users @ pref_items.T  # (n_users, n_items)
        exposure = self._exposure_logits(expo_users, expo_items)  # (n_users, n_items)
        penalty = l2_penalty([*self.module.preference.base_embeddings(), *self.module.exposure.base_embeddings()])
        loss = dual_bce_all_pairs(preference, exposure, targets) + self.config.weight_decay * penalty
        loss = loss + self.identification_terms((pref_users, pref_items), (expo_users, expo_items))
        if self.config.eigen.form == "none":
            return loss
        return loss + self.eigen_penalty((pref_users, pref_items), (expo_users, expo_items))

    def _has_identification_terms(self) -> bool:
        exposure = self.config.exposure
        return exposure.supervision_weight > 0 or exposure.popularity_tie_weight > 0

    def identification_terms(self, preference: Embeddings, exposure: Embeddings) -> torch.Tensor:
        """λ_s · mean BCE(σ(r̂), l) over the treatment set + λ_c · the popularity tie
        (``ExposureConfig.supervision_weight``, ``popularity_tie_weight``).

        Args:
            preference: final preference user (n_users, d_P) and item (n_items, d_P) embeddings.
            exposure: final exposure user (n_users, d_O) and item (n_items, d_O) embeddings.

        Returns:
            A scalar tensor (0 when both weights are 0).
        """
        config = self.config.exposure
        total = torch.zeros((), device=preference[0].device)
        if config.supervision_weight > 0:
            users, items, labels = self._treatment
            logits = (preference[0][users] * preference[1][items]).sum(dim=1)  # (n_treatment,)
            total = total + config.supervision_weight * sampled_bce_loss(logits, labels)
        if config.popularity_tie_weight > 0:
            expo_users, expo_items = exposure
            # mean_u ô_ui = v_i · mean_u u_u (+ the prior's item part; its user part is one level for all items).
            item_means = expo_items @ expo_users.mean(dim=0)  # (n_items,)
            prior = self.module.prior
            if prior is not None:
                item_means = item_means + prior.item_part()
            target = config.popularity_tie_slope * self._log_item_popularity  # (n_items,)
            total = total + config.popularity_tie_weight * centered_tie_penalty(item_means, target)
        return total

    def eigen_penalty(self, preference: Embeddings, exposure: Embeddings) -> torch.Tensor:
        """λ_r f(e^P) + λ_o f(e^O), the *eigen* term of ``config.eigen``.

        The spectra are taken on the final tower embeddings (after LightGCN
        propagation), not on E^(0): the final ones are those whose inner products are
        r̂ and ô, so their spectrum is the spectrum of the score matrix the penalty is
        about; for an MF tower the two coincide. (The L2 term stays on E^(0).) A tower
        whose λ is 0 is skipped, so its size need not suit k.

        Args:
            preference: final preference user (n_users, d_P) and item (n_items, d_P) embeddings.
            exposure: final exposure user (n_users, d_O) and item (n_items, d_O) embeddings.

        Returns:
            A scalar tensor (0 when both λ are 0).
        """
        eigen = self.config.eigen
        total = torch.zeros((), device=preference[0].device)
        for weight, (users, items) in ((eigen.lambda_preference, preference), (eigen.lambda_exposure, exposure)):
            if weight != 0:
                total = total + weight * spectral_penalty(eigen.form, users, items, eigen.k)
        return total

    @torch.no_grad()
    def spectra(self) -> dict[str, np.ndarray]:
        """The sorted column spectra e_j of the fitted towers' final embeddings.

        Returns:
            ``{"preference": (d_P,), "exposure": (d_O,)}``, each descending.
        """
        self._require_fitted()
        self.module.eval()
        return {
            name: column_spectrum(*tower()).cpu().numpy()
            for name, tower in (("preference", self.module.preference), ("exposure", self.module.exposure))
        }
