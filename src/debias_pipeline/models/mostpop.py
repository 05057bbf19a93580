"""MostPop: every user gets the items ranked by their train popularity, the
non-personalized floor every table is read against (e.g. Cremonesi, Koren & Turrin,
"Performance of Recommender Algorithms on Top-N Recommendation Tasks", RecSys 2010)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import Params
from debias_pipeline.models.closed_form import ClosedFormRecommender, Solution


class MostPopConfig(Params):
    """MostPop has no hyperparameter."""


def popularity_entropy(counts: np.ndarray) -> float:
    """Mean negative log-likelihood of the train positives under p_i = c_i / Σ c:
    ``−Σ_i p_i log p_i`` (NaN without a positive)."""
    total = float(counts.sum())
    if total == 0:
        return math.nan
    shares = counts[counts > 0] / total
    return float(-(shares * np.log(shares)).sum())


class MostPop(ClosedFormRecommender):
    """MostPop: ``score_ui = c_i``, item i's number of train positives, for every user u.

    It is the maximum-likelihood fit of one categorical distribution over items shared
    by all users, p_i = c_i / Σ_j c_j (ranking by c_i or by p_i is the same), so the
    recorded ``train_loss`` is that fit's mean negative log-likelihood of the train
    positives, the entropy ``−Σ_i p_i log p_i``. A new user gets the same scores
    (``fold_in``). Scores are computed on the CPU.
    """

    name = "mostpop"
    Config = MostPopConfig
    personalized = False
    supports_fold_in = True

    def solve(self, train: sp.csr_matrix) -> Iterator[Solution]:
        counts = np.asarray(train.sum(axis=0)).ravel()  # (n_items,) c_i
        yield Solution({"popularity": torch.from_numpy(counts.astype(np.float32))}, popularity_entropy(counts))

    def _rows(self, n_rows: int) -> np.ndarray:
        popularity = self._tables["popularity"].cpu().numpy()  # (n_items,)
        return np.broadcast_to(popularity, (n_rows, popularity.size)).copy()  # (n_rows, n_items)

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        return self._rows(self._train.shape[0] if users is None else len(users))

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return self._tables["popularity"].cpu().numpy()[np.asarray(items, dtype=np.int64)]

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        return self._rows(history.shape[0])
