"""The worlds of the study: one simulator draw per (bias strength, seed), processed as the
data-processing pipeline processes a dataset, with the statistics of each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from debias_pipeline.config.params import build_config
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.processing import BinarizationConfig
from debias_pipeline.data.simulation import PRESET_TARGETS, GroundTruth, ratings_statistics
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup
from debias_pipeline.evaluation.splits import SplitConfig
from debias_pipeline.evaluation.truth import truth_ranking_metrics
from debias_pipeline.models.contract import TrainData
from debias_pipeline.pipelines.study_hypotheses.plan import StudyPlan
from debias_pipeline.training.inputs import ProcessedData, process_dataset
from debias_pipeline.training.propensities import PropensityConfig, attach_propensities, estimate_propensities


@dataclass(frozen=True, eq=False)
class World:
    """One simulated dataset, processed as the data-processing pipeline does."""

    train: TrainData  # Y and Â, with the propensity of each train positive
    evaluators: Evaluators  # the protocol's validation and test splits
    truth: GroundTruth
    propensity: dict[str, Any]  # the report of the propensity estimate


def build_world(
    synthetic: dict[str, Any],
    binarization: BinarizationConfig,
    split: SplitConfig,
    evaluation: EvaluationConfig,
    propensity: PropensityConfig,
    seed: int,
    device: torch.device,
) -> tuple[ProcessedData, World]:
    """One simulator draw through the data-processing nodes and the propensity step, as
    a model pipeline gets it (``weighted_train_data``): the inverse-propensity methods
    weight clicks by the ``propensity`` block's estimate."""
    raw = RawData(name="synthetic", interactions=pd.DataFrame(), files={})
    data = process_dataset(
        raw, "synthetic", seed=seed, synthetic=synthetic, binarization=binarization, split=split, evaluation=evaluation
    )
    propensities, report = estimate_propensities(
        data.interaction_split, data.train_data, data.evaluators, data.ground_truth, propensity, seed, device
    )
    train = attach_propensities(data.train_data, propensities)
    return data, World(train=train, evaluators=data.evaluators, truth=data.ground_truth, propensity=report)


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
    study_plan: StudyPlan,
    binarization: BinarizationConfig,
    split: SplitConfig,
    evaluation: EvaluationConfig,
    propensity: PropensityConfig,
    compute_device: torch.device,
) -> tuple[dict[tuple[float, int], World], pd.DataFrame]:
    """Draw every world of the plan and process it like the data-processing pipeline
    and the propensity step (``build_world``).

    Returns:
        The worlds by (bias_strength, seed), and one row of statistics per world:
        ``simulation.ratings_statistics``, the numerical ranks of the true logit
        matrices, the truth NDCG@K of a perfect click model and of train popularity
        (``_reference_rankers``), the numbers of the propensity report as
        ``propensity_<key>``, and the preset's targets as ``target_<statistic>``.
    """
    threshold = build_config(BinarizationConfig, binarization, "binarization").threshold or 4
    k = evaluation_setup(evaluation, "synthetic").k
    targets = PRESET_TARGETS.get(study_plan.config.preset, {})
    worlds: dict[tuple[float, int], World] = {}
    rows = []
    for strength, seed in study_plan.worlds():
        params = {**study_plan.world, "bias_strength": strength}
        data, world = build_world(params, binarization, split, evaluation, propensity, seed, compute_device)
        worlds[(strength, seed)] = world
        truth = world.truth
        rows.append(
            {
                "bias_strength": strength,
                "seed": seed,
                **ratings_statistics(data.ratings, truth.n_users, truth.n_items, threshold),
                "true_preference_rank": truth.rank("preference"),
                "true_exposure_rank": truth.rank("exposure"),
                **_reference_rankers(world, k, study_plan.truth.top_n),
                **{
                    f"propensity_{key}": value
                    for key, value in world.propensity.items()
                    if isinstance(value, int | float) and not isinstance(value, bool)
                },
                **{f"target_{name}": value for name, value in targets.items()},
            }
        )
    if not rows:  # sweeps.only ran the off-policy sweep alone: a table that still names its columns
        return worlds, pd.DataFrame(columns=["bias_strength", "seed", "true_preference_rank", "true_exposure_rank"])
    return worlds, pd.DataFrame(rows)
