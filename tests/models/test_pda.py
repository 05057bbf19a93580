"""PD / PDA: the popularity-weighted BPR loss and the two rankings, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import elu_plus_one, pda_bpr_loss
from debias_pipeline.models.pda import PDA, normalized_popularity
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")
LN2 = math.log(2.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_elu_plus_one_by_hand() -> None:
    # e^x for x <= 0: e^-ln2 = 1/2, e^0 = 1; x + 1 above: 2 -> 3.
    x = torch.tensor([-LN2, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(elu_plus_one(x), torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64))


def test_pda_bpr_loss_by_hand() -> None:
    # γ = ½. Triple 1: f_ui = 0 -> ELU' 1, m_i = 1/4 -> m^γ 1/2: 1/2; f_uj = −ln 2 -> 1/2,
    # m_j = 1/16 -> 1/4: 1/8; difference 3/8, loss softplus(−3/8) = 0.523123.
    # Triple 2: f_ui = 1 -> 2, m_i = 1/16 -> 1/4: 1/2; f_uj = 3 -> 4, m_j = 1/4 -> 1/2: 2;
    # difference −3/2, loss softplus(3/2) = 1.701413. Mean 1.112268.
    positive = torch.tensor([0.0, 1.0], dtype=torch.float64)
    negative = torch.tensor([-LN2, 3.0], dtype=torch.float64)
    m_positive = torch.tensor([1 / 4, 1 / 16], dtype=torch.float64)
    m_negative = torch.tensor([1 / 16, 1 / 4], dtype=torch.float64)
    loss = float(pda_bpr_loss(positive, negative, m_positive, m_negative, 0.5))
    assert loss == pytest.approx((softplus(-3 / 8) + softplus(3 / 2)) / 2, rel=1e-12)
    assert loss == pytest.approx(1.112268, abs=1e-6)


def test_pda_bpr_loss_rewards_the_right_order() -> None:
    # BPR cannot go below 0, so "loss >= 0" would also pass with the difference's sign
    # flipped; these fail then. Right order, far apart: ELU'(10) = 11 against e^-10.
    right = pda_bpr_loss(torch.tensor([10.0]), torch.tensor([-10.0]), torch.ones(1), torch.ones(1), 0.1)
    wrong = pda_bpr_loss(torch.tensor([-10.0]), torch.tensor([10.0]), torch.ones(1), torch.ones(1), 0.1)
    assert float(right) < 1e-4
    assert float(wrong) > 10.9  # softplus(11 − e^-10)
    # Raising f_ui lowers the loss, raising f_uj raises it.
    positive = torch.tensor([0.3], requires_grad=True)
    negative = torch.tensor([0.1], requires_grad=True)
    pda_bpr_loss(positive, negative, torch.tensor([0.2]), torch.tensor([0.4]), 0.2).backward()
    assert float(positive.grad) < 0 < float(negative.grad)


def test_popularity_pulls_the_training_score() -> None:
    # Same matching score: the more popular item wins the BPR comparison (γ > 0), not at γ = 0.
    f = torch.tensor([0.5])
    popular_first = pda_bpr_loss(f, f, torch.tensor([0.5]), torch.tensor([0.1]), 0.2)
    assert float(popular_first) < LN2
    assert float(pda_bpr_loss(f, f, torch.tensor([0.5]), torch.tensor([0.1]), 0.0)) == pytest.approx(LN2)


def test_normalized_popularity_sums_to_one() -> None:
    clicks = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(normalized_popularity(TrainData(clicks)), [2 / 3, 1 / 3, 0.0])


def _model(data: TrainData, **params: object) -> PDA:
    model = build_model({"name": "pda", "embedding_dim": 1, **params}, "t", seed=0, device=CPU)
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.module.tower.user_embedding.copy_(torch.tensor([[1.0], [0.5]]))
        model.module.tower.item_embedding.copy_(torch.tensor([[2.0], [-1.0], [3.0]]))
    return model


def test_model_batch_loss_by_hand() -> None:
    # Y: user 0 clicked items 0, 1; user 1 item 0: m = [2/3, 1/3, 0]; γ = 1, λ = 0.01.
    # u = [1, 0.5], v = [2, −1, 3].
    # (0, 1, 2): f = −1 -> e^-1 · 1/3 = 0.122626; f = 3 -> 4 · 0 = 0: softplus(−0.122626).
    # (1, 0, 1): f = 1 -> 2 · 2/3 = 4/3; f = −0.5 -> e^-½ · 1/3 = 0.202177: softplus(−1.131157).
    # L2: mean of (1 + 1 + 9, 0.25 + 4 + 1) = 8.125, times 0.01.
    data = TrainData(sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32)))
    model = _model(data, gamma=1.0, weight_decay=0.01)
    loss = model.batch_loss(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 1]))
    first = softplus(-math.exp(-1) / 3)
    second = softplus(-(4 / 3 - math.exp(-0.5) / 3))
    assert loss.item() == pytest.approx((first + second) / 2 + 0.01 * 8.125, rel=1e-6)


def test_pd_ranks_by_the_matching_score_and_pda_puts_popularity_back() -> None:
    data = TrainData(sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32)))
    f = np.array([[2.0, -1.0, 3.0], [1.0, -0.5, 1.5]])  # u v^T
    elu1 = np.where(f > 0, f + 1, np.exp(f))
    pd = _model(data, gamma=1.0)
    pd._cache_embeddings()
    np.testing.assert_allclose(pd.score(), elu1, rtol=1e-6)
    pda = _model(data, gamma=1.0, inference="pda", inference_gamma=0.5)
    pda._cache_embeddings()
    expected = elu1 * np.sqrt([2 / 3, 1 / 3, 0.0])  # m̃^γ̃ with γ̃ = ½
    np.testing.assert_allclose(pda.score(), expected, rtol=1e-6)
    np.testing.assert_allclose(pda.score_pairs(np.array([1, 0]), np.array([2, 0])), expected[[1, 0], [2, 0]], rtol=1e-6)
    # PD keeps the matching order of every user; PDA reorders user 0's items 0 and 2.
    assert np.array_equal(np.argsort(-pd.score(), axis=1), np.argsort(-f, axis=1))
    assert np.argmax(pda.score()[0]) == 0 and np.argmax(f[0]) == 2


def test_config_refusals() -> None:
    with pytest.raises(ValueError, match="gamma"):
        build_model({"name": "pda", "gamma": -0.1}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="inference_gamma"):
        build_model({"name": "pda", "inference_gamma": 0.1}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="loss"):
        build_model({"name": "pda", "loss": "bce"}, "t", seed=0, device=CPU)


def test_lightgcn_towers_train_and_restore() -> None:
    clicks = sp.csr_matrix(np.kron(np.eye(2), np.ones((4, 4))).astype(np.float32))
    data = TrainData(clicks, build_normalized_adjacency(clicks))
    model = build_model({"name": "pda", "embedding_dim": 4, "num_layers": 2, "epochs": 5}, "t", seed=0, device=CPU)
    model.fit(data)
    assert model.module.tower.num_layers == 2 and len(model.history) == 5
    restored = build_model({"name": "pda", "embedding_dim": 4, "num_layers": 2}, "t", seed=1, device=CPU)
    assert np.array_equal(restored.load_state_dict(model.state_dict(), data).score(), model.score())
