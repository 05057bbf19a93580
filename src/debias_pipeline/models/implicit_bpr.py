"""MF-BPR epochs run by ``implicit``'s BPR (``solver: implicit_bpr``): the SGD of
LearnBPR (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback",
UAI 2009, Algorithm 1), one triple per step, compiled, on the project's factor tables."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.models.minibatch import positive_pairs, row_triple_scores, triple_loss
from debias_pipeline.models.sampling import build_negative_sampler
from debias_pipeline.models.towers import EmbeddingTower

# Triples of the fixed sample on which an epoch's training loss is reported.
LOSS_SAMPLE = 1 << 12


def bias_columns(tower: EmbeddingTower) -> None:
    """Ready an MF tower's last column for ``implicit``'s item bias: the users' set to 1
    (never updated), the items' (the biases) to 0. With them ``r̂_ui = u_u · v_i`` is
    ``implicit``'s score, the first d − 1 columns' product plus the item's bias."""
    with torch.no_grad():
        tower.user_embedding[:, -1] = 1.0
        tower.item_embedding[:, -1] = 0.0


class ImplicitBprEpochs:
    """One epoch of ``implicit``'s BPR per call on an MF tower's tables, in place; returns
    the project's BPR loss on a fixed sample of triples.

    A step draws a train positive (u, i) uniformly (with replacement, as many draws as
    positives an epoch) and j as the item of another uniformly drawn positive, so in
    proportion to its number of train positives (the project's ``negative_sampling:
    popularity``); with j a positive of u the draw is skipped
    (``verify_negative_samples``), so negatives are never positives, as the project's
    samplers ensure. With x = u_u · (v_i − v_j) and z = σ(−x), it moves
    ``u_u += lr (z (v_i − v_j) − 2λ u_u)``, ``v_i += lr (z u_u − 2λ v_i)``,
    ``v_j += lr (−z u_u − 2λ v_j)``: SGD on the project's per-triple objective
    ``−log σ(x) + λ (‖u_u‖² + ‖v_i‖² + ‖v_j‖²)``, hence ``implicit``'s regularization
    = 2λ and its learning rate = ``lr``. The last column is the item bias
    (``bias_columns``): moved by ``z`` and decayed like the rest; the users' 1 stays.

    Reproducibility: each epoch's draws come from a seed taken from a generator seeded
    with ``seed``, so epochs differ and a run repeats. With ``num_threads`` 1 the same
    seed gives the same numbers; with more threads the steps race on shared rows
    (Hogwild), faster but not repeatable.

    Args:
        tower: an MF tower (``num_layers`` 0) on the CPU, float32, ``bias_columns`` applied.
        interactions: Y (n_users, n_items), sparse.
        lr: the SGD step.
        weight_decay: λ.
        num_threads: ``implicit``'s threads (0: all cores).
        seed: the seed of the epochs' draws and of the loss sample.
    """

    def __init__(
        self,
        tower: EmbeddingTower,
        interactions: sp.spmatrix,
        lr: float,
        weight_decay: float,
        num_threads: int,
        seed: int,
    ) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.tower, self.weight_decay = tower, weight_decay
        self.seeds = np.random.default_rng(seed)
        self.bpr = BayesianPersonalizedRanking(
            factors=tower.embedding_dim - 1,  # implicit adds the bias column
            learning_rate=lr,
            regularization=2.0 * weight_decay,
            dtype=np.float32,
            iterations=1,
            num_threads=num_threads,
            verify_negative_samples=True,
        )
        self.bpr.user_factors = tower.user_embedding.detach().numpy()  # (n_users, d), shares memory with the table
        self.bpr.item_factors = tower.item_embedding.detach().numpy()  # (n_items, d)
        generator = torch.Generator().manual_seed(seed)
        sampler = build_negative_sampler("popularity", interactions, generator)
        self.user_items = sp.csr_matrix(sampler.train, dtype=np.float32)
        users, items = positive_pairs(sampler.train, torch.device("cpu"))
        chosen = torch.randperm(users.numel(), generator=generator)[:LOSS_SAMPLE]
        self.sample = users[chosen], items[chosen], sampler.sample_for(users[chosen], items[chosen])  # (≤ 2¹²,) each

    @torch.no_grad()
    def loss(self) -> torch.Tensor:
        """The BPR objective of ``minibatch.triple_loss`` on the fixed sample (the users'
        constant column adds λ to it)."""
        users, positives, negatives = self.sample
        user_rows = self.tower.user_embedding.index_select(0, users)  # (sample, d)
        item_rows = self.tower.item_embedding.index_select(0, torch.cat([positives, negatives]))  # (2 sample, d)
        return triple_loss(row_triple_scores(user_rows, item_rows), self.weight_decay)

    def __call__(self) -> torch.Tensor:
        self.bpr.random_state = int(self.seeds.integers(2**31))
        self.bpr.fit(self.user_items, show_progress=False)
        return self.loss()
