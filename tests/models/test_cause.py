"""CausE: its loss by hand on a 2 x 3 example, the signs of its parts, ranking by the
treatment embeddings, and the treatment set it needs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.cause import CausE
from debias_pipeline.models.contract import LabelledPairs, TrainData
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")

CLICKS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
# The unbiased sample: user 0 liked item 1, user 1 disliked item 2.
TREATMENT = LabelledPairs(np.array([0, 1]), np.array([1, 2]), np.array([1.0, 0.0], dtype=np.float32))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def data(**fields) -> TrainData:
    y = sp.csr_matrix(CLICKS)
    return TrainData(y, build_normalized_adjacency(y), **({"treatment": TREATMENT} | fields))


def tiny_model(**params) -> CausE:
    """d = 1, U = [1, −1], V_c = [1, 0, 2], V_t = [2, 0, 1]."""
    block = {"name": "cause", "embedding_dim": 1, "weight_decay": 0.01, "lambda_dist": 0.1, "epochs": 1, **params}
    model = build_model(block, "t", seed=0, device=CPU).fit(data())
    with torch.no_grad():
        model.module.control_tower.user_embedding.copy_(torch.tensor([[1.0], [-1.0]]))
        model.module.control_tower.item_embedding.copy_(torch.tensor([[1.0], [0.0], [2.0]]))
        model.module.treatment_item_embedding.copy_(torch.tensor([[2.0], [0.0], [1.0]]))
    model._cache_embeddings()
    return model


def test_loss_by_hand() -> None:
    # Control logits U V_cᵀ = [[1, 0, 2], [−1, 0, −2]] against Y = [[1, 0, 1], [0, 1, 0]]:
    #   softplus(−1) + softplus(0) + softplus(−2) + softplus(−1) + softplus(0) + softplus(−2)
    #   = 0.313262 + 0.693147 + 0.126928 + 0.313262 + 0.693147 + 0.126928 = 2.266674, mean 0.377779.
    # Treatment: (0,1) u_0 t_1 = 0, label 1: softplus(0) = 0.693147;
    #            (1,2) u_1 t_2 = −1, label 0: softplus(−1) = 0.313262; mean 0.503205.
    # Discrepancy Σ (t_i − c_i)² = 1 + 0 + 1 = 2, times 0.1 = 0.2.
    # L2: 0.01 (||U||² + ||V_c||² + ||V_t||²) = 0.01 (2 + 5 + 5) = 0.12.
    # Total 0.377779 + 0.503205 + 0.2 + 0.12 = 1.200984.
    control = (2 * softplus(-1) + 2 * softplus(0) + 2 * softplus(-2)) / 6
    treatment = (softplus(0) + softplus(-1)) / 2
    expected = control + treatment + 0.1 * 2 + 0.01 * 12
    loss = float(tiny_model().loss(torch.tensor(CLICKS)))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(1.200984, abs=1e-6)


def test_it_ranks_by_the_treatment_embeddings() -> None:
    model = tiny_model()
    np.testing.assert_allclose(model.score(), [[2.0, 0.0, 1.0], [-2.0, 0.0, -1.0]])  # U V_tᵀ, not U V_cᵀ


def test_the_loss_is_never_negative_and_each_part_pulls_the_right_way() -> None:
    rng = np.random.default_rng(4)
    model = tiny_model(embedding_dim=3)
    for _ in range(5):
        with torch.no_grad():
            for parameter in model.module.parameters():
                parameter.copy_(torch.tensor(rng.normal(scale=2.0, size=parameter.shape), dtype=torch.float32))
        assert float(model.loss(torch.tensor(CLICKS))) > 0
    # Without the two BCEs' pull, the discrepancy moves V_t towards V_c and back.
    model = tiny_model(weight_decay=0.0)
    model.module.zero_grad(set_to_none=True)  # the fit's last step left its gradients
    model.loss(torch.tensor(CLICKS)).backward()
    grad_t, grad_c = model.module.treatment_item_embedding.grad, model.module.control_tower.item_embedding.grad
    # Item 0 carries no treatment label: its V_t gradient is the discrepancy's, 2 λ (t − c) = 0.2.
    assert float(grad_t[0]) == pytest.approx(0.2, rel=1e-6)
    # The liked treatment pair (0, 1) pushes u_0 · t_1 up: t_1's gradient is negative (u_0 = 1).
    assert float(grad_t[1]) < 0
    # c_2: the control pairs (0, 2) (click, logit 2, u_0 = 1) and (1, 2) (no click, logit −2,
    # u_1 = −1) push it up, (σ(2) − 1 − σ(−2)) / 6 = −0.039734; the discrepancy pulls it down
    # towards t_2 = 1: −2 λ (t_2 − c_2) = 0.2. Sum 0.160266.
    sigmoid2 = 1 / (1 + math.exp(-2))
    assert float(grad_c[2]) == pytest.approx((sigmoid2 - 1 - (1 - sigmoid2)) / 6 + 0.2, rel=1e-5)


def test_without_a_treatment_set_it_refuses_to_fit() -> None:
    model = build_model({"name": "cause", "epochs": 1}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="TrainData.treatment"):
        model.fit(data(treatment=None))
    empty = LabelledPairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([], dtype=np.float32))
    with pytest.raises(ValueError, match="TrainData.treatment"):
        model.fit(data(treatment=empty))


def test_it_loads_without_the_treatment_set_and_scores_the_same() -> None:
    model = tiny_model()
    restored = build_model({"name": "cause", "embedding_dim": 1}, "t", seed=5, device=CPU)
    restored.load_state_dict(model.state_dict(), data(treatment=None))
    np.testing.assert_array_equal(restored.score(), model.score())


def test_lightgcn_propagation_and_the_checks() -> None:
    model = build_model({"name": "cause", "embedding_dim": 2, "num_layers": 2, "epochs": 3}, "t", seed=0, device=CPU)
    model.fit(data())
    users, items = model.module.treatment()
    nodes = torch.cat([model.module.control_tower.user_embedding, model.module.treatment_item_embedding])
    adjacency = torch.tensor(data().adjacency.toarray())
    layer1 = adjacency @ nodes
    mean = (nodes + layer1 + adjacency @ layer1) / 3
    torch.testing.assert_close(torch.cat([users, items]), mean)
    for bad, key in (
        ({"lambda_dist": -1.0}, "lambda_dist"),
        ({"num_layers": -1}, "num_layers"),
        ({"loss": "bpr"}, "loss"),
    ):
        with pytest.raises(ValueError, match=rf"t\.{key}"):
            build_model({"name": "cause", **bad}, "t", seed=0, device=CPU)
