"""Data-parallel mini-batch fits (``training.distributed``, ``models.distributed``): two
gloo replicas on this machine reproduce one process, to float tolerance, with the same
global batch (the weights, the loss curve, the epoch early stopping ends on), for MF-BPR
(Adam and sparse_adam), LightGCN and the dual model; only rank 0 evaluates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.distributed import Replicas
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.distributed import fit_replicated, main, start_replicas

# 12 users x 10 items, 49 positives: batches of 16 are 16, 16, 16 and 1, so two replicas
# take slices of 8 and 8, then 0 and 1 (an empty slice).
TRAINING = {"loss": "bpr", "batch_size": 16, "epochs": 6, "lr": 0.05, "weight_decay": 0.01, "patience": 2}
BLOCKS = {
    "mf": {"name": "mf", "embedding_dim": 4, **TRAINING},
    "mf_sparse_adam": {"name": "mf", "embedding_dim": 4, "optimizer": "sparse_adam", **TRAINING},
    "lightgcn": {"name": "lightgcn", "embedding_dim": 4, "num_layers": 2, **TRAINING},
    "dual": {
        "name": "dual",
        "preference": {"embedding_dim": 4, "num_layers": 1},
        "exposure": {"embedding_dim": 2, "prior": "popularity", "prior_learned": True},
        **TRAINING,
    },
}
# The validation scores of epochs 1, 2, ...: best at 2, then patience 2 ends the fit at 4.
SCORES = (0.3, 0.5, 0.4, 0.2, 0.6, 0.7)


class ScriptedValidation:
    """A validation metric that reads a script, and counts its calls."""

    metric = "ndcg_at_5"
    window = 1

    def __init__(self) -> None:
        self.calls = 0

    def score(self, model: object) -> float:
        self.calls += 1
        return SCORES[self.calls - 1]


class RefusedValidation(ScriptedValidation):
    """What ranks other than 0 hold: computing the metric there is an error."""

    def score(self, model: object) -> float:
        raise AssertionError("only rank 0 evaluates")


def _data() -> TrainData:
    rng = np.random.default_rng(13)
    clicks = (rng.random((12, 10)) < 0.4).astype(np.float32)
    clicks[np.arange(12), rng.integers(0, 10, 12)] = 1.0  # every user has a positive
    clicks = sp.csr_matrix(clicks)
    assert clicks.nnz == 49
    return TrainData(clicks, build_normalized_adjacency(clicks))


def _fit(name: str, replicas: Replicas | None, validation: ScriptedValidation) -> dict[str, object]:
    model = build_model(BLOCKS[name], f"{name}.model", seed=7, device="cpu")
    if replicas is None:
        model.fit(_data(), validation)
    else:
        fit_replicated(model, _data(), validation, replicas)
    return {
        "weights": model.state_dict()["weights"],
        "losses": [r.train_loss for r in model.history],
        "scores": [r.validation_score for r in model.history],
        "best_epoch": model.best_epoch,
        "calls": validation.calls,
    }


def _replica(rank: int, world_size: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    replicas = start_replicas("cpu", init_method=f"file://{store}")
    assert replicas.device == torch.device("cpu") and dist.get_backend() == "gloo"
    validation = ScriptedValidation if replicas.is_main else RefusedValidation
    results = {name: _fit(name, replicas, validation()) for name in BLOCKS}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize(
    ("rank", "batch", "expected"),
    [(0, 16, (slice(0, 8), 0.5)), (1, 5, (slice(2, 5), 0.6)), (0, 5, (slice(0, 2), 0.4)), (0, 1, (slice(0, 0), 0.0))],
)
def test_each_replica_takes_a_contiguous_slice_weighted_by_its_size(rank, batch, expected) -> None:
    assert Replicas(rank=rank, world_size=2, device=torch.device("cpu")).part(batch) == expected


def test_two_gloo_replicas_reproduce_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    replicas = mp.spawn(_replica, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=False)
    single = {name: _fit(name, None, ScriptedValidation()) for name in BLOCKS}  # while the replicas start
    while not replicas.join():
        pass
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    for name, expected in single.items():
        assert expected["best_epoch"] == 2 and len(expected["losses"]) == 4, name  # stopped by the script
        for rank, results in enumerate(ranks):
            got = results[name]
            assert got["best_epoch"] == expected["best_epoch"], (name, rank)
            assert got["scores"] == expected["scores"], (name, rank)  # rank 0's, broadcast
            np.testing.assert_allclose(got["losses"], expected["losses"], rtol=1e-5, err_msg=f"{name} rank {rank}")
            for key, weight in expected["weights"].items():
                torch.testing.assert_close(
                    got["weights"][key], weight, rtol=1e-4, atol=1e-6, msg=f"{name} {key} rank {rank}"
                )
        assert ranks[0][name]["calls"] == 4 and ranks[1][name]["calls"] == 0, name
        for key in expected["weights"]:  # the replicas end bit for bit alike
            assert torch.equal(ranks[0][name]["weights"][key], ranks[1][name]["weights"][key]), (name, key)


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        ({"name": "mf", "embedding_dim": 4, "loss": "bce"}, "mini-batch models"),
        ({"name": "dice", "embedding_dim": 4, **TRAINING}, "train it in one process$"),
        ({"name": "gcn", "embedding_dim": 4, "num_layers": 2, "fanouts": [2, 2], **TRAINING}, "or with fanouts: null"),
    ],
)
def test_a_fit_whose_batch_loss_does_not_split_over_slices_is_refused(block, reason) -> None:
    model = build_model(block, "model", seed=0, device="cpu")
    alone = Replicas(rank=0, world_size=1, device=torch.device("cpu"))
    with pytest.raises(ValueError, match=reason):  # before any collective: no process group needed
        fit_replicated(model, _data(), ScriptedValidation(), alone)


def test_the_entry_point_fits_a_block_of_the_project_conf_alone(tmp_path: Path, monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    conf = Path(__file__).resolve().parents[2] / "conf"
    args = ["--model", "mf", "--dataset", "synthetic", "--conf", str(conf), "--output", str(tmp_path / "mf.pt")]
    params = ["device=cpu", "mf.model.loss=bpr", "mf.model.epochs=2", "mf.model.embedding_dim=4"]
    report = main([*args, "--metrics", str(tmp_path / "metrics.json"), "--params", *params])
    assert report["world_size"] == 1 and report["epochs"] == 2 and 0 <= report["test_ndcg_at_5"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(report)
    weights = torch.load(tmp_path / "mf.pt", weights_only=False)["weights"]
    assert weights["user_embedding"].shape[1] == 4 and not dist.is_initialized()


@pytest.mark.parametrize("block", [{"optimizer": "sgd"}, {"solver": "implicit_bpr", "negative_sampling": "popularity"}])
def test_one_process_mf_paths_refuse_replicas(block: dict) -> None:
    """MF's written-out SGD step and implicit's solver have no gradient to reduce: a
    data-parallel fit refuses them by name instead of training each replica alone."""
    model = build_model(
        {"name": "mf", "loss": "bpr", "embedding_dim": 4, "epochs": 1, "batch_size": 4, **block},
        "model",
        seed=0,
        device="cpu",
    )
    model.replicas = Replicas.__new__(Replicas)
    interactions = sp.csr_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="one process"):
        model.fit(TrainData(interactions=interactions, adjacency=None))
