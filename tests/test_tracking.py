"""Nested MLflow runs of a grid's fits: parameters, tags, metrics and curves as logged."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest

from debias_pipeline.models.contract import EpochRecord
from debias_pipeline.training.tracking import flat_params, learning_curves, log_nested_run


class Fitted:
    history = [EpochRecord(1, 0.9, None), EpochRecord(2, 0.7, 0.31), EpochRecord(3, 0.6, None), EpochRecord(4, 0.5, 0.35)]


def test_learning_curves_keep_every_loss_and_every_validation():
    curves = learning_curves(Fitted(), "validation_ndcg_at_5")
    assert curves["train_loss"] == [{"step": e, "value": v} for e, v in ((1, 0.9), (2, 0.7), (3, 0.6), (4, 0.5))]
    assert curves["epoch_validation_ndcg_at_5"] == [{"step": 2, "value": 0.31}, {"step": 4, "value": 0.35}]


def test_flat_params_dot_nested_blocks():
    block = {"name": "dual", "preference": {"embedding_dim": 8, "num_layers": 0}, "lr": 0.05}
    assert flat_params(block, "model") == {
        "model.name": "dual",
        "model.preference.embedding_dim": 8,
        "model.preference.num_layers": 0,
        "model.lr": 0.05,
    }
    assert flat_params({}, "model") == {}


def test_log_nested_run_under_the_active_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        log_nested_run("outside", {"a": 1}, {"m": 1.0})  # no active run: nothing, no error
        experiment = mlflow.MlflowClient().create_experiment("tracking")
        with mlflow.start_run(experiment_id=experiment) as parent:
            curve = [{"step": s, "value": 0.1 * s} for s in range(1, 1201)]  # more than one batch
            params = {f"p{i}": i for i in range(150)}  # more than one parameter batch
            log_nested_run("fit 1", params, {"m": 0.5, "missing": math.nan, "none": None}, {"loss": curve}, {"t": "x"})
        client = mlflow.MlflowClient()
        runs = client.search_runs([parent.info.experiment_id])
        assert len(runs) == 2  # "outside" was not logged
        child = next(r for r in runs if r.info.run_id != parent.info.run_id)
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["mlflow.runName"] == "fit 1" and child.data.tags["t"] == "x"
        assert child.data.params == {f"p{i}": str(i) for i in range(150)}
        assert child.data.metrics["m"] == 0.5 and "missing" not in child.data.metrics and "none" not in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(p["step"], pytest.approx(p["value"])) for p in curve]
    finally:
        mlflow.set_tracking_uri(before)
