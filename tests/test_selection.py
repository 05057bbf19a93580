"""Selection: the early-stopping rule, the validation signals (by hand), the replay of
a rule on recorded curves, and a guard that no choice ever reads the test split."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency, train_positive_matrix
from debias_pipeline.data.registry import dataset_spec
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.evaluation.metrics import mean_log_likelihood, pooled_auc
from debias_pipeline.evaluation.protocols import evaluation_setup
from debias_pipeline.evaluation.splits import split_for_protocol
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.early_stopping import (
    EarlyStopping,
    fixed_budget_picks,
    rank_correlation,
    regret,
    stopping_pick,
)
from debias_pipeline.models.registry import build_model
from debias_pipeline.pipelines.reproduce_thesis import nodes as thesis
from debias_pipeline.pipelines.training.nodes import train_model


# --------------------------------------------------------------------------- the rule
def test_early_stopping_by_hand() -> None:
    # Window 1, patience 2: bests at 0.1 and 0.3; 0.2 and 0.25 are two misses: stop.
    rule = EarlyStopping(patience=2)
    assert [rule.update(v) for v in (0.1, 0.3, 0.2)] == [True, True, False] and not rule.stop
    assert rule.update(0.25) is False and rule.stop and rule.best == 0.3
    assert stopping_pick(np.array([0.1, 0.3, 0.2, 0.25, 0.9]), patience=2) == 1  # 0.9 is never reached
    # Window 2: trailing means 0.1, 0.2, 0.25, 0.225, 0.325: the last is the best.
    assert stopping_pick(np.array([0.1, 0.3, 0.2, 0.25, 0.4]), patience=2, window=2) == 4
    with pytest.raises(ValueError, match="patience and window"):
        EarlyStopping(patience=0)



def test_a_tie_with_the_best_is_not_an_improvement() -> None:
    # The rule wants a strictly better mean: 0.3 again after 0.3 is a miss, so the first
    # 0.3 stays the pick and two ties in a row exhaust patience 2.
    rule = EarlyStopping(patience=2)
    assert [rule.update(v) for v in (0.1, 0.3, 0.3)] == [True, True, False]
    assert rule.since_best == 1 and not rule.stop
    assert rule.update(0.3) is False and rule.stop and rule.best == 0.3
    assert stopping_pick(np.array([0.1, 0.3, 0.3, 0.3, 0.9]), patience=2) == 1
    # Window 2: trailing means 0.2, 0.2 (a tie), 0.25, 0.25 (a tie), 0.2: the first 0.25.
    assert stopping_pick(np.array([0.2, 0.2, 0.3, 0.2, 0.2]), patience=2, window=2) == 2


class Scripted:
    """A validator whose signal is a fixed sequence, one value per evaluation."""

    metric = "scripted"

    def __init__(self, values: list[float], window: int) -> None:
        self.values, self.window, self.calls = list(values), window, 0

    def score(self, model: Any) -> float:
        self.calls += 1
        return self.values[self.calls - 1]


@pytest.mark.parametrize("window", [1, 3])
def test_the_training_loop_keeps_the_epoch_the_rule_picks(window: int) -> None:
    signal = [0.1, 0.5, 0.2, 0.6, 0.55, 0.58, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    y = sp.csr_matrix(np.eye(4, 5, dtype=np.float32))
    model = build_model({"name": "mf", "embedding_dim": 2, "epochs": len(signal), "patience": 3}, "mf.model", seed=0, device="cpu")
    validator = Scripted(signal, window)
    model.fit(TrainData(y), validation=validator)
    assert model.best_epoch == stopping_pick(np.array(signal), patience=3, window=window) + 1
    assert validator.calls == len(model.history)  # stopped where the rule stops
    assert (window, model.best_epoch) in ((1, 4), (3, 6))  # 0.6 alone; the mean of 0.6, 0.55, 0.58


def test_replay_helpers_by_hand() -> None:
    curves = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    # Seed 0 sees the others' mean [0.5, 0, 0.5] (first maximum 0), seed 1 [0.5, 0.5, 0], seed 2 [0, 0.5, 0.5].
    np.testing.assert_array_equal(fixed_budget_picks(curves), [0, 0, 1])
    with pytest.raises(ValueError, match=">= 2 seeds"):
        fixed_budget_picks(curves[:1])
    assert regret(np.array([0.2, 0.5, 0.4]), 2) == pytest.approx(0.1)
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.3, 0.2])) == pytest.approx(0.5)
    assert math.isnan(rank_correlation(np.array([1.0, 1.0]), np.array([0.1, 0.2])))


# --------------------------------------------------------------------------- the signals
def test_pooled_auc_and_log_likelihood_by_hand() -> None:
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.3, 0.3, 0.9, -1.0, 2.0])
    # Positives 0.3 and 0.9 against negatives 0.3, -1.0, 2.0: 0.5 + 1 + 0 and 1 + 1 + 0 of 6 pairs.
    assert pooled_auc(labels, scores) == pytest.approx(3.5 / 6)
    assert pooled_auc(np.zeros(3), scores[:3]) is None
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    by_hand = -(softplus(-0.3) + softplus(0.3) + softplus(-0.9) + softplus(-1.0) + softplus(2.0)) / 5
    assert mean_log_likelihood(labels, scores) == pytest.approx(by_hand, abs=1e-12)
    assert mean_log_likelihood(np.array([1, 0]), np.array([40.0, -40.0])) <= 0.0
    assert mean_log_likelihood(np.array([]), np.array([])) is None


@pytest.mark.parametrize(
    ("evaluation", "dataset", "message"),
    [
        ({"selection": "auc"}, "gowalla", r"evaluation\.selection.*ranking"),
        ({"selection": "recall"}, "coat", r"evaluation\.selection"),
        ({"selection_window": 0}, "coat", r"evaluation\.selection_window"),
    ],
)
def test_bad_selection_is_named(evaluation: dict, dataset: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluation_setup(evaluation, dataset)


def test_each_selection_names_its_signal() -> None:
    assert evaluation_setup({"selection": "ranking"}, "coat").selection_key == "ndcg_at_5"
    assert evaluation_setup({"selection": "auc"}, "coat").selection_key == "auc"
    assert evaluation_setup({"selection": "log_likelihood", "selection_window": 3}, "coat").selection_window == 3
    assert evaluation_setup({}, "gowalla").selection_key == "ndcg_at_20"  # a full ranking has no labelled rows


# --------------------------------------------------------------------------- no test rows
def _thesis_interactions(seed: int = 0) -> pd.DataFrame:
    """30 users x 20 items: biased rows on items 0..11, unbiased rows on items 12..19."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(30):
        for item in range(20):
            source = "biased" if item < 12 else "unbiased"
            if source == "biased" and rng.random() > 0.4:
                continue
            rows.append((user, item, float(rng.integers(1, 6)), source))
    users, items, ratings, sources = zip(*rows, strict=True)
    ratings = np.array(ratings)
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": ratings,
            "timestamp": np.nan,
            "source": list(sources),
            "label": (ratings >= 4).astype(np.int8),
        }
    )


def _flip_test_labels(split: pd.DataFrame) -> pd.DataFrame:
    flipped = split.copy()
    test = flipped["split"] == "test"
    flipped.loc[test, "label"] = 1 - flipped.loc[test, "label"]
    return flipped


@pytest.mark.parametrize("selection", ["ranking", "auc", "log_likelihood"])
def test_no_choice_reads_the_test_split(selection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid run twice, the second time with every test label flipped: the test
    metrics change, every choice (candidate and epoch) stays the same."""
    interactions = _thesis_interactions()
    parameters = {
        "dataset": "coat",
        "evaluation": {"selection": selection},
        "mf": {"model": {"name": "mf", "embedding_dim": 4, "epochs": 40, "patience": 5}},
        "reproduce_thesis": {
            "seeds": [0, 1],
            "reference": "MF",
            "rows": [{"label": "MF", "table": "5.2", "base": "mf", "select": {"weight_decay": [0.0, 1.0e-3, 1.0e-1]}}],
        },
    }
    train = TrainData(sp.csr_matrix((30, 20), dtype=np.float32))
    honest, _ = thesis.run_thesis_grid(interactions, train, parameters, torch.device("cpu"))
    real_split = thesis.split_for_protocol
    monkeypatch.setattr(thesis, "split_for_protocol", lambda *a, **k: _flip_test_labels(real_split(*a, **k)))
    flipped, _ = thesis.run_thesis_grid(interactions, train, parameters, torch.device("cpu"))
    chosen = ["choice", "best_epoch", "validation_ndcg", "validation_selection", "selected"]
    pd.testing.assert_frame_equal(honest[chosen], flipped[chosen])
    assert not np.allclose(honest["test_ndcg"], flipped["test_ndcg"])
    assert [json.loads(c) for c in honest["choice"]][:3] == [{"weight_decay": w} for w in (0.0, 1.0e-3, 1.0e-1)]


class Untouchable:
    """A test evaluator that fails the moment anything reads it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"training read the test split ({name})")


_SMALL_MF = {"name": "mf", "embedding_dim": 4, "epochs": 30, "patience": 5}
_SMALL_ENSEMBLE = {  # `best` is an ensemble: its fits stop on validation alone too
    "name": "ensemble",
    "replicas": 2,
    "members": [_SMALL_MF, {"name": "dual", "preference": {"embedding_dim": 4}, "exposure": {"embedding_dim": 2}, "epochs": 30, "patience": 5}],
}


@pytest.mark.parametrize("block", [_SMALL_MF, _SMALL_ENSEMBLE], ids=["mf", "ensemble"])
@pytest.mark.parametrize("selection", ["ranking", "auc"])
def test_training_never_touches_the_test_evaluator(selection: str, block: dict) -> None:
    interactions = _thesis_interactions(1)
    setup = evaluation_setup({"selection": selection}, "coat")
    split = split_for_protocol(interactions, setup, None, dataset_spec("coat"), 0)
    matrix = train_positive_matrix(split, (30, 20))
    evaluators = Evaluators.build(split, matrix, setup)
    evaluators.test = Untouchable()
    data = TrainData(matrix, build_normalized_adjacency(matrix))
    model, _, _, _ = train_model(data, evaluators, block, 0, torch.device("cpu"))
    fits = getattr(model, "members", [model])
    assert len(fits) == (4 if block is _SMALL_ENSEMBLE else 1)
    assert all(fit.best_epoch is not None for fit in fits)
