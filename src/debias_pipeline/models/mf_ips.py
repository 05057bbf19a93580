"""MF-IPS: matrix factorization (or LightGCN) on the click loss reweighted by any
propensity estimate (Schnabel, Swaminathan, Singh, Chandak & Joachims, "Recommendations
as Treatments: Debiasing Learning and Evaluation", ICML 2016; for implicit feedback the
estimator of Saito et al., WSDM 2020)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import require
from debias_pipeline.evaluation.propensity import (
    clip_propensities,
    inverse_propensity_weights,
    pair_propensities,
    self_normalized_weights,
)
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.relmf import RelMF, RelMFConfig, item_propensity
from debias_pipeline.models.towers import EmbeddingTower


def propensity_source(data: TrainData) -> np.ndarray | sp.csr_matrix:
    """``data.propensity``, or Rel-MF's unclipped θ_i = (pop_i / max pop)^0.5 (n_items,)
    when the train data carries no estimate."""
    if data.propensity is not None:
        return data.propensity
    clicks = torch.as_tensor(data.interactions.toarray(), dtype=torch.float32)  # (n_users, n_items)
    return item_propensity(clicks).numpy()


def click_propensity_table(data: TrainData, clip: float, self_normalize: bool) -> torch.Tensor:
    """θ'_ui at every train click, 1 elsewhere (a non-click's y/θ is 0 whatever θ),
    (n_users, n_items) float32 on the CPU.

    θ_ui comes from ``propensity_source`` (per item or per click), clipped from below
    at ``clip``; the click's weight is w = 1/θ, or with ``self_normalize`` the SNIPS
    weight ``w = n · (1/θ) / Σ_clicks 1/θ`` (``evaluation.propensity.self_normalized_weights``
    with total n, the number of clicks): the weights keep their ratios and average 1
    over the clicks. θ' = 1/w.
    """
    users, items = data.interactions.nonzero()  # (n_clicks,) each
    theta = pair_propensities(propensity_source(data), users, items, clip)  # (n_clicks,) clipped
    if self_normalize:
        weights = self_normalized_weights(theta, total=float(theta.size), clip=clip)
    else:
        weights = inverse_propensity_weights(theta, clip)
    table = np.ones(data.interactions.shape, dtype=np.float32)
    table[users, items] = 1.0 / weights
    return torch.from_numpy(table)


class MFIPSConfig(RelMFConfig):
    """MF-IPS hyperparameters: Rel-MF's plus the tower's layers and SNIPS.

    Attributes:
        num_layers: LightGCN propagation layers K of the tower (0: MF).
        self_normalize: rescale the click weights 1/θ to average 1 over the clicks
            (SNIPS: Swaminathan & Joachims, NeurIPS 2015, as Schnabel et al. also estimate).
        propensity_clip: lower bound of θ (a click weighs at most 1 / propensity_clip),
            applied to the estimate of ``TrainData.propensity`` and to the fallback alike.
    """

    num_layers: int = 0
    self_normalize: bool = False

    def check(self) -> None:
        super().check()
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")


class MFIPS(RelMF):
    """MF-IPS: the click BCE with each click weighted by the inverse of its propensity.

    Schnabel et al. (ICML 2016) estimate a loss over all pairs from the observed ones as
    ``(1/N) Σ_{o_ui = 1} δ_ui / θ_ui``; with implicit feedback y = o · r the observed
    outcome is the click, and Saito et al. (WSDM 2020) give the unbiased estimator of
    the BCE against relevance r that this model minimizes:

        L = (1/N) Σ_{u,i} [ (y_ui/θ_ui) δ1(r̂_ui) + (1 − y_ui/θ_ui) δ0(r̂_ui) ]
            + weight_decay · Σ ||E^(0)||²,

    δ1 = −log σ(r̂), δ0 = −log(1 − σ(r̂)), E[y/θ] = r when θ = P(o = 1) (``relmf.ipw_bce``;
    the loss alone is unbounded below where θ < 1, see ``RelMF``).

    Against ``relmf``, which fixes θ_i = (pop_i / max pop)^0.5, θ here is any estimate:
    ``TrainData.propensity``, per item (n_items,) or per train click (a CSR of Y's
    pattern), from the ``propensity`` block's estimator (popularity, naive Bayes,
    logistic, the dual model's exposure tower); when the train data carries none, it
    falls back to Rel-MF's popularity^0.5, so that without an estimate and with the
    defaults mf_ips trains Rel-MF's loss. θ is clipped from below at
    ``propensity_clip``; ``self_normalize`` rescales the weights (``click_propensity_table``).
    With ``num_layers`` > 0 the tower is LightGCN's (``towers.EmbeddingTower``) on the
    same loss. Ranking: r̂.

    Defaults: d = 200, K = 0, propensity_clip = 0.1, no self-normalization, and
    TrainingConfig's: lr = 0.04 (Adam, full batch; ``loss`` must stay ``bce``),
    weight_decay = 1e-6, at most 300 epochs, patience 20; embeddings N(0, 0.01²).
    """

    name = "mf_ips"
    Config = MFIPSConfig

    def __init__(self, config: MFIPSConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._propensity: torch.Tensor | None = None  # (n_users, n_items) θ', set with the module

    def num_layers(self) -> int:
        return self.config.num_layers

    def build_module(self, data: TrainData, generator: torch.Generator) -> EmbeddingTower:
        # θ' is data, not a parameter: built with the module (fit and load alike).
        self._propensity = click_propensity_table(data, self.config.propensity_clip, self.config.self_normalize).to(
            self.device
        )
        return super().build_module(data, generator)

    def click_propensity(self, targets: torch.Tensor) -> torch.Tensor:
        return self._propensity


def pair_propensity_table(data: TrainData, clip: float, model: str) -> torch.Tensor:
    """θ of every pair, clipped from below at ``clip``, float32 on the CPU: (n_items,) from
    a per-item estimate or the fallback of ``propensity_source``, (n_users, n_items) from
    a dense per-pair one.

    Raises:
        ValueError: For an estimate given at the train clicks only (a CSR matrix), which
            says nothing of the non-clicks ``model`` needs it for.
    """
    source = propensity_source(data)
    if sp.issparse(source):
        raise ValueError(
            f"{model} needs the propensity of every pair, the non-clicks included, but the train data holds it "
            "at the train clicks only (a sparse matrix): use a per-item estimate (n_items,) or none (the "
            "popularity fallback)"
        )
    theta = clip_propensities(np.asarray(source), clip, "propensity")
    expected = ((data.n_items,), data.interactions.shape)
    if theta.shape not in expected:
        raise ValueError(f"{model}: the propensity must have shape {expected[0]} or {expected[1]}, got {theta.shape}")
    return torch.from_numpy(theta.astype(np.float32))
