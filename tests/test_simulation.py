"""The simulator: presets against their targets, calibration, the exposure model, the
factorized truth, chunked generation, reproducibility and config checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from debias_pipeline.config.params import build_config
from debias_pipeline.data import simulation
from debias_pipeline.data.simulation import (
    PRESET_TARGETS,
    PRESETS,
    GroundTruth,
    SyntheticConfig,
    generate_synthetic,
    ratings_statistics,
)
from debias_pipeline.evaluation.popularity import gini

SEEDS = (0, 1, 2)


def statistics(config: SyntheticConfig, seed: int) -> dict[str, float]:
    return ratings_statistics(generate_synthetic(config, seed).ratings, config.n_users, config.n_items)


def split(data: simulation.SyntheticData) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = data.ratings
    return ratings[ratings["source"] == "biased"], ratings[ratings["source"] == "unbiased"]


@pytest.fixture(scope="module")
def default_runs() -> dict[int, simulation.SyntheticData]:
    # the default preset, 300 x 300: ~0.1 s each
    return {seed: generate_synthetic(SyntheticConfig(), seed) for seed in SEEDS}


# ---- presets against their targets -------------------------------------------------------------


@pytest.fixture(scope="module")
def coat_like_statistics() -> pd.DataFrame:
    config = SyntheticConfig(preset="coat_like")
    return pd.DataFrame([statistics(config, seed) for seed in range(5)])


# Tolerances: counts within 3% of the target (biased ratings per world vary by ~1.5%:
# Bernoulli exposures), rates within 0.02 (standard error ~0.005 at Coat's size), the
# popularity Gini within 0.03 and the top-10% share within 0.03 (seed spread ~0.005).
COAT_TOLERANCES = {
    "users": 0.0,
    "items": 0.0,
    "biased_ratings": 0.03 * 6960,
    "unbiased_ratings": 0.0,
    "unbiased_users": 0.0,
    "biased_positive_rate": 0.02,
    "unbiased_positive_rate": 0.02,
    "popularity_gini": 0.03,
    "top10_share": 0.03,
}


@pytest.mark.parametrize("statistic", sorted(COAT_TOLERANCES))
def test_coat_like_matches_coat(coat_like_statistics, statistic):
    # Targets measured on Coat's train.ascii / test.ascii (PROTOCOL.md §2); mean over seeds 0..4.
    assert set(COAT_TOLERANCES) == set(PRESET_TARGETS["coat_like"])
    target = PRESET_TARGETS["coat_like"][statistic]
    assert coat_like_statistics[statistic].mean() == pytest.approx(target, abs=COAT_TOLERANCES[statistic])


@pytest.fixture(scope="module")
def yahoo_like_statistics() -> dict[str, float]:
    # 15,400 x 1,000: one draw, ~2 s (sampled calibration, chunked exposures)
    return statistics(SyntheticConfig(preset="yahoo_like"), seed=0)


YAHOO_TOLERANCES = {
    "users": 0.0,
    "items": 0.0,
    "biased_ratings": 0.02 * 311_704,
    "unbiased_ratings": 0.0,
    "unbiased_users": 0.0,
    "biased_positive_rate": 0.02,
    "unbiased_positive_rate": 0.01,
    "popularity_gini": 0.03,
}


@pytest.mark.parametrize("statistic", sorted(YAHOO_TOLERANCES))
def test_yahoo_like_matches_yahoo(yahoo_like_statistics, statistic):
    # Sizes from PROTOCOL.md §2; positive rates and Gini are the stated assumptions.
    assert set(YAHOO_TOLERANCES) == set(PRESET_TARGETS["yahoo_like"])
    target = PRESET_TARGETS["yahoo_like"][statistic]
    assert yahoo_like_statistics[statistic] == pytest.approx(target, abs=YAHOO_TOLERANCES[statistic])


def test_gowalla_preset_has_gowalla_size():
    config = SyntheticConfig(preset="gowalla")
    targets = PRESET_TARGETS["gowalla"]
    assert (config.n_users, config.n_items) == (targets["users"], targets["items"])
    assert config.n_users * config.train_ratings_per_user == pytest.approx(targets["biased_ratings"])


def test_gowalla_at_a_tenth_of_its_size_hits_its_ratings_per_user():
    # The full preset is timed by benchmarks/bench_simulator.py; a tenth of each side
    # (12M pairs) takes the same path: sampled calibration, several exposure chunks.
    full = SyntheticConfig(preset="gowalla")
    config = full.replace(n_users=full.n_users // 10, n_items=full.n_items // 10)
    assert config.n_users * config.n_items > simulation.CALIBRATION_PAIRS
    assert config.n_users * config.n_items > 2 * simulation.CHUNK_PAIRS
    result = statistics(config, seed=0)
    assert result["biased_ratings"] / config.n_users == pytest.approx(full.train_ratings_per_user, rel=0.03)
    assert result["unbiased_ratings"] == config.n_users * full.test_items_per_user


# ---- the default preset (today's built-in dataset) ----------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_default_biased_ratings_per_user_near_target(default_runs, seed):
    biased, _ = split(default_runs[seed])
    assert 24 * 0.85 <= len(biased) / 300 <= 24 * 1.15


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_true_preference_is_calibrated(default_runs, seed):
    # few pairs (90,000 <= CALIBRATION_PAIRS): the bisection runs on all of them
    assert default_runs[seed].truth["preference"].mean() == pytest.approx(0.3, abs=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_expected_biased_count_is_calibrated(default_runs, seed):
    # E[#biased per user] = mean_u Σ_i P(o) · P(rate | shown), P(rate | shown) = 0.9 p + 0.3 (1 - p)
    truth = default_runs[seed].truth
    rate = 0.9 * truth["preference"] + 0.3 * (1 - truth["preference"])
    assert (truth["exposure"] * rate).sum(axis=1).mean() == pytest.approx(24.0, rel=1e-3)


def test_parameters_override_the_preset():
    data = generate_synthetic(SyntheticConfig(n_users=50, n_items=40, rank=4, preference_rate=0.6), seed=0)
    assert data.truth["preference"].shape == (50, 40)
    assert data.truth["preference"].mean() == pytest.approx(0.6, abs=1e-3)
    biased, _ = split(generate_synthetic(SyntheticConfig(n_users=200, n_items=150, train_ratings_per_user=10.0), 0))
    assert 10 * 0.85 <= len(biased) / 200 <= 10 * 1.15


def test_unbiased_set_shows_test_items_per_user_to_everyone(default_runs):
    _, unbiased = split(default_runs[0])
    per_user = unbiased.groupby("user")["item"].nunique()
    assert per_user.index.tolist() == list(range(300))
    assert (per_user == 16).all()


def test_unbiased_set_of_a_subset_of_users():
    config = SyntheticConfig(
        n_users=60, n_items=40, rank=2, train_ratings_per_user=5.0, test_users=25, test_items_per_user=7
    )
    _, unbiased = split(generate_synthetic(config, seed=3))
    per_user = unbiased.groupby("user")["item"].nunique()
    assert len(per_user) == 25 and (per_user == 7).all()
    assert not unbiased.duplicated(["user", "item"]).any()


def test_unbiased_positive_rate_near_preference_rate(default_runs):
    # random items: P(rating >= 4) = mean true preference = 0.3; 3 x 4800 rows, s.e. ≈ 0.004
    shares = [(split(default_runs[s])[1]["rating"] >= 4).mean() for s in SEEDS]
    assert np.mean(shares) == pytest.approx(0.3, abs=0.03)


def test_table_shape_and_values(default_runs):
    data = default_runs[0]
    for kind in ("preference", "exposure"):
        assert data.truth[kind].shape == (300, 300)
        assert ((data.truth[kind] > 0) & (data.truth[kind] < 1)).all()
    ratings = data.ratings
    assert list(ratings.columns) == ["user", "item", "rating", "source"]
    assert set(ratings["source"]) == {"biased", "unbiased"}
    assert ratings["rating"].between(1, 5).all()
    assert ratings["user"].between(0, 299).all() and ratings["item"].between(0, 299).all()
    biased, unbiased = split(data)
    assert not biased.duplicated(["user", "item"]).any()
    assert not unbiased.duplicated(["user", "item"]).any()


# ---- the exposure model ------------------------------------------------------------------------


def test_zero_bias_strength_shows_items_at_random():
    config = SyntheticConfig(preset="coat_like", bias_strength=0.0)
    data = generate_synthetic(config, seed=0)
    exposure = data.truth["exposure"]
    np.testing.assert_allclose(exposure, exposure[0, 0], rtol=1e-12)  # one probability for every pair
    assert data.truth.rank("exposure") == 1
    # and no head effect: the biased counts spread like random draws
    assert ratings_statistics(data.ratings, 290, 300)["popularity_gini"] < 0.2


def test_bias_strength_scales_the_exposure_structure():
    # The same seed draws the same structure S; only the calibrated offset moves:
    # logit_β = c_β + β S, so centred logits scale with β.
    logits = {
        beta: generate_synthetic(SyntheticConfig(preset="coat_like", bias_strength=beta), 4).truth.logits("exposure")
        for beta in (0.5, 1.0, 2.0)
    }
    centred = {beta: value - value.mean() for beta, value in logits.items()}
    np.testing.assert_allclose(centred[2.0], 2 * centred[1.0], atol=1e-9)
    np.testing.assert_allclose(centred[0.5], 0.5 * centred[1.0], atol=1e-9)


def test_stronger_bias_concentrates_biased_ratings_on_the_head():
    ginis = [
        statistics(SyntheticConfig(preset="coat_like", bias_strength=beta), seed=0)["popularity_gini"]
        for beta in (0.0, 1.0, 2.0)
    ]
    assert ginis[0] < ginis[1] < ginis[2]


@pytest.mark.parametrize("skew", [1.0, 0.5])
def test_exposure_logits_follow_zipf_popularity(skew):
    # Without low-rank part or activity: logit P(o_ui) = c_o + skew · log(1 / rank_i), so
    # each user's sorted logits minus the top one are -skew · [log 1, ..., log n_items].
    config = SyntheticConfig(
        n_users=30, n_items=40, rank=4, popularity_skew=skew, activity_scale=0.0, train_ratings_per_user=4.0
    )
    logits = generate_synthetic(config, seed=5).truth.logits("exposure")
    descending = -np.sort(-logits, axis=1)
    expected = -skew * np.log(np.arange(1, 41))
    np.testing.assert_allclose(descending - descending[:, :1], np.tile(expected, (30, 1)), atol=1e-8)
    assert (np.argsort(-logits, axis=1) == np.argsort(-logits[0])).all()


@pytest.mark.parametrize(
    ("changes", "rank"),
    [
        ({"exposure_rank": 3, "activity_scale": 0.0}, 4),  # low rank + (offset, popularity)
        ({"exposure_rank": 3, "activity_scale": 0.5}, 5),  # + activity
        ({"exposure_rank": 0, "activity_scale": 0.5}, 2),  # today's default: activity and popularity
    ],
)
def test_true_exposure_rank(changes, rank):
    config = SyntheticConfig(preset="coat_like", **changes)
    truth = generate_synthetic(config, seed=0).truth
    assert truth.rank("exposure") == rank
    assert np.linalg.matrix_rank(truth.logits("exposure")) == rank
    assert truth.rank("preference") == config.rank + 1  # + the item-bias column


# ---- the factorized truth ------------------------------------------------------------------


@pytest.fixture(scope="module")
def coat_truth() -> GroundTruth:
    return generate_synthetic(SyntheticConfig(preset="coat_like"), seed=2).truth


@pytest.mark.parametrize("kind", ["preference", "exposure"])
def test_truth_views_agree(coat_truth, kind):
    dense = coat_truth[kind]
    users = np.array([0, 5, 5, 289])
    items = np.array([299, 0, 7, 150])
    np.testing.assert_allclose(coat_truth.pair_probabilities(kind, users, items), dense[users, items], rtol=1e-12)
    np.testing.assert_allclose(coat_truth.probabilities(kind, np.array([3, 1])), dense[[3, 1]], rtol=1e-12)
    singular = np.linalg.svd(coat_truth.logits(kind), compute_uv=False)
    values = coat_truth.singular_values(kind)
    np.testing.assert_allclose(values, singular[: values.size], rtol=1e-8, atol=1e-9 * values[0])


def test_user_chunks_cover_every_user_once(coat_truth):
    chunks = list(coat_truth.user_chunks(max_pairs=1000))  # 3 users (900 pairs) per chunk
    assert [len(c) for c in chunks[:2]] == [3, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(290))


def test_large_truth_is_not_materialized(coat_truth, monkeypatch):
    monkeypatch.setattr(simulation, "DENSE_LIMIT", 1000)
    with pytest.raises(ValueError, match="user_chunks"):
        coat_truth["preference"]
    with pytest.raises(KeyError):
        coat_truth["clicks"]


def test_generation_does_not_depend_on_the_chunking(monkeypatch):
    config = SyntheticConfig(
        preset="coat_like", n_users=50, n_items=40, rank=3, exposure_rank=2, train_ratings_per_user=6.0
    )
    whole = generate_synthetic(config, seed=7).ratings
    monkeypatch.setattr(simulation, "CHUNK_PAIRS", 3 * 40)  # 3 users per chunk, 17 chunks
    pd.testing.assert_frame_equal(generate_synthetic(config, seed=7).ratings, whole)


def test_same_seed_same_data_different_seed_different_data(default_runs):
    again = generate_synthetic(SyntheticConfig(), seed=0)
    pd.testing.assert_frame_equal(again.ratings, default_runs[0].ratings)
    for kind in ("preference", "exposure"):
        np.testing.assert_array_equal(again.truth[kind], default_runs[0].truth[kind])
    assert not np.array_equal(default_runs[1].truth["preference"], default_runs[0].truth["preference"])


def test_unreachable_rating_target_is_not_silently_missed():
    # 24 of 40 items needs mean_i P(o)·P(rate | shown) = 0.6, but P(rate | shown) averages
    # 0.3·0.9 + 0.7·0.3 = 0.48: even P(o) = 1 everywhere gives at most 19.2 per user.
    config = SyntheticConfig(n_users=30, n_items=40, rank=4, train_ratings_per_user=24.0)
    with pytest.raises(ValueError, match=r"synthetic\.train_ratings_per_user.*cannot be reached"):
        generate_synthetic(config, seed=0)


# ---- statistics by hand ------------------------------------------------------------------------


def test_ratings_statistics_by_hand():
    ratings = pd.DataFrame(
        {
            "user": [0, 0, 1, 1, 2, 0, 1],
            "item": [0, 1, 0, 2, 0, 3, 3],
            "rating": [5, 2, 4, 1, 3, 4, 2],
            "source": ["biased"] * 5 + ["unbiased"] * 2,
        }
    )
    result = ratings_statistics(ratings, n_users=3, n_items=10)
    assert result["biased_ratings"] == 5 and result["unbiased_ratings"] == 2 and result["unbiased_users"] == 2
    assert result["biased_positive_rate"] == pytest.approx(2 / 5)
    assert result["unbiased_positive_rate"] == pytest.approx(1 / 2)
    # item counts 3, 1, 1, 0 x 7: the top 10% (1 item) holds 3 of 5 ratings
    assert result["top10_share"] == pytest.approx(3 / 5)
    assert result["popularity_gini"] == pytest.approx(gini(np.array([3, 1, 1] + [0] * 7)))


# ---- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_resolves_and_is_valid(preset):
    config = SyntheticConfig(preset=preset)
    for name, value in PRESETS[preset].items():
        assert getattr(config, name) == value


def test_explicit_parameters_override_the_preset_from_a_parameter_block():
    config = build_config(SyntheticConfig, {"preset": "coat_like", "bias_strength": 0, "n_users": 100}, "synthetic")
    assert (config.n_users, config.bias_strength, config.n_items) == (100, 0.0, 300)
    assert config.rate_if_disliked == PRESETS["coat_like"]["rate_if_disliked"]


def test_unknown_preset_names_the_parameter():
    with pytest.raises(ValueError, match=r"synthetic\.preset.*coat_like"):
        build_config(SyntheticConfig, {"preset": "movielens"}, "synthetic")


VALID = SyntheticConfig()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_users": 1}, "n_users"),
        ({"n_items": 1}, "n_items"),
        ({"rank": 0}, "rank"),
        ({"n_users": 5, "n_items": 10, "rank": 6, "train_ratings_per_user": 2.0, "test_items_per_user": 2}, "rank"),
        ({"exposure_rank": -1}, "exposure_rank"),
        ({"exposure_rank": 301}, "exposure_rank"),
        ({"preference_rate": 0.0}, "preference_rate"),
        ({"preference_rate": 1.0}, "preference_rate"),
        ({"popularity_skew": -0.5}, "popularity_skew"),
        ({"bias_strength": -1.0}, "bias_strength"),
        ({"exposure_scale": -1.0}, "exposure_scale"),
        ({"activity_scale": -0.1}, "activity_scale"),
        ({"train_ratings_per_user": 0.0}, "train_ratings_per_user"),
        ({"train_ratings_per_user": 300.0}, "train_ratings_per_user"),  # not < n_items
        ({"test_users": 301}, "test_users"),
        ({"test_items_per_user": 0}, "test_items_per_user"),
        ({"test_items_per_user": 301}, "test_items_per_user"),
        ({"rate_if_liked": 0.0}, "rate_if_liked"),
        ({"rate_if_liked": 1.5}, "rate_if_liked"),
        ({"rate_if_disliked": -0.1}, "rate_if_disliked"),
    ],
)
def test_invalid_config_raises_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        VALID.replace(**changes)


def test_boundary_values_are_valid():
    SyntheticConfig(
        rate_if_liked=1.0, rate_if_disliked=1.0, popularity_skew=0.0, bias_strength=0.0, test_items_per_user=300
    )
