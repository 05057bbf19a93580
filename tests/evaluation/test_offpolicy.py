"""Off-policy ranking-metric estimators: hand-computed values, exact expectations over
every exposure outcome of small worlds, the bootstrap, and input checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp

from debias_pipeline.evaluation import offpolicy
from debias_pipeline.evaluation.offpolicy import estimate, ideal_dcg, kish_ess, true_value

D2, D3 = 1 / math.log2(3), 0.5  # the DCG discounts of ranks 2 and 3 (rank 1: 1)


# ---- helpers by hand ----------------------------------------------------------------------------


def test_ideal_dcg_by_hand_and_between_integers() -> None:
    # K = 3: IDCG(0) = 0, IDCG(1) = 1, IDCG(2) = 1 + 1/log2 3, IDCG(2.5) = IDCG(2) + 0.5 * 1/log2 4,
    # IDCG(10) = IDCG(3) = 1 + 1/log2 3 + 1/2
    np.testing.assert_allclose(
        ideal_dcg(np.array([0.0, 1.0, 2.0, 2.5, 10.0]), k=3), [0, 1, 1 + D2, 1 + D2 + 0.25, 1 + D2 + 0.5]
    )


def test_kish_ess_by_hand() -> None:
    # (1 + 1 + 2)^2 / (1 + 1 + 4) = 16 / 6
    assert kish_ess(np.array([1.0, 1.0, 2.0])) == pytest.approx(16 / 6)
    assert kish_ess(np.ones(7)) == 7.0 and kish_ess(np.zeros(0)) == 0.0


# ---- a tiny log, every estimator by hand --------------------------------------------------------
#
# 2 users, 5 items, K = 3. Rankings: user 0: 4, 2, 0, 1, 3; user 1: 1, 0, 3, 2, 4.
# Clicks: user 0 items 2 (rank 2) and 3 (rank 5, outside the top 3); user 1 item 1 (rank 1).
# Exposed: user 0 items {0, 2, 3}, user 1 items {1, 4}. Item propensities p = [.5, .25, .5, .2, .1].

TOP = np.array([[4, 2, 0, 1, 3], [1, 0, 3, 2, 4]])
CLICKS = sp.csr_matrix(np.array([[0, 0, 1, 1, 0], [0, 1, 0, 0, 0]]))
EXPOSED = sp.csr_matrix(np.array([[1, 0, 1, 1, 0], [0, 1, 0, 0, 1]]))
P = np.array([0.5, 0.25, 0.5, 0.2, 0.1])


def tiny(metric: str, estimator: str, **options: object) -> offpolicy.Estimate:
    options = {"exposed": EXPOSED, "n_boot": 0, **options}
    return estimate(TOP, CLICKS, P, 3, metric, estimator, **options)  # type: ignore[arg-type]


def test_naive_by_hand() -> None:
    # DCG: user 0 1/log2 3 (item 3 is outside the top 3), user 1 1
    assert tiny("dcg", "naive").value == pytest.approx((D2 + 1) / 2)
    # Recall: user 0 1 hit / min(3, 2 clicks), user 1 1 / 1
    assert tiny("recall", "naive").value == pytest.approx((0.5 + 1) / 2)
    # NDCG: user 0 (1/log2 3) / (1 + 1/log2 3), user 1 1
    assert tiny("ndcg", "naive").value == pytest.approx((D2 / (1 + D2) + 1) / 2)
    assert tiny("dcg", "naive").ess == 3.0


def test_ips_by_hand() -> None:
    # DCG: user 0 (1/log2 3)/0.5 = 1.26186, user 1 1/0.25 = 4
    assert tiny("dcg", "ips").value == pytest.approx((2 * D2 + 4) / 2)
    # Recall: user 0 N = 1/0.5 = 2, n = 1/0.5 + 1/0.2 = 7, 2 / min(3, 7) = 2/3;
    #         user 1 N = n = 4, 4 / min(3, 4) = 4/3, projected onto [0, 1]: 1
    assert tiny("recall", "ips").value == pytest.approx((2 / 3 + 1) / 2)
    # NDCG: user 0 1.26186 / IDCG(7) = 2 D2 / (1 + D2 + 1/2); user 1 4 / IDCG(4) > 1, projected: 1
    assert tiny("ndcg", "ips").value == pytest.approx((2 * D2 / (1.5 + D2) + 1) / 2)
    # weights 1/p of the clicks: 2, 5, 4: (11)^2 / (4 + 25 + 16)
    assert tiny("dcg", "ips").ess == pytest.approx(121 / 45)


def test_snips_by_hand() -> None:
    # λ = candidates / Σ_exposed 1/p = (5 + 5) / ((2 + 2 + 5) + (4 + 10)) = 10/23
    lam = 10 / 23
    assert tiny("dcg", "snips").value == pytest.approx(lam * (2 * D2 + 4) / 2)
    # Recall: user 0 λ·2 / min(3, λ·7) = 2λ/3 (λ·7 = 3.04); user 1 λ·4 / min(3, λ·4) = 1
    assert tiny("recall", "snips").value == pytest.approx((2 * lam / 3 + 1) / 2)


def test_dr_by_hand() -> None:
    # r̂ = 0.5 everywhere. DCG: Σ_top3 r̂ g = 0.5 (1 + D2 + 1/2) for each user, plus Σ_exposed (y − r̂) g / p:
    #   user 0: item 0 (rank 3, y 0) −0.5·2·0.5, item 2 (rank 2, y 1) +0.5·2·D2, item 3 (rank 5) 0
    #   user 1: item 1 (rank 1, y 1) +0.5·4·1, item 4 (rank 5) 0
    imputed = np.full((2, 5), 0.5)
    top3 = 0.5 * (1.5 + D2)
    user0, user1 = top3 - 0.5 + D2, top3 + 2.0
    assert tiny("dcg", "dr", imputed=imputed).value == pytest.approx((user0 + user1) / 2)
    # Recall (g = 1 in the top 3): user 0 N = 1.5 − 1 + 1 = 1.5, n = 2.5 − 1 + 1 + 0.5·5 = 5: 1.5 / 3 = 0.5
    #   user 1 n = 2.5 + 0.5·4 − 0.5·10 = −0.5 <= 0: no defined value, skipped
    result = tiny("recall", "dr", imputed=imputed)
    assert result.value == pytest.approx(0.5)
    assert (result.n_users, result.n_skipped) == (1, 1)
    np.testing.assert_array_equal(np.isnan(result.per_user), [False, True])
    # weights 1/p of all exposed pairs: 2, 2, 5, 4, 10
    assert result.ess == pytest.approx(23**2 / (4 + 4 + 25 + 16 + 100))


def test_true_value_is_the_metric_on_full_relevance() -> None:
    relevance = sp.csr_matrix(np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]]))
    # user 0: relevant items 1 (rank 4), 2 (rank 2), 4 (rank 1): Recall@3 2 / 3, DCG 1 + D2
    # user 1: items 1 (rank 1) and 0 (rank 2): Recall 1, DCG 1 + D2 = IDCG(2)
    assert true_value(TOP, relevance, 3, "recall").value == pytest.approx((2 / 3 + 1) / 2)
    assert true_value(TOP, relevance, 3, "dcg").value == pytest.approx(1 + D2)
    assert true_value(TOP, relevance, 3, "ndcg").value == pytest.approx(((1 + D2) / (1.5 + D2) + 1) / 2)


def test_users_and_mask_select_what_is_evaluated() -> None:
    # user ids 7 and 3 for the rows; the log is 8 users wide and only rows 7 and 3 hold entries
    clicks = sp.lil_matrix((8, 5))
    clicks[7, 2], clicks[7, 3], clicks[3, 1], clicks[0, 4] = 1, 1, 1, 1  # user 0 is not evaluated
    result = estimate(TOP, clicks.tocsr(), P, 3, "dcg", "ips", users=np.array([7, 3]), n_boot=0)
    assert result.value == pytest.approx(tiny("dcg", "ips").value)
    # masking user 0's click on item 2 leaves only the click outside the top 3: DCG 0 for that user
    mask = sp.csr_matrix(([1.0], ([0], [2])), shape=(2, 5))
    assert tiny("dcg", "ips", mask=mask).value == pytest.approx(4 / 2)


# ---- exact expectations over every exposure outcome -------------------------------------------------
#
# 2 users x 4 items with true relevance R and exposure probabilities PROB; the ranking is fixed.
# Every one of the 2^8 exposure outcomes o is weighed by its probability Π p^o (1 − p)^(1 − o),
# with clicks y = r·o, so E[estimate] is an exact sum.

R = np.array([[1, 0, 1, 1], [0, 1, 1, 0]])
PROB = np.array([[0.5, 0.2, 0.8, 0.3], [0.9, 0.4, 0.25, 0.6]])
RANKING = np.array([[2, 0, 3, 1], [1, 3, 0, 2]])


def _expectation(relevance: np.ndarray, probabilities: np.ndarray, ranking: np.ndarray, **options: object) -> float:
    expected = 0.0
    for outcome in itertools.product([0, 1], repeat=relevance.size):
        o = np.array(outcome).reshape(relevance.shape)
        weight = np.prod(np.where(o == 1, probabilities, 1 - probabilities))
        value = estimate(
            ranking, sp.csr_matrix(relevance * o), probabilities, 2, exposed=sp.csr_matrix(o), n_boot=0, **options
        ).value  # type: ignore[arg-type]
        expected += weight * value
    return expected


@pytest.mark.parametrize("metric", ["dcg", "recall", "ndcg"])
def test_ips_and_dr_are_exactly_unbiased(metric: str) -> None:
    truth = true_value(RANKING, R, 2, metric).value  # type: ignore[arg-type]
    # DCG is a sum over pairs: unbiased as it stands; Recall and NDCG with the true normalizer n_u
    known = {} if metric == "dcg" else {"n_relevant": R.sum(axis=1)}
    assert _expectation(R, PROB, RANKING, metric=metric, estimator="ips", **known) == pytest.approx(truth, abs=1e-12)
    rng = np.random.default_rng(0)
    for imputed in (rng.random(R.shape), np.zeros(R.shape), 3.0 * np.ones(R.shape) - 1.0):  # any r̂, even outside [0, 1]
        expected = _expectation(R, PROB, RANKING, metric=metric, estimator="dr", imputed=imputed, **known)
        assert expected == pytest.approx(truth, abs=1e-12)


def test_dr_with_the_true_relevance_is_exact_on_every_outcome() -> None:
    # r̂ = r: r + o (r − r)/p = r for every o, so the estimate has no variance at all
    truth = true_value(RANKING, R, 2, "dcg").value
    for outcome in itertools.product([0, 1], repeat=R.size):
        o = np.array(outcome).reshape(R.shape)
        value = estimate(
            RANKING, sp.csr_matrix(R * o), PROB, 2, "dcg", "dr", exposed=sp.csr_matrix(o), imputed=R, n_boot=0
        ).value
        assert value == pytest.approx(truth, abs=1e-12)


def test_naive_is_biased() -> None:
    truth = true_value(RANKING, R, 2, "dcg").value
    # E[naive DCG] = Σ r p g / 2 users, not Σ r g / 2
    expected = _expectation(R, PROB, RANKING, metric="dcg", estimator="naive")
    assert expected == pytest.approx((0.8 * 1 + 0.5 * D2 + 0.4 * 1) / 2, abs=1e-12)
    assert abs(expected - truth) > 0.3


def test_ratio_metrics_with_an_estimated_normalizer_are_biased() -> None:
    # the normalizer n̂ = Σ 1/p is random: E[N̂ / min(K, n̂)] ≠ N / min(K, n)
    truth = true_value(RANKING, R, 2, "recall").value
    # (users without a click have no value; the exact expectation is taken over outcomes where both have one)
    assert abs(_conditional_recall_expectation() - truth) > 1e-3


def _conditional_recall_expectation() -> float:
    total = mass = 0.0
    for outcome in itertools.product([0, 1], repeat=R.size):
        o = np.array(outcome).reshape(R.shape)
        if np.any((R * o).sum(axis=1) == 0):
            continue
        weight = np.prod(np.where(o == 1, PROB, 1 - PROB))
        total += weight * estimate(RANKING, sp.csr_matrix(R * o), PROB, 2, "recall", "ips", n_boot=0).value
        mass += weight
    return total / mass


def test_snips_is_biased_but_consistent() -> None:
    # One user, 3 items, replicated m times. SNIPS multiplies the IPS sums by λ = candidates / Σ_o 1/p,
    # a ratio of random sums: E[SNIPS] ≠ truth for m = 1 (biased), and as users are added λ → 1, its
    # bias shrinking towards 0 (consistent). The expectations are exact sums over all 2^(3m) outcomes.
    relevance, probabilities, ranking = np.array([[1, 0, 1]]), np.array([[0.2, 0.7, 0.5]]), np.array([[1, 0, 2]])
    biases = []
    for m in (1, 2, 3):
        world = (np.repeat(relevance, m, axis=0), np.repeat(probabilities, m, axis=0), np.repeat(ranking, m, axis=0))
        truth = true_value(world[2], world[0], 2, "dcg").value
        biases.append(abs(_expectation(*world, metric="dcg", estimator="snips") - truth))
    assert biases[0] > 0.3  # the signed biases: −0.352, −0.226, −0.161
    assert biases[0] > biases[1] > biases[2]
    # many users, one seeded draw: SNIPS is close to the truth
    rng = np.random.default_rng(5)
    many = 20000
    o = rng.random((many, 3)) < probabilities
    big = estimate(
        np.repeat(ranking, many, axis=0),
        sp.csr_matrix(relevance * o),
        probabilities[0],
        2,
        "dcg",
        "snips",
        exposed=sp.csr_matrix(o),
        n_boot=0,
    )
    assert big.value == pytest.approx(true_value(ranking, relevance, 2, "dcg").value, abs=0.02)


# ---- the bootstrap -----------------------------------------------------------------------------------


def _random_log(seed: int = 1, n_users: int = 300, n_items: int = 40) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    relevance = rng.random((n_users, n_items)) < 0.2
    probabilities = rng.uniform(0.1, 0.9, size=(n_users, n_items))
    exposed = rng.random((n_users, n_items)) < probabilities
    ranking = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :10]
    return {
        "top_items": ranking,
        "clicks": sp.csr_matrix(relevance & exposed),
        "propensity": probabilities,
        "exposed": sp.csr_matrix(exposed),
        "imputed": rng.random((n_users, n_items)),
    }


@pytest.mark.parametrize("estimator", ["naive", "ips", "snips", "dr"])
def test_bootstrap_interval_is_seeded_and_contains_the_estimate(estimator: str) -> None:
    log = _random_log()
    first = estimate(k=5, metric="ndcg", estimator=estimator, n_boot=200, seed=3, **log)  # type: ignore[arg-type]
    again = estimate(k=5, metric="ndcg", estimator=estimator, n_boot=200, seed=3, **log)  # type: ignore[arg-type]
    other = estimate(k=5, metric="ndcg", estimator=estimator, n_boot=200, seed=4, **log)  # type: ignore[arg-type]
    assert first.ci_low < first.value < first.ci_high
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.value == pytest.approx(np.nanmean(first.per_user))
    no_interval = estimate(k=5, metric="ndcg", estimator=estimator, n_boot=0, **log)  # type: ignore[arg-type]
    assert math.isnan(no_interval.ci_low) and no_interval.value == first.value


def test_blocks_do_not_change_any_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _random_log()
    whole = estimate(k=5, metric="recall", estimator="dr", n_boot=50, seed=2, **log)  # type: ignore[arg-type]
    imputed = log.pop("imputed")
    monkeypatch.setattr(offpolicy, "MAX_BLOCK_ELEMENTS", 200)  # 5 users of r̂, 1 resample x users per block
    blocked = estimate(
        k=5,
        metric="recall",
        estimator="dr",
        n_boot=50,
        seed=2,
        imputed=lambda users: imputed[users],
        **log,  # type: ignore[index, arg-type]
    )
    assert (blocked.value, blocked.ci_low, blocked.ci_high) == pytest.approx((whole.value, whole.ci_low, whole.ci_high))


# ---- input checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"propensity": -P}, "propensity"),
        ({"k": 0}, "k must be"),
        ({"k": 6}, "depth"),
        ({"metric": "map"}, r"metric must be one of \['recall', 'ndcg', 'dcg'\]"),
        ({"estimator": "switch"}, "estimator must be one of"),
        ({"exposed": sp.csr_matrix((2, 4))}, "exposed"),
        ({"exposed": sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 1, 0, 0, 0]]))}, "exposed pair"),
        ({"estimator": "snips", "exposed": None}, "exposed="),
        ({"estimator": "dr"}, "imputed="),
        ({"estimator": "dr", "imputed": np.zeros((2, 4))}, "imputed"),
        ({"users": np.array([1, 1])}, "users"),
        ({"n_relevant": np.array([1.0])}, "n_relevant"),
        ({"top_items": np.array([[4, 4, 0], [1, 0, 3]])}, "repeats"),
        ({"top_items": np.array([[9, 2, 0], [1, 0, 3]])}, "item ids"),
        ({"n_boot": -1}, "n_boot"),
    ],
)
def test_bad_input_is_named(change: dict[str, object], match: str) -> None:
    arguments = {
        "top_items": TOP,
        "clicks": CLICKS,
        "propensity": P,
        "k": 3,
        "metric": "dcg",
        "estimator": "snips",
        "exposed": EXPOSED,
        "n_boot": 0,
        **change,
    }
    with pytest.raises(ValueError, match=match):
        estimate(**arguments)  # type: ignore[arg-type]
