"""The study's Markdown report: the headline numbers, a table per sweep and the figures,
embedded."""

from __future__ import annotations

import base64
import io

import matplotlib.pyplot as plt
import pandas as pd

from debias_pipeline.data.simulation import KINDS
from debias_pipeline.evaluation.off_policy_report import ALL_MODELS
from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup
from debias_pipeline.evaluation.truth import effective_rank
from debias_pipeline.pipelines.study_hypotheses.figures import (
    bias_strength_models,
    default_true_rank,
    methods,
    plot_bias_strength,
    plot_exposure_layers,
    plot_exposure_rank,
    plot_methods,
    plot_spectra,
)
from debias_pipeline.pipelines.study_hypotheses.plan import DUAL, REFERENCE, StudyPlan
from debias_pipeline.pipelines.study_hypotheses.statistics import gain_names


def _png_uri(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mean_std(mean: float, std: float, digits: int = 4) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(value: float) -> str:
    return "–" if value != value else f"{value:.3f}"


def _cell(summary: pd.DataFrame, sweep: str, setting: str, model: str, metric: str, gain: bool = False) -> str:
    rows = summary[
        (summary["sweep"] == sweep)
        & (summary["setting"] == setting)
        & (summary["model"] == model)
        & (summary["metric"] == metric)
    ]
    if rows.empty:
        return "–"
    line = rows.iloc[0]
    if gain:
        return f"{_mean_std(line['gain_mean'], line['gain_std'])} (p {_p(line['gain_p_value'])})"
    return _mean_std(line["mean"], line["std"])


def _settings(summary: pd.DataFrame, sweep: str) -> list[str]:
    rows = summary[summary["sweep"] == sweep].drop_duplicates("setting")
    return rows.sort_values("value", kind="stable")["setting"].tolist()


def _world_section(world_statistics: pd.DataFrame, study_plan: StudyPlan, k: int) -> str:
    default = world_statistics[world_statistics["bias_strength"] == study_plan.config.bias_strength]
    names = [
        "users",
        "items",
        "biased_ratings",
        "unbiased_ratings",
        "unbiased_users",
        "biased_positive_rate",
        "unbiased_positive_rate",
        "popularity_gini",
        "top10_share",
        "true_preference_rank",
        "true_exposure_rank",
        f"click_oracle_truth_ndcg_at_{k}",
        f"popularity_truth_ndcg_at_{k}",
    ]
    rows = []
    for name in names:
        target = default.get(f"target_{name}")
        rows.append(
            [
                name,
                _mean_std(default[name].mean(), default[name].std(), 3),
                "–" if target is None else f"{target.iat[0]:g}",
            ]
        )
    overrides = {key: value for key, value in study_plan.world.items() if key != "preset"}
    return "\n\n".join(
        [
            "## The simulated world",
            f"Preset `{study_plan.config.preset}`"
            + (f" with overrides {overrides}" if overrides else "")
            + f", bias strength β = {study_plan.config.bias_strength:g}; one world per seed "
            f"({', '.join(map(str, study_plan.seeds))}). Statistics of those worlds (mean ± std over seeds) "
            "against the preset's targets. The last two rows rank by the truth itself: a perfect model of the "
            f"clicks, P(r)·P(o), and the items' train popularity, scored by truth NDCG@{k}; what exposure bias "
            "costs even a perfect click model is 1 minus the first.",
            _markdown_table(["statistic", "simulated", "target"], rows),
        ]
    )


def _models_section(summary: pd.DataFrame, k: int) -> str:
    metrics = [
        (f"test_recall_at_{k}", f"test R@{k}"),
        (f"test_ndcg_at_{k}", f"test N@{k}"),
        (f"truth_recall_at_{k}", f"truth R@{k}"),
        (f"truth_ndcg_at_{k}", f"truth N@{k}"),
        ("preference_spearman", "preference Spearman"),
        ("exposure_auc", "exposure AUC"),
        ("exposure_oracle_auc", "AUC of the truth"),
        ("exposure_spearman", "exposure Spearman"),
    ]
    models = summary[summary["sweep"] == "models"]["model"].drop_duplicates().tolist()
    rows = [[model] + [_cell(summary, "models", "default", model, metric) for metric, _ in metrics] for model in models]
    gains = [
        [model]
        + [_cell(summary, "models", "default", model, metric, gain=True) for metric in gain_names(k)]
        for model in models
        if model != REFERENCE
    ]
    return "\n\n".join(
        [
            "## Every model against the truth and by the thesis protocol",
            _markdown_table(["model"] + [label for _, label in metrics], rows),
            "Gain over MF on the same worlds (mean ± std of the per-seed differences, paired t-test p):",
            _markdown_table(["model", *[f"{m} gain" for m in gain_names(k)]], gains),
        ]
    )


def _exposure_section(summary: pd.DataFrame, sweep: str, title: str, intro: str, figure: str, k: int) -> str:
    header = [
        "setting",
        f"truth N@{k}",
        f"gain over MF, truth N@{k}",
        f"gain over MF, test N@{k}",
        "exposure AUC",
        "exposure Spearman",
        "exposure eff. rank",
    ]
    rows = [
        [
            setting,
            _cell(summary, sweep, setting, DUAL, f"truth_ndcg_at_{k}"),
            _cell(summary, sweep, setting, DUAL, f"truth_ndcg_at_{k}", gain=True),
            _cell(summary, sweep, setting, DUAL, f"test_ndcg_at_{k}", gain=True),
            _cell(summary, sweep, setting, DUAL, "exposure_auc"),
            _cell(summary, sweep, setting, DUAL, "exposure_spearman"),
            _cell(summary, sweep, setting, DUAL, "exposure_effective_rank"),
        ]
        for setting in _settings(summary, sweep)
    ]
    return "\n\n".join([f"## {title}", intro, f"![{sweep}]({figure})", _markdown_table(header, rows)])


def _spectra_section(summary: pd.DataFrame, spectra: pd.DataFrame, figure: str, k: int) -> str:
    lines = summary[(summary["sweep"] == "spectra")][["setting", "model"]].drop_duplicates()
    rows = [
        [
            f"{line.model}, eigen {line.setting}",
            _cell(summary, "spectra", line.setting, line.model, "preference_effective_rank"),
            _cell(summary, "spectra", line.setting, line.model, "exposure_effective_rank"),
            _cell(summary, "spectra", line.setting, line.model, f"truth_ndcg_at_{k}"),
            _cell(summary, "spectra", line.setting, line.model, f"truth_ndcg_at_{k}", gain=True)
            if line.model != REFERENCE
            else "–",
        ]
        for line in lines.itertuples(index=False)
    ]
    truth = spectra[spectra["model"] == "truth"]
    truth_ranks = {
        tower: truth[truth["tower"] == tower].groupby("seed")["value"].apply(effective_rank).mean() for tower in KINDS
    }
    ranks = [f"{truth_ranks[tower]:.2f}" for tower in KINDS]
    rows.append(["truth (singular values)", *ranks, "–", "–"])
    header = ["fit", "preference eff. rank", "exposure eff. rank", f"truth N@{k}", f"gain over MF, truth N@{k}"]
    return "\n\n".join(
        [
            "## Hypothesis 3: spectra, with and without the eigen penalty",
            "The sorted e_j = ||U[:, j]|| · ||V[:, j]|| of each tower against the singular values of the true "
            "logit matrices, both divided by their largest; the effective rank is exp(entropy of e / Σe).",
            f"![spectra]({figure})",
            _markdown_table(header, rows),
        ]
    )


def _bias_section(summary: pd.DataFrame, world_statistics: pd.DataFrame, figure: str, k: int) -> str:
    header = [
        "β",
        "model",
        f"perfect click model, truth N@{k}",
        f"truth N@{k}",
        f"gain over MF, truth N@{k}",
        f"gain over MF, test N@{k}",
        "exposure AUC",
    ]
    oracle = world_statistics.groupby("bias_strength")[f"click_oracle_truth_ndcg_at_{k}"].agg(["mean", "std"])
    models = [REFERENCE, *bias_strength_models(summary)]
    rows = [
        [
            setting,
            model,
            _mean_std(*oracle.loc[float(setting)]),
            _cell(summary, "bias_strength", setting, model, f"truth_ndcg_at_{k}"),
            "–" if model == REFERENCE else _cell(summary, "bias_strength", setting, model, f"truth_ndcg_at_{k}", gain=True),
            "–" if model == REFERENCE else _cell(summary, "bias_strength", setting, model, f"test_ndcg_at_{k}", gain=True),
            _cell(summary, "bias_strength", setting, model, "exposure_auc"),
        ]
        for setting in _settings(summary, "bias_strength")
        for model in models
    ]
    return "\n\n".join(
        [
            "## The debiasing gain against the exposure-bias strength",
            "β scales all the structure of the true exposure logit; β = 0 shows items at random. Beside MF and "
            "the dual model, every other block of `sweeps.bias_strength_models` (the dual model with its exposure "
            "prior, `exposure.prior: popularity`), on the same worlds.",
            f"![bias strength]({figure})",
            _markdown_table(header, rows),
        ]
    )


def _methods_section(summary: pd.DataFrame, figure: str, k: int) -> str:
    truth_ndcg = f"truth_ndcg_at_{k}"
    header = [
        "β",
        "model",
        f"truth N@{k}",
        f"Δ truth N@{k} vs MF (p)",
        "truth Spearman",
        "Δ Spearman vs MF (p)",
        f"test N@{k}",
        f"Δ test N@{k} vs MF (p)",
    ]

    def versus(setting: str, model: str, metric: str) -> str:
        return "–" if model == REFERENCE else _cell(summary, "methods", setting, model, metric, gain=True)

    rows = [
        [
            setting,
            model,
            _cell(summary, "methods", setting, model, truth_ndcg),
            versus(setting, model, truth_ndcg),
            _cell(summary, "methods", setting, model, "preference_spearman"),
            versus(setting, model, "preference_spearman"),
            _cell(summary, "methods", setting, model, f"test_ndcg_at_{k}"),
            versus(setting, model, f"test_ndcg_at_{k}"),
        ]
        for setting in _settings(summary, "methods")
        for model in methods(summary)
    ]
    return "\n\n".join(
        [
            "## Every method against the truth",
            "Each block of `sweeps.methods` (the debiasing methods and the baselines, with the hyperparameters of "
            "their model pipelines, none tuned on the truth) at each β of `sweeps.methods_bias_strength`, on the "
            "same worlds: truth NDCG@K (the relevant set being the user's most preferred items without a train "
            "positive), the Spearman correlation of the preference score with the true preference over all pairs, "
            "and the thesis protocol's test NDCG@K; Δ is model − MF per seed, mean ± std, paired t-test p. "
            "The inverse-propensity methods weight clicks by the `propensity` block's estimate, as in the model "
            "pipelines; CausE trains on half the validation users.",
            f"![methods]({figure})",
            _markdown_table(header, rows),
        ]
    )


def _offpolicy_section(offpolicy_summary: pd.DataFrame, offpolicy_agreement: pd.DataFrame, k: int) -> str:
    metric = f"ndcg_at_{k}"
    pooled = offpolicy_summary[(offpolicy_summary["model"] == ALL_MODELS) & (offpolicy_summary["metric"] == metric)]
    agreement = offpolicy_agreement.set_index(["bias_strength", "metric", "estimator"])["spearman"]
    header = ["β", "estimator", "truth", "estimate", "bias", "variance", "sd", "RMSE", "median ESS", "Spearman over models"]
    rows = [
        [
            f"{line.bias_strength:g}",
            line.estimator,
            f"{line.truth:.3f}",
            f"{line.estimate:.3f}",
            f"{line.bias:+.3f}",
            f"{line.variance:.4f}",
            f"{line.sd:.3f}",
            f"{line.rmse:.3f}",
            f"{line.ess:.0f}",
            _mean_std(agreement.get((line.bias_strength, metric, line.estimator), float("nan")), float("nan"), 2),
        ]
        for line in pooled.itertuples(index=False)
    ]
    models = offpolicy_summary.loc[offpolicy_summary["model"] != ALL_MODELS, "model"].drop_duplicates().tolist()
    return "\n\n".join(
        [
            "## The off-policy estimators against the truth",
            f"Protocol `ips` on the same simulator: a held-out part of the biased log, each model ({', '.join(models)}) "
            "early-stopped on the log's validation carve-out, and every estimator compared with the metric of the "
            "same top-K lists on a full relevance draw from the true preference (every item exposed). "
            f"NDCG@{k}, pooled over the models and worlds: bias = mean(estimate − truth), variance and sd of that "
            "error, RMSE; the last column is the mean over worlds of Spearman's ρ between the models' estimates and "
            "their true values (1: the estimator orders the models as the truth does). Every model, metric and "
            "cut-off is in `offpolicy_summary.csv`.",
            _markdown_table(header, rows),
        ]
    )


def _best_setting(summary: pd.DataFrame, sweep: str, metric: str) -> str:
    rows = summary[(summary["sweep"] == sweep) & (summary["model"] == DUAL) & (summary["metric"] == metric)]
    return "–" if rows.empty or rows["mean"].isna().all() else str(rows.loc[rows["mean"].idxmax(), "setting"])


def _ran(summary: pd.DataFrame, sweep: str) -> bool:
    return bool((summary["sweep"] == sweep).any())


def _headline_section(
    summary: pd.DataFrame, world_statistics: pd.DataFrame, study_plan: StudyPlan, k: int
) -> str:
    truth_ndcg = f"truth_ndcg_at_{k}"
    strengths = _settings(summary, "bias_strength")
    eigen = str(study_plan.sweeps.eigen["form"])
    lines = [
        f"- Dual − MF, truth NDCG@{k}, on the default world: "
        f"{_cell(summary, 'models', 'default', DUAL, truth_ndcg, gain=True)}; "
        f"test NDCG@{k}: {_cell(summary, 'models', 'default', DUAL, f'test_ndcg_at_{k}', gain=True)}.",
        f"- Dual − MF, truth NDCG@{k}, at β = {strengths[0]}: "
        f"{_cell(summary, 'bias_strength', strengths[0], DUAL, truth_ndcg, gain=True)}; at β = {strengths[-1]}: "
        f"{_cell(summary, 'bias_strength', strengths[-1], DUAL, truth_ndcg, gain=True)}.",
        *[
            f"- {model} − MF, truth NDCG@{k}, at β = "
            + "; ".join(
                f"{strength}: {_cell(summary, 'bias_strength', strength, model, truth_ndcg, gain=True)}"
                for strength in strengths
            )
            + "."
            for model in bias_strength_models(summary)
            if model != DUAL
        ],
        f"- Exposure recovery of the default dual model: AUC "
        f"{_cell(summary, 'models', 'default', DUAL, 'exposure_auc')} (the truth's own: "
        f"{_cell(summary, 'models', 'default', DUAL, 'exposure_oracle_auc')}), Spearman "
        f"{_cell(summary, 'models', 'default', DUAL, 'exposure_spearman')}.",
        f"- Exposure size with the best exposure AUC: {_best_setting(summary, 'exposure_rank', 'exposure_auc')}, "
        f"with the best truth NDCG@{k}: {_best_setting(summary, 'exposure_rank', truth_ndcg)} "
        f"(true exposure rank {default_true_rank(world_statistics, study_plan)}).",
        f"- Exposure layers with the best exposure AUC: {_best_setting(summary, 'exposure_layers', 'exposure_auc')}, "
        f"with the best truth NDCG@{k}: {_best_setting(summary, 'exposure_layers', truth_ndcg)}.",
        f"- Effective rank of the exposure tower with the eigen penalty ({eigen}) and without: "
        f"{_cell(summary, 'spectra', eigen, DUAL, 'exposure_effective_rank')} and "
        f"{_cell(summary, 'spectra', 'none', DUAL, 'exposure_effective_rank')}; truth NDCG@{k} gain over MF "
        f"with it: {_cell(summary, 'spectra', eigen, DUAL, truth_ndcg, gain=True)}.",
    ]
    return "\n".join(["## Headline numbers", *lines])


def write_report(
    study_plan: StudyPlan,
    world_statistics: pd.DataFrame,
    summary: pd.DataFrame,
    spectra: pd.DataFrame,
    offpolicy_summary: pd.DataFrame,
    offpolicy_agreement: pd.DataFrame,
    evaluation: EvaluationConfig,
) -> str:
    """The study's Markdown report: tables of every sweep and the figures, embedded.

    The figures are embedded as PNG data URIs, so the one versioned file shows them
    wherever it is opened; they are also saved as their own versioned PNGs. A sweep left
    out by ``sweeps.only`` has no section (the headline numbers need every sweep).
    """
    k = evaluation_setup(evaluation, "synthetic").k
    # The summary comes back from its CSV: a run of numeric settings only (the methods
    # sweep alone: β 0, 1, 2) reads them as numbers, the sections match them as labels.
    summary = summary.astype({"setting": str})
    intro = (
        f"Every fit is measured by the thesis protocol on the unbiased test split (`test`) and against the "
        f"truth (`truth`): all items without a train positive ranked by the preference score, the relevant set "
        f"being the user's {study_plan.truth.top_n} items of highest true preference. Exposure recovery: the "
        "expected AUC and Spearman correlation of σ(ô) against the true exposure probabilities over all pairs "
        f"(a sample of {study_plan.truth.max_pairs} when there are more); the truth's own AUC is the ceiling. "
        f"Gains are model − MF per seed, mean ± std over {len(study_plan.seeds)} seeds, paired t-test p."
    )
    sections = ["# The study's hypotheses against the truth", intro]
    hypotheses = ("models", "exposure_rank", "exposure_layers", "spectra", "bias_strength")
    if all(_ran(summary, sweep) for sweep in hypotheses):
        true_rank = default_true_rank(world_statistics, study_plan)
        sections += [
            _headline_section(summary, world_statistics, study_plan, k),
            _world_section(world_statistics, study_plan, k),
            _models_section(summary, k),
            _exposure_section(
                summary,
                "exposure_rank",
                "Hypothesis 1: exposure rank",
                f"The dual model's exposure embedding size against the true exposure rank ({true_rank}).",
                _png_uri(plot_exposure_rank(summary, world_statistics, study_plan, evaluation)),
                k,
            ),
            _exposure_section(
                summary,
                "exposure_layers",
                "Hypothesis 2: exposure smoothness",
                "LightGCN layers of the dual model's exposure tower (0 = MF).",
                _png_uri(plot_exposure_layers(summary, evaluation)),
                k,
            ),
            _spectra_section(summary, spectra, _png_uri(plot_spectra(spectra)), k),
            _bias_section(summary, world_statistics, _png_uri(plot_bias_strength(summary, evaluation)), k),
        ]
    if _ran(summary, "methods"):
        sections.append(_methods_section(summary, _png_uri(plot_methods(summary, evaluation)), k))
    if not offpolicy_summary.empty:
        sections.append(_offpolicy_section(offpolicy_summary, offpolicy_agreement, k))
    return "\n\n".join(sections) + "\n"
