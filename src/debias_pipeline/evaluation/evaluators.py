"""The evaluators of a run: the metrics of a model on the validation and test splits
under the run's protocol (``protocols``), scored on the model's device where it can."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from debias_pipeline.evaluation.cold_start import SOURCES, ColdStartScorer
from debias_pipeline.evaluation.metrics import (
    ScoreUsers,
    candidate_relevance,
    full_ranking_relevance,
    metrics_from_relevance,
    top_k_unseen,
    train_positives,
)
from debias_pipeline.evaluation.off_policy_report import OffPolicyLog
from debias_pipeline.evaluation.popularity import popularity_metrics
from debias_pipeline.evaluation.protocols import METRICS, ROW_SIGNALS, SPLITS, EvaluationSetup


def user_scorer(model: Any) -> tuple[ScoreUsers, torch.device]:
    """Scores of a chunk of users against every item, on the model's device when the
    model has preference embeddings, else from ``score`` on the CPU."""
    if getattr(model, "scores_by_embeddings", False) and model.module is not None:
        with torch.no_grad():
            user_emb, item_emb = model.preference_embeddings()  # (n_users, d), (n_items, d)
        return (lambda users: user_emb[users] @ item_emb.T), model.device

    def score(users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(model.score(users.cpu().numpy()), dtype=np.float32))

    return score, torch.device("cpu")


def _fold_in_scorer(model: Any, history: sp.csr_matrix) -> ScoreUsers:
    def score(users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(model.fold_in(history[users.cpu().numpy()]), dtype=np.float32))

    return score


def _pair_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(users.size, dtype=np.float32), (users, items)), shape=shape)
    matrix.sum_duplicates()
    return matrix


@dataclass
class SplitEvaluator:
    """Metrics of a model on one split (validation or test) under one protocol.

    Attributes:
        setup: protocol, cut-offs and the selection metric.
        split: ``validation`` or ``test``.
        users, items, labels: (n,) the split's target rows.
        mask: (n_users, n_items) items never ranked for ``full`` and ``fold_in``.
        history: (n_users, n_items) the fold-in input of ``fold_in``.
        rows_dropped_unseen: target rows left out because their item has no train
            positive (``strong_generalization``).
    """

    setup: EvaluationSetup
    split: str
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    mask: sp.csr_matrix | None = None
    history: sp.csr_matrix | None = None
    rows_dropped_unseen: int = 0
    user_features: np.ndarray | None = None  # ``cold``: the fallback to same-feature users
    train: sp.csr_matrix | None = None  # ``cold``: the train positives (popularity, train users)
    off_policy: OffPolicyLog | None = None  # ``ips``, test: the held-out log its estimators read
    _last: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def metric(self) -> str:
        """The selection signal's name (``ndcg_at_20``, ``auc``)."""
        return self.setup.selection_key

    @property
    def window(self) -> int:
        """Validation evaluations early stopping averages (``selection_window``)."""
        return self.setup.selection_window

    def _relevance(self, model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, pd.DataFrame]:
        kind, depth = self.setup.protocol.kind, self.setup.depth
        if kind == "candidates":
            scores = model.score_pairs(self.users, self.items)
            user_ids, relevance, n_relevant, skipped = candidate_relevance(
                self.users, self.items, self.labels, scores, depth
            )
            predictions = pd.DataFrame(
                {"user": self.users, "item": self.items, "split": self.split, "label": self.labels, "score": scores.astype(np.float64)}
            )
            return user_ids, relevance, n_relevant, skipped, predictions
        cold = None
        if kind == "full":
            score_users, device = user_scorer(model)
        elif kind == "cold":
            cold = ColdStartScorer(model, self.history, self.user_features, self.train)
            score_users, device = cold, torch.device("cpu")
        else:
            score_users, device = _fold_in_scorer(model, self.history), torch.device("cpu")
        user_ids, relevance, n_relevant, skipped, ranked = _full_relevance_and_ranking(
            score_users, self.mask, self.users, self.items, self.labels, depth, device
        )
        self._last["sources"] = None if cold is None else cold.sources[user_ids]
        self._last["ranked"] = (user_ids, ranked)
        predictions = pd.DataFrame(
            {
                "user": np.repeat(user_ids, ranked.shape[1]),
                "rank": np.tile(np.arange(1, ranked.shape[1] + 1), user_ids.size),
                "item": ranked.ravel(),
                "split": self.split,
                "relevant": relevance.ravel().astype(np.int8),
            }
        )
        return user_ids, relevance, n_relevant, skipped, predictions

    def report(self, model: Any, row_signals: bool = True) -> tuple[dict[str, float | int | None], pd.DataFrame]:
        """``<split>_<metric>_at_<k>`` for every metric and cut-off, the user counts,
        and the predictions from which they recompute: the scored rows (``candidates``)
        or each user's top items (``full``, ``fold_in``); with ``row_signals``, also
        ``<split>_auc`` and ``<split>_log_likelihood`` over every labelled row
        (``candidates``)."""
        user_ids, relevance, n_relevant, skipped, predictions = self._relevance(model)
        values: dict[str, float | int | None] = {}
        if row_signals and self.setup.protocol.kind == "candidates":
            scores = predictions["score"].to_numpy()
            for name, signal in ROW_SIGNALS.items():
                values[f"{self.split}_{name}"] = signal(self.labels, scores)
        for k in self.setup.cutoffs:
            per_user = metrics_from_relevance(relevance, n_relevant, k)
            for name in METRICS:
                values[f"{self.split}_{name}_at_{k}"] = float(per_user[name].mean()) if user_ids.size else None
        values[f"{self.split}_users_evaluated"] = int(user_ids.size)
        values[f"{self.split}_users_skipped"] = int(skipped)
        sources = self._last.get("sources")
        if sources is not None:  # cold_start: how many users each way scored, and their NDCG
            k = self.setup.k
            per_user = metrics_from_relevance(relevance, n_relevant, k)["ndcg"]
            for source in SOURCES:
                chosen = sources == source
                values[f"{self.split}_users_{source}"] = int(chosen.sum())
                values[f"{self.split}_ndcg_at_{k}_{source}"] = float(per_user[chosen].mean()) if chosen.any() else None
        if self.rows_dropped_unseen:
            values[f"{self.split}_rows_dropped_unseen"] = self.rows_dropped_unseen
        if self.off_policy is not None and row_signals:  # not at every validation of early stopping
            ranked_users, ranked = self._last["ranked"]
            values.update(
                self.off_policy.report(ranked, ranked_users, self.mask, self.setup.cutoffs, self.setup.off_policy, seed=0)
            )
        return values, predictions

    def score(self, model: Any) -> float:
        """The selection signal of ``model`` on this split (higher is better)."""
        if self.setup.selection in ROW_SIGNALS:  # no ranking needed
            value = ROW_SIGNALS[self.setup.selection](self.labels, model.score_pairs(self.users, self.items))
            if value is None:
                raise ValueError(f"the {self.split} split has no positive or no negative row: {self.metric} is undefined")
            return value
        values, _ = self.report(model, row_signals=False)  # every validation of early stopping
        value = values[f"{self.split}_{self.metric}"]
        if value is None:
            raise ValueError(f"the {self.split} split has no user with a relevant item: {self.metric} is undefined")
        return float(value)


def _full_relevance_and_ranking(
    score_users: ScoreUsers,
    mask: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    depth: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    ranked_items: list[torch.Tensor] = []
    user_ids, relevance, n_relevant, skipped = full_ranking_relevance(
        score_users, mask, users, items, labels, depth, device=device, ranked=ranked_items
    )
    ranked = torch.cat(ranked_items).cpu().numpy() if ranked_items else np.zeros((0, relevance.shape[1]), dtype=np.int64)
    return user_ids, relevance, n_relevant, skipped, ranked


@dataclass
class Evaluators:
    """The validation and test evaluators of a run, built once from its split."""

    setup: EvaluationSetup
    validation: SplitEvaluator
    test: SplitEvaluator
    test_rows_dropped_unseen: int = 0
    train: sp.csr_matrix | None = None  # (n_users, n_items) train positives, for the popularity metrics

    @classmethod
    def build(
        cls,
        interaction_split: pd.DataFrame,
        train_matrix: sp.csr_matrix,
        setup: EvaluationSetup,
        dataset_summary: dict[str, Any] | None = None,
        user_features: np.ndarray | None = None,
    ) -> Evaluators:
        """Evaluators of ``setup``'s protocol over the split table.

        ``full``: validation masks the train items, test the train and validation
        items. ``fold_in``: each held-out user's input rows are the fold-in history and
        are masked; rows whose item has no train positive are dropped and counted.
        ``cold``: the same, each user scored by ``cold_start.ColdStartScorer`` (which
        falls back to ``user_features``' peers or popularity).
        """
        shape = train_matrix.shape
        if setup.depth > shape[1]:
            raise ValueError(
                f"parameter 'evaluation.k' ({list(setup.cutoffs)}) must not exceed the {shape[1]} items a user "
                "can be recommended"
            )
        kind = setup.protocol.kind
        train_items = np.asarray((train_matrix > 0).sum(axis=0)).ravel() > 0
        evaluators = {}
        validation_targets = None
        for split in SPLITS:
            rows = interaction_split[interaction_split["split"] == split]
            dropped = 0
            if kind in ("fold_in", "cold"):
                seen = train_items[rows["item"].to_numpy()]
                dropped = int((~seen & (rows["role"] == "target").to_numpy()).sum())
                rows = rows[seen]
            targets = rows[rows["role"] == "target"]
            users, items = targets["user"].to_numpy(np.int64), targets["item"].to_numpy(np.int64)
            labels = targets["label"].to_numpy(np.float64)
            mask = history = None
            if kind == "full":
                mask = train_positives(train_matrix)
                if split == "test" and validation_targets is not None:
                    mask = train_positives(mask + validation_targets)
            elif kind in ("fold_in", "cold"):
                inputs = rows[(rows["role"] == "input") & (rows["label"] == 1)]
                history = _pair_matrix(inputs["user"].to_numpy(np.int64), inputs["item"].to_numpy(np.int64), shape)
                mask = history
            positive = labels > 0
            if split == "validation":
                validation_targets = _pair_matrix(users[positive], items[positive], shape)
            cold = {"user_features": user_features, "train": train_positives(train_matrix)} if kind == "cold" else {}
            if setup.protocol.name == "ips" and split == "test":
                cold["off_policy"] = OffPolicyLog.build(interaction_split, shape, setup.off_policy)
            evaluators[split] = SplitEvaluator(setup, split, users, items, labels, mask, history, dropped, **cold)
        if not (evaluators["validation"].labels > 0).any():
            raise ValueError(
                f"the validation split has no positive row ({evaluators['validation'].labels.size} rows): "
                f"{setup.selection_metric} is undefined and early stopping impossible; raise split.validation_fraction "
                "(or split.validation_users)"
            )
        dropped_unseen = int((dataset_summary or {}).get("test_rows_dropped_unseen", 0))
        return cls(setup, evaluators["validation"], evaluators["test"], dropped_unseen, train_positives(train_matrix))

    def popularity_report(self, model: Any, test_predictions: pd.DataFrame) -> dict[str, float]:
        """``test_<metric>_at_<k>`` of the popularity-bias and coverage metrics
        (``popularity.popularity_metrics``: ARP, APLT, the Gini of item exposure, item
        coverage) of each test user's top ``k`` at every cut-off, the popularity being the
        items' train positives.

        The lists are what a user would be recommended: the ranked items of the protocols
        that rank every item (``test_predictions``, from ``report``); under ``candidates``
        (which ranks only the user's labelled rows) the best items among all those
        without a train positive, so that the figures mean the same under every protocol.
        """
        popularity = np.asarray(self.train.sum(axis=0)).ravel()
        users = np.unique(test_predictions["user"].to_numpy(np.int64))
        if self.setup.protocol.kind == "candidates":
            lists = _top_unseen_lists(model, users, self.train, self.setup.depth)
        else:
            ranked = test_predictions.sort_values(["user", "rank"])
            depth = int(ranked["rank"].max()) if len(ranked) else self.setup.depth
            lists = np.full((users.size, depth), -1, dtype=np.int64)
            rows = np.searchsorted(users, ranked["user"].to_numpy(np.int64))
            lists[rows, ranked["rank"].to_numpy(np.int64) - 1] = ranked["item"].to_numpy(np.int64)
        values: dict[str, float] = {}
        for k in self.setup.cutoffs:
            for name, value in popularity_metrics(lists[:, :k], popularity).items():
                values[f"test_{name}_at_{k}"] = value
        return values


# Users per block when ranking every item for the popularity metrics: a (block, n_items)
# float32 score table, 64 MiB at 16,384 items.
_POPULARITY_BLOCK_ELEMENTS = 1 << 24


def _top_unseen_lists(model: Any, users: np.ndarray, train: sp.csr_matrix, k: int) -> np.ndarray:
    """(len(users), k) each user's best ``k`` items without a train positive, -1 where the
    user has fewer left (ties: lower item id first, as ``metrics.top_k_unseen``)."""
    score_users, device = user_scorer(model)
    k = min(k, train.shape[1])
    block = max(1, _POPULARITY_BLOCK_ELEMENTS // max(1, train.shape[1]))
    lists = np.full((users.size, k), -1, dtype=np.int64)
    for start in range(0, users.size, block):
        chunk = users[start : start + block]
        with torch.no_grad():
            scores = score_users(torch.from_numpy(chunk).to(device)).float()
        items, valid = top_k_unseen(scores, chunk, train, k)
        lists[start : start + chunk.size] = np.where(valid.cpu().numpy(), items.cpu().numpy(), -1)
    return lists
