"""Whole runs through ``KedroSession`` in a temporary copy of the project."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.validation.exceptions import ParameterValidationError

from tests.conftest import REPO

pytestmark = pytest.mark.slow

FAST = {"dual.model.epochs": 15, "dual.model.patience": 5, "mf.model.epochs": 15, "mf.model.patience": 5}


def nested(params: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys into nested blocks, as ``kedro run --params=a.b=1`` does."""
    tree: dict[str, Any] = {}
    for dotted, value in params.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def run_pipeline(project: Path, pipeline: str, **params: Any) -> str:
    """Run ``pipeline`` like ``kedro run --pipelines=... --params=...``; return the session id."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=nested({**FAST, **params})) as session:
        session.run(pipeline_names=[pipeline])
        return session.session_id


def latest_run(project: Path) -> mlflow.entities.Run:
    """The newest top-level run (nested runs carry a parent tag)."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["debias_pipeline"], output_format="list", order_by=["start_time DESC"])
    return next(run for run in runs if "mlflow.parentRunId" not in run.data.tags)


def versioned_files(project: Path, version: str) -> list[Path]:
    return sorted(p for p in (project / "data").rglob("*") if p.is_file() and version in p.parts)


def test_train_dual_logs_params_metrics_curves_and_artifacts(project_copy: Path) -> None:
    version = run_pipeline(project_copy, "train_dual", seed=1)

    run = latest_run(project_copy)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == (
        "train_dual · synthetic · seed 1 · dual.model.epochs=15 dual.model.patience=5 mf.model.epochs=15 mf.model.patience=5"
    )
    # The command that repeats the run, in the project's tag and kedro-mlflow's (which
    # would leave out --params); the runner by its class name, not its repr.
    command = (
        "kedro run --pipelines=train_dual "
        "--params=dual.model.epochs=15,dual.model.patience=5,mf.model.epochs=15,mf.model.patience=5,seed=1"
    )
    assert run.data.tags["kedro.command"] == command
    assert run.data.tags["kedro_command"] == command
    assert run.data.tags["runner"] == "SequentialRunner"

    params = run.data.params
    assert params["dataset"] == "synthetic"
    assert params["seed"] == "1"
    assert params["dual.model.exposure.embedding_dim"] == "200"
    assert params["dual.model.epochs"] == "15"
    # null: the dataset's defaults (threshold 4 on the simulator's 1..5 ratings, 0.2 of
    # the unbiased rows for validation, the thesis protocol at K = 5).
    assert params["binarization.threshold"] == "None"
    assert params["split.validation_fraction"] == "None"
    assert params["evaluation.protocol"] == "None"
    assert params["evaluation.k"] == "None"

    metrics = run.data.metrics
    for key in ("dual.test_recall_at_5", "dual.test_ndcg_at_5", "dual.validation_ndcg_at_5"):
        assert 0.0 <= metrics[key] <= 1.0
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(run.info.run_id, "dual.train_loss")
    curve = client.get_metric_history(run.info.run_id, "dual.epoch_validation_ndcg_at_5")
    assert 1 <= len(losses) <= 15
    assert [m.step for m in losses] == list(range(1, len(losses) + 1))
    assert len(curve) == len(losses)

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "dual")}
    assert {"dual/metrics.json", "dual/predictions.csv", "dual/model_weights.pkl", "dual/learning_curve.png"} <= artifacts
    data_artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert {
        "data/ratings.parquet",
        "data/interactions.parquet",
        "data/interaction_split.parquet",
        "data/dataset_summary.json",
        "data/train_matrix.pkl",
        "data/normalized_adjacency.pkl",
    } <= data_artifacts

    # The versioned metrics file on disk holds the same numbers as MLflow.
    metrics_file = project_copy / "data/08_reporting/dual/metrics.json" / version / "metrics.json"
    saved = json.loads(metrics_file.read_text())
    assert saved["protocol"] == "thesis" and saved["k"] == [5] and saved["selection_metric"] == "ndcg_at_5"
    assert saved["test_recall_at_5"] == pytest.approx(metrics["dual.test_recall_at_5"])
    assert saved["test_users_skipped"] == metrics["dual.test_users_skipped"]
    assert saved["test_precision_at_5"] == pytest.approx(metrics["dual.test_precision_at_5"])


def test_same_seed_same_metrics(project_copy: Path) -> None:
    first = run_pipeline(project_copy, "train_mf", seed=2)
    second = run_pipeline(project_copy, "train_mf", seed=2)
    read = lambda v: json.loads((project_copy / "data/08_reporting/mf/metrics.json" / v / "metrics.json").read_text())  # noqa: E731
    assert read(first) == read(second)


def test_failed_run_leaves_no_versioned_artifact(project_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from debias_pipeline.models.trainers import FullBatchRecommender

    def broken_fit(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("training broke")

    monkeypatch.setattr(FullBatchRecommender, "fit", broken_fit)
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=nested(FAST)) as session:
        with pytest.raises(RuntimeError, match="training broke"):
            session.run(pipeline_names=["train_dual"])
        version = session.session_id
    # Data processing had saved its artifacts before training failed; all are gone.
    assert versioned_files(project_copy, version) == []
    assert latest_run(project_copy).info.status == "FAILED"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dataset": "movielens"}, "unknown dataset 'movielens'"),
        ({"binarization.threshold": 6}, "binarization"),
        ({"preprocessing.duplicates": "keep"}, "preprocessing.duplicates"),
        ({"evaluation.k": 0}, "evaluation"),
        # The simulator has no timestamps: leave_one_out cannot split it.
        ({"evaluation.protocol": "leave_one_out"}, "'leave_one_out'.*no timestamps"),
        # strong_generalization scores unseen users: the dual model cannot fold them in.
        ({"evaluation.protocol": "strong_generalization"}, "cannot score a user it was not trained on"),
        ({"dual.model.name": "transformer"}, "unknown model 'transformer'"),
        ({"dual.model.exposure.embedding_dim": 0}, "embedding_dim"),
        ({"device": "tpu"}, "device"),
        # Each block is checked by Kedro's parameter validation (its Params type hint).
        ({"dual.model.lr": float("inf")}, r"parameter 'dual\.model\.lr' must be a finite number, got inf"),
        ({"evaluation.k": "5"}, r"parameter 'evaluation\.k' must be an integer, got '5'"),
        ({"split.test_fractoin": 0.3}, r"unknown parameter\(s\) split\.test_fractoin; did you mean 'test_fraction'\?"),
        # A --params key that no pipeline reads, with the closest valid name.
        ({"sed": 3}, r"parameter 'sed' \(from --params\) is not read by any pipeline; did you mean 'seed'\?"),
        ({"evaluaton.k": 3}, r"parameter 'evaluaton\.k' .*not read by any pipeline; did you mean 'evaluation\.k'\?"),
        ({"custom.columns.userr": "u"}, r"'custom\.columns\.userr' .*did you mean 'custom\.columns\.user'\?"),
    ],
)
def test_bad_parameter_stops_before_any_node(project_copy: Path, params: dict[str, Any], message: str) -> None:
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=nested({**FAST, **params})) as session:
        with pytest.raises(Exception, match=message):
            session.run(pipeline_names=["train_dual"])
    assert not any(p.is_file() for p in (project_copy / "data").rglob("*"))
    # No node ran: not even the folder of a versioned dataset was made.
    layers = {project_copy / "data" / layer.name for layer in (project_copy / "data").iterdir()}
    assert {p for p in (project_copy / "data").rglob("*")} == layers


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"evaluation.k": [5, "10"]}, r"^parameter 'evaluation\.k\[1\]' must be an integer, got '10'$"),
        (
            {"dual.model.exposure.embeding_dim": 4},
            r"^unknown parameter\(s\) dual\.model\.exposure\.embeding_dim; did you mean 'embedding_dim'\?",
        ),
        (
            {"mf.model.lr": 0.0, "binarization.threshold": "4"},
            r"parameter 'binarization\.threshold' must be a number, got '4'; "
            r"parameter 'mf\.model\.lr': lr must be a finite number > 0, got 0\.0$",
        ),
    ],
)
def test_kedro_validates_every_block_with_its_model(project_copy: Path, params: dict[str, Any], message: str) -> None:
    # Kedro's own parameter validation (Params type hints on the nodes' params: inputs)
    # reports every bad block at once, each problem naming the dotted parameter.
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, runtime_params=nested({**FAST, **params})) as session:
        with pytest.raises(ParameterValidationError, match=message):
            session.run(pipeline_names=["train_mf", "train_dual"])


def test_missing_raw_file_names_it(project_copy: Path) -> None:
    with pytest.raises(Exception, match=r"data/01_raw/coat/train.ascii"):
        run_pipeline(project_copy, "train_dual", dataset="coat")


def test_bad_coat_rating_names_file_and_row(project_copy: Path, coat_dir: Path) -> None:
    raw = project_copy / "data/01_raw/coat"
    raw.mkdir()
    shutil.copy(coat_dir / "test.ascii", raw / "test.ascii")
    lines = (coat_dir / "train.ascii").read_text().splitlines()
    values = lines[2].split()
    values[7] = "7"
    lines[2] = " ".join(values)
    (raw / "train.ascii").write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=r"train.ascii row 3: rating 7"):
        run_pipeline(project_copy, "train_dual", dataset="coat")
    assert not any(p.is_file() for p in (project_copy / "data").rglob("*") if "01_raw" not in p.parts)


def test_coat_end_to_end(project_copy: Path, coat_dir: Path) -> None:
    raw = project_copy / "data/01_raw/coat"
    raw.mkdir()
    for name in ("train.ascii", "test.ascii"):
        shutil.copy(coat_dir / name, raw / name)
    version = run_pipeline(project_copy, "train_mf", dataset="coat", **{"mf.model.epochs": 30})

    import pandas as pd

    ratings = pd.read_parquet(project_copy / "data/02_intermediate/ratings.parquet" / version / "ratings.parquet")
    counts = ratings["source"].value_counts()
    assert counts["biased"] == 6960 and counts["unbiased"] == 4640  # PROTOCOL.md §2
    assert ratings["user"].max() == 289 and ratings["item"].max() == 299
    split = pd.read_parquet(
        project_copy / "data/03_primary/interaction_split.parquet" / version / "interaction_split.parquet"
    )
    assert (split["split"] == "validation").sum() == 928  # round(0.2 * 4640)
    assert (split["split"] == "test").sum() == 4640 - 928
    assert ((split["split"] == "train") == (split["source"] == "biased")).all()
    summary = json.loads(
        (project_copy / "data/02_intermediate/dataset_summary.json" / version / "dataset_summary.json").read_text()
    )
    assert (summary["n_users"], summary["n_items"]) == (290, 300)
    metrics = json.loads((project_copy / "data/08_reporting/mf/metrics.json" / version / "metrics.json").read_text())
    assert metrics["protocol"] == "thesis" and metrics["k"] == [5]
    assert metrics["test_users_evaluated"] + metrics["test_users_skipped"] == 290
    assert metrics["test_recall_at_5"] > 0.4


SHORT_THESIS = {
    "seeds": [0, 1],
    "spectra_rows": [],
    "rows": [
        {"label": "MF", "table": "5.2", "base": "mf", "study": {"coat": [0.5563, 0.5214]}},
        {"label": "dual, baseline (MF x MF)", "table": "5.2", "base": "dual"},
        {"label": "dual, dimension", "table": "5.2", "base": "dual", "select": {"exposure.embedding_dim": [8, 200]}},
    ],
}


def test_reproduce_thesis_short_run_and_its_notebook(project_copy: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    bootstrap_project(project_copy)
    params = nested(FAST)
    params["reproduce_thesis"] = SHORT_THESIS
    with KedroSession.create(project_path=project_copy, runtime_params=params) as session:
        session.run(pipeline_names=["reproduce_thesis"])
        version = session.session_id

    table = (project_copy / "data/08_reporting/reproduce_thesis/comparison.md" / version / "comparison.md").read_text()
    assert "| 5.2 | dual, dimension |" in table
    for plot in ("popularity_share", "spectra", "exposure_size", "eigen_grid"):
        assert (project_copy / f"data/08_reporting/reproduce_thesis/{plot}.png" / version / f"{plot}.png").is_file()

    parent = latest_run(project_copy)
    assert parent.info.run_name.startswith("reproduce_thesis · synthetic · seed 0 · ")
    children = mlflow.search_runs(
        experiment_names=["debias_pipeline"], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3 * 2  # one nested run per row and seed
    assert set(children["params.row"]) == {row["label"] for row in SHORT_THESIS["rows"]}

    notebook = nbformat.read(REPO / "notebooks" / "reproduce_thesis_comparison.ipynb", as_version=4)
    os.environ["DEBIAS_PROJECT"] = str(project_copy)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project_copy)}}).execute()
    finally:
        del os.environ["DEBIAS_PROJECT"]
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    printed = "".join(output.get("text", "") for output in outputs)
    assert "6 nested runs, 2 seeds, 3 rows" in printed
    assert f"parent run {parent.info.run_id} dataset synthetic" in printed
    # The summary table: every row of the study, mean, std and count over the two seeds.
    (table,) = [output["data"]["text/html"] for output in outputs if "text/html" in output.get("data", {})]
    for row in SHORT_THESIS["rows"]:
        assert row["label"] in table
    assert table.count("<td>2</td>") == 2 * len(SHORT_THESIS["rows"])  # count of test_recall and of test_ndcg
