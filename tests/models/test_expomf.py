"""ExpoMF: one EM iteration and the objective by hand, the exposure density, the
monotone objective and the ranking by preference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.em import DTYPE
from debias_pipeline.models.expomf import ExpoMF, exposure_posterior
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")
SQRT_2PI = math.sqrt(2 * math.pi)

# Y = [[1, 0], [0, 1]], d = 1, λ_y = 1. N = 4 pairs, so weight_decay = 1/8 gives the prior
# precisions λ_θ = λ_β = 2 · 4 · 1/8 = 1. α1 = α2 = 1 (flat Beta prior).
TINY_Y = np.array([[1.0, 0.0], [0.0, 1.0]])


def tiny_expomf(user: list[float], item: list[float], mu: list[float]) -> ExpoMF:
    params = {"name": "expomf", "embedding_dim": 1, "lambda_y": 1.0, "weight_decay": 0.125}
    model = build_model(params, "t", seed=0, device=CPU)
    model.module = model.build_module(TrainData(sp.csr_matrix(TINY_Y)), torch.Generator().manual_seed(0))
    model.module.user_embedding.copy_(torch.tensor(user, dtype=DTYPE)[:, None])
    model.module.item_embedding.copy_(torch.tensor(item, dtype=DTYPE)[:, None])
    model.module.exposure_prior.copy_(torch.tensor(mu, dtype=DTYPE))
    return model


def gaussian(x: float) -> float:
    """N(x | 0, 1) = exp(−x²/2) / √(2π)."""
    return math.exp(-x * x / 2) / SQRT_2PI


def test_one_em_iteration_by_hand() -> None:
    # θ = [1, 1], β = [1, 0.5], μ = [0.5, 0.5]: preferences m = θβᵀ = [[1, 0.5], [1, 0.5]].
    # E-step. Clicks (0,0), (1,1): p = 1. Non-clicks, with μ = ½: p = φ / (φ + 1), φ = N(0 | m, 1):
    #   (0,1): m = 0.5, φ = e^(−1/8)/√(2π) = 0.352065, p01 = 0.260391;
    #   (1,0): m = 1,   φ = e^(−1/2)/√(2π) = 0.241971, p10 = 0.194828.
    p01 = gaussian(0.5) / (gaussian(0.5) + 1)
    p10 = gaussian(1.0) / (gaussian(1.0) + 1)
    # θ_u = Σ_i p y β_i / (Σ_i p β_i² + 1):
    #   θ0 = 1·1 / (1·1 + p01·0.25 + 1) = 1 / 2.065098 = 0.484239;
    #   θ1 = 1·0.5 / (p10·1 + 1·0.25 + 1) = 0.5 / 1.444828 = 0.346062.
    theta0 = 1 / (1 + p01 * 0.25 + 1)
    theta1 = 0.5 / (p10 + 0.25 + 1)
    # β_i = Σ_u p y θ_u / (Σ_u p θ_u² + 1), with the new θ:
    #   β0 = θ0 / (θ0² + p10 θ1² + 1) = 0.484239 / 1.257820 = 0.384983;
    #   β1 = θ1 / (p01 θ0² + θ1² + 1) = 0.346062 / 1.180817 = 0.293070.
    beta0 = theta0 / (theta0**2 + p10 * theta1**2 + 1)
    beta1 = theta1 / (p01 * theta0**2 + theta1**2 + 1)
    # μ_i = (α1 − 1 + Σ_u p_ui) / (α1 + α2 − 2 + 2) = Σ_u p_ui / 2:
    #   μ0 = (1 + p10)/2 = 0.597414, μ1 = (p01 + 1)/2 = 0.630195.
    model = tiny_expomf(user=[1.0, 1.0], item=[1.0, 0.5], mu=[0.5, 0.5])
    model.update(torch.tensor(TINY_Y, dtype=DTYPE))
    np.testing.assert_allclose(model.module.user_embedding[:, 0].numpy(), [theta0, theta1], rtol=1e-12)
    np.testing.assert_allclose(model.module.item_embedding[:, 0].numpy(), [beta0, beta1], rtol=1e-12)
    np.testing.assert_allclose(model.module.exposure_prior.numpy(), [(1 + p10) / 2, (p01 + 1) / 2], rtol=1e-12)
    np.testing.assert_allclose([theta0, theta1, beta0, beta1], [0.484239, 0.346062, 0.384983, 0.293070], atol=1e-6)


def test_objective_by_hand() -> None:
    # Same state. log p(y) with a summed out:
    #   clicks:     log μ + log N(1 | m, 1): (0,0) log ½ + log N(0|0) ; (1,1) log ½ + log N(0.5|0);
    #   non-clicks: log(μ N(0 | m, 1) + 1 − μ): (0,1) log(½ N(0.5|0) + ½) ; (1,0) log(½ N(1|0) + ½).
    # Penalty: weight_decay (Σθ² + Σβ²) = 1/8 · (1 + 1 + 1 + 0.25) = 0.40625; Beta(1, 1) adds 0.
    log_likelihood = (
        math.log(0.5) + math.log(gaussian(0.0))
        + math.log(0.5) + math.log(gaussian(0.5))
        + math.log(0.5 * gaussian(0.5) + 0.5)
        + math.log(0.5 * gaussian(1.0) + 0.5)
    )  # fmt: skip
    model = tiny_expomf(user=[1.0, 1.0], item=[1.0, 0.5], mu=[0.5, 0.5])
    loss = float(model.loss(torch.tensor(TINY_Y, dtype=DTYPE)))
    assert loss == pytest.approx(-log_likelihood / 4 + 0.40625, rel=1e-12)


def test_exposure_density_is_the_papers_gaussian() -> None:
    # μ = ½, m = 0, λ_y = 1: p = N(0|0) / (N(0|0) + 1) = 1 / (1 + √(2π)) = 0.285177. The
    # reference code's density √(λπ/2) would give π/(π + √(2π)) = 0.556.
    p = exposure_posterior(torch.zeros(1, 1, dtype=DTYPE), torch.tensor([0.5], dtype=DTYPE), torch.zeros(1, 1), 1.0)
    assert float(p) == pytest.approx(1 / (1 + SQRT_2PI), rel=1e-12)
    # λ_y = 4: N(0 | 0, ¼) = √(4/2π) = 2/√(2π), so p = 2 / (2 + √(2π)).
    p = exposure_posterior(torch.zeros(1, 1, dtype=DTYPE), torch.tensor([0.5], dtype=DTYPE), torch.zeros(1, 1), 4.0)
    assert float(p) == pytest.approx(2 / (2 + SQRT_2PI), rel=1e-12)


def test_clicks_are_exposed_and_extreme_priors_stay_finite() -> None:
    preference = torch.tensor([[0.3, 5.0, -2.0]], dtype=DTYPE)
    mu = torch.tensor([0.0, 1.0, 0.2], dtype=DTYPE)
    p = exposure_posterior(preference, mu, torch.tensor([[1.0, 0.0, 1.0]]), 1.0)
    # A click is exposed whatever μ; μ = 1 means exposed.
    np.testing.assert_array_equal(p.numpy(), [[1.0, 1.0, 1.0]])
    p = exposure_posterior(preference, mu, torch.zeros(1, 3), 1.0)
    assert p[0, 0] == 0.0 and p[0, 1] == 1.0 and 0 < p[0, 2] < 1


def test_em_never_increases_the_objective() -> None:
    rng = np.random.default_rng(0)
    data = TrainData(sp.csr_matrix((rng.random((30, 25)) < 0.2).astype(np.float32)))
    params = {"name": "expomf", "embedding_dim": 6, "weight_decay": 1e-4, "epochs": 20, "alpha1": 2.0, "alpha2": 5.0}
    losses = [r.train_loss for r in build_model(params, "t", seed=0, device=CPU).fit(data).history]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < losses[0]


def test_ranks_by_preference_not_by_expected_click() -> None:
    model = tiny_expomf(user=[1.0, 2.0], item=[3.0, 1.0], mu=[0.01, 0.99])
    model._cache_embeddings()
    # θβᵀ = [[3, 1], [6, 2]]: item 0 first although μ0 θβ0 = 0.03 < μ1 θβ1 = 0.99.
    np.testing.assert_allclose(model.score(), [[3.0, 1.0], [6.0, 2.0]])


def test_beta_prior_outside_its_mode_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"t\.alpha1"):
        build_model({"name": "expomf", "alpha1": 0.5}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match=r"t\.init_mu"):
        build_model({"name": "expomf", "init_mu": 1.0}, "t", seed=0, device=CPU)
