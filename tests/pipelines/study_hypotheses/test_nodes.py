"""The study_hypotheses nodes: the plan and its checks, gains and paired tests by hand,
and a whole run of the pipeline on a tiny world with ``SequentialRunner``."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib.figure
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from scipy import stats

from debias_pipeline.pipelines.study_hypotheses import pipeline as study_hypotheses
from debias_pipeline.pipelines.study_hypotheses.fits import SWEEPS as SWEEP_NAMES
from debias_pipeline.pipelines.study_hypotheses.fits import collect_sweeps, fit_key, fit_study
from debias_pipeline.pipelines.study_hypotheses.offpolicy import offpolicy_models
from debias_pipeline.pipelines.study_hypotheses.plan import plan_study
from debias_pipeline.pipelines.study_hypotheses.report import write_report
from debias_pipeline.pipelines.study_hypotheses.statistics import (
    paired_p_value,
    study_mlflow_metrics,
    summarize_study,
)
from debias_pipeline.pipelines.study_hypotheses.worlds import simulate_worlds
from debias_pipeline.pipelines.training import pipeline as training
from tests.test_end_to_end import latest_run, run_pipeline

CONF = Path(__file__).resolve().parents[3] / "conf" / "base"
EVALUATION = {"k": 5}
CPU = torch.device("cpu")
# binarization, split, evaluation and propensity: the blocks a world is made with
WORLD_BLOCKS = ({"threshold": 4}, {"validation_fraction": 0.25}, EVALUATION, {})


def small(**block: Any) -> dict[str, Any]:
    return {"epochs": 20, "patience": 5, "lr": 0.05, **block}


WORLD = {
    "preset": "coat_like",
    "n_users": 40,
    "n_items": 30,
    "rank": 2,
    "exposure_rank": 1,
    "train_ratings_per_user": 5.0,
    "test_items_per_user": 8,
}
MODELS = {
    "mf": {"name": "mf", **small(embedding_dim=8)},
    "dual": {"name": "dual", "preference": {"embedding_dim": 8}, "exposure": {"embedding_dim": 4}, **small()},
}
SWEEPS = {
    "exposure_rank": [1, 4],
    "exposure_layers": [0, 1],
    "eigen": {"form": "f2", "k": 1, "lambda_preference": 0.0, "lambda_exposure": -1e-4},
    "bias_strength": [0.0, 1.0],
    "methods_bias_strength": [0.0, 1.0],  # the worlds of the bias-strength sweep
}
SEEDS = [0, 1]
TRUTH = {"top_n": 3, "max_pairs": 600}
# The dual model with its exposure prior, fitted beside MF and the dual model at every β.
DUAL_PRIOR = {**MODELS["dual"], "exposure": {"embedding_dim": 4, "prior": "popularity", "prior_learned": True}}
PRIOR_MODELS = {**MODELS, "dual_prior": DUAL_PRIOR}
PRIOR_SWEEPS = {**SWEEPS, "bias_strength_models": ["mf", "dual", "dual_prior"]}


def plan(**changes: Any):
    arguments = {"world": WORLD, "seeds": SEEDS, "truth": TRUTH, "models": MODELS, "sweeps": SWEEPS, **changes}
    return plan_study(**arguments)


# ---- the plan ------------------------------------------------------------------------------------


def test_plan_lists_every_fit_of_every_sweep():
    study = plan()
    counts = {sweep: len(study.runs_of(sweep)) for sweep in SWEEP_NAMES}
    # models: 2 blocks; sizes: 2; layers: 2; spectra: mf, dual, dual + eigen; β: 2 x (mf, dual);
    # methods: β 0, 1 x (mf, dual); x 2 seeds
    assert counts == {
        "models": 4,
        "exposure_rank": 4,
        "exposure_layers": 4,
        "spectra": 6,
        "bias_strength": 8,
        "methods": 8,
    }
    sizes = {run.setting: run.block["exposure"]["embedding_dim"] for run in study.runs_of("exposure_rank")}
    assert sizes == {"1": 1, "4": 4}
    layers = {run.setting: run.block["exposure"]["num_layers"] for run in study.runs_of("exposure_layers")}
    assert layers == {"0": 0, "1": 1}
    eigen = [run for run in study.runs_of("spectra") if run.setting == "f2"]
    assert {run.block["eigen"]["lambda_exposure"] for run in eigen} == {-1e-4}
    assert {run.world for run in study.runs_of("bias_strength")} == {(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)}
    assert study.worlds() == [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]
    assert MODELS["dual"]["exposure"] == {"embedding_dim": 4}  # the inputs are not mutated


def test_plan_fits_the_dual_model_with_its_prior_at_every_bias_strength():
    study = plan(models=PRIOR_MODELS, sweeps=PRIOR_SWEEPS)
    bias = study.runs_of("bias_strength")
    # 2 β x (mf, dual, dual_prior) x 2 seeds; the models sweep has the prior model too
    assert len(bias) == 12 and len(study.runs_of("models")) == 6
    assert [run.model for run in bias if run.seed == 0 and run.bias_strength == 0.0] == ["mf", "dual", "dual_prior"]
    priors = {run.block["exposure"].get("prior", "none") for run in bias if run.model == "dual_prior"}
    assert priors == {"popularity"}
    # The prior model at the default β is the models sweep's fit; it is never the plain dual's.
    keys = {run.model: {fit_key(r) for r in study.runs if r.model == run.model} for run in study.runs}
    assert len(keys["dual_prior"]) == 2 * 2 and not keys["dual_prior"] & keys["dual"]
    # Without the option the sweep is MF and the dual model, as it was.
    assert {run.model for run in plan().runs_of("bias_strength")} == {"mf", "dual"}


def test_plan_runs_only_the_sweeps_named():
    study = plan(models=PRIOR_MODELS, sweeps={**PRIOR_SWEEPS, "methods": ["mf", "dual_prior"], "only": ["methods"]})
    assert {run.sweep for run in study.runs} == {"methods"}
    # 2 β x (mf, dual_prior) x 2 seeds; the plan keeps every checked block for the off-policy sweep
    assert len(study.runs) == 8 and set(study.blocks) == {"mf", "dual", "dual_prior"}
    assert not plan(sweeps={**SWEEPS, "only": ["offpolicy"]}).runs
    # from the command line: names separated by spaces (Kedro splits --params at commas)
    assert plan(sweeps={**SWEEPS, "only": "methods offpolicy"}).sweeps.only == ("methods", "offpolicy")
    assert plan(sweeps={**SWEEPS, "methods": "mf dual"}).sweeps.methods == ("mf", "dual")
    with pytest.raises(ValueError, match=r"study_hypotheses\.sweeps.*only names unknown sweeps \['method'\]"):
        plan(sweeps={**SWEEPS, "only": ["method"]})
    with pytest.raises(ValueError, match=r"'study_hypotheses\.sweeps\.methods' names 'relmf'"):
        plan(sweeps={**SWEEPS, "methods": ["mf", "relmf"]})
    with pytest.raises(ValueError, match=r"methods must list 'mf'"):
        plan(sweeps={**SWEEPS, "methods": ["dual"]})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"sweeps": {**PRIOR_SWEEPS, "bias_strength_models": ["dual", "dual_prior"]}},
            r"bias_strength_models must list 'mf'",
        ),
        (
            {"sweeps": {**SWEEPS, "bias_strength_models": ["mf", "dual_prior"]}},
            r"'study_hypotheses\.sweeps\.bias_strength_models' names 'dual_prior'",
        ),
        ({"sweeps": {**PRIOR_SWEEPS, "bias_strength_models": ["mf", "mf"]}}, r"study_hypotheses\.sweeps.*distinct"),
        (
            {"models": {**MODELS, "dual_prior": {**DUAL_PRIOR, "exposure": {"prior": "pop"}}}},
            r"study_hypotheses\.models\.dual_prior\.exposure\.prior' must be one of \['none', 'popularity'\]",
        ),
    ],
)
def test_plan_refuses_bad_prior_sweeps_naming_them(changes, message):
    with pytest.raises(ValueError, match=message):
        plan(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"world": {**WORLD, "n_users": "forty"}}, r"study_hypotheses\.world\.n_users"),
        ({"world": {"preset": "movielens"}}, r"study_hypotheses\.world\.preset"),
        ({"seeds": [0, 0]}, r"study_hypotheses\.seeds"),
        ({"seeds": []}, r"study_hypotheses\.seeds"),
        ({"truth": {"top_n": 0}}, r"study_hypotheses\.truth\.top_n"),
        ({"models": {"dual": MODELS["dual"]}}, r"study_hypotheses\.models\.mf"),
        (
            {"models": {**MODELS, "mf": {**MODELS["mf"], "embedding_dim": 0}}},
            r"study_hypotheses\.models\.mf\.embedding_dim",
        ),
        ({"sweeps": {**SWEEPS, "exposure_rank": [0, 4]}}, r"study_hypotheses\.sweeps"),
        ({"sweeps": {**SWEEPS, "eigen": {"form": "none"}}}, r"study_hypotheses\.sweeps\.eigen"),
        # f2 with k = 3 needs an exposure tower of 6 dimensions; the dual block has 4
        ({"sweeps": {**SWEEPS, "eigen": {**SWEEPS["eigen"], "k": 3}}}, r"study_hypotheses\.sweeps.*embedding_dim >= 6"),
        ({"sweeps": {**SWEEPS, "bias_strength": [-1.0]}}, r"study_hypotheses\.sweeps"),
    ],
)
def test_plan_refuses_bad_parameters_naming_them(changes, message):
    with pytest.raises(ValueError, match=message):
        plan(**changes)


def test_seeds_come_from_the_command_line_as_ranges():
    assert plan(seeds="0-1").seeds == plan(seeds="0 1").seeds == plan().seeds == (0, 1)
    assert plan(seeds=3).seeds == (3,)


def test_the_configured_study_plans():
    parameters = yaml.safe_load((CONF / "parameters_study_hypotheses.yml").read_text())["study_hypotheses"]
    study = plan_study(**parameters)
    assert study.config.preset == "coat_like"
    assert {run.sweep for run in study.runs} == set(SWEEP_NAMES)
    assert {run.model for run in study.runs_of("bias_strength")} == {"mf", "dual", "dual_prior"}
    blocks = {run.model: run.block for run in study.runs_of("models")}  # every default filled in
    prior = blocks["dual_prior"]["exposure"]
    assert (prior["prior"], prior["prior_learned"]) == ("popularity", True)
    # the prior model differs from the dual model by its prior alone
    assert {**blocks["dual_prior"], "exposure": {**prior, "prior": "none", "prior_learned": False}} == blocks["dual"]


def test_simulate_worlds_builds_each_world_once():
    study = plan()
    worlds, statistics = simulate_worlds(study, *WORLD_BLOCKS, CPU)
    assert set(worlds) == set(study.worlds())
    world = worlds[(1.0, 0)]
    assert world.train.interactions.shape == (40, 30)
    assert world.train.adjacency.shape == (70, 70)
    # The thesis protocol's evaluators over the unbiased rows: round(0.25 * 320) validation rows.
    assert world.evaluators.setup.protocol.name == "thesis" and world.evaluators.setup.cutoffs == (5,)
    assert world.evaluators.validation.users.size == 80
    assert world.evaluators.validation.users.size + world.evaluators.test.users.size == 40 * 8
    assert world.truth.n_users == 40
    # the propensity step of every world: the popularity estimate, one θ per item
    assert world.train.propensity.shape == (30,) and world.propensity["estimator"] == "popularity"
    assert len(statistics) == 4
    assert (statistics["true_exposure_rank"] == np.where(statistics["bias_strength"] == 0, 1, 2)).all()
    assert (statistics["target_users"] == 290).all()  # the preset's targets ride along
    # random exposure: a perfect click model ranks exactly as the true preference does
    random_exposure = statistics[statistics["bias_strength"] == 0]
    assert (random_exposure["click_oracle_truth_ndcg_at_5"] == 1.0).all()
    assert statistics["popularity_truth_ndcg_at_5"].between(0, 1).all()


# ---- gains and paired tests by hand ---------------------------------------------------------------


def test_paired_p_value_by_hand():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / √3) = 2√3, df = 2
    expected = 2 * stats.t.sf(2 * math.sqrt(3), df=2)
    assert paired_p_value(np.array([0.1, 0.2, 0.3])) == pytest.approx(expected)
    assert math.isnan(paired_p_value(np.array([0.1])))
    assert math.isnan(paired_p_value(np.array([0.2, 0.2])))


def runs_table(sweep: str, model: str, setting: str, ndcg: list[float], strength: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sweep": sweep,
            "setting": setting,
            "value": math.nan,
            "model": model,
            "bias_strength": strength,
            "seed": range(len(ndcg)),
            "truth_ndcg_at_5": ndcg,
            "test_ndcg_at_5": [0.5] * len(ndcg),
            "truth_recall_at_5": ndcg,
            "test_recall_at_5": [0.5] * len(ndcg),
            "exposure_auc": math.nan if model == "mf" else 0.7,
        }
    )


def test_summary_means_and_gains_by_hand():
    models = pd.concat(
        [
            runs_table("models", "mf", "default", [0.2, 0.3, 0.4]),
            runs_table("models", "dual", "default", [0.3, 0.5, 0.7]),
        ]
    )
    # the exposure-rank sweep has no MF of its own: its gains are against the models sweep's MF
    exposure_rank = runs_table("exposure_rank", "dual", "4", [0.2, 0.3, 0.4])
    bias = pd.concat(
        [
            runs_table("bias_strength", "mf", "0", [0.4, 0.4, 0.4], 0.0),
            runs_table("bias_strength", "dual", "0", [0.3, 0.5, 0.4], 0.0),
        ]
    )
    # the methods table at β 2: the gain in truth Spearman and its paired test
    methods = pd.concat(
        [
            runs_table("methods", "mf", "2", [0.2, 0.3, 0.4], 2.0).assign(preference_spearman=[0.5, 0.6, 0.7]),
            runs_table("methods", "relmf", "2", [0.2, 0.4, 0.3], 2.0).assign(preference_spearman=[0.6, 0.8, 0.6]),
        ]
    )
    empty = pd.DataFrame(columns=models.columns)
    summary = summarize_study(models, exposure_rank, empty, empty, bias, methods, EVALUATION)

    def line(sweep: str, model: str, metric: str = "truth_ndcg_at_5") -> pd.Series:
        rows = summary[(summary["sweep"] == sweep) & (summary["model"] == model) & (summary["metric"] == metric)]
        assert len(rows) == 1
        return rows.iloc[0]

    dual = line("models", "dual")
    assert (dual["mean"], dual["std"], dual["n"]) == (pytest.approx(0.5), pytest.approx(0.2), 3)
    # differences 0.1, 0.2, 0.3
    assert dual["gain_mean"] == pytest.approx(0.2) and dual["gain_std"] == pytest.approx(0.1)
    assert dual["gain_p_value"] == pytest.approx(paired_p_value(np.array([0.1, 0.2, 0.3])))
    assert line("exposure_rank", "dual")["gain_mean"] == pytest.approx(0.0)
    # β = 0 pairs with the β = 0 MF: differences -0.1, 0.1, 0
    bias = line("bias_strength", "dual")
    assert bias["gain_mean"] == pytest.approx(0.0) and bias["gain_std"] == pytest.approx(0.1)
    assert math.isnan(line("models", "mf")["gain_mean"])
    assert math.isnan(line("models", "mf", "exposure_auc")["mean"])
    # Spearman differences 0.1, 0.2, −0.1 against the β = 2 MF of the methods sweep: mean 0.2 / 3,
    # sd √(((0.1 − m)² + (0.2 − m)² + (−0.1 − m)²) / 2) = √(0.0466… / 2) = 0.1528
    spearman = line("methods", "relmf", "preference_spearman")
    assert spearman["mean"] == pytest.approx(2.0 / 3.0)
    assert spearman["gain_mean"] == pytest.approx(0.2 / 3) and spearman["gain_std"] == pytest.approx(0.152753, abs=1e-6)
    assert spearman["gain_p_value"] == pytest.approx(
        2 * stats.t.sf((0.2 / 3) / (0.152753 / math.sqrt(3)), df=2), rel=1e-4
    )
    # truth NDCG differences 0, 0.1, −0.1: no gain
    assert line("methods", "relmf")["gain_mean"] == pytest.approx(0.0)

    metrics = study_mlflow_metrics(summary, EVALUATION)
    assert metrics["models.default.dual.truth_ndcg_at_5"] == {"value": pytest.approx(0.5), "step": 0}
    assert metrics["models.default.dual.truth_ndcg_at_5_gain"]["value"] == pytest.approx(0.2)
    assert "models.default.mf.truth_ndcg_at_5_gain" not in metrics
    assert "models.default.mf.exposure_auc" not in metrics
    assert metrics["bias_strength.0.dual.exposure_auc"]["value"] == pytest.approx(0.7)


# ---- the whole pipeline on a tiny world --------------------------------------------------------------


class KeptMemoryDataset(MemoryDataset):
    """Not released by the runner, so intermediate outputs can be read after the run."""

    def _release(self) -> None:
        pass


FIGURES = ("exposure_rank", "exposure_layers", "spectra", "bias_strength", "methods")
KEPT = (
    "summary",
    "world_statistics",
    "spectra",
    "report",
    "mlflow_metrics",
    "offpolicy_summary",
    "offpolicy_agreement",
    "offpolicy_mlflow_metrics",
    *(f"{sweep}_runs" for sweep in (*SWEEP_NAMES, "offpolicy")),
    *(f"{figure}_plot" for figure in FIGURES),
)


@cache
def tiny_run() -> DataCatalog:
    parameters = {
        "study_hypotheses.world": WORLD,
        "study_hypotheses.seeds": SEEDS,
        "study_hypotheses.truth": TRUTH,
        "study_hypotheses.models": PRIOR_MODELS,
        "study_hypotheses.sweeps": PRIOR_SWEEPS,
        "study_hypotheses.workers": 1,
        "study_hypotheses.scheduler": None,
        "evaluation": EVALUATION,
        "binarization": {"threshold": 4},
        "split": {"validation_fraction": 0.25},
        "propensity": {},
        "device": "cpu",
    }
    datasets = {f"params:{name}": MemoryDataset(value) for name, value in parameters.items()}
    datasets["compute_device"] = MemoryDataset(copy_mode="assign")
    datasets["study_hypotheses.worlds"] = MemoryDataset(copy_mode="assign")
    for name in KEPT:
        datasets[f"study_hypotheses.{name}"] = KeptMemoryDataset()
    catalog = DataCatalog(datasets)
    SequentialRunner().run(training.create_device_pipeline() + study_hypotheses.create_pipeline(), catalog)
    return catalog


@pytest.mark.slow
def test_sweeps_share_identical_fits_and_two_workers_give_the_same_numbers():
    study = plan()
    study = dataclasses.replace(study, runs=tuple(run for run in study.runs if run.sweep != "methods"))
    worlds, _ = simulate_worlds(study, *WORLD_BLOCKS, CPU)
    sequential = fit_study(study, worlds, CPU, EVALUATION)
    # per seed, 13 runs: models (mf, dual), sizes 1 and 4, layers 0 and 1, spectra (mf, dual, eigen),
    # β 0 and 1 (mf, dual). The default β is 1.0, and the size-4 and 0-layer duals are the default
    # dual block (its exposure has 4 dimensions and no layers): 7 distinct fits per seed
    assert len(sequential) == len({fit_key(run) for run in study.runs}) == 14 < len(study.runs) == 26
    tables = dict(zip((*SWEEP_NAMES, "e_j"), collect_sweeps(study, sequential, worlds), strict=True))
    metric = "truth_ndcg_at_5"
    shared = [
        tables["models"].query("model == 'dual'")[metric].to_numpy(),
        tables["spectra"].query("model == 'dual' and setting == 'none'")[metric].to_numpy(),
        tables["bias_strength"].query("model == 'dual' and setting == '1'")[metric].to_numpy(),
        tables["exposure_rank"].query("setting == '4'")[metric].to_numpy(),
    ]
    for values in shared[1:]:
        np.testing.assert_array_equal(values, shared[0])

    parallel = fit_study(dataclasses.replace(study, workers=2), worlds, CPU, EVALUATION)
    measured = [c for c in sequential.columns if c not in ("spectra", "curves", "fit_seconds")]
    pd.testing.assert_frame_equal(parallel[measured], sequential[measured])
    assert parallel["curves"].tolist() == sequential["curves"].tolist()


def test_pipeline_reads_only_its_block_and_the_shared_parameters():
    assert study_hypotheses.create_pipeline().inputs() == {
        "compute_device",
        "params:evaluation",
        "params:binarization",
        "params:split",
        "params:propensity",
        *(f"params:study_hypotheses.{name}" for name in study_hypotheses.PLAN_PARAMETERS),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sweep", "rows"),
    [
        ("models", 6),
        ("exposure_rank", 4),
        ("exposure_layers", 4),
        ("spectra", 6),
        ("bias_strength", 12),
        ("methods", 8),
    ],
)
def test_every_fit_is_measured(sweep, rows):
    runs = tiny_run().load(f"study_hypotheses.{sweep}_runs")
    assert len(runs) == rows
    for metric in ("test_recall_at_5", "test_ndcg_at_5", "truth_recall_at_5", "truth_ndcg_at_5", "preference_auc"):
        assert runs[metric].between(0, 1).all(), metric
    dual = runs[runs["model"].isin(["dual", "dual_prior"])]
    assert dual["exposure_auc"].between(0, 1).all() and dual["exposure_effective_rank"].ge(1).all()
    assert runs.loc[runs["model"] == "mf", "exposure_auc"].isna().all()
    assert (runs["best_epoch"] <= runs["epochs_run"]).all()


@pytest.mark.slow
def test_spectra_table_holds_towers_and_truth():
    spectra = tiny_run().load("study_hypotheses.spectra")
    fits = spectra[spectra["model"] != "truth"].groupby(["setting", "model", "tower"])["j"].max().to_dict()
    assert fits == {
        ("f2", "dual", "exposure"): 4,
        ("f2", "dual", "preference"): 8,
        ("none", "dual", "exposure"): 4,
        ("none", "dual", "preference"): 8,
        ("none", "mf", "preference"): 8,
    }
    truth = spectra[spectra["model"] == "truth"]
    # the non-zero singular values: ranks 3 (rank 2 + item bias) and 2 (exposure rank 1 + offset/popularity)
    assert truth.groupby("tower")["j"].max().to_dict() == {"exposure": 2, "preference": 3}
    for _, group in spectra.groupby(["setting", "model", "tower", "seed"]):
        assert (np.diff(group.sort_values("j")["value"].to_numpy()) <= 1e-12).all()  # descending


def test_offpolicy_sweep_leaves_out_the_blocks_that_need_an_unbiased_sample() -> None:
    """CausE by its class, the dual model by its config (``supervision_weight``): both
    train on unbiased validation rows, which a biased log does not have."""
    models = {
        **PRIOR_MODELS,
        "cause": {"name": "cause", **small(embedding_dim=8)},
        "dual_supervised": {**MODELS["dual"], "exposure": {"embedding_dim": 4, "supervision_weight": 0.3}},
    }
    methods = ["mf", "dual", "dual_prior", "cause", "dual_supervised"]
    study = plan(models=models, sweeps={**PRIOR_SWEEPS, "methods": methods})
    assert offpolicy_models(study) == ["mf", "dual", "dual_prior"]


def test_report_of_the_methods_sweep_alone_after_its_csv(tmp_path: Path) -> None:
    """``sweeps.only: [methods]``: every setting is a β, so the summary's CSV reads them
    back as numbers; the report still writes the methods table, a row per (β, method)."""
    methods = pd.concat(
        [
            runs_table("methods", model, setting, ndcg, float(setting)).assign(preference_spearman=[0.5, 0.6, 0.7])
            for model, ndcg in (("mf", [0.2, 0.3, 0.4]), ("dual_prior", [0.2, 0.4, 0.3]))
            for setting in ("0", "2")
        ]
    )
    empty = pd.DataFrame(columns=methods.columns)
    summary = summarize_study(empty, empty, empty, empty, empty, methods, EVALUATION)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    loaded = pd.read_csv(tmp_path / "summary.csv")
    assert pd.api.types.is_integer_dtype(loaded["setting"])
    study = plan(models=PRIOR_MODELS, sweeps={**PRIOR_SWEEPS, "methods": ["mf", "dual_prior"], "only": ["methods"]})
    report = write_report(study, pd.DataFrame(), loaded, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), EVALUATION)
    table = report[report.index("## Every method against the truth") :]
    assert table.count("| mf |") == 2 and table.count("| dual_prior |") == 2
    assert "| 2 | dual_prior | 0.3000 ± 0.1000 |" in table


@pytest.mark.slow
def test_figures_report_and_metrics():
    catalog = tiny_run()
    for figure in FIGURES:
        assert isinstance(catalog.load(f"study_hypotheses.{figure}_plot"), matplotlib.figure.Figure)
    report = catalog.load("study_hypotheses.report")
    for heading in ("## The simulated world", "Hypothesis 1", "Hypothesis 2", "Hypothesis 3", "exposure-bias strength"):
        assert heading in report
    assert report.count("](data:image/png;base64,") == 5
    metrics = catalog.load("study_hypotheses.mlflow_metrics")
    assert "bias_strength.0.dual.truth_ndcg_at_5_gain" in metrics
    assert {"bias_strength.0.dual_prior.truth_ndcg_at_5_gain", "bias_strength.1.dual_prior.exposure_auc"} <= set(
        metrics
    )
    # The bias-strength table has one row per (β, model), the prior model included.
    bias = report[report.index("## The debiasing gain") : report.index("## Every method")]
    assert bias.count("| dual_prior |") == 2 and bias.count("| mf |") == 2 and bias.count("| dual |") == 2
    assert "- dual_prior − MF, truth NDCG@5, at β = 0:" in report
    assert all(set(value) == {"value", "step"} for value in metrics.values())
    summary = catalog.load("study_hypotheses.summary")
    assert set(summary["sweep"]) == set(SWEEP_NAMES)
    # The methods table: a row per (β, method), MF's without a paired test.
    methods = report[report.index("## Every method against the truth") : report.index("## The off-policy")]
    assert methods.count("| mf |") == 2 and methods.count("| dual |") == 2 and "(p " in methods
    assert "methods.0.dual.preference_spearman_gain_p" in metrics


@pytest.mark.slow
def test_offpolicy_sweep_measures_every_estimator_against_the_truth():
    catalog = tiny_run()
    runs = catalog.load("study_hypotheses.offpolicy_runs")
    # β 0 and 1 x 2 seeds x (mf, dual) x 4 estimators x (recall, ndcg, dcg) at K = 5
    assert len(runs) == 2 * 2 * 2 * 4 * 3
    assert set(runs["estimator"]) == {"naive", "ips", "snips", "dr"} and set(runs["metric"]) == {
        "recall_at_5",
        "ndcg_at_5",
        "dcg_at_5",
    }
    # the truth is the same lists on one relevance draw: the same for every estimator of a fit
    assert (runs.groupby(["bias_strength", "seed", "model", "metric"])["truth"].nunique() == 1).all()
    summary = catalog.load("study_hypotheses.offpolicy_summary")
    pooled = summary[summary["model"] == "all"]
    assert len(pooled) == 2 * 3 * 4 and (pooled["n"] == 4).all()
    naive = pooled[(pooled["estimator"] == "naive") & (pooled["metric"] == "ndcg_at_5")]
    assert (naive["bias"] < 0).all()  # the held-out log holds only what was shown: far below the truth
    metrics = catalog.load("study_hypotheses.offpolicy_mlflow_metrics")
    assert {"offpolicy.0.snips.ndcg_at_5_bias", "offpolicy.1.dr.ndcg_at_5_rmse"} <= set(metrics)
    assert "## The off-policy estimators against the truth" in catalog.load("study_hypotheses.report")


# ---- through KedroSession: the catalog, versioning and MLflow ---------------------------------------


@pytest.mark.slow
def test_kedro_run_saves_versioned_outputs_and_logs_them(project_copy: Path) -> None:
    tiny = {"epochs": 10, "patience": 3}
    version = run_pipeline(
        project_copy,
        "study_hypotheses",
        **{
            "study_hypotheses.world": WORLD,
            "study_hypotheses.seeds": SEEDS,
            "study_hypotheses.truth": TRUTH,
            "study_hypotheses.models.mf": {**MODELS["mf"], **tiny},
            "study_hypotheses.models.lightgcn": {"embedding_dim": 8, **tiny},
            "study_hypotheses.models.dual": {**MODELS["dual"], **tiny},
            "study_hypotheses.models.dual_prior": {**DUAL_PRIOR, **tiny},
            # the off-policy sweep runs in tiny_run (its split needs validation_fraction 0.25 on this world)
            "study_hypotheses.sweeps": {**PRIOR_SWEEPS, "methods": ["mf", "dual"], "only": list(SWEEP_NAMES)},
        },
    )
    saved = {
        path.relative_to(project_copy / "data").parts[:-2]
        for path in (project_copy / "data").rglob("*")
        if path.is_file() and version in path.parts
    }
    tables = {f"{sweep}_runs.csv" for sweep in (*SWEEP_NAMES, "offpolicy")}
    assert {("07_model_output", "study_hypotheses", name) for name in tables | {"spectra.csv"}} <= saved
    reporting = {"report.md", "summary.csv", "world_statistics.csv", *(f"{figure}.png" for figure in FIGURES)}
    reporting |= {"offpolicy_summary.csv", "offpolicy_agreement.csv"}
    assert {("08_reporting", "study_hypotheses", name) for name in reporting} <= saved
    report = project_copy / "data/08_reporting/study_hypotheses/report.md" / version / "report.md"
    assert "Hypothesis 3" in report.read_text()

    run = latest_run(project_copy)
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("study_hypotheses · ")
    assert 0 <= run.data.metrics["study_hypotheses.models.default.dual.truth_ndcg_at_5"] <= 1
    assert "study_hypotheses.bias_strength.0.dual.truth_ndcg_at_5_gain_p" in run.data.metrics
    client = mlflow.MlflowClient()
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    # 2 seeds x (7 distinct fits of mf and dual + the lightgcn block + dual_prior at β 1 and 0
    # + the other 12 blocks of the configured models, fitted by the models sweep at β 1)
    assert len(children) == 2 * 22
    served = " ".join(child.data.tags["study_hypotheses.sweeps"] for child in children)
    assert "models/default" in served and "exposure_rank/4" in served
    dual = next(c for c in children if c.data.params["model.name"] == "dual" and c.data.params["seed"] == "0")
    assert len(client.get_metric_history(dual.info.run_id, "train_loss")) == dual.data.metrics["epochs_run"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "study_hypotheses")}
    assert {"study_hypotheses/report.md", "study_hypotheses/summary.csv", "study_hypotheses/spectra.png"} <= artifacts


def test_a_study_of_the_offpolicy_sweep_alone_saves_tables_that_load(tmp_path: Path) -> None:
    """``sweeps.only: [offpolicy]`` draws no world of the thesis protocol; every table of the
    other sweeps is still a CSV that names its columns and loads back."""
    study = plan(sweeps={**SWEEPS, "only": ["offpolicy"]})
    worlds, statistics = simulate_worlds(study, *WORLD_BLOCKS, CPU)
    assert worlds == {} and statistics.empty
    fits = fit_study(study, worlds, CPU, EVALUATION)
    tables = collect_sweeps(study, fits, worlds)
    for index, table in enumerate((statistics, *tables)):
        path = tmp_path / f"{index}.csv"
        table.to_csv(path, index=False)
        assert pd.read_csv(path).empty
    summary = summarize_study(*tables[: len(SWEEP_NAMES)], EVALUATION)
    assert summary.empty and "gain_p_value" in summary.columns
