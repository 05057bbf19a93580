"""Every registry model trains and is evaluated under every protocol that fits it, on a
small timestamped log; a model a protocol cannot evaluate is refused before training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.models.registry import MODELS, build_model
from debias_pipeline.pipelines.evaluation.nodes import evaluate_model
from debias_pipeline.pipelines.training.nodes import train_model
from debias_pipeline.training.inputs import process_dataset
from tests.models.test_contract import small_params

PROTOCOLS = ("full_ranking", "leave_one_out", "strong_generalization", "cold_start")


def small_log(seed: int = 0) -> RawData:
    """40 users x 30 items, two taste groups, 12 clicks each with timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(40):
        liked = np.arange(15) + 15 * (user % 2)
        for t, item in enumerate(rng.choice(liked, 12, replace=False)):
            rows.append((f"u{user}", f"i{item}", float(1000 * user + t)))
    users, items, times = zip(*rows, strict=True)
    table = pd.DataFrame(
        {"user": users, "item": items, "rating": np.nan, "timestamp": times, "part": "all", "line": np.arange(1, len(rows) + 1)}
    )
    # Ties within each taste group (u ~ u + 2), for the models that read them.
    social = pd.DataFrame({"user": [f"u{u}" for u in range(38)], "friend": [f"u{u + 2}" for u in range(38)], "line": np.arange(1, 39)})
    return RawData(name="custom", interactions=table, files={"all": "log.csv"}, social=social)


def prepared(protocol: str):
    data = process_dataset(
        small_log(),
        "custom",
        evaluation={"protocol": protocol, "k": [5]},
        split={"num_negatives": 10, "validation_users": 4, "test_users": 4},
        cold_start={"users": 4, "validation_users": 4, "known_interactions": 3},
    )
    return data.train_data, data.evaluators


def block(name: str) -> dict:
    params = small_params(name)
    if not MODELS[name].closed_form:  # a closed-form model has no epochs
        params.update(epochs=3, patience=3, eval_every=1)
    return params


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_under_every_protocol(name: str, protocol: str) -> None:
    data, evaluators = prepared(protocol)
    cls = MODELS[name]
    if protocol == "strong_generalization" and not cls.supports_fold_in:
        with pytest.raises(ValueError, match=f"model '{name}'.*cannot score a user it was not trained on"):
            train_model(data, evaluators, block(name), 0, torch.device("cpu"))
        return
    if name == "cause" and protocol != "thesis":  # its treatment set is the thesis protocol's unbiased sample
        with pytest.raises(ValueError, match=f"only the 'thesis' protocol has.*got evaluation.protocol '{protocol}'"):
            train_model(data, evaluators, block(name), 0, torch.device("cpu"))
        return
    model, _, curves, history = train_model(data, evaluators, block(name), 0, torch.device("cpu"))
    metrics, _, predictions = evaluate_model(model, evaluators)
    assert metrics["protocol"] == protocol
    for split in ("validation", "test"):
        for metric in ("recall", "ndcg", "precision", "hr"):
            assert 0.0 <= metrics[f"{split}_{metric}_at_5"] <= 1.0
    assert history["validation_ndcg_at_5"].notna().all()
    assert len(predictions) > 0


@pytest.mark.parametrize("name", ["mf", "lightgcn", "dual"])
def test_bpr_models_learn_the_two_groups_under_full_ranking(name: str) -> None:
    data, evaluators = prepared("full_ranking")
    params = {**block(name), "loss": "bpr", "batch_size": 64, "lr": 0.05, "epochs": 30, "patience": 30}
    model, *_ = train_model(data, evaluators, params, 0, torch.device("cpu"))
    metrics, _, _ = evaluate_model(model, evaluators)
    # Random ranking of the 15 - 12 + 3 unmasked items of the own group among ~18: far below.
    assert metrics["test_hr_at_5"] > 0.6


def test_a_full_batch_fit_too_large_to_densify_is_refused_before_training() -> None:
    import scipy.sparse as sp

    from debias_pipeline.models.contract import TrainData

    huge = TrainData(sp.csr_matrix((30_000, 40_000), dtype=np.float32))
    model = build_model(block("mf"), "mf.model", seed=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"mf: a full-batch fit over all 30,000 x 40,000 = 1,200,000,000 pairs.*loss: bpr"):
        model.fit(huge)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_a_learning_rate_that_is_not_a_finite_positive_number_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match=r"parameter 'mf.model.lr'(: lr)? must be a finite number"):
        build_model({"name": "mf", "lr": value}, "mf.model", seed=0, device=torch.device("cpu"))
