"""Negative samplers: what each one may draw, and how often, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.sampling import (
    HardSampler,
    PopularitySampler,
    UniformSampler,
    build_negative_sampler,
)

N_DRAWS = 60_000

# 3 users x 7 items. Item popularity (train positives per item):
#   item   0  1  2  3  4  5  6
#   pop    1  3  2  0  1  2  0
Y = sp.csr_matrix(
    np.array(
        [
            [0, 1, 1, 0, 0, 1, 0],  # u0: positives {1, 2, 5}; non-positives {0, 3, 4, 6}
            [1, 1, 0, 0, 0, 0, 0],  # u1: positives {0, 1}
            [0, 1, 1, 0, 1, 1, 0],  # u2: positives {1, 2, 4, 5}; non-positives {0, 3, 6}
        ],
        dtype=np.float32,
    )
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def frequencies(draws: torch.Tensor, n_items: int = 7) -> np.ndarray:
    return np.bincount(draws.numpy(), minlength=n_items) / draws.numel()


def many(user: int) -> torch.Tensor:
    return torch.full((N_DRAWS,), user, dtype=torch.int64)


def test_uniform_is_uniform_over_the_non_positives() -> None:
    sampler = UniformSampler(Y, generator())
    # u0: 1/4 on each of {0, 3, 4, 6}; u2: 1/3 on each of {0, 3, 6}. 4 sigma of a
    # binomial proportion at 60,000 draws is 0.0071.
    expected = {0: [1 / 4, 0, 0, 1 / 4, 1 / 4, 0, 1 / 4], 2: [1 / 3, 0, 0, 1 / 3, 0, 0, 1 / 3]}
    for user, probabilities in expected.items():
        observed = frequencies(sampler.sample(many(user)))
        np.testing.assert_allclose(observed, probabilities, atol=0.0075)
        assert observed[np.asarray(probabilities) == 0].sum() == 0  # never a positive


def test_uniform_negative_is_never_a_positive_on_a_random_graph() -> None:
    rng = np.random.default_rng(3)
    dense = rng.random((50, 40)) < 0.6  # dense rows: rejection would struggle
    dense[:, 0] = False  # every user keeps a negative
    train = sp.csr_matrix(dense.astype(np.float32))
    sampler = UniformSampler(train, generator())
    users = torch.from_numpy(rng.integers(0, 50, size=20_000))
    negatives = sampler.sample(users)
    assert not dense[users.numpy(), negatives.numpy()].any()
    assert ((negatives >= 0) & (negatives < 40)).all()


def test_popularity_is_proportional_to_popularity_over_the_non_positives() -> None:
    sampler = PopularitySampler(Y, generator())
    # u0's non-positives {0, 3, 4, 6} have popularity 1, 0, 1, 0: items 0 and 4, 1/2 each,
    # except when all 16 candidates hit u0's positives (mass 7/9): probability (7/9)^16,
    # then uniform over the four.
    # u1's non-positives {2, 3, 4, 5, 6}: 2, 0, 1, 2, 0 -> 2/5, 1/5, 2/5 on items 2, 4, 5
    # (fallback probability (4/9)^16 = 2e-6).
    fallback = (7 / 9) ** 16
    half = (1 - fallback) / 2 + fallback / 4
    expected = {
        0: [half, 0, 0, fallback / 4, half, 0, fallback / 4],
        1: [0, 0, 2 / 5, 0, 1 / 5, 2 / 5, 0],
    }
    for user, probabilities in expected.items():
        np.testing.assert_allclose(frequencies(sampler.sample(many(user))), probabilities, atol=0.0075)


def test_popularity_falls_back_to_uniform_when_every_candidate_is_positive() -> None:
    # u2's non-positives {0, 3, 6} hold popularity 1 of 9: a candidate is accepted with
    # probability 1/9, all 16 are rejected with probability (8/9)^16 = 0.152, and those
    # triples take a uniform non-positive. Never a positive either way.
    sampler = PopularitySampler(Y, generator())
    observed = frequencies(sampler.sample(many(2)))
    assert observed[[1, 2, 4, 5]].sum() == 0
    fallback = (8 / 9) ** 16
    expected_item0 = (1 - fallback) + fallback / 3
    assert observed[0] == pytest.approx(expected_item0, abs=0.0075)
    assert observed[3] == pytest.approx(fallback / 3, abs=0.0075)


def test_hard_negatives_are_among_the_top_scored_non_positives() -> None:
    sampler = HardSampler(Y, generator(), pool_size=2)
    scores = torch.tensor(
        [
            [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0],  # u0: best non-positives 0 (9) and 3 (6)
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],  # u1: 6 (7) and 5 (6)
            [5.0, 5.0, 5.0, 1.0, 5.0, 5.0, 5.0],  # u2: 0 and 6 tie at 5 (3 scores 1)
        ]
    )
    sampler.refresh(lambda users: scores[users].clone())
    expected = {0: [1 / 2, 0, 0, 1 / 2, 0, 0, 0], 1: [0, 0, 0, 0, 0, 1 / 2, 1 / 2], 2: [1 / 2, 0, 0, 0, 0, 0, 1 / 2]}
    for user, probabilities in expected.items():
        np.testing.assert_allclose(frequencies(sampler.sample(many(user))), probabilities, atol=0.0075)


def test_hard_pool_larger_than_the_non_positives() -> None:
    # u2 has 3 non-positives; a pool of 5 holds just those, drawn uniformly.
    sampler = HardSampler(Y, generator(), pool_size=5)
    sampler.refresh(lambda users: torch.zeros(users.numel(), 7))
    np.testing.assert_allclose(frequencies(sampler.sample(many(2))), [1 / 3, 0, 0, 1 / 3, 0, 0, 1 / 3], atol=0.0075)


def test_hard_sampler_is_uniform_before_the_first_refresh() -> None:
    sampler = HardSampler(Y, generator(), pool_size=1)
    np.testing.assert_allclose(frequencies(sampler.sample(many(0))), [1 / 4, 0, 0, 1 / 4, 1 / 4, 0, 1 / 4], atol=0.0075)


def test_hard_refresh_scores_a_chunk_of_users_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("debias_pipeline.models.sampling.FULL_RANKING_CHUNK_ELEMENTS", 14)  # 2 users of 7 items
    seen: list[list[int]] = []

    def score(users: torch.Tensor) -> torch.Tensor:
        seen.append(users.tolist())
        return torch.arange(7, dtype=torch.float32).repeat(users.numel(), 1)

    sampler = HardSampler(Y, generator(), pool_size=1)
    sampler.refresh(score)
    assert seen == [[0, 1], [2]]
    # The best non-positive by score is the highest id without a positive: 6 for everyone.
    assert sampler.sample(torch.tensor([0, 1, 2])).tolist() == [6, 6, 6]


@pytest.mark.parametrize("kind", ["uniform", "popularity", "hard"])
def test_same_seed_same_negatives(kind: str) -> None:
    users = torch.tensor([0, 1, 2] * 100)
    first = build_negative_sampler(kind, Y, generator(5)).sample(users)
    again = build_negative_sampler(kind, Y, generator(5)).sample(users)
    other = build_negative_sampler(kind, Y, generator(6)).sample(users)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_user_with_every_item_has_no_negative() -> None:
    with pytest.raises(ValueError, match="user 1 .* every one of the 3 items"):
        UniformSampler(sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 1]], dtype=np.float32)), generator())


def test_an_empty_train_matrix_is_refused() -> None:
    with pytest.raises(ValueError, match="no positive"):
        UniformSampler(sp.csr_matrix((3, 4), dtype=np.float32), generator())


def test_unknown_sampler_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="hard, popularity, uniform"):
        build_negative_sampler("random", Y, generator())


def test_sampler_leaves_its_input_alone() -> None:
    train = sp.csr_matrix(Y, copy=True)
    train.data[:] = 2.0  # non-binary positives, still positives
    before = train.copy()
    negatives = UniformSampler(train, generator()).sample(many(0)[:100])
    assert set(negatives.tolist()) <= {0, 3, 4, 6}
    assert (train != before).nnz == 0
