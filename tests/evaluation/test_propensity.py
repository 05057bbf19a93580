"""Propensity estimators against values computed by hand and against known truths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.evaluation import propensity as prop
from debias_pipeline.evaluation.truth import expected_auc, spearman
from debias_pipeline.models.relmf import item_propensity

# ---- clipping, weights, pair look-up ---------------------------------------------------------


def test_clip_raises_small_propensities_to_the_floor() -> None:
    clipped = prop.clip_propensities(np.array([0.0, 0.0005, 0.5, 1.0]), clip=1e-3)
    np.testing.assert_array_equal(clipped, [1e-3, 1e-3, 0.5, 1.0])
    assert prop.DEFAULT_CLIP == 1e-3


@pytest.mark.parametrize("values", [[0.5, -0.1], [0.5, 1.2], [0.5, np.nan]])
def test_out_of_range_propensities_are_refused_by_name(values: list[float]) -> None:
    with pytest.raises(ValueError, match="propensities"):
        prop.clip_propensities(np.array(values))


def test_clip_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="clip"):
        prop.clip_propensities(np.array([0.5]), clip=1.5)


def test_zero_propensity_without_floor_has_no_weight() -> None:
    with pytest.raises(ValueError, match="clip"):
        prop.inverse_propensity_weights(np.array([0.5, 0.0]), clip=0.0)


def test_self_normalized_weights_by_hand() -> None:
    # 1/p = [2, 4, 10], sum 16; scaled to sum 3: [2, 4, 10] * 3/16
    np.testing.assert_allclose(prop.self_normalized_weights(np.array([0.5, 0.25, 0.1])), [0.375, 0.75, 1.875])
    # to sum 6 (the pairs the log was drawn from): twice as large
    np.testing.assert_allclose(prop.self_normalized_weights(np.array([0.5, 0.25, 0.1]), total=6), [0.75, 1.5, 3.75])


def test_pair_propensities_read_every_form() -> None:
    users, items = np.array([0, 1, 1]), np.array([2, 0, 1])
    theta = np.array([0.1, 0.2, 0.3])  # per item
    matrix = np.array([[0.5, 0.6, 0.7], [0.8, 0.9, 0.4]])
    np.testing.assert_allclose(prop.pair_propensities(theta, users, items), [0.3, 0.1, 0.2])
    np.testing.assert_allclose(prop.pair_propensities(matrix, users, items), [0.7, 0.8, 0.9])
    sparse = sp.csr_matrix(np.array([[0, 0, 0.7], [0.8, 0, 0]]))  # (1, 1) missing: read as 0, clipped
    np.testing.assert_allclose(prop.pair_propensities(sparse, users, items, clip=0.05), [0.7, 0.8, 0.05])
    np.testing.assert_allclose(prop.pair_propensities(lambda u, i: 0.1 * (u + i + 1), users, items), [0.3, 0.2, 0.3])
    with pytest.raises(ValueError, match="users and items"):
        prop.pair_propensities(theta, users, items[:2])
    with pytest.raises(ValueError, match="1-d"):
        prop.pair_propensities(np.ones((2, 2, 2)), users, items)


# ---- popularity -------------------------------------------------------------------------------


def _clicks_with_popularity(popularity: np.ndarray, n_users: int) -> sp.csr_matrix:
    """User u clicks item i iff u < pop_i: column i holds exactly pop_i clicks."""
    return sp.csr_matrix(np.arange(n_users)[:, None] < popularity[None, :], dtype=np.float64)


def test_relmf_popularity_by_hand_and_as_the_model_computes_it() -> None:
    clicks = _clicks_with_popularity(np.array([4, 1, 0, 2]), n_users=5)
    fit = prop.popularity(clicks, eta=prop.RELMF_ETA)
    # x = pop / max = [1, 1/4, 0, 1/2]; θ = x^0.5 = [1, 0.5, 0, 0.7071]; the never-clicked item gets the floor
    np.testing.assert_allclose(fit.item_propensity, [1.0, 0.5, 1e-3, math.sqrt(0.5)])
    assert (fit.eta, fit.scale) == (0.5, 1.0)
    relmf = item_propensity(torch.tensor(clicks.toarray()), clip=1e-3).numpy()
    np.testing.assert_allclose(fit.item_propensity, relmf, rtol=1e-6)
    np.testing.assert_allclose(fit(np.array([3, 0]), np.array([1, 3])), [0.5, math.sqrt(0.5)])


def test_popularity_floor_is_a_parameter() -> None:
    clicks = _clicks_with_popularity(np.array([100, 1]), n_users=100)
    # x = [1, 0.01], θ = [1, 0.1]; a floor of 0.2 binds on the second item
    np.testing.assert_allclose(prop.popularity(clicks, eta=0.5, clip=0.2).item_propensity, [1.0, 0.2])


def test_eta_is_not_identified_from_clicks_alone() -> None:
    with pytest.raises(ValueError, match="eta"):
        prop.popularity(_clicks_with_popularity(np.array([3, 1]), 4))


def test_power_law_fit_of_the_clicks_themselves_is_eta_one() -> None:
    # exposures = popularity: the saturated fit q_i = pop_i / n_users = (4/10) x_i, i.e. c = 0.4, η = 1
    scale, eta = prop.fit_power_law(np.array([4.0, 2.0, 1.0, 3.0]), np.array([4.0, 2.0, 1.0, 3.0]), n_users=10)
    assert eta == pytest.approx(1.0, abs=1e-6)
    assert scale == pytest.approx(0.4, abs=1e-6)


def test_power_law_scale_for_a_fixed_eta_by_hand() -> None:
    # equal popularity: x_i = 1 for both items, q = c, and the ML c is the pooled rate (2 + 6) / (10 + 10)
    scale, eta = prop.fit_power_law(np.array([3.0, 3.0]), np.array([2.0, 6.0]), n_users=10, eta=0.5)
    assert (scale, eta) == (pytest.approx(0.4, abs=1e-9), 0.5)


def test_popularity_fit_recovers_a_known_power_law() -> None:
    rng = np.random.default_rng(7)
    n_users, true_scale, true_eta = 4000, 0.6, 0.7
    pop = rng.integers(1, 400, size=200)
    q = true_scale * (pop / pop.max()) ** true_eta  # (n_items,)
    exposed = sp.csr_matrix(rng.random((n_users, pop.size)) < q[None, :], dtype=np.float64)
    fit = prop.popularity(_clicks_with_popularity(pop, n_users), exposed=exposed)
    assert fit.eta == pytest.approx(true_eta, abs=0.03)
    assert fit.scale == pytest.approx(true_scale, abs=0.03)
    np.testing.assert_allclose(fit.item_propensity, np.maximum(fit.scale * (pop / pop.max()) ** fit.eta, 1e-3))


def test_popularity_checks_the_exposure_shape() -> None:
    with pytest.raises(ValueError, match="exposed"):
        prop.popularity(_clicks_with_popularity(np.array([3, 1]), 4), exposed=sp.csr_matrix((4, 3)))


# ---- naive Bayes -------------------------------------------------------------------------------


def test_naive_bayes_on_ratings_by_hand() -> None:
    # 5 observed ratings among 50 pairs: P(O=1) = 0.1
    # P(Y|O=1): 5 -> 3/5, 4 -> 1/5, 1 -> 1/5;  P(Y) from the MCAR sample [5, 4, 1, 1]: 1/4, 1/4, 2/4
    # P(O=1|Y=5) = 0.6 * 0.1 / 0.25 = 0.24;  Y=4: 0.2 * 0.1 / 0.25 = 0.08;  Y=1: 0.2 * 0.1 / 0.5 = 0.04
    fit = prop.naive_bayes(np.array([5, 5, 5, 4, 1]), np.array([5, 4, 1, 1]), n_pairs=50)
    np.testing.assert_array_equal(fit.values, [1, 4, 5])
    np.testing.assert_allclose(fit.propensity, [0.04, 0.08, 0.24])
    assert fit.p_observed == pytest.approx(0.1)
    np.testing.assert_allclose(fit(np.array([5, 1, 4, 5])), [0.24, 0.04, 0.08, 0.24])


def test_naive_bayes_on_binary_labels_by_hand() -> None:
    # 4 observed of 20 pairs: P(O=1) = 0.2; P(Y=1|O=1) = 3/4; MCAR [1, 0, 0, 0]: P(Y=1) = 1/4
    # P(O=1|Y=1) = 0.75 * 0.2 / 0.25 = 0.6;  P(O=1|Y=0) = 0.25 * 0.2 / 0.75 = 1/15
    fit = prop.naive_bayes(np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0]), n_pairs=20)
    np.testing.assert_allclose(fit.propensity, [1 / 15, 0.6])
    # Bayes' rule is consistent: Σ_y P(O=1|y) P(y) = P(O=1)
    assert 0.6 * 0.25 + (1 / 15) * 0.75 == pytest.approx(fit.p_observed)


def test_naive_bayes_smoothing_by_hand() -> None:
    # rating 3 never occurs in the MCAR sample: P(Y=3) = 0 without smoothing
    with pytest.raises(ValueError, match="smoothing"):
        prop.naive_bayes(np.array([5, 5, 3]), np.array([5, 1]), n_pairs=30)
    # s = 1 over values [1, 3, 5]: P(Y|O) = [0+1, 1+1, 2+1] / 6, P(Y) = [1+1, 0+1, 1+1] / 5, P(O=1) = 3/30
    fit = prop.naive_bayes(np.array([5, 5, 3]), np.array([5, 1]), n_pairs=30, smoothing=1.0)
    expected = np.array([1 / 6, 2 / 6, 3 / 6]) * 0.1 / np.array([2 / 5, 1 / 5, 2 / 5])
    np.testing.assert_allclose(fit.propensity, expected)  # [0.0417, 0.1667, 0.125]


def test_naive_bayes_caps_at_one_and_refuses_unseen_values() -> None:
    # P(O=1) = 1, P(Y=1|O=1) = 0.9, P(Y=1) = 0.25: the ratio 3.6 is capped at 1
    fit = prop.naive_bayes(np.array([1] * 9 + [0]), np.array([1, 0, 0, 0]), n_pairs=10)
    assert fit.propensity[1] == 1.0
    with pytest.raises(ValueError, match="not seen"):
        fit(np.array([2]))
    with pytest.raises(ValueError, match="n_pairs"):
        prop.naive_bayes(np.array([1, 0, 1]), np.array([1, 0]), n_pairs=2)


# ---- logistic ----------------------------------------------------------------------------------


def _synthetic_exposure(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """True P(o=1) = σ(a_u + b_i) on 300 x 150 pairs and one draw of o."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.0, 1.0, 300)[:, None] + rng.normal(0.0, 1.5, 150)[None, :]
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    return probabilities, rng.random(probabilities.shape) < probabilities


def test_logistic_recovers_the_ordering_and_level_of_true_propensities() -> None:
    probabilities, observed = _synthetic_exposure()
    fit = prop.logistic(sp.csr_matrix(observed), seed=0)
    users, items = np.divmod(np.arange(observed.size), observed.shape[1])
    estimated = fit(users, items)
    truth = probabilities.ravel()
    assert spearman(estimated, truth) > 0.95
    assert expected_auc(estimated, truth) > expected_auc(truth, truth) - 0.01
    # the weighted negative sample keeps the level: no log(n_unobserved / m) shift of the intercept
    assert estimated.mean() == pytest.approx(truth.mean(), abs=0.01)
    np.testing.assert_allclose(fit.logits(users[:5], items[:5]), fit.intercept + fit.user_logit[0] + fit.item_logit[:5])


def test_logistic_on_features_alone_and_seeded() -> None:
    probabilities, observed = _synthetic_exposure()
    # without id features: the item popularity and user activity columns still order the pairs
    by_counts = prop.logistic(observed, id_features=False)
    users, items = np.divmod(np.arange(observed.size), observed.shape[1])
    assert spearman(by_counts(users, items), probabilities.ravel()) > 0.9
    # a given item feature: the true item logit, with ids off
    true_item = np.log(probabilities[0] / (1 - probabilities[0]))[:, None]
    with_feature = prop.logistic(observed, item_features=true_item, id_features=False, seed=1)
    assert spearman(with_feature.item_logit, true_item.ravel()) > 0.95
    again = prop.logistic(observed, item_features=true_item, id_features=False, seed=1)
    np.testing.assert_array_equal(with_feature.item_logit, again.item_logit)
    with pytest.raises(ValueError, match="item_features"):
        prop.logistic(observed, item_features=np.ones((3, 1)))


# ---- the dual model's exposure tower ----------------------------------------------------------


def test_exposure_tower_reads_probabilities_logits_and_callables() -> None:
    exposure = np.array([[0.5, 0.0001], [0.9, 0.2]])
    users, items = np.array([0, 0, 1]), np.array([0, 1, 0])
    np.testing.assert_allclose(prop.exposure_tower(exposure)(users, items), [0.5, 1e-3, 0.9])
    logits = np.log(exposure / (1 - exposure))
    np.testing.assert_allclose(prop.exposure_tower(logits, logits=True, clip=0.0)(users, items), [0.5, 0.0001, 0.9])
    from_pairs = prop.exposure_tower(lambda u, i: exposure[u, i], clip=0.01)
    np.testing.assert_allclose(from_pairs(users, items), [0.5, 0.01, 0.9])
    with pytest.raises(ValueError, match="exposure"):
        prop.exposure_tower(np.array([[1.5, 0.2]]))
    with pytest.raises(ValueError, match="n_users, n_items"):
        prop.exposure_tower(np.array([0.5, 0.2]))


# ---- scoring against the truth -------------------------------------------------------------------


def test_score_propensities_by_hand() -> None:
    # estimates 0.9 / 0.1 of certain events 1 / 0: AUC 1, log-loss −(ln 0.9 + ln 0.9)/2 = 0.10536
    scores = prop.score_propensities(np.array([0.9, 0.1]), np.array([1.0, 0.0]), observed=np.array([1, 0]))
    assert scores["expected_auc"] == 1.0 and scores["auc"] == 1.0
    assert scores["expected_log_loss"] == pytest.approx(-math.log(0.9))
    assert scores["log_loss"] == pytest.approx(-math.log(0.9))
    # true 0.5 / 0.5, estimated 0.2 / 0.8: −(0.5 ln 0.2 + 0.5 ln 0.8) = 0.91629; the floor is ln 2
    scores = prop.score_propensities(np.array([0.2, 0.8]), np.array([0.5, 0.5]))
    assert scores["expected_log_loss"] == pytest.approx(-(0.5 * math.log(0.2) + 0.5 * math.log(0.8)))
    assert scores["oracle_log_loss"] == pytest.approx(math.log(2))
    assert scores["mean_estimated"] == scores["mean_true"] == 0.5
    assert "auc" not in scores


def test_score_of_the_truth_is_the_oracle() -> None:
    probabilities, observed = _synthetic_exposure()
    truth = probabilities.ravel()
    scores = prop.score_propensities(truth, truth, observed.ravel())
    assert scores["expected_auc"] == scores["oracle_auc"]
    assert scores["expected_log_loss"] == scores["oracle_log_loss"]
    assert scores["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one length"):
        prop.score_propensities(truth[:3], truth[:4])
