"""Training nodes, called directly: device resolution and ``train_model``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.evaluation.metrics import ranking_metrics
from debias_pipeline.evaluation.protocols import evaluation_setup
from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.registry import MODELS, build_model
from debias_pipeline.pipelines.training.nodes import resolve_compute_device, train_model
from debias_pipeline.training.inputs import build_evaluators

CPU = torch.device("cpu")
N_USERS, N_ITEMS = 8, 6

SMALL_BLOCKS = {
    "mf": {"name": "mf", "embedding_dim": 4, "epochs": 12, "lr": 0.05, "patience": 50},
    "lightgcn": {"name": "lightgcn", "embedding_dim": 4, "num_layers": 2, "epochs": 12, "lr": 0.05, "patience": 50},
    "dual": {
        "name": "dual",
        "preference": {"embedding_dim": 4},
        "exposure": {"embedding_dim": 2, "num_layers": 1},
        "epochs": 12,
        "lr": 0.05,
        "patience": 50,
    },
    "ngcf": {"name": "ngcf", "embedding_dim": 4, "num_layers": 2, "epochs": 12, "lr": 0.05, "patience": 50},
    "wmf": {"name": "wmf", "embedding_dim": 4, "epochs": 12, "patience": 50},
    "expomf": {"name": "expomf", "embedding_dim": 4, "epochs": 12, "patience": 50},
    "relmf": {"name": "relmf", "embedding_dim": 4, "epochs": 12, "lr": 0.05, "patience": 50},
    "mf_ips": {"name": "mf_ips", "embedding_dim": 4, "num_layers": 1, "epochs": 12, "lr": 0.05, "patience": 50},
    "dr_jl": {"name": "dr_jl", "prediction": {"embedding_dim": 4}, "imputation": {"embedding_dim": 4}, "epochs": 12, "lr": 0.05, "patience": 50},
    "cause": {"name": "cause", "embedding_dim": 4, "epochs": 12, "lr": 0.05, "patience": 50},
    "mostpop": {"name": "mostpop"},
    "itemknn": {"name": "itemknn", "neighbors": 3},
    "ease": {"name": "ease", "l2_grid": [1.0, 10.0]},
    "recrec": {"name": "recrec", "embedding_dim": 4, "epochs": 12, "lr": 0.05, "patience": 50},
    "gmf": {"name": "gmf", "embedding_dim": 4, "epochs": 12, "lr": 0.01, "patience": 50},
    "mlp": {"name": "mlp", "embedding_dim": 4, "num_layers": 2, "epochs": 12, "lr": 0.01, "patience": 50},
    "neumf": {"name": "neumf", "embedding_dim": 4, "num_layers": 2, "pretrain": False, "epochs": 12, "lr": 0.01, "patience": 50},
    "multvae": {"name": "multvae", "hidden_dims": [8], "latent_dim": 4, "epochs": 12, "lr": 0.01, "patience": 50},
    "multdae": {"name": "multdae", "hidden_dims": [8], "latent_dim": 4, "epochs": 12, "lr": 0.01, "patience": 50},
}
_GRAPH = {"embedding_dim": 4, "num_layers": 2, "batch_size": 16, "epochs": 12, "lr": 0.01, "patience": 50, "eval_every": 1}
SMALL_BLOCKS |= {
    "gcn": {"name": "gcn", **_GRAPH},
    "gat": {"name": "gat", **_GRAPH, "fanouts": [3, 2]},
    "graphsage": {"name": "graphsage", **_GRAPH, "fanouts": [3, 2]},
    "pinsage": {"name": "pinsage", **_GRAPH, "fanouts": [3, 2], "hard_negative_start": 4},
    "socialgcn": {"name": "socialgcn", **_GRAPH},
}
SMALL_BLOCKS |= {
    "pda": {"name": "pda", "embedding_dim": 4, "batch_size": 16, "epochs": 12, "lr": 0.05, "patience": 50},
    "macr": {"name": "macr", "embedding_dim": 4, "epochs": 12, "lr": 0.05, "patience": 50},
    "dice": {"name": "dice", "embedding_dim": 4, "margin": 1.0, "batch_size": 16, "epochs": 12, "lr": 0.05, "patience": 50},
}
SMALL_BLOCKS["ensemble"] = {"name": "ensemble", "members": [SMALL_BLOCKS["mf"], SMALL_BLOCKS["lightgcn"]], "replicas": 2}


def test_every_registered_model_has_a_small_block() -> None:
    assert set(SMALL_BLOCKS) == set(MODELS)


@pytest.fixture
def train_matrix() -> sp.csr_matrix:
    # Two groups by parity; user u clicked the same-parity items except item (u % 3) * 2 + u % 2.
    clicks = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for user in range(N_USERS):
        for item in range(user % 2, N_ITEMS, 2):
            if item != (user % 3) * 2 + user % 2:
                clicks[user, item] = 1.0
    return sp.csr_matrix(clicks)


@pytest.fixture
def unbiased_split() -> pd.DataFrame:
    """Validation: each user's held-out like and one other-group item; test: the rest."""
    rows = []
    for user in range(N_USERS):
        held_out = (user % 3) * 2 + user % 2
        other = (held_out + 1) % N_ITEMS
        rows.append((user, held_out, 5, 1, "validation"))
        rows.append((user, other, 1, 0, "validation"))
        # Test labels are the opposite of the truth, so a test NDCG differs from the validation one.
        rows.append((user, (other + 2) % N_ITEMS, 5, 1, "test"))
        rows.append((user, (held_out + 2) % N_ITEMS, 1, 0, "test"))
    # The thesis protocol's split table: the evaluated (unbiased) rows are targets.
    return pd.DataFrame(rows, columns=["user", "item", "rating", "label", "split"]).assign(role="target")


def evaluators_for(train_matrix, unbiased_split, evaluation=None):
    """The thesis protocol's evaluators of the split (dataset synthetic: thesis by default)."""
    evaluation = {"k": 5} if evaluation is None else evaluation
    return build_evaluators(unbiased_split, train_matrix, evaluation, "synthetic", {})


def train_data(train_matrix) -> TrainData:
    users = np.arange(N_USERS)
    ties = sp.csr_matrix((np.ones(N_USERS, dtype=np.float32), (users, (users + 2) % N_USERS)), shape=(N_USERS,) * 2)
    return TrainData(train_matrix, build_normalized_adjacency(train_matrix), social=ties + ties.T)


def run(train_matrix, unbiased_split, block, *, seed=0, evaluation=None, where="model", device=CPU):
    return train_model(
        train_data(train_matrix),
        evaluators_for(train_matrix, unbiased_split, evaluation),
        block,
        seed,
        device,
        where=where,
    )


# ---- resolve_compute_device -----------------------------------------------------------


def test_resolve_cpu() -> None:
    assert resolve_compute_device("cpu") == torch.device("cpu")


def test_resolve_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_compute_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "CPU", "", None, 0])
def test_resolve_rejects_unknown_names(name: object) -> None:
    with pytest.raises(ValueError, match=r"'device'.*auto.*cpu.*cuda"):
        resolve_compute_device(name)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_cuda_without_cuda_fails_clearly() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_compute_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resolve_cuda_with_cuda() -> None:
    assert resolve_compute_device("cuda").type == "cuda"
    assert resolve_compute_device("cuda:0") == torch.device("cuda:0")


# ---- train_model ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SMALL_BLOCKS))
def test_train_model_outputs(name: str, train_matrix, unbiased_split) -> None:
    model, weights, curves, history = run(train_matrix, unbiased_split, SMALL_BLOCKS[name])

    assert isinstance(model, MODELS[name]) and isinstance(model, Recommender)
    assert model.device == CPU
    assert model.score().shape == (N_USERS, N_ITEMS)
    assert weights["model"] == name
    assert weights["best_epoch"] == model.best_epoch
    states = weights.get("members", [weights])  # an ensemble holds a state per fit
    assert len(states) == (4 if name == "ensemble" else 1)
    assert all(t.device == CPU for state in states for t in state["weights"].values())

    # 12 epochs; a closed-form model: one line per candidate, EASE's two λ
    steps = [1, 2] if name == "ease" else [1] if MODELS[name].closed_form else list(range(1, 13))
    assert set(curves) == {"train_loss", "epoch_validation_ndcg_at_5"}
    assert [point["step"] for point in curves["train_loss"]] == steps
    assert [point["step"] for point in curves["epoch_validation_ndcg_at_5"]] == steps
    assert all(set(point) == {"step", "value"} for points in curves.values() for point in points)
    assert all(0.0 <= point["value"] <= 1.0 for point in curves["epoch_validation_ndcg_at_5"])

    assert list(history.columns) == ["epoch", "train_loss", "validation_ndcg_at_5"]
    assert history["epoch"].tolist() == steps
    # assert_array_equal: ItemKNN's loss is NaN (it has no objective), equal to itself here
    np.testing.assert_array_equal(history["train_loss"].to_numpy(), [point["value"] for point in curves["train_loss"]])
    assert history["validation_ndcg_at_5"].tolist() == [p["value"] for p in curves["epoch_validation_ndcg_at_5"]]


# Every model, and the scale paths: MF's and LightGCN's row optimizer, the stale layers.
CUDA_BLOCKS = SMALL_BLOCKS | {
    "mf sparse_adam": {**SMALL_BLOCKS["mf"], "loss": "bpr", "optimizer": "sparse_adam"},
    "lightgcn stale": {
        **SMALL_BLOCKS["lightgcn"],
        "loss": "bpr",
        "propagation": "stale",
        "refresh_every": 1000,
        "optimizer": "sparse_adam",
    },
    "dual stale": {**SMALL_BLOCKS["dual"], "loss": "bpr", "propagation": "stale", "refresh_every": 2},
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(CUDA_BLOCKS))
def test_train_model_on_cuda(name: str, train_matrix, unbiased_split) -> None:
    """Every registered model through the node on CUDA: the model stays on the device,
    its saved weights are on the CPU, every loss is finite (ItemKNN has none), and the
    weights loaded on the CPU score as the model does on the device."""
    block = CUDA_BLOCKS[name]
    model, weights, _, history = run(train_matrix, unbiased_split, block, device=torch.device("cuda"))

    assert model.device.type == "cuda"
    states = weights.get("members", [weights])
    assert all(t.device == CPU for state in states for t in state["weights"].values())
    losses = history["train_loss"].to_numpy()
    assert np.isnan(losses).all() if block["name"] == "itemknn" else np.isfinite(losses).all()
    restored = build_model(block, "model", seed=0, device=CPU).load_state_dict(weights, train_data(train_matrix))
    np.testing.assert_allclose(restored.score(), model.score(), rtol=1e-4, atol=1e-5)


def test_train_model_early_stops_on_the_validation_rows_only(train_matrix, unbiased_split) -> None:
    model, _, curves, _ = run(train_matrix, unbiased_split, SMALL_BLOCKS["mf"], evaluation={"k": 1})
    best = max(point["value"] for point in curves["epoch_validation_ndcg_at_1"])

    def ndcg_at_1(split: str) -> float:
        rows = unbiased_split[unbiased_split["split"] == split]
        scores = model.score_pairs(rows["user"].to_numpy(), rows["item"].to_numpy())
        return ranking_metrics(rows["user"], rows["item"], rows["label"], scores, 1).ndcg

    assert ndcg_at_1("validation") == pytest.approx(best, abs=1e-12)
    everything = unbiased_split.assign(split="validation")
    scores = model.score_pairs(everything["user"].to_numpy(), everything["item"].to_numpy())
    assert ranking_metrics(everything["user"], everything["item"], everything["label"], scores, 1).ndcg != best


def test_train_model_follows_k_and_eval_every(train_matrix, unbiased_split) -> None:
    block = {**SMALL_BLOCKS["mf"], "eval_every": 3}
    _, _, curves, history = run(train_matrix, unbiased_split, block, evaluation={"k": 3})
    assert set(curves) == {"train_loss", "epoch_validation_ndcg_at_3"}
    assert [point["step"] for point in curves["epoch_validation_ndcg_at_3"]] == [3, 6, 9, 12]
    evaluated = history.dropna(subset=["validation_ndcg_at_3"])
    assert evaluated["epoch"].tolist() == [3, 6, 9, 12]
    assert history["validation_ndcg_at_3"].isna().sum() == 8


def test_train_model_is_seeded(train_matrix, unbiased_split) -> None:
    first = run(train_matrix, unbiased_split, SMALL_BLOCKS["dual"], seed=4)[0].score()
    again = run(train_matrix, unbiased_split, SMALL_BLOCKS["dual"], seed=4)[0].score()
    other = run(train_matrix, unbiased_split, SMALL_BLOCKS["dual"], seed=5)[0].score()
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_train_model_leaves_its_inputs_alone(train_matrix, unbiased_split) -> None:
    split_before = unbiased_split.copy()
    matrix_before = train_matrix.copy()
    block = {key: (dict(value) if isinstance(value, dict) else value) for key, value in SMALL_BLOCKS["dual"].items()}
    run(train_matrix, unbiased_split, block)
    pd.testing.assert_frame_equal(unbiased_split, split_before)
    assert (train_matrix != matrix_before).nnz == 0
    assert block == SMALL_BLOCKS["dual"]


def test_train_model_names_the_bad_parameter(train_matrix, unbiased_split) -> None:
    with pytest.raises(ValueError, match=r"mf\.model\.embeding_dim"):
        run(train_matrix, unbiased_split, {**SMALL_BLOCKS["mf"], "embeding_dim": 4}, where="mf.model")
    with pytest.raises(ValueError, match=r"unknown model 'mf_typo'; valid models: cause, dice, dr_jl, dual, ease, ensemble, expomf, gat, gcn, gmf, graphsage, itemknn, lightgcn, macr, mf, mf_ips, mlp, mostpop"):
        run(train_matrix, unbiased_split, {**SMALL_BLOCKS["mf"], "name": "mf_typo"})
    # The evaluation block is read by the evaluators now (train_model no longer takes it).
    with pytest.raises(ValueError, match=r"evaluation.*k must be >= 1"):
        evaluators_for(train_matrix, unbiased_split, {"k": 0})


def test_train_model_without_validation_positives_does_not_stop_silently(train_matrix, unbiased_split) -> None:
    no_positives = unbiased_split.assign(label=np.where(unbiased_split["split"] == "validation", 0, 1))
    block = {**SMALL_BLOCKS["mf"], "epochs": 12, "patience": 2}
    # NDCG would be NaN at every epoch and early stopping meaningless: a clear error instead,
    # raised when the evaluators are built, before any training.
    with pytest.raises(ValueError, match="validation split has no positive row"):
        run(train_matrix, no_positives, block)


def test_train_model_early_stops_on_the_selection_metric(train_matrix, unbiased_split) -> None:
    # selection_metric picks the curve early stopping follows (and its name).
    evaluation = {"k": [1, 3], "selection_metric": "recall_at_3"}
    model, _, curves, history = run(train_matrix, unbiased_split, SMALL_BLOCKS["mf"], evaluation=evaluation)
    assert set(curves) == {"train_loss", "epoch_validation_recall_at_3"}
    assert list(history.columns) == ["epoch", "train_loss", "validation_recall_at_3"]
    best = max(point["value"] for point in curves["epoch_validation_recall_at_3"])
    rows = unbiased_split[unbiased_split["split"] == "validation"]
    scores = model.score_pairs(rows["user"].to_numpy(), rows["item"].to_numpy())
    assert ranking_metrics(rows["user"], rows["item"], rows["label"], scores, 3).recall == pytest.approx(best, abs=1e-12)


def test_train_model_refuses_a_model_the_protocol_cannot_evaluate(train_matrix, unbiased_split) -> None:
    # strong_generalization scores users never trained on: MF cannot fold them in.
    evaluators = evaluators_for(train_matrix, unbiased_split)
    evaluators = dataclasses.replace(
        evaluators, setup=evaluation_setup({"protocol": "strong_generalization"}, "synthetic")
    )
    data = TrainData(train_matrix, build_normalized_adjacency(train_matrix))
    with pytest.raises(ValueError, match=r"model 'mf'.*strong_generalization.*wmf"):
        train_model(data, evaluators, SMALL_BLOCKS["mf"], 0, CPU)
