"""One layer of each graph model by hand on a 4-node graph, and the social ties' filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from debias_pipeline.models.gcn import GCNLayer, normalized_adjacency
from debias_pipeline.models.socialgcn import SocialLayer, filter_ties

# Edges source -> target of a 4-node graph: 1, 2, 3 -> 0; 0 -> 1; 2 -> 3.
EDGES = torch.tensor([[1, 2, 3, 0, 2], [0, 0, 0, 1, 3]])
X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 3.0]])


def test_gat_attention_weights_sum_to_one_per_target_and_match_the_formula() -> None:
    torch.manual_seed(0)
    layer = GATConv(2, 2, heads=1, negative_slope=0.2, add_self_loops=True)
    _, (edge_index, alpha) = layer(X, EDGES, return_attention_weights=True)
    alpha = alpha.squeeze(1)
    targets = edge_index[1]
    sums = torch.zeros(4).index_add_(0, targets, alpha)
    torch.testing.assert_close(sums, torch.ones(4))
    # By hand for target 0 (neighbours 1, 2, 3 and itself): softmax of LeakyReLU(aᵀ[W x_0 ‖ W x_u]).
    wx = X @ layer.lin.weight.T  # (4, 2)
    a_src, a_dst = layer.att_src.view(-1), layer.att_dst.view(-1)
    sources = [1, 2, 3, 0]
    logits = torch.tensor([float(torch.nn.functional.leaky_relu(a_dst @ wx[0] + a_src @ wx[u], 0.2)) for u in sources])
    expected = torch.softmax(logits, dim=0)
    got = torch.tensor([float(alpha[(edge_index[0] == u) & (targets == 0)][0]) for u in sources])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_graphsage_max_pool_by_hand() -> None:
    torch.manual_seed(1)
    layer = SAGEConv(2, 3, aggr="max", project=True)
    out = layer(X, EDGES)
    pooled = torch.relu(X @ layer.lin.weight.T + layer.lin.bias)  # σ(W_pool h_u + b)
    agg0 = pooled[[1, 2, 3]].max(dim=0).values
    expected0 = agg0 @ layer.lin_l.weight.T + layer.lin_l.bias + X[0] @ layer.lin_r.weight.T
    torch.testing.assert_close(out[0], expected0, rtol=1e-5, atol=1e-6)
    # Node 2 has no in-edge: only its own term.
    torch.testing.assert_close(out[2], layer.lin_l.bias + X[2] @ layer.lin_r.weight.T, rtol=1e-5, atol=1e-6)


def test_graphsage_mean_with_l2_normalization() -> None:
    torch.manual_seed(2)
    layer = SAGEConv(2, 3, aggr="mean", normalize=True)
    out = layer(X, EDGES)
    raw = X[[1, 2, 3]].mean(dim=0) @ layer.lin_l.weight.T + layer.lin_l.bias + X[0] @ layer.lin_r.weight.T
    torch.testing.assert_close(out[0], raw / raw.norm(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("marked", [False, True])
def test_gcn_layer_by_hand(marked: bool) -> None:
    """The model's path (the adjacency normalized once, ``GCNLayer``), and its gradient
    with the symmetric backward product equal to stock autograd's."""
    torch.manual_seed(3)
    symmetric = torch.cat([EDGES, EDGES.flip(0)], dim=1).unique(dim=1)
    layer = GCNLayer(2, 2, add_self_loops=False, normalize=False)
    x = X.clone().requires_grad_(True)
    out = layer(x, normalized_adjacency(symmetric, None, 4, symmetric=marked))
    # Undirected: 0-1, 0-2, 0-3, 2-3. Degrees with the self-loop: 4, 2, 3, 3.
    degree = [4, 2, 3, 3]
    neighbours = {0: [0, 1, 2, 3], 1: [1, 0], 2: [2, 0, 3], 3: [3, 0, 2]}
    wx = X @ layer.lin.weight.T
    for v, group in neighbours.items():
        expected = sum(wx[u] / math.sqrt(degree[u] * degree[v]) for u in group) + layer.bias
        torch.testing.assert_close(out[v], expected.detach(), rtol=1e-5, atol=1e-6)
    # PyG's own normalizing layer with the same weights gives the same output and gradient.
    stock = GCNConv(2, 2, add_self_loops=True, normalize=True)
    stock.load_state_dict(layer.state_dict())
    x_stock = X.clone().requires_grad_(True)
    reference = stock(x_stock, symmetric)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    upstream = torch.arange(8.0).view(4, 2)
    (out * upstream).sum().backward()
    (reference * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_stock.grad, rtol=1e-5, atol=1e-6)


def test_gcn_adjacency_is_marked_symmetric_only_for_the_train_graph() -> None:
    from tests.models.test_contract import build, checkerboard

    board = checkerboard()
    model = build("gcn", embedding_dim=4, epochs=1, eval_every=1)
    model.fit(board.data, board.validation)
    assert model._full_graph_edges()[0].symmetric
    directed = sp.csr_matrix(model._graph.toarray() * np.triu(np.ones(model._graph.shape)))
    assert not model._edges(directed)[0].symmetric


def test_social_layer_by_hand() -> None:
    # Users 0, 1; items 2, 3. User 0 clicked 2 and 3, user 1 clicked 3; 0 and 1 are friends.
    bipartite = torch.tensor([[2, 3, 3, 0, 0, 1], [0, 0, 1, 2, 3, 3]])
    ties = torch.tensor([[1, 0], [0, 1]])
    layer = SocialLayer(2, ties)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.eye(2))
        layer.linear.bias.zero_()
    out = layer(X, bipartite)
    torch.testing.assert_close(out[0], (X[2] + X[3]) / 2 + X[1])  # mean of its items + mean of its friends
    torch.testing.assert_close(out[1], X[3] + X[0])
    torch.testing.assert_close(out[2], X[0])  # an item: the mean of its users
    torch.testing.assert_close(out[3], (X[0] + X[1]) / 2)


def test_ties_filtered_by_overlap() -> None:
    y = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32))
    social = sp.csr_matrix(np.array([[0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    all_ties = filter_ties(social, y, 0).toarray()
    assert (all_ties == all_ties.T).all() and np.trace(all_ties) == 0 and all_ties.sum() == 6
    one = filter_ties(social, y, 1).toarray()  # 0-1 share 2 items, 0-3 share 1, 0-2 none
    assert one[0].tolist() == [0, 1, 0, 1] and one.sum() == 4
    assert filter_ties(social, y, 2).toarray()[0].tolist() == [0, 1, 0, 0]


@pytest.mark.parametrize("name", ["gcn", "gat", "graphsage", "pinsage", "socialgcn", "gmf", "mlp", "neumf", "multvae"])
def test_the_layers_are_seeded_without_touching_the_global_generator(name: str) -> None:
    from tests.models.test_contract import build, checkerboard

    state = torch.random.get_rng_state()
    first = build(name, epochs=2).fit(checkerboard().data)
    assert torch.equal(torch.random.get_rng_state(), state)  # fork_rng restores it
    again = build(name, epochs=2).fit(checkerboard().data)
    assert np.array_equal(first.score(), again.score())


def test_pinsage_aggregates_its_weighted_neighbours_in_the_right_direction() -> None:
    # Node 0's importance neighbours are 1 (0.75) and 2 (0.25); node 1's only 0. The layer:
    # h_v = W_1 h_v + W_2 Σ_u W[v, u] h_u (GraphConv), messages from u to v.
    from debias_pipeline.models.pinsage import PinSage
    from tests.models.test_contract import build, checkerboard

    model = build("pinsage", epochs=1, num_layers=1, fanouts=[10])
    model.fit(checkerboard().data)
    weights = sp.csr_matrix(([0.75, 0.25, 1.0], ([0, 0, 1], [1, 2, 0])), shape=(48, 48), dtype=np.float32)
    edge_index, edge_weight = PinSage._edges(model, weights)
    layer = model.module.layers[0]
    h = model.module.inputs(torch.arange(48))
    with torch.no_grad():
        out = layer(h, edge_index, edge_weight)
        expected0 = layer.lin_root(h[0]) + layer.lin_rel(0.75 * h[1] + 0.25 * h[2])
        expected2 = layer.lin_root(h[2]) + layer.lin_rel.bias  # nothing flows into 2
    torch.testing.assert_close(out[0], expected0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[2], expected2, rtol=1e-5, atol=1e-6)
