"""The study's statistics: mean ± std over seeds of every sweep line, the gains over MF
on the same worlds and their paired tests, and the headline numbers for MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup
from debias_pipeline.pipelines.study_hypotheses.plan import KEYS, REFERENCE


def _metric_names(k: int) -> list[str]:
    return [
        f"test_recall_at_{k}",
        f"test_ndcg_at_{k}",
        f"truth_recall_at_{k}",
        f"truth_ndcg_at_{k}",
        "preference_auc",
        "preference_oracle_auc",
        "preference_spearman",
        "exposure_auc",
        "exposure_oracle_auc",
        "exposure_spearman",
        "preference_effective_rank",
        "exposure_effective_rank",
        "best_epoch",
    ]


def gain_names(k: int) -> list[str]:
    """The metrics whose gain over MF is tested: the ranking metrics and the Spearman
    correlation of the preference score with the true preference."""
    return [f"truth_ndcg_at_{k}", f"truth_recall_at_{k}", f"test_ndcg_at_{k}", f"test_recall_at_{k}", "preference_spearman"]


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided p of a paired t-test (a one-sample t-test of the differences against 0);
    NaN with fewer than two pairs or differences that do not vary."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2 or np.ptp(differences) == 0:
        return math.nan
    from scipy import stats  # scipy.stats takes ~0.7 s to import: only when needed

    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def _gains(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Model minus MF per seed on the same world: mean, sample std and paired p per line.

    The MF of the same sweep and bias strength is the reference where the sweep has one,
    else the MF of the ``models`` sweep at that bias strength.
    """
    reference = runs[runs["model"] == REFERENCE]
    rows = []
    for keys, group in runs[runs["model"] != REFERENCE].groupby(KEYS, sort=False):
        line = dict(zip(KEYS, keys, strict=True))
        same = reference["bias_strength"] == line["bias_strength"]
        own = reference[same & (reference["sweep"] == line["sweep"])]
        if own.empty:
            own = reference[same & (reference["sweep"] == "models")]
        paired = group.merge(own[["seed", *metrics]], on="seed", suffixes=("", "_reference"))
        for metric in metrics:
            differences = (paired[metric] - paired[f"{metric}_reference"]).to_numpy(np.float64)
            rows.append(
                {
                    **line,
                    "metric": metric,
                    "gain_mean": float(differences.mean()) if differences.size else math.nan,
                    "gain_std": float(differences.std(ddof=1)) if differences.size > 1 else math.nan,
                    "gain_p_value": paired_p_value(differences),
                }
            )
    return pd.DataFrame(rows, columns=[*KEYS, "metric", "gain_mean", "gain_std", "gain_p_value"])


def summarize_study(
    models_runs: pd.DataFrame,
    exposure_rank_runs: pd.DataFrame,
    exposure_layers_runs: pd.DataFrame,
    spectra_runs: pd.DataFrame,
    bias_strength_runs: pd.DataFrame,
    methods_runs: pd.DataFrame,
    evaluation: EvaluationConfig,
) -> pd.DataFrame:
    """Mean ± sample std over seeds of every metric of every sweep line, and the gains.

    Returns:
        A long table (sweep, setting, value, model, bias_strength, metric, mean, std, n,
        gain_mean, gain_std, gain_p_value); the gain columns are filled for models other
        than MF on ``gain_names`` (truth and test Recall/NDCG@K, preference Spearman).
    """
    k = evaluation_setup(evaluation, "synthetic").k
    tables = [models_runs, exposure_rank_runs, exposure_layers_runs, spectra_runs, bias_strength_runs, methods_runs]
    columns = ["sweep", "setting", "value", "model", "bias_strength", "metric", "mean", "std", "n"]
    tables = [table for table in tables if not table.empty]
    if not tables:  # sweeps.only ran the off-policy sweep alone
        return pd.DataFrame(columns=[*columns, "gain_mean", "gain_std", "gain_p_value"])
    runs = pd.concat(tables, ignore_index=True)
    metrics = [name for name in _metric_names(k) if name in runs.columns]
    long = runs.melt(id_vars=[*KEYS, "seed"], value_vars=metrics, var_name="metric", value_name="score")
    long["score"] = long["score"].astype(np.float64)
    summary = long.groupby([*KEYS, "metric"], sort=False)["score"].agg(["mean", "std", "count"]).reset_index()
    summary = summary.rename(columns={"count": "n"})
    values = runs.drop_duplicates(["sweep", "setting"])[["sweep", "setting", "value"]]
    summary = summary.merge(values, on=["sweep", "setting"], how="left")
    gains = _gains(runs, [name for name in gain_names(k) if name in runs.columns])
    summary = summary.merge(gains, on=[*KEYS, "metric"], how="left")
    return summary[[*columns, "gain_mean", "gain_std", "gain_p_value"]]


def study_mlflow_metrics(summary: pd.DataFrame, evaluation: EvaluationConfig) -> dict[str, dict[str, float | int]]:
    """The headline numbers as MLflow metrics ``<sweep>.<setting>.<model>.<metric>``.

    Means of the truth and test NDCG@K, of the preference Spearman and of the exposure
    recovery; for models other than MF also ``..._gain`` (mean gain over MF) and ``..._gain_p`` (paired t-test).
    """
    k = evaluation_setup(evaluation, "synthetic").k
    headline = {f"truth_ndcg_at_{k}", f"test_ndcg_at_{k}", "preference_spearman", "exposure_auc", "exposure_spearman"}
    metrics: dict[str, dict[str, float | int]] = {}
    for line in summary[summary["metric"].isin(headline)].itertuples(index=False):
        name = f"{line.sweep}.{line.setting}.{line.model}.{line.metric}"
        for suffix, value in (("", line.mean), ("_gain", line.gain_mean), ("_gain_p", line.gain_p_value)):
            if value == value:  # NaN: no such number (MF has no gain, MF no exposure)
                metrics[name + suffix] = {"value": float(value), "step": 0}
    return metrics
