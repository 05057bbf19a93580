"""Mini-batch training on sampled (user, positive, negative) triples (``loss: bpr``).

An epoch is one pass over the train positives in a shuffled order, ``batch_size`` of
them per Adam step, each with one negative drawn by the configured sampler. A LightGCN
tower propagates the graph for every batch, as in LightGCN (He et al., SIGIR 2020), but
forms the layer mean only at the batch's rows, with a hand-written backward pass
(``_BatchPropagation``): an epoch costs (batches x nnz(Â)), quadratic in the
interactions at a fixed batch size. ``propagation: stale`` (``StaleLayers``) makes
only every ``refresh_every``-th step exact and reads the other steps' layers 1..K
from tables propagated once after it. Everything stays on the model's device; the
epoch's loss is read back once, at its end. Y is never densified.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.losses import bpr_loss, dual_triple_loss, enhanced_bpr_loss, l2_penalty
from debias_pipeline.models.sampling import build_negative_sampler
from debias_pipeline.models.towers import EmbeddingTower, PopularityPrior, propagate, sparse_mm


def _rows_and_transpose(adjacency: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Â[rows, :] (len(rows), n) and Â[:, rows] (n, len(rows)) as CSR tensors, for a
    symmetric CSR Â on the CPU. scipy slices and transposes (O(nnz of the rows), no
    sort); torch would sort to multiply by a transposed CSR."""
    crow, col, values = adjacency.crow_indices(), adjacency.col_indices(), adjacency.values()
    matrix = sp.csr_matrix((values.numpy(), col.numpy(), crow.numpy()), shape=tuple(adjacency.shape), copy=False)
    selected = matrix[rows]
    transposed = selected.T.tocsr()  # Â[rows, :]ᵀ = Â[:, rows], Â being symmetric
    index_dtype = col.numpy().dtype
    return tuple(
        torch.sparse_csr_tensor(
            torch.from_numpy(part.indptr.astype(index_dtype, copy=False)),
            torch.from_numpy(part.indices.astype(index_dtype, copy=False)),
            torch.from_numpy(part.data),
            size=part.shape,
        )
        for part in (selected, transposed)
    )


class _BatchPropagation(torch.autograd.Function):
    """LightGCN's layer mean ``(1/(K+1)) Σ_k Â^k E`` at the rows ``ids`` only, and the
    base rows ``E[ids]`` (for the L2 term).

    Layers 1..K-1 are propagated in full; with ``last`` (Â[ids, :] and Â[:, ids], ids
    unique) the K-th layer is computed for those rows alone, in the forward and in the
    backward pass. The backward pass is Horner's scheme, h ← Â h + Sᵀ g, with S the row
    selection and g the incoming gradient / (K+1), and the base rows' gradient added at
    their rows: Â is symmetric and the map linear, so nothing of the forward pass is
    saved but Â, and no gradient the size of a table is formed but the result.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        nodes: torch.Tensor,
        adjacency: torch.Tensor,
        num_layers: int,
        ids: torch.Tensor,
        last: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.adjacency, ctx.num_layers, ctx.ids, ctx.last = adjacency, num_layers, ids, last
        ctx.n_nodes = nodes.shape[0]
        ctx.set_materialize_grads(False)
        layer = nodes
        base = nodes[ids]  # (len(ids), d)
        total = base.clone()
        for _ in range(num_layers - 1):
            layer = sparse_mm(adjacency, layer)
            total += layer[ids]
        total += sparse_mm(last[0], layer) if last is not None else sparse_mm(adjacency, layer)[ids]
        return total.div_(num_layers + 1), base

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor | None, grad_base: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        if grad is None and grad_base is None:
            return None, None, None, None, None
        if grad is None:
            h = grad_base.new_zeros(ctx.n_nodes, grad_base.shape[1])
        else:
            grad = grad / (ctx.num_layers + 1)  # (len(ids), d)
            if ctx.last is not None:
                h = sparse_mm(ctx.last[1], grad)  # Â[:, ids] g
            else:
                selected = torch.zeros(ctx.n_nodes, grad.shape[1], dtype=grad.dtype, device=grad.device)
                h = sparse_mm(ctx.adjacency, selected.index_add_(0, ctx.ids, grad))
            h.index_add_(0, ctx.ids, grad)  # + Sᵀ g; ids may repeat
            for _ in range(ctx.num_layers - 1):
                h = sparse_mm(ctx.adjacency, h).index_add_(0, ctx.ids, grad)
        if grad_base is not None:
            h.index_add_(0, ctx.ids, grad_base)
        return h, None, None, None, None


class StaleLayers:
    """``propagation: stale`` (``TrainingConfig``) for every LightGCN tower of a module.

    Step s of an epoch (from 0) is exact when s is a multiple of ``refresh_every``:
    the tower has no tables and ``tower_rows`` propagates the whole graph and back. The
    next step propagates once, without gradient, the tables of layers 1..K,
    ``T = (1/(K+1)) Σ_{k=1..K} Â^k E`` (n_users + n_items, d), from the base embeddings
    E as that exact step left them; until the next exact step a row's final embedding
    is ``e_r/(K+1) + T_r`` (``stale_rows``): layer 0 current, layers 1..K missing at
    most ``refresh_every − 2`` optimizer steps. The gradient of such a step is that of
    this surrogate, ``∂L/∂e_r = g_r/(K+1)`` at the batch's own base rows and nothing
    at their neighbours (T is a constant), against ``(1/(K+1)) Σ_k Â^k Sᵀ g`` for
    the exact step. With Adam that factor hardly changes a base row's step, but
    between refreshes a row's final embedding moves by only 1/(K+1) of it (layers
    1..K are held), so at one lr the surrogate needs more epochs: scale the lr by
    K+1, or the epochs (docs/performance.md, "Accuracy against the exact mode", has
    the LastFM and Gowalla measurements). An epoch costs (steps / refresh_every) x about 3K sparse
    products over nnz(Â), plus steps x O(batch x d) with a row optimizer
    (``optimizer: sparse_adam``): with ``refresh_every`` at least the epoch's steps,
    linear in the interactions. ``clear`` drops the tables at the end of the epoch, so
    scoring and saving always see the exact model.

    Args:
        module: the model's module; its ``EmbeddingTower`` with layers are scheduled.
        refresh_every: steps between two exact steps.
    """

    def __init__(self, module: torch.nn.Module, refresh_every: int) -> None:
        self.towers = [m for m in module.modules() if isinstance(m, EmbeddingTower) and m.num_layers > 0]
        self.refresh_every = refresh_every

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        """Ready the towers for step ``step`` of the epoch."""
        exact = step % self.refresh_every == 0
        for tower in self.towers:
            if exact:
                tower.stale_layers = None
            elif tower.stale_layers is None:
                nodes = torch.cat([tower.user_embedding, tower.item_embedding])  # (n_users + n_items, d)
                tower.stale_layers = propagate(tower.adjacency, nodes, tower.num_layers) - nodes / (tower.num_layers + 1)

    def clear(self) -> None:
        """Drop the tables (end of an epoch)."""
        for tower in self.towers:
            tower.stale_layers = None


def stale_rows(
    tower: EmbeddingTower, user_rows: torch.Tensor, item_rows: torch.Tensor, users: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final user (n, d) and item (m, d) embeddings ``e_r/(K+1) + T_r`` from the base
    rows ``user_rows`` (n, d) and ``item_rows`` (m, d) of ``users`` and ``items`` and the
    tower's tables T (``StaleLayers``); the gradient flows to the base rows only."""
    scale = 1.0 / (tower.num_layers + 1)
    layers = tower.stale_layers  # (n_users + n_items, d)
    return user_rows * scale + layers[users], item_rows * scale + layers[items + tower.n_users]


def tower_rows(
    tower: EmbeddingTower, users: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tower's final embeddings of the given users (n, d) and items (m, d), and
    their base embeddings E^(0) (n + m, d), users first.

    For LightGCN only the layer mean at those rows is formed (``_BatchPropagation``). On
    the CPU the rows are made unique and the last layer is restricted to them; on a GPU,
    where that would need the sizes on the host every batch, the last layer is full.
    Between two exact steps of ``propagation: stale`` the rows are ``stale_rows``.
    """
    if tower.num_layers == 0 or tower.stale_layers is not None:
        user_rows, item_rows = tower.user_embedding[users], tower.item_embedding[items]
        base = torch.cat([user_rows, item_rows])
        if tower.num_layers > 0:
            user_rows, item_rows = stale_rows(tower, user_rows, item_rows, users, items)
        return user_rows, item_rows, base
    nodes = torch.cat([tower.user_embedding, tower.item_embedding])  # (n_users + n_items, d)
    ids = torch.cat([users, items + tower.n_users])
    if tower.adjacency.device.type == "cpu":
        rows, inverse = torch.unique(ids, return_inverse=True)
        last = _rows_and_transpose(tower.adjacency, rows.numpy())
        final, base = _BatchPropagation.apply(nodes, tower.adjacency, tower.num_layers, rows, last)
        final, base = final[inverse], base[inverse]
    else:
        final, base = _BatchPropagation.apply(nodes, tower.adjacency, tower.num_layers, ids, None)
    return final[: users.numel()], final[users.numel() :], base


def _scores_and_penalty(
    user_vectors: torch.Tensor, item_vectors: torch.Tensor, base_rows: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    positive_vectors, negative_vectors = item_vectors.split(user_vectors.shape[0])
    positive_scores = (user_vectors * positive_vectors).sum(dim=1)
    negative_scores = (user_vectors * negative_vectors).sum(dim=1)
    return positive_scores, negative_scores, l2_penalty(base_rows) / user_vectors.shape[0]


def triple_scores(
    tower: EmbeddingTower, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of a batch of triples under one tower, and the batch's L2 term.

    Args:
        tower: the embedding tower (MF or LightGCN).
        users, positives, negatives: (batch,) ids.

    Returns:
        ``r̂_ui`` (batch,), ``r̂_uj`` (batch,) and the mean over the batch of
        ``||e_u||² + ||e_i||² + ||e_j||²`` on the base embeddings E^(0).
    """
    user_vectors, item_vectors, base = tower_rows(tower, users, torch.cat([positives, negatives]))
    return _scores_and_penalty(user_vectors, item_vectors, list(base.split(users.numel())))


def row_triple_scores(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    final: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``triple_scores`` from a tower's gathered base rows: the users' (batch, d) and
    the positives' then the negatives' (2 batch, d); the final embeddings are the same
    rows (MF) or ``final``, the users' and the items' (``stale_rows``)."""
    user_final, item_final = (user_vectors, item_vectors) if final is None else final
    return _scores_and_penalty(user_final, item_final, [user_vectors, *item_vectors.split(user_vectors.shape[0])])


def triple_loss(
    scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    weight_decay: float,
    enhanced: tuple[float, float, float] | None = None,
) -> torch.Tensor:
    """BPR (or, with ``enhanced`` = (margin, temperature, alpha), the enhanced loss of
    ``losses.enhanced_bpr_loss``) of (r̂_ui, r̂_uj, L2 term) + ``weight_decay`` x the L2 term."""
    positive_scores, negative_scores, penalty = scores
    if enhanced is None:
        return bpr_loss(positive_scores, negative_scores) + weight_decay * penalty
    return enhanced_bpr_loss(positive_scores, negative_scores, *enhanced) + weight_decay * penalty


def bpr_batch_loss(
    tower: EmbeddingTower,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    weight_decay: float,
    enhanced: tuple[float, float, float] | None = None,
) -> torch.Tensor:
    """``triple_loss`` of the tower's ``triple_scores`` on the triples."""
    return triple_loss(triple_scores(tower, users, positives, negatives), weight_decay, enhanced)


class RowAdam:
    """Adam over only the rows of embedding tables that a step touches: the update of
    ``torch.optim.SparseAdam`` (a row's moments move only when the row is in the batch;
    one step count for the bias corrections), done with index operations on dense
    tables instead of sparse gradient tensors. Each table's two moments share one
    (n, 2d) table, so a step reads and writes each touched row's state once.

    Args:
        tables: the (n, d) tables updated in place.
        lr, betas, eps: Adam's.
    """

    def __init__(self, tables: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.tables, self.lr, self.betas, self.eps = tables, lr, betas, eps
        self.moments = [t.new_zeros(t.shape[0], 2 * t.shape[1]) for t in tables]  # [m | v] per row
        self.steps = 0

    @torch.no_grad()
    def step(self, gradients: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One step; ``gradients`` holds, per table, the (k,) row ids (repeats summed)
        and their (k, d) gradients."""
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr * math.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        for table, moments, (ids, grad) in zip(self.tables, self.moments, gradients, strict=True):
            rows, inverse = torch.unique(ids, return_inverse=True)
            grad = grad.new_zeros(rows.numel(), grad.shape[1]).index_add_(0, inverse, grad)
            state = moments.index_select(0, rows)  # (k, 2d)
            first, second = state.split(table.shape[1], dim=1)
            first.mul_(beta1).add_(grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            moments.index_copy_(0, rows, state)
            table.index_add_(0, rows, first / second.sqrt().add_(self.eps), alpha=-step_size)


def dual_batch_loss(
    preference: EmbeddingTower,
    exposure: EmbeddingTower,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    weight_decay: float,
    exposure_prior: PopularityPrior | None = None,
) -> torch.Tensor:
    """The dual model on the same triples: ``dual_triple_loss`` of both towers' scores
    + ``weight_decay`` x the sum of both towers' batch L2 terms. With ``exposure_prior``
    its value at each pair is added to the exposure tower's score (ô = tower + prior);
    the prior's scalars carry no L2 term."""
    preference_positive, preference_negative, preference_penalty = triple_scores(
        preference, users, positives, negatives
    )
    exposure_positive, exposure_negative, exposure_penalty = triple_scores(exposure, users, positives, negatives)
    if exposure_prior is not None:
        exposure_positive = exposure_positive + exposure_prior.pairs(users, positives)
        exposure_negative = exposure_negative + exposure_prior.pairs(users, negatives)
    loss = dual_triple_loss(preference_positive, preference_negative, exposure_positive, exposure_negative)
    return loss + weight_decay * (preference_penalty + exposure_penalty)


def positive_pairs(train: sp.csr_matrix, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (user, item) ids of the positives of a canonical CSR, in row order, on ``device``."""
    rows = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
    return torch.from_numpy(rows).to(device), torch.from_numpy(train.indices.astype(np.int64)).to(device)


class MiniBatchEpochs:
    """Runs one mini-batch epoch of ``model`` per call and returns its mean batch loss.

    The shuffling and the negatives come from one generator on the model's device,
    seeded with the model's seed: on the CPU the same seed gives the same numbers.

    Args:
        model: a gradient model whose ``batch_loss`` scores triples; its module is built.
        data: the train data (Y as a sparse matrix).
        optimizer: the optimizer of the model's parameters (``None`` with ``row_step``).
        row_step: instead of the optimizer, a step that trains on a batch's triples
            itself and returns its loss (MF's ``row_stepper``).
    """

    def __init__(
        self,
        model: Recommender,  # a FullBatchRecommender (trainers.py) with loss: bpr
        data: TrainData,
        optimizer: torch.optim.Optimizer | None,
        row_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        config = model.config
        self.model = model
        self.optimizer = optimizer
        self.row_step = row_step
        self.batch_size = config.batch_size
        self.clip = getattr(config, "grad_clip_norm", None)
        self.generator = torch.Generator(device=model.device).manual_seed(model.seed)
        if hasattr(model, "negative_sampler"):  # a model with its own schedule (PinSage)
            self.sampler = model.negative_sampler(data.interactions, self.generator)
        else:
            self.sampler = build_negative_sampler(
                config.negative_sampling, data.interactions, self.generator, hard_pool_size=config.hard_pool_size
            )
        self.users, self.items = positive_pairs(self.sampler.train, model.device)  # (n_positives,) each
        stale = getattr(config, "propagation", "exact") == "stale"
        self.stale = StaleLayers(model.module, config.refresh_every) if stale else None

    @torch.no_grad()
    def _refresh_sampler(self) -> None:
        user_emb, item_emb = self.model.preference_embeddings()  # (n_users, d), (n_items, d)
        self.sampler.refresh(lambda users: user_emb[users] @ item_emb.T)

    def __call__(self, max_batches: int | None = None) -> torch.Tensor:
        """One epoch; ``max_batches`` stops it early (for timing a part of an epoch)."""
        model, optimizer = self.model, self.optimizer
        model.module.train()
        self.sampler.begin_epoch()
        if self.sampler.needs_scores:
            self._refresh_sampler()
        n_positives = self.users.numel()
        order = torch.randperm(n_positives, generator=self.generator, device=self.users.device)
        total = torch.zeros((), dtype=torch.float64, device=self.users.device)
        stop = n_positives if max_batches is None else min(n_positives, max_batches * self.batch_size)
        for step, start in enumerate(range(0, stop, self.batch_size)):
            if self.stale is not None:
                self.stale.before_step(step)
            batch = order[start : start + self.batch_size]
            users, positives = self.users[batch], self.items[batch]
            negatives = self.sampler.sample_for(users, positives)
            if self.row_step is not None:
                loss = self.row_step(users, positives, negatives)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = model.batch_loss(users, positives, negatives)
                loss.backward()
                if self.clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.module.parameters(), self.clip)
                optimizer.step()
            total += loss.detach() * batch.numel()
        if self.stale is not None:
            self.stale.clear()
        return total / stop
