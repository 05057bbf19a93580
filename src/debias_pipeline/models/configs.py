"""Hyperparameters shared by the gradient models: the trainer's (``GradientConfig``),
the embedding models' (``TrainingConfig``) and one embedding tower's (``TowerConfig``)."""

from __future__ import annotations

import math
from typing import Literal

from debias_pipeline.config.params import Params, require


class GradientConfig(Params):
    """Hyperparameters of every model trained by gradient steps with early stopping.

    Attributes:
        lr: Adam's learning rate (the study: 0.04).
        weight_decay: λ of the model's L2 term (each model says on what).
        epochs: maximum number of epochs.
        patience: validation evaluations without a better selection signal before
            stopping. 100, not the study's 20: with the selection window
            (``evaluation.selection_window``, 5 on the thesis protocol) it halves the
            test regret of the kept epoch on Coat (docs/protocols.md, "Selection").
        eval_every: epochs between two validation evaluations.
        batch_size: examples per step of a mini-batch model.
    """

    lr: float = 0.04
    weight_decay: float = 1e-6
    epochs: int = 300
    patience: int = 100
    eval_every: int = 1
    batch_size: int = 2048

    def check(self) -> None:
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}")
        require(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be a finite number >= 0, got {self.weight_decay}",
        )
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        require(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")

class TrainingConfig(GradientConfig):
    """Hyperparameters every embedding model shares (``GradientConfig`` and the loss).

    Attributes:
        weight_decay: λ of the L2 term on the base embeddings: λ Σ ||E||² with
            ``loss: bce``; λ · mean over the batch of ||e_u||² + ||e_i||² + ||e_j||²
            (the triple's base embeddings) with ``loss: bpr``.
        epochs: one Adam step each with ``bce``; one pass over the shuffled train
            positives with ``bpr``.
        loss: ``bce``, the study's full-batch loss over all |U| x |I| pairs; or ``bpr``,
            mini-batch training on sampled (user, positive, negative) triples, the
            LightGCN papers' setting (MF and LightGCN: BPR; the dual model: its click
            likelihood on the triple's two pairs). Y is never densified with ``bpr``.
        batch_size: triples per Adam step (``bpr`` only).
        negative_sampling: how the negative j of a triple is drawn among the items the
            user has no train positive for (``bpr`` only): ``uniform``; ``popularity``,
            proportional to the item's number of train positives; ``hard``, uniformly
            among the user's ``hard_pool_size`` top-scored such items, re-ranked with the
            current preference scores at the start of every epoch.
        hard_pool_size: size of each user's pool of hard negatives.
        propagation: how a mini-batch step sees LightGCN towers (``bpr`` only; no
            effect on MF towers): ``exact``, every batch propagates the whole graph
            and back (``minibatch.tower_rows``), so an epoch costs batches x nnz(Â);
            ``stale``, the batch at every ``refresh_every``-th step of an epoch (its
            first included) is that exact step, and every other batch reads layers
            1..K from tables propagated once after the last exact step: a row's
            final embedding is ``e_r/(K+1) + T_r``, ``T = (1/(K+1)) Σ_{k=1..K} Â^k E``
            of the base embeddings as they were then (stale by at most
            ``refresh_every − 2`` optimizer steps), and the gradient reaches only the
            batch's own base rows, ``∂L/∂e_r = g_r/(K+1)``, the neighbours' layers being
            held constant (``minibatch.StaleLayers``). Not at parity with ``exact`` at
            an equal number of epochs (docs/performance.md, "Linear-cost LightGCN
            epochs"): a scale option, not the study's.
        refresh_every: steps between two exact steps under ``propagation: stale``
            (1: every step exact, the same numbers as ``exact``). A value at least the
            epoch's number of batches makes one exact step and one propagation per
            epoch: the epoch's cost is then linear in the interactions.
    """

    loss: Literal["bce", "bpr"] = "bce"
    negative_sampling: Literal["uniform", "popularity", "hard"] = "uniform"
    hard_pool_size: int = 100
    propagation: Literal["exact", "stale"] = "exact"
    refresh_every: int = 1

    def check(self) -> None:
        super().check()
        require(
            self.negative_sampling in ("uniform", "popularity", "hard"),
            f"negative_sampling must be 'uniform', 'popularity' or 'hard', got {self.negative_sampling!r}",
        )
        require(self.hard_pool_size >= 1, f"hard_pool_size must be >= 1, got {self.hard_pool_size}")
        require(
            self.propagation in ("exact", "stale"),
            f"propagation must be 'exact' or 'stale', got {self.propagation!r}",
        )
        require(self.refresh_every >= 1, f"refresh_every must be >= 1, got {self.refresh_every}")
        require(
            self.propagation == "exact" or self.loss != "bce",
            "propagation 'stale' is a mini-batch mode: it needs loss bpr, got loss 'bce'",
        )

class TowerConfig(Params):
    """One embedding tower: MF (``num_layers = 0``) or LightGCN propagation.

    Attributes:
        embedding_dim: d, the size of the tower's user and item embeddings (the study: 200).
        num_layers: LightGCN propagation layers K (0: MF, the embeddings as they are).
    """

    embedding_dim: int = 200
    num_layers: int = 0

    def check(self) -> None:
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")

class TowerTrainingConfig(TrainingConfig, TowerConfig):
    """A model built on embedding towers of one size and layer count (MF when
    ``num_layers = 0``, LightGCN propagation otherwise), trained as ``TrainingConfig``
    says: the shared base of the models that put a debiasing objective on such towers
    (PDA, MACR, DICE)."""

    def check(self) -> None:
        super().check()
        TowerConfig.check(self)  # GradientConfig.check ends the chain above without it
