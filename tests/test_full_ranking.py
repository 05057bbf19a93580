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

from debias_pipeline.metrics import full_ranking_metrics, per_user_full_ranking, top_k_unseen, train_positives
from debias_pipeline.models import Recommender, TrainData, build_model
from debias_pipeline.pipelines.evaluation.nodes import evaluate_model
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


def split_table(split: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": USERS.astype(np.int64),
            "item": ITEMS.astype(np.int64),
            "rating": np.where(LABELS == 1, 5, 2),
            "label": LABELS.astype(np.int8),
            "split": [split] * len(ROWS),
        }
    )


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


@pytest.mark.parametrize("model", [FixedScores(), mf_with_scores()], ids=["score-method", "embeddings"])
def test_evaluate_model_full_ranking(model: Recommender) -> None:
    unbiased = pd.concat([split_table("test"), split_table("validation")], ignore_index=True)
    evaluation = {"k": 5, "protocol": "full_ranking", "full_ranking_k": 2}
    metrics, mlflow_metrics, predictions = evaluate_model(model, unbiased, evaluation, TRAIN)
    assert metrics["protocol"] == "full_ranking"
    assert metrics["k"] == 2
    for split in ("test", "validation"):
        assert metrics[f"{split}_recall_at_2"] == pytest.approx((1 / 2 + 1) / 3, abs=1e-9)
        assert metrics[f"{split}_ndcg_at_2"] == pytest.approx((1 / (1 + D2) + D2) / 3, abs=1e-9)
        assert metrics[f"{split}_users_evaluated"] == 3
        assert metrics[f"{split}_users_skipped"] == 1
        assert mlflow_metrics[f"{split}_recall_at_2"]["value"] == metrics[f"{split}_recall_at_2"]
    assert "protocol" not in mlflow_metrics and "k" not in mlflow_metrics
    assert len(predictions) == 2 * len(ROWS)


def test_full_ranking_needs_the_train_matrix() -> None:
    with pytest.raises(ValueError, match="train matrix"):
        evaluate_model(FixedScores(), split_table("test"), {"protocol": "full_ranking"})


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"protocol": "full"}, r"evaluation\.protocol"),
        ({"protocol": "full_ranking", "full_ranking_k": 0}, r"evaluation\.full_ranking_k"),
    ],
)
def test_bad_full_ranking_parameters_are_named(evaluation: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_model(FixedScores(), split_table("test"), evaluation, TRAIN)


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
