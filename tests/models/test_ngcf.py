"""NGCF: one propagation layer by hand and against a dense re-implementation, the
layer concatenation, its gradient, and seeded message dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.ngcf import NGCF, ngcf_layer
from debias_pipeline.models.registry import build_model
from tests.models.test_models import TINY_A_HAT as TINY_L
from tests.models.test_models import TINY_R
from tests.models.test_models import sparse64 as sparse

CPU = torch.device("cpu")
R2 = math.sqrt(2.0)
# TINY_R = [[1, 1], [0, 1]] and its L = D^-1/2 A D^-1/2 (node order u0, u1, i0, i1):
# L[u0, i0] = 1/√2, L[u0, i1] = 1/2, L[u1, i1] = 1/√2.


def dense_layer(adjacency: np.ndarray, e: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """LeakyReLU_0.2((L + I) E W1 + ((L E) ⊙ E) W2), written out densely."""
    messages = (adjacency + np.eye(len(adjacency))) @ e @ w1 + ((adjacency @ e) * e) @ w2
    return np.where(messages > 0, messages, 0.2 * messages)


def test_one_layer_by_hand() -> None:
    # E = [[1, 0], [0, 0], [0, 0], [0, 1]] (u0 in column 0, i1 in column 1).
    # L E: column 0 = L[:, u0] = [0, 0, 1/√2, 1/2]; column 1 = L[:, i1] = [1/2, 1/√2, 0, 0].
    # (L + I) E = L E + E = [[1, 1/2], [0, 1/√2], [1/√2, 0], [1/2, 1]].
    # (L E) ⊙ E = 0: column 0 [0, 0, 1/√2, 1/2] ⊙ [1, 0, 0, 0], column 1 [1/2, 1/√2, 0, 0] ⊙ [0, 0, 0, 1].
    # W1 = diag(1, −1), W2 = anything: messages [[1, −1/2], [0, −1/√2], [1/√2, 0], [1/2, −1]];
    # LeakyReLU (slope 0.2): [[1, −0.1], [0, −0.2/√2], [1/√2, 0], [1/2, −0.2]].
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w1 = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    w2 = torch.tensor([[5.0, -3.0], [2.0, 7.0]], dtype=torch.float64)
    layer = ngcf_layer(sparse(TINY_L), embeddings, w1, w2)
    expected = [[1.0, -0.1], [0.0, -0.2 / R2], [1 / R2, 0.0], [0.5, -0.2]]
    np.testing.assert_allclose(layer.numpy(), expected, atol=1e-15)


def test_one_layer_with_the_interaction_term_by_hand() -> None:
    # E = [[1, 1], [0, 0], [2, 0], [0, 0]], W1 = 0, W2 = I, so only ((L E) ⊙ E) remains.
    # L E row u0 = (1/√2)·E[i0] + (1/2)·E[i1] = [√2, 0]; row i0 = (1/√2)·E[u0] = [1/√2, 1/√2].
    # ⊙ E: u0 → [√2·1, 0·1] = [√2, 0]; i0 → [2/√2, 0] = [√2, 0]; u1, i1 have E = 0 → 0.
    embeddings = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    w1, w2 = torch.zeros(2, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    layer = ngcf_layer(sparse(TINY_L), embeddings, w1, w2)
    np.testing.assert_allclose(layer.numpy(), [[R2, 0.0], [0.0, 0.0], [R2, 0.0], [0.0, 0.0]], atol=1e-15)


def test_one_layer_matches_the_dense_formula_on_a_random_graph() -> None:
    rng = np.random.default_rng(0)
    clicks = sp.csr_matrix((rng.random((7, 5)) < 0.4).astype(np.float32))
    adjacency = build_normalized_adjacency(clicks).toarray().astype(np.float64)
    e, w1, w2 = rng.normal(size=(12, 3)), rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    layer = ngcf_layer(sparse(adjacency), *(torch.tensor(x) for x in (e, w1, w2)))
    np.testing.assert_allclose(layer.numpy(), dense_layer(adjacency, e, w1, w2), rtol=1e-12, atol=1e-12)


def test_layer_gradient_equals_dense_autograd() -> None:
    rng = np.random.default_rng(1)
    values = [torch.tensor(rng.normal(size=shape), requires_grad=True) for shape in ((4, 2), (2, 2), (2, 2))]
    ngcf_layer(sparse(TINY_L), *values).pow(2).sum().backward()
    sparse_grads = [v.grad.clone() for v in values]
    dense = torch.tensor(TINY_L)
    e, w1, w2 = (v.detach().clone().requires_grad_(True) for v in values)
    messages = (dense + torch.eye(4, dtype=torch.float64)) @ e @ w1 + ((dense @ e) * e) @ w2
    torch.nn.functional.leaky_relu(messages, 0.2).pow(2).sum().backward()
    for got, want in zip(sparse_grads, (e.grad, w1.grad, w2.grad), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


def tiny_ngcf(**params) -> NGCF:
    model = build_model({"name": "ngcf", "embedding_dim": 2, **params}, "t", seed=0, device=CPU)
    data = TrainData(sp.csr_matrix(TINY_R), sp.csr_matrix(TINY_L.astype(np.float32)))
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    return model


def test_final_embedding_concatenates_every_layer() -> None:
    model = tiny_ngcf(num_layers=2)
    users, items = model.module()
    assert users.shape == (2, 6) and items.shape == (2, 6)
    nodes = torch.cat([users, items])  # (4, 6)
    e0 = torch.cat(model.module.tower())
    torch.testing.assert_close(nodes[:, :2], e0)
    e1 = ngcf_layer(model.module.adjacency, e0, model.module.weight_self[0], model.module.weight_product[0])
    e2 = ngcf_layer(model.module.adjacency, e1, model.module.weight_self[1], model.module.weight_product[1])
    torch.testing.assert_close(nodes[:, 2:4], e1)
    torch.testing.assert_close(nodes[:, 4:], e2)


def test_loss_is_the_bce_plus_l2_on_every_parameter() -> None:
    model = tiny_ngcf(num_layers=1, weight_decay=0.5)
    targets = torch.tensor(TINY_R, dtype=torch.float32)
    users, items = model.module()
    logits = users @ items.T
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    squares = sum(p.pow(2).sum() for p in model.module.parameters())
    assert len(list(model.module.parameters())) == 4  # E_users, E_items, W1, W2
    torch.testing.assert_close(model.loss(targets), bce + 0.5 * squares)


def test_needs_the_adjacency_and_the_full_batch_loss() -> None:
    model = build_model({"name": "ngcf", "embedding_dim": 2}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="normalized adjacency"):
        model.fit(TrainData(sp.csr_matrix(TINY_R)))
    with pytest.raises(ValueError, match=r"t\.loss"):
        build_model({"name": "ngcf", "loss": "bpr"}, "t", seed=0, device=CPU)


def test_message_dropout_is_seeded_and_off_when_scoring() -> None:
    rng = np.random.default_rng(2)
    clicks = sp.csr_matrix((rng.random((12, 10)) < 0.3).astype(np.float32))
    data = TrainData(clicks, build_normalized_adjacency(clicks))
    params = {"name": "ngcf", "embedding_dim": 4, "num_layers": 2, "message_dropout": 0.3, "epochs": 5}
    first = build_model(params, "t", seed=3, device=CPU).fit(data)
    again = build_model(params, "t", seed=3, device=CPU).fit(data)
    assert np.array_equal(first.score(), again.score())
    without = build_model({**params, "message_dropout": 0.0}, "t", seed=3, device=CPU).fit(data)
    assert not np.allclose(first.score(), without.score())
    # Scores come from the network without dropout; in training mode two passes differ.
    first.module.eval()
    users, items = first.module()
    np.testing.assert_allclose((users @ items.T).detach().numpy(), first.score(), rtol=1e-6)
    first.module.train()
    assert not torch.equal(first.module()[0], first.module()[0])
