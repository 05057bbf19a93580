"""Nodes that test the study's hypotheses against the simulator's truth.

A *world* is one draw of the simulator (``study_hypotheses.world``, a ``synthetic``
block: a preset plus overrides) at one exposure-bias strength and one seed; the seed
also sets the unbiased split and every initialization, so fits with the same seed are
paired. Worlds are built by the data-processing node functions, models by the
project's registry and training node, and every fit is measured twice: by the thesis
protocol on the unbiased test split, and against the truth (``debias_pipeline.truth``):
full ranking against each user's top-N true items, recovery of the true preference
and (dual model) of the true exposure, and the e_j spectra of the towers.

Sweeps, each over ``study_hypotheses.seeds``:

- ``models``: every block of ``study_hypotheses.models`` on the default world;
- ``exposure_rank``: the dual model's exposure embedding size;
- ``exposure_layers``: the dual model's exposure LightGCN layers;
- ``spectra``: MF, the dual model and the dual model with the eigen penalty;
- ``bias_strength``: MF and the dual model as the exposure-bias strength grows.

Gains are dual (or any model) minus MF on the same world and seed, with a paired t-test
over seeds.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402
from scipy import stats  # noqa: E402

from debias_pipeline.config import Params, as_mapping, build_config, require  # noqa: E402
from debias_pipeline.models import Recommender, TrainData, model_block  # noqa: E402
from debias_pipeline.models.dual import DualModel  # noqa: E402
from debias_pipeline.models.spectra import column_spectrum  # noqa: E402
from debias_pipeline.pipelines.data_processing.nodes import BinarizationConfig, process_synthetic  # noqa: E402
from debias_pipeline.pipelines.evaluation.nodes import evaluate_model  # noqa: E402
from debias_pipeline.protocols import EvaluationConfig, Evaluators, SplitConfig, evaluation_setup  # noqa: E402
from debias_pipeline.pipelines.training.nodes import train_model  # noqa: E402
from debias_pipeline.simulation import (  # noqa: E402
    KINDS,
    PRESET_TARGETS,
    GroundTruth,
    SyntheticConfig,
    ratings_statistics,
)
from debias_pipeline.truth import effective_rank, recovery_metrics, truth_ranking_metrics  # noqa: E402

logger = logging.getLogger(__name__)

REFERENCE = "mf"  # every gain is measured against this block of study_hypotheses.models
DUAL = "dual"
KEYS = ["sweep", "setting", "model", "bias_strength"]  # one summary line; the seeds vary within it
WHERE = "study_hypotheses"


class TruthConfig(Params):
    """How fits are measured against the truth.

    Attributes:
        top_n: size of each user's relevant set: the ``top_n`` items of highest true
            preference among those without a train positive.
        max_pairs: recovery metrics use all pairs up to this many, else a seeded
            sample of this many.
    """

    top_n: int = 10
    max_pairs: int = 1_000_000

    def check(self) -> None:
        require(self.top_n >= 1, f"top_n must be >= 1, got {self.top_n}")
        require(self.max_pairs >= 2, f"max_pairs must be >= 2, got {self.max_pairs}")


class SweepsConfig(Params):
    """The grids of the hypotheses (each fit is repeated over the seeds).

    Attributes:
        exposure_rank: exposure embedding sizes of the dual model.
        exposure_layers: LightGCN layer counts of the dual model's exposure tower.
        eigen: the dual model's ``eigen`` block for the spectra sweep (form f1, f2 or power).
        bias_strength: exposure-bias strengths β of the world (0 = random exposure).
    """

    exposure_rank: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 200)
    exposure_layers: tuple[int, ...] = (0, 1, 2, 3)
    eigen: dict[str, Any] = Field(
        default_factory=lambda: {"form": "f2", "k": 6, "lambda_preference": 0.0, "lambda_exposure": -1e-5}
    )
    bias_strength: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)

    def check(self) -> None:
        for name in ("exposure_rank", "exposure_layers", "bias_strength"):
            values = getattr(self, name)
            distinct = len(values) > 0 and len(set(values)) == len(values)
            require(distinct, f"{name} must list distinct values, got {values}")
        require(min(self.exposure_rank) >= 1, f"exposure_rank sizes must be >= 1, got {self.exposure_rank}")
        require(min(self.exposure_layers) >= 0, f"exposure_layers must be >= 0, got {self.exposure_layers}")
        require(min(self.bias_strength) >= 0, f"bias_strength values must be >= 0, got {self.bias_strength}")
        require(
            isinstance(self.eigen, Mapping) and self.eigen.get("form", "none") != "none",
            f"eigen must be a dual eigen block with form f1, f2 or power, got {self.eigen!r}",
        )


@dataclass(frozen=True)
class Run:
    """One fit: a model block on the world (bias_strength, seed), seeded by ``seed``."""

    sweep: str
    setting: str
    value: float  # the swept number (size, layers, β); NaN for named settings
    model: str  # the key of the block in study_hypotheses.models
    block: dict[str, Any]
    bias_strength: float
    seed: int

    @property
    def world(self) -> tuple[float, int]:
        return (self.bias_strength, self.seed)


@dataclass(frozen=True)
class StudyPlan:
    """Every fit of the study, checked before any of them runs."""

    world: dict[str, Any]  # the synthetic block of the default world
    config: SyntheticConfig  # that block, resolved
    seeds: tuple[int, ...]
    truth: TruthConfig
    sweeps: SweepsConfig
    runs: tuple[Run, ...]

    def runs_of(self, sweep: str) -> list[Run]:
        return [run for run in self.runs if run.sweep == sweep]

    def worlds(self) -> list[tuple[float, int]]:
        return sorted({run.world for run in self.runs})


@dataclass(frozen=True, eq=False)
class World:
    """One simulated dataset, processed as the data-processing pipeline does."""

    train: TrainData  # Y and Â
    evaluators: Evaluators  # the thesis protocol's validation and test splits
    truth: GroundTruth


def _with_exposure(block: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**block, "exposure": {**block.get("exposure", {}), **changes}}


def _checked_block(block: Any, where: str) -> dict[str, Any]:
    model_block(block, where)  # raises naming the parameter
    return dict(block)


def plan_study(
    world: SyntheticConfig,
    seeds: list[int],
    truth: TruthConfig,
    models: dict[str, dict[str, Any]],
    sweeps: SweepsConfig,
) -> StudyPlan:
    """Check every parameter of the study and list its fits.

    Args:
        world: the simulated world, a ``synthetic`` block (preset plus overrides).
        seeds: one world draw, split and initialization per seed.
        truth: ``TruthConfig`` parameters.
        models: model blocks by name; ``mf`` (the reference) and ``dual`` are required.
        sweeps: ``SweepsConfig`` parameters.

    Raises:
        ValueError: Naming the first bad parameter.
    """
    config = build_config(SyntheticConfig, world, f"{WHERE}.world")
    require(
        isinstance(seeds, list | tuple)
        and len(seeds) > 0
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        and len(set(seeds)) == len(seeds),
        f"parameter '{WHERE}.seeds' must list distinct non-negative integers, got {seeds!r}",
    )
    truth_config = build_config(TruthConfig, truth, f"{WHERE}.truth")
    sweeps_config = build_config(SweepsConfig, sweeps, f"{WHERE}.sweeps")
    require(isinstance(models, Mapping), f"parameter '{WHERE}.models' must be a mapping, got {models!r}")
    for name in (REFERENCE, DUAL):
        require(name in models, f"parameter '{WHERE}.models.{name}' is missing (the sweeps need it)")
    blocks = {name: _checked_block(block, f"{WHERE}.models.{name}") for name, block in models.items()}
    for strength in sweeps_config.bias_strength:
        build_config(SyntheticConfig, {**as_mapping(config), "bias_strength": strength}, f"{WHERE}.world")

    dual, default = blocks[DUAL], config.bias_strength
    where = f"{WHERE}.sweeps"
    variants: list[tuple[str, str, float, str, dict[str, Any], float]] = [
        ("models", "default", math.nan, name, block, default) for name, block in blocks.items()
    ]
    variants += [
        ("exposure_rank", str(size), float(size), DUAL, _with_exposure(dual, embedding_dim=size), default)
        for size in sweeps_config.exposure_rank
    ]
    variants += [
        ("exposure_layers", str(layers), float(layers), DUAL, _with_exposure(dual, num_layers=layers), default)
        for layers in sweeps_config.exposure_layers
    ]
    eigen = dict(sweeps_config.eigen)
    variants += [
        ("spectra", "none", math.nan, REFERENCE, blocks[REFERENCE], default),
        ("spectra", "none", math.nan, DUAL, dual, default),
        ("spectra", str(eigen["form"]), math.nan, DUAL, {**dual, "eigen": eigen}, default),
    ]
    for strength in sweeps_config.bias_strength:
        variants += [
            ("bias_strength", f"{strength:g}", strength, name, blocks[name], strength) for name in (REFERENCE, DUAL)
        ]
    checked = [(*variant[:4], _checked_block(variant[4], where), variant[5]) for variant in variants]
    runs = tuple(Run(*variant, seed) for variant in checked for seed in seeds)
    logger.info("Study plan: %d fits on %d worlds", len(runs), len({run.world for run in runs}))
    return StudyPlan(as_mapping(config), config, tuple(seeds), truth_config, sweeps_config, runs)


def _reference_rankers(world: World, k: int, top_n: int) -> dict[str, float]:
    """Truth NDCG@K of two fixed rankings: a perfect click model P(r)·P(o) (the best any
    fit of the clicks alone can rank) and the items' train popularity."""
    truth, train = world.truth, world.train.interactions
    popularity = np.asarray(train.sum(axis=0)).ravel()

    def clicks(users: np.ndarray) -> np.ndarray:
        return truth.probabilities("preference", users) * truth.probabilities("exposure", users)

    def popular(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(popularity, (len(users), popularity.size))

    return {
        f"click_oracle_truth_ndcg_at_{k}": truth_ranking_metrics(clicks, truth, train, k, top_n).ndcg,
        f"popularity_truth_ndcg_at_{k}": truth_ranking_metrics(popular, truth, train, k, top_n).ndcg,
    }


def simulate_worlds(
    study_plan: StudyPlan, binarization: BinarizationConfig, split: SplitConfig, evaluation: EvaluationConfig
) -> tuple[dict[tuple[float, int], World], pd.DataFrame]:
    """Draw every world of the plan and process it like the data-processing pipeline.

    Returns:
        The worlds by (bias_strength, seed), and one row of statistics per world:
        ``simulation.ratings_statistics``, the numerical ranks of the true logit
        matrices, the truth NDCG@K of a perfect click model and of train popularity
        (``_reference_rankers``), and the preset's targets as ``target_<statistic>``.
    """
    threshold = build_config(BinarizationConfig, binarization, "binarization").threshold or 4
    k = evaluation_setup(evaluation, "synthetic").k
    targets = PRESET_TARGETS.get(study_plan.config.preset, {})
    worlds: dict[tuple[float, int], World] = {}
    rows = []
    for strength, seed in study_plan.worlds():
        params = {**study_plan.world, "bias_strength": strength}
        ratings, train, evaluators, truth = process_synthetic(params, binarization, split, evaluation, seed)
        world = World(train=train, evaluators=evaluators, truth=truth)
        worlds[(strength, seed)] = world
        rows.append(
            {
                "bias_strength": strength,
                "seed": seed,
                **ratings_statistics(ratings, truth.n_users, truth.n_items, threshold),
                "true_preference_rank": truth.rank("preference"),
                "true_exposure_rank": truth.rank("exposure"),
                **_reference_rankers(world, k, study_plan.truth.top_n),
                **{f"target_{name}": value for name, value in targets.items()},
            }
        )
    return worlds, pd.DataFrame(rows)


def _spectra(model: Recommender) -> dict[str, np.ndarray]:
    if isinstance(model, DualModel):
        return model.spectra()
    with torch.no_grad():
        users, items = model.preference_embeddings()
        return {"preference": column_spectrum(users, items).cpu().numpy()}


def _fit_and_measure(
    run: Run, world: World, plan: StudyPlan, compute_device: torch.device, evaluation: EvaluationConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train one fit and measure it by the thesis protocol and against the truth."""
    started = time.perf_counter()
    model, _, _, _ = train_model(
        world.train, world.evaluators, run.block, run.seed, compute_device, where=f"{WHERE}.models.{run.model}"
    )
    fit_seconds = time.perf_counter() - started
    metrics, _, _ = evaluate_model(model, world.evaluators)
    k = world.evaluators.setup.k
    against_truth = truth_ranking_metrics(
        model.score, world.truth, world.train.interactions, k, plan.truth.top_n, plan.truth.max_pairs
    )
    preference = recovery_metrics(model.score(), world.truth, "preference", plan.truth.max_pairs, run.seed)
    exposure = {"auc": math.nan, "oracle_auc": math.nan, "spearman": math.nan}
    if isinstance(model, DualModel):
        scores = model.exposure_scores().cpu().numpy()
        exposure = recovery_metrics(scores, world.truth, "exposure", plan.truth.max_pairs, run.seed)
    spectra = _spectra(model)
    row = {
        "sweep": run.sweep,
        "setting": run.setting,
        "value": run.value,
        "model": run.model,
        "bias_strength": run.bias_strength,
        "seed": run.seed,
        "best_epoch": model.best_epoch,
        "epochs_run": len(model.history),
        f"validation_ndcg_at_{k}": metrics[f"validation_ndcg_at_{k}"],
        f"test_recall_at_{k}": metrics[f"test_recall_at_{k}"],
        f"test_ndcg_at_{k}": metrics[f"test_ndcg_at_{k}"],
        f"truth_recall_at_{k}": against_truth.recall,
        f"truth_ndcg_at_{k}": against_truth.ndcg,
        "preference_auc": preference["auc"],
        "preference_oracle_auc": preference["oracle_auc"],
        "preference_spearman": preference["spearman"],
        "exposure_auc": exposure["auc"],
        "exposure_oracle_auc": exposure["oracle_auc"],
        "exposure_spearman": exposure["spearman"],
        **{
            f"{tower}_effective_rank": effective_rank(spectra[tower]) if tower in spectra else math.nan
            for tower in KINDS
        },
        "true_preference_rank": world.truth.rank("preference"),
        "true_exposure_rank": world.truth.rank("exposure"),
        "fit_seconds": fit_seconds,
    }
    logger.info(
        "%s %s %s seed %d: truth NDCG@%d %.4f, test NDCG@%d %.4f, exposure AUC %.4f (%.1f s)",
        run.sweep,
        run.setting,
        run.model,
        run.seed,
        k,
        against_truth.ndcg,
        k,
        metrics[f"test_ndcg_at_{k}"],
        exposure["auc"],
        fit_seconds,
    )
    return row, spectra


def run_sweep(
    study_plan: StudyPlan,
    worlds: dict[tuple[float, int], World],
    compute_device: torch.device,
    evaluation: EvaluationConfig,
    *,
    sweep: str,
) -> pd.DataFrame:
    """Every fit of one sweep, one row each (see ``_fit_and_measure`` for the columns)."""
    rows = [
        _fit_and_measure(run, worlds[run.world], study_plan, compute_device, evaluation)[0]
        for run in study_plan.runs_of(sweep)
    ]
    return pd.DataFrame(rows)


def run_spectra_sweep(
    study_plan: StudyPlan,
    worlds: dict[tuple[float, int], World],
    compute_device: torch.device,
    evaluation: EvaluationConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The spectra sweep: its rows, and the e_j of every tower beside the true singular values.

    Returns:
        The rows of ``run_sweep``, and a long table (setting, model, seed, tower, j,
        value): e_j (j = 1..d, descending) of each fitted tower, and under model
        ``truth`` the non-zero singular values of the true logit matrices of each world.
    """
    rows, spectra = [], []
    for run in study_plan.runs_of("spectra"):
        row, towers = _fit_and_measure(run, worlds[run.world], study_plan, compute_device, evaluation)
        rows.append(row)
        spectra += [
            {"setting": run.setting, "model": run.model, "seed": run.seed, "tower": tower, "j": j, "value": value}
            for tower, values in towers.items()
            for j, value in enumerate(values, start=1)
        ]
    for strength, seed in sorted({run.world for run in study_plan.runs_of("spectra")}):
        truth = worlds[(strength, seed)].truth
        spectra += [
            {"setting": "truth", "model": "truth", "seed": seed, "tower": kind, "j": j, "value": value}
            for kind in KINDS
            for j, value in enumerate(truth.singular_values(kind)[: truth.rank(kind)], start=1)
        ]
    return pd.DataFrame(rows), pd.DataFrame(spectra)


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


def _gain_names(k: int) -> list[str]:
    return [f"truth_ndcg_at_{k}", f"truth_recall_at_{k}", f"test_ndcg_at_{k}", f"test_recall_at_{k}"]


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided p of a paired t-test (a one-sample t-test of the differences against 0);
    NaN with fewer than two pairs or differences that do not vary."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2 or np.ptp(differences) == 0:
        return math.nan
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
    evaluation: EvaluationConfig,
) -> pd.DataFrame:
    """Mean ± sample std over seeds of every metric of every sweep line, and the gains.

    Returns:
        A long table (sweep, setting, value, model, bias_strength, metric, mean, std, n,
        gain_mean, gain_std, gain_p_value); the gain columns are filled for models other
        than MF on the ranking metrics (truth and test Recall/NDCG@K).
    """
    k = evaluation_setup(evaluation, "synthetic").k
    runs = pd.concat(
        [models_runs, exposure_rank_runs, exposure_layers_runs, spectra_runs, bias_strength_runs], ignore_index=True
    )
    metrics = [name for name in _metric_names(k) if name in runs.columns]
    long = runs.melt(id_vars=[*KEYS, "seed"], value_vars=metrics, var_name="metric", value_name="score")
    long["score"] = long["score"].astype(np.float64)
    summary = long.groupby([*KEYS, "metric"], sort=False)["score"].agg(["mean", "std", "count"]).reset_index()
    summary = summary.rename(columns={"count": "n"})
    values = runs.drop_duplicates(["sweep", "setting"])[["sweep", "setting", "value"]]
    summary = summary.merge(values, on=["sweep", "setting"], how="left")
    summary = summary.merge(_gains(runs, _gain_names(k)), on=[*KEYS, "metric"], how="left")
    columns = ["sweep", "setting", "value", "model", "bias_strength", "metric", "mean", "std", "n"]
    return summary[[*columns, "gain_mean", "gain_std", "gain_p_value"]]


def study_mlflow_metrics(summary: pd.DataFrame, evaluation: EvaluationConfig) -> dict[str, dict[str, float | int]]:
    """The headline numbers as MLflow metrics ``<sweep>.<setting>.<model>.<metric>``.

    Means of the truth and test NDCG@K and of the exposure recovery; for models other
    than MF also ``..._gain`` (mean gain over MF) and ``..._gain_p`` (paired t-test).
    """
    k = evaluation_setup(evaluation, "synthetic").k
    headline = {f"truth_ndcg_at_{k}", f"test_ndcg_at_{k}", "exposure_auc", "exposure_spearman"}
    metrics: dict[str, dict[str, float | int]] = {}
    for line in summary[summary["metric"].isin(headline)].itertuples(index=False):
        name = f"{line.sweep}.{line.setting}.{line.model}.{line.metric}"
        for suffix, value in (("", line.mean), ("_gain", line.gain_mean), ("_gain_p", line.gain_p_value)):
            if value == value:  # NaN: no such number (MF has no gain, MF no exposure)
                metrics[name + suffix] = {"value": float(value), "step": 0}
    return metrics


# ---- figures ---------------------------------------------------------------------------------


def _line(summary: pd.DataFrame, sweep: str, model: str, metric: str) -> pd.DataFrame:
    rows = summary[(summary["sweep"] == sweep) & (summary["model"] == model) & (summary["metric"] == metric)]
    return rows.sort_values("value")


def _default_true_rank(world_statistics: pd.DataFrame, study_plan: StudyPlan) -> int:
    rows = world_statistics[world_statistics["bias_strength"] == study_plan.config.bias_strength]
    return int(rows["true_exposure_rank"].median())


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
    true_rank = _default_true_rank(world_statistics, study_plan)
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


def plot_bias_strength(summary: pd.DataFrame, evaluation: EvaluationConfig) -> plt.Figure:
    """Gain of the dual model over MF (truth and test NDCG@K) against the bias strength."""
    k = evaluation_setup(evaluation, "synthetic").k
    figure, axis = plt.subplots(figsize=(7, 4))
    for metric, label in ((f"truth_ndcg_at_{k}", "against the truth"), (f"test_ndcg_at_{k}", "thesis protocol (test)")):
        line = _line(summary, "bias_strength", DUAL, metric)
        axis.errorbar(line["value"], line["gain_mean"], yerr=line["gain_std"], marker="o", capsize=3, label=label)
    axis.axhline(0.0, color="tab:gray", linewidth=1)
    axis.set_xlabel("exposure-bias strength β (0 = random exposure)")
    axis.set_ylabel(f"NDCG@{k} gain, dual − MF (mean ± std)")
    axis.legend(fontsize="small")
    figure.tight_layout()
    plt.close(figure)
    return figure


# ---- report ----------------------------------------------------------------------------------


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
        + [_cell(summary, "models", "default", model, metric, gain=True) for metric in _gain_names(k)]
        for model in models
        if model != REFERENCE
    ]
    return "\n\n".join(
        [
            "## Every model against the truth and by the thesis protocol",
            _markdown_table(["model"] + [label for _, label in metrics], rows),
            "Gain over MF on the same worlds (mean ± std of the per-seed differences, paired t-test p):",
            _markdown_table(["model", *[f"{m} gain" for m in _gain_names(k)]], gains),
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
        f"perfect click model, truth N@{k}",
        f"MF truth N@{k}",
        f"dual truth N@{k}",
        f"gain, truth N@{k}",
        f"gain, test N@{k}",
        "exposure AUC",
    ]
    oracle = world_statistics.groupby("bias_strength")[f"click_oracle_truth_ndcg_at_{k}"].agg(["mean", "std"])
    rows = [
        [
            setting,
            _mean_std(*oracle.loc[float(setting)]),
            _cell(summary, "bias_strength", setting, REFERENCE, f"truth_ndcg_at_{k}"),
            _cell(summary, "bias_strength", setting, DUAL, f"truth_ndcg_at_{k}"),
            _cell(summary, "bias_strength", setting, DUAL, f"truth_ndcg_at_{k}", gain=True),
            _cell(summary, "bias_strength", setting, DUAL, f"test_ndcg_at_{k}", gain=True),
            _cell(summary, "bias_strength", setting, DUAL, "exposure_auc"),
        ]
        for setting in _settings(summary, "bias_strength")
    ]
    return "\n\n".join(
        [
            "## The debiasing gain against the exposure-bias strength",
            "β scales all the structure of the true exposure logit; β = 0 shows items at random.",
            f"![bias strength]({figure})",
            _markdown_table(header, rows),
        ]
    )


def _best_setting(summary: pd.DataFrame, sweep: str, metric: str) -> str:
    rows = summary[(summary["sweep"] == sweep) & (summary["model"] == DUAL) & (summary["metric"] == metric)]
    return "–" if rows.empty or rows["mean"].isna().all() else str(rows.loc[rows["mean"].idxmax(), "setting"])


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
        f"- Exposure recovery of the default dual model: AUC "
        f"{_cell(summary, 'models', 'default', DUAL, 'exposure_auc')} (the truth's own: "
        f"{_cell(summary, 'models', 'default', DUAL, 'exposure_oracle_auc')}), Spearman "
        f"{_cell(summary, 'models', 'default', DUAL, 'exposure_spearman')}.",
        f"- Exposure size with the best exposure AUC: {_best_setting(summary, 'exposure_rank', 'exposure_auc')}, "
        f"with the best truth NDCG@{k}: {_best_setting(summary, 'exposure_rank', truth_ndcg)} "
        f"(true exposure rank {_default_true_rank(world_statistics, study_plan)}).",
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
    evaluation: EvaluationConfig,
) -> str:
    """The study's Markdown report: tables of every sweep and the figures, embedded.

    The figures are embedded as PNG data URIs, so the one versioned file shows them
    wherever it is opened; they are also saved as their own versioned PNGs.
    """
    k = evaluation_setup(evaluation, "synthetic").k
    true_rank = _default_true_rank(world_statistics, study_plan)
    figures = {
        "exposure_rank": _png_uri(plot_exposure_rank(summary, world_statistics, study_plan, evaluation)),
        "exposure_layers": _png_uri(plot_exposure_layers(summary, evaluation)),
        "spectra": _png_uri(plot_spectra(spectra)),
        "bias_strength": _png_uri(plot_bias_strength(summary, evaluation)),
    }
    intro = (
        f"Every fit is measured by the thesis protocol on the unbiased test split (`test`) and against the "
        f"truth (`truth`): all items without a train positive ranked by the preference score, the relevant set "
        f"being the user's {study_plan.truth.top_n} items of highest true preference. Exposure recovery: the "
        "expected AUC and Spearman correlation of σ(ô) against the true exposure probabilities over all pairs "
        f"(a sample of {study_plan.truth.max_pairs} when there are more); the truth's own AUC is the ceiling. "
        f"Gains are model − MF per seed, mean ± std over {len(study_plan.seeds)} seeds, paired t-test p."
    )
    sections = [
        "# The study's hypotheses against the truth",
        intro,
        _headline_section(summary, world_statistics, study_plan, k),
        _world_section(world_statistics, study_plan, k),
        _models_section(summary, k),
        _exposure_section(
            summary,
            "exposure_rank",
            "Hypothesis 1: exposure rank",
            f"The dual model's exposure embedding size against the true exposure rank ({true_rank}).",
            figures["exposure_rank"],
            k,
        ),
        _exposure_section(
            summary,
            "exposure_layers",
            "Hypothesis 2: exposure smoothness",
            "LightGCN layers of the dual model's exposure tower (0 = MF).",
            figures["exposure_layers"],
            k,
        ),
        _spectra_section(summary, spectra, figures["spectra"], k),
        _bias_section(summary, world_statistics, figures["bias_strength"], k),
    ]
    return "\n\n".join(sections) + "\n"
