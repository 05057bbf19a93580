"""The off-policy estimators against the truth: the bias and spread of each estimator of
protocol ``ips`` on the simulator, for every block of ``sweeps.methods`` that needs no
unbiased sample, at every strength of ``sweeps.methods_bias_strength``.

For every (β, seed): the study's world at strength β split by protocol ``ips`` (a held-out
part of the biased log; the propensity step as everywhere), each model fitted with its
block (early-stopped on the log's validation carve-out), its test lists ranked, and every
estimator of ``evaluation.off_policy`` compared with the true metric: the same lists
scored on a full relevance draw r_ui ~ Bernoulli(P(like)) from the world's true
preference, what the metric would be had every item been exposed (DCG's expectation is
exact, Recall's and NDCG's ratio is over the draw). The spread is over worlds, so the
bootstrap interval of each estimate is not drawn (``n_boot`` 0).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from debias_pipeline.config.params import as_mapping
from debias_pipeline.data.processing import BinarizationConfig
from debias_pipeline.evaluation import offpolicy
from debias_pipeline.evaluation.off_policy_report import ALL_MODELS, estimator_errors, ranking_agreement
from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup
from debias_pipeline.evaluation.splits import SplitConfig
from debias_pipeline.experiments.parallel import run_tasks
from debias_pipeline.models.registry import build_model
from debias_pipeline.pipelines.study_hypotheses.plan import OFFPOLICY, WHERE, StudyPlan
from debias_pipeline.pipelines.study_hypotheses.worlds import build_world
from debias_pipeline.pipelines.training.nodes import train_model
from debias_pipeline.training.propensities import PropensityConfig

logger = logging.getLogger(__name__)

RUN_COLUMNS = ["bias_strength", "seed", "model", "estimator", "metric", "estimate", "truth", "ess"]
LIKED_STREAM = 11  # the seed stream of the relevance draw, apart from the world's own


def offpolicy_models(study_plan: StudyPlan) -> list[str]:
    """The blocks of ``sweeps.methods`` the sweep fits: those that need no unbiased sample
    (CausE, and the dual model with ``exposure.supervision_weight``, train on part of the
    thesis protocol's unbiased validation rows). A config can decide it, so each block is
    built (unfitted, on the CPU) and asked."""
    return [
        name
        for name in study_plan.sweeps.methods
        if not build_model(
            study_plan.blocks[name], f"{WHERE}.models.{name}", seed=0, device=torch.device("cpu")
        ).needs_treatment
    ]


def ranked_lists(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The users (n,) and their ranked items (n, depth), best first, from the predictions
    of a full-ranking evaluator (one row per user and rank)."""
    ordered = predictions.sort_values(["user", "rank"], kind="stable")
    users = ordered["user"].drop_duplicates().to_numpy(np.int64)
    return users, ordered["item"].to_numpy(np.int64).reshape(users.size, -1)


def _world_rows(
    study_plan: StudyPlan,
    models: list[str],
    binarization: BinarizationConfig,
    split: SplitConfig,
    evaluation: dict[str, Any],
    propensity: PropensityConfig,
    device: str,
    strength: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Every estimate of every model on the world (strength, seed), beside its truth."""
    device = torch.device(device)
    synthetic = {**study_plan.world, "bias_strength": strength}
    _, world = build_world(synthetic, binarization, split, evaluation, propensity, seed, device)
    truth, test = world.truth, world.evaluators.test
    # (n_users, n_items) one relevance draw from the true preference, shared by every model
    liked = np.random.default_rng([seed, LIKED_STREAM]).random((truth.n_users, truth.n_items))
    liked = liked < truth.probabilities("preference")
    setup = world.evaluators.setup
    rows = []
    for name in models:
        block = study_plan.blocks[name]
        model, *_ = train_model(world.train, world.evaluators, block, seed, device, where=f"{WHERE}.models.{name}")
        values, predictions = test.report(model)
        users, ranked = ranked_lists(predictions)
        logger.info("Off-policy sweep: %s, β %g, seed %d", name, strength, seed)
        for metric in setup.off_policy.metrics:
            for k in setup.cutoffs:
                true = offpolicy.true_value(ranked, liked, k, metric, users=users, mask=test.mask).value
                for estimator in setup.off_policy.estimators:
                    key = f"test_{estimator}_{metric}_at_{k}"
                    if key in values:  # snips and dr need the rated pairs of the log
                        rows.append(
                            {
                                "bias_strength": strength,
                                "seed": seed,
                                "model": name,
                                "estimator": estimator,
                                "metric": f"{metric}_at_{k}",
                                "estimate": values[key],
                                "truth": true,
                                "ess": values[f"{key}_ess"],
                            }
                        )
    return rows


def offpolicy_study(
    study_plan: StudyPlan,
    binarization: BinarizationConfig,
    split: SplitConfig,
    evaluation: EvaluationConfig,
    propensity: PropensityConfig,
    compute_device: torch.device,
) -> pd.DataFrame:
    """Every estimator of protocol ``ips`` against the true metric (module docstring).

    Args:
        study_plan: the plan (its world, seeds, ``sweeps.methods`` and
            ``sweeps.methods_bias_strength``); nothing is fitted when ``sweeps.only``
            leaves ``offpolicy`` out.
        binarization, split, propensity: the shared blocks.
        evaluation: the shared block; its protocol is set to ``ips`` and
            ``off_policy.n_boot`` to 0.
        compute_device: the resolved device.

    The worlds run on ``study_hypotheses.workers`` Dask processes (or the cluster of
    ``study_hypotheses.scheduler``), one world per task.

    Returns:
        One row per (bias_strength, seed, model, estimator, metric) with the estimate,
        the truth and the effective sample size of the weights.
    """
    if not study_plan.sweeps.runs(OFFPOLICY):
        return pd.DataFrame(columns=RUN_COLUMNS)
    block = as_mapping(evaluation)
    ips = {**block, "protocol": "ips", "off_policy": {**as_mapping(block.get("off_policy", {})), "n_boot": 0}}
    models = offpolicy_models(study_plan)
    left_out = sorted(set(study_plan.sweeps.methods) - set(models))
    if left_out:
        logger.info("Off-policy sweep: %s left out (they need an unbiased sample)", ", ".join(left_out))
    shared = (study_plan, models, binarization, split, ips, propensity, str(compute_device))
    worlds = [(strength, seed) for strength in study_plan.sweeps.methods_bias_strength for seed in study_plan.seeds]
    # one world per task, on the study's Dask workers (in this process with one worker)
    rows = run_tasks(_world_rows, shared, worlds, study_plan.workers, study_plan.scheduler)
    return pd.DataFrame([row for world in rows for row in world], columns=RUN_COLUMNS)


def summarize_offpolicy(offpolicy_runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The errors of every estimator (``estimator_errors``) and how each orders the
    models like the truth (``ranking_agreement``)."""
    return estimator_errors(offpolicy_runs), ranking_agreement(offpolicy_runs)


def offpolicy_mlflow_metrics(
    offpolicy_summary: pd.DataFrame, evaluation: EvaluationConfig
) -> dict[str, dict[str, float | int]]:
    """The pooled bias and RMSE of each estimator's NDCG@K at each β as MLflow metrics
    ``offpolicy.<β>.<estimator>.ndcg_at_<k>_{bias,rmse}``."""
    metric = f"ndcg_at_{evaluation_setup(evaluation, 'synthetic').k}"
    lines = offpolicy_summary[(offpolicy_summary["model"] == ALL_MODELS) & (offpolicy_summary["metric"] == metric)]
    return {
        f"offpolicy.{line.bias_strength:g}.{line.estimator}.{metric}_{name}": {"value": float(value), "step": 0}
        for line in lines.itertuples(index=False)
        for name, value in (("bias", line.bias), ("rmse", line.rmse))
        if not math.isnan(value)
    }
