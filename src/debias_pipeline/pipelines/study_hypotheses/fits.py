"""The fits of the study: every distinct (model block, world, seed) of the plan trained
once, in parallel on Dask workers, each measured by the thesis protocol and against the
truth and logged as a nested MLflow run; then the tables of the sweeps.

Sweeps that list the same fit (the default MF and dual model appear in ``models``, in
``spectra`` and at the default strength of ``bias_strength``) share it: fits are
deterministic given their seed on the CPU, so a second one would repeat the first.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from debias_pipeline.config.params import as_mapping
from debias_pipeline.data.simulation import KINDS
from debias_pipeline.evaluation.protocols import EvaluationConfig
from debias_pipeline.evaluation.truth import effective_rank, recovery_metrics, truth_ranking_metrics
from debias_pipeline.experiments.parallel import run_tasks
from debias_pipeline.models.contract import Recommender
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.registry import model_block
from debias_pipeline.models.spectra import column_spectrum
from debias_pipeline.pipelines.evaluation.nodes import evaluate_model
from debias_pipeline.pipelines.study_hypotheses.plan import SWEEPS, WHERE, Run, StudyPlan
from debias_pipeline.pipelines.study_hypotheses.worlds import World
from debias_pipeline.pipelines.training.nodes import train_model
from debias_pipeline.training.tracking import flat_params, log_nested_run

logger = logging.getLogger(__name__)

IDENTITY = ["sweep", "setting", "value", "model", "bias_strength", "seed"]  # a run's columns from the plan
RIDERS = ("key", "spectra", "curves")  # a fit's entries that are not measurements


def fit_key(run: Run) -> str:
    """What makes two runs the same fit: the model with every default resolved (a block
    that spells out a default is the same model), the world and the seed."""
    block = model_block(run.block, f"{WHERE}.models.{run.model}")
    model = {"name": run.block["name"], **as_mapping(block.config)}
    return json.dumps([model, run.bias_strength, run.seed], sort_keys=True, default=str)


def _spectra(model: Recommender) -> dict[str, np.ndarray]:
    if isinstance(model, DualModel):
        return model.spectra()
    if not hasattr(model, "preference_embeddings"):  # no embeddings: MostPop, ItemKNN, EASE
        return {}
    with torch.no_grad():
        users, items = model.preference_embeddings()
        return {"preference": column_spectrum(users, items).cpu().numpy()}


def measure_fit(
    plan: StudyPlan, worlds: dict[tuple[float, int], World], device: str, evaluation: EvaluationConfig, run: Run
) -> dict[str, Any]:
    """Train one fit on its world and measure it by the thesis protocol and against the
    truth; its learning curves and tower spectra ride along (``curves``, ``spectra``)."""
    world = worlds[run.world]
    started = time.perf_counter()
    model, _, curves, _ = train_model(
        world.train, world.evaluators, run.block, run.seed, torch.device(device), where=f"{WHERE}.models.{run.model}"
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
    logger.info(
        "%s %s %s seed %d: truth NDCG@%d %.4f, test NDCG@%d %.4f, exposure AUC %.4f (%.1f s)",
        run.sweep, run.setting, run.model, run.seed, k, against_truth.ndcg, k, metrics[f"test_ndcg_at_{k}"],
        exposure["auc"], fit_seconds,
    )
    return {
        "key": fit_key(run),
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
        "spectra": spectra,
        "curves": curves,
    }


def fit_study(
    study_plan: StudyPlan,
    worlds: dict[tuple[float, int], World],
    compute_device: torch.device,
    evaluation: EvaluationConfig,
) -> pd.DataFrame:
    """Every distinct fit of the plan, once, on ``study_hypotheses.workers`` Dask workers
    (or the cluster of ``study_hypotheses.scheduler``; in this process with one worker).

    Each fit is a nested MLflow run of the active run: its block, world and seed as
    parameters, the sweeps it serves as a tag, its measurements and learning curves.

    Returns:
        One line per fit: ``key`` (``fit_key``), the measurements of ``measure_fit``,
        ``spectra`` and ``curves``.
    """
    served: dict[str, list[Run]] = {}
    for run in study_plan.runs:
        served.setdefault(fit_key(run), []).append(run)
    first = [runs[0] for runs in served.values()]
    logger.info("Study fits: %d distinct of %d runs", len(first), len(study_plan.runs))
    shared = (study_plan, worlds, str(compute_device), evaluation)
    fits = run_tasks(measure_fit, shared, [(run,) for run in first], study_plan.workers, study_plan.scheduler)
    for run, fit in zip(first, fits, strict=True):
        measured = {key: value for key, value in fit.items() if key not in RIDERS}
        log_nested_run(
            f"{run.model} · β {run.bias_strength:g} · seed {run.seed}",
            {"model_key": run.model, "bias_strength": run.bias_strength, "seed": run.seed, **flat_params(run.block, "model")},
            measured,
            fit["curves"],
            tags={"study_hypotheses.sweeps": ", ".join(f"{r.sweep}/{r.setting}" for r in served[fit["key"]])},
        )
    return pd.DataFrame(fits)


def collect_sweeps(
    study_plan: StudyPlan, fits: pd.DataFrame, worlds: dict[tuple[float, int], World]
) -> tuple[pd.DataFrame, ...]:
    """The table of each sweep (one row per run: its place in the plan and its fit's
    measurements) and the spectra table.

    Returns:
        The run tables of ``SWEEPS`` (``models``, ``exposure_rank``, ``exposure_layers``,
        ``spectra``, ``bias_strength``, ``methods``; empty for a sweep not run); then a long table (setting, model, seed, tower, j, value):
        e_j (j = 1..d, descending) of each tower fitted in the spectra sweep, and under
        model ``truth`` the non-zero singular values of the true logit matrices of each
        of its worlds.
    """
    by_key = fits.set_index("key") if "key" in fits else fits
    measured = [column for column in fits.columns if column not in RIDERS]

    def table(sweep: str) -> pd.DataFrame:
        runs = study_plan.runs_of(sweep)
        if not runs:  # a sweep left out by sweeps.only
            return pd.DataFrame(columns=[*IDENTITY, *measured])
        identity = pd.DataFrame([[getattr(run, c) for c in IDENTITY] for run in runs], columns=IDENTITY)
        values = by_key.loc[[fit_key(run) for run in runs], measured].reset_index(drop=True)
        return pd.concat([identity, values], axis=1)

    spectra = [
        {"setting": run.setting, "model": run.model, "seed": run.seed, "tower": tower, "j": j, "value": value}
        for run in study_plan.runs_of("spectra")
        for tower, values in by_key.at[fit_key(run), "spectra"].items()
        for j, value in enumerate(values, start=1)
    ]
    for strength, seed in sorted({run.world for run in study_plan.runs_of("spectra")}):
        truth = worlds[(strength, seed)].truth
        spectra += [
            {"setting": "truth", "model": "truth", "seed": seed, "tower": kind, "j": j, "value": value}
            for kind in KINDS
            for j, value in enumerate(truth.singular_values(kind)[: truth.rank(kind)], start=1)
        ]
    columns = ["setting", "model", "seed", "tower", "j", "value"]
    return (*(table(sweep) for sweep in SWEEPS), pd.DataFrame(spectra, columns=columns))
