"""Mini-batch ``propagation: stale`` (``minibatch.StaleLayers``): the same numbers as the
exact mode at ``refresh_every: 1``, the stale tables and their gradient by hand, the
row optimizer's path against the autograd one, and the configuration's errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.minibatch import StaleLayers, tower_rows
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.towers import EmbeddingTower
from tests.models.test_contract import N_ITEMS, N_USERS, TRAINING_OVERRIDES, checkerboard
from tests.models.test_minibatch import small_train

CPU = torch.device("cpu")


def build(name: str, **overrides: Any):
    block: dict[str, Any] = {"name": name, "loss": "bpr", "batch_size": 5, "epochs": 3, "lr": 0.01, **overrides}
    if name == "dual":
        block.setdefault("preference", {"embedding_dim": 4, "num_layers": 2})
        block.setdefault("exposure", {"embedding_dim": 4, "num_layers": 1})
    else:
        block.setdefault("embedding_dim", 4)
        block.setdefault("num_layers", 2)
    return build_model(block, "t", seed=0, device=CPU)


def small_data() -> TrainData:
    return TrainData(small_train(), build_normalized_adjacency(small_train()))


@pytest.mark.parametrize("name", ["lightgcn", "dual", "pda", "macr", "dice"])
def test_refresh_every_one_is_the_exact_mode(name: str) -> None:
    exact = build(name).fit(small_data())
    stale = build(name, propagation="stale", refresh_every=1).fit(small_data())
    assert [r.train_loss for r in stale.history] == pytest.approx([r.train_loss for r in exact.history], rel=1e-6)
    np.testing.assert_allclose(stale.score(), exact.score(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["lightgcn", "dual", "pda", "macr", "dice"])
def test_stale_steps_change_the_numbers(name: str) -> None:
    exact = build(name).fit(small_data())
    stale = build(name, propagation="stale", refresh_every=4).fit(small_data())
    assert not np.allclose(stale.score(), exact.score())


def one_edge_tower(num_layers: int) -> EmbeddingTower:
    """1 user, 1 item, one positive: Â = [[0, 1], [1, 0]], so Â² = I."""
    adjacency = build_normalized_adjacency(sp.csr_matrix(np.ones((1, 1), dtype=np.float32)))
    csr = torch.sparse_csr_tensor(
        torch.from_numpy(adjacency.indptr.astype(np.int64)),
        torch.from_numpy(adjacency.indices.astype(np.int64)),
        torch.from_numpy(adjacency.data.astype(np.float32)),
        size=adjacency.shape,
    )
    return EmbeddingTower(1, 1, 1, num_layers, csr, torch.Generator().manual_seed(0))


def set_base(tower: EmbeddingTower, user: float, item: float) -> None:
    with torch.no_grad():
        tower.user_embedding.fill_(user)
        tower.item_embedding.fill_(item)


def test_stale_tables_by_hand() -> None:
    # K = 2: final = (E + ÂE + Â²E) / 3, so with (u, v) the user's is (2u + v) / 3 and
    # the item's (u + 2v) / 3; the tables are T = (ÂE + Â²E) / 3 = ((v + u) / 3, (u + v) / 3).
    tower = one_edge_tower(2)
    schedule = StaleLayers(tower, refresh_every=3)
    ids = torch.tensor([0])
    set_base(tower, 1.0, 4.0)
    schedule.before_step(0)  # exact
    user, item, _ = tower_rows(tower, ids, ids)
    assert (user.item(), item.item()) == pytest.approx((2.0, 3.0))
    set_base(tower, 2.0, 5.0)  # what step 0's update left: the tables are taken from it
    schedule.before_step(1)
    torch.testing.assert_close(tower.stale_layers, torch.tensor([[7 / 3], [7 / 3]]))
    user, item, base = tower_rows(tower, ids, ids)
    assert (user.item(), item.item()) == pytest.approx((3.0, 4.0))  # 2/3 + 7/3, 5/3 + 7/3: still exact
    set_base(tower, 8.0, 11.0)  # step 1's update: step 2 reads the tables of (2, 5)
    schedule.before_step(2)
    user, item, base = tower_rows(tower, ids, ids)
    assert (user.item(), item.item()) == pytest.approx((8 / 3 + 7 / 3, 11 / 3 + 7 / 3))  # exact: 9 and 10
    torch.testing.assert_close(base, torch.tensor([[8.0], [11.0]]))
    # The gradient: 1/(K+1) at the row's own base embedding, none through the tables
    # (the exact step's would be 2/3 at the user and 1/3 at the item).
    user.sum().backward()
    assert tower.user_embedding.grad.item() == pytest.approx(1 / 3)
    assert tower.item_embedding.grad is None
    schedule.before_step(3)  # exact again, from the current embeddings
    assert tower.stale_layers is None
    user, item, _ = tower_rows(tower, ids, ids)
    assert (user.item(), item.item()) == pytest.approx((9.0, 10.0))
    schedule.clear()
    assert tower.stale_layers is None


def test_the_epoch_drops_the_tables_and_refreshes_on_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[tuple[int, bool]] = []
    original = StaleLayers.before_step

    def recording(self: StaleLayers, step: int) -> None:
        original(self, step)
        steps.append((step, self.towers[0].stale_layers is None))

    monkeypatch.setattr(StaleLayers, "before_step", recording)
    model = build("lightgcn", propagation="stale", refresh_every=3, epochs=1).fit(small_data())
    assert [exact for _, exact in steps] == [step % 3 == 0 for step, _ in steps]
    assert len(steps) == -(-small_train().nnz // 5)
    assert model.module.stale_layers is None


def test_row_optimizer_path_has_the_autograd_loss_and_gradient() -> None:
    model = build("lightgcn", propagation="stale", refresh_every=2, optimizer="sparse_adam")
    data = small_data()
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    tower = model.module
    StaleLayers(tower, 2).before_step(1)
    users, positives, negatives = torch.tensor([0, 3, 3]), torch.tensor([1, 2, 4]), torch.tensor([0, 0, 5])
    dense = model.batch_loss(users, positives, negatives)
    dense.backward()
    before = [tower.user_embedding.detach().clone(), tower.item_embedding.detach().clone()]
    step = model.row_stepper()
    assert step(users, positives, negatives).item() == pytest.approx(dense.item(), rel=1e-6)
    # Only the batch's rows moved, and each in the direction against its gradient.
    for table, old, grad, rows in (
        (tower.user_embedding, before[0], tower.user_embedding.grad, [0, 3]),
        (tower.item_embedding, before[1], tower.item_embedding.grad, [0, 1, 2, 4, 5]),
    ):
        moved = (table.detach() != old).any(dim=1)
        assert moved.nonzero().ravel().tolist() == rows
        assert ((table.detach() - old)[rows] * grad[rows] <= 0).all()


def test_stale_mode_with_the_row_optimizer_recovers_the_checkerboard() -> None:
    board = checkerboard()
    block = {**TRAINING_OVERRIDES, "name": "lightgcn", "loss": "bpr", "batch_size": 32, "weight_decay": 1e-4}
    block.update(epochs=60, embedding_dim=16, num_layers=2, propagation="stale", refresh_every=10_000)
    model = build_model({**block, "optimizer": "sparse_adam"}, "t", seed=0, device=CPU).fit(board.data, board.validation)
    scores = model.score()
    worst_auc = 1.0
    for user in range(N_USERS):
        held_out = scores[user, board.test_likes[user]]
        other_group = scores[user, board.item_group != board.user_group[user]]
        worst_auc = min(worst_auc, float((held_out[:, None] > other_group[None, :]).mean()))
    assert scores.shape == (N_USERS, N_ITEMS) and worst_auc > 0.95


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"propagation": "sampled"}, "propagation"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"propagation": "stale", "loss": "bce"}, "propagation"),
        ({"optimizer": "sparse_adam", "num_layers": 2}, "optimizer"),
    ],
)
def test_bad_propagation_options_are_named(override: dict[str, Any], name: str) -> None:
    block = {"name": "lightgcn", "loss": "bpr", **override}
    with pytest.raises(ValueError, match=rf"lightgcn\.model\.{name}"):
        build_model(block, "lightgcn.model", seed=0, device=CPU)
    if name != "optimizer":
        with pytest.raises(ValueError, match=rf"dual\.model\.{name}"):
            build_model({**block, "name": "dual"}, "dual.model", seed=0, device=CPU)
