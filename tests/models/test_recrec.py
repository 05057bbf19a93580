"""ReCRec: the E-step targets, the two losses and one update by hand; the two variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.recrec import ReCRec, posterior_targets
from debias_pipeline.models.registry import build_model
from tests.models.test_contract import checkerboard

CPU = torch.device("cpu")

# Y = [[1, 0], [0, 0]]: item clicks [1, 0], so the propensity θ = [1, 0].
TINY_Y = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def bce(prob: float, target: float) -> float:
    return -(target * math.log(prob) + (1 - target) * math.log(1 - prob))


def tiny_recrec(variant: str = "I", **params) -> ReCRec:
    """Variant-I ReCRec on TINY_Y: γ = [[.8, .5], [.8, .5]] (item biases), μ = [.5, .9]."""
    block = {"name": "recrec", "embedding_dim": 1, "variant": variant, "weight_decay": 0.0, "prior_weight": 1.0}
    model = build_model({**block, **params}, "t", seed=0, device=CPU)
    model.module = model.build_module(TrainData(sp.csr_matrix(TINY_Y)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for parameter in model.module.parameters():
            parameter.zero_()
        model.module.preference.item_bias.copy_(torch.tensor([logit(0.8), 0.0]))
        model.module.exposure.item_bias.copy_(torch.tensor([0.0, logit(0.9)]))
    return model


def test_posterior_targets_by_hand() -> None:
    # p = μ(1 − γ)/(1 − γμ), q = γ(1 − μ)/(1 − γμ) for non-clicks:
    #   γ = .5, μ = .5: 1 − γμ = .75, p = .25/.75 = 1/3, q = 1/3;
    #   γ = .8, μ = .5: 1 − γμ = .6,  p = .5·.2/.6 = 1/6, q = .8·.5/.6 = 2/3;
    #   γ = .2, μ = .9: 1 − γμ = .82, p = .9·.8/.82 = 36/41, q = .2·.1/.82 = 1/41.
    # The last column is a click: p = q = 1 whatever γ, μ.
    preference = torch.tensor([[0.0, logit(0.8), logit(0.2), logit(0.2)]], dtype=torch.float64)
    exposure = torch.tensor([[0.0, 0.0, logit(0.9), logit(0.9)]], dtype=torch.float64)
    clicks = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    exposed, liked = posterior_targets(preference, exposure, clicks)
    np.testing.assert_allclose(exposed.numpy(), [[1 / 3, 1 / 6, 36 / 41, 1.0]], rtol=1e-12)
    np.testing.assert_allclose(liked.numpy(), [[1 / 3, 2 / 3, 1 / 41, 1.0]], rtol=1e-12)


def test_posterior_targets_stay_exact_when_both_are_confident() -> None:
    # γ = μ → 1: p = q = (1 − γ)/(1 − γ²) = 1/(1 + γ) → ½, where the direct ratio is 0/0.
    big = torch.full((1, 1), 40.0)
    exposed, liked = posterior_targets(big, big, torch.zeros(1, 1))
    assert float(exposed) == pytest.approx(0.5, rel=1e-5) and float(liked) == pytest.approx(0.5, rel=1e-5)
    exposed, liked = posterior_targets(-big, -big, torch.zeros(1, 1))
    assert torch.isfinite(exposed).all() and torch.isfinite(liked).all()


def test_loss_by_hand() -> None:
    # γ = [[.8, .5], [.8, .5]], μ = [.5, .9] per item, θ = [1, 0], Y = [[1, 0], [0, 0]].
    # Targets: (0,0) click: p = q = 1; (1,0): p = 1/6, q = 2/3; (0,1), (1,1): 1 − γμ = .55,
    # p = .9·.5/.55 = 9/11, q = .5·.1/.55 = 1/11.
    # Exposure: BCE(μ, p) = (log 2 + log 2 + 2·bce(.9, 9/11)) / 4 = (2·0.693147 + 2·0.504856)/4 = 0.599002;
    #           MSE(μ, θ) = ((.5 − 1)² + (.9 − 0)²) / 2 = (.25 + .81)/2 = 0.53.
    # Preference: BCE(γ, q) = (bce(.8, 1) + bce(.8, 2/3) + 2 log 2)/4 = (0.223144 + 0.685241 + 1.386294)/4 = 0.573670;
    #             BCE(y, γμ) = (−log .4 − log .6 − 2 log .55)/4 = (0.916291 + 0.510826 + 1.195674)/4 = 0.655698.
    # Total 0.599002 + 0.53 + 0.573670 + 0.655698 = 2.358369 (unrounded terms).
    exposure = (2 * math.log(2) + 2 * bce(0.9, 9 / 11)) / 4 + (0.25 + 0.81) / 2
    preference = (bce(0.8, 1) + bce(0.8, 2 / 3) + 2 * math.log(2)) / 4
    click = (-math.log(0.4) - math.log(0.6) - 2 * math.log(0.55)) / 4
    loss = float(tiny_recrec().loss(torch.tensor(TINY_Y)).detach())
    assert loss == pytest.approx(exposure + preference + click, rel=1e-6)
    assert loss == pytest.approx(2.358369, abs=2e-6)


def test_one_update_by_hand() -> None:
    # Gradients of the summed loss (the same state as above), mean over the 4 pairs:
    # exposure item bias b_i (μ = σ(b_i)): Σ_u (μ − p)/4 + Σ_u 2(μ − θ) μ(1 − μ)/4, and no term
    # from BCE(y, γμ), where μ is held fixed:
    #   item 0: ((.5 − 1) + (.5 − 1/6))/4 + 2·2(.5 − 1)(.25)/4 = −1/24 − 1/8 = −1/6;
    #   item 1: 2(.9 − 9/11)/4 + 2·2(.9)(.09)/4 = 0.040909 + 0.081 = 0.121909.
    # preference item bias (γ = σ(g)): Σ_u (γ − q)/4 + click term, whose derivative is −(1 − γ)
    # for a click and γμ(1 − γ)/(1 − γμ) for a non-click:
    #   item 0: ((.8 − 1) + (.8 − 2/3))/4 + (−.2 + .8·.5·.2/.6)/4 = −1/60 − 1/60 = −1/30;
    #   item 1: 2(.5 − 1/11)/4 + 2(.45·.5/.55)/4 = 9/44 + 9/44 = 9/22.
    model = tiny_recrec()
    optimizer = torch.optim.Adam(model.module.parameters(), lr=0.1)
    model.loss(torch.tensor(TINY_Y)).backward()
    exposure_grad = model.module.exposure.item_bias.grad.numpy()
    preference_grad = model.module.preference.item_bias.grad.numpy()
    np.testing.assert_allclose(exposure_grad, [-1 / 6, 2 * (0.9 - 9 / 11) / 4 + 0.081], rtol=1e-5)
    np.testing.assert_allclose(preference_grad, [-1 / 30, 9 / 22], rtol=1e-5)
    # Adam's first step moves every parameter by lr against the sign of its gradient.
    optimizer.step()
    np.testing.assert_allclose(model.module.exposure.item_bias.detach().numpy(), [0.1, logit(0.9) - 0.1], rtol=1e-6)
    np.testing.assert_allclose(model.module.preference.item_bias.detach().numpy(), [logit(0.8) + 0.1, -0.1], rtol=1e-6)


def test_variant_f_has_a_user_item_exposure_with_l2() -> None:
    model = tiny_recrec(variant="F", weight_decay=0.5)
    with torch.no_grad():
        model.module.exposure.tower.user_embedding.copy_(torch.tensor([[1.0], [-1.0]]))
        model.module.exposure.tower.item_embedding.copy_(torch.tensor([[2.0], [0.0]]))
    exposure = model.module.exposure()  # logits [[2, logit .9], [−2, logit .9]]
    np.testing.assert_allclose(exposure.detach().numpy(), [[2.0, logit(0.9)], [-2.0, logit(0.9)]], rtol=1e-6)
    # The L2 term on the exposure embeddings: 0.5 · (1 + 1 + 4 + 0) = 3 more than without it.
    without = tiny_recrec(variant="F", weight_decay=0.0)
    without.module.load_state_dict(model.module.state_dict())
    targets = torch.tensor(TINY_Y)
    assert float((model.loss(targets) - without.loss(targets)).detach()) == pytest.approx(3.0, rel=1e-6)


def test_exposure_starts_at_the_propensity_prior() -> None:
    clicks = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float32)  # θ = [1, ½, 0]
    for variant in ("F", "I"):
        model = build_model({"name": "recrec", "embedding_dim": 2, "variant": variant}, "t", seed=0, device=CPU)
        module = model.build_module(TrainData(sp.csr_matrix(clicks)), torch.Generator().manual_seed(0))
        # θ clipped to [0.01, 0.99] where its logit is finite.
        start = torch.sigmoid(module.exposure.item_bias).detach().numpy()
        np.testing.assert_allclose(start, [0.99, 0.5, 0.01], rtol=1e-6)


def test_ranks_by_the_preference_logit() -> None:
    model = tiny_recrec()
    with torch.no_grad():
        model.module.preference.user_bias.copy_(torch.tensor([0.3, -0.2]))
        model.module.preference.global_bias.fill_(0.7)
        model.module.preference.tower.user_embedding.copy_(torch.tensor([[1.0], [2.0]]))
        model.module.preference.tower.item_embedding.copy_(torch.tensor([[0.5], [-1.0]]))
    model._cache_embeddings()
    np.testing.assert_allclose(model.score(), model.module.preference().detach().numpy(), rtol=1e-6)


def test_variant_i_learns_the_checkerboard() -> None:
    # Variant F is checked by the model contract (the registry default); variant I here,
    # for a fixed number of epochs.
    board = checkerboard()
    params = {"name": "recrec", "variant": "I", "embedding_dim": 16, "lr": 0.05, "weight_decay": 1e-3, "epochs": 30}
    scores = build_model(params, "t", seed=0, device=CPU).fit(board.data).score()
    for user in range(len(scores)):
        held_out = scores[user, board.test_likes[user]]
        other_group = scores[user, board.item_group != board.user_group[user]]
        assert held_out.min() > other_group.max()


def test_unknown_variant_and_sampled_loss_are_refused() -> None:
    with pytest.raises(ValueError, match=r"t\.variant"):
        build_model({"name": "recrec", "variant": "G"}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match=r"t\.loss"):
        build_model({"name": "recrec", "loss": "bpr"}, "t", seed=0, device=CPU)
