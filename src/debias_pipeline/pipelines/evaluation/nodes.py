"""Nodes that score the unbiased rows and compute the ranking metrics: the thesis
protocol (each user's split rows ranked) or full ranking (all items ranked, the user's
train items masked)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from debias_pipeline.config import build_config, require  # noqa: E402
from debias_pipeline.metrics import RankingMetrics, ScoreUsers, full_ranking_metrics, ranking_metrics  # noqa: E402
from debias_pipeline.models import Recommender  # noqa: E402
from debias_pipeline.models.base import FullBatchRecommender  # noqa: E402

logger = logging.getLogger(__name__)

SPLITS = ("validation", "test")


@dataclass(frozen=True)
class EvaluationConfig:
    """How the unbiased splits are evaluated.

    Attributes:
        k: cut-off K of the thesis protocol (PROTOCOL.md §3: default 5); early stopping
            always uses validation NDCG@k of the thesis protocol.
        protocol: ``thesis`` (each user's rows of the split ranked) or ``full_ranking``
            (all items ranked, the user's train items masked; the LightGCN papers').
        full_ranking_k: cut-off K of the full-ranking protocol (default 20).
    """

    k: int = 5
    protocol: Literal["thesis", "full_ranking"] = "thesis"
    full_ranking_k: int = 20

    def __post_init__(self) -> None:
        require(self.k >= 1, f"k must be >= 1, got {self.k}")
        require(
            self.protocol in ("thesis", "full_ranking"),
            f"protocol must be 'thesis' or 'full_ranking', got {self.protocol!r}",
        )
        require(self.full_ranking_k >= 1, f"full_ranking_k must be >= 1, got {self.full_ranking_k}")

    @property
    def cutoff(self) -> int:
        """K of the configured protocol."""
        return self.full_ranking_k if self.protocol == "full_ranking" else self.k


def evaluation_config(evaluation: dict[str, Any]) -> EvaluationConfig:
    """The ``evaluation`` parameter block as a checked config."""
    return build_config(EvaluationConfig, evaluation, "evaluation")


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _user_scorer(model: Recommender) -> tuple[ScoreUsers, torch.device]:
    """Scores of a chunk of users against every item, on the model's device when the
    model has embeddings, else from ``score`` on the CPU."""
    if isinstance(model, FullBatchRecommender) and model.module is not None:
        with torch.no_grad():
            user_emb, item_emb = model.preference_embeddings()  # (n_users, d), (n_items, d)
        return (lambda users: user_emb[users] @ item_emb.T), model.device

    def score(users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(model.score(users.cpu().numpy()), dtype=np.float32))

    return score, torch.device("cpu")


def evaluate_model(
    trained_model: Recommender,
    unbiased_split: pd.DataFrame,
    evaluation: dict[str, Any],
    train_matrix: sp.csr_matrix | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, float | int]], pd.DataFrame]:
    """Score every unbiased row and compute Recall@K / NDCG@K per split.

    Args:
        trained_model: the fitted model.
        unbiased_split: the unbiased rows with their ``split``.
        evaluation: the ``evaluation`` parameters (protocol and cut-offs).
        train_matrix: (n_users, n_items) Y, whose items the full-ranking protocol masks;
            required for ``protocol: full_ranking``.

    Returns:
        ``metrics`` (a JSON-able report), the same numbers as MLflow metrics
        (``<split>_<metric>_at_<k>``), and the predictions table
        (user, item, split, label, score) from which anyone can recompute them.
    """
    config = evaluation_config(evaluation)
    if config.protocol == "full_ranking" and train_matrix is None:
        raise ValueError("evaluation.protocol 'full_ranking' needs the train matrix to mask the train items")
    users = unbiased_split["user"].to_numpy(np.int64)
    items = unbiased_split["item"].to_numpy(np.int64)
    scores = trained_model.score_pairs(users, items)
    predictions = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "split": unbiased_split["split"].to_numpy(),
            "label": unbiased_split["label"].to_numpy(np.int64),
            "score": scores.astype(np.float64),
        }
    )
    k = config.cutoff
    metrics: dict[str, Any] = {
        "model": trained_model.name,
        "protocol": config.protocol,
        "k": k,
        "best_epoch": trained_model.best_epoch,
    }
    scorer = _user_scorer(trained_model) if config.protocol == "full_ranking" else None
    for split in SPLITS:
        rows = predictions[predictions["split"] == split]
        result: RankingMetrics
        if scorer is None:
            result = ranking_metrics(rows["user"], rows["item"], rows["label"], rows["score"], k)
        else:
            score_users, device = scorer
            result = full_ranking_metrics(
                score_users, train_matrix, rows["user"], rows["item"], rows["label"], k, device=device
            )
        # A split without any positive has no metric: null in JSON, absent from MLflow.
        metrics.update({key: None if value != value else value for key, value in result.as_dict(split).items()})
    logger.info(
        "%s: test Recall@%d = %s, NDCG@%d = %s (%s protocol; %d users, %d skipped without a positive)",
        trained_model.name,
        k,
        _format(metrics[f"test_recall_at_{k}"]),
        k,
        _format(metrics[f"test_ndcg_at_{k}"]),
        config.protocol,
        metrics["test_users_evaluated"],
        metrics["test_users_skipped"],
    )
    mlflow_metrics = {
        key: {"value": float(value), "step": 0}
        for key, value in metrics.items()
        if key not in ("model", "protocol", "k") and value is not None
    }
    return metrics, mlflow_metrics, predictions


def plot_learning_curve(training_history: pd.DataFrame) -> plt.Figure:
    """Training loss and validation NDCG per epoch, on two axes."""
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(training_history["epoch"], training_history["train_loss"], color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    ndcg_columns = [c for c in training_history.columns if c.startswith("validation_ndcg")]
    if ndcg_columns:
        ndcg_axis = loss_axis.twinx()
        curve = training_history[["epoch", ndcg_columns[0]]].dropna()
        ndcg_axis.plot(curve["epoch"], curve[ndcg_columns[0]], color="tab:orange")
        ndcg_axis.set_ylabel(ndcg_columns[0].replace("_", " "), color="tab:orange")
    figure.tight_layout()
    plt.close(figure)
    return figure
