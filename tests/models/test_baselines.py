"""MostPop, ItemKNN and EASE against values computed by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models import itemknn as itemknn_module
from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.ease import EASE
from debias_pipeline.models.itemknn import cosine_neighbors
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")

# 3 users x 4 items. Item popularity |U_i|: 2, 3, 1, 1.
#        i0 i1 i2 i3
X = np.array(
    [
        [1, 1, 0, 0],  # u0
        [0, 1, 1, 0],  # u1
        [1, 1, 0, 1],  # u2
    ],
    dtype=np.float32,
)
# Overlaps |U_i ∩ U_j|: (0, 1) = 2 (u0, u2); (0, 3) = 1 (u2); (1, 2) = 1 (u1); (1, 3) = 1 (u2);
# (0, 2) = (2, 3) = 0. With shrink h = 1, sim = overlap / (sqrt(|U_i| |U_j|) + 1):
SIM_01 = 2 / (math.sqrt(2 * 3) + 1)  # 0.5798
SIM_03 = 1 / (math.sqrt(2 * 1) + 1)  # 0.4142
SIM_12 = SIM_13 = 1 / (math.sqrt(3 * 1) + 1)  # 0.3660, a tie


def build(name: str, **params: Any) -> Recommender:
    return build_model({"name": name, **params}, "test.model", seed=0, device=CPU)


def data(matrix: np.ndarray = X) -> TrainData:
    return TrainData(sp.csr_matrix(matrix))


@dataclass
class ScoresCloseTo:
    """A validator whose metric is −max |scores − target|: best (0) for the model that
    scores exactly ``target``."""

    target: np.ndarray
    metric: str = "closeness"

    def score(self, model: Recommender) -> float:
        return -float(np.abs(model.score() - self.target).max())


@dataclass
class Constant:
    """A validator that scores every model the same."""

    metric: str = "constant"

    def score(self, model: Recommender) -> float:
        return 0.5


# ---- MostPop ------------------------------------------------------------------------------


def test_mostpop_scores_every_user_by_train_popularity() -> None:
    model = build("mostpop").fit(data())
    np.testing.assert_array_equal(model.score(), [[2, 3, 1, 1]] * 3)
    np.testing.assert_array_equal(model.score(np.array([2, 2])), [[2, 3, 1, 1]] * 2)
    np.testing.assert_array_equal(model.score_pairs(np.array([0, 1, 2]), np.array([1, 3, 0])), [3, 1, 2])
    # p = (2, 3, 1, 1) / 7: the loss is −Σ p log p
    entropy = -(2 / 7 * math.log(2 / 7) + 3 / 7 * math.log(3 / 7) + 2 * (1 / 7) * math.log(1 / 7))
    assert model.history[0].train_loss == pytest.approx(entropy)
    np.testing.assert_array_equal(model.fold_in(sp.csr_matrix(np.eye(4)[:2])), [[2, 3, 1, 1]] * 2)


def test_mostpop_counts_positives_not_their_values() -> None:
    counts = build("mostpop").fit(data(X * np.array([[5], [2], [1]], dtype=np.float32))).score()
    np.testing.assert_array_equal(counts, [[2, 3, 1, 1]] * 3)


# ---- ItemKNN ------------------------------------------------------------------------------


def test_itemknn_with_one_neighbor_by_hand() -> None:
    # Top-1 neighbour j of each target i: 0 ← 1 (0.5798 > 0.4142), 1 ← 0 (0.5798 > 0.3660 = 0.3660),
    # 2 ← 1 (its only one), 3 ← 0 (0.4142 > 0.3660). score_ui = Σ_{j ∈ I_u} W_ji.
    model = build("itemknn", neighbors=1, shrink=1.0).fit(data())
    expected = [
        [SIM_01, SIM_01, SIM_12, SIM_03],  # u0 {0, 1}
        [SIM_01, 0.0, SIM_12, 0.0],  # u1 {1, 2}: W_10; W_21 pruned; W_12; W_13, W_23 pruned
        [SIM_01, SIM_01, SIM_12, SIM_03],  # u2 {0, 1, 3}: W_30 and W_31 pruned
    ]
    np.testing.assert_allclose(model.score(), expected, rtol=1e-6)
    assert math.isnan(model.history[0].train_loss)  # no objective


def test_itemknn_with_two_neighbors_by_hand() -> None:
    # Top-2: 0 ← {1, 3}; 1 ← {0, 2} (2 and 3 tie at 0.3660: the lower id stays); 2 ← {1}; 3 ← {0, 1}.
    model = build("itemknn", neighbors=2, shrink=1.0).fit(data())
    expected = [
        [SIM_01, SIM_01, SIM_12, SIM_03 + SIM_13],  # u0 {0, 1}
        [SIM_01, SIM_12, SIM_12, SIM_13],  # u1 {1, 2}: i1 gets W_21, i2 W_12, i3 W_13
        [SIM_01 + SIM_03, SIM_01, SIM_12, SIM_03 + SIM_13],  # u2 {0, 1, 3}: i1 gets no W_31 (pruned)
    ]
    np.testing.assert_allclose(model.score(), expected, rtol=1e-6)


def test_itemknn_without_shrink_is_the_plain_cosine() -> None:
    rng = np.random.default_rng(0)
    matrix = (rng.random((20, 15)) < 0.3).astype(np.float64)
    normalized = matrix / np.maximum(np.linalg.norm(matrix, axis=0), 1e-12)  # columns of unit length
    cosine = normalized.T @ normalized  # (15, 15)
    np.fill_diagonal(cosine, 0.0)
    weights = cosine_neighbors(sp.csr_matrix(matrix), neighbors=14, shrink=0.0)
    np.testing.assert_allclose(weights.toarray(), cosine, rtol=1e-6, atol=1e-7)
    model = build("itemknn", neighbors=14, shrink=0.0).fit(data(matrix))
    np.testing.assert_allclose(model.score(), matrix @ cosine, rtol=1e-5)


def test_itemknn_blocks_give_the_same_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    matrix = sp.csr_matrix((rng.random((30, 17)) < 0.25).astype(np.float64))
    whole = cosine_neighbors(matrix, neighbors=3, shrink=2.0)
    assert (np.diff(whole.tocsc().indptr) <= 3).all()  # at most k per target item
    monkeypatch.setattr(itemknn_module, "BLOCK_ELEMENTS", 40)  # two target items per block
    blocked = cosine_neighbors(matrix, neighbors=3, shrink=2.0)
    np.testing.assert_array_equal(blocked.toarray(), whole.toarray())


# ---- EASE ---------------------------------------------------------------------------------


def ease_closed_form(matrix: np.ndarray, l2: float) -> np.ndarray:
    """Steck's eq. 8 in numpy: P = (XᵀX + λI)⁻¹, B = I − P diagMat(1 / diag(P))."""
    precision = np.linalg.inv(matrix.T @ matrix + l2 * np.eye(matrix.shape[1]))
    return np.eye(matrix.shape[1]) - precision @ np.diag(1.0 / np.diag(precision))


def ease_weights(model: Recommender) -> np.ndarray:
    return model.state_dict()["weights"]["item_weights"].numpy()


def test_ease_two_items_by_hand() -> None:
    # X: 4 users x 2 items; G = XᵀX = [[3, 1], [1, 2]]. With diag(B) = 0 each column is a
    # ridge regression on the other item: B_01 = G_01 / (G_00 + λ) = 1/4, B_10 = G_10 / (G_11 + λ) = 1/3
    # (λ = 1). P = [[4, 1], [1, 3]]⁻¹ = [[3, −1], [−1, 4]] / 11: −P_01 / P_11 = 1/4, −P_10 / P_00 = 1/3.
    matrix = np.array([[1, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    model = build("ease", l2=1.0).fit(data(matrix))
    np.testing.assert_allclose(ease_weights(model), [[0, 1 / 4], [1 / 3, 0]], rtol=1e-6)
    # scores X B: {0, 1} → (1/3, 1/4); {0} → (0, 1/4); {1} → (1/3, 0)
    np.testing.assert_allclose(model.score(), [[1 / 3, 1 / 4], [0, 1 / 4], [0, 1 / 4], [1 / 3, 0]], rtol=1e-6)
    # ||X − XB||² + λ||B||² = (4/9 + 9/16) + 2 (1 + 1/16) + (1/9 + 1) + (1/16 + 1/9) = 53/12, over 4 x 2 pairs
    assert model.history[0].train_loss == pytest.approx(53 / 12 / 8)
    assert model.history[0].candidate == {"l2": 1.0}


def test_ease_matches_the_closed_form_and_its_optimality_conditions() -> None:
    l2 = 0.5
    model = build("ease", l2=l2).fit(data())
    weights = ease_weights(model).astype(np.float64)
    expected = ease_closed_form(X.astype(np.float64), l2)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    # KKT of min ||X − XB||² + λ||B||² s.t. diag(B) = 0: the gradient 2((G + λI)B − G) is
    # a diagonal matrix (the multipliers of the diagonal constraints) — the problem is
    # strictly convex, so this B is its unique minimizer.
    gram = X.T.astype(np.float64) @ X
    stationarity = (gram + l2 * np.eye(4)) @ expected - gram
    np.testing.assert_allclose(stationarity - np.diag(np.diag(stationarity)), 0.0, atol=1e-12)
    # the recorded loss is the objective over |U| x |I| pairs
    objective = np.sum((X - X @ expected) ** 2) + l2 * np.sum(expected**2)
    assert model.history[0].train_loss == pytest.approx(objective / 12, rel=1e-9)
    np.testing.assert_allclose(model.score(), X @ expected, rtol=1e-5, atol=1e-6)


def test_ease_grid_picks_the_validation_best_lambda() -> None:
    target = build("ease", l2=3.0).fit(data()).score()
    model = build("ease", l2_grid=[0.1, 3.0, 100.0]).fit(data(), ScoresCloseTo(target))
    assert [record.epoch for record in model.history] == [1, 2, 3]
    assert [record.candidate for record in model.history] == [{"l2": 0.1}, {"l2": 3.0}, {"l2": 100.0}]
    scores = [record.validation_score for record in model.history]
    assert scores[1] == 0.0 and scores[0] < 0.0 and scores[2] < 0.0
    assert model.best_epoch == 2 and model.l2 == 3.0
    np.testing.assert_array_equal(model.score(), target)  # λ = 3's B, not the last one solved
    # the losses are each candidate's objective
    for record in model.history:
        expected = ease_closed_form(X.astype(np.float64), record.candidate["l2"])
        objective = np.sum((X - X @ expected) ** 2) + record.candidate["l2"] * np.sum(expected**2)
        assert record.train_loss == pytest.approx(objective / 12, rel=1e-9)
    # the choice survives saving and loading
    restored = build("ease", l2_grid=[0.1, 3.0, 100.0]).load_state_dict(model.state_dict(), data())
    assert restored.l2 == 3.0
    np.testing.assert_array_equal(restored.score(), target)


def test_ease_grid_ties_keep_the_first_lambda() -> None:
    model = build("ease", l2_grid=[7.0, 1.0]).fit(data(), Constant())
    assert model.best_epoch == 1 and model.l2 == 7.0
    np.testing.assert_array_equal(model.score(), build("ease", l2=7.0).fit(data()).score())


def test_ease_grid_needs_a_validation_split() -> None:
    with pytest.raises(ValueError, match="ease: 2 hyperparameter candidates need a validation split"):
        build("ease", l2_grid=[1.0, 10.0]).fit(data())


def test_ease_refuses_a_catalogue_beyond_its_memory_bound() -> None:
    with pytest.raises(ValueError, match=r"ease: 4 items .* above max_memory_gib = 1e-09; raise max_memory_gib"):
        build("ease", max_memory_gib=1e-9).fit(data())
    # Gowalla's 40,981 items need about 32 · 40,981² bytes = 50.1 GiB
    model: EASE = build("ease")  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"40,981 items .* about 50\.1 GiB .* max_memory_gib = 16"):
        model.check_memory(40_981)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ease_on_cuda_matches_the_cpu() -> None:
    cpu = build("ease", l2=0.5).fit(data())
    cuda = build_model({"name": "ease", "l2": 0.5}, "test.model", seed=0, device=torch.device("cuda")).fit(data())
    np.testing.assert_allclose(cuda.score(), cpu.score(), rtol=1e-5, atol=1e-6)
    assert cuda.history[0].train_loss == pytest.approx(cpu.history[0].train_loss, rel=1e-9)


# ---- all three ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mostpop", "itemknn", "ease"])
def test_folding_in_a_train_row_gives_that_users_scores(name: str) -> None:
    model = build(name).fit(data())
    np.testing.assert_allclose(model.fold_in(sp.csr_matrix(X[[2, 0]])), model.score(np.array([2, 0])), rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("itemknn", {"neighbors": 0}, r"parameter 'test\.model\.neighbors': neighbors must be >= 1, got 0"),
        ("itemknn", {"neighbors": "5"}, r"parameter 'test\.model\.neighbors' must be an integer"),
        ("itemknn", {"shrink": -1.0}, r"parameter 'test\.model\.shrink': shrink must be a finite number >= 0"),
        ("ease", {"l2": 0.0}, r"parameter 'test\.model\.l2': l2 must be > 0, got 0\.0"),
        ("ease", {"l2": None}, r"parameter 'test\.model\.l2': l2 must be a number > 0 unless l2_grid is given"),
        ("ease", {"l2": 10.0, "l2_grid": [1.0, 2.0]}, r"parameter 'test\.model\.l2_grid': l2_grid and l2 exclude each other"),
        ("ease", {"l2_grid": []}, r"parameter 'test\.model\.l2_grid': l2_grid must hold at least one"),
        ("ease", {"l2_grid": [1.0, -2.0]}, r"parameter 'test\.model\.l2_grid': l2_grid must hold numbers > 0"),
        ("ease", {"l2_grid": [1.0, 1.0]}, r"parameter 'test\.model\.l2_grid': l2_grid must not repeat"),
        ("ease", {"max_memory_gib": 0.0}, r"parameter 'test\.model\.max_memory_gib': max_memory_gib must be > 0"),
        ("mostpop", {"neighbors": 5}, r"unknown parameter\(s\) test\.model\.neighbors"),
    ],
)
def test_bad_parameters_are_named(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(name, **params)
