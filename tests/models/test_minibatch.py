"""Mini-batch training on sampled triples (``loss: bpr``): the losses by hand, the epoch
loop, the configuration, and the contract of every model in this mode, the dual model
wired through ``dual_batch_loss``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.losses import bpr_loss, dual_triple_loss
from debias_pipeline.models.minibatch import (
    _BatchPropagation,
    _rows_and_transpose,
    bpr_batch_loss,
    dual_batch_loss,
    triple_scores,
)
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.sampling import HardSampler
from debias_pipeline.models.towers import EmbeddingTower
from debias_pipeline.models.trainers import FullBatchRecommender
from tests.models.test_contract import N_ITEMS, N_USERS, TRAINING_OVERRIDES, checkerboard

CPU = torch.device("cpu")
LN3 = math.log(3.0)


# ---- losses by hand ---------------------------------------------------------------------------


def test_bpr_loss_by_hand() -> None:
    # -log σ(ln 3 - 0) = log(4/3); -log σ(0 - ln 3) = log 4; mean = log(16/3) / 2.
    positive = torch.tensor([LN3, 0.0], dtype=torch.float64, requires_grad=True)
    negative = torch.tensor([0.0, LN3], dtype=torch.float64, requires_grad=True)
    loss = bpr_loss(positive, negative)
    assert loss.item() == pytest.approx(math.log(16 / 3) / 2, rel=1e-12)
    loss.backward()
    # d/dpos = -σ(neg - pos) / 2: σ(-ln 3) = 1/4, σ(ln 3) = 3/4.
    torch.testing.assert_close(positive.grad, torch.tensor([-1 / 8, -3 / 8], dtype=torch.float64))
    torch.testing.assert_close(negative.grad, torch.tensor([1 / 8, 3 / 8], dtype=torch.float64))


def test_dual_triple_loss_by_hand() -> None:
    # Triple 1: r̂ = ô = 0 on both pairs: -log(1/4) - log(3/4) = log(16/3).
    # Triple 2: positive r̂ = ln 3, ô = 0 -> ξ̂ = 3/4 · 1/2 = 3/8; negative r̂ = 0, ô = -ln 3
    #   -> ξ̂ = 1/2 · 1/4 = 1/8: -log(3/8) - log(7/8) = log(64/21).
    zero = 0.0
    preference_positive = torch.tensor([zero, LN3], dtype=torch.float64, requires_grad=True)
    preference_negative = torch.tensor([zero, zero], dtype=torch.float64, requires_grad=True)
    exposure_positive = torch.tensor([zero, zero], dtype=torch.float64)
    exposure_negative = torch.tensor([zero, -LN3], dtype=torch.float64)
    loss = dual_triple_loss(preference_positive, preference_negative, exposure_positive, exposure_negative)
    assert loss.item() == pytest.approx((math.log(16 / 3) + math.log(64 / 21)) / 2, rel=1e-12)
    loss.backward()
    # Per triple, d/dr̂_pos = -(1 - σ(r̂_pos)) and d/dr̂_neg = σ(r̂)σ(ô)(1 - σ(r̂)) / (1 - ξ̂); mean over 2.
    # Triple 1: -1/2 and (1/4 · 1/2) / (3/4) = 1/6. Triple 2: -1/4 and (1/8 · 1/2) / (7/8) = 1/14.
    torch.testing.assert_close(preference_positive.grad, torch.tensor([-1 / 4, -1 / 8], dtype=torch.float64))
    torch.testing.assert_close(preference_negative.grad, torch.tensor([1 / 12, 1 / 28], dtype=torch.float64))


def mf_tower() -> EmbeddingTower:
    """2 users x 3 items, d = 1: u = [1, 2], v = [1, -1, 3]."""
    tower = EmbeddingTower(2, 3, 1, 0, None, torch.Generator().manual_seed(0))
    with torch.no_grad():
        tower.user_embedding.copy_(torch.tensor([[1.0], [2.0]]))
        tower.item_embedding.copy_(torch.tensor([[1.0], [-1.0], [3.0]]))
    return tower


def test_triple_scores_and_penalty_by_hand() -> None:
    # Triples (u0, i0, i1) and (u1, i2, i0): r̂_ui = [1, 6], r̂_uj = [-1, 2].
    # Penalty: (1 + 1 + 1 + 4 + 9 + 1) / 2 = 8.5.
    users, positives, negatives = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 0])
    positive, negative, penalty = triple_scores(mf_tower(), users, positives, negatives)
    assert positive.tolist() == [1.0, 6.0]
    assert negative.tolist() == [-1.0, 2.0]
    assert penalty.item() == 8.5
    # BPR: (softplus(-2) + softplus(-4)) / 2, + 0.1 · 8.5.
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-4))) / 2 + 0.85
    assert bpr_batch_loss(mf_tower(), users, positives, negatives, 0.1).item() == pytest.approx(expected, rel=1e-6)


def test_dual_batch_loss_adds_both_towers() -> None:
    users, positives, negatives = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 0])
    preference, exposure = mf_tower(), mf_tower()
    with torch.no_grad():
        exposure.item_embedding.zero_()  # ô = 0 everywhere; its penalty is (1 + 4) / 2
    loss = dual_batch_loss(preference, exposure, users, positives, negatives, 0.1)
    expected = dual_triple_loss(
        torch.tensor([1.0, 6.0]), torch.tensor([-1.0, 2.0]), torch.zeros(2), torch.zeros(2)
    ).item() + 0.1 * (8.5 + 2.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_mf_batch_loss_is_bpr_on_its_tower() -> None:
    model = build_model({"name": "mf", "embedding_dim": 1, "weight_decay": 0.1}, "t", seed=0, device=CPU)
    model.module = mf_tower()
    users, positives, negatives = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 0])
    expected = bpr_batch_loss(mf_tower(), users, positives, negatives, 0.1)
    assert model.batch_loss(users, positives, negatives).item() == expected.item()


# ---- the epoch loop ----------------------------------------------------------------------------


class NoDense(sp.csr_matrix):
    """A train matrix that refuses to be densified."""

    def toarray(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise AssertionError("Y was densified")

    todense = toarray


def small_train() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = rng.random((12, 9)) < 0.3
    dense[:, 0] = False
    dense[np.arange(12), 1 + np.arange(12) % 8] = True
    return sp.csr_matrix(dense.astype(np.float32))


def bpr_model(name: str = "mf", **overrides: Any):
    params = {"name": name, "embedding_dim": 4, "epochs": 3, "loss": "bpr", "batch_size": 5, **overrides}
    if name == "lightgcn":
        params.setdefault("num_layers", 2)
    return build_model(params, "t", seed=0, device=CPU)


@pytest.mark.parametrize("sampling", ["uniform", "popularity", "hard"])
def test_bpr_fit_never_densifies_the_train_matrix(sampling: str) -> None:
    train = NoDense(small_train())
    model = bpr_model("lightgcn", negative_sampling=sampling, hard_pool_size=3)
    model.fit(TrainData(train, build_normalized_adjacency(small_train())))
    assert [r.epoch for r in model.history] == [1, 2, 3]
    assert all(math.isfinite(r.train_loss) for r in model.history)


def test_an_epoch_visits_every_positive_once_with_true_negatives(monkeypatch: pytest.MonkeyPatch) -> None:
    train = small_train()
    model = bpr_model(epochs=2)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def record(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        seen.append((users.numpy().copy(), positives.numpy().copy(), negatives.numpy().copy()))
        # A loss equal to the batch size, so the epoch loss is Σ b² / n.
        return model.module.user_embedding.sum() * 0 + float(users.numel())

    monkeypatch.setattr(model, "batch_loss", record)
    model.fit(TrainData(train))
    n = train.nnz  # 5 per batch: batches of 5, 5, ..., and the remainder
    sizes = [5] * (n // 5) + ([n % 5] if n % 5 else [])
    assert [len(users) for users, _, _ in seen] == sizes * 2
    expected_loss = sum(size * size for size in sizes) / n
    assert [r.train_loss for r in model.history] == pytest.approx([expected_loss] * 2)
    first_epoch = seen[: len(sizes)]
    users = np.concatenate([u for u, _, _ in first_epoch])
    positives = np.concatenate([p for _, p, _ in first_epoch])
    negatives = np.concatenate([j for _, _, j in first_epoch])
    assert sorted(zip(users.tolist(), positives.tolist())) == sorted(zip(*train.nonzero()))
    assert not np.asarray(train[users, negatives]).any()
    # The second epoch has another order.
    assert not np.array_equal(users, np.concatenate([u for u, _, _ in seen[len(sizes) :]]))


def test_hard_pool_is_ranked_once_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = HardSampler.refresh

    def counting(self: HardSampler, score_users: Any) -> None:
        calls.append(1)
        original(self, score_users)

    monkeypatch.setattr(HardSampler, "refresh", counting)
    bpr_model(epochs=4, negative_sampling="hard", hard_pool_size=2).fit(TrainData(small_train()))
    assert len(calls) == 4


def test_bce_mode_is_unchanged_by_the_new_options() -> None:
    # The mini-batch options are ignored with loss: bce.
    data = TrainData(small_train())
    plain = build_model({"name": "mf", "embedding_dim": 4, "epochs": 3}, "t", seed=0, device=CPU).fit(data)
    other = build_model(
        {"name": "mf", "embedding_dim": 4, "epochs": 3, "batch_size": 3, "negative_sampling": "hard"},
        "t",
        seed=0,
        device=CPU,
    ).fit(data)
    assert [r.train_loss for r in plain.history] == [r.train_loss for r in other.history]
    assert np.array_equal(plain.score(), other.score())


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"loss": "mse"}, "loss"),
        ({"batch_size": 0}, "batch_size"),
        ({"negative_sampling": "random"}, "negative_sampling"),
        ({"hard_pool_size": 0}, "hard_pool_size"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
@pytest.mark.parametrize("model", ["mf", "lightgcn", "dual"])
def test_bad_mini_batch_options_are_named(model: str, override: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"{model}\.model\.{name}"):
        build_model({"name": model, **override}, f"{model}.model", seed=0, device=CPU)


def test_a_model_without_a_batch_loss_says_so() -> None:
    class Plain(DualModel):
        batch_loss = FullBatchRecommender.batch_loss  # the interface's default

    model = Plain(DualModel.Config(loss="bpr", epochs=1), seed=0, device=CPU)
    with pytest.raises(NotImplementedError, match="loss: bce"):
        model.fit(TrainData(small_train()))


# ---- the contract in mini-batch mode -----------------------------------------------------------

BPR_OVERRIDES = {**TRAINING_OVERRIDES, "loss": "bpr", "batch_size": 32, "weight_decay": 1e-4, "epochs": 60}


def bpr_build(name: str, seed: int = 0, **overrides: Any):
    block: dict[str, Any] = {"name": name, **BPR_OVERRIDES, **overrides}
    if name == "dual":
        block.update(preference={"embedding_dim": 16}, exposure={"embedding_dim": 16})
        return build_model(block, "t", seed=seed, device=CPU)
    block["embedding_dim"] = 16
    if name == "lightgcn":
        block["num_layers"] = 2
    return build_model(block, "t", seed=seed, device=CPU)


@pytest.mark.parametrize("sampling", ["uniform", "hard"])
@pytest.mark.parametrize("name", ["mf", "lightgcn", "dual"])
def test_bpr_mode_recovers_the_checkerboard(name: str, sampling: str) -> None:
    board = checkerboard()
    model = bpr_build(name, negative_sampling=sampling, hard_pool_size=4)
    assert model.fit(board.data, board.validation) is model
    assert model.history[-1].train_loss < model.history[0].train_loss
    scores = model.score()
    assert scores.shape == (N_USERS, N_ITEMS) and np.isfinite(scores).all()
    worst_auc = 1.0
    for user in range(N_USERS):
        held_out = scores[user, board.test_likes[user]]
        other_group = scores[user, board.item_group != board.user_group[user]]
        worst_auc = min(worst_auc, float((held_out[:, None] > other_group[None, :]).mean()))
    assert worst_auc > 0.95


@pytest.mark.parametrize("name", ["mf", "lightgcn", "dual"])
def test_bpr_mode_same_seed_same_model(name: str) -> None:
    board = checkerboard()
    first = bpr_build(name, epochs=5).fit(board.data)
    again = bpr_build(name, epochs=5).fit(board.data)
    other = bpr_build(name, seed=1, epochs=5).fit(board.data)
    assert np.array_equal(first.score(), again.score())
    assert [r.train_loss for r in first.history] == [r.train_loss for r in again.history]
    assert not np.allclose(first.score(), other.score())


def test_bpr_mode_state_dict_round_trip() -> None:
    board = checkerboard()
    model = bpr_build("lightgcn", epochs=3).fit(board.data, board.validation)
    restored = bpr_build("lightgcn", seed=5).load_state_dict(model.state_dict(), board.data)
    assert np.array_equal(restored.score(), model.score())


# ---- the batch propagation ----------------------------------------------------------------------


@pytest.mark.parametrize("restricted", [True, False])
def test_batch_propagation_passes_gradcheck(restricted: bool) -> None:
    train = small_train()
    adjacency = build_normalized_adjacency(train).astype(np.float64)
    csr = torch.sparse_csr_tensor(
        torch.from_numpy(adjacency.indptr.astype(np.int64)),
        torch.from_numpy(adjacency.indices.astype(np.int64)),
        torch.from_numpy(adjacency.data),
        size=adjacency.shape,
    )
    nodes = torch.randn(adjacency.shape[0], 3, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 3, 12, 15, 20])
    last = _rows_and_transpose(csr, rows.numpy()) if restricted else None

    def function(x: torch.Tensor) -> torch.Tensor:
        return _BatchPropagation.apply(x, csr, 2, rows, last)

    assert torch.autograd.gradcheck(function, (nodes,))


def test_lightgcn_tower_uses_int32_indices_and_the_same_numbers() -> None:
    model = bpr_model("lightgcn")
    data = TrainData(small_train(), build_normalized_adjacency(small_train()))
    tower = model.build_module(data, torch.Generator().manual_seed(0))
    assert tower.adjacency.crow_indices().dtype == torch.int32
    assert tower.adjacency.col_indices().dtype == torch.int32
    wide = torch.sparse_csr_tensor(
        tower.adjacency.crow_indices().long(),
        tower.adjacency.col_indices().long(),
        tower.adjacency.values(),
        size=tower.adjacency.shape,
    )
    x = torch.randn(tower.adjacency.shape[0], 4)
    assert torch.equal(torch.sparse.mm(tower.adjacency, x), torch.sparse.mm(wide, x))
