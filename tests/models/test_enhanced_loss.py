"""LightGCN's and MF's enhanced loss, ReduceLROnPlateau and gradient clipping."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")


def data() -> TrainData:
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((30, 20)) < 0.3).astype(np.float32))
    return TrainData(train, build_normalized_adjacency(train))


def fit(name: str, **block: object):
    params = {"name": name, "embedding_dim": 8, "epochs": 4, "batch_size": 16, "lr": 0.01, "loss": "bpr", **block}
    return build_model(params, "test.model", seed=3, device=CPU).fit(data())


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_enhanced_loss_with_no_margin_and_alpha_one_trains_exactly_like_bpr(name: str) -> None:
    bpr = fit(name)
    same = fit(name, loss="enhanced_bpr", margin=0.0, alpha=1.0)
    assert [r.train_loss for r in bpr.history] == [r.train_loss for r in same.history]
    assert np.array_equal(bpr.score(), same.score())


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_enhanced_loss_at_the_source_defaults_differs_and_stays_positive(name: str) -> None:
    enhanced = fit(name, loss="enhanced_bpr")
    losses = [r.train_loss for r in enhanced.history]
    assert all(loss > 0 for loss in losses)
    assert losses != [r.train_loss for r in fit(name).history]


def test_gradient_clipping_changes_the_steps() -> None:
    tight = fit("mf", grad_clip_norm=1e-4, lr=0.5)
    free = fit("mf", lr=0.5)
    assert not np.array_equal(tight.score(), free.score())


def test_reduce_on_plateau_lowers_the_rate_when_validation_stalls() -> None:
    class Constant:
        metric = "ndcg_at_5"

        def score(self, model) -> float:  # never improves after the first evaluation
            return 0.5

    model = build_model(
        {"name": "mf", "embedding_dim": 8, "epochs": 6, "batch_size": 16, "lr": 0.01, "loss": "bpr", "patience": 50,
         "lr_plateau": {"factor": 0.5, "patience": 1, "min_lr": 0.0}},
        "test.model",
        seed=0,
        device=CPU,
    )
    rates = []
    original = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    def spy(self, metric):  # noqa: ANN001
        original(self, metric)
        rates.append(self.optimizer.param_groups[0]["lr"])

    torch.optim.lr_scheduler.ReduceLROnPlateau.step = spy
    try:
        model.fit(data(), validation=Constant())
    finally:
        torch.optim.lr_scheduler.ReduceLROnPlateau.step = original
    assert rates == [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"loss": "enhanced_bpr", "temperature": 0.0}, r"mf\.model\.temperature': temperature must be > 0"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"margin": -0.1}, r"margin must be >= 0"),
        ({"grad_clip_norm": 0.0}, r"grad_clip_norm must be > 0"),
        ({"lr_plateau": {"factor": 2.0}}, r"mf\.model\.lr_plateau\.factor': factor must be in \(0, 1\)"),
        ({"loss": "hinge"}, r"'mf\.model\.loss' must be one of \['bce', 'bpr', 'enhanced_bpr'\]"),
    ],
)
def test_bad_options_name_the_parameter(block: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model({"name": "mf", **block}, "mf.model", seed=0, device=CPU)


def test_models_without_a_mini_batch_loss_refuse_it() -> None:
    with pytest.raises(ValueError, match=r"loss must be 'bce'"):
        build_model({"name": "ngcf", "loss": "enhanced_bpr"}, "ngcf.model", seed=0, device=CPU)
