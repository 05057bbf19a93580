"""DICE: the cause-specific losses, the distance correlation, the margin sampler and
the model's batch loss, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.dice import DICE
from debias_pipeline.models.losses import dice_loss, distance_correlation
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.sampling import MarginSampler

CPU = torch.device("cpu")
LN2 = math.log(2.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dice_loss_by_hand() -> None:
    # Three triples, batch 3, α = ½.
    # O1 (+1): s_int = (1, 0), s_con = (0, 2): click softplus((0 + 2) − (1 + 0)) = softplus(1);
    #   interest i over j: softplus(0 − 1); conformity j over i: softplus(0 − 2).
    # O2 (−1): s_int = (0, 1), s_con = (3, 0): click softplus(1 − 3) = softplus(−2);
    #   conformity i over j: softplus(0 − 3); no interest term.
    # 0: all scores 0: click ln 2 only.
    # L_click = (softplus(1) + softplus(−2) + ln 2) / 3 = (1.313262 + 0.126928 + 0.693147) / 3 = 0.711112
    # L_int = softplus(−1) / 3 = 0.104421; L_con = (softplus(−2) + softplus(−3)) / 3 = 0.058505
    # total 0.711112 + ½ (0.104421 + 0.058505) = 0.792575.
    loss = dice_loss(
        torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
        torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64),
        torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64),
        torch.tensor([1, -1, 0]),
        0.5,
    )
    click = (softplus(1) + softplus(-2) + LN2) / 3
    interest = softplus(-1) / 3
    conformity = (softplus(-2) + softplus(-3)) / 3
    assert float(loss) == pytest.approx(click + 0.5 * (interest + conformity), rel=1e-12)
    assert float(loss) == pytest.approx(0.792575, abs=1e-6)


def test_dice_loss_takes_each_cause_in_its_direction() -> None:
    # Every term is a BPR, never below 0, so "loss >= 0" would pass with a direction
    # flipped; these fail then. O1: interest ranks i first, conformity j first; the
    # click (−20 + 5 against 20 − 5) ranks i first: each term ≈ 0.
    o1 = {"kinds": torch.tensor([1]), "alpha": 1.0}
    right = dice_loss(torch.tensor([20.0]), torch.tensor([-20.0]), torch.tensor([-5.0]), torch.tensor([5.0]), **o1)
    assert float(right) < 1e-4
    # The same scores in O2, where conformity must rank i first: softplus(5 − (−5)) = 10 more.
    o2 = {"kinds": torch.tensor([-1]), "alpha": 1.0}
    wrong = dice_loss(torch.tensor([20.0]), torch.tensor([-20.0]), torch.tensor([-5.0]), torch.tensor([5.0]), **o2)
    assert float(wrong) == pytest.approx(10.0, abs=1e-3)
    # Gradients at equal scores, α = 1, batch 1: each active softplus has slope ½ there.
    # O1: ∂/∂s^int_uj = ½ (click) + ½ (interest) = 1; ∂/∂s^con_uj = ½ (click) − ½
    # (conformity ranks j first) = 0. O2: ∂/∂s^con_uj = ½ + ½ = 1, ∂/∂s^int_uj = ½.
    for kind, expected in ((1, [1.0, 0.0]), (-1, [0.5, 1.0])):
        scores = [torch.tensor([0.1], requires_grad=True) for _ in range(4)]
        dice_loss(*scores, torch.tensor([kind]), 1.0).backward()
        assert [float(scores[1].grad), float(scores[3].grad)] == pytest.approx(expected, abs=1e-7)


def test_distance_correlation_by_hand() -> None:
    # x = (0, 1, 2), y = (0, 1, 0). Distances a = [[0,1,2],[1,0,1],[2,1,0]], b = [[0,1,0],[1,0,1],[0,1,0]].
    # Double centring (row means a: 1, 2/3, 1, grand 8/9; b: 1/3, 2/3, 1/3, grand 4/9):
    # A = [[−10, 2, 8], [2, −4, 2], [8, 2, −10]] / 9, B = [[−2, 4, −2], [4, −8, 4], [−2, 4, −2]] / 9.
    # dCov² = mean(A∘B) = (20 + 16 − 32 + 32 + 16 + 20) / 81 / 9 = 8/81;
    # dVar²(x) = 360 / 729 = 40/81, dVar²(y) = 144 / 729 = 16/81.
    # dCor² = (8/81) / √(40/81 · 16/81) = 8 / √640 = 1/√10, dCor = 10^(−1/4) = 0.562341.
    x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.float64)
    assert float(distance_correlation(x, y)) == pytest.approx(10**-0.25, rel=1e-12)
    assert float(distance_correlation(y, x)) == pytest.approx(10**-0.25, rel=1e-12)


def test_distance_correlation_properties() -> None:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(30, 4)))
    # Invariant to shifts, scales and rotations: 1 for a copy of x moved and rotated.
    rotation, _ = torch.linalg.qr(torch.tensor(rng.normal(size=(4, 4))))
    assert float(distance_correlation(x, 3.0 * x @ rotation + 1.0)) == pytest.approx(1.0, rel=1e-9)
    # Between 0 and 1; 0 when one side has no spread (and its gradient finite).
    y = torch.tensor(rng.normal(size=(30, 2)), requires_grad=True)
    assert 0.0 < float(distance_correlation(x, y)) < 1.0
    constant = torch.ones(30, 2, dtype=torch.float64, requires_grad=True)
    value = distance_correlation(x, constant)
    value.backward()
    assert float(value) == 0.0 and torch.isfinite(constant.grad).all()


def _clicks() -> sp.csr_matrix:
    # Item popularity (train positives): item 0: 1, item 1: 2, item 2: 3, item 3: 5, item 4: 6.
    rows = {0: [5], 1: [3, 4], 2: [0, 1, 2], 3: [0, 1, 2, 3, 4], 4: [0, 1, 2, 3, 4, 5]}
    clicks = np.zeros((6, 5), dtype=np.float32)
    for item, users in rows.items():
        clicks[users, item] = 1.0
    return sp.csr_matrix(clicks)


def _draw(sampler: MarginSampler, user: int, positive: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    users, positives = torch.full((n,), user), torch.full((n,), positive)
    negatives = sampler.sample_for(users, positives)
    return negatives.numpy(), sampler.kinds(positives, negatives).numpy()


def test_margin_sampler_draws_beyond_the_margin() -> None:
    sampler = MarginSampler(_clicks(), torch.Generator().manual_seed(0), margin=1.0, margin_decay=0.9)
    sampler.begin_epoch()
    # User 5 (clicked items 0, 4), positive item 0 (popularity 1): O1 = popularity > 2 is
    # {2, 3, 4}, 4 is a positive; O2 = popularity < 0 is empty: always O1.
    negatives, kinds = _draw(sampler, 5, 0)
    assert set(negatives) == {2, 3} and (kinds == 1).all()
    assert 0.4 < np.mean(negatives == 2) < 0.6  # uniform within the side
    # Positive item 4 (popularity 6): O1 (> 7) is empty; O2 (< 5) is {0, 1, 2}, 0 a positive.
    negatives, kinds = _draw(sampler, 5, 4)
    assert set(negatives) == {1, 2} and (kinds == -1).all()


def test_margin_sampler_takes_either_side_and_falls_back_to_uniform() -> None:
    sampler = MarginSampler(_clicks(), torch.Generator().manual_seed(1), margin=0.0, margin_decay=0.9)
    sampler.begin_epoch()
    # User 3 (clicked 1, 3, 4), positive item 1 (popularity 2): O1 has item 2, O2 item 0:
    # a fair coin between the sides.
    negatives, kinds = _draw(sampler, 3, 1)
    assert set(negatives) == {0, 2} and 0.45 < np.mean(kinds == 1) < 0.55
    assert ((negatives == 2) == (kinds == 1)).all()
    # User 1 (clicked 2, 3, 4), positive item 2: O1 = {3, 4} holds only positives, so the
    # coin's O1 half falls back to a uniform non-positive (0 or 1), both less popular (O2).
    negatives, kinds = _draw(sampler, 1, 2)
    assert set(negatives) == {0, 1} and (kinds == -1).all()


def test_margin_decays_every_epoch() -> None:
    sampler = MarginSampler(_clicks(), torch.Generator().manual_seed(0), margin=40.0, margin_decay=0.5)
    sampler.begin_epoch()
    assert sampler.margin == 40.0
    sampler.begin_epoch()
    sampler.begin_epoch()
    assert sampler.margin == 10.0
    # Within the margin: kind 0 (a popularity gap of 5 against a margin of 10).
    assert sampler.kinds(torch.tensor([0]), torch.tensor([4])).tolist() == [0]


def _model(**params: object) -> tuple[DICE, TrainData]:
    data = TrainData(_clicks())
    block = {"name": "dice", "embedding_dim": 2, "alpha": 0.5, "alpha_decay": 0.5, "beta": 0.2, "margin": 0.0}
    model = build_model({**block, **params}, "t", seed=0, device=CPU)
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    return model, data


def test_alpha_decays_with_the_epochs() -> None:
    model, data = _model()
    sampler = model.negative_sampler(data.interactions, torch.Generator().manual_seed(0))
    assert model.alpha == 0.5
    for _ in range(3):
        sampler.begin_epoch()
    assert model.alpha == 0.5 * 0.5**2


def test_model_batch_loss_assembles_the_terms() -> None:
    # Triples (user 0: 2 over 0, O2), (user 3: 1 over 2, O1), (user 0: 3 over 1, O2);
    # popularity [1, 2, 3, 5, 6], margin 0.
    model, data = _model(weight_decay=0.01)
    sampler = model.negative_sampler(data.interactions, torch.Generator().manual_seed(0))
    sampler.begin_epoch()
    sampler.begin_epoch()  # epoch 2: α = 0.25
    users, positives, negatives = torch.tensor([0, 3, 0]), torch.tensor([2, 1, 3]), torch.tensor([0, 2, 1])
    assert sampler.kinds(positives, negatives).tolist() == [-1, 1, -1]
    interest, conformity = model.module.interest, model.module.conformity
    u_int, i_int = interest.user_embedding.detach(), interest.item_embedding.detach()
    u_con, i_con = conformity.user_embedding.detach(), conformity.item_embedding.detach()
    expected = dice_loss(
        (u_int[users] * i_int[positives]).sum(1),
        (u_int[users] * i_int[negatives]).sum(1),
        (u_con[users] * i_con[positives]).sum(1),
        (u_con[users] * i_con[negatives]).sum(1),
        torch.tensor([-1, 1, -1]),
        0.25,
    )
    # The discrepancy over the distinct users {0, 3} and items {0, 1, 2, 3}.
    distinct_users, distinct_items = torch.tensor([0, 3]), torch.tensor([0, 1, 2, 3])
    expected = expected + 0.2 * (
        distance_correlation(u_int[distinct_users], u_con[distinct_users])
        + distance_correlation(i_int[distinct_items], i_con[distinct_items])
    )
    # L2: the batch mean of ||e_u||² + ||e_i||² + ||e_j||² over both towers' tables.
    squares = sum(
        (table[ids] ** 2).sum()
        for table, ids in (
            (u_int, users),
            (i_int, positives),
            (i_int, negatives),
            (u_con, users),
            (i_con, positives),
            (i_con, negatives),
        )
    )
    expected = expected + 0.01 * squares / 3
    loss = model.batch_loss(users, positives, negatives)
    assert loss.item() == pytest.approx(float(expected), rel=1e-6)


def test_ranking_by_interest_or_both() -> None:
    model, _ = _model()
    interest_users, _ = model.preference_embeddings()
    assert torch.equal(interest_users, model.module.interest.user_embedding)
    both, _ = _model(ranking="both")
    users, items = both.preference_embeddings()
    scores = users @ items.T
    interest = both.module.interest.user_embedding @ both.module.interest.item_embedding.T
    conformity = both.module.conformity.user_embedding @ both.module.conformity.item_embedding.T
    torch.testing.assert_close(scores, interest + conformity)


def test_authors_initialization() -> None:
    model, _ = _model(embedding_dim=16)
    table = model.module.interest.user_embedding
    assert float(table.abs().max()) <= 0.25 and float(table.std()) > 0.1  # U(−1/4, 1/4): std 0.144


def test_config_refusals() -> None:
    with pytest.raises(ValueError, match="negative_sampling"):
        build_model({"name": "dice", "negative_sampling": "popularity"}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="alpha_decay"):
        build_model({"name": "dice", "alpha_decay": 0.0}, "t", seed=0, device=CPU)
    with pytest.raises(ValueError, match="loss"):
        build_model({"name": "dice", "loss": "bce"}, "t", seed=0, device=CPU)


def test_lightgcn_towers_train_and_restore() -> None:
    # Two blocks of 4 users x 4 items, and two items clicked once: popularity 4 or 1.
    blocks = np.kron(np.eye(2), np.ones((4, 4)))
    clicks = sp.csr_matrix(np.hstack([blocks, np.eye(8)[:, :2]]).astype(np.float32))
    data = TrainData(clicks, build_normalized_adjacency(clicks))
    block = {"name": "dice", "embedding_dim": 4, "num_layers": 2, "margin": 0.0, "batch_size": 8}
    model = build_model({**block, "epochs": 5}, "t", seed=0, device=CPU).fit(data)
    assert model.module.interest.num_layers == 2 and len(model.history) == 5
    restored = build_model(block, "t", seed=1, device=CPU).load_state_dict(model.state_dict(), data)
    assert np.array_equal(restored.score(), model.score())
