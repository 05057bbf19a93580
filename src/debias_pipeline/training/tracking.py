"""Learning curves as MLflow metric history, and the nested MLflow runs of a grid's fits
(``reproduce_thesis``, ``study_hypotheses``) and of a study's trials (``tune``)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag

if TYPE_CHECKING:
    from debias_pipeline.models.contract import Recommender

MetricHistory = dict[str, list[dict[str, float | int]]]  # kedro-mlflow's metrics history format
METRIC_BATCH, PARAM_BATCH = 1000, 100  # MLflow's limits per log_batch call


def learning_curves(model: Recommender, metric: str) -> MetricHistory:
    """``train_loss`` at every epoch and ``epoch_<metric>`` at every validation of a
    fitted model's history.

    A curve without a point is left out: a fit with fewer epochs than ``eval_every``
    has no validation evaluation (and keeps its last epoch's weights), and kedro-mlflow
    refuses to save an empty metric history, which would fail the run after training.
    """
    curves: MetricHistory = {
        "train_loss": [{"step": r.epoch, "value": r.train_loss} for r in model.history],
        f"epoch_{metric}": [
            {"step": r.epoch, "value": r.validation_score} for r in model.history if r.validation_score is not None
        ],
    }
    return {name: points for name, points in curves.items() if points}


def flat_params(block: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A nested parameter block as dotted MLflow parameters ``<prefix>.<key>``."""
    if not block:
        return {}
    return {f"{prefix}.{key}": value for key, value in pd.json_normalize(dict(block), sep=".").iloc[0].items()}


def log_nested_run(
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    curves: MetricHistory | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """One nested run of the active MLflow run: its parameters, tags, final metrics
    (missing and NaN values left out) and curves, in batched calls. Nothing when no run
    is active (a node called outside ``kedro run``)."""
    parent = mlflow.active_run()
    if parent is None:
        return
    now = int(time.time() * 1000)
    entries = [
        Metric(key, float(value), now, 0)
        for key, value in metrics.items()
        if value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    ]
    for key, points in (curves or {}).items():
        entries += [Metric(key, float(p["value"]), now, int(p["step"])) for p in points if math.isfinite(float(p["value"]))]
    client = mlflow.MlflowClient()
    # In the parent's experiment: MLflow would otherwise put the child in the active
    # experiment, the default one when the parent was started with an experiment id.
    with mlflow.start_run(run_name=name, nested=True, experiment_id=parent.info.experiment_id) as run:
        client.log_batch(run.info.run_id, tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()])
        listed = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(listed), PARAM_BATCH):
            client.log_batch(run.info.run_id, params=listed[start : start + PARAM_BATCH])
        for start in range(0, len(entries), METRIC_BATCH):
            client.log_batch(run.info.run_id, metrics=entries[start : start + METRIC_BATCH])
