"""DR-JL: the doubly robust loss and the imputation loss by hand on a 2 x 3 example,
their limits (IPS, BCE), the signs of their parts, and the alternating steps."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.dr_jl import DRJL
from debias_pipeline.models.losses import (
    bce_all_pairs,
    doubly_robust_bce,
    exposure_weights,
    imputation_loss,
    l2_penalty,
)
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.relmf import ipw_bce

CPU = torch.device("cpu")

CLICKS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
LOGITS = torch.tensor([[1.0, -0.5, 2.0], [-1.0, 0.5, -2.0]])  # r̂
IMPUTED = torch.tensor([[0.5, 0.2, 0.9], [0.0, 0.6, 0.5]])  # r̃
THETA = torch.tensor([0.5, 0.25, 1.0])  # θ_i


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_exposure_weights_by_hand() -> None:
    # Clicks: 1/θ = 2, 1, 4. Non-clicks: (1 − r̃)/(1 − θ r̃):
    #   (0,1) 0.8 / (1 − 0.25 · 0.2) = 0.8 / 0.95 = 0.842105;
    #   (1,0) 1 / 1 = 1;  (1,2) 0.5 / (1 − 0.5) = 1.
    expected = [[2.0, 0.8 / 0.95, 1.0], [1.0, 4.0, 1.0]]
    np.testing.assert_allclose(exposure_weights(CLICKS, IMPUTED, THETA).numpy(), expected, rtol=1e-6)


def test_a_certain_exposure_and_a_saturated_imputation_stay_finite() -> None:
    # θ = 1 and r̃ = 1 (σ of a large logit in float32): (1 − r̃)/(1 − θ r̃) would be 0/0;
    # with θ = 1 the non-click was exposed for sure, weight 1.
    weights = exposure_weights(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([1.0, 0.5]))
    np.testing.assert_array_equal(weights.numpy(), [[1.0, 0.0]])
    logits = torch.tensor([[3.0, -3.0]])
    assert np.isfinite(float(doubly_robust_bce(logits, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([1.0, 0.5]))))


def test_doubly_robust_loss_by_hand() -> None:
    # Each term is ê + w (e − ê) = softplus(r̂) − q r̂, q = r̃ + w (y − r̃) the DR label:
    #   (0,0) y 1, w 2,    q = 0.5 + 2 · 0.5 = 1.5:     softplus(1) − 1.5        = −0.186738
    #   (0,1) y 0, w .842, q = 0.2 (1 − 0.842105) = 0.031579: softplus(−.5) + .5 q = 0.489866
    #   (0,2) y 1, w 1,    q = 0.9 + 0.1 = 1:           softplus(2) − 2          = 0.126928
    #   (1,0) y 0, w 1,    q = 0:                       softplus(−1)             = 0.313262
    #   (1,1) y 1, w 4,    q = 0.6 + 4 · 0.4 = 2.2:     softplus(.5) − 1.1       = −0.125923
    #   (1,2) y 0, w 1,    q = 0.5 (1 − 1) = 0:         softplus(−2)             = 0.126928
    # Sum 0.744323, mean 0.124054.
    q01 = 0.2 * (1 - 0.8 / 0.95)
    terms = [
        softplus(1) - 1.5,
        softplus(-0.5) + 0.5 * q01,
        softplus(2) - 2.0,
        softplus(-1),
        softplus(0.5) - 1.1,
        softplus(-2),
    ]
    loss = float(doubly_robust_bce(LOGITS, CLICKS, IMPUTED, THETA))
    assert loss == pytest.approx(sum(terms) / 6, rel=1e-6)
    assert loss == pytest.approx(0.124054, abs=1e-6)
    # The same from the paper's form ê + w (e − ê), pair (0,0): ê = ½ (softplus(−1) + softplus(1)),
    # e = softplus(−1), so ê + 2 (e − ê) = 2 softplus(−1) − ê.
    e_hat = 0.5 * (softplus(-1) + softplus(1))
    assert 2 * softplus(-1) - e_hat == pytest.approx(terms[0], rel=1e-9)


def test_imputation_loss_by_hand() -> None:
    # w (e − ê)² = w (y − r̃)² r̂²:
    #   (0,0) 2 · 0.25 · 1 = 0.5;  (0,1) 0.842105 · 0.04 · 0.25 = 0.008421;  (0,2) 1 · 0.01 · 4 = 0.04;
    #   (1,0) 1 · 0 · 1 = 0;       (1,1) 4 · 0.16 · 0.25 = 0.16;             (1,2) 1 · 0.25 · 4 = 1.
    # Sum 1.708421, mean 0.284737.
    expected = (0.5 + (0.8 / 0.95) * 0.04 * 0.25 + 0.04 + 0.0 + 0.16 + 1.0) / 6
    loss = float(imputation_loss(LOGITS, CLICKS, IMPUTED, THETA))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(0.284737, abs=1e-6)


def test_no_imputation_is_ips_and_unit_propensity_is_the_click_bce() -> None:
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(4, 5)))
    clicks = torch.tensor((rng.random((4, 5)) < 0.4).astype(float))
    theta = torch.tensor(rng.uniform(0.1, 1.0, size=5))
    imputed = torch.tensor(rng.random((4, 5)))
    ips = ipw_bce(logits, clicks, theta)
    assert float(doubly_robust_bce(logits, clicks, torch.zeros_like(imputed), theta)) == pytest.approx(
        float(ips), rel=1e-12
    )
    unit = torch.ones(5, dtype=torch.float64)
    assert float(doubly_robust_bce(logits, clicks, imputed, unit)) == pytest.approx(
        float(bce_all_pairs(logits, clicks)), rel=1e-12
    )


def test_an_exact_imputation_gives_the_relevance_loss_whatever_the_propensity() -> None:
    # A liked pair never clicked (r = 1, y = 0) and an unliked one (r = 0, y = 0), r̃ = r:
    # the terms are the BCE against r, for any θ.
    logits = torch.tensor([[0.7, -0.3]], dtype=torch.float64)
    relevance = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    for theta in (0.1, 0.5, 0.9):
        loss = doubly_robust_bce(
            logits, torch.zeros(1, 2, dtype=torch.float64), relevance, torch.tensor([theta, theta])
        )
        assert float(loss) == pytest.approx(float(bce_all_pairs(logits, relevance)), rel=1e-12)


def test_the_parts_that_cannot_be_negative_are_not_and_the_gradients_point_the_right_way() -> None:
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.normal(scale=3.0, size=(6, 7)), requires_grad=True)
    clicks = torch.tensor((rng.random((6, 7)) < 0.4).astype(float))
    imputed = torch.tensor(rng.random((6, 7)), requires_grad=True)
    theta = torch.tensor(rng.uniform(0.1, 1.0, size=7))
    weights = exposure_weights(clicks, imputed.detach(), theta)
    assert ((weights[clicks == 0] >= 0) & (weights[clicks == 0] <= 1)).all()
    # Non-clicks: a convex mix of ê and δ0, both >= 0. Unit propensity: a BCE.
    assert float(doubly_robust_bce(logits, torch.zeros_like(clicks), imputed.detach(), theta)) > 0
    assert float(doubly_robust_bce(logits, clicks, imputed.detach(), torch.ones(7, dtype=torch.float64))) > 0
    assert float(imputation_loss(logits.detach(), clicks, imputed, theta)) > 0
    # The prediction: a click's loss falls as its score rises (DR label >= 1).
    doubly_robust_bce(logits, clicks, imputed.detach(), theta).backward()
    assert (logits.grad[clicks > 0] < 0).all()
    # The imputation: r̃ rises towards a click and falls on a non-click.
    imputation_loss(logits.detach(), clicks, imputed, theta).backward()
    assert (imputed.grad[clicks > 0] < 0).all()
    assert (imputed.grad[clicks == 0] > 0).all()


def tiny_model(**params) -> tuple[DRJL, TrainData]:
    block = {
        "name": "dr_jl",
        "prediction": {"embedding_dim": 2},
        "imputation": {"embedding_dim": 2},
        "weight_decay": 0.01,
    }
    model = build_model({**block, **params}, "t", seed=0, device=CPU)
    data = TrainData(sp.csr_matrix(CLICKS.numpy()), propensity=THETA.numpy())
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for parameter in model.module.parameters():
            parameter.copy_(torch.linspace(-1.0, 1.0, parameter.numel()).reshape(parameter.shape))
    return model, data


def test_the_model_losses_are_the_functions_plus_their_own_l2() -> None:
    model, _ = tiny_model()
    towers = model.module
    users, items = towers.prediction()
    logits = users @ items.T
    users, items = towers.imputation()
    imputed = torch.sigmoid(users @ items.T)
    expected = doubly_robust_bce(logits, CLICKS, imputed, THETA) + 0.01 * l2_penalty(
        towers.prediction.base_embeddings()
    )
    assert float(model.loss(CLICKS)) == pytest.approx(float(expected), rel=1e-6)
    expected = imputation_loss(logits, CLICKS, imputed, THETA) + 0.01 * l2_penalty(towers.imputation.base_embeddings())
    assert float(model.imputation_objective(CLICKS)) == pytest.approx(float(expected), rel=1e-6)
    # The prediction's loss moves only the prediction tower, and the other way round.
    model.loss(CLICKS).backward()
    assert all(p.grad is None for p in towers.imputation.parameters())
    towers.zero_grad(set_to_none=True)
    model.imputation_objective(CLICKS).backward()
    assert all(p.grad is None for p in towers.prediction.parameters())


def test_an_epoch_steps_the_prediction_then_the_imputation_on_the_updated_prediction() -> None:
    model, data = tiny_model()
    replica = copy.deepcopy(model)
    run_epoch = model._full_batch_epochs(data, torch.optim.Adam(model.module.parameters(), lr=0.04))
    loss = run_epoch()
    # By hand: an Adam step of the prediction on the DR loss, then one of the imputation.
    prediction_adam = torch.optim.Adam(replica.module.prediction.parameters(), lr=0.04)
    imputation_adam = torch.optim.Adam(replica.module.imputation.parameters(), lr=0.04)
    expected_loss = replica.loss(CLICKS)
    expected_loss.backward()
    prediction_adam.step()
    replica.imputation_objective(CLICKS).backward()
    imputation_adam.step()
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    for ours, theirs in zip(model.module.parameters(), replica.module.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)


def test_a_per_click_propensity_is_refused_and_lightgcn_towers_run() -> None:
    model = build_model({"name": "dr_jl"}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="every pair"):
        model.fit(TrainData(sp.csr_matrix(CLICKS.numpy()), propensity=sp.csr_matrix(CLICKS.numpy() * 0.5)))
    with pytest.raises(ValueError, match=r"t\.loss"):
        build_model({"name": "dr_jl", "loss": "bpr"}, "t", seed=0, device=CPU)
    lightgcn = {"name": "dr_jl", "prediction": {"embedding_dim": 2, "num_layers": 2}, "epochs": 2}
    with pytest.raises(ValueError, match="adjacency"):
        build_model(lightgcn, "t", seed=0, device=CPU).fit(TrainData(sp.csr_matrix(CLICKS.numpy())))
    clicks = sp.csr_matrix(CLICKS.numpy())
    fitted = build_model(lightgcn, "t", seed=0, device=CPU).fit(TrainData(clicks, build_normalized_adjacency(clicks)))
    assert fitted.module.prediction.num_layers == 2 and np.isfinite(fitted.score()).all()
