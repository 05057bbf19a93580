"""Nodes that score the unbiased rows and compute the thesis-protocol metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from debias_pipeline.config import build_config, require  # noqa: E402
from debias_pipeline.metrics import ranking_metrics  # noqa: E402
from debias_pipeline.models import Recommender  # noqa: E402

logger = logging.getLogger(__name__)

SPLITS = ("validation", "test")


@dataclass(frozen=True)
class EvaluationConfig:
    """Cut-off K of Recall@K and NDCG@K (PROTOCOL.md §3: default 5)."""

    k: int = 5

    def __post_init__(self) -> None:
        require(self.k >= 1, f"k must be >= 1, got {self.k}")


def evaluation_config(evaluation: dict[str, Any]) -> EvaluationConfig:
    """The ``evaluation`` parameter block as a checked config."""
    return build_config(EvaluationConfig, evaluation, "evaluation")


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluate_model(
    trained_model: Recommender, unbiased_split: pd.DataFrame, evaluation: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, float | int]], pd.DataFrame]:
    """Score every unbiased row and compute Recall@K / NDCG@K per split.

    Returns:
        ``metrics`` (a JSON-able report), the same numbers as MLflow metrics
        (``<split>_<metric>_at_<k>``), and the predictions table
        (user, item, split, label, score) from which anyone can recompute them.
    """
    config = evaluation_config(evaluation)
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
    metrics: dict[str, Any] = {"model": trained_model.name, "k": config.k, "best_epoch": trained_model.best_epoch}
    for split in SPLITS:
        rows = predictions[predictions["split"] == split]
        result = ranking_metrics(rows["user"], rows["item"], rows["label"], rows["score"], config.k)
        # A split without any positive has no metric: null in JSON, absent from MLflow.
        metrics.update({key: None if value != value else value for key, value in result.as_dict(split).items()})
    logger.info(
        "%s: test Recall@%d = %s, NDCG@%d = %s (%d users, %d skipped without a positive)",
        trained_model.name,
        config.k,
        _format(metrics[f"test_recall_at_{config.k}"]),
        config.k,
        _format(metrics[f"test_ndcg_at_{config.k}"]),
        metrics["test_users_evaluated"],
        metrics["test_users_skipped"],
    )
    mlflow_metrics = {
        key: {"value": float(value), "step": 0}
        for key, value in metrics.items()
        if key not in ("model", "k") and value is not None
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
