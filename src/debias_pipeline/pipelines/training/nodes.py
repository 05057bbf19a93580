"""Nodes that resolve the device and train one model."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from debias_pipeline.device import resolve_device
from debias_pipeline.models import Recommender, TrainData, ValidationSet, build_model
from debias_pipeline.pipelines.evaluation.nodes import EvaluationConfig, evaluation_config

logger = logging.getLogger(__name__)

MetricHistory = dict[str, list[dict[str, float | int]]]


def resolve_compute_device(device: str) -> torch.device:
    """The run's device, resolved once from the ``device`` parameter (auto | cpu | cuda)."""
    resolved = resolve_device(device)
    logger.info("Training on %s", resolved)
    return resolved


def validation_set(unbiased_split: pd.DataFrame, config: EvaluationConfig) -> ValidationSet:
    """The validation rows of the split, for early stopping on NDCG@k."""
    rows = unbiased_split[unbiased_split["split"] == "validation"]
    return ValidationSet(
        users=rows["user"].to_numpy(np.int64),
        items=rows["item"].to_numpy(np.int64),
        labels=rows["label"].to_numpy(np.float64),
        k=config.k,
    )


def train_model(
    train_matrix: sp.csr_matrix,
    normalized_adjacency: sp.csr_matrix,
    unbiased_split: pd.DataFrame,
    model: dict[str, Any],
    seed: int,
    compute_device: torch.device,
    evaluation: dict[str, Any],
    *,
    where: str = "model",
) -> tuple[Recommender, dict[str, Any], MetricHistory, pd.DataFrame]:
    """Fit the model of one parameter block, early-stopped on validation NDCG@k.

    Args:
        train_matrix: (n_users, n_items) Y.
        normalized_adjacency: Â for graph models.
        unbiased_split: the unbiased rows with their ``split``.
        model: the model's parameter block (``name`` picks the registry entry).
        seed: initialization seed.
        compute_device: the resolved device.
        evaluation: evaluation parameters (``k`` of the early-stopping NDCG).
        where: the block's dotted parameter name, for error messages.

    Returns:
        The fitted model; its weights (CPU state dict); the learning curves as MLflow
        metric history (``train_loss``, ``epoch_validation_ndcg_at_<k>``); the same
        curves as a table.
    """
    config = evaluation_config(evaluation)
    recommender = build_model(model, where, seed=seed, device=compute_device)
    validation = validation_set(unbiased_split, config)
    recommender.fit(TrainData(train_matrix, normalized_adjacency), validation=validation)
    logger.info(
        "%s: best validation NDCG@%d at epoch %s of %d",
        recommender.name,
        config.k,
        recommender.best_epoch,
        len(recommender.history),
    )
    history = pd.DataFrame(
        {
            "epoch": [r.epoch for r in recommender.history],
            "train_loss": [r.train_loss for r in recommender.history],
            f"validation_ndcg_at_{config.k}": [
                np.nan if r.validation_ndcg is None else r.validation_ndcg for r in recommender.history
            ],
        }
    )
    curves: MetricHistory = {
        "train_loss": [{"step": r.epoch, "value": r.train_loss} for r in recommender.history],
        f"epoch_validation_ndcg_at_{config.k}": [
            {"step": r.epoch, "value": r.validation_ndcg}
            for r in recommender.history
            if r.validation_ndcg is not None
        ],
    }
    return recommender, recommender.state_dict(), curves, history
