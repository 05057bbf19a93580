"""Rel-MF, matrix factorization with an inverse-propensity-weighted (IPW) loss (Saito,
Yaginuma, Nishino, Sakata & Nakata, "Unbiased Recommender Learning from Missing-Not-
At-Random Implicit Feedback", WSDM 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from debias_pipeline.config.params import require
from debias_pipeline.models.losses import l2_penalty
from debias_pipeline.models.mf import MF, MFConfig


class RelMFConfig(MFConfig):
    """Rel-MF hyperparameters: MF's plus the propensity floor.

    Attributes:
        propensity_clip: lower bound of the item propensity θ_i; caps the weight
            1/θ_i of a click at 1 / propensity_clip.
    """

    propensity_clip: float = 0.1

    def check(self) -> None:
        super().check()
        require(0 < self.propensity_clip <= 1, f"propensity_clip must be in (0, 1], got {self.propensity_clip}")
        # Every pair carries its propensity weight: there is no sampled-triple form.
        require(self.loss == "bce", f"loss must be 'bce' (Rel-MF weights all pairs), got {self.loss!r}")


def item_propensity(clicks: torch.Tensor, clip: float = 0.0) -> torch.Tensor:
    """θ_i = max((pop_i / max_j pop_j)^½, clip), pop_i the clicks of item i; (n_items,).

    Args:
        clicks: (n_users, n_items) Y in {0, 1}.
        clip: the lower bound of θ_i.
    """
    popularity = clicks.sum(dim=0)  # (n_items,)
    return (popularity / popularity.max().clamp(min=1.0)).sqrt().clamp(min=clip)


def ipw_bce(logits: torch.Tensor, clicks: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
    """Mean over all pairs of ``(y/θ_i) δ1 + (1 − y/θ_i) δ0``.

    δ1 = −log σ(r̂) = softplus(−r̂) and δ0 = −log(1 − σ(r̂)) = softplus(r̂): the BCE with
    the click y replaced by y/θ_i, Saito et al.'s unbiased estimate of the loss
    against relevance.

    Args:
        logits: (n_users, n_items) r̂.
        clicks: (n_users, n_items) Y in {0, 1}.
        propensity: (n_items,) θ_i, or (n_users, n_items) θ_ui (read at the clicks only).
    """
    relevance = clicks / propensity  # (n_users, n_items)
    return (relevance * F.softplus(-logits) + (1.0 - relevance) * F.softplus(logits)).mean()


class RelMF(MF):
    """Rel-MF (IPW MF): MF trained on the click loss reweighted by item propensity.

    ``r̂_ui = u_u · v_i``; loss = mean over all |U| x |I| pairs of
    ``(y_ui/θ_i) δ1(r̂_ui) + (1 − y_ui/θ_i) δ0(r̂_ui)`` + ``weight_decay`` · Σ ||E||²,
    with δ1 = −log σ(r̂), δ0 = −log(1 − σ(r̂)) and the item propensity
    ``θ_i = max((pop_i / max_j pop_j)^0.5, propensity_clip)``, pop_i the clicks of item i
    in the train matrix (Saito et al.). The weight 1 − y/θ_i of a click is
    negative whenever θ_i < 1, so the loss alone is unbounded below; the L2 term and
    early stopping bound it. The clip 0.1 caps a click's weight at 10, so that the
    rarest items cannot dominate the gradient; it binds only for items with fewer than
    1/100 of the most popular item's clicks. On Coat (most popular item: 52 clicks) a
    once-clicked item has θ = 0.139, and an item never clicked has no click to weight.

    Defaults: d = 200, propensity_clip = 0.1, and TrainingConfig's: lr = 0.04 (Adam,
    full batch; ``loss`` must stay ``bce``), weight_decay = 1e-6, at most 300 epochs,
    patience 20, eval_every 1; embeddings N(0, 0.01²). Ranking: r̂.
    """

    name = "relmf"
    Config = RelMFConfig

    def click_propensity(self, targets: torch.Tensor) -> torch.Tensor:
        """θ of every click, broadcastable to ``targets``: Rel-MF's item propensity
        (n_items,), clipped. ``mf_ips`` overrides it with any estimate."""
        return item_propensity(targets, self.config.propensity_clip)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        users, items = self.module()
        logits = users @ items.T  # (n_users, n_items)
        penalty = l2_penalty(self.module.base_embeddings())
        return ipw_bce(logits, targets, self.click_propensity(targets)) + self.config.weight_decay * penalty
