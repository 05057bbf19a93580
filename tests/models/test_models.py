"""Model-specific checks: LightGCN propagation and its backward, the dual model's
loss and ranking, MF as a 0-layer tower, and the early-stopping loop.

Expected values are worked out by hand on graphs small enough to do so.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.configs import TowerConfig
from debias_pipeline.models.contract import TrainData, ValidationSet
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.lightgcn import LightGCN
from debias_pipeline.models.mf import MF
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.towers import EmbeddingTower, _SymmetricSpMM, propagate

CPU = torch.device("cpu")
R2 = math.sqrt(2.0)

# The 2 x 2 bipartite graph R = [[1, 1], [0, 1]]: edges u0-i0, u0-i1, u1-i1.
# Degrees u0 = 2, u1 = 1, i0 = 1, i1 = 2, so Â[u, i] = 1 / sqrt(d_u d_i):
# Â[u0, i0] = 1/√2, Â[u0, i1] = 1/2, Â[u1, i1] = 1/√2. Node order: u0, u1, i0, i1.
TINY_R = np.array([[1.0, 1.0], [0.0, 1.0]], dtype=np.float32)
TINY_A_HAT = np.array(
    [
        [0.0, 0.0, 1 / R2, 0.5],
        [0.0, 0.0, 0.0, 1 / R2],
        [1 / R2, 0.0, 0.0, 0.0],
        [0.5, 1 / R2, 0.0, 0.0],
    ]
)
# E^(0) = one-hot of u0 in column 0 and of i1 in column 1.
TINY_E = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
# Column 0: ÂE = [0, 0, 1/√2, 1/2], Â²E = [3/4, 1/(2√2), 0, 0].
# Column 1: ÂE = [1/2, 1/√2, 0, 0], Â²E = [0, 0, 1/(2√2), 3/4].
TINY_MEAN_K1 = np.array([[1 / 2, 1 / 4], [0.0, 1 / (2 * R2)], [1 / (2 * R2), 0.0], [1 / 4, 1 / 2]])
TINY_MEAN_K2 = np.array(
    [[7 / 12, 1 / 6], [1 / (6 * R2), 1 / (3 * R2)], [1 / (3 * R2), 1 / (6 * R2)], [1 / 6, 7 / 12]]
)


def sparse64(dense: np.ndarray) -> torch.Tensor:
    """A float64 sparse CSR tensor (gradcheck needs double precision)."""
    csr = sp.csr_matrix(dense)
    return torch.sparse_csr_tensor(
        torch.as_tensor(csr.indptr, dtype=torch.int64),
        torch.as_tensor(csr.indices, dtype=torch.int64),
        torch.as_tensor(csr.data, dtype=torch.float64),
        size=csr.shape,
    )


def tiny_data() -> TrainData:
    return TrainData(sp.csr_matrix(TINY_R), sp.csr_matrix(TINY_A_HAT.astype(np.float32)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def prepared(model, data: TrainData, **embeddings: list[list[float]]):
    """``model`` with its module built on ``data`` and the given embedding tables set."""
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for path, values in embeddings.items():
            target = model.module
            for part in path.split("__"):
                target = getattr(target, part)
            target.copy_(torch.tensor(values, dtype=torch.float32))
    return model


# ---- LightGCN propagation ------------------------------------------------------------


@pytest.mark.parametrize(("num_layers", "expected"), [(0, TINY_E), (1, TINY_MEAN_K1), (2, TINY_MEAN_K2)])
def test_propagate_is_the_mean_of_the_layers(num_layers: int, expected: np.ndarray) -> None:
    result = propagate(sparse64(TINY_A_HAT), torch.tensor(TINY_E), num_layers)
    np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-12)


def test_propagate_matches_dense_powers_on_a_random_graph() -> None:
    rng = np.random.default_rng(0)
    r = (rng.random((5, 7)) < 0.4).astype(float)
    adjacency = np.block([[np.zeros((5, 5)), r], [r.T, np.zeros((7, 7))]])
    degree = adjacency.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0)
    a_hat = inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    e0 = rng.normal(size=(12, 3))
    expected = (e0 + a_hat @ e0 + a_hat @ a_hat @ e0 + a_hat @ a_hat @ a_hat @ e0) / 4
    result = propagate(sparse64(a_hat), torch.tensor(e0), 3)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_symmetric_spmm_backward_passes_gradcheck() -> None:
    adjacency = sparse64(TINY_A_HAT)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: _SymmetricSpMM.apply(adjacency, e), (x,))
    assert torch.autograd.gradcheck(lambda e: propagate(adjacency, e, 3), (x,))


def test_propagate_gradient_equals_dense_autograd() -> None:
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(4, 2, dtype=torch.float64, generator=generator)  # an arbitrary linear read-out
    sparse_e = torch.tensor(TINY_E, requires_grad=True)
    (propagate(sparse64(TINY_A_HAT), sparse_e, 2) * weights).sum().backward()

    dense = torch.tensor(TINY_A_HAT)
    dense_e = torch.tensor(TINY_E, requires_grad=True)
    ((dense_e + dense @ dense_e + dense @ dense @ dense_e) / 3 * weights).sum().backward()
    torch.testing.assert_close(sparse_e.grad, dense_e.grad, rtol=0, atol=1e-12)


def test_lightgcn_tower_splits_users_and_items() -> None:
    model = prepared(
        LightGCN(LightGCN.Config(embedding_dim=2, num_layers=2), seed=0, device=CPU),
        tiny_data(),
        user_embedding=[[1.0, 0.0], [0.0, 0.0]],
        item_embedding=[[0.0, 0.0], [0.0, 1.0]],
    )
    users, items = model.preference_embeddings()
    np.testing.assert_allclose(users.detach().numpy(), TINY_MEAN_K2[:2], atol=1e-6)
    np.testing.assert_allclose(items.detach().numpy(), TINY_MEAN_K2[2:], atol=1e-6)


def test_lightgcn_loss_by_hand() -> None:
    # K = 1: final users u0 = [1/2, 1/4], u1 = [0, 1/(2√2)]; items i0 = [1/(2√2), 0],
    # i1 = [1/4, 1/2]; r̂ = [[1/(4√2), 1/4], [0, 1/(4√2)]]; Y = R = [[1, 1], [0, 1]].
    # The L2 term is on E^(0) only: ||E^(0)||² = 2.
    decay = 0.01
    model = prepared(
        LightGCN(LightGCN.Config(embedding_dim=2, num_layers=1, weight_decay=decay), seed=0, device=CPU),
        tiny_data(),
        user_embedding=[[1.0, 0.0], [0.0, 0.0]],
        item_embedding=[[0.0, 0.0], [0.0, 1.0]],
    )
    r = 1 / (4 * R2)
    bce = -(math.log(sigmoid(r)) + math.log(sigmoid(0.25)) + math.log(1 - sigmoid(0.0)) + math.log(sigmoid(r))) / 4
    loss = model.loss(torch.tensor(TINY_R))
    assert loss.item() == pytest.approx(bce + decay * 2.0, rel=1e-6)


def test_graph_models_need_the_adjacency() -> None:
    no_graph = TrainData(sp.csr_matrix(TINY_R))
    with pytest.raises(ValueError, match="adjacency"):
        LightGCN(LightGCN.Config(embedding_dim=2), seed=0, device=CPU).fit(no_graph)
    dual_config = DualModel.Config(preference=TowerConfig(embedding_dim=2, num_layers=1))
    with pytest.raises(ValueError, match="adjacency"):
        DualModel(dual_config, seed=0, device=CPU).fit(no_graph)


# ---- MF = a tower with 0 layers ------------------------------------------------------------


def test_zero_layer_tower_returns_its_base_embeddings() -> None:
    tower = EmbeddingTower(3, 4, 5, 0, None, torch.Generator().manual_seed(0))
    users, items = tower()
    assert users is tower.user_embedding and items is tower.item_embedding
    assert users.shape == (3, 5) and items.shape == (4, 5)


def test_mf_equals_lightgcn_with_zero_layers() -> None:
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((10, 8)) < 0.3).astype(np.float32))
    common = {"embedding_dim": 4, "epochs": 5, "lr": 0.05}
    mf = build_model({"name": "mf", **common}, "t", seed=3, device=CPU).fit(TrainData(train))
    lightgcn = build_model({"name": "lightgcn", "num_layers": 0, **common}, "t", seed=3, device=CPU).fit(
        TrainData(train)
    )
    assert np.array_equal(mf.score(), lightgcn.score())


def test_mf_loss_by_hand() -> None:
    # One user, two items: r̂ = [1·2, 1·(-1)] = [2, -1], Y = [1, 0], ||E||² = 1 + 4 + 1.
    decay = 0.01
    model = prepared(
        MF(MF.Config(embedding_dim=1, weight_decay=decay), seed=0, device=CPU),
        TrainData(sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32))),
        user_embedding=[[1.0]],
        item_embedding=[[2.0], [-1.0]],
    )
    expected = -(math.log(sigmoid(2.0)) + math.log(1 - sigmoid(-1.0))) / 2 + decay * 6.0
    assert model.loss(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(expected, rel=1e-6)


# ---- The dual model ----------------------------------------------------------------


def dual_params(**overrides: object) -> dict[str, object]:
    return {
        "name": "dual",
        "preference": {"embedding_dim": 4},
        "exposure": {"embedding_dim": 3},
        "epochs": 20,
        "lr": 0.05,
        **overrides,
    }


def test_dual_loss_by_hand() -> None:
    # r̂ = [1·2, 1·(-1)] = [2, -1], ô = [1·0, 1·1] = [0, 1], Y = [1, 0]:
    # ξ̂ = [σ(2)σ(0), σ(-1)σ(1)], loss = -(log ξ̂_1 + log(1 - ξ̂_2)) / 2 + λ · 8.
    decay = 0.01
    model = prepared(
        build_model(
            dual_params(preference={"embedding_dim": 1}, exposure={"embedding_dim": 1}, weight_decay=decay),
            "t",
            seed=0,
            device=CPU,
        ),
        TrainData(sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32))),
        preference__user_embedding=[[1.0]],
        preference__item_embedding=[[2.0], [-1.0]],
        exposure__user_embedding=[[1.0]],
        exposure__item_embedding=[[0.0], [1.0]],
    )
    click_liked = sigmoid(2.0) * sigmoid(0.0)
    click_other = sigmoid(-1.0) * sigmoid(1.0)
    expected = -(math.log(click_liked) + math.log(1 - click_other)) / 2 + decay * (1 + 4 + 1 + 1 + 0 + 1)
    assert model.loss(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(expected, rel=1e-6)


def _confident_loss_and_gradient(logit: float) -> tuple[float, float]:
    """Loss and d loss / d r̂ of a 1 x 1 dual model with r̂ = ô = ``logit`` on a non-click."""
    non_click = np.array([[0.0]], dtype=np.float32)
    model = prepared(
        build_model(
            dual_params(preference={"embedding_dim": 1}, exposure={"embedding_dim": 1}, weight_decay=0.0),
            "t",
            seed=0,
            device=CPU,
        ),
        TrainData(sp.csr_matrix(non_click)),
        preference__user_embedding=[[1.0]],
        preference__item_embedding=[[logit]],
        exposure__user_embedding=[[1.0]],
        exposure__item_embedding=[[logit]],
    )
    loss = model.loss(torch.tensor(non_click))
    loss.backward()
    # r̂ = u · v with u = 1, so d loss / d v = d loss / d r̂.
    return loss.item(), model.module.preference.item_embedding.grad.item()


def test_dual_loss_of_a_confident_wrong_click() -> None:
    # r̂ = ô = 20, Y = 0: loss = -log(1 - σ(20)²) = -log(σ(-20)(1 + σ(20))) ≈ 20 - log 2;
    # d loss / d r̂ = σ(20)²σ(-20) / (1 - σ(20)²) = σ(20)² / (1 + σ(20)) ≈ 1/2.
    loss, gradient = _confident_loss_and_gradient(20.0)
    s = sigmoid(20.0)
    assert loss == pytest.approx(-math.log(sigmoid(-20.0) * (1 + s)), rel=1e-5)
    assert gradient == pytest.approx(s * s / (1 + s), rel=1e-4)


@pytest.mark.parametrize("logit", [30.0, 60.0])
def test_dual_loss_stays_exact_for_very_confident_wrong_clicks(logit: float) -> None:
    # Same formulas as above; here log ξ̂ ≈ -2e^-logit (-1.9e-13 at 30): any clamp of
    # log ξ̂ near 0 would cap the loss (at 27.63 for -1e-12) and zero this gradient.
    # loss ≈ logit - log 2, gradient ≈ 1/2.
    loss, gradient = _confident_loss_and_gradient(logit)
    assert loss == pytest.approx(logit - math.log(2.0), rel=1e-4)
    assert gradient == pytest.approx(0.5, rel=1e-4)


def test_dual_ranks_by_preference_alone() -> None:
    rng = np.random.default_rng(0)
    data = TrainData(sp.csr_matrix((rng.random((12, 9)) < 0.3).astype(np.float32)))
    model = build_model(dual_params(), "t", seed=0, device=CPU).fit(data)
    scores = model.score()

    with torch.no_grad():
        # Keep the products, not the tower outputs: a 0-layer tower returns its live parameters.
        pref_users, pref_items = model.module.preference()
        expo_users, expo_items = model.module.exposure()
        preference = pref_users @ pref_items.T  # (n_users, n_items) r̂
        exposure = expo_users @ expo_items.T  # (n_users, n_items) ô
    np.testing.assert_allclose(scores, preference.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(scores, exposure.numpy(), atol=1e-3)

    # Perturbing the exposure tower changes the click model but not the preference.
    with torch.no_grad():
        for parameter in model.module.exposure.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    users, items = model.preference_embeddings()
    np.testing.assert_array_equal((users @ items.T).detach().numpy(), preference.numpy())
    np.testing.assert_array_equal(model.score(), scores)
    assert not torch.equal(model.exposure_scores(), exposure)

    # Control: the same perturbation of the preference tower does move the preference.
    with torch.no_grad():
        for parameter in model.module.preference.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    users, items = model.preference_embeddings()
    assert not np.allclose((users @ items.T).detach().numpy(), scores, atol=1e-3)


def test_dual_validates_tower_blocks_by_name() -> None:
    with pytest.raises(ValueError, match=r"dual\.model\.exposure\.embeding_dim"):
        build_model(dual_params(exposure={"embeding_dim": 3}), "dual.model", seed=0, device=CPU)
    with pytest.raises(ValueError, match=r"dual\.model\.preference.*embedding_dim must be >= 1"):
        build_model(dual_params(preference={"embedding_dim": 0}), "dual.model", seed=0, device=CPU)


def test_dual_towers_get_their_own_sizes() -> None:
    model = build_model(
        dual_params(preference={"embedding_dim": 4, "num_layers": 2}, exposure={"embedding_dim": 3, "num_layers": 0}),
        "t",
        seed=0,
        device=CPU,
    ).fit(tiny_data())
    weights = model.state_dict()["weights"]
    assert weights["preference.user_embedding"].shape == (2, 4)
    assert weights["exposure.item_embedding"].shape == (2, 3)
    assert model.module.preference.num_layers == 2 and model.module.exposure.num_layers == 0


# ---- Early stopping ------------------------------------------------------------------


def noisy_problem() -> tuple[TrainData, ValidationSet]:
    """Random clicks and random validation labels, so that validation NDCG wanders."""
    rng = np.random.default_rng(3)
    train = sp.csr_matrix((rng.random((20, 16)) < 0.25).astype(np.float32))
    users = np.repeat(np.arange(20), 6)
    items = np.tile(np.arange(6), 20) + 10
    labels = (rng.random(120) < 0.3).astype(float)
    return TrainData(train), ValidationSet(users, items, labels, k=3)


def test_early_stopping_restores_the_best_epoch() -> None:
    patience, eval_every, epochs = 3, 2, 200
    data, validation = noisy_problem()
    assert validation.metric == "ndcg_at_3"  # what early stopping maximises
    model = build_model(
        {
            "name": "mf",
            "embedding_dim": 8,
            "epochs": epochs,
            "patience": patience,
            "eval_every": eval_every,
            "lr": 0.05,
        },
        "t",
        seed=1,
        device=CPU,
    ).fit(data, validation)

    evaluated = [(r.epoch, r.validation_score) for r in model.history if r.validation_score is not None]
    assert [epoch for epoch, _ in evaluated] == list(range(eval_every, len(model.history) + 1, eval_every))
    assert all(r.validation_score is None for r in model.history if r.epoch % eval_every)
    best_epoch, best_ndcg = max(evaluated, key=lambda pair: (pair[1], -pair[0]))
    # Restoration is only observable if the last evaluation is worse than the best.
    assert evaluated[-1][1] < best_ndcg

    assert model.best_epoch == best_epoch
    assert len(model.history) < epochs
    assert len(model.history) == best_epoch + patience * eval_every
    assert validation.score(model) == pytest.approx(best_ndcg, abs=1e-12)
    assert model.state_dict()["best_epoch"] == best_epoch


def test_without_validation_the_last_epoch_is_kept() -> None:
    data, validation = noisy_problem()
    params = {"name": "mf", "embedding_dim": 8, "epochs": 6, "lr": 0.05}
    model = build_model(params, "t", seed=1, device=CPU).fit(data)
    assert model.best_epoch == 6
    assert all(r.validation_score is None for r in model.history)
    assert [r.epoch for r in model.history] == [1, 2, 3, 4, 5, 6]


def test_fit_records_every_epoch_callback() -> None:
    data, validation = noisy_problem()
    seen = []
    model = build_model({"name": "mf", "embedding_dim": 4, "epochs": 5, "lr": 0.05}, "t", seed=0, device=CPU)
    model.fit(data, validation, on_epoch=seen.append)
    assert seen == model.history
    assert [r.epoch for r in seen] == [1, 2, 3, 4, 5]
