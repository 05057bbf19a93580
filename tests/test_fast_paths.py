"""The fast paths compute what the reference paths compute (``benchmarks/reference.py``),
on a small random graph: propagation forward and backward, the BPR batch loss and a
run of Adam steps on fixed triples, the dual loss and its gradients against σ(r̂)·σ(ô)
materialized, and both ranking protocols against a loop over users."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from benchmarks.reference import (
    coo_adjacency,
    direct_dual_bce,
    reference_bpr_batch_loss,
    reference_full_ranking,
    reference_propagate,
    reference_thesis_metrics,
)
from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.evaluation.metrics import per_user_full_ranking, per_user_metrics
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import dual_bce_all_pairs, dual_triple_loss
from debias_pipeline.models.minibatch import _BatchPropagation, _rows_and_transpose
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.towers import propagate
from debias_pipeline.models.trainers import sparse_to_torch

CPU = torch.device("cpu")
N_USERS, N_ITEMS = 40, 30


@cache
def graph() -> TrainData:
    rng = np.random.default_rng(11)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.15
    dense[np.arange(N_USERS), rng.integers(0, N_ITEMS, N_USERS)] = True  # every user has a positive
    train = sp.csr_matrix(dense.astype(np.float32))
    return TrainData(train, build_normalized_adjacency(train))


def random_triples(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    train = graph().interactions
    positive_rows = rng.integers(0, train.nnz, n)
    users = np.repeat(np.arange(N_USERS), np.diff(train.indptr))[positive_rows]
    positives = train.indices[positive_rows]
    negatives = rng.integers(0, N_ITEMS, n)
    return tuple(torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (users, positives, negatives))


# ---- propagation ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_propagation_forward_and_backward_match_the_coo_reference(num_layers: int) -> None:
    adjacency = graph().adjacency
    rng = np.random.default_rng(num_layers)
    start = torch.from_numpy(rng.normal(size=(N_USERS + N_ITEMS, 8)).astype(np.float32))
    weights = torch.from_numpy(rng.normal(size=(N_USERS + N_ITEMS, 8)).astype(np.float32))

    fast_input = start.clone().requires_grad_()
    fast = propagate(sparse_to_torch(adjacency, CPU), fast_input, num_layers)
    (fast * weights).sum().backward()
    reference_input = start.clone().requires_grad_()
    reference = reference_propagate(coo_adjacency(adjacency), reference_input, num_layers)
    (reference * weights).sum().backward()

    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_input.grad, reference_input.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("uses", ["both", "mean", "base"])
@pytest.mark.parametrize("restricted", [True, False], ids=["last-layer-at-the-rows", "full-last-layer"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_batch_propagation_matches_the_coo_reference_at_the_batch_rows(num_layers: int, restricted: bool, uses: str) -> None:
    # The rows may repeat (as a batch's do); with ``restricted`` they are made unique and
    # the last layer is computed for them alone (the CPU path), else in full (the CUDA
    # path). The loss reads the layer mean, the base rows E[ids] (the L2 term's), or both.
    adjacency = graph().adjacency
    rng = np.random.default_rng(7 + num_layers)
    start = torch.from_numpy(rng.normal(size=(N_USERS + N_ITEMS, 8)).astype(np.float32))
    ids = torch.from_numpy(rng.integers(0, N_USERS + N_ITEMS, 50))
    weights = torch.from_numpy(rng.normal(size=(2, 50, 8)).astype(np.float32))
    csr = sparse_to_torch(adjacency, CPU)

    def loss(mean: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        terms = {"mean": (mean * weights[0]).sum(), "base": (base**2 * weights[1]).sum()}
        return sum(terms.values()) if uses == "both" else terms[uses]

    fast_input = start.clone().requires_grad_()
    if restricted:
        rows, inverse = torch.unique(ids, return_inverse=True)
        last = _rows_and_transpose(csr, rows.numpy())
        fast, fast_base = (part[inverse] for part in _BatchPropagation.apply(fast_input, csr, num_layers, rows, last))
    else:
        fast, fast_base = _BatchPropagation.apply(fast_input, csr, num_layers, ids, None)
    loss(fast, fast_base).backward()
    reference_input = start.clone().requires_grad_()
    reference = reference_propagate(coo_adjacency(adjacency), reference_input, num_layers)[ids]
    loss(reference, reference_input[ids]).backward()

    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_base, start[ids], rtol=0, atol=0)
    torch.testing.assert_close(fast_input.grad, reference_input.grad, rtol=1e-5, atol=1e-6)


# ---- BPR on fixed triples -------------------------------------------------------------------


def lightgcn(num_layers: int, weight_decay: float = 1e-2):
    params = {
        "name": "lightgcn",
        "embedding_dim": 8,
        "num_layers": num_layers,
        "loss": "bpr",
        "weight_decay": weight_decay,
        "lr": 0.01,
    }
    model = build_model(params, "t", seed=3, device=CPU)
    model.module = model.build_module(graph(), torch.Generator().manual_seed(3))
    with torch.no_grad():  # N(0, 1): BPR far from its value at 0
        model.module.user_embedding.normal_(generator=torch.Generator().manual_seed(4))
        model.module.item_embedding.normal_(generator=torch.Generator().manual_seed(5))
    return model


@pytest.mark.parametrize("num_layers", [0, 2, 3])
def test_bpr_batch_loss_and_gradients_match_the_reference(num_layers: int) -> None:
    model = lightgcn(num_layers)
    users, positives, negatives = random_triples(64, seed=num_layers)
    loss = model.batch_loss(users, positives, negatives)
    loss.backward()

    user_table = model.module.user_embedding.detach().clone().requires_grad_()
    item_table = model.module.item_embedding.detach().clone().requires_grad_()
    adjacency = coo_adjacency(graph().adjacency) if num_layers else None
    reference = reference_bpr_batch_loss(
        user_table, item_table, adjacency, num_layers, users, positives, negatives, weight_decay=1e-2
    )
    reference.backward()

    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(model.module.user_embedding.grad, user_table.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(model.module.item_embedding.grad, item_table.grad, rtol=1e-4, atol=1e-7)


def test_adam_steps_on_fixed_triples_match_the_reference() -> None:
    # An "epoch" of 8 batches of 32 fixed triples: the same losses, step by step, and the
    # same embeddings at the end.
    model = lightgcn(num_layers=2)
    user_table = torch.nn.Parameter(model.module.user_embedding.detach().clone())
    item_table = torch.nn.Parameter(model.module.item_embedding.detach().clone())
    fast_optimizer = torch.optim.Adam(model.module.parameters(), lr=0.01)
    reference_optimizer = torch.optim.Adam([user_table, item_table], lr=0.01)
    adjacency = coo_adjacency(graph().adjacency)
    fast_losses, reference_losses = [], []
    for batch in range(8):
        users, positives, negatives = random_triples(32, seed=100 + batch)
        fast_optimizer.zero_grad()
        loss = model.batch_loss(users, positives, negatives)
        loss.backward()
        fast_optimizer.step()
        fast_losses.append(loss.item())
        reference_optimizer.zero_grad()
        reference = reference_bpr_batch_loss(user_table, item_table, adjacency, 2, users, positives, negatives, 1e-2)
        reference.backward()
        reference_optimizer.step()
        reference_losses.append(reference.item())
    np.testing.assert_allclose(fast_losses, reference_losses, rtol=1e-5)
    torch.testing.assert_close(model.module.user_embedding.detach(), user_table.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.module.item_embedding.detach(), item_table.detach(), rtol=1e-4, atol=1e-6)


# ---- the dual loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dual_bce_matches_the_direct_product_then_bce(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    # Logits in [-6, 6], where σ(r̂)·σ(ô) is far from 0 and 1 and the direct form is exact.
    # 70 x 1,100 pairs in chunks of 4,096: 18 whole chunks and a partial one.
    monkeypatch.setattr("debias_pipeline.models.losses._CPU_CHUNK", 4096)
    generator = torch.Generator().manual_seed(0)
    preference = (torch.rand(70, 1100, generator=generator, dtype=dtype) * 12 - 6).requires_grad_()
    exposure = (torch.rand(70, 1100, generator=generator, dtype=dtype) * 12 - 6).requires_grad_()
    targets = (torch.rand(70, 1100, generator=generator) < 0.1).to(dtype)
    fast = dual_bce_all_pairs(preference, exposure, targets)
    fast_grads = torch.autograd.grad(fast, (preference, exposure))
    direct = direct_dual_bce(preference, exposure, targets)
    direct_grads = torch.autograd.grad(direct, (preference, exposure))
    # float32: the direct form rounds σ near 1 (1 - σ(6) = 2.5e-3 keeps ~4 digits).
    tolerance = {"rtol": 1e-4, "atol": 1e-10} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-16}
    torch.testing.assert_close(fast, direct, **tolerance)
    for fast_grad, direct_grad in zip(fast_grads, direct_grads, strict=True):
        torch.testing.assert_close(fast_grad, direct_grad, **tolerance)


def test_dual_bce_gradient_scales_with_the_incoming_gradient() -> None:
    preference = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    exposure = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    targets = (torch.rand(5, 7) < 0.3).double()
    (3.0 * dual_bce_all_pairs(preference, exposure, targets)).backward()
    expected = torch.autograd.grad(3.0 * direct_dual_bce(preference, exposure, targets), (preference, exposure))
    torch.testing.assert_close(preference.grad, expected[0])
    torch.testing.assert_close(exposure.grad, expected[1])


def test_dual_triple_loss_matches_the_direct_form() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = [(torch.rand(50, generator=generator, dtype=torch.float64) * 8 - 4).requires_grad_() for _ in range(4)]
    fast = dual_triple_loss(*logits)
    preference_positive, preference_negative, exposure_positive, exposure_negative = logits
    direct = direct_dual_bce(preference_positive, exposure_positive, torch.ones(50, dtype=torch.float64)) + (
        direct_dual_bce(preference_negative, exposure_negative, torch.zeros(50, dtype=torch.float64))
    )
    torch.testing.assert_close(fast, direct, rtol=1e-12, atol=0)
    for fast_grad, direct_grad in zip(
        torch.autograd.grad(fast, logits), torch.autograd.grad(direct, logits), strict=True
    ):
        torch.testing.assert_close(fast_grad, direct_grad, rtol=1e-10, atol=1e-16)


# ---- ranking metrics ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_thesis_metrics_match_the_loop_over_users(k: int) -> None:
    rng = np.random.default_rng(k)
    n_rows = 2_000
    users = rng.integers(0, 150, n_rows)
    items = rng.permutation(n_rows) % 400  # distinct enough; repeated (user, item) pairs are rare
    labels = (rng.random(n_rows) < 0.3).astype(float)
    scores = np.round(rng.normal(size=n_rows), 1)  # rounded: many ties, broken by item id
    fast_users, fast_recall, fast_ndcg = per_user_metrics(users, items, labels, scores, k)
    loop_users, loop_recall, loop_ndcg = reference_thesis_metrics(users, items, labels, scores, k)
    np.testing.assert_array_equal(fast_users, loop_users)
    np.testing.assert_allclose(fast_recall, loop_recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast_ndcg, loop_ndcg, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_full_ranking_matches_the_loop_over_users(k: int) -> None:
    rng = np.random.default_rng(k)
    n_users, n_items = 120, 90
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    user_emb = torch.from_numpy(rng.normal(size=(n_users, 6)).astype(np.float32))
    item_emb = torch.from_numpy(rng.normal(size=(n_items, 6)).astype(np.float32))
    users = np.repeat(np.arange(n_users), 8)
    items = rng.integers(0, n_items, users.size)  # some are train items of the user
    labels = (rng.random(users.size) < 0.4).astype(float)

    fast_users, fast_recall, fast_ndcg, _ = per_user_full_ranking(
        lambda ids: user_emb[ids] @ item_emb.T, train, users, items, labels, k, chunk_elements=30 * n_items
    )
    loop_users, loop_recall, loop_ndcg = reference_full_ranking(user_emb, item_emb, train, users, items, labels, k)
    np.testing.assert_array_equal(fast_users, loop_users)
    np.testing.assert_allclose(fast_recall, loop_recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast_ndcg, loop_ndcg, rtol=0, atol=1e-12)
