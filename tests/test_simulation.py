"""The simulator: calibrated statistics, popularity skew, reproducibility, config checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from debias_pipeline.simulation import SyntheticConfig, generate_synthetic

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def default_runs() -> dict[int, object]:
    # Coat-sized defaults (300 x 300), ~0.3 s each
    return {seed: generate_synthetic(SyntheticConfig(), seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def unskewed_runs() -> dict[int, object]:
    return {seed: generate_synthetic(SyntheticConfig(popularity_skew=0.0), seed) for seed in SEEDS}


def _split(data):
    ratings = data.ratings
    return ratings[ratings["source"] == "biased"], ratings[ratings["source"] == "unbiased"]


@pytest.mark.parametrize("seed", SEEDS)
def test_biased_ratings_per_user_near_target(default_runs, seed):
    biased, _ = _split(default_runs[seed])
    # mean over all 300 users (users with no biased rating count as 0): target 24 ± 15%
    per_user = len(biased) / 300
    assert 24 * 0.85 <= per_user <= 24 * 1.15


def test_biased_ratings_per_user_follows_parameter():
    config = SyntheticConfig(n_users=200, n_items=150, train_ratings_per_user=10.0)
    biased, _ = _split(generate_synthetic(config, seed=0))
    assert 10 * 0.85 <= len(biased) / 200 <= 10 * 1.15


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_true_preference_is_calibrated(default_runs, seed):
    # the offset is found by bisection to mean(σ(logits + c)) = 0.3
    assert default_runs[seed].true_preference.mean() == pytest.approx(0.3, abs=1e-3)


def test_mean_true_preference_follows_parameter():
    data = generate_synthetic(SyntheticConfig(n_users=50, n_items=40, rank=4, preference_rate=0.6), seed=0)
    assert data.true_preference.mean() == pytest.approx(0.6, abs=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_expected_biased_count_is_calibrated(default_runs, seed):
    # E[#biased per user] = mean_u Σ_i P(o) · P(rate | shown) with
    # P(rate | shown) = 0.9 p + 0.3 (1 - p); the calibration makes it exactly 24.
    data = default_runs[seed]
    rate = 0.9 * data.true_preference + 0.3 * (1 - data.true_preference)
    expected = (data.true_exposure * rate).sum(axis=1).mean()
    assert expected == pytest.approx(24.0, rel=1e-3)


def _top_exposed_share(data, fraction: float = 0.1) -> tuple[float, float]:
    """Share of biased and of unbiased ratings that fall on the most exposed items."""
    n_items = data.true_exposure.shape[1]
    top = np.argsort(-data.true_exposure.mean(axis=0))[: int(fraction * n_items)]
    biased, unbiased = _split(data)
    return biased["item"].isin(top).mean(), unbiased["item"].isin(top).mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_popularity_skew_concentrates_biased_ratings_on_head(default_runs, seed):
    biased_share, unbiased_share = _top_exposed_share(default_runs[seed])
    # unbiased items are drawn at random: ~10% of them land on 10% of the items;
    # the biased set piles onto the head (about 35% at skew 1)
    assert unbiased_share == pytest.approx(0.1, abs=0.03)
    assert biased_share > 2.5 * unbiased_share


@pytest.mark.parametrize("seed", SEEDS)
def test_no_skew_exposure_is_flat_across_items(unskewed_runs, seed):
    exposure = unskewed_runs[seed].true_exposure
    # popularity_skew = 0: exposure logit = user activity + offset, the same for every item
    np.testing.assert_allclose(exposure, np.repeat(exposure[:, :1], exposure.shape[1], axis=1), rtol=1e-12)
    # but it still varies across users (a_u ~ N(0, 0.5²))
    assert exposure[:, 0].std() > 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_no_skew_has_no_head_effect(unskewed_runs, default_runs, seed):
    skewed, _ = _top_exposed_share(default_runs[seed])
    flat, _ = _top_exposed_share(unskewed_runs[seed])
    assert flat < 0.2 < skewed


@pytest.mark.parametrize("skew", [1.0, 0.5])
def test_exposure_logits_follow_zipf_popularity(skew):
    # logit P(o_ui) = c_o + skew · log(1 / rank_i) + a_u: within a user, the sorted logits
    # minus the top one are -skew · log(rank) = -skew · [log 1, log 2, ..., log n_items]
    config = SyntheticConfig(n_users=30, n_items=40, rank=4, popularity_skew=skew, train_ratings_per_user=4.0)
    data = generate_synthetic(config, seed=5)
    logits = np.log(data.true_exposure / (1 - data.true_exposure))
    descending = -np.sort(-logits, axis=1)
    expected = -skew * np.log(np.arange(1, 41))
    np.testing.assert_allclose(descending - descending[:, :1], np.tile(expected, (30, 1)), atol=1e-8)
    # the item order is the same for every user
    assert (np.argsort(-logits, axis=1) == np.argsort(-logits[0])).all()


def test_table_shape_and_values(default_runs):
    data = default_runs[0]
    assert data.true_preference.shape == (300, 300)
    assert data.true_exposure.shape == (300, 300)
    for truth in (data.true_preference, data.true_exposure):
        assert ((truth > 0) & (truth < 1)).all()
    ratings = data.ratings
    assert list(ratings.columns) == ["user", "item", "rating", "source"]
    assert set(ratings["source"]) == {"biased", "unbiased"}
    assert ratings["rating"].between(1, 5).all()
    assert ratings["user"].between(0, 299).all() and ratings["item"].between(0, 299).all()
    biased, unbiased = _split(data)
    assert not biased.duplicated(["user", "item"]).any()
    assert not unbiased.duplicated(["user", "item"]).any()


def test_unbiased_set_shows_test_items_per_user_to_everyone(default_runs):
    _, unbiased = _split(default_runs[0])
    per_user = unbiased.groupby("user")["item"].nunique()
    assert per_user.index.tolist() == list(range(300))
    assert (per_user == 16).all()


def test_unbiased_positive_rate_near_preference_rate(default_runs):
    # unbiased items are random, so P(rating >= 4) = mean true preference = 0.3;
    # 3 x 4800 rows: standard error ≈ sqrt(0.21 / 14400) = 0.004
    shares = [(_split(default_runs[s])[1]["rating"] >= 4).mean() for s in SEEDS]
    assert np.mean(shares) == pytest.approx(0.3, abs=0.03)


def test_same_seed_same_data_different_seed_different_data(default_runs):
    again = generate_synthetic(SyntheticConfig(), seed=0)
    pd.testing.assert_frame_equal(again.ratings, default_runs[0].ratings)
    np.testing.assert_array_equal(again.true_preference, default_runs[0].true_preference)
    np.testing.assert_array_equal(again.true_exposure, default_runs[0].true_exposure)
    assert not np.array_equal(default_runs[1].true_preference, default_runs[0].true_preference)


def test_unreachable_rating_target_is_not_silently_missed():
    # 24 biased ratings per user out of 40 items needs mean_i P(o)·P(rate | shown) = 0.6,
    # but P(rate | shown) = 0.9 p + 0.3 (1 - p) averages 0.3·0.9 + 0.7·0.3 = 0.48 < 0.6:
    # even P(o) = 1 everywhere gives at most 0.48 · 40 = 19.2, so the config is refused.
    config = SyntheticConfig(n_users=30, n_items=40, rank=4, train_ratings_per_user=24.0)
    with pytest.raises(ValueError, match=r"synthetic\.train_ratings_per_user.*cannot be reached"):
        generate_synthetic(config, seed=0)


VALID = SyntheticConfig()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_users": 1}, "n_users"),
        ({"n_items": 1}, "n_items"),
        ({"rank": 0}, "rank"),
        ({"n_users": 5, "n_items": 10, "rank": 6, "train_ratings_per_user": 2.0, "test_items_per_user": 2}, "rank"),
        ({"preference_rate": 0.0}, "preference_rate"),
        ({"preference_rate": 1.0}, "preference_rate"),
        ({"popularity_skew": -0.5}, "popularity_skew"),
        ({"train_ratings_per_user": 0.0}, "train_ratings_per_user"),
        ({"train_ratings_per_user": 300.0}, "train_ratings_per_user"),  # not < n_items
        ({"test_items_per_user": 0}, "test_items_per_user"),
        ({"test_items_per_user": 301}, "test_items_per_user"),
        ({"rate_if_liked": 0.0}, "rate_if_liked"),
        ({"rate_if_liked": 1.5}, "rate_if_liked"),
        ({"rate_if_disliked": -0.1}, "rate_if_disliked"),
    ],
)
def test_invalid_config_raises_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(VALID, **changes)


def test_boundary_values_are_valid():
    # rate probabilities may be exactly 1; skew exactly 0; test_items_per_user = n_items
    SyntheticConfig(rate_if_liked=1.0, rate_if_disliked=1.0, popularity_skew=0.0, test_items_per_user=300)
