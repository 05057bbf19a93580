"""The model interface shared by gradient and EM/ALS recommenders, and the
full-batch gradient trainer with early stopping.

A recommender is built from a frozen config, a seed and a device, then ``fit`` on a
``TrainData`` (the interaction matrix Y and, for graph models, the normalized
adjacency). After fitting it scores users against all items, or given pairs. Models
never resolve the device, never seed global generators, never touch MLflow.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from debias_pipeline.config import Params, require
from debias_pipeline.metrics import ranking_metrics
from debias_pipeline.models.minibatch import MiniBatchEpochs
from debias_pipeline.selection import EarlyStopping

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainData:
    """What a model trains on.

    Attributes:
        interactions: (n_users, n_items) CSR matrix Y, 1 for a positive train row.
        adjacency: (n_users + n_items, n_users + n_items) normalized adjacency
            D^-1/2 A D^-1/2 of the train positives, or ``None`` for non-graph models.
        user_features: (n_users, f_u) float32 user features (``features``), or ``None``.
        item_features: (n_items, f_i) float32 item features, or ``None``.
        social: (n_users, n_users) symmetric 0/1 CSR matrix of social ties, or ``None``.
    """

    interactions: sp.csr_matrix
    adjacency: sp.csr_matrix | None = None
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    social: sp.csr_matrix | None = None

    @property
    def n_users(self) -> int:
        return int(self.interactions.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.interactions.shape[1])


class Validator(Protocol):
    """What early stopping evaluates every ``eval_every`` epochs: a metric of the model
    on the validation split, higher is better (``protocols.SplitEvaluator``)."""

    @property
    def metric(self) -> str:
        """The metric's name (``ndcg_at_5``)."""

    def score(self, model: Recommender) -> float:
        """The metric of ``model``."""


@dataclass(frozen=True)
class ValidationSet:
    """Rows of the validation split ranked per user (thesis protocol), for early
    stopping on NDCG@k."""

    users: np.ndarray  # (n_rows,)
    items: np.ndarray  # (n_rows,)
    labels: np.ndarray  # (n_rows,)
    k: int = 5

    def __post_init__(self) -> None:
        if not np.any(self.labels > 0):
            raise ValueError(
                f"the validation split has no positive row ({len(self.labels)} rows): NDCG@{self.k} is "
                "undefined and early stopping impossible; raise split.validation_fraction"
            )

    @property
    def metric(self) -> str:
        return f"ndcg_at_{self.k}"

    def score(self, model: Recommender) -> float:
        """NDCG@k of ``model`` on these rows (thesis protocol)."""
        scores = model.score_pairs(self.users, self.items)
        return ranking_metrics(self.users, self.items, self.labels, scores, self.k).ndcg


class GradientConfig(Params):
    """Hyperparameters of every model trained by gradient steps with early stopping.

    Attributes:
        lr: learning rate (the study: Adam, 0.04).
        weight_decay: λ of the model's L2 term (each model says on what).
        epochs: maximum number of epochs.
        patience: evaluations without a better validation metric before stopping.
        eval_every: epochs between two validation evaluations.
        batch_size: examples per step of a mini-batch model.
    """

    lr: float = 0.04
    weight_decay: float = 1e-6
    epochs: int = 300
    patience: int = 20
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
    """

    loss: Literal["bce", "bpr"] = "bce"
    negative_sampling: Literal["uniform", "popularity", "hard"] = "uniform"
    hard_pool_size: int = 100

    def check(self) -> None:
        super().check()
        require(
            self.negative_sampling in ("uniform", "popularity", "hard"),
            f"negative_sampling must be 'uniform', 'popularity' or 'hard', got {self.negative_sampling!r}",
        )
        require(self.hard_pool_size >= 1, f"hard_pool_size must be >= 1, got {self.hard_pool_size}")


@dataclass
class EpochRecord:
    """One line of the learning curve.

    Attributes:
        epoch: the epoch (a sweep, an EM iteration); for a closed-form model, the
            position of the fitted candidate (``candidate``) in its grid, from 1.
        train_loss: the training objective; NaN for a model that has none (ItemKNN).
        validation_score: the validation metric, where evaluated.
        candidate: the hyperparameters a closed-form fit solved for (EASE: ``{"l2": λ}``),
            else ``None``.
    """

    epoch: int
    train_loss: float
    validation_score: float | None = None
    candidate: dict[str, float] | None = None


class Recommender(ABC):
    """Interface of every model: ``fit(data) -> self``, ``score(users) -> (n, n_items)``.

    A model that can score users it was not trained on from their clicks alone sets
    ``supports_fold_in`` and implements ``fold_in`` (needed by the
    ``strong_generalization`` protocol). A model fitted in closed form
    (``closed_form``: MostPop, ItemKNN, EASE) has no epochs and no randomness: its
    ``history`` holds one record per fitted hyperparameter candidate and its seed
    changes nothing. A model that gives every user the same scores (MostPop) clears
    ``personalized``.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    supports_fold_in: ClassVar[bool] = False
    closed_form: ClassVar[bool] = False
    personalized: ClassVar[bool] = True

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.seed = seed
        self.device = torch.device(device)
        self.history: list[EpochRecord] = []
        self.best_epoch: int | None = None

    @abstractmethod
    def fit(self, data: TrainData, validation: Validator | None = None) -> Self:
        """Train on ``data``; with ``validation``, stop early on its NDCG@k."""

    @abstractmethod
    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        """Preference scores, (len(users), n_items); all users when ``users`` is None."""

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Preference scores of the given (user, item) pairs, (n_pairs,)."""
        unique_users, inverse = np.unique(users, return_inverse=True)
        return self.score(unique_users)[inverse, items]

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores (n_rows, n_items) of new users given their clicks, (n_rows, n_items) CSR."""
        raise NotImplementedError(f"{self.name} cannot score a user it was not trained on")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the fitted model (tensors on the CPU)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        """Restore a fitted model from ``state_dict()`` output; ``data`` gives the shapes
        (and the adjacency of graph models). Returns the model, ready to score."""

    @property
    def fits(self) -> list[Recommender]:
        """The fits whose early stopping picked an epoch (``best_epoch``): the model
        itself; an ensemble's members."""
        return [self]

    def _is_fitted(self) -> bool:
        """Whether the model is ready to score."""
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self._is_fitted():
            raise RuntimeError(f"{self.name} is not fitted; call fit() first")

    def _state(self, **fields: Any) -> dict[str, Any]:
        """``state_dict``'s common part (the model, its configuration and seed) and ``fields``."""
        return {"model": self.name, "config": copy.deepcopy(self.config), "seed": self.seed, **fields}

    def _check_state(self, state: dict[str, Any]) -> None:
        if state.get("model") != self.name:
            raise ValueError(f"state of model {state.get('model')!r} cannot be loaded into {self.name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, seed={self.seed}, device={self.device})"


class ModuleRecommender(Recommender):
    """A model whose fitted state is one ``nn.Module`` (``build_module``), saved and
    restored by its ``state_dict``; ``_cache_embeddings`` readies it for scoring after
    fitting or loading."""

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self.module: nn.Module | None = None

    @abstractmethod
    def build_module(self, data: TrainData, generator: torch.Generator) -> nn.Module:
        """Create the parameters (embeddings start as N(0, 0.01²) unless stated)."""

    @abstractmethod
    def _cache_embeddings(self) -> None:
        """Ready the fitted module for scoring (called after every validation, fit and load)."""

    @abstractmethod
    def _is_fitted(self) -> bool:
        """Whether ``_cache_embeddings`` has run."""

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        self._check_state(state)
        self.module = self.build_module(data, torch.Generator().manual_seed(self.seed)).to(self.device)
        self.module.load_state_dict(state["weights"])
        self.best_epoch = state.get("best_epoch")
        self._cache_embeddings()
        return self

    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return self._state(
            best_epoch=self.best_epoch, weights={k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        )


class NetworkRecommender(ModuleRecommender):
    """A model that scores by running its network (NCF, the autoencoders), so nothing is
    cached after fitting but the network's evaluation mode."""

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._fitted = False

    def _cache_embeddings(self) -> None:
        self.module.eval()
        self._fitted = True

    def _is_fitted(self) -> bool:
        return self._fitted


class FullBatchRecommender(ModuleRecommender):
    """A gradient model trained full-batch over all |U| x |I| pairs with Adam.

    Subclasses build an ``nn.Module`` from the data, define the loss over all pairs and
    the preference embeddings. This class owns the loop: one Adam step per epoch,
    validation NDCG every ``eval_every`` epochs, early stopping with ``patience`` and
    restoration of the best epoch's weights.
    """

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._user_emb: torch.Tensor | None = None  # (n_users, d) preference, cached after fit
        self._item_emb: torch.Tensor | None = None  # (n_items, d)

    @abstractmethod
    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """Training loss over all pairs; ``targets`` is the dense (n_users, n_items) Y."""

    @abstractmethod
    def preference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (n_users, d) and item (n_items, d) preference embeddings."""

    def batch_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of sampled triples (``loss: bpr``); (batch,) ids on the device."""
        raise NotImplementedError(f"{self.name} has no mini-batch loss; train it with loss: bce")

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        config: TrainingConfig = self.config
        generator = torch.Generator().manual_seed(self.seed)
        self.module = self.build_module(data, generator).to(self.device)
        if config.loss in ("bpr", "enhanced_bpr"):
            if getattr(config, "optimizer", "adam") == "sparse_adam":  # MF: only the batch's rows
                optimizer = None
                run_epoch = MiniBatchEpochs(self, data, None, self.row_stepper())
            else:  # hundreds of steps per epoch: Adam's single fused kernel per parameter pays
                optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr, fused=True)
                run_epoch = MiniBatchEpochs(self, data, optimizer)
        else:
            optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr)
            run_epoch = self._full_batch_epochs(data, optimizer)
        plateau = getattr(config, "lr_plateau", None)
        scheduler = None
        if plateau is not None:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=plateau.factor, patience=plateau.patience, min_lr=plateau.min_lr
            )
        run_with_early_stopping(
            self, lambda: float(run_epoch()), validation, on_epoch, None if scheduler is None else scheduler.step
        )
        return self

    def _full_batch_epochs(self, data: TrainData, optimizer: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
        """One Adam step on the loss over all pairs per call (``loss: bce``)."""
        check_dense_size(self.name, data, "use loss: bpr (mini-batches of sampled triples)")
        targets = torch.as_tensor(data.interactions.toarray(), dtype=torch.float32, device=self.device)
        clip = getattr(self.config, "grad_clip_norm", None)

        def run_epoch() -> torch.Tensor:
            self.module.train()
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(targets)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
            optimizer.step()
            return loss.detach()

        return run_epoch

    @torch.no_grad()
    def _cache_embeddings(self) -> None:
        self.module.eval()
        users, items = self.preference_embeddings()
        self._user_emb, self._item_emb = users.detach(), items.detach()

    def _is_fitted(self) -> bool:
        return self._user_emb is not None

    @torch.no_grad()
    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        user_emb = self._user_emb if users is None else self._user_emb[_index(users, self.device)]
        return (user_emb @ self._item_emb.T).cpu().numpy()

    @torch.no_grad()
    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self._require_fitted()
        u = self._user_emb[_index(users, self.device)]
        v = self._item_emb[_index(items, self.device)]
        return (u * v).sum(dim=1).cpu().numpy()


class TowerConfig(Params):
    """One embedding tower: MF (``num_layers = 0``) or LightGCN propagation."""

    embedding_dim: int = 200
    num_layers: int = 0

    def check(self) -> None:
        require(self.embedding_dim >= 1, f"embedding_dim must be >= 1, got {self.embedding_dim}")
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")


# Largest |U| x |I| a model densifies (Y and its scores, float32): 2^28 pairs, 1 GiB
# per table; beyond it the all-pairs losses need several such tables at once.
DENSE_PAIRS_LIMIT = 1 << 28


def check_dense_size(model: str, data: TrainData, remedy: str) -> None:
    """Refuse, before training, a full-batch fit over more than ``DENSE_PAIRS_LIMIT`` pairs.

    Raises:
        ValueError: Naming the model, the size and ``remedy``.
    """
    pairs = data.n_users * data.n_items
    if pairs > DENSE_PAIRS_LIMIT:
        raise ValueError(
            f"{model}: a full-batch fit over all {data.n_users:,} x {data.n_items:,} = {pairs:,} pairs needs "
            f"at least {pairs * 4 * 3 / 2**30:.1f} GiB; {remedy}"
        )


def _index(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    # np.array copies: pandas hands out read-only views, which torch refuses to wrap.
    return torch.from_numpy(np.array(ids, dtype=np.int64)).to(device)


def sparse_to_torch(matrix: sp.spmatrix, device: torch.device, dtype: type = np.float32) -> torch.Tensor:
    """A scipy sparse matrix as a torch sparse CSR tensor (float32, or ``dtype``) on ``device``."""
    csr = sp.csr_matrix(matrix, dtype=dtype)
    return torch.sparse_csr_tensor(
        torch.as_tensor(csr.indptr, dtype=torch.int64),
        torch.as_tensor(csr.indices, dtype=torch.int64),
        torch.as_tensor(csr.data),
        size=csr.shape,
    ).to(device)



def run_with_early_stopping(
    model: Any,
    run_epoch: Callable[[], float],
    validation: Validator | None,
    on_epoch: Callable[[EpochRecord], None] | None,
    on_validation: Callable[[float], Any] | None = None,
) -> None:
    """The epoch loop every iterative model shares.

    ``run_epoch`` trains one epoch (an Adam step, a mini-batch pass, an ALS or EM
    sweep) and returns its training loss. The validation signal (``validation.score``)
    is evaluated every ``eval_every`` epochs; early stopping follows its mean over the
    last ``validation.window`` evaluations (1 when the validator has no ``window``):
    after ``patience`` evaluations without a better mean the loop stops, and the weights
    of the evaluation that ended the best window are restored. ``model`` has ``module``,
    ``config`` (``epochs``, ``patience``, ``eval_every``), ``history``, ``best_epoch``
    and ``_cache_embeddings()``. ``on_validation`` gets every validation score (a
    learning-rate scheduler's ``step``).
    """
    config = model.config
    model.history = []
    best_state = None
    rule = EarlyStopping(config.patience, int(getattr(validation, "window", 1)))
    bar = tqdm(range(1, config.epochs + 1), desc=model.name, disable=None, leave=False)
    for epoch in bar:
        record = EpochRecord(epoch=epoch, train_loss=run_epoch())
        if not math.isfinite(record.train_loss):
            raise FloatingPointError(f"{model.name}: training loss is {record.train_loss} at epoch {epoch}")
        if validation is not None and epoch % config.eval_every == 0:
            model._cache_embeddings()
            record.validation_score = validation.score(model)
            if rule.update(record.validation_score):
                model.best_epoch = epoch
                best_state = copy.deepcopy(model.module.state_dict())
            if on_validation is not None:
                on_validation(record.validation_score)
            logger.debug(
                "%s epoch %d: train loss %.5f, validation %s %.4f (best %.4f at epoch %s)",
                model.name,
                epoch,
                record.train_loss,
                validation.metric,
                record.validation_score,
                rule.best,
                model.best_epoch,
            )
            bar.set_postfix(loss=f"{record.train_loss:.4f}", validation=f"{record.validation_score:.4f}")
        model.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if validation is not None and rule.stop:
            break
    if best_state is not None:
        model.module.load_state_dict(best_state)
    else:
        model.best_epoch = model.history[-1].epoch
    model._cache_embeddings()
