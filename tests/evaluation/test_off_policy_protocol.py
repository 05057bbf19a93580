"""Protocol ``ips``: the biased log's split and the off-policy test report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from debias_pipeline.config.params import build_config
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.evaluation import offpolicy
from debias_pipeline.evaluation.off_policy_report import OffPolicyLog
from debias_pipeline.evaluation.propensity import popularity
from debias_pipeline.evaluation.protocols import OffPolicyConfig
from debias_pipeline.training.inputs import process_dataset

SYNTHETIC = RawData(name="synthetic", interactions=pd.DataFrame(), files={})


def rows(table: list[tuple[int, int, int, str]]) -> pd.DataFrame:
    users, items, labels, splits = zip(*table, strict=True)
    return pd.DataFrame({"user": users, "item": items, "label": labels, "split": splits})


def test_the_split_holds_out_each_users_rated_rows_of_the_biased_log_only() -> None:
    data = process_dataset(SYNTHETIC, "synthetic", evaluation={"protocol": "ips"})
    split = data.interaction_split
    assert set(split["source"]) == {"biased"}  # the simulator's unbiased rows are left out
    test = split[split["split"] == "test"]
    assert (test["label"] == 0).any() and (test["label"] == 1).any()  # rated rows, clicked or not
    # about test_fraction (0.2) of each user's rated rows, and every user keeps a train row
    share = len(test) / len(split)
    assert 0.15 < share < 0.25
    assert set(split.loc[split["split"] == "train", "user"]) == set(split["user"])
    validation = split[split["split"] == "validation"]
    assert (validation["label"] == 1).all()


def test_the_report_is_offpolicy_estimate_on_the_runs_log() -> None:
    data = process_dataset(SYNTHETIC, "synthetic", evaluation={"protocol": "ips", "k": 5, "off_policy": {"n_boot": 50}})
    evaluator = data.evaluators.test
    assert evaluator.off_policy is not None and data.evaluators.validation.off_policy is None
    rng = np.random.default_rng(0)
    scores = rng.random((data.train_data.n_users, data.train_data.n_items))

    class Fixed:
        name = "fixed"

        def score(self, users: np.ndarray | None = None) -> np.ndarray:
            return scores if users is None else scores[users]

    values, _ = evaluator.report(Fixed())
    for estimator in ("naive", "ips", "snips", "dr"):
        for metric in ("recall", "ndcg", "dcg"):
            key = f"test_{estimator}_{metric}_at_5"
            assert values[f"{key}_ci_low"] <= values[key] <= values[f"{key}_ci_high"], key
    # naive equals the protocol's own Recall@5 on the held-out log
    assert values["test_naive_recall_at_5"] == pytest.approx(values["test_recall_at_5"])
    # the IPS figure is offpolicy.estimate on the log the evaluator holds
    users, ranked = evaluator._last["ranked"]
    log = evaluator.off_policy
    expected = offpolicy.estimate(
        ranked, log.clicks, log.propensity, 5, "ndcg", "ips", users=users, mask=evaluator.mask, n_boot=0, project=False
    )
    assert values["test_ips_ndcg_at_5"] == pytest.approx(expected.value)


def test_the_log_by_hand() -> None:
    # 2 users x 3 items. Train: u0 rated i0 (click), i1 (no click); u1 rated i0 (click), i2 (click).
    # Test: u0 rated i2 (click); u1 rated i1 (no click).
    split = rows([(0, 0, 1, "train"), (0, 1, 0, "train"), (1, 0, 1, "train"), (1, 2, 1, "train"), (0, 2, 1, "test"), (1, 1, 0, "test")])
    config = build_config(OffPolicyConfig, {"eta": 1.0}, "evaluation.off_policy")
    log = OffPolicyLog.build(split, (2, 3), config)
    assert log.clicks.toarray().tolist() == [[0, 0, 1], [0, 0, 0]]
    assert log.exposed.toarray().tolist() == [[0, 0, 1], [0, 1, 0]]
    # DR's imputation: each item's click rate among its rated train pairs: i0 2/2, i1 0/1, i2 1/1.
    np.testing.assert_allclose(log.imputed, [1.0, 0.0, 1.0])
    # θ_train from the library's fit with η = 1 on the same train log, scaled by 2 test / 4 train rows.
    train = sp.csr_matrix([[1, 0, 0], [1, 0, 1]], dtype=float)
    rated = sp.csr_matrix([[1, 1, 0], [1, 0, 1]], dtype=float)
    fitted = popularity(train, exposed=rated, eta=1.0)
    np.testing.assert_allclose(log.propensity, np.minimum(fitted.item_propensity * 2 / 4, 1.0))


def test_a_log_of_clicks_alone_has_no_exposed_pairs_and_runs_naive_and_ips_only() -> None:
    split = rows([(0, 0, 1, "train"), (1, 0, 1, "train"), (1, 2, 1, "train"), (0, 2, 1, "test"), (1, 1, 1, "test")])
    config = build_config(OffPolicyConfig, {"n_boot": 0}, "evaluation.off_policy")
    log = OffPolicyLog.build(split, (2, 3), config)
    assert log.exposed is None and log.imputed is None and log.eta == 0.5
    values = log.report(np.array([[2, 1], [1, 2]]), np.array([0, 1]), sp.csr_matrix((2, 3)), (1,), config, seed=0)
    assert {key.split("_")[1] for key in values if key.startswith("test_") and "_at_" in key} == {"naive", "ips"}
    assert values["test_naive_recall_at_1"] == 1.0  # both users' first item is their held-out click


def test_projection_onto_the_metrics_range_is_a_choice() -> None:
    # One user, clicks on items 0 and 1 at p = 0.5, ranked 0 then 1, Recall@1:
    # N̂ = 1 / 0.5 = 2 (the hit at rank 1), n̂ = 2 / 0.5 = 4, Recall = N̂ / min(1, n̂) = 2;
    # projected onto [0, 1]: 1.
    clicks = sp.csr_matrix(np.array([[1.0, 1.0]]))
    ranked = np.array([[0, 1]])
    kept = offpolicy.estimate(ranked, clicks, np.array([0.5, 0.5]), 1, "recall", "ips", n_boot=0, project=False)
    projected = offpolicy.estimate(ranked, clicks, np.array([0.5, 0.5]), 1, "recall", "ips", n_boot=0)
    assert kept.value == pytest.approx(2.0) and projected.value == 1.0
    assert build_config(OffPolicyConfig, {}, "evaluation.off_policy").project is False
