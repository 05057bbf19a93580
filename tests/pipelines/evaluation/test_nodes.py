"""Evaluation nodes, called directly, against metrics worked out by hand.

A stub recommender with a fixed score matrix stands in for a trained model, so the
ranking of every user, and therefore Recall@K, NDCG@K, Precision@K and HR@K, can be
written down. The evaluators are those of the thesis protocol (``build_evaluators``
on a split table whose evaluated rows are targets).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Self

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.models.contract import Recommender, TrainData, Validator
from debias_pipeline.pipelines.evaluation.nodes import evaluate_model, plot_learning_curve
from debias_pipeline.training.inputs import build_evaluators

# 1 / log2(3): the discount of rank 2.
D2 = 1 / math.log2(3)

SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.3, 0.2, 0.0],  # u0
        [0.2, 0.8, 0.4, 0.6, 0.0, 0.1],  # u1
        [0.5, 0.5, 0.1, 0.0, 0.3, 0.2],  # u2: items 0 and 1 tie
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # u3
    ]
)


@dataclass(frozen=True)
class StubConfig:
    pass


class FixedScores(Recommender):
    """A 'trained' model whose preference scores are ``SCORES``."""

    name = "stub"
    Config = StubConfig

    def __init__(self, best_epoch: int | None = 7) -> None:
        super().__init__(StubConfig())
        self.best_epoch = best_epoch

    def fit(self, data: TrainData, validation: Validator | None = None) -> Self:
        return self

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        return SCORES.copy() if users is None else SCORES[np.asarray(users)]

    def state_dict(self) -> dict[str, Any]:
        return {"scores": SCORES.copy()}

    def load_state_dict(self, state: dict[str, Any], data: TrainData) -> Self:
        return self


# (user, item, label, split). Ranked by score, descending, ties to the lower item id, K = 2
# (precision = hits / 2: one hit in every user's top 2, so 1/2 each and HR 1 each):
# test
#   u0: i0 (0.9, -) i2 (0.5, +) | i3 (0.3, -) i1 (0.1, +)  recall 1/2, NDCG D2 / (1 + D2)
#   u1: i1 (0.8, -) i3 (0.6, +)                            recall 1,   NDCG D2
#   u2: i0 (0.5, -) i1 (0.5, +) | i2 (0.1, -)              recall 1,   NDCG D2 (the tie rule)
#   u3: no positive                                        skipped
# validation
#   u0: i4 (0.2, +) i5 (0.0, -)                            recall 1,   NDCG 1
#   u1: i2 (0.4, -) i0 (0.2, +) | i4 (0.0, +)              recall 1/2, NDCG D2 / (1 + D2)
#   u3: i5 (0.6, -) i3 (0.4, +)                            recall 1,   NDCG D2
ROWS = [
    (2, 1, 1, "test"),
    (0, 4, 1, "validation"),
    (0, 0, 0, "test"),
    (1, 3, 1, "test"),
    (3, 0, 0, "test"),
    (0, 1, 1, "test"),
    (1, 2, 0, "validation"),
    (2, 2, 0, "test"),
    (0, 2, 1, "test"),
    (3, 3, 1, "validation"),
    (1, 1, 0, "test"),
    (0, 5, 0, "validation"),
    (1, 0, 1, "validation"),
    (0, 3, 0, "test"),
    (2, 0, 0, "test"),
    (3, 5, 0, "validation"),
    (1, 4, 1, "validation"),
    (3, 1, 0, "test"),
]
EXPECTED_K2 = {
    "test_recall_at_2": (1 / 2 + 1 + 1) / 3,
    "test_ndcg_at_2": (D2 / (1 + D2) + D2 + D2) / 3,
    "test_precision_at_2": 1 / 2,
    "test_hr_at_2": 1.0,
    "test_users_evaluated": 3,
    "test_users_skipped": 1,
    "validation_recall_at_2": (1 + 1 / 2 + 1) / 3,
    "validation_ndcg_at_2": (1 + D2 / (1 + D2) + D2) / 3,
    "validation_precision_at_2": 1 / 2,
    "validation_hr_at_2": 1.0,
    "validation_users_evaluated": 3,
    "validation_users_skipped": 0,
    "test_rows_dropped_unseen": 0,
    # Pooled AUC over every row of the split (Mann-Whitney, a tie counting 1/2):
    # validation positives 0.2, 0.4, 0.2, 0.0 against negatives 0.4, 0.0, 0.6 win
    # 1 + 1.5 + 1 + 0.5 of 12 pairs; test positives 0.5, 0.6, 0.1, 0.5 against negatives
    # 0.9, 0.1, 0.1, 0.8, 0.3, 0.5, 0.2 win 4.5 + 5 + 1 + 4.5 of 28.
    "validation_auc": 4 / 12,
    "test_auc": 15 / 28,
    # Mean log-likelihood of the labels under σ(score): -softplus(-s) for a positive,
    # -softplus(s) for a negative.
    "validation_log_likelihood": -(
        sum(math.log1p(math.exp(-s)) for s in (0.2, 0.4, 0.2, 0.0))
        + sum(math.log1p(math.exp(s)) for s in (0.4, 0.0, 0.6))
    )
    / 7,
    "test_log_likelihood": -(
        sum(math.log1p(math.exp(-s)) for s in (0.5, 0.6, 0.1, 0.5))
        + sum(math.log1p(math.exp(s)) for s in (0.9, 0.1, 0.1, 0.8, 0.3, 0.5, 0.2))
    )
    / 11,
    # The popularity bias of what each test user (u0..u3) would be recommended: the top 2 of
    # every item without a train positive (the train matrix is empty here, so popularity is
    # 0 everywhere and the head is the lowest ids, items 0 and 1, ⌈0.2 · 6⌉ = 2):
    # u0 i0 i2, u1 i1 i3, u2 i0 i1 (the tie to the lower id), u3 i5 i4.
    "test_arp_at_2": 0.0,
    "test_aplt_at_2": (1 / 2 + 1 / 2 + 0 + 1) / 4,
    # exposure counts i0..i5: 2 2 1 1 1 1; sorted 1 1 1 1 2 2, Gini = 2 Σ k x_k / (n Σ x) − (n + 1) / n
    # = 2 · 32 / (6 · 8) − 7 / 6.
    "test_exposure_gini_at_2": 2 * 32 / 48 - 7 / 6,
    "test_item_coverage_at_2": 1.0,
}
# K = 1: the top row of test u0, u1, u2 is a negative; of validation u0 a positive, of u1
# and u3 a negative. Every metric is then the share of users with a hit at rank 1.
EXPECTED_K1 = {
    **{f"test_{name}_at_1": 0.0 for name in ("recall", "ndcg", "precision", "hr")},
    **{f"validation_{name}_at_1": 1 / 3 for name in ("recall", "ndcg", "precision", "hr")},
    # top 1: u0 i0, u1 i1, u2 i0, u3 i5; i0 and i1 are the head.
    "test_aplt_at_1": 1 / 4,
    "test_item_coverage_at_1": 3 / 6,
}
N_USERS, N_ITEMS = SCORES.shape


@pytest.fixture
def unbiased_split() -> pd.DataFrame:
    """The thesis protocol's evaluated rows: every one a target of its split."""
    users, items, labels, splits = zip(*ROWS, strict=True)
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": np.where(np.array(labels) == 1, 5, 2),
            "label": np.array(labels, dtype=np.int8),
            "split": list(splits),
            "role": "target",
        }
    )


def evaluators(split: pd.DataFrame, evaluation: dict) -> Evaluators:
    """The thesis evaluators of the split (the train matrix only gives the shape here)."""
    return build_evaluators(split, sp.csr_matrix((N_USERS, N_ITEMS), dtype=np.float32), evaluation, "synthetic", {})


def evaluate(model: Recommender, split: pd.DataFrame, evaluation: dict):
    return evaluate_model(model, evaluators(split, evaluation))


def test_metrics_by_hand(unbiased_split: pd.DataFrame) -> None:
    metrics, _, _ = evaluate(FixedScores(), unbiased_split, {"k": 2})
    assert set(metrics) == {"model", "protocol", "k", "selection_metric", "selection", "best_epoch", *EXPECTED_K2}
    assert metrics["model"] == "stub"
    assert metrics["protocol"] == "thesis"
    assert metrics["k"] == [2]
    assert metrics["selection_metric"] == "ndcg_at_2"
    assert metrics["best_epoch"] == 7
    for key, expected in EXPECTED_K2.items():
        assert metrics[key] == pytest.approx(expected, abs=1e-12), key


def test_metrics_at_several_cutoffs(unbiased_split: pd.DataFrame) -> None:
    # Cut-offs are sorted; each one gets every metric, the selection metric is NDCG at the
    # first one unless named.
    metrics, _, _ = evaluate(FixedScores(), unbiased_split, {"k": [2, 1]})
    assert metrics["k"] == [1, 2]
    assert metrics["selection_metric"] == "ndcg_at_1"
    for key, expected in {**EXPECTED_K1, **EXPECTED_K2}.items():
        assert metrics[key] == pytest.approx(expected, abs=1e-12), key
    named, _, _ = evaluate(FixedScores(), unbiased_split, {"k": [1, 2], "selection_metric": "recall_at_2"})
    assert named["selection_metric"] == "recall_at_2"


def test_metrics_are_json_able(unbiased_split: pd.DataFrame) -> None:
    metrics, _, _ = evaluate(FixedScores(), unbiased_split, {"k": 2})
    # JSON round-trips every value (floats exactly: json writes them with repr).
    assert json.loads(json.dumps(metrics)) == metrics


def test_mlflow_metrics(unbiased_split: pd.DataFrame) -> None:
    _, mlflow_metrics, _ = evaluate(FixedScores(), unbiased_split, {"k": 2})
    assert set(mlflow_metrics) == {*EXPECTED_K2, "best_epoch"}
    for key, expected in {**EXPECTED_K2, "best_epoch": 7}.items():
        assert set(mlflow_metrics[key]) == {"value", "step"}
        assert isinstance(mlflow_metrics[key]["value"], float)
        assert mlflow_metrics[key]["value"] == pytest.approx(expected, abs=1e-12)
        assert mlflow_metrics[key]["step"] == 0


def test_test_rows_dropped_unseen_come_from_the_dataset_summary(unbiased_split: pd.DataFrame) -> None:
    split_evaluators = build_evaluators(
        unbiased_split, sp.csr_matrix((N_USERS, N_ITEMS)), {"k": 2}, "synthetic", {"test_rows_dropped_unseen": 3}
    )
    metrics, mlflow_metrics, _ = evaluate_model(FixedScores(), split_evaluators)
    assert metrics["test_rows_dropped_unseen"] == 3
    assert mlflow_metrics["test_rows_dropped_unseen"]["value"] == 3.0


def test_default_k_is_5_in_every_name(unbiased_split: pd.DataFrame) -> None:
    metrics, mlflow_metrics, _ = evaluate(FixedScores(), unbiased_split, {})
    assert metrics["k"] == [5]
    assert metrics["selection_metric"] == "ndcg_at_5"
    for split in ("test", "validation"):
        assert {f"{split}_{name}_at_5" for name in ("recall", "ndcg", "precision", "hr")} <= set(mlflow_metrics)
    # Every user has at most 4 rows of a split, so K = 5 finds every positive.
    assert metrics["test_recall_at_5"] == 1.0
    assert metrics["validation_recall_at_5"] == 1.0
    # test u0: positives at ranks 2 and 4 -> (D2 + 1/log2 5) / (1 + D2); u1, u2: rank 2 -> D2.
    u0 = (D2 + 1 / math.log2(5)) / (1 + D2)
    assert metrics["test_ndcg_at_5"] == pytest.approx((u0 + D2 + D2) / 3, abs=1e-12)
    # Precision = hits / 5: test u0 has 2 hits, u1 and u2 one each.
    assert metrics["test_precision_at_5"] == pytest.approx((2 / 5 + 1 / 5 + 1 / 5) / 3, abs=1e-12)
    assert metrics["test_hr_at_5"] == 1.0


def test_unknown_best_epoch_is_not_sent_to_mlflow(unbiased_split: pd.DataFrame) -> None:
    metrics, mlflow_metrics, _ = evaluate(FixedScores(best_epoch=None), unbiased_split, {"k": 2})
    assert metrics["best_epoch"] is None
    assert "best_epoch" not in mlflow_metrics


def test_predictions_table(unbiased_split: pd.DataFrame) -> None:
    _, _, predictions = evaluate(FixedScores(), unbiased_split, {"k": 2})
    assert list(predictions.columns) == ["user", "item", "split", "label", "score"]
    assert len(predictions) == len(ROWS)
    # The validation rows, then the test rows, each in the split table's order; the score
    # is the stub's entry for the pair.
    rows = [row for row in ROWS if row[3] == "validation"] + [row for row in ROWS if row[3] == "test"]
    assert predictions["user"].tolist() == [row[0] for row in rows]
    assert predictions["item"].tolist() == [row[1] for row in rows]
    assert predictions["label"].tolist() == [row[2] for row in rows]
    assert predictions["split"].tolist() == [row[3] for row in rows]
    assert predictions["score"].tolist() == [SCORES[user, item] for user, item, _, _ in rows]


def test_evaluate_model_leaves_the_split_alone(unbiased_split: pd.DataFrame) -> None:
    before = unbiased_split.copy()
    evaluate(FixedScores(), unbiased_split, {"k": 2})
    pd.testing.assert_frame_equal(unbiased_split, before)


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"k": 0}, r"evaluation.*k must be >= 1"),
        ({"kk": 2}, r"evaluation\.kk"),
        ({"k": 2.5}, r"evaluation\.k"),
        ({"k": [2, 0]}, r"evaluation.*k must be >= 1"),
        ({"protocol": "random"}, r"evaluation\.protocol"),
        ({"k": 2, "selection_metric": "ndcg_at_5"}, r"evaluation\.selection_metric"),
        ({"k": 2, "selection_metric": "auc_at_2"}, r"evaluation\.selection_metric"),
    ],
)
def test_bad_evaluation_parameters(unbiased_split: pd.DataFrame, evaluation: dict, message: str) -> None:
    # The evaluation block is read when the evaluators are built, before any model runs.
    with pytest.raises(ValueError, match=message):
        evaluators(unbiased_split, evaluation)


# ---- plot_learning_curve --------------------------------------------------------------------


def test_learning_curve_plots_loss_and_validation_ndcg() -> None:
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "train_loss": [0.7, 0.5, 0.4, 0.35],
            "validation_ndcg_at_5": [np.nan, 0.2, np.nan, 0.3],
        }
    )
    before = history.copy()
    figure = plot_learning_curve(history)
    assert isinstance(figure, matplotlib.figure.Figure)
    loss_axis, ndcg_axis = figure.axes
    (loss_line,) = loss_axis.get_lines()
    assert list(loss_line.get_xdata()) == [1, 2, 3, 4]
    assert list(loss_line.get_ydata()) == [0.7, 0.5, 0.4, 0.35]
    (ndcg_line,) = ndcg_axis.get_lines()
    assert list(ndcg_line.get_xdata()) == [2, 4]
    assert list(ndcg_line.get_ydata()) == [0.2, 0.3]
    assert ndcg_axis.get_ylabel() == "validation ndcg at 5"
    pd.testing.assert_frame_equal(history, before)


def test_learning_curve_without_validation_has_one_axis() -> None:
    figure = plot_learning_curve(pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.6]}))
    (axis,) = figure.axes
    assert axis.get_xlabel() == "epoch"
    assert list(axis.get_lines()[0].get_ydata()) == [0.7, 0.6]


def test_popularity_metrics_rank_every_unseen_item_by_hand(unbiased_split: pd.DataFrame) -> None:
    # Train positives: item 0 by users 1, 2 and 3, item 2 by user 3, item 4 by user 1, so the
    # popularity is 3 0 1 0 1 0 and the head (⌈0.2 · 6⌉ = 2 items) is items 0 and 2 (items 2
    # and 4 tie at 1: the lower id). A user's train items are never listed:
    # u0 (nothing seen): i0 (3) i2 (1); u1 (saw i0, i4): i1 (0) i3 (0);
    # u2 (saw i0): i1 (0) i4 (1); u3 (saw i0, i2): i5 (0) i4 (1).
    train = sp.csr_matrix(
        (np.ones(5, dtype=np.float32), ([1, 2, 3, 3, 1], [0, 0, 0, 2, 4])), shape=(N_USERS, N_ITEMS)
    )
    split_evaluators = build_evaluators(unbiased_split, train, {"k": 2}, "synthetic", {})
    metrics, _, _ = evaluate_model(FixedScores(), split_evaluators)
    assert metrics["test_arp_at_2"] == pytest.approx(((3 + 1) / 2 + 0 + (0 + 1) / 2 + (0 + 1) / 2) / 4)
    assert metrics["test_aplt_at_2"] == pytest.approx((0 + 1 + 1 + 1) / 4)  # u0's two items are the head
    # exposure counts i0..i5: 1 2 1 1 2 1; sorted 1 1 1 1 2 2: as above.
    assert metrics["test_exposure_gini_at_2"] == pytest.approx(2 * 32 / 48 - 7 / 6)
    assert metrics["test_item_coverage_at_2"] == 1.0
