"""Neighbourhoods of the user-item graph, vectorized on CSR: mini-batch neighbour
sampling (GraphSAGE, GAT) and random-walk importance (PinSage).

The graph is the symmetric bipartite graph of the train positives over
``n_users + n_items`` nodes (users first, then items), as a CSR adjacency whose row v
lists v's neighbours. Every draw comes from an explicit ``torch.Generator``: the same
seed gives the same neighbourhoods. No function loops over nodes in Python; the loops
run over hops or walk steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


def bipartite_graph(interactions: sp.spmatrix, social: sp.spmatrix | None = None) -> sp.csr_matrix:
    """The symmetric 0/1 adjacency (n_users + n_items)² of the train positives (and, with
    ``social``, the user-user ties), sorted CSR without duplicates or self-loops."""
    y = (sp.csr_matrix(interactions) > 0).astype(np.float32)
    n_users = y.shape[0]
    user_block = None
    if social is not None:
        user_block = (sp.csr_matrix(social) > 0).astype(np.float32)
        user_block.setdiag(0)
        user_block.eliminate_zeros()
    graph = sp.bmat([[user_block, y], [y.T, None]], format="csr", dtype=np.float32)
    if graph.shape[0] != n_users + y.shape[1]:  # bmat drops an all-empty user block
        graph.resize((n_users + y.shape[1],) * 2)
    graph.sum_duplicates()
    graph.sort_indices()
    return graph


def _segment_ranks(segments: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The rank of every element within its segment by ``keys`` (ascending); segments are
    contiguous runs of equal non-negative integer ids.

    With keys in [0, 1) (the sampler's random keys) one sort of ``segments + keys``
    orders the segments and, within each, the keys, five times faster than
    ``np.lexsort``; keys closer than the float64 spacing at the segment id (2⁻³⁷ at
    65,536) then fall back to their positions."""
    if keys.size and keys.min() >= 0 and keys.max() < 1:
        order = np.argsort(segments + keys, kind="stable")
    else:
        order = np.lexsort((keys, segments))
    ranks = np.empty(segments.size, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(segments[order])) + 1]
    lengths = np.diff(np.r_[starts, segments.size])
    ranks[order] = np.arange(segments.size) - np.repeat(starts, lengths)
    return ranks


def sample_neighbors(
    graph: sp.csr_matrix, nodes: np.ndarray, fanout: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``fanout`` neighbours of each node of ``nodes``, uniformly without
    replacement (all of them when it has fewer).

    Returns:
        (targets, sources): the sampled edges, source → target, target in ``nodes``.
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    degree = np.diff(graph.indptr)[nodes]
    segment = np.repeat(np.arange(nodes.size), degree)  # one entry per candidate edge
    offsets = np.arange(segment.size) - np.repeat(np.cumsum(degree) - degree, degree)
    sources = graph.indices[np.repeat(graph.indptr[nodes], degree) + offsets].astype(np.int64)
    keys = torch.rand(segment.size, generator=generator, dtype=torch.float64).numpy()
    keep = _segment_ranks(segment, keys) < fanout  # the fanout smallest random keys of each node
    return nodes[segment[keep]], sources[keep]


@dataclass(frozen=True)
class SampledSubgraph:
    """The union of the sampled hops around a batch's seed nodes, relabelled.

    Attributes:
        nodes: (n_sub,) global ids; the seeds come first, in the order given.
        edge_index: (2, n_edges) local ids, row 0 the source, row 1 the target (PyG).
        n_seeds: how many of ``nodes`` are the seeds.
    """

    nodes: np.ndarray
    edge_index: np.ndarray
    n_seeds: int


def sample_subgraph(
    graph: sp.csr_matrix, seeds: np.ndarray, fanouts: tuple[int, ...], generator: torch.Generator
) -> SampledSubgraph:
    """Hop k samples up to ``fanouts[k]`` neighbours of every node first reached at hop
    k − 1 (hop 0: the unique ``seeds``); the subgraph holds the sampled edges of every
    hop, so a batch touches only its sampled nodes."""
    seeds = np.asarray(seeds, dtype=np.int64)
    if np.unique(seeds).size != seeds.size:
        raise ValueError("the seed nodes of a subgraph must be unique")
    frontier = seeds
    targets_all, sources_all = [], []
    reached = seeds
    for fanout in fanouts:
        targets, sources = sample_neighbors(graph, frontier, fanout, generator)
        targets_all.append(targets)
        sources_all.append(sources)
        fresh = np.setdiff1d(np.unique(sources), reached, assume_unique=False)
        reached = np.concatenate([reached, fresh])
        frontier = fresh
    targets = np.concatenate(targets_all)
    sources = np.concatenate(sources_all)
    lookup = np.full(graph.shape[0], -1, dtype=np.int64)
    lookup[reached] = np.arange(reached.size)
    # Distinct edges sorted by (source, target), as np.unique(axis=1) would, on one key.
    keys = np.unique(lookup[sources] * reached.size + lookup[targets])
    edges = np.stack([keys // reached.size, keys % reached.size])
    return SampledSubgraph(reached, edges, seeds.size)


def random_walk_neighbors(
    graph: sp.csr_matrix,
    generator: torch.Generator,
    num_walks: int = 10,
    walk_length: int = 5,
    top_k: int = 10,
) -> sp.csr_matrix:
    """PinSage's importance neighbourhoods: from every node ``num_walks`` random walks of
    ``walk_length`` steps (each step to a uniform neighbour; a node without one stays
    put); the ``top_k`` most visited other nodes are its neighbours (ties: the smaller
    id), weighted by their visit counts normalized to sum to one.

    Returns:
        (n, n) CSR W, row v the weights of v's neighbours (``W[v, u]`` weighs u in v's
        aggregation).
    """
    n = graph.shape[0]
    degree = np.diff(graph.indptr)
    starts = np.repeat(np.arange(n, dtype=np.int64), num_walks)
    current = starts.copy()
    visits = []
    for _ in range(walk_length):
        draws = torch.rand(current.size, generator=generator, dtype=torch.float64).numpy()
        step = np.minimum((draws * degree[current]).astype(np.int64), np.maximum(degree[current] - 1, 0))
        moved = degree[current] > 0
        current = np.where(moved, graph.indices[np.minimum(graph.indptr[current] + step, graph.indices.size - 1)], current)
        visits.append(current.copy())
    visited = np.concatenate(visits)
    origin = np.tile(starts, walk_length)
    other = visited != origin
    pairs, counts = np.unique(origin[other] * n + visited[other], return_counts=True)
    rows, cols = pairs // n, pairs % n
    keep = _segment_ranks(rows, -counts.astype(np.float64) + cols / (n + 1.0)) < top_k
    rows, cols, counts = rows[keep], cols[keep], counts[keep].astype(np.float32)
    totals = np.bincount(rows, weights=counts, minlength=n)
    return sp.csr_matrix((counts / totals[rows], (rows, cols)), shape=(n, n), dtype=np.float32)
