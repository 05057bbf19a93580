"""MF-IPS: the propensity it reads, its loss by hand on a 2 x 3 example, SNIPS, the
signs of its parts, and Rel-MF as the same loss with the popularity propensity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import bce_all_pairs
from debias_pipeline.models.mf_ips import MFIPS, click_propensity_table, pair_propensity_table
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.relmf import RelMF, ipw_bce, item_propensity

CPU = torch.device("cpu")

# Y (2 x 3) and the propensity of each click, a CSR of Y's pattern.
CLICKS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
THETA = sp.csr_matrix(np.array([[0.5, 0.0, 0.25], [0.0, 0.8, 0.0]]))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def tiny_model(propensity: np.ndarray | sp.csr_matrix | None = THETA, **params) -> MFIPS:
    """d = 1, u = [1, −1], v = [1, 0, 2]: r̂ = [[1, 0, 2], [−1, 0, −2]]."""
    block = {"name": "mf_ips", "embedding_dim": 1, "weight_decay": 0.01, **params}
    model = build_model(block, "t", seed=0, device=CPU)
    data = TrainData(sp.csr_matrix(CLICKS), build_normalized_adjacency(sp.csr_matrix(CLICKS)), propensity=propensity)
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.module.user_embedding.copy_(torch.tensor([[1.0], [-1.0]]))
        model.module.item_embedding.copy_(torch.tensor([[1.0], [0.0], [2.0]]))
    return model


def hand_loss(weights: tuple[float, float, float]) -> float:
    """(y/θ) δ1 + (1 − y/θ) δ0 over the six pairs of ``tiny_model``, clicks weighted w."""
    w00, w02, w11 = weights
    terms = [
        w00 * softplus(-1) + (1 - w00) * softplus(1),  # (0,0) click, r̂ = 1
        softplus(0),  # (0,1) no click: δ0(0)
        w02 * softplus(-2) + (1 - w02) * softplus(2),  # (0,2) click, r̂ = 2
        softplus(-1),  # (1,0) no click: δ0(−1)
        w11 * softplus(0) + (1 - w11) * softplus(0),  # (1,1) click, r̂ = 0
        softplus(-2),  # (1,2) no click: δ0(−2)
    ]
    return sum(terms) / 6 + 0.01 * (1 + 1 + 1 + 0 + 4)  # + λ Σ||E||² = 0.01 · 7


def test_loss_by_hand_with_a_propensity_per_click() -> None:
    # Weights 1/θ = 2, 4, 1.25 (the clip 0.1 does not bind):
    #   (0,0) 2 softplus(−1) − softplus(1)   = 0.626523 − 1.313262 = −0.686738
    #   (0,1) softplus(0)                    = 0.693147
    #   (0,2) 4 softplus(−2) − 3 softplus(2) = 0.507712 − 6.380784 = −5.873072
    #   (1,0) softplus(−1)                   = 0.313262
    #   (1,1) 1.25 log 2 − 0.25 log 2        = 0.693147
    #   (1,2) softplus(−2)                   = 0.126928
    # Sum −4.733326, mean −0.788888; + 0.07 = −0.718888.
    loss = float(tiny_model().loss(torch.tensor(CLICKS)))
    assert loss == pytest.approx(hand_loss((2.0, 4.0, 1.25)), rel=1e-6)
    assert loss == pytest.approx(-0.718888, abs=1e-6)


def test_self_normalized_weights_by_hand() -> None:
    # Σ 1/θ = 7.25 over n = 3 clicks: w = 3/7.25 · (2, 4, 1.25) = (0.827586, 1.655172, 0.517241).
    scale = 3 / 7.25
    loss = float(tiny_model(self_normalize=True).loss(torch.tensor(CLICKS)))
    assert loss == pytest.approx(hand_loss((2 * scale, 4 * scale, 1.25 * scale)), rel=1e-6)
    table = click_propensity_table(TrainData(sp.csr_matrix(CLICKS), propensity=THETA), 0.1, self_normalize=True)
    weights = 1 / table.numpy()[CLICKS > 0]
    np.testing.assert_allclose(weights, [0.827586, 1.655172, 0.517241], rtol=1e-5)
    assert weights.mean() == pytest.approx(1.0)


def test_a_per_item_propensity_and_the_clip() -> None:
    # θ_i = (0.05, 0.5, 0.5): the first is clipped to 0.1, so the clicks weigh 10, 2, 2.
    model = tiny_model(np.array([0.05, 0.5, 0.5]))
    assert float(model.loss(torch.tensor(CLICKS))) == pytest.approx(hand_loss((10.0, 2.0, 2.0)), rel=1e-6)


def test_without_an_estimate_it_is_relmf() -> None:
    # The fallback is Rel-MF's θ_i = (pop_i / max pop)^0.5 = (1, 1, 1) here: the plain BCE.
    clicks = torch.tensor(CLICKS)
    loss = float(tiny_model(None).loss(clicks))
    relmf = build_model({"name": "relmf", "embedding_dim": 1, "weight_decay": 0.01}, "t", seed=0, device=CPU)
    relmf.module = tiny_model(None).module
    assert loss == pytest.approx(float(relmf.loss(clicks)), rel=1e-6)
    assert loss == pytest.approx(hand_loss((1.0, 1.0, 1.0)), rel=1e-6)
    # And on a random Y, where the popularity weights differ between items.
    rng = np.random.default_rng(3)
    y = (rng.random((6, 5)) < 0.4).astype(np.float32)
    y[0] = 1.0
    table = click_propensity_table(TrainData(sp.csr_matrix(y)), 0.1, self_normalize=False)
    expected = item_propensity(torch.tensor(y), 0.1).expand(6, 5).numpy()
    np.testing.assert_allclose(table.numpy()[y > 0], expected[y > 0], rtol=1e-6)
    np.testing.assert_array_equal(table.numpy()[y == 0], 1.0)


def test_relmf_is_the_same_loss_with_its_own_propensity() -> None:
    assert issubclass(MFIPS, RelMF)
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(4, 5)))
    clicks = torch.tensor((rng.random((4, 5)) < 0.5).astype(float))
    per_item = torch.tensor([0.2, 0.5, 1.0, 0.3, 0.9], dtype=torch.float64)
    # A (n_users, n_items) table with θ_i down the clicks' columns gives the same loss.
    table = torch.where(clicks > 0, per_item.expand(4, 5), torch.ones(4, 5, dtype=torch.float64))
    assert float(ipw_bce(logits, clicks, table)) == pytest.approx(float(ipw_bce(logits, clicks, per_item)), rel=1e-12)


def test_the_parts_that_cannot_be_negative_are_not_and_the_gradient_points_the_right_way() -> None:
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(scale=3.0, size=(5, 6)), requires_grad=True)
    clicks = torch.tensor((rng.random((5, 6)) < 0.4).astype(float))
    theta = torch.tensor(rng.uniform(0.1, 1.0, size=(5, 6)))
    # Non-clicks only: the mean of δ0 = softplus(r̂) > 0. Unit propensity: the BCE, >= 0.
    assert float(ipw_bce(logits, torch.zeros_like(clicks), theta)) > 0
    unit = ipw_bce(logits, clicks, torch.ones(6, dtype=torch.float64))
    assert float(unit) > 0
    assert float(unit) == pytest.approx(float(bce_all_pairs(logits, clicks)), rel=1e-12)
    # A click's loss falls as its score rises, a non-click's rises: weights y/θ >= 1 on clicks.
    ipw_bce(logits, clicks, theta).backward()
    assert (logits.grad[clicks > 0] < 0).all()
    assert (logits.grad[clicks == 0] > 0).all()


def test_a_lightgcn_tower_and_its_checks() -> None:
    model = tiny_model(num_layers=2)
    assert model.module.num_layers == 2
    assert np.isfinite(float(model.loss(torch.tensor(CLICKS))))
    with pytest.raises(ValueError, match=r"t\.num_layers"):
        build_model({"name": "mf_ips", "num_layers": -1}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match=r"t\.loss"):
        build_model({"name": "mf_ips", "loss": "bpr"}, "t", seed=0, device=CPU)


def test_a_propensity_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="propensity must lie in"):
        tiny_model(np.array([0.5, 1.5, 0.5]))


def test_the_pair_table_needs_every_pair() -> None:
    data = TrainData(sp.csr_matrix(CLICKS), propensity=THETA)
    with pytest.raises(ValueError, match="dr_jl needs the propensity of every pair"):
        pair_propensity_table(data, 0.1, "dr_jl")
    per_item = pair_propensity_table(TrainData(sp.csr_matrix(CLICKS), propensity=np.array([0.05, 0.5, 1.0])), 0.1, "m")
    np.testing.assert_allclose(per_item.numpy(), [0.1, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        pair_propensity_table(TrainData(sp.csr_matrix(CLICKS), propensity=np.array([0.5, 0.5])), 0.1, "m")
