"""The propensity step of a run, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import build_config
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.models.contract import TrainData
from debias_pipeline.training.inputs import process_dataset
from debias_pipeline.training.propensities import (
    PropensityConfig,
    attach_propensities,
    estimate_propensities,
    propensity_mlflow_metrics,
)

CPU = torch.device("cpu")


def split_table(rows: list[tuple[int, int, float, int, str, str]]) -> pd.DataFrame:
    users, items, ratings, labels, splits, sources = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": np.array(ratings, dtype=np.float64),
            "label": np.array(labels, dtype=np.int8),
            "split": list(splits),
            "source": list(sources),
            "role": ["input" if s == "train" else "target" for s in splits],
        }
    )


def train_data(table: pd.DataFrame, shape: tuple[int, int]) -> TrainData:
    positives = table[(table["split"] == "train") & (table["label"] == 1)]
    y = sp.csr_matrix((np.ones(len(positives), np.float32), (positives["user"], positives["item"])), shape=shape)
    return TrainData(interactions=y)


def run(table: pd.DataFrame, shape: tuple[int, int], **block: object) -> tuple[pd.DataFrame, dict]:
    config = build_config(PropensityConfig, block, "propensity")
    return estimate_propensities(table, train_data(table, shape), None, {}, config, 0, CPU)


# A log of clicks alone (no rated pair left unclicked): popularity 3, 1, 0 for items 0..2.
CLICKS = [
    (0, 0, 5, 1, "train", "all"),
    (1, 0, 5, 1, "train", "all"),
    (2, 0, 5, 1, "train", "all"),
    (2, 1, 4, 1, "train", "all"),
]


def test_popularity_on_clicks_alone_is_relmfs_square_root() -> None:
    # η is not identified from clicks alone: Rel-MF's θ_i = (pop_i / max pop)^0.5.
    propensities, report = run(split_table(CLICKS), (3, 3))
    # One row per item, for every user; item 2 has no click: the clip.
    assert propensities["user"].tolist() == [-1, -1, -1] and propensities["item"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(propensities["propensity"], [1.0, (1 / 3) ** 0.5, 1e-3], rtol=1e-12)
    assert report["eta"] == 0.5 and report["scale"] == 1.0 and report["eta_fitted"] is False
    assert report["mean"] == pytest.approx((3 * 1 + (1 / 3) ** 0.5) / 4)
    # Kish's ESS of the weights 1, 1, 1, √3: (Σw)² / Σw².
    w = np.array([1, 1, 1, 3**0.5])
    assert report["ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum())


def test_a_given_exponent_and_the_clip() -> None:
    propensities, report = run(split_table(CLICKS), (3, 3), eta=2.0, clip=0.2)
    # (1/3)² = 0.111 and item 2's 0 are clipped to 0.2.
    np.testing.assert_allclose(propensities["propensity"], [1.0, 0.2, 0.2])
    assert report["min"] == 0.2


def test_naive_bayes_by_hand() -> None:
    # Biased ratings: 5, 5, 4, 2 (the 2 is a rated, unclicked pair); the unbiased sample: 5, 2, 2, 1.
    # P(O=1) = 4 / 9 rated pairs of 3 x 3; P(Y=5 | O=1) = 2/4, P(Y=4 | O=1) = 1/4;
    # P(Y=5) = 1/4, P(Y=4) = 0 + smoothing: with smoothing 1 over the values {1, 2, 4, 5}
    # P(Y=y | O=1) = (n_y + 1) / (4 + 4) and P(Y=y) = (m_y + 1) / (4 + 4).
    rows = [
        (0, 0, 5, 1, "train", "biased"),
        (1, 0, 5, 1, "train", "biased"),
        (2, 1, 4, 1, "train", "biased"),
        (2, 2, 2, 0, "train", "biased"),
        (0, 1, 5, 1, "validation", "unbiased"),
        (0, 2, 2, 0, "validation", "unbiased"),
        (1, 1, 2, 0, "validation", "unbiased"),
        (1, 2, 1, 0, "validation", "unbiased"),
    ]
    propensities, report = run(split_table(rows), (3, 3), estimator="naive_bayes", smoothing=1.0)
    p_observed = 4 / 9
    five = ((2 + 1) / 8) * p_observed / ((1 + 1) / 8)
    four = ((1 + 1) / 8) * p_observed / ((0 + 1) / 8)
    by_pair = dict(zip(zip(propensities["user"], propensities["item"], strict=True), propensities["propensity"], strict=True))
    assert by_pair == pytest.approx({(0, 0): five, (1, 0): five, (2, 1): four})
    assert report["p_observed"] == pytest.approx(p_observed)


def test_naive_bayes_needs_an_unbiased_sample() -> None:
    with pytest.raises(ValueError, match="parameter 'propensity.estimator' is naive_bayes"):
        run(split_table(CLICKS), (3, 3), estimator="naive_bayes")


def test_none_attaches_nothing_and_an_estimate_is_attached_at_the_positives() -> None:
    table = split_table(CLICKS)
    empty, report = run(table, (3, 3), estimator="none")
    assert empty.empty and report == {"estimator": "none", "clip": 1e-3, "n_positives": 4}
    assert attach_propensities(train_data(table, (3, 3)), empty).propensity is None
    propensities, _ = run(table, (3, 3))
    weighted = attach_propensities(train_data(table, (3, 3)), propensities)
    np.testing.assert_allclose(weighted.propensity, [1, (1 / 3) ** 0.5, 1e-3])  # per item
    per_click, _ = run(table, (3, 3), estimator="logistic")
    weighted = attach_propensities(train_data(table, (3, 3)), per_click)
    assert weighted.propensity.shape == (3, 3) and weighted.propensity.nnz == 4  # one θ per train positive
    np.testing.assert_allclose(weighted.propensity[per_click["user"], per_click["item"]].A1, per_click["propensity"])
    assert weighted.interactions.nnz == 4


def test_bad_block_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="clip must be in"):
        build_config(PropensityConfig, {"clip": 0.0}, "propensity")
    with pytest.raises(ValueError, match="exposure_model must be a dual model block"):
        build_config(PropensityConfig, {"exposure_model": {"name": "mf"}}, "propensity")


def test_the_dual_models_exposure_tower() -> None:
    data = process_dataset(RawData(name="synthetic", interactions=pd.DataFrame(), files={}), "synthetic")
    block = {"estimator": "dual_exposure", "exposure_model": {"name": "dual", "epochs": 3, "eval_every": 1}}
    config = build_config(PropensityConfig, block, "propensity")
    propensities, report = estimate_propensities(
        data.interaction_split, data.train_data, data.evaluators, data.ground_truth, config, 0, CPU
    )
    assert len(propensities) == data.train_data.interactions.nnz and (propensities["user"] >= 0).all()
    assert ((propensities["propensity"] >= 1e-3) & (propensities["propensity"] <= 1)).all()
    assert "truth_expected_auc" in report


def test_on_the_simulator_the_estimate_is_scored_against_the_true_exposure() -> None:
    data = process_dataset(RawData(name="synthetic", interactions=pd.DataFrame(), files={}), "synthetic")
    config = build_config(PropensityConfig, {"estimator": "logistic"}, "propensity")
    propensities, report = estimate_propensities(
        data.interaction_split, data.train_data, data.evaluators, data.ground_truth, config, 0, CPU
    )
    assert len(propensities) == data.train_data.interactions.nnz
    # Better than chance and no better than the truth itself.
    assert 0.5 < report["truth_expected_auc"] <= report["truth_oracle_auc"] + 1e-9
    assert report["truth_expected_log_loss"] >= report["truth_oracle_log_loss"] - 1e-9
    metrics = propensity_mlflow_metrics(report)
    assert "estimator" not in metrics and metrics["truth_expected_auc"]["value"] == report["truth_expected_auc"]
