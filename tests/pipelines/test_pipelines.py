"""Whole pipelines run with ``SequentialRunner`` on an in-memory ``DataCatalog``.

No files, no MLflow: every input is a ``MemoryDataset`` (parameters are datasets
named ``params:...``) and every output the runner creates is one too.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from omegaconf import OmegaConf

from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import MODELS, build_model
from debias_pipeline.pipeline_registry import (
    CHOSEN_NAMESPACES,
    MODEL_NAMESPACES,
    SIDE_DATA_NAMESPACES,
    VARIANT_NAMESPACES,
    register_pipelines,
)
from debias_pipeline.pipelines.data_processing import pipeline as data_processing

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
DATA_NODES = {
    "ingest_ratings",
    "binarize_ratings",
    "index_interactions",
    "split_interactions",
    "build_train_matrix",
    "build_normalized_adjacency",
    "build_train_data",
    "build_evaluators",
}
# Resolved once per run before any model: the device and the propensity estimate attached to the train data.
SETUP_NODES = {"resolve_compute_device", "estimate_propensities", "log_propensity_report", "attach_propensities"}
MODEL_NODES = ("train_model", "package_recommender", "evaluate_model", "plot_learning_curve")

SYNTHETIC = {
    "n_users": 40,
    "n_items": 30,
    "rank": 2,
    "train_ratings_per_user": 6.0,
    "test_items_per_user": 8,
}
SMALL_MODELS: dict[str, dict[str, Any]] = {
    "mf": {"name": "mf", "embedding_dim": 8, "epochs": 30, "lr": 0.05, "patience": 10},
    "lightgcn": {"name": "lightgcn", "embedding_dim": 8, "num_layers": 2, "epochs": 30, "lr": 0.05, "patience": 10},
    "dual": {
        "name": "dual",
        "preference": {"embedding_dim": 8},
        "exposure": {"embedding_dim": 4, "num_layers": 1},
        "epochs": 30,
        "lr": 0.05,
        "patience": 10,
    },
    **{
        f"dual_{variant}": {"name": "dual", "preference": {"embedding_dim": 8}, "exposure": {"embedding_dim": 4, **exposure}, "epochs": 30, "lr": 0.05, "patience": 10}
        for variant, exposure in (
            ("prior", {"prior": "popularity", "prior_learned": True}),
            ("supervised", {"supervision_weight": 0.3}),
            ("popconstraint", {"popularity_tie_weight": 0.01, "popularity_tie_slope": 1.0}),
        )
    },
    "ngcf": {"name": "ngcf", "embedding_dim": 8, "num_layers": 2, "epochs": 30, "lr": 0.05, "patience": 10},
    "wmf": {"name": "wmf", "embedding_dim": 8, "epochs": 10, "patience": 5},
    "expomf": {"name": "expomf", "embedding_dim": 8, "epochs": 10, "patience": 5},
    "relmf": {"name": "relmf", "embedding_dim": 8, "epochs": 30, "lr": 0.05, "patience": 10},
    "mf_ips": {"name": "mf_ips", "embedding_dim": 8, "self_normalize": True, "epochs": 30, "lr": 0.05, "patience": 10},
    "dr_jl": {"name": "dr_jl", "prediction": {"embedding_dim": 8}, "imputation": {"embedding_dim": 8}, "epochs": 30, "lr": 0.05, "patience": 10},
    "cause": {"name": "cause", "embedding_dim": 8, "epochs": 30, "lr": 0.05, "patience": 10},
    "mostpop": {"name": "mostpop"},
    "itemknn": {"name": "itemknn", "neighbors": 10},
    "ease": {"name": "ease", "l2_grid": [1.0, 10.0, 100.0]},
    "recrec_f": {"name": "recrec", "variant": "F", "embedding_dim": 8, "epochs": 30, "lr": 0.05, "patience": 10},
    "recrec_i": {"name": "recrec", "variant": "I", "embedding_dim": 8, "epochs": 30, "lr": 0.05, "patience": 10},
    "gmf": {"name": "gmf", "embedding_dim": 4, "epochs": 10, "lr": 0.01, "patience": 5},
    "mlp": {"name": "mlp", "embedding_dim": 4, "num_layers": 2, "epochs": 10, "lr": 0.01, "patience": 5},
    "neumf": {"name": "neumf", "embedding_dim": 4, "num_layers": 2, "pretrain": True, "optimizer": "sgd", "epochs": 10, "patience": 5},
    "multvae": {"name": "multvae", "hidden_dims": [16], "latent_dim": 8, "epochs": 10, "lr": 0.01, "patience": 5},
    "multdae": {"name": "multdae", "hidden_dims": [16], "latent_dim": 8, "epochs": 10, "lr": 0.01, "patience": 5},
}
SMALL_GRAPH = {"embedding_dim": 8, "num_layers": 2, "batch_size": 64, "epochs": 10, "lr": 0.01, "patience": 5, "eval_every": 1}
SMALL_MODELS |= {
    "gcn": {"name": "gcn", **SMALL_GRAPH},
    "gat": {"name": "gat", **SMALL_GRAPH, "fanouts": [4, 2]},
    "graphsage": {"name": "graphsage", **SMALL_GRAPH, "fanouts": [4, 2]},
    "pinsage": {"name": "pinsage", **SMALL_GRAPH, "fanouts": [4, 2], "hard_negative_start": 3},
    "socialgcn": {"name": "socialgcn", **SMALL_GRAPH},
}
SMALL_MODELS |= {
    "pda": {"name": "pda", "embedding_dim": 8, "batch_size": 64, "epochs": 10, "lr": 0.01, "patience": 5},
    "macr": {"name": "macr", "embedding_dim": 8, "epochs": 30, "lr": 0.05, "patience": 10},
    "dice": {"name": "dice", "embedding_dim": 8, "margin": 1.0, "batch_size": 64, "epochs": 10, "lr": 0.01, "patience": 5},
}
# Models trained after others in their own pipeline (train_neumf: GMF and MLP first).
UPSTREAM = {"neumf": ("gmf", "mlp")}


class KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so intermediate outputs can be read after the run."""

    def _release(self) -> None:
        pass


def synthetic_raw() -> RawData:
    """What the catalog's raw_data gives for dataset=synthetic (no files)."""
    return RawDataset("synthetic", root="unused").load()


def catalog_for(
    raw: RawData, *, dataset: str, seed: int = 0, keep: tuple[str, ...] = (), evaluation: dict | None = None
) -> DataCatalog:
    parameters: dict[str, Any] = {
        "dataset": dataset,
        "seed": seed,
        "device": "cpu",
        "synthetic": SYNTHETIC,
        "binarization": {"threshold": 4},
        "preprocessing": {},
        "split": {"validation_fraction": 0.25},
        "cold_start": {},
        "propensity": {},
        "evaluation": {"k": 5} if evaluation is None else evaluation,
        **{f"{namespace}.model": block for namespace, block in SMALL_MODELS.items()},
    }
    datasets = {f"params:{name}": MemoryDataset(value) for name, value in parameters.items()}
    datasets["raw_data"] = MemoryDataset(raw, copy_mode="assign")
    # As in conf/base/catalog.yml: in-memory torch objects pass by reference.
    for name in ("compute_device", "train_data", "weighted_train_data", "evaluators"):
        datasets[name] = MemoryDataset(copy_mode="assign")
    for namespace in SMALL_MODELS:
        datasets[f"{namespace}.trained_model"] = MemoryDataset(copy_mode="assign")
        # A saved artifact in the project's catalog, which a later model may read (NeuMF).
        datasets[f"{namespace}.model_weights"] = KeptMemoryDataset(copy_mode="assign")
    for name in keep:
        datasets[name] = KeptMemoryDataset()
    return DataCatalog(datasets)


def run(pipeline: Pipeline, catalog: DataCatalog) -> DataCatalog:
    SequentialRunner().run(pipeline, catalog)
    return catalog


# ---- (a) data processing ---------------------------------------------------------------------


def test_data_processing_on_synthetic_data() -> None:
    catalog = run(
        data_processing.create_pipeline(),
        catalog_for(
            synthetic_raw(),
            dataset="synthetic",
            keep=(
                "train_matrix",
                "normalized_adjacency",
                "ground_truth",
                "interactions",
                "interaction_split",
                "train_data",
                "dataset_summary",
            ),
        ),
    )
    n_users, n_items = SYNTHETIC["n_users"], SYNTHETIC["n_items"]
    train_matrix = catalog.load("train_matrix")
    adjacency = catalog.load("normalized_adjacency")
    interaction_split = catalog.load("interaction_split")
    split = interaction_split[interaction_split["split"] != "train"]  # the unbiased rows, evaluated
    truth = catalog.load("ground_truth")

    assert isinstance(train_matrix, sp.csr_matrix) and isinstance(adjacency, sp.csr_matrix)
    assert train_matrix.shape == (n_users, n_items)
    assert set(np.unique(train_matrix.data)) == {1.0}
    assert adjacency.shape == (n_users + n_items, n_users + n_items)
    assert abs(adjacency - adjacency.T).max() == 0
    assert adjacency.nnz == 2 * train_matrix.nnz
    assert truth["preference"].shape == truth["exposure"].shape == (n_users, n_items)

    assert len(split) == n_users * SYNTHETIC["test_items_per_user"]
    assert split["user"].between(0, n_users - 1).all() and split["item"].between(0, n_items - 1).all()
    assert split["split"].value_counts().to_dict() == {"validation": len(split) // 4, "test": len(split) * 3 // 4}
    assert (split["source"] == "unbiased").all() and (split["role"] == "target").all()
    interactions = catalog.load("interactions")
    biased = interaction_split[interaction_split["split"] == "train"]
    assert (biased["source"] == "biased").all() and (biased["role"] == "input").all()
    assert len(biased) == int((interactions["source"] == "biased").sum())
    assert train_matrix.nnz == int(((interactions["source"] == "biased") & (interactions["label"] == 1)).sum())

    # What the models get: the same Y and Â, the thesis evaluators over the unbiased rows.
    train_data = catalog.load("train_data")
    assert isinstance(train_data, TrainData)
    assert (train_data.interactions != train_matrix).nnz == 0
    assert (train_data.adjacency != adjacency).nnz == 0
    assert train_data.user_features is None and train_data.social is None  # the simulator has no side data
    evaluators = catalog.load("evaluators")
    assert isinstance(evaluators, Evaluators)
    assert evaluators.setup.protocol.name == "thesis" and evaluators.setup.cutoffs == (5,)
    assert evaluators.validation.users.size == len(split) // 4
    assert evaluators.test.users.size == len(split) * 3 // 4
    summary = catalog.load("dataset_summary")
    assert (summary["n_users"], summary["n_items"]) == (n_users, n_items)


def triples(rows: list[tuple[int, int, float]], part: str) -> pd.DataFrame:
    """Interactions of one part as the loaders give them (user, item, rating, timestamp, part, line)."""
    users, items, ratings = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": np.array(ratings, dtype=np.float64),
            "timestamp": np.full(len(rows), np.nan),
            "part": part,
            "line": np.arange(1, len(rows) + 1, dtype=np.int64),
        }
    )


def test_data_processing_on_triples() -> None:
    # Users 10, 20, 30 -> 0, 1, 2; items 5, 7, 9 -> 0, 1, 2 (sorted original ids).
    raw = RawData(
        name="yahoo_r3",
        interactions=pd.concat(
            [
                triples([(10, 5, 5), (10, 7, 2), (30, 5, 4), (20, 9, 1)], "biased"),
                triples([(20, 7, 5), (30, 9, 3), (10, 9, 4), (30, 7, 1)], "unbiased"),
            ],
            ignore_index=True,
        ),
        files={"biased": "memory/train.txt", "unbiased": "memory/test.txt"},
    )
    catalog = run(
        data_processing.create_pipeline(),
        catalog_for(
            raw,
            dataset="yahoo_r3",
            keep=("train_matrix", "normalized_adjacency", "ground_truth", "id_maps", "interaction_split", "dataset_summary"),
            evaluation={"k": 3},  # a cut-off may not exceed the 3 items
        ),
    )

    # Positives (rating >= 4) of the biased set: (10, 5) and (30, 5).
    expected_y = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(catalog.load("train_matrix").toarray(), expected_y)

    # Degrees: u0 = 1, u2 = 1, i0 = 2, so Â[u, i0] = 1/√2; nodes u0, u1, u2, i0, i1, i2.
    expected_adjacency = np.zeros((6, 6))
    expected_adjacency[0, 3] = expected_adjacency[3, 0] = 2**-0.5
    expected_adjacency[2, 3] = expected_adjacency[3, 2] = 2**-0.5
    np.testing.assert_allclose(catalog.load("normalized_adjacency").toarray(), expected_adjacency, rtol=1e-6)

    id_maps = catalog.load("id_maps")
    assert id_maps[id_maps["entity"] == "user"]["original_id"].tolist() == [10, 20, 30]
    assert id_maps[id_maps["entity"] == "item"]["original_id"].tolist() == [5, 7, 9]

    interaction_split = catalog.load("interaction_split")
    # round(0.25 * 4) = 1 validation row, listed first; then the test rows; the biased
    # rows follow, as the train split.
    assert interaction_split["split"].tolist() == ["validation", "test", "test", "test"] + ["train"] * 4
    split = interaction_split[interaction_split["split"] != "train"]
    labels = {(u, i): label for u, i, label in split[["user", "item", "label"]].itertuples(index=False)}
    assert labels == {(1, 1): 1, (2, 2): 0, (0, 2): 1, (2, 1): 0}
    assert catalog.load("ground_truth")["preference"].shape == (0, 0)
    summary = catalog.load("dataset_summary")
    assert summary["rows"] == {"biased": 4, "unbiased": 4}
    assert summary["positives"] == {"biased": 2, "unbiased": 2}
    assert (summary["n_users"], summary["n_items"], summary["social_edges"]) == (3, 3, 0)


# ---- (b) the registry ------------------------------------------------------------------------


def test_registered_pipelines() -> None:
    pipelines = register_pipelines()
    expected_models = set(MODEL_NAMESPACES)
    assert {"mf", "lightgcn", "dual"} <= expected_models
    assert set(pipelines) == {
        "__default__",
        "data_processing",
        "estimate_propensities",
        "train_baselines",
        "recommend",
        "reproduce_thesis",
        "study_hypotheses",
        "tune",
        *(f"train_{m}" for m in expected_models),
    }
    assert {n.name for n in pipelines["recommend"].nodes} == {"recommend_for_users"}

    assert {n.name for n in pipelines["data_processing"].nodes} == DATA_NODES
    assert {n.name for n in pipelines["estimate_propensities"].nodes} == DATA_NODES | SETUP_NODES
    for model in expected_models:
        names = {n.name for n in pipelines[f"train_{model}"].nodes}
        trained = (model, *UPSTREAM.get(model, ()))
        assert names == DATA_NODES | SETUP_NODES | {f"{m}.{node}" for m in trained for node in MODEL_NODES}
    default = {n.name for n in pipelines["__default__"].nodes}
    general = expected_models - set(SIDE_DATA_NAMESPACES) - set(CHOSEN_NAMESPACES) - set(VARIANT_NAMESPACES)
    model_nodes = {f"{m}.{n}" for m in general for n in MODEL_NODES}
    assert default == DATA_NODES | SETUP_NODES | model_nodes
    baselines = {n.name for n in pipelines["train_baselines"].nodes}
    baseline_nodes = {f"{m}.{n}" for m in general - {"dual"} for n in MODEL_NODES}
    assert baselines == DATA_NODES | SETUP_NODES | baseline_nodes
    thesis = {n.name for n in pipelines["reproduce_thesis"].nodes}
    stages = {"plan_thesis_grid", "fit_thesis_grid", "select_thesis_grid", "summarize_thesis"}
    assert DATA_NODES | SETUP_NODES | stages <= thesis


@pytest.mark.parametrize("model", MODEL_NAMESPACES)
def test_model_pipelines_share_the_data_and_own_their_block(model: str) -> None:
    pipeline = register_pipelines()[f"train_{model}"]
    assert pipeline.inputs() == {
        "raw_data",
        "params:dataset",
        "params:synthetic",
        "params:seed",
        "params:binarization",
        "params:preprocessing",
        "params:split",
        "params:device",
        "params:evaluation",
        "params:cold_start",
        "params:propensity",
        *(f"params:{m}.model" for m in (model, *UPSTREAM.get(model, ()))),
    }
    train = next(n for n in pipeline.nodes if n.name == f"{model}.train_model")
    assert set(train.inputs) >= {"weighted_train_data", "evaluators", "compute_device"}
    evaluate = next(n for n in pipeline.nodes if n.name == f"{model}.evaluate_model")
    assert set(evaluate.inputs) == {f"{model}.trained_model", "evaluators"}
    outputs = ("trained_model", "model_weights", "learning_curves", "training_history")
    assert set(train.outputs) == {f"{model}.{name}" for name in outputs}
    assert pipeline.outputs() >= {f"{model}.metrics", f"{model}.mlflow_metrics", f"{model}.predictions"}


def test_neumf_is_trained_after_gmf_and_mlp_from_their_weights() -> None:
    pipeline = register_pipelines()["train_neumf"]
    train = next(n for n in pipeline.nodes if n.name == "neumf.train_model")
    assert train.inputs[-2:] == ["gmf.model_weights", "mlp.model_weights"]
    order = [n.name for n in pipeline.nodes]
    assert order.index("gmf.train_model") < order.index("neumf.train_model")
    assert order.index("mlp.train_model") < order.index("neumf.train_model")
    catalog = run(pipeline, catalog_for(synthetic_raw(), dataset="synthetic", keep=("neumf.trained_model", "neumf.metrics")))
    neumf = catalog.load("neumf.trained_model")
    assert neumf.config.pretrain and 1 <= neumf.best_epoch <= 10
    assert 0.0 <= catalog.load("neumf.metrics")["test_ndcg_at_5"] <= 1.0


@pytest.mark.parametrize("model", MODEL_NAMESPACES)
def test_configured_model_blocks_build(model: str) -> None:
    parameters: dict[str, Any] = {}
    for path in sorted(CONF.glob("parameters*.yml")):
        parameters.update(OmegaConf.to_container(OmegaConf.load(path)))
    block = parameters[model]["model"]
    assert block["name"] in MODELS
    built = build_model(block, f"{model}.model", seed=0, device=torch.device("cpu"))
    assert built.name == block["name"]


# ---- (c) whole model pipelines ----------------------------------------------------------------


@cache
def default_run() -> DataCatalog:
    """``__default__`` (data, device, every model) once on the synthetic data."""
    return run(
        register_pipelines()["__default__"],
        catalog_for(synthetic_raw(), dataset="synthetic", keep=("train_matrix",)),
    )


def train_dual(seed: int) -> DataCatalog:
    catalog = catalog_for(synthetic_raw(), dataset="synthetic", seed=seed)
    return run(register_pipelines()["train_dual"], catalog)


GENERAL_NAMESPACES = [
    m for m in MODEL_NAMESPACES if m not in SIDE_DATA_NAMESPACES + CHOSEN_NAMESPACES + VARIANT_NAMESPACES
]


def test_socialgcn_refuses_a_dataset_without_ties() -> None:
    # With ties: tests/test_real_data.py (LastFM's trust network) and the training node's tests.
    with pytest.raises(ValueError, match="socialgcn needs social ties"):
        run(register_pipelines()["train_socialgcn"], catalog_for(synthetic_raw(), dataset="synthetic"))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cause", "dual_supervised"])
def test_cause_is_stopped_and_reported_on_the_validation_users_it_did_not_train_on(model: str) -> None:
    # The supervised dual model fits σ(r̂) on the same treatment set and is stopped like CausE.
    catalog = run(register_pipelines()[f"train_{model}"], catalog_for(synthetic_raw(), dataset="synthetic", keep=("evaluators", f"{model}.metrics")))
    metrics, users = catalog.load(f"{model}.metrics"), np.unique(catalog.load("evaluators").validation.users).size
    assert metrics["validation_users_evaluated"] + metrics["validation_users_skipped"] == users - users // 2
    assert 0.0 <= metrics["validation_ndcg_at_5"] <= 1.0 and 0.0 <= metrics["test_ndcg_at_5"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("model", GENERAL_NAMESPACES)
def test_every_model_pipeline_reports_metrics(model: str) -> None:
    catalog = default_run()
    metrics = catalog.load(f"{model}.metrics")
    assert metrics["model"] == SMALL_MODELS[model]["name"]
    assert metrics["protocol"] == "thesis" and metrics["k"] == [5]
    for split in ("validation", "test"):
        for metric in ("recall", "ndcg", "precision", "hr"):
            assert 0.0 <= metrics[f"{split}_{metric}_at_5"] <= 1.0
    # a closed-form model: the position of the chosen candidate (EASE's λ), else an epoch
    assert 1 <= metrics["best_epoch"] <= SMALL_MODELS[model].get("epochs", len(SMALL_MODELS[model].get("l2_grid", [None])))

    mlflow_metrics = catalog.load(f"{model}.mlflow_metrics")
    assert mlflow_metrics["test_recall_at_5"] == {"value": metrics["test_recall_at_5"], "step": 0}

    predictions = catalog.load(f"{model}.predictions")
    assert list(predictions.columns) == ["user", "item", "split", "label", "score"]
    assert len(predictions) == SYNTHETIC["n_users"] * SYNTHETIC["test_items_per_user"]
    assert np.isfinite(predictions["score"]).all()

    curves = catalog.load(f"{model}.learning_curves")
    assert set(curves) == {"train_loss", "epoch_validation_ndcg_at_5"}
    weights = catalog.load(f"{model}.model_weights")
    assert weights["model"] == SMALL_MODELS[model]["name"]
    assert all(t.device.type == "cpu" for t in weights["weights"].values())
    assert isinstance(catalog.load(f"{model}.learning_curve_plot"), matplotlib.figure.Figure)


@pytest.mark.slow
def test_the_models_train_on_the_shared_matrix() -> None:
    catalog = default_run()
    n_users, n_items = catalog.load("train_matrix").shape
    for model in GENERAL_NAMESPACES:
        weights = catalog.load(f"{model}.model_weights")["weights"]
        if SMALL_MODELS[model]["name"] in ("multvae", "multdae"):  # no user table: a user is their clicks
            assert weights["encoder.0.weight"].shape[1] == n_items
            assert weights["decoder.1.weight"].shape[0] == n_items
            continue
        if "inputs.embedding.weight" in weights:  # graph models: one table over users, then items
            assert weights["inputs.embedding.weight"].shape[0] == n_users + n_items
            continue
        if MODELS[SMALL_MODELS[model]["name"]].closed_form:  # item tables only: a user is their train row
            item_tables = {"mostpop": "popularity", "itemknn": "indptr", "ease": "item_weights"}
            table = weights[item_tables[SMALL_MODELS[model]["name"]]]
            assert table.shape[0] == n_items + (SMALL_MODELS[model]["name"] == "itemknn")  # CSR: n_items + 1 offsets
            continue
        user_tables = [t for name, t in weights.items() if name.endswith(("user_embedding", "user_embedding.weight"))]
        item_tables = [t for name, t in weights.items() if name.endswith(("item_embedding", "item_embedding.weight"))]
        assert user_tables and all(t.shape[0] == n_users for t in user_tables)
        assert item_tables and all(t.shape[0] == n_items for t in item_tables)


@pytest.mark.slow
def test_train_dual_is_deterministic_on_cpu() -> None:
    first, again = train_dual(seed=0), train_dual(seed=0)
    assert first.load("dual.metrics") == again.load("dual.metrics")
    pd.testing.assert_frame_equal(first.load("dual.predictions"), again.load("dual.predictions"))
    for name, tensor in first.load("dual.model_weights")["weights"].items():
        assert torch.equal(tensor, again.load("dual.model_weights")["weights"][name]), name


@pytest.mark.slow
def test_train_dual_depends_on_the_seed() -> None:
    first, other = train_dual(seed=0), train_dual(seed=1)
    # The seed draws the simulator, the split and the initialization: the rows themselves differ.
    assert not first.load("dual.predictions")[["user", "item"]].equals(other.load("dual.predictions")[["user", "item"]])


@pytest.mark.slow
def test_train_dual_matches_the_default_run() -> None:
    # The same model block under __default__ and under train_dual gives the same model.
    np.testing.assert_array_equal(
        train_dual(seed=0).load("dual.predictions")["score"].to_numpy(),
        default_run().load("dual.predictions")["score"].to_numpy(),
    )


def test_inputs_are_checked_before_running() -> None:
    catalog = catalog_for(synthetic_raw(), dataset="synthetic")
    without_raw = DataCatalog({name: dataset for name, dataset in catalog.items() if name != "raw_data"})
    with pytest.raises(ValueError, match="raw_data"):
        SequentialRunner().run(register_pipelines()["train_dual"], without_raw)


def test_a_mismatched_dataset_parameter_fails_with_its_name() -> None:
    with pytest.raises(ValueError, match="parameter 'dataset' is 'coat' but the catalog's raw_data reads 'synthetic'"):
        run(data_processing.create_pipeline(), catalog_for(synthetic_raw(), dataset="coat"))

