"""The neighbour sampler and PinSage's random walks, on graphs where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.neighbors import (
    bipartite_graph,
    random_walk_neighbors,
    sample_neighbors,
    sample_subgraph,
)


def star(n_leaves: int) -> sp.csr_matrix:
    """Node 0 joined to nodes 1..n_leaves."""
    rows = np.r_[np.zeros(n_leaves, dtype=int), np.arange(1, n_leaves + 1)]
    cols = np.r_[np.arange(1, n_leaves + 1), np.zeros(n_leaves, dtype=int)]
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_leaves + 1,) * 2)


def random_graph(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return bipartite_graph(sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32)))


def test_the_bipartite_graph_is_symmetric_with_users_first() -> None:
    y = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    graph = bipartite_graph(y).toarray()
    assert graph.shape == (5, 5) and (graph == graph.T).all()
    assert graph[0, 2] == 1 and graph[0, 4] == 1 and graph[1, 3] == 1 and graph.sum() == 6
    social = sp.csr_matrix(np.array([[1, 1], [1, 0]], dtype=np.float32))
    with_ties = bipartite_graph(y, social).toarray()
    assert with_ties[0, 1] == with_ties[1, 0] == 1 and with_ties[0, 0] == 0


def test_fanout_caps_the_draws_without_replacement() -> None:
    graph = random_graph()
    nodes = np.arange(graph.shape[0])
    targets, sources = sample_neighbors(graph, nodes, 3, torch.Generator().manual_seed(0))
    degree = np.diff(graph.indptr)
    per_node = np.bincount(targets, minlength=nodes.size)
    assert (per_node == np.minimum(degree, 3)).all()
    assert graph[targets, sources].all()  # every sampled source is a neighbour
    pairs = targets * graph.shape[0] + sources
    assert np.unique(pairs).size == pairs.size  # no neighbour twice


def test_every_neighbour_is_drawn_about_equally_often() -> None:
    graph = star(10)
    counts = np.zeros(11)
    generator = torch.Generator().manual_seed(1)
    for _ in range(2000):
        _, sources = sample_neighbors(graph, np.array([0]), 3, generator)
        counts[sources] += 1
    np.testing.assert_allclose(counts[1:] / 2000, 0.3, atol=0.03)


def test_the_sampler_is_deterministic_under_a_seed_and_resamples_otherwise() -> None:
    graph = random_graph()
    nodes = np.arange(0, 70, 3)
    first = sample_subgraph(graph, nodes, (10, 5), torch.Generator().manual_seed(5))
    again = sample_subgraph(graph, nodes, (10, 5), torch.Generator().manual_seed(5))
    assert np.array_equal(first.nodes, again.nodes) and np.array_equal(first.edge_index, again.edge_index)
    generator = torch.Generator().manual_seed(5)
    one, two = sample_subgraph(graph, nodes, (2, 2), generator), sample_subgraph(graph, nodes, (2, 2), generator)
    assert not np.array_equal(one.edge_index, two.edge_index)


def test_a_subgraph_holds_only_the_sampled_hops() -> None:
    graph = random_graph()
    seeds = np.array([3, 50, 7])
    sub = sample_subgraph(graph, seeds, (4, 2), torch.Generator().manual_seed(2))
    assert list(sub.nodes[:3]) == [3, 50, 7] and sub.n_seeds == 3
    sources, targets = sub.nodes[sub.edge_index[0]], sub.nodes[sub.edge_index[1]]
    assert graph[targets, sources].all()
    # hop 1 edges end at a seed (≤ 4 each); hop 2 edges at a node first reached at hop 1 (≤ 2 each)
    into_seeds = np.isin(targets, seeds)
    assert np.bincount(targets[into_seeds]).max() <= 4
    hop_one = np.setdiff1d(sources[into_seeds], seeds)
    assert set(np.unique(targets[~into_seeds])) <= set(hop_one)
    assert np.bincount(targets[~into_seeds]).max() <= 2
    assert sub.nodes.size < graph.shape[0]
    with pytest.raises(ValueError, match="unique"):
        sample_subgraph(graph, np.array([1, 1]), (2,), torch.Generator())


def test_walk_counts_on_a_path_of_two_nodes() -> None:
    # 0 - 1: every step alternates, so from 0 a walk of 5 steps visits 1 three times
    # (steps 1, 3, 5) and 0 twice (not counted): node 1 is 0's only neighbour, weight 1.
    graph = sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=np.float32))
    weights = random_walk_neighbors(graph, torch.Generator().manual_seed(0), num_walks=10, walk_length=5)
    assert weights.toarray().tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_walk_counts_on_a_star() -> None:
    # From a leaf the steps go hub, leaf, hub, leaf, hub: the hub gets 3 visits per walk,
    # 30 of 10 walks, and every other leaf at most the 20 leaf steps.
    graph = star(4)
    weights = random_walk_neighbors(graph, torch.Generator().manual_seed(3), num_walks=10, walk_length=5, top_k=2)
    for leaf in range(1, 5):
        row = weights[leaf]
        assert row.nnz == 2 and row.sum() == pytest.approx(1.0) and weights[leaf, leaf] == 0
        hub, other = weights[leaf, 0], row.data[row.indices != 0][0]
        count = 30 * other / hub  # the other kept leaf's visits
        assert count == pytest.approx(round(count), abs=1e-4) and 1 <= round(count) <= 20
    # From the hub every odd step is a leaf: 30 leaf visits, no hub visit counted.
    assert weights[0].nnz == 2 and weights[0, 0] == 0 and weights[0].sum() == pytest.approx(1.0)


def test_walks_are_deterministic_under_a_seed() -> None:
    graph = random_graph()
    first = random_walk_neighbors(graph, torch.Generator().manual_seed(9))
    again = random_walk_neighbors(graph, torch.Generator().manual_seed(9))
    assert (first != again).nnz == 0
    assert (np.diff(first.indptr) <= 10).all()
    np.testing.assert_allclose(np.asarray(first.sum(axis=1)).ravel()[np.diff(first.indptr) > 0], 1.0, rtol=1e-6)
