"""The model contract shared by gradient and EM/ALS recommenders.

A recommender is built from a frozen config, a seed and a device, then ``fit`` on a
``TrainData`` (the interaction matrix Y and, for graph models, the normalized
adjacency). After fitting it scores users against all items, or given pairs. Models
never resolve the device, never seed global generators, never touch MLflow.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.evaluation.metrics import ranking_metrics


@dataclass(frozen=True)
class LabelledPairs:
    """Labelled (user, item) pairs of an unbiased sample (items shown at random and
    rated): CausE's treatment set (``TrainData.treatment``).

    Attributes:
        users: (n,) user ids.
        items: (n,) item ids.
        labels: (n,) 1.0 for a positive rating, 0.0 for a negative one.
    """

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.users.size)

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Users, items (int64) and labels (float32), each (n,), on ``device``."""
        return (
            torch.as_tensor(np.asarray(self.users, dtype=np.int64), device=device),
            torch.as_tensor(np.asarray(self.items, dtype=np.int64), device=device),
            torch.as_tensor(np.asarray(self.labels, dtype=np.float32), device=device),
        )


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
        propensity: the estimated exposure probability P(o_ui = 1) that the
            inverse-propensity methods weight clicks by (``propensity`` parameter block,
            ``evaluation.propensity``): (n_items,) one per item, or a CSR matrix of Y's
            shape holding it for each train positive; ``None`` when no estimate was made
            (each method then says what it falls back to).
        treatment: labelled pairs of the unbiased sample that a model declaring
            ``needs_treatment`` fits on (CausE's treatment set): one half of the
            validation users' rows (``training.inputs.treatment_inputs``, which
            keeps the other half for early stopping); ``None`` for every other model.
    """

    interactions: sp.csr_matrix
    adjacency: sp.csr_matrix | None = None
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    social: sp.csr_matrix | None = None
    propensity: np.ndarray | sp.csr_matrix | None = None
    treatment: LabelledPairs | None = None

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
    ``personalized``. A model that also fits on a labelled unbiased sample (CausE)
    sets ``needs_treatment`` (a model whose config decides it, the dual model, sets it
    on the instance): the run then hands it ``TrainData.treatment``, cut from
    the validation split, and early-stops it on the rest of that split only.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    supports_fold_in: ClassVar[bool] = False
    closed_form: ClassVar[bool] = False
    personalized: ClassVar[bool] = True
    needs_treatment: ClassVar[bool] = False
    # Whether ``preference_embeddings()`` of the fitted ``module`` give the scores (the
    # evaluators then score users on the model's device without ``score``).
    scores_by_embeddings: ClassVar[bool] = False

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
