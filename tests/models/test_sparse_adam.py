"""MF-BPR with ``optimizer: sparse_adam``: the batch's loss and row gradients equal the
dense path's, ``RowAdam`` makes the steps of ``torch.optim.SparseAdam``, only the
batch's rows move, and the combinations it refuses are named."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.minibatch import RowAdam, bpr_batch_loss, row_triple_scores, triple_loss
from debias_pipeline.models.registry import build_model

USERS, POSITIVES, NEGATIVES = torch.tensor([0, 2, 2, 5]), torch.tensor([1, 3, 3, 7]), torch.tensor([0, 4, 6, 2])


def _model(optimizer: str = "sparse_adam", **extra):
    block = {"name": "mf", "embedding_dim": 3, "loss": "bpr", "batch_size": 4, "epochs": 3, "weight_decay": 0.1, "optimizer": optimizer, **extra}
    return build_model(block, "mf.model", seed=0, device="cpu")


def _data() -> TrainData:
    rng = np.random.default_rng(0)
    return TrainData(sp.csr_matrix((rng.random((6, 8)) < 0.4).astype(np.float32)))


def _built(model):
    model.module = model.build_module(_data(), torch.Generator().manual_seed(0))
    return model


@pytest.mark.parametrize("enhanced", [None, (0.05, 0.2, 0.8)])
def test_loss_from_rows_equals_the_dense_path(enhanced) -> None:
    tower = _built(_model()).module
    dense = bpr_batch_loss(tower, USERS, POSITIVES, NEGATIVES, 0.1, enhanced)
    dense.backward()
    user_rows = tower.user_embedding.detach()[USERS].requires_grad_()
    item_rows = tower.item_embedding.detach()[torch.cat([POSITIVES, NEGATIVES])].requires_grad_()
    rows = triple_loss(row_triple_scores(user_rows, item_rows), 0.1, enhanced)
    user_grad, _ = torch.autograd.grad(rows, [user_rows, item_rows])
    assert rows.item() == pytest.approx(dense.item(), rel=1e-6) and rows.item() > 0
    summed = torch.zeros_like(tower.user_embedding).index_add_(0, USERS, user_grad)
    torch.testing.assert_close(summed, tower.user_embedding.grad)
    if enhanced is None:  # by hand, user 5: d/du of -log σ(u·(v7 - v2)) / 4 + 0.1 (|u|² + |v7|² + |v2|²) / 4
        u, v = tower.user_embedding.detach()[5], tower.item_embedding.detach()
        margin = u @ (v[7] - v[2])
        torch.testing.assert_close(user_grad[3], -torch.sigmoid(-margin) * (v[7] - v[2]) / 4 + 0.1 * 2 * u / 4)


def test_row_adam_makes_the_steps_of_torch_sparse_adam() -> None:
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(6, 3, generator=generator)
    ours, reference = table.clone(), torch.nn.Parameter(table.clone())
    adam, torch_adam = RowAdam([ours], lr=0.05), torch.optim.SparseAdam([reference], lr=0.05)
    for ids in ([0, 2, 2], [1, 2], [5, 0, 0, 0]):
        ids = torch.tensor(ids)
        grad = torch.randn(ids.numel(), 3, generator=generator)
        adam.step([(ids, grad)])
        reference.grad = torch.sparse_coo_tensor(ids[None], grad, size=table.shape)
        torch_adam.step()
        torch.testing.assert_close(ours, reference.detach())
    assert torch.equal(ours[3], table[3])  # never touched


def test_only_the_batch_rows_move() -> None:
    model = _built(_model())
    before_users, before_items = model.module.user_embedding.detach().clone(), model.module.item_embedding.detach().clone()
    loss = model.row_stepper()(torch.tensor([1, 1]), torch.tensor([2, 3]), torch.tensor([4, 4]))
    assert loss.item() > 0
    moved_users = (model.module.user_embedding.detach() != before_users).any(dim=1).nonzero().ravel().tolist()
    moved_items = (model.module.item_embedding.detach() != before_items).any(dim=1).nonzero().ravel().tolist()
    assert moved_users == [1] and moved_items == [2, 3, 4]


def test_fits_and_repeats_under_a_seed() -> None:
    first, second = _model().fit(_data()), _model().fit(_data())
    np.testing.assert_array_equal(first.score(), second.score())
    assert all(np.isfinite(r.train_loss) and r.train_loss > 0 for r in first.history)
    dense = _model("adam").fit(_data())
    assert not np.array_equal(first.score(), dense.score())  # another optimizer


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"name": "mf", "optimizer": "sparse_adam"}, "needs loss bpr"),
        ({"name": "mf", "loss": "bpr", "optimizer": "sparse_adam", "grad_clip_norm": 1.0}, "no grad_clip_norm"),
        ({"name": "mf", "loss": "bpr", "optimizer": "sparse_adam", "lr_plateau": {"factor": 0.5}}, "no lr_plateau"),
        ({"name": "lightgcn", "loss": "bpr", "optimizer": "sparse_adam", "num_layers": 2}, "is for MF"),
        ({"name": "mf", "loss": "bpr", "optimizer": "adagrad"}, r"mf\.model\.optimizer"),
    ],
)
def test_refused_combinations_are_named(block: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(block, "mf.model", seed=0, device="cpu")
