"""Nodes that evaluate a trained model under the run's protocol (``protocols``) and
draw its learning curve."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from debias_pipeline.evaluation.evaluators import Evaluators  # noqa: E402
from debias_pipeline.evaluation.protocols import SPLITS
from debias_pipeline.models.contract import Recommender  # noqa: E402
from debias_pipeline.training.inputs import treatment_split  # noqa: E402

logger = logging.getLogger(__name__)


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluate_model(
    trained_model: Recommender, evaluators: Evaluators
) -> tuple[dict[str, Any], dict[str, dict[str, float | int]], pd.DataFrame]:
    """Every metric of the protocol at every cut-off, on the validation and test splits.

    Args:
        trained_model: the fitted model.
        evaluators: the run's validation and test evaluators (the validation split
            cut to the users a model that ``needs_treatment`` did not train on).

    Returns:
        ``metrics`` (a JSON-able report: ``<split>_<metric>_at_<k>`` for recall, ndcg,
        precision and hr, the users evaluated and skipped, the test rows dropped because
        their ids were never seen in train, and next to them the popularity bias and
        coverage of the test users' top-k lists: ``test_arp_at_<k>``, ``test_aplt_at_<k>``,
        ``test_exposure_gini_at_<k>``, ``test_item_coverage_at_<k>``), the same numbers as MLflow metrics, and the
        predictions from which anyone can recompute them (the scored rows, or each
        user's ranked top items).
    """
    # CausE trained on half the validation users: its validation metrics are the other half's.
    _, evaluators = treatment_split(trained_model, evaluators)
    setup = evaluators.setup
    metrics: dict[str, Any] = {
        "model": trained_model.name,
        "protocol": setup.protocol.name,
        "k": list(setup.cutoffs),
        "selection_metric": setup.selection_metric,
        "selection": setup.selection_key,
        "best_epoch": trained_model.best_epoch,
    }
    predictions = []
    for split in SPLITS:
        values, split_predictions = getattr(evaluators, split).report(trained_model)
        metrics.update(values)
        predictions.append(split_predictions)
    metrics["test_rows_dropped_unseen"] = evaluators.test_rows_dropped_unseen
    metrics.update(evaluators.popularity_report(trained_model, predictions[-1]))
    k = setup.k
    logger.info(
        "%s: test Recall@%d = %s, NDCG@%d = %s (%s protocol; %d users, %d skipped without a positive)",
        trained_model.name,
        k,
        _format(metrics[f"test_recall_at_{k}"]),
        k,
        _format(metrics[f"test_ndcg_at_{k}"]),
        setup.protocol.name,
        metrics["test_users_evaluated"],
        metrics["test_users_skipped"],
    )
    mlflow_metrics = {
        key: {"value": float(value), "step": 0}
        for key, value in metrics.items()
        if key not in ("model", "protocol", "k", "selection_metric", "selection") and value is not None
    }
    return metrics, mlflow_metrics, pd.concat(predictions, ignore_index=True)


def plot_learning_curve(training_history: pd.DataFrame) -> plt.Figure:
    """Training loss and the validation metric per epoch, on two axes."""
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(training_history["epoch"], training_history["train_loss"], color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    metric_columns = [c for c in training_history.columns if c.startswith("validation_")]
    if metric_columns:
        metric_axis = loss_axis.twinx()
        curve = training_history[["epoch", metric_columns[0]]].dropna()
        metric_axis.plot(curve["epoch"], curve[metric_columns[0]], color="tab:orange")
        metric_axis.set_ylabel(metric_columns[0].replace("_", " "), color="tab:orange")
    figure.tight_layout()
    plt.close(figure)
    return figure
