"""WMF: one ALS sweep and the objective by hand, the batched ridge solver against
per-row solves, and the sweep loop's early stopping (shared by the EM models)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData, ValidationSet
from debias_pipeline.models.em import DTYPE, solve_weighted_ridge
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.wmf import WMF

CPU = torch.device("cpu")

# Y = [[1, 0], [1, 1]]: N = 4 pairs. With α = 1 the confidences are c = 1 + y = [[2, 1], [2, 2]];
# weight_decay λ = 1/4 makes the ridge of the summed objective Nλ = 1.
TINY_Y = np.array([[1.0, 0.0], [1.0, 1.0]])


def tiny_wmf(item: list[float], user: list[float] | None = None, solver: str = "exact") -> WMF:
    """A d = 1 WMF on TINY_Y with the given factor tables."""
    params = {"name": "wmf", "embedding_dim": 1, "alpha": 1.0, "weight_decay": 0.25, "solver": solver}
    model = build_model(params, "t", seed=0, device=CPU)
    model.module = model.build_module(TrainData(sp.csr_matrix(TINY_Y)), torch.Generator().manual_seed(0))
    model.module.item_embedding.copy_(torch.tensor(item, dtype=DTYPE)[:, None])
    if user is not None:
        model.module.user_embedding.copy_(torch.tensor(user, dtype=DTYPE)[:, None])
    return model


@pytest.mark.parametrize("solver", ["exact", "torch"])
def test_one_sweep_by_hand(solver: str) -> None:
    # d = 1, so every solve is a division: x_u = Σ_i c_ui y_ui v_i / (Σ_i c_ui v_i² + 1).
    # Start from v = [1, 2].
    # u0: (2·1·1 + 1·0·2) / (2·1 + 1·4 + 1) = 2/7.
    # u1: (2·1·1 + 2·1·2) / (2·1 + 2·4 + 1) = 6/11.
    # Then v_i = Σ_u c_ui y_ui x_u / (Σ_u c_ui x_u² + 1) with x = [2/7, 6/11]:
    # i0: (2·2/7 + 2·6/11) / (2·4/49 + 2·36/121 + 1) = (128/77) / (10425/5929) = 9856/10425.
    # i1: (1·0·2/7 + 2·6/11) / (1·4/49 + 2·36/121 + 1) = (12/11) / (9941/5929) = 6468/9941.
    model = tiny_wmf(item=[1.0, 2.0], solver=solver)
    model.update(torch.tensor(TINY_Y, dtype=DTYPE))
    np.testing.assert_allclose(model.module.user_embedding[:, 0].numpy(), [2 / 7, 6 / 11], rtol=1e-12)
    np.testing.assert_allclose(model.module.item_embedding[:, 0].numpy(), [9856 / 10425, 6468 / 9941], rtol=1e-12)


def test_objective_by_hand() -> None:
    # x = [1, 1], v = [1, 2]: scores [[1, 2], [1, 2]], residuals y − s = [[0, −2], [0, −1]].
    # Σ c r² = 2·0 + 1·4 + 2·0 + 2·1 = 6, mean 6/4 = 1.5; λ Σ||·||² = 1/4 · (1 + 1 + 1 + 4) = 1.75.
    model = tiny_wmf(item=[1.0, 2.0], user=[1.0, 1.0])
    assert float(model.loss(torch.tensor(TINY_Y, dtype=DTYPE))) == pytest.approx(3.25, rel=1e-12)


@pytest.mark.parametrize("solver", ["exact", "torch"])
def test_the_confidence_trick_equals_the_direct_normal_equations(solver: str) -> None:
    # x_u = (Vᵀ C_u V + NλI)⁻¹ Vᵀ C_u y_u, written out with a dense C_u per user.
    rng = np.random.default_rng(0)
    clicks = (rng.random((7, 9)) < 0.3).astype(float)
    params = {"name": "wmf", "embedding_dim": 3, "alpha": 4.0, "weight_decay": 0.01, "solver": solver}
    model = build_model(params, "t", seed=0, device=CPU)
    model.module = model.build_module(TrainData(sp.csr_matrix(clicks)), torch.Generator().manual_seed(0))
    items = model.module.item_embedding.numpy().copy()
    model.update(torch.tensor(clicks, dtype=DTYPE))
    ridge = 0.01 * clicks.size
    expected = np.stack(
        [
            np.linalg.solve(items.T @ np.diag(1 + 4 * y) @ items + ridge * np.eye(3), items.T @ ((1 + 4 * y) * y))
            for y in clicks
        ]
    )
    np.testing.assert_allclose(model.module.user_embedding.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_weighted_ridge_matches_row_by_row_solves(layout: str) -> None:
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(6, 3))
    weights = rng.random((5, 6)) * (rng.random((5, 6)) < 0.5)
    weights[2] = 0.0  # a row without any weight: only the shared part and the ridge
    rhs = rng.normal(size=(5, 3))
    gram = factors.T @ factors
    expected = np.stack(
        [np.linalg.solve(gram + factors.T @ np.diag(w) @ factors + 0.5 * np.eye(3), b) for w, b in zip(weights, rhs)]
    )
    dense = torch.tensor(weights)
    given = dense if layout == "dense" else dense.to_sparse_csr()
    # 40 elements per chunk: a single row per chunk, so chunking is exercised.
    solved = solve_weighted_ridge(
        torch.tensor(factors), given, torch.tensor(rhs), 0.5, torch.tensor(gram), chunk_elements=40
    )
    np.testing.assert_allclose(solved.numpy(), expected, rtol=1e-10)


def test_weighted_ridge_with_no_weight_at_all() -> None:
    factors = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=DTYPE)
    empty = torch.zeros(3, 2, dtype=DTYPE).to_sparse_csr()
    rhs = torch.ones(3, 2, dtype=DTYPE)
    # (0 + 2I) x = 1 → x = 1/2.
    np.testing.assert_allclose(solve_weighted_ridge(factors, empty, rhs, 2.0).numpy(), np.full((3, 2), 0.5))


def test_sweeps_never_increase_the_objective() -> None:
    rng = np.random.default_rng(2)
    data = TrainData(sp.csr_matrix((rng.random((30, 20)) < 0.2).astype(np.float32)))
    params = {"name": "wmf", "embedding_dim": 8, "alpha": 10.0, "weight_decay": 1e-4, "epochs": 15}
    losses = [r.train_loss for r in build_model(params, "t", seed=0, device=CPU).fit(data).history]
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < losses[0]


def test_early_stopping_restores_the_best_sweep() -> None:
    rng = np.random.default_rng(3)
    data = TrainData(sp.csr_matrix((rng.random((20, 16)) < 0.25).astype(np.float32)))
    users = np.repeat(np.arange(20), 6)
    items = np.tile(np.arange(6), 20) + 10
    validation = ValidationSet(users, items, (rng.random(120) < 0.3).astype(float), k=3)
    patience, eval_every = 2, 2
    params = {
        "name": "wmf",
        "embedding_dim": 6,
        "weight_decay": 1e-4,
        "epochs": 100,
        "patience": patience,
        "eval_every": eval_every,
    }
    model = build_model(params, "t", seed=1, device=CPU).fit(data, validation)

    evaluated = [(r.epoch, r.validation_score) for r in model.history if r.validation_score is not None]
    assert [epoch for epoch, _ in evaluated] == list(range(eval_every, len(model.history) + 1, eval_every))
    best_epoch, best_ndcg = max(evaluated, key=lambda pair: (pair[1], -pair[0]))
    # Restoration is only observable if the last evaluation is worse than the best.
    assert evaluated[-1][1] < best_ndcg
    assert model.best_epoch == best_epoch
    assert len(model.history) == best_epoch + patience * eval_every
    assert validation.score(model) == pytest.approx(best_ndcg, abs=1e-12)


def test_clicked_block_ranks_first() -> None:
    # All-ones clicks of users 0..3 on items 0..2, nothing else: the fit puts the clicked
    # items first for every user who clicked.
    clicks = np.zeros((6, 5), dtype=np.float32)
    clicks[:4, :3] = 1.0
    model = build_model({"name": "wmf", "embedding_dim": 2, "weight_decay": 1e-3, "epochs": 5}, "t", seed=0, device=CPU)
    scores = model.fit(TrainData(sp.csr_matrix(clicks))).score()
    assert (scores[:4, :3].min(axis=1) > scores[:4, 3:].max(axis=1)).all()


def test_the_sparse_sweeps_equal_the_dense_ones() -> None:
    # WMF's fit hands Y to its sweeps as a sparse CSR tensor; the same fit with dense Y
    # (the other sweep models' path) gives the same factors and objective.
    rng = np.random.default_rng(4)
    data = TrainData(sp.csr_matrix((rng.random((25, 18)) < 0.2).astype(np.float32)))
    params = {"name": "wmf", "embedding_dim": 5, "alpha": 3.0, "weight_decay": 1e-3, "epochs": 6}
    sparse = build_model(params, "t", seed=0, device=CPU).fit(data)
    dense = build_model(params, "t", seed=0, device=CPU)
    dense.dense_targets = True
    dense.fit(data)
    for table in ("user_embedding", "item_embedding"):
        np.testing.assert_allclose(
            getattr(sparse.module, table).numpy(), getattr(dense.module, table).numpy(), rtol=1e-9, atol=1e-12
        )
    np.testing.assert_allclose(
        [r.train_loss for r in sparse.history], [r.train_loss for r in dense.history], rtol=1e-10
    )


def test_wmf_fits_beyond_the_dense_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dense models refuse a Y above DENSE_PAIRS_LIMIT pairs; WMF never forms it.
    import debias_pipeline.models.trainers as base

    monkeypatch.setattr(base, "DENSE_PAIRS_LIMIT", 100)
    rng = np.random.default_rng(5)
    data = TrainData(sp.csr_matrix((rng.random((30, 20)) < 0.2).astype(np.float32)))
    model = build_model({"name": "wmf", "embedding_dim": 4, "epochs": 2}, "t", seed=0, device=CPU).fit(data)
    assert len(model.history) == 2
    with pytest.raises(ValueError, match="expomf: a full-batch fit over all 30 x 20 = 600 pairs"):
        build_model({"name": "expomf", "embedding_dim": 4, "epochs": 2}, "t", seed=0, device=CPU).fit(data)


def test_implicit_exact_solver_equals_the_project_solver_and_cg_approximates_it() -> None:
    rng = np.random.default_rng(6)
    data = TrainData(sp.csr_matrix((rng.random((40, 30)) < 0.15).astype(np.float32)))
    params = {"name": "wmf", "embedding_dim": 6, "alpha": 5.0, "weight_decay": 1e-3, "epochs": 8}
    fits = {
        solver: build_model({**params, "solver": solver}, "t", seed=0, device=CPU).fit(data)
        for solver in ("exact", "torch", "cg")
    }
    exact, torch_solve, cg = (fits[s].module.user_embedding.numpy() for s in ("exact", "torch", "cg"))
    np.testing.assert_allclose(exact, torch_solve, rtol=1e-9, atol=1e-12)
    assert np.abs(cg - exact).max() > 1e-9  # a different (approximate) solve ...
    losses = {s: fits[s].history[-1].train_loss for s in fits}
    assert losses["cg"] == pytest.approx(losses["exact"], rel=0.02)  # ... to nearly the same objective
    with pytest.raises(ValueError, match="solver"):
        build_model({**params, "solver": "lu"}, "t", seed=0, device=CPU)
