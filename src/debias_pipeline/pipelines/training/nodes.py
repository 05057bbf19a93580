"""Nodes that resolve the device and train one model."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.registry import ModelBlock, build_model, check_model_fits_protocol
from debias_pipeline.serving.recommender import build_recommender
from debias_pipeline.serving.server import RecommenderModel
from debias_pipeline.training.device import resolve_device
from debias_pipeline.training.inputs import treatment_inputs
from debias_pipeline.training.tracking import MetricHistory, learning_curves

logger = logging.getLogger(__name__)

def resolve_compute_device(device: str) -> torch.device:
    """The run's device, resolved once from the ``device`` parameter (auto | cpu | cuda)."""
    resolved = resolve_device(device)
    logger.info("Training on %s", resolved)
    return resolved


def train_model(
    train_data: TrainData,
    evaluators: Evaluators,
    model: ModelBlock,
    seed: int,
    compute_device: torch.device,
    *pretrained_weights: dict[str, Any],
    where: str = "model",
    pretrained: tuple[str, ...] = (),
) -> tuple[Recommender, dict[str, Any], MetricHistory, pd.DataFrame]:
    """Fit the model of one parameter block, early-stopped on the validation metric.

    Args:
        train_data: Y, Â and the side data.
        evaluators: the protocol's validation and test evaluators; early stopping
            uses the validation one's selection metric (test is never read); for
            a model that ``needs_treatment`` (CausE), on the validation users it did
            not train on (``training.inputs.treatment_inputs``).
        model: the model's parameter block (``name`` picks the registry entry).
        seed: initialization seed.
        compute_device: the resolved device.
        pretrained_weights: the fitted weights (``state_dict``) of the models this one
            starts from, one per name of ``pretrained`` (NeuMF: GMF's and MLP's).
        where: the block's dotted parameter name, for error messages.
        pretrained: the parameter blocks of those models (``gmf``, ``mlp``).

    Returns:
        The fitted model; its weights (CPU state dict); the learning curves as MLflow
        metric history (``train_loss``, ``epoch_validation_<metric>``); the same
        curves as a table.
    """
    recommender = build_model(model, where, seed=seed, device=compute_device)
    check_model_fits_protocol(type(recommender), evaluators.setup.protocol.name)
    # CausE: its treatment set is half the validation users, early stopping the other half.
    train_data, evaluators = treatment_inputs(recommender, train_data, evaluators)
    validation = evaluators.validation
    if pretrained:
        recommender.fit(train_data, validation=validation, pretrained=dict(zip(pretrained, pretrained_weights, strict=True)))
    else:
        recommender.fit(train_data, validation=validation)
    fits = recommender.fits
    if len(fits) > 1:  # an ensemble: each fit stopped on its own
        logger.info(
            "%s: best validation %s of its %d fits at epochs %s", recommender.name, validation.metric, len(fits), [m.best_epoch for m in fits]
        )
    else:
        logger.info(
            "%s: best validation %s at epoch %s of %d", recommender.name, validation.metric, recommender.best_epoch, len(recommender.history)
        )
    metric = f"validation_{validation.metric}"
    history = pd.DataFrame(
        {
            "epoch": [r.epoch for r in recommender.history],
            "train_loss": [r.train_loss for r in recommender.history],
            metric: [np.nan if r.validation_score is None else r.validation_score for r in recommender.history],
        }
    )
    return recommender, recommender.state_dict(), learning_curves(recommender, metric), history


def package_recommender(
    trained_model: Recommender,
    id_maps: pd.DataFrame,
    item_metadata: pd.DataFrame,
    train_matrix: sp.csr_matrix,
    dataset: str,
) -> tuple[dict[str, Any], RecommenderModel]:
    """The fitted model with its id maps, item metadata and train positives: the
    ``<model>.recommender`` artifact (``load_recommender`` reads it; the ``recommend``
    pipeline uses the newest one of the dataset) and the MLflow pyfunc model that the
    run logs and registers as ``<dataset>-<model>``."""
    package = build_recommender(dataset, trained_model, id_maps, item_metadata, train_matrix).package()
    return package, RecommenderModel(package)
