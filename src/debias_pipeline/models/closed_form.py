"""Models fitted in closed form, with no epochs and no randomness: MostPop, ItemKNN, EASE.

Fitting computes the model's tables directly from the train matrix Y, once per
hyperparameter candidate (one candidate unless the model takes a grid, as EASE's
``l2_grid``). Each candidate is one record of ``history`` (``epoch`` its position,
``candidate`` its hyperparameters); with several, the one with the best validation
metric is kept and ``best_epoch`` is its position. The seed is stored but unused.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import EpochRecord, Recommender, TrainData, Validator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Solution:
    """The tables of one fitted candidate.

    Attributes:
        tables: the fitted tensors, as ``state_dict()["weights"]`` holds them.
        train_loss: the training objective of these tables (NaN where the model has none).
        candidate: the candidate's hyperparameters (``{"l2": 100.0}``), or ``None``.
    """

    tables: dict[str, torch.Tensor]
    train_loss: float
    candidate: dict[str, float] | None = None


def binary_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    """The 0/1 pattern of ``matrix``'s positive entries, as float64 CSR (counts stay exact)."""
    binary = (sp.csr_matrix(matrix) > 0).astype(np.float64)
    binary.sort_indices()
    return binary


class ClosedFormRecommender(Recommender):
    """A recommender whose fit is a direct computation (``solve``), not a training loop.

    Subclasses yield one ``Solution`` per hyperparameter candidate from ``solve`` and
    score from the tables ``_use`` readies. ``fit`` scores each candidate on the
    validation split, keeps the best (ties: the first) and records one ``history``
    line per candidate.
    """

    closed_form = True

    def __init__(self, config: Any, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__(config, seed=seed, device=device)
        self._tables: dict[str, torch.Tensor] | None = None
        self._train: sp.csr_matrix | None = None  # (n_users, n_items) binary Y, the users' scoring input

    @abstractmethod
    def solve(self, train: sp.csr_matrix) -> Iterator[Solution]:
        """The fitted tables of every candidate in turn, from the binary train matrix
        ``train`` (n_users, n_items)."""

    def candidate_count(self) -> int:
        """How many candidates ``solve`` yields (more than one needs a validation split)."""
        return 1

    def _use(self, tables: dict[str, torch.Tensor]) -> None:
        """Make ``tables`` the ones ``score`` reads (a model that scores on its device
        moves them there)."""
        self._tables = tables

    def fit(
        self,
        data: TrainData,
        validation: Validator | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        """Solve every candidate on ``data``; with ``validation``, keep the best one.

        Raises:
            ValueError: For several candidates and no validation split to choose among them.
        """
        if validation is None and self.candidate_count() > 1:
            raise ValueError(
                f"{self.name}: {self.candidate_count()} hyperparameter candidates need a validation split "
                "to choose among them; give one value"
            )
        self._train = binary_rows(data.interactions)
        self.history = []
        self.best_epoch = None
        best_score, best_tables = -math.inf, None
        for position, solution in enumerate(self.solve(self._train), start=1):
            self._use(solution.tables)
            record = EpochRecord(position, float(solution.train_loss), candidate=solution.candidate)
            if validation is not None:
                record.validation_score = float(validation.score(self))
                if record.validation_score > best_score:  # strictly: ties keep the earlier candidate
                    best_score, best_tables, self.best_epoch = record.validation_score, self._tables, position
            self.history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        if best_tables is None:  # no validation (one candidate), or every score NaN
            self.best_epoch = self.history[-1].epoch
        else:
            self._use(best_tables)
        chosen = self.history[self.best_epoch - 1]
        if len(self.history) > 1:
            logger.info(
                "%s: %s chosen among %d candidates (validation %s %.4f)",
                self.name,
                ", ".join(f"{key} = {value:g}" for key, value in (chosen.candidate or {}).items()),
                len(self.history),
                validation.metric,
                math.nan if chosen.validation_score is None else chosen.validation_score,
            )
        return self

    def _is_fitted(self) -> bool:
        return self._tables is not None

    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return self._state(
            best_epoch=self.best_epoch,
            weights={key: table.detach().cpu().clone() for key, table in self._tables.items()},
        )

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        self._check_state(state)
        self._train = binary_rows(data.interactions)
        self._use({key: table.clone() for key, table in state["weights"].items()})
        self.best_epoch = state.get("best_epoch")
        return self


class ItemToItemRecommender(ClosedFormRecommender):
    """A closed-form model scoring a user's row of Y against an (n_items, n_items) matrix
    W of item-to-item weights: ``scores_u = y_u W``, so ``score_ui = Σ_{j ∈ I_u} W_ji``.

    A new user is scored the same way from their clicks (``fold_in``).
    """

    supports_fold_in = True

    @abstractmethod
    def propagate(self, rows: sp.csr_matrix) -> np.ndarray:
        """``rows @ W`` as float32 (n_rows, n_items), for binary ``rows`` (n_rows, n_items)."""

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        rows = self._train if users is None else self._train[np.asarray(users, dtype=np.int64)]
        return self.propagate(rows)

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        return self.propagate(binary_rows(history))
