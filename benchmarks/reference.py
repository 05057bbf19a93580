"""Reference paths: the way the public reference code of LightGCN and of the study
computes the same quantities, written plainly and slow on purpose.

- propagation: a coalesced sparse COO adjacency, ``torch.sparse.mm`` per layer, the
  layers stacked and averaged, stock autograd for the backward pass;
- negative sampling: a Python loop over the epoch's triples, redrawing a uniform item
  until it is not among the user's positives;
- the dual loss: σ(r̂)·σ(ô) materialized, then binary cross-entropy;
- metrics: a Python loop over users.

The benchmarks (``benchmarks/run.py``) time the fast paths against these, and
``tests/test_fast_paths.py`` checks that both give the same numbers. Nothing here is
imported by the package. The L2 term is this project's (``mean_batch ||e_u||² + ||e_i||²
+ ||e_j||²``, see ``TrainingConfig``), so that losses can be compared exactly.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F


def coo_adjacency(adjacency: sp.spmatrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """Â as a coalesced float32 sparse COO tensor."""
    coo = sp.coo_matrix(adjacency, dtype=np.float32)
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape).coalesce().to(device)


def reference_propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Mean of ``Â^k E`` for k = 0..num_layers, COO ``torch.sparse.mm`` and stock autograd."""
    layers = [embeddings]
    current = embeddings
    for _ in range(num_layers):
        current = torch.sparse.mm(adjacency, current)
        layers.append(current)
    return torch.stack(layers, dim=1).mean(dim=1)


def reference_bpr_batch_loss(
    user_table: torch.Tensor,
    item_table: torch.Tensor,
    adjacency: torch.Tensor | None,
    num_layers: int,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    weight_decay: float,
) -> torch.Tensor:
    """BPR loss of a batch of triples, the whole graph propagated for the batch."""
    n_users = user_table.shape[0]
    nodes = torch.cat([user_table, item_table])
    final = reference_propagate(adjacency, nodes, num_layers) if num_layers else nodes
    user_vectors = final[:n_users][users]
    positive_scores = torch.mul(user_vectors, final[n_users:][positives]).sum(dim=1)
    negative_scores = torch.mul(user_vectors, final[n_users:][negatives]).sum(dim=1)
    loss = torch.mean(F.softplus(negative_scores - positive_scores))
    penalty = (
        user_table[users].norm(2).pow(2) + item_table[positives].norm(2).pow(2) + item_table[negatives].norm(2).pow(2)
    ) / len(users)
    return loss + weight_decay * penalty


def reference_sample_triples(train: sp.csr_matrix, rng: np.random.Generator) -> np.ndarray:
    """One epoch of (user, positive, negative) triples, one per train positive, drawn in
    a Python loop: a random user with a positive, one of its positives, and a uniform
    item redrawn until it is not among the user's positives."""
    train = sp.csr_matrix(train)
    n_items = train.shape[1]
    positives = [train.indices[train.indptr[u] : train.indptr[u + 1]] for u in range(train.shape[0])]
    active = [u for u, items in enumerate(positives) if len(items)]
    triples = np.empty((train.nnz, 3), dtype=np.int64)
    for row in range(train.nnz):
        user = active[rng.integers(len(active))]
        items = positives[user]
        positive = items[rng.integers(len(items))]
        while True:
            negative = rng.integers(n_items)
            if negative not in items:
                break
        triples[row] = (user, positive, negative)
    return triples


def reference_bpr_steps(
    user_table: torch.nn.Parameter,
    item_table: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
    adjacency: torch.Tensor | None,
    num_layers: int,
    triples: np.ndarray,
    batch_size: int,
    weight_decay: float,
    max_batches: int | None = None,
) -> float:
    """Adam steps over ``triples`` in order, each batch sent to the device and its loss
    read back. Returns the mean batch loss."""
    device = user_table.device
    losses = []
    for start in range(0, len(triples), batch_size):
        if max_batches is not None and len(losses) >= max_batches:
            break
        batch = torch.from_numpy(triples[start : start + batch_size]).to(device)
        loss = reference_bpr_batch_loss(
            user_table, item_table, adjacency, num_layers, batch[:, 0], batch[:, 1], batch[:, 2], weight_decay
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.cpu().item())
    return float(np.mean(losses))


def reference_bpr_epoch(
    user_table: torch.nn.Parameter,
    item_table: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
    adjacency: torch.Tensor | None,
    num_layers: int,
    train: sp.csr_matrix,
    batch_size: int,
    weight_decay: float,
    rng: np.random.Generator,
) -> float:
    """One BPR epoch: the triples sampled in a Python loop and shuffled, then
    ``reference_bpr_steps``. Returns the mean batch loss."""
    triples = reference_sample_triples(train, rng)
    rng.shuffle(triples)
    return reference_bpr_steps(user_table, item_table, optimizer, adjacency, num_layers, triples, batch_size, weight_decay)


def reference_dual_loss(
    preference: torch.nn.Module, exposure: torch.nn.Module, targets: torch.Tensor, weight_decay: float
) -> torch.Tensor:
    """The dual model's full-batch loss with ``direct_dual_bce``: both logit tables, then
    σ(r̂)·σ(ô), then BCE, + λ Σ ||E^(0)||² of both towers."""
    pref_users, pref_items = preference()
    expo_users, expo_items = exposure()
    loss = direct_dual_bce(pref_users @ pref_items.T, expo_users @ expo_items.T, targets)
    penalty = sum(table.pow(2).sum() for table in [*preference.base_embeddings(), *exposure.base_embeddings()])
    return loss + weight_decay * penalty


def direct_dual_bce(preference: torch.Tensor, exposure: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ξ̂ = σ(r̂)·σ(ô), the product materialized, against Y."""
    click = torch.sigmoid(preference) * torch.sigmoid(exposure)
    return F.binary_cross_entropy(click, targets)


def _ndcg(relevance: list[float], n_relevant: int, k: int) -> float:
    dcg = sum(rel / math.log2(rank + 2) for rank, rel in enumerate(relevance[:k]))
    idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, n_relevant)))
    return dcg / idcg


def reference_thesis_metrics(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user Recall@K and NDCG@K of the thesis protocol, one user at a time."""
    rows_of: dict[int, list[int]] = {}
    for row, user in enumerate(users.tolist()):
        rows_of.setdefault(user, []).append(row)
    user_ids, recall, ndcg = [], [], []
    for user in sorted(rows_of):
        rows = np.array(rows_of[user])
        n_relevant = int(labels[rows].sum())
        if n_relevant == 0:
            continue
        order = rows[np.lexsort((items[rows], -scores[rows]))]
        relevance = labels[order].astype(float).tolist()
        user_ids.append(user)
        recall.append(sum(relevance[:k]) / min(k, n_relevant))
        ndcg.append(_ndcg(relevance, n_relevant, k))
    return np.array(user_ids), np.array(recall), np.array(ndcg)


def reference_full_ranking(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    k: int,
    batch_users: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user full-ranking Recall@K and NDCG@K: users scored in batches, train items
    masked through per-user index lists, ``topk``, then a loop over users for the metrics.

    The relevant items of a user are its positives of the split that are not train items.
    """
    train = sp.csr_matrix(train)
    relevant_of: dict[int, set[int]] = {}
    seen_of: dict[int, set[int]] = {}
    for user, item, label in zip(users.tolist(), items.tolist(), labels.tolist(), strict=True):
        if user not in seen_of:
            seen_of[user] = set(train.indices[train.indptr[user] : train.indptr[user + 1]].tolist())
        if label > 0 and item not in seen_of[user]:
            relevant_of.setdefault(user, set()).add(item)
    evaluated = sorted(relevant_of)
    recall, ndcg = [], []
    for start in range(0, len(evaluated), batch_users):
        batch = evaluated[start : start + batch_users]
        rating = user_emb[torch.tensor(batch, device=user_emb.device)] @ item_emb.T
        exclude_rows, exclude_items = [], []
        for row, user in enumerate(batch):
            seen = train.indices[train.indptr[user] : train.indptr[user + 1]].tolist()
            exclude_rows.extend([row] * len(seen))
            exclude_items.extend(seen)
        rating[exclude_rows, exclude_items] = -math.inf
        top = torch.topk(rating, k=min(k, rating.shape[1]), dim=1).indices.cpu().numpy()
        for row, user in enumerate(batch):
            relevant = relevant_of[user]
            relevance = [1.0 if item in relevant else 0.0 for item in top[row].tolist()]
            recall.append(sum(relevance) / min(k, len(relevant)))
            ndcg.append(_ndcg(relevance, len(relevant), k))
    return np.array(evaluated), np.array(recall), np.array(ndcg)
