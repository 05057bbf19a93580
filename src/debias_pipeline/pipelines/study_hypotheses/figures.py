"""The study's figures: the dual model against its exposure size and layers, the tower
spectra beside the truth's, and the gains over MF against the bias strength."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from debias_pipeline.data.simulation import KINDS  # noqa: E402
from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup  # noqa: E402
from debias_pipeline.pipelines.study_hypotheses.plan import DUAL, REFERENCE, StudyPlan  # noqa: E402


def _line(summary: pd.DataFrame, sweep: str, model: str, metric: str) -> pd.DataFrame:
    rows = summary[(summary["sweep"] == sweep) & (summary["model"] == model) & (summary["metric"] == metric)]
    return rows.sort_values("value")


def default_true_rank(world_statistics: pd.DataFrame, study_plan: StudyPlan) -> int:
    rows = world_statistics[world_statistics["bias_strength"] == study_plan.config.bias_strength]
    return int(rows["true_exposure_rank"].median()) if not rows.empty else 0  # 0: no world at the default β


def _plot_exposure_sweep(
    summary: pd.DataFrame, sweep: str, xlabel: str, k: int, true_rank: int | None = None
) -> plt.Figure:
    figure, (ranking, recovery) = plt.subplots(1, 2, figsize=(11, 4))
    truth_ndcg = f"truth_ndcg_at_{k}"
    dual = _line(summary, sweep, DUAL, truth_ndcg)
    ranking.errorbar(dual["value"], dual["mean"], yerr=dual["std"], marker="o", capsize=3, label="dual")
    reference = _line(summary, "models", REFERENCE, truth_ndcg)
    if not reference.empty:
        mean, std = reference["mean"].iat[0], reference["std"].iat[0]
        ranking.axhline(mean, color="tab:gray", linestyle="--", label="MF")
        ranking.axhspan(mean - std, mean + std, color="tab:gray", alpha=0.15)
    ranking.set_ylabel(f"NDCG@{k} against the true preference")
    for metric, label in (("exposure_auc", "exposure AUC"), ("exposure_spearman", "exposure Spearman")):
        line = _line(summary, sweep, DUAL, metric)
        recovery.errorbar(line["value"], line["mean"], yerr=line["std"], marker="o", capsize=3, label=label)
    oracle = _line(summary, sweep, DUAL, "exposure_oracle_auc")
    recovery.plot(oracle["value"], oracle["mean"], color="black", linestyle=":", label="AUC of the truth")
    recovery.set_ylabel("recovery of the true exposure")
    for axis in (ranking, recovery):
        if true_rank is not None:
            axis.set_xscale("log", base=2)
            axis.axvline(true_rank, color="tab:red", linestyle=":", label=f"true exposure rank {true_rank}")
        axis.set_xlabel(xlabel)
        axis.legend(fontsize="small")
    figure.suptitle("mean ± std over seeds")
    figure.tight_layout()
    plt.close(figure)
    return figure


def plot_exposure_rank(
    summary: pd.DataFrame, world_statistics: pd.DataFrame, study_plan: StudyPlan, evaluation: EvaluationConfig
) -> plt.Figure:
    """Truth NDCG@K and exposure recovery of the dual model against its exposure size."""
    k = evaluation_setup(evaluation, "synthetic").k
    true_rank = default_true_rank(world_statistics, study_plan)
    return _plot_exposure_sweep(summary, "exposure_rank", "exposure embedding size", k, true_rank)


def plot_exposure_layers(summary: pd.DataFrame, evaluation: EvaluationConfig) -> plt.Figure:
    """Truth NDCG@K and exposure recovery of the dual model against its exposure layers."""
    return _plot_exposure_sweep(summary, "exposure_layers", "exposure LightGCN layers", evaluation_setup(evaluation, "synthetic").k)


SPECTRUM_LENGTH = 30  # leading e_j shown


def plot_spectra(spectra: pd.DataFrame) -> plt.Figure:
    """Normalized spectra e_j / e_1 of each tower beside the true singular values s_j / s_1."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, tower in zip(axes, KINDS, strict=True):
        rows = spectra[spectra["tower"] == tower]
        for (model, setting), group in rows.groupby(["model", "setting"], sort=False):
            first = group[group["j"] == 1].set_index("seed")["value"]
            normalized = group.assign(value=group["value"] / group["seed"].map(first).to_numpy())
            curve = normalized[normalized["j"] <= SPECTRUM_LENGTH].groupby("j")["value"].mean()
            style = {"color": "black", "linestyle": ":", "marker": "s"} if model == "truth" else {"marker": "."}
            label = "truth (singular values)" if model == "truth" else f"{model}, eigen {setting}"
            axis.plot(curve.index, curve.to_numpy(), label=label, **style)
        axis.set_yscale("log")
        axis.set_title(f"{tower} tower")
        axis.set_xlabel("j")
        axis.legend(fontsize="small")
    axes[0].set_ylabel("e_j / e_1 (mean over seeds)")
    figure.tight_layout()
    plt.close(figure)
    return figure


def bias_strength_models(summary: pd.DataFrame) -> list[str]:
    """The models of the bias-strength sweep other than MF, in plan order."""
    models = summary.loc[summary["sweep"] == "bias_strength", "model"].drop_duplicates().tolist()
    return [model for model in models if model != REFERENCE]


def plot_bias_strength(summary: pd.DataFrame, evaluation: EvaluationConfig) -> plt.Figure:
    """Gain over MF (truth and test NDCG@K) of each model of the bias-strength sweep
    (the dual model, with and without its exposure prior) against the bias strength."""
    k = evaluation_setup(evaluation, "synthetic").k
    figure, axis = plt.subplots(figsize=(7, 4))
    metrics = ((f"truth_ndcg_at_{k}", "against the truth", "-"), (f"test_ndcg_at_{k}", "thesis protocol (test)", "--"))
    for index, model in enumerate(bias_strength_models(summary)):
        for metric, label, linestyle in metrics:
            line = _line(summary, "bias_strength", model, metric)
            axis.errorbar(
                line["value"], line["gain_mean"], yerr=line["gain_std"], marker="o", capsize=3,
                color=f"C{index}", linestyle=linestyle, label=f"{model}, {label}",
            )
    axis.axhline(0.0, color="tab:gray", linewidth=1)
    axis.set_xlabel("exposure-bias strength β (0 = random exposure)")
    axis.set_ylabel(f"NDCG@{k} gain over MF (mean ± std)")
    axis.legend(fontsize="small")
    figure.tight_layout()
    plt.close(figure)
    return figure


def methods(summary: pd.DataFrame) -> list[str]:
    """The models of the methods table, MF first, in plan order."""
    names = summary.loc[summary["sweep"] == "methods", "model"].drop_duplicates().tolist()
    return sorted(names, key=lambda name: name != REFERENCE)


def plot_methods(summary: pd.DataFrame, evaluation: EvaluationConfig) -> plt.Figure:
    """Truth NDCG@K and preference Spearman of every method of the methods table, one bar
    per bias strength (mean ± std over seeds)."""
    k = evaluation_setup(evaluation, "synthetic").k
    names = methods(summary)
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(names) + 2), 7), sharex=True)
    rows = summary[summary["sweep"] == "methods"]
    strengths = sorted(rows["bias_strength"].drop_duplicates())
    width = 0.8 / max(len(strengths), 1)
    for axis, (metric, label) in zip(
        axes, ((f"truth_ndcg_at_{k}", f"NDCG@{k} against the truth"), ("preference_spearman", "Spearman with the true preference")),
        strict=True,
    ):
        for index, strength in enumerate(strengths):
            line = rows[(rows["metric"] == metric) & (rows["bias_strength"] == strength)].set_index("model").reindex(names)
            positions = [position + (index - (len(strengths) - 1) / 2) * width for position in range(len(names))]
            axis.bar(positions, line["mean"], width, yerr=line["std"], capsize=2, label=f"β = {strength:g}")
        axis.set_ylabel(label)
        axis.legend(fontsize="small")
    axes[-1].set_xticks(range(len(names)), names, rotation=45, ha="right")
    figure.suptitle("every method against the truth, mean ± std over seeds")
    figure.tight_layout()
    plt.close(figure)
    return figure
