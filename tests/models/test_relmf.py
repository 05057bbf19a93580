"""Rel-MF (IPW): item propensities and the loss by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import bce_all_pairs
from debias_pipeline.models.mf import MF
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.relmf import RelMF, ipw_bce, item_propensity

CPU = torch.device("cpu")


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_propensity_by_hand() -> None:
    # Item clicks (column sums): [4, 1, 0], max 4: θ = [√(4/4), √(1/4), √(0/4)] = [1, 0.5, 0].
    clicks = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(item_propensity(clicks).numpy(), [1.0, 0.5, 0.0])
    # Clipped from below at 0.1, then at 0.6.
    np.testing.assert_allclose(item_propensity(clicks, 0.1).numpy(), [1.0, 0.5, 0.1])
    np.testing.assert_allclose(item_propensity(clicks, 0.6).numpy(), [1.0, 0.6, 0.6])


def test_propensity_without_any_click_is_the_clip() -> None:
    np.testing.assert_allclose(item_propensity(torch.zeros(2, 3), 0.1).numpy(), [0.1, 0.1, 0.1])


def test_loss_by_hand() -> None:
    # Y = [[1, 1], [0, 1]]: item clicks [1, 2], θ = [√(1/2), 1] (clip 0.1 does not bind).
    # d = 1, u = [1, 0], v = [2, 1]: r̂ = [[2, 1], [0, 0]].
    # (y/θ) δ1 + (1 − y/θ) δ0 with δ1 = softplus(−r̂), δ0 = softplus(r̂):
    #   (0,0) y = 1, w = √2: √2 softplus(−2) + (1 − √2) softplus(2) = 0.179503 − 0.881002 = −0.701499;
    #   (0,1) y = 1, w = 1:   softplus(−1) = 0.313262;
    #   (1,0) y = 0:          softplus(0) = log 2 = 0.693147;
    #   (1,1) y = 1, w = 1:   softplus(0) = 0.693147.
    # Mean 0.998057 / 4 = 0.249514; + λ Σ||E||² = 0.01 · (1 + 0 + 4 + 1) = 0.06 → 0.309514.
    w = math.sqrt(2)
    expected = (w * softplus(-2) + (1 - w) * softplus(2) + softplus(-1) + 2 * math.log(2)) / 4 + 0.06
    clicks = np.array([[1.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    model = build_model({"name": "relmf", "embedding_dim": 1, "weight_decay": 0.01}, "t", seed=0, device=CPU)
    model.module = model.build_module(TrainData(sp.csr_matrix(clicks)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.module.user_embedding.copy_(torch.tensor([[1.0], [0.0]]))
        model.module.item_embedding.copy_(torch.tensor([[2.0], [1.0]]))
    loss = float(model.loss(torch.tensor(clicks)))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(0.309514, abs=1e-6)


def test_a_rare_click_weighs_more_and_its_negative_part_is_negative() -> None:
    # One click on an item of propensity ¼ at r̂ = 0: weight 4 on δ1, −3 on δ0: (4 − 3) log 2.
    loss = ipw_bce(torch.zeros(1, 1), torch.ones(1, 1), torch.tensor([0.25]))
    assert float(loss) == pytest.approx(math.log(2))
    # At r̂ = 1: 4 softplus(−1) − 3 softplus(1) < 0: the loss alone is unbounded below.
    assert float(ipw_bce(torch.ones(1, 1), torch.ones(1, 1), torch.tensor([0.25]))) < 0


def test_unit_propensity_gives_the_mf_loss() -> None:
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(4, 5)))
    clicks = torch.tensor((rng.random((4, 5)) < 0.4).astype(float))
    ipw = ipw_bce(logits, clicks, torch.ones(5, dtype=torch.float64))
    assert float(ipw) == pytest.approx(float(bce_all_pairs(logits, clicks)), rel=1e-12)


def test_ipw_loss_is_unbiased_for_the_relevance_loss() -> None:
    # With exposure o ~ Bernoulli(θ_i) and y = o · r, E_o[IPW loss] = BCE(σ(r̂), r): the
    # expectation over the two exposure outcomes of one liked pair, θ = 0.3, r̂ = 0.7.
    theta, logit = 0.3, torch.tensor([[0.7]])
    exposed = ipw_bce(logit, torch.ones(1, 1), torch.tensor([theta]))
    hidden = ipw_bce(logit, torch.zeros(1, 1), torch.tensor([theta]))
    expectation = theta * exposed + (1 - theta) * hidden
    assert float(expectation) == pytest.approx(float(bce_all_pairs(logit, torch.ones(1, 1))), rel=1e-6)


def test_is_mf_with_another_loss() -> None:
    assert issubclass(RelMF, MF)
    with pytest.raises(ValueError, match=r"t\.propensity_clip"):
        build_model({"name": "relmf", "propensity_clip": 0.0}, "t", seed=0, device=CPU)


def test_the_sampled_triple_loss_is_refused() -> None:
    # MF's BPR path would drop the propensity weights without a word.
    with pytest.raises(ValueError, match=r"t\.loss.*Rel-MF"):
        build_model({"name": "relmf", "loss": "bpr"}, "t", seed=0, device=CPU)
