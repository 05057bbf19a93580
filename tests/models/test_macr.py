"""MACR: the three-branch loss, the counterfactual ranking and the choice of c, by hand.

Logits are chosen so that the sigmoids are simple fractions:
    σ(0) = 1/2,  σ(ln 3) = 3/4,  σ(−ln 3) = 1/4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import macr_loss
from debias_pipeline.models.macr import MACR, ReferenceSearch, reference_order
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")
LN3 = math.log(3.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_macr_loss_by_hand() -> None:
    # Pair A, a click: ŷ_k = 4, σ(ŷ_i) = 1/2, σ(ŷ_u) = 3/4: ŷ = 3/2, −log σ(3/2) = softplus(−3/2).
    # Pair B, no click: ŷ_k = 4, σ(ŷ_i) = 1/4, σ(ŷ_u) = 3/4: ŷ = 3/4, −log(1 − σ(3/4)) = softplus(3/4).
    # L_O = (softplus(−1.5) + softplus(0.75)) / 2 = (0.201413 + 1.136871) / 2 = 0.669142.
    # L_I = (−ln ½ − ln(1 − ¼)) / 2 = (ln 2 + ln 4/3) / 2 = ln(8/3) / 2 = 0.490415.
    # L_U = (−ln ¾ − ln(1 − ¾)) / 2 = (ln 4/3 + ln 4) / 2 = ln(16/3) / 2 = 0.836988.
    # α = ½, β = ¼: 0.669142 + 0.245207 + 0.209247 = 1.123597.
    matching = torch.tensor([4.0, 4.0], dtype=torch.float64)
    item = torch.tensor([0.0, -LN3], dtype=torch.float64)
    user = torch.tensor([LN3, LN3], dtype=torch.float64)
    clicks = torch.tensor([1.0, 0.0], dtype=torch.float64)
    expected = (softplus(-1.5) + softplus(0.75)) / 2 + 0.5 * math.log(8 / 3) / 2 + 0.25 * math.log(16 / 3) / 2
    loss = float(macr_loss(matching, item, user, clicks, 0.5, 0.25))
    assert loss == pytest.approx(expected, rel=1e-12)
    assert loss == pytest.approx(1.123597, abs=1e-6)


def test_macr_loss_over_all_pairs_broadcasts_the_modules() -> None:
    rng = np.random.default_rng(0)
    matching = torch.tensor(rng.normal(size=(3, 4)))
    item, user = torch.tensor(rng.normal(size=(1, 4))), torch.tensor(rng.normal(size=(3, 1)))
    clicks = torch.tensor((rng.random((3, 4)) < 0.5).astype(float))
    pairs = macr_loss(matching.ravel(), item.expand(3, 4).ravel(), user.expand(3, 4).ravel(), clicks.ravel(), 0.3, 0.2)
    assert float(macr_loss(matching, item, user, clicks, 0.3, 0.2)) == pytest.approx(float(pairs), rel=1e-12)


def test_macr_loss_rewards_the_right_answer() -> None:
    # Every term is a BCE, never below 0, so "loss >= 0" would pass with a sign flipped;
    # these fail then. All three branches confidently right: ≈ 0; the labels reversed: >= 20.
    logits = torch.full((2,), 20.0)
    clicks = torch.ones(2)
    assert float(macr_loss(logits, logits, logits, clicks, 1.0, 1.0)) < 1e-6
    assert float(macr_loss(logits, logits, logits, 1 - clicks, 1.0, 1.0)) > 20
    # A click: raising the matching score or the item module's logit lowers the loss.
    matching, item = torch.tensor([0.5], requires_grad=True), torch.tensor([0.2], requires_grad=True)
    macr_loss(matching, item, torch.tensor([0.1]), torch.ones(1), 0.1, 0.1).backward()
    assert float(matching.grad) < 0 and float(item.grad) < 0


def _model(c_grid: tuple[float, ...] = (0.0,), **params: object) -> tuple[MACR, TrainData]:
    data = TrainData(sp.csr_matrix(np.array([[1, 0], [1, 1]], dtype=np.float32)))
    model = build_model({"name": "macr", "embedding_dim": 1, "c_grid": list(c_grid), **params}, "t", seed=0, device=CPU)
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.module.tower.user_embedding.copy_(torch.tensor([[2.0], [1.0]]))
        model.module.tower.item_embedding.copy_(torch.tensor([[2.0], [1.0]]))
        # ŷ_i = ln 3 · v − ln 3 = [ln 3, 0] (σ 3/4, 1/2); ŷ_u = ln 3 · u − 2 ln 3 = [0, −ln 3] (σ 1/2, 1/4).
        model.module.item_module.weight.fill_(LN3)
        model.module.item_module.bias.fill_(-LN3)
        model.module.user_module.weight.fill_(LN3)
        model.module.user_module.bias.fill_(-2 * LN3)
    return model, data


def test_full_batch_loss_by_hand() -> None:
    # u = [2, 1], v = [2, 1]: ŷ_k = [[4, 2], [2, 1]]; σ(ŷ_i) = [3/4, 1/2], σ(ŷ_u) = [1/2, 1/4].
    # Fused ŷ = ŷ_k σ_i σ_u = [[3/2, 1/2], [3/8, 1/8]] against Y = [[1, 0], [1, 1]]:
    # L_O = mean(softplus(−3/2), softplus(1/2), softplus(−3/8), softplus(−1/8)).
    # L_I: item 0 (σ 3/4) clicked twice: 2 ln 4/3; item 1 (σ 1/2): ln 2 twice; mean (2 ln 4/3 + 2 ln 2) / 4.
    # L_U: user 0 (σ 1/2): ln 2 twice; user 1 (σ 1/4) clicked twice: 2 ln 4; mean (2 ln 2 + 2 ln 4) / 4.
    # α = β = 0.1; L2 λ Σ||E||² = 0.01 · (4 + 1 + 4 + 1) = 0.1.
    model, data = _model(item_weight=0.1, user_weight=0.1, weight_decay=0.01)
    loss_o = (softplus(-1.5) + softplus(0.5) + softplus(-0.375) + softplus(-0.125)) / 4
    loss_i = (2 * math.log(4 / 3) + 2 * math.log(2)) / 4
    loss_u = (2 * math.log(2) + 2 * math.log(4)) / 4
    loss = model.loss(torch.tensor(data.interactions.toarray()))
    assert loss.item() == pytest.approx(loss_o + 0.1 * loss_i + 0.1 * loss_u + 0.1, rel=1e-6)


def test_triple_loss_is_the_loss_of_its_two_pairs() -> None:
    # Triple (user 0, item 0, item 1): pairs (0, 0) clicked, (0, 1) not; the same numbers as above.
    model, _ = _model(loss="bpr", item_weight=0.1, user_weight=0.1, weight_decay=0.01)
    loss_o = softplus(-1.5) + softplus(0.5)
    loss_i = math.log(4 / 3) + math.log(2)  # item 0 clicked (σ 3/4), item 1 not (σ 1/2)
    loss_u = 2 * math.log(2)  # user 0, σ 1/2, once each way
    l2 = 4 + 4 + 1  # ||e_u||² + ||e_i||² + ||e_j||²
    loss = model.batch_loss(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(loss_o + 0.1 * loss_i + 0.1 * loss_u + 0.01 * l2, rel=1e-6)


def test_counterfactual_score_by_hand() -> None:
    # (ŷ_k − c) σ(ŷ_i) σ(ŷ_u) with c = 3: [[(4 − 3)·3/4·1/2, (2 − 3)·1/2·1/2], [(2 − 3)·3/4·1/4, (1 − 3)·1/2·1/4]].
    model, _ = _model(c_grid=(3.0,))
    model._cache_embeddings()
    expected = np.array([[3 / 8, -1 / 4], [-3 / 16, -1 / 4]])
    np.testing.assert_allclose(model.score(), expected, rtol=1e-6)
    # σ(ŷ_u) scales a user's row by a positive constant: each user's order is that of (ŷ_k − c) σ(ŷ_i).
    without_user = np.array([[1 * 3 / 4, -1 / 2], [-3 / 4, -1]])
    assert np.array_equal(np.argsort(-model.score(), axis=1), np.argsort(-without_user, axis=1))
    # c = 0 is the factual fused score ŷ_k σ_i σ_u.
    factual, _ = _model()
    factual._cache_embeddings()
    np.testing.assert_allclose(factual.score(), [[3 / 2, 1 / 2], [3 / 8, 1 / 8]], rtol=1e-6)


class _PreferItemOne:
    """A validator whose signal is user 0's score of item 1 minus that of item 0."""

    metric = "stub"

    def score(self, model: MACR) -> float:
        scores = model.score()
        return float(scores[0, 1] - scores[0, 0])


def test_the_reference_is_chosen_on_validation_and_saved() -> None:
    # Item 0 is the popular one (σ 3/4) and matches better: a large c penalizes it most.
    # User 0's gap s_1 − s_0 = (2 − c)·1/2·1/2 − (4 − c)·3/4·1/2 = (c − 8)/8 rises with c: 10 wins.
    model, data = _model()
    search = ReferenceSearch(_PreferItemOne(), (0.0, 1.0, 10.0, 5.0))
    assert search.score(model) == pytest.approx((10 - 8) / 8)
    assert model.reference == 10.0
    np.testing.assert_allclose(model.score()[0], [(4 - 10) * 3 / 8, (2 - 10) / 4], rtol=1e-6)  # left at c = 10
    restored = build_model({"name": "macr", "embedding_dim": 1, "c_grid": [0.0]}, "t", seed=3, device=CPU)
    assert restored.load_state_dict(model.state_dict(), data).reference == 10.0


def test_the_reference_nearest_zero_breaks_ties_and_serves_without_validation() -> None:
    assert reference_order((5.0, -1.0, 1.0, 0.5)) == [0.5, -1.0, 1.0, 5.0]
    model, data = _model(c_grid=(5.0, -1.0, 2.0), epochs=1)
    assert model.fit(data).reference == -1.0


def test_lightgcn_towers_train_and_restore() -> None:
    clicks = sp.csr_matrix(np.kron(np.eye(2), np.ones((4, 4))).astype(np.float32))
    data = TrainData(clicks, build_normalized_adjacency(clicks))
    for loss in ("bce", "bpr"):
        block = {"name": "macr", "embedding_dim": 4, "num_layers": 2, "loss": loss}
        model = build_model({**block, "epochs": 5}, "t", seed=0, device=CPU).fit(data)
        assert model.module.tower.num_layers == 2 and len(model.history) == 5
        restored = build_model(block, "t", seed=1, device=CPU).load_state_dict(model.state_dict(), data)
        assert np.array_equal(restored.score(), model.score())
