"""ReCRec (Lin et al., ACM TOIS 2024): a preference model and an exposure model, each
fitted to EM posterior targets on the non-clicks (PROTOCOL.md §4)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from debias_pipeline.config.params import require
from debias_pipeline.models.configs import TrainingConfig
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import dual_bce_all_pairs, l2_penalty
from debias_pipeline.models.relmf import item_propensity
from debias_pipeline.models.towers import EmbeddingTower
from debias_pipeline.models.trainers import FullBatchRecommender

# The exposure model starts at μ = θ_i clipped to [PROPENSITY_FLOOR, 1 − PROPENSITY_FLOOR],
# where its logit is finite.
PROPENSITY_FLOOR = 0.01


class ReCRecConfig(TrainingConfig):
    """ReCRec hyperparameters.

    Attributes:
        embedding_dim: d of the preference model (and of the exposure model in "F").
        variant: "F", a user-item biased-MF exposure model; "I", one exposure logit per item.
        prior_weight: weight of the MSE pulling the exposure μ to the item propensity.
    """

    embedding_dim: int = 200
    variant: Literal["F", "I"] = "F"
    prior_weight: float = 1.0

    def check(self) -> None:
        super().check()
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.prior_weight >= 0, f"prior_weight must be >= 0, got {self.prior_weight}")
        # The E-step needs every non-click: there is no sampled-triple form.
        require(self.loss == "bce", f"loss must be 'bce' (ReCRec fits all pairs), got {self.loss!r}")


class BiasedMF(nn.Module):
    """``logit_ui = u_u · v_i + b_u + b_i + b``; embeddings N(0, 0.01²), biases 0."""

    def __init__(self, n_users: int, n_items: int, embedding_dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.tower = EmbeddingTower(n_users, n_items, embedding_dim, 0, None, generator)
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.global_bias = nn.Parameter(torch.zeros(()))

    def embeddings(self) -> list[torch.Tensor]:
        """The tables the L2 term penalizes (biases are not penalized)."""
        return list(self.tower.base_embeddings())

    def augmented(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User (n_users, d + 3) and item (n_items, d + 3) rows whose inner product is the logit.

        ``[u, b_u, 1, b] · [v, 1, b_i, 1] = u·v + b_u + b_i + b``.
        """
        users, items = self.tower()
        ones_u = torch.ones_like(self.user_bias)[:, None]  # (n_users, 1)
        ones_i = torch.ones_like(self.item_bias)[:, None]  # (n_items, 1)
        user_rows = torch.cat([users, self.user_bias[:, None], ones_u, ones_u * self.global_bias], dim=1)
        item_rows = torch.cat([items, ones_i, self.item_bias[:, None], ones_i], dim=1)
        return user_rows, item_rows

    def forward(self) -> torch.Tensor:
        """(n_users, n_items) logits."""
        users, items = self.tower()
        return users @ items.T + self.user_bias[:, None] + self.item_bias[None, :] + self.global_bias


class ItemExposure(nn.Module):
    """``μ_ui = σ(b_i)``: one exposure logit per item, the same for every user; starts at 0."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.n_users = n_users
        self.item_bias = nn.Parameter(torch.zeros(n_items))

    def embeddings(self) -> list[torch.Tensor]:
        """No embedding table: the per-item logits are held only by the propensity prior."""
        return []

    def forward(self) -> torch.Tensor:
        """(n_users, n_items) logits, constant down each column."""
        return self.item_bias.expand(self.n_users, -1)


class ReCRecModels(nn.Module):
    """The preference model γ and the exposure model μ."""

    def __init__(self, preference: BiasedMF, exposure: BiasedMF | ItemExposure) -> None:
        super().__init__()
        self.preference = preference
        self.exposure = exposure


@torch.no_grad()
def posterior_targets(
    preference: torch.Tensor, exposure: torch.Tensor, clicks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: posterior exposure p and preference q of every pair, each (n_users, n_items).

    A click means exposed and liked: p = q = 1. For a non-click, with γ = σ(preference)
    and μ = σ(exposure), P(y = 0) = 1 − γμ and
    ``p = μ(1 − γ) / (1 − γμ)``, ``q = γ(1 − μ) / (1 − γμ)``,
    evaluated in log space (log(1 − γμ) = logaddexp(log σ(−g), log σ(g) + log σ(−m)))
    so that neither is 0/0 when γ and μ both approach 1.

    Args:
        preference: (n_users, n_items) preference logits g.
        exposure: (n_users, n_items) exposure logits m.
        clicks: (n_users, n_items) Y in {0, 1}.
    """
    log_gamma, log_not_gamma = F.logsigmoid(preference), F.logsigmoid(-preference)
    log_mu, log_not_mu = F.logsigmoid(exposure), F.logsigmoid(-exposure)
    log_no_click = torch.logaddexp(log_not_gamma, log_gamma + log_not_mu)  # log(1 − γμ)
    exposed = torch.exp(log_mu + log_not_gamma - log_no_click)
    liked = torch.exp(log_gamma + log_not_mu - log_no_click)
    return torch.where(clicks > 0, 1.0, exposed), torch.where(clicks > 0, 1.0, liked)


class ReCRec(FullBatchRecommender):
    """ReCRec: preference γ and exposure μ, each fitted to its EM posterior on non-clicks.

    Following PROTOCOL.md §4's description of Lin et al. (ACM TOIS 2024). Both models
    give logits over all |U| x |I| pairs; γ = σ(g), μ = σ(m). Every epoch:

    - E-step (``posterior_targets``, no gradient), from the current γ, μ: for a
      non-click ``p = μ(1−γ)/(1−γμ)`` (exposed) and ``q = γ(1−μ)/(1−γμ)`` (liked);
      p = q = 1 for a click.
    - exposure loss = BCE(μ, p) + ``weight_decay`` Σ ||E_μ||²
      + ``prior_weight`` · MSE(μ, θ), θ_i = (pop_i / max pop)^0.5 the Rel-MF item
      propensity (unclipped: nothing divides by it);
    - preference loss = BCE(γ, q) + ``weight_decay`` Σ ||E_γ||² + BCE(y, γμ), the last
      term the click likelihood, with μ held fixed (detached) so that each loss moves
      only its own model.

    One Adam step per epoch on the sum of the two losses; the parameter sets are
    disjoint, so this is one Adam step of each model on its own loss. BCEs and the MSE
    are means over all pairs; BCE(y, γμ) is computed in log space (as the dual model's).

    Choices the description leaves open:

    - biased MF = ``u_u · v_i + b_u + b_i + b``; embeddings N(0, 0.01²), biases 0 except
      the exposure model's item biases, which start at logit θ_i (θ_i clipped to
      [0.01, 0.99]): the exposure model starts at its prior and γ ≈ ½, so the first
      E-step reads the non-clicks of popular items as exposed and disliked; the L2
      term covers the embeddings, not the biases;
    - variant "F": μ is a biased MF of the same d as γ, pulled towards θ_i on every pair;
      variant "I": μ_ui = σ(b_i), one learnable logit per item, no L2 (it has no
      embedding), the same prior;
    - ranking by the preference logit g (the inner product of ``augmented`` rows), which
      orders items as γ does.

    Defaults: d = 200, variant "F", prior_weight = 1, and TrainingConfig's: lr = 0.04
    (Adam, full batch; ``loss`` must stay ``bce``), weight_decay = 1e-6, at most 300
    epochs, patience 20, eval_every 1.
    """

    name = "recrec"
    Config = ReCRecConfig

    def build_module(self, data: TrainData, generator: torch.Generator) -> ReCRecModels:
        d = self.config.embedding_dim
        preference = BiasedMF(data.n_users, data.n_items, d, generator)
        if self.config.variant == "F":
            exposure: BiasedMF | ItemExposure = BiasedMF(data.n_users, data.n_items, d, generator)
        else:
            exposure = ItemExposure(data.n_users, data.n_items)
        # The exposure model starts at its prior, μ_ui = θ_i.
        clicks = torch.as_tensor(data.interactions.toarray(), dtype=torch.float32)  # (n_users, n_items)
        start = item_propensity(clicks).clamp(PROPENSITY_FLOOR, 1.0 - PROPENSITY_FLOOR)  # (n_items,)
        with torch.no_grad():
            exposure.item_bias.copy_(torch.logit(start))
        return ReCRecModels(preference, exposure)

    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.preference.augmented()

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        config, models = self.config, self.module
        preference = models.preference()  # (n_users, n_items) g
        exposure = models.exposure()  # (n_users, n_items) m
        exposed, liked = posterior_targets(preference, exposure, targets)
        propensity = item_propensity(targets)  # (n_items,)
        exposure_loss = (
            F.binary_cross_entropy_with_logits(exposure, exposed)
            + config.weight_decay * _l2(models.exposure.embeddings())
            + config.prior_weight * (torch.sigmoid(exposure) - propensity).pow(2).mean()
        )
        preference_loss = (
            F.binary_cross_entropy_with_logits(preference, liked)
            + config.weight_decay * _l2(models.preference.embeddings())
            + dual_bce_all_pairs(preference, exposure.detach(), targets)
        )
        return exposure_loss + preference_loss


def _l2(tables: list[torch.Tensor]) -> torch.Tensor | float:
    return l2_penalty(tables) if tables else 0.0
