"""The off-policy estimators against the truth: bias, spread, RMSE and the ordering of
models, on tables small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from debias_pipeline.evaluation.off_policy_report import ALL_MODELS, estimator_errors, ranking_agreement


def runs(rows: list[tuple[float, int, str, str, float, float]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["bias_strength", "seed", "model", "estimator", "estimate", "truth"])
    return table.assign(metric="ndcg_at_5", ess=10.0)


def test_estimator_errors_by_hand():
    table = runs(
        [
            # β 1, ips: errors +0.2 and +0.4 for mf, 0 and −0.2 for ease
            (1.0, 0, "mf", "ips", 0.5, 0.3),
            (1.0, 1, "mf", "ips", 0.7, 0.3),
            (1.0, 0, "ease", "ips", 0.4, 0.4),
            (1.0, 1, "ease", "ips", 0.2, 0.4),
        ]
    )
    summary = estimator_errors(table).set_index("model")
    mf = summary.loc["mf"]
    # bias 0.3, variance ((−0.1)² + 0.1²) / 1 = 0.02, RMSE √((0.04 + 0.16) / 2) = √0.1
    assert (mf["truth"], mf["estimate"], mf["bias"]) == (pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.3))
    assert mf["variance"] == pytest.approx(0.02) and mf["sd"] == pytest.approx(math.sqrt(0.02))
    assert mf["rmse"] == pytest.approx(math.sqrt(0.1)) and mf["n"] == 2 and mf["ess"] == 10.0
    pooled = summary.loc[ALL_MODELS]
    # errors 0.2, 0.4, 0, −0.2: bias 0.1, variance (0.01 + 0.09 + 0.01 + 0.09) / 3, RMSE √(0.24 / 4)
    assert pooled["bias"] == pytest.approx(0.1) and pooled["variance"] == pytest.approx(0.2 / 3)
    assert pooled["rmse"] == pytest.approx(math.sqrt(0.06)) and pooled["n"] == 4
    # RMSE² = bias² + (n − 1) / n · variance
    assert pooled["rmse"] ** 2 == pytest.approx(pooled["bias"] ** 2 + 3 / 4 * pooled["variance"])
    assert list(table.columns) == ["bias_strength", "seed", "model", "estimator", "estimate", "truth", "metric", "ess"]


def test_ranking_agreement_by_hand():
    table = runs(
        [
            # seed 0: estimates order a > b > c as the truth does: ρ = 1
            (0.0, 0, "a", "snips", 0.9, 0.6),
            (0.0, 0, "b", "snips", 0.5, 0.4),
            (0.0, 0, "c", "snips", 0.1, 0.2),
            # seed 1: the reverse order: ρ = −1
            (0.0, 1, "a", "snips", 0.1, 0.6),
            (0.0, 1, "b", "snips", 0.5, 0.4),
            (0.0, 1, "c", "snips", 0.9, 0.2),
            # seed 2: a constant estimate: ρ undefined, left out of the mean
            (0.0, 2, "a", "snips", 0.3, 0.6),
            (0.0, 2, "b", "snips", 0.3, 0.4),
            (0.0, 2, "c", "snips", 0.3, 0.2),
        ]
    )
    agreement = ranking_agreement(table)
    assert len(agreement) == 1
    line = agreement.iloc[0]
    assert line["spearman"] == pytest.approx(0.0) and line["worlds"] == 2
    # seed 0 alone, one pair swapped (ranks 1, 3, 2 against 1, 2, 3): ρ = 1 − 6 · 2 / (3 · 8) = 0.5
    swapped = table[table["seed"] == 0].assign(estimate=[0.9, 0.1, 0.5])
    assert ranking_agreement(swapped)["spearman"].iat[0] == pytest.approx(0.5)
    assert np.isnan(ranking_agreement(swapped[swapped["model"] != "c"])["spearman"].iat[0])  # two models


def test_no_runs_give_empty_tables_that_name_their_columns():
    empty = runs([])
    assert estimator_errors(empty).empty and "rmse" in estimator_errors(empty).columns
    assert ranking_agreement(empty).empty and "spearman" in ranking_agreement(empty).columns
