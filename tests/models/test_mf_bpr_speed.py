"""MF-BPR's fast paths, ``solver: implicit_bpr`` and ``optimizer: sgd``: a step is the
SGD step on the project's BPR objective computed by hand, training lowers the loss and
recovers the checkerboard, the same seed gives the same numbers on the CPU, the state
round-trips, and the combinations they refuse are named."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model
from tests.models.test_contract import N_USERS, checkerboard

BLOCK = {
    "name": "mf",
    "loss": "bpr",
    "solver": "implicit_bpr",
    "negative_sampling": "popularity",
    "embedding_dim": 16,
    "lr": 0.2,
    "weight_decay": 1e-3,
    "epochs": 150,
    "patience": 10,
}


SGD = {
    **{k: v for k, v in BLOCK.items() if k != "solver"},
    "negative_sampling": "uniform",
    "optimizer": "sgd",
    "batch_size": 16,
}


def _model(seed: int = 0, **extra):
    return build_model({**BLOCK, **extra}, "mf.model", seed=seed, device="cpu")


def _sgd(seed: int = 0, **extra):
    return build_model({**SGD, **extra}, "mf.model", seed=seed, device="cpu")


def _worst_auc(scores: np.ndarray) -> float:
    board, aucs = checkerboard(), []
    for user in range(N_USERS):
        held_out = scores[user, board.test_likes[user]]
        other_group = scores[user, board.item_group != board.user_group[user]]
        aucs.append(float((held_out[:, None] > other_group[None, :]).mean()))
    return min(aucs)  # a random scorer: 0.5 on average


def test_one_step_is_sgd_on_the_bpr_objective_by_hand() -> None:
    # User 0 likes item 0, user 1 item 1: each of an epoch's two draws takes a positive
    # (u, u) and j as the item of a positive, 0 or 1; j = u is skipped. A seed whose
    # epoch moved user 0 alone made that one step (a second one is ruled out below).
    train = sp.csr_matrix(np.eye(2, dtype=np.float32))
    lr, weight_decay = 0.5, 0.1
    for seed in range(40):
        model = _model(seed, embedding_dim=3, lr=lr, weight_decay=weight_decay, epochs=1)
        tower = model.build_module(TrainData(train), torch.Generator().manual_seed(seed))
        u = tower.user_embedding.detach().clone()
        v = tower.item_embedding.detach().clone()
        assert (u[:, -1] == 1.0).all() and (v[:, -1] == 0.0).all()  # the bias columns
        model.fit(TrainData(train))
        after_u, after_v = model.module.user_embedding.detach(), model.module.item_embedding.detach()
        if not (torch.equal(after_u[1], u[1]) and not torch.equal(after_u[0], u[0])):
            continue
        z = torch.sigmoid(-(u[0] @ (v[0] - v[1])))  # σ(−x), x = u·(v_i − v_j)
        # d/dθ of −log σ(x) + λ(|u|² + |v_i|² + |v_j|²) is −z ∂x/∂θ + 2λθ; the user's bias 1 is fixed.
        expected_u = u[0] + lr * (z * (v[0] - v[1]) - 2 * weight_decay * u[0])
        expected_u[-1] = 1.0
        torch.testing.assert_close(after_u[0], expected_u)
        torch.testing.assert_close(after_v[0], v[0] + lr * (z * u[0] - 2 * weight_decay * v[0]))
        torch.testing.assert_close(after_v[1], v[1] + lr * (-z * u[0] - 2 * weight_decay * v[1]))
        return
    pytest.fail("no epoch moved user 0 alone")


@pytest.mark.parametrize("build", [_model, _sgd], ids=["implicit_bpr", "sgd"])
def test_trains_and_recovers_the_checkerboard(build) -> None:
    board = checkerboard()
    model = build().fit(board.data, board.validation)
    assert model.history[-1].train_loss < 0.8 * model.history[0].train_loss
    assert _worst_auc(model.score()) > 0.95


@pytest.mark.parametrize("build", [_model, _sgd], ids=["implicit_bpr", "sgd"])
def test_same_seed_same_numbers_and_the_state_round_trips(build) -> None:
    board = checkerboard()
    first, second = build().fit(board.data, board.validation), build().fit(board.data, board.validation)
    np.testing.assert_array_equal(first.score(), second.score())
    assert [r.train_loss for r in first.history] == [r.train_loss for r in second.history]
    other = build(seed=1).fit(board.data, board.validation)
    assert not np.array_equal(first.score(), other.score())
    restored = build().load_state_dict(first.state_dict(), board.data)
    np.testing.assert_array_equal(restored.score(), first.score())


def test_an_sgd_step_sums_the_triples_steps_by_hand() -> None:
    lr, decay = 0.5, 0.1
    model = _sgd(embedding_dim=3, lr=lr, weight_decay=decay)
    model.module = model.build_module(
        TrainData(sp.csr_matrix(np.eye(4, dtype=np.float32))), torch.Generator().manual_seed(0)
    )
    u, v = model.module.user_embedding.detach().clone(), model.module.item_embedding.detach().clone()
    # User 0 twice, item 3 the negative of both triples: their steps add up.
    loss = model.row_stepper()(torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([3, 3]))
    x = torch.stack([u[0] @ (v[1] - v[3]), u[0] @ (v[2] - v[3])])
    z = torch.sigmoid(-x)
    penalty = (2 * u[0].square().sum() + v[1].square().sum() + v[2].square().sum() + 2 * v[3].square().sum()) / 2
    assert loss.item() == pytest.approx((torch.log1p(torch.exp(-x)).mean() + decay * penalty).item(), rel=1e-6)
    expected_u0 = u[0] + lr * (z[0] * (v[1] - v[3]) - 2 * decay * u[0]) + lr * (z[1] * (v[2] - v[3]) - 2 * decay * u[0])
    expected_v3 = v[3] + 2 * lr * (-2 * decay * v[3]) - lr * (z[0] + z[1]) * u[0]
    after_u, after_v = model.module.user_embedding.detach(), model.module.item_embedding.detach()
    torch.testing.assert_close(after_u[0], expected_u0)
    torch.testing.assert_close(after_v[1], v[1] + lr * (z[0] * u[0] - 2 * decay * v[1]))
    torch.testing.assert_close(after_v[3], expected_v3)
    assert torch.equal(after_u[1:], u[1:]) and torch.equal(after_v[0], v[0])


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"name": "mf", "solver": "implicit_bpr"}, "solver 'implicit_bpr' needs loss bpr"),
        ({"name": "mf", "loss": "bpr", "solver": "implicit_bpr"}, "negative_sampling 'uniform'"),
        (
            {
                "name": "mf",
                "loss": "bpr",
                "solver": "implicit_bpr",
                "negative_sampling": "popularity",
                "optimizer": "sparse_adam",
            },
            "optimizer 'sparse_adam'",
        ),
        (
            {
                "name": "mf",
                "loss": "bpr",
                "solver": "implicit_bpr",
                "negative_sampling": "popularity",
                "embedding_dim": 1,
            },
            "embedding_dim 1",
        ),
        ({"name": "mf", "loss": "bpr", "solver": "als"}, r"mf\.model\.solver"),
        (
            {
                "name": "mf",
                "loss": "bpr",
                "solver": "implicit_bpr",
                "negative_sampling": "popularity",
                "num_threads": -1,
            },
            "num_threads must be >= 0",
        ),
        ({"name": "mf", "loss": "enhanced_bpr", "optimizer": "sgd"}, "optimizer 'sgd' needs loss bpr,"),
        ({"name": "lightgcn", "loss": "bpr", "optimizer": "sgd", "num_layers": 2}, "optimizer 'sgd' is for MF"),
    ],
)
def test_refused_combinations_are_named(block: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(block, "mf.model", seed=0, device="cpu")


def test_lightgcn_is_refused_at_fit() -> None:
    model = build_model({**BLOCK, "name": "lightgcn", "num_layers": 1}, "lightgcn.model", seed=0, device="cpu")
    with pytest.raises(ValueError, match="solver 'implicit_bpr' runs MF"):
        model.fit(checkerboard().data)
