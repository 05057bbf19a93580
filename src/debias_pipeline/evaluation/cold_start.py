"""How each model scores a user it never trained on (``evaluation.protocol: cold_start``).

A withheld user brings their first few positives (the known ones, possibly none) and,
where the dataset has them, their features. Each user is scored by the first way that
applies (the survey's recipe, SOURCES.md §D), and the way is reported per user group:

- ``inductive``: a graph model that embeds a new node from its neighbours and features
  (``graphsage``, ``pinsage``, ``gcn`` on features): the user joins the graph with
  edges to their known items (``fold_in_users``); needs a known item, or features the
  model reads;
- ``fold_in``: a model that folds a user in from their clicks (``multvae``,
  ``multdae``, ``wmf``); needs a known item;
- ``feature_mean``: the mean of the scores of the train users with the same features
  (age bucket, gender, occupation on MovieLens), when there are any;
- ``popularity``: the items' train popularity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

SOURCES = ("inductive", "fold_in", "feature_mean", "popularity")


def _feature_keys(features: np.ndarray) -> np.ndarray:
    """One integer per distinct feature row."""
    _, keys = np.unique(np.ascontiguousarray(features), axis=0, return_inverse=True)
    return keys.ravel()


class ColdStartScorer:
    """Scores of withheld users (a ``ScoreUsers`` for the full-ranking evaluation), each
    by the way ``source`` says.

    Args:
        model: the fitted model.
        history: (n_users, n_items) the withheld users' known positives.
        user_features: (n_users, f) encoded user features, or ``None``.
        train: (n_users, n_items) the train positives (the train users are its
            non-empty rows; popularity its column sums).
    """

    def __init__(self, model: Any, history: sp.csr_matrix, user_features: np.ndarray | None, train: sp.csr_matrix) -> None:
        self.model, self.history = model, sp.csr_matrix(history)
        self.popularity = np.asarray((sp.csr_matrix(train) > 0).sum(axis=0), dtype=np.float32).ravel()
        known = np.diff(self.history.indptr) > 0
        warm = np.diff(sp.csr_matrix(train).indptr) > 0
        self.keys = None if user_features is None else _feature_keys(user_features)
        self._warm_by_key: dict[int, np.ndarray] = {}
        if self.keys is not None:
            for key in np.unique(self.keys[warm]):
                self._warm_by_key[int(key)] = np.flatnonzero(warm & (self.keys == key))
        has_peers = np.zeros(known.size, dtype=bool)
        if self.keys is not None:
            has_peers = np.isin(self.keys, np.fromiter(self._warm_by_key, dtype=np.int64))
        reads_features = getattr(getattr(model, "config", None), "inputs", "ids") != "ids"
        self.sources = np.full(known.size, "popularity", dtype=object)
        self.sources[has_peers] = "feature_mean"
        if getattr(model, "supports_fold_in", False):
            self.sources[known] = "fold_in"
        if getattr(model, "inductive", False):
            self.sources[known | (reads_features & (user_features is not None))] = "inductive"
        self._feature_means: dict[int, np.ndarray] = {}

    def _feature_mean(self, key: int) -> np.ndarray:
        if key not in self._feature_means:
            self._feature_means[key] = np.asarray(self.model.score(self._warm_by_key[key]), dtype=np.float32).mean(axis=0)
        return self._feature_means[key]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores of the given users."""
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((users.size, self.popularity.size), dtype=np.float32)
        for source in SOURCES:
            rows = np.flatnonzero(self.sources[users] == source)
            if rows.size == 0:
                continue
            chosen = users[rows]
            if source == "inductive":
                out[rows] = self.model.fold_in_users(self.history[chosen], chosen)
            elif source == "fold_in":
                out[rows] = self.model.fold_in(self.history[chosen])
            elif source == "feature_mean":
                out[rows] = np.stack([self._feature_mean(int(key)) for key in self.keys[chosen]])
            else:
                out[rows] = self.popularity
        return out

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.scores(users.cpu().numpy()))
