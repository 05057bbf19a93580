"""The full-ranking protocol (every item ranked, the user's train items masked),
checked against rankings written out by hand, and its evaluation node."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.evaluation.metrics import (
    full_ranking_metrics,
    full_ranking_relevance,
    metrics_from_relevance,
    per_user_full_ranking,
    top_k_unseen,
    train_positives,
)
from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.registry import build_model
from debias_pipeline.pipelines.evaluation.nodes import evaluate_model
from debias_pipeline.training.inputs import build_evaluators
from tests.pipelines.evaluation.test_nodes import FixedScores as StubModel

D2 = 1 / math.log2(3)  # discount of rank 2
D3 = 1 / math.log2(4)  # rank 3
D4 = 1 / math.log2(5)  # rank 4

SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # u0
        [0.1, 0.5, 0.5, 0.3, 0.9, 0.2],  # u1: items 1 and 2 tie
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # u2: everything ties
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # u3
    ],
    dtype=np.float32,
)
# Train positives (masked): u0 {0}, u1 {4}, u2 {1, 2}, u3 none.
TRAIN = sp.csr_matrix(
    np.array(
        [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
        dtype=np.float32,
    )
)
# Split rows (user, item, label). u0's positive item 0 is a train item: masked, so not
# relevant. Relevant: u0 {1, 3}, u1 {2}, u2 {5}; u3 has no positive (skipped).
# Rankings after masking (ties: lower id first):
#   u0: 1, 2, 3, 4, 5        u1: 1, 2, 3, 5, 0        u2: 0, 3, 4, 5        (u3 skipped)
ROWS = [(0, 1, 1), (0, 3, 1), (0, 5, 0), (0, 0, 1), (1, 2, 1), (1, 0, 0), (2, 5, 1), (2, 3, 0), (3, 1, 0)]
USERS, ITEMS, LABELS = (np.array(column) for column in zip(*ROWS, strict=True))
EXPECTED = {
    # K = 2: u0 hits item 1 at rank 1 of P = 2; u1 hits item 2 at rank 2; u2 misses.
    2: ([1 / 2, 1.0, 0.0], [1 / (1 + D2), D2, 0.0]),
    # K = 4: u0 hits ranks 1 and 3; u1 rank 2; u2 item 5 at rank 4.
    4: ([1.0, 1.0, 1.0], [(1 + D3) / (1 + D2), D2, D4]),
}


def fixed_scores(users: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(SCORES[users.numpy()].copy())


@pytest.mark.parametrize("k", sorted(EXPECTED))
def test_per_user_full_ranking_by_hand(k: int) -> None:
    user_ids, recall, ndcg, skipped = per_user_full_ranking(fixed_scores, TRAIN, USERS, ITEMS, LABELS, k)
    expected_recall, expected_ndcg = EXPECTED[k]
    assert user_ids.tolist() == [0, 1, 2]
    assert skipped == 1
    np.testing.assert_allclose(recall, expected_recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ndcg, expected_ndcg, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("k", "precision", "hr"),
    [
        (2, [1 / 2, 1 / 2, 0.0], [1.0, 1.0, 0.0]),  # u0: 1 hit, u1: 1 hit, u2: none in the top 2
        (4, [2 / 4, 1 / 4, 1 / 4], [1.0, 1.0, 1.0]),  # u0: 2 hits, u1 and u2: 1 each
    ],
)
def test_full_ranking_relevance_by_hand(k: int, precision: list[float], hr: list[float]) -> None:
    # The relevance matrix behind every metric: 1 where the item at that rank is relevant
    # (the rankings of the ROWS comment, train items masked).
    user_ids, relevance, n_relevant, skipped = full_ranking_relevance(fixed_scores, TRAIN, USERS, ITEMS, LABELS, 4)
    assert user_ids.tolist() == [0, 1, 2]
    assert skipped == 1
    np.testing.assert_array_equal(relevance, [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(n_relevant, [2, 1, 1])
    values = metrics_from_relevance(relevance, n_relevant, k)
    expected_recall, expected_ndcg = EXPECTED[k]
    np.testing.assert_allclose(values["recall"], expected_recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(values["ndcg"], expected_ndcg, rtol=0, atol=1e-12)
    np.testing.assert_allclose(values["precision"], precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose(values["hr"], hr, rtol=0, atol=1e-12)


def test_full_ranking_relevance_reports_the_ranked_items() -> None:
    ranked: list[torch.Tensor] = []
    full_ranking_relevance(fixed_scores, TRAIN, USERS, ITEMS, LABELS, 3, ranked=ranked, chunk_elements=6)
    # One user per chunk (6 items); the rankings of the ROWS comment, cut at 3.
    assert [chunk.tolist() for chunk in ranked] == [[[1, 2, 3]], [[1, 2, 3]], [[0, 3, 4]]]


def test_full_ranking_metrics_average_the_users() -> None:
    result = full_ranking_metrics(fixed_scores, TRAIN, USERS, ITEMS, LABELS, 2)
    assert result.recall == pytest.approx((1 / 2 + 1) / 3, abs=1e-12)
    assert result.ndcg == pytest.approx((1 / (1 + D2) + D2) / 3, abs=1e-12)
    assert (result.n_users, result.n_skipped) == (3, 1)
    assert set(result.as_dict("test")) == {
        "test_recall_at_2",
        "test_ndcg_at_2",
        "test_users_evaluated",
        "test_users_skipped",
    }


def test_chunking_does_not_change_the_result() -> None:
    whole = per_user_full_ranking(fixed_scores, TRAIN, USERS, ITEMS, LABELS, 4)
    one_user_at_a_time = per_user_full_ranking(fixed_scores, TRAIN, USERS, ITEMS, LABELS, 4, chunk_elements=1)
    for a, b in zip(whole, one_user_at_a_time, strict=True):
        np.testing.assert_array_equal(a, b)


def test_k_beyond_the_items_left_to_rank() -> None:
    # K = 10 > 6 items: every relevant item is found; recall = 1 for each user.
    _, recall, ndcg, _ = per_user_full_ranking(fixed_scores, TRAIN, USERS, ITEMS, LABELS, 10)
    np.testing.assert_allclose(recall, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(ndcg, [(1 + D3) / (1 + D2), D2, D4])


def test_no_relevant_item_skips_everyone() -> None:
    user_ids, recall, _, skipped = per_user_full_ranking(
        fixed_scores, TRAIN, np.array([0, 3]), np.array([0, 1]), np.array([1, 0]), 2
    )
    assert user_ids.size == recall.size == 0
    assert skipped == 2
    assert math.isnan(full_ranking_metrics(fixed_scores, TRAIN, np.array([3]), np.array([1]), np.array([0]), 2).recall)


def test_nan_scores_are_refused() -> None:
    def broken(users: torch.Tensor) -> torch.Tensor:
        return torch.full((users.numel(), 6), float("nan"))

    with pytest.raises(ValueError, match="NaN"):
        per_user_full_ranking(broken, TRAIN, USERS, ITEMS, LABELS, 2)


def test_top_k_unseen_masks_and_breaks_ties_by_item_id() -> None:
    users = np.arange(4)
    items, valid = top_k_unseen(torch.from_numpy(SCORES.copy()), users, train_positives(TRAIN), 5)
    assert items[0].tolist() == [1, 2, 3, 4, 5]
    assert items[1].tolist() == [1, 2, 3, 5, 0]
    assert items[2, :4].tolist() == [0, 3, 4, 5]
    assert items[3].tolist() == [5, 4, 3, 2, 1]
    # u2 has only 4 items left: its 5th slot is a masked item, flagged invalid.
    assert valid.tolist() == [[True] * 5, [True] * 5, [True] * 4 + [False], [True] * 5]


def test_top_k_unseen_tie_at_the_cut() -> None:
    # Items 0..5 all score 1, item 6 scores 2; K = 3 takes item 6, then items 0 and 1.
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0]])
    items, _ = top_k_unseen(scores, np.array([0]), train_positives(sp.csr_matrix((1, 7))), 3)
    assert items.tolist() == [[6, 0, 1]]


# ---- the evaluation node ---------------------------------------------------------------------


class FixedScores(StubModel):
    """A 'trained' model whose preference scores are ``SCORES``, through ``score``."""

    def score(self, users: np.ndarray | None = None) -> np.ndarray:
        return SCORES.astype(np.float64) if users is None else SCORES[np.asarray(users)].astype(np.float64)


def split_table(split: str, rows: list[tuple[int, int, int]] = ROWS) -> pd.DataFrame:
    """Rows of one split of the interaction split table, every one a target."""
    users, items, labels = (np.array(column) for column in zip(*rows, strict=True))
    return pd.DataFrame(
        {
            "user": users.astype(np.int64),
            "item": items.astype(np.int64),
            "rating": np.where(labels == 1, 5, 2),
            "label": labels.astype(np.int8),
            "split": [split] * len(rows),
            "role": "target",
        }
    )


def full_ranking_evaluation(model: Recommender, validation: pd.DataFrame, test: pd.DataFrame, k: int = 2):
    interaction_split = pd.concat([test, validation], ignore_index=True)
    evaluators = build_evaluators(
        interaction_split, TRAIN, {"protocol": "full_ranking", "k": k}, "synthetic", {}
    )
    return evaluate_model(model, evaluators)


def mf_with_scores() -> Recommender:
    """An MF whose r̂ = U Vᵀ is ``SCORES``: U = SCORES, V = the identity."""
    model = build_model(
        {"name": "mf", "embedding_dim": 6, "epochs": 1}, "t", seed=0, device=torch.device("cpu")
    )
    data = TrainData(TRAIN)
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.module.user_embedding.copy_(torch.from_numpy(SCORES))
        model.module.item_embedding.copy_(torch.eye(6))
    model.load_state_dict({"model": "mf", "weights": model.module.state_dict(), "best_epoch": 1}, data)
    return model


# Validation rows that leave the test ranking of the hand example alone: u3's item 1 (u3
# has no test positive). u3 ranks 5, 4, 3, 2, 1, 0: item 1 at rank 5, outside K = 2.
U3_VALIDATION = [(3, 1, 1)]


@pytest.mark.parametrize("model", [FixedScores(), mf_with_scores()], ids=["score-method", "embeddings"])
def test_evaluate_model_full_ranking(model: Recommender) -> None:
    metrics, mlflow_metrics, predictions = full_ranking_evaluation(
        model, split_table("validation"), split_table("test", ROWS)
    )
    assert metrics["protocol"] == "full_ranking"
    assert metrics["k"] == [2]
    assert metrics["selection_metric"] == "ndcg_at_2"
    # Validation: the hand example (train items masked).
    assert metrics["validation_recall_at_2"] == pytest.approx((1 / 2 + 1) / 3, abs=1e-9)
    assert metrics["validation_ndcg_at_2"] == pytest.approx((1 / (1 + D2) + D2) / 3, abs=1e-9)
    assert metrics["validation_precision_at_2"] == pytest.approx((1 / 2 + 1 / 2) / 3, abs=1e-9)
    assert metrics["validation_hr_at_2"] == pytest.approx(2 / 3, abs=1e-9)
    assert metrics["validation_users_evaluated"] == 3
    assert metrics["validation_users_skipped"] == 1
    assert mlflow_metrics["validation_recall_at_2"]["value"] == metrics["validation_recall_at_2"]
    # Test masks the validation positives too: the same rows leave no test item to find.
    assert metrics["test_users_evaluated"] == 0
    assert metrics["test_users_skipped"] == 4
    assert metrics["test_recall_at_2"] is None and "test_recall_at_2" not in mlflow_metrics
    assert "protocol" not in mlflow_metrics and "k" not in mlflow_metrics
    # Each evaluated user's top K: (user, rank, item, split, relevant).
    assert list(predictions.columns) == ["user", "rank", "item", "split", "relevant"]
    assert predictions["user"].tolist() == [0, 0, 1, 1, 2, 2]
    assert predictions["rank"].tolist() == [1, 2] * 3
    assert predictions["item"].tolist() == [1, 2, 1, 2, 0, 3]
    assert predictions["relevant"].tolist() == [1, 0, 0, 1, 0, 0]
    assert (predictions["split"] == "validation").all()


@pytest.mark.parametrize("model", [FixedScores(), mf_with_scores()], ids=["score-method", "embeddings"])
def test_evaluate_model_full_ranking_test_split(model: Recommender) -> None:
    metrics, mlflow_metrics, predictions = full_ranking_evaluation(
        model, split_table("validation", U3_VALIDATION), split_table("test")
    )
    assert metrics["test_recall_at_2"] == pytest.approx((1 / 2 + 1) / 3, abs=1e-9)
    assert metrics["test_ndcg_at_2"] == pytest.approx((1 / (1 + D2) + D2) / 3, abs=1e-9)
    assert metrics["test_users_evaluated"] == 3
    assert metrics["test_users_skipped"] == 1
    assert mlflow_metrics["test_ndcg_at_2"]["value"] == metrics["test_ndcg_at_2"]
    assert metrics["validation_recall_at_2"] == 0.0 and metrics["validation_users_evaluated"] == 1
    assert len(predictions) == 2 * (1 + 3)


def test_full_ranking_masks_the_train_matrix_it_is_built_with() -> None:
    # Without train items, u0's item 0 is relevant again and ranked first: u0 finds 2 of
    # P = 3 in its top 2 (recall 2/2, NDCG 1); u1 ranks 4, 1 (item 1 ties with 2): miss;
    # u2 ranks 0, 1 (everything ties): miss.
    interaction_split = pd.concat([split_table("validation"), split_table("test", U3_VALIDATION)])
    evaluators = build_evaluators(
        interaction_split, sp.csr_matrix(TRAIN.shape), {"protocol": "full_ranking", "k": 2}, "synthetic", {}
    )
    metrics, _, _ = evaluate_model(FixedScores(), evaluators)
    assert metrics["validation_recall_at_2"] == pytest.approx(1 / 3, abs=1e-12)
    assert metrics["validation_ndcg_at_2"] == pytest.approx(1 / 3, abs=1e-12)


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"protocol": "full"}, r"evaluation\.protocol"),
        ({"protocol": "full_ranking", "k": 0}, r"evaluation.*k must be >= 1"),
        # The old full-ranking cut-off is gone (evaluation.k is the cut-off of every protocol).
        ({"protocol": "full_ranking", "full_ranking_k": 2}, r"evaluation\.full_ranking_k"),
    ],
)
def test_bad_full_ranking_parameters_are_named(evaluation: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_evaluators(split_table("validation"), TRAIN, evaluation, "synthetic", {})


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_unseen_on_many_items_matches_a_full_sort(k: int) -> None:
    # 3,000 items: the top k comes from the blocks of items with the highest maxima.
    # Scores rounded to 0.1 tie often, also at the cut; the reference sorts each row
    # fully, by score descending then item id.
    rng = np.random.default_rng(k)
    n_users, n_items = 40, 3_000
    scores = np.round(rng.normal(size=(n_users, n_items)), 1).astype(np.float32)
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.05).astype(np.float32))
    items, valid = top_k_unseen(torch.from_numpy(scores.copy()), np.arange(n_users), train_positives(train), k)
    assert valid.all()
    for user in range(n_users):
        masked = scores[user].astype(np.float64)
        masked[train[user].indices] = -np.inf
        expected = np.lexsort((np.arange(n_items), -masked))[:k]
        assert items[user].tolist() == expected.tolist()
