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


class TrainedOnly:
    """Two epochs with ``eval_every: 5``: trained, never validated."""

    history = [EpochRecord(1, 0.9, None), EpochRecord(2, 0.7, None)]


def test_a_fit_never_validated_has_only_its_loss_curve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset

    curves = learning_curves(TrainedOnly(), "validation_ndcg_at_5")
    assert curves == {"train_loss": [{"step": 1, "value": 0.9}, {"step": 2, "value": 0.7}]}
    # kedro-mlflow refuses an empty curve: the run saving it would fail after training.
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run(experiment_id=mlflow.MlflowClient().create_experiment("curves")) as run:
            MlflowMetricsHistoryDataset(prefix="mf").save(curves)
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "mf.train_loss")
        assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, pytest.approx(0.7))]
    finally:
        mlflow.set_tracking_uri(before)


@pytest.mark.slow
def test_a_run_with_fewer_epochs_than_eval_every_keeps_its_last_epoch(project_copy: Path):
    import pandas as pd

    from tests.test_end_to_end import latest_run, run_pipeline, versioned_files

    version = run_pipeline(project_copy, "train_mf", **{"mf.model.epochs": 2, "mf.model.eval_every": 5})
    files = {p.name: p for p in versioned_files(project_copy, version)}
    history = pd.read_csv(files["training_history.csv"])
    assert history["epoch"].tolist() == [1, 2] and history["validation_ndcg_at_5"].isna().all()
    # No validation evaluation: the weights kept are the last epoch's.
    assert load_pickle(files["model_weights.pkl"])["best_epoch"] == 2
    run = latest_run(project_copy)
    assert run.info.status == "FINISHED"
    assert "mf.train_loss" in run.data.metrics and not any(k.startswith("mf.epoch_validation") for k in run.data.metrics)


def load_pickle(path: Path) -> dict:
    import pickle

    with path.open("rb") as handle:
        return pickle.load(handle)
