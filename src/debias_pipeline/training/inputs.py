"""What a training run reads: the protocol's split of the interactions, the train data
the models fit on and the evaluators, and a whole dataset processed in memory
(``process_dataset``: the data-processing pipeline's nodes in a row, for sweeps,
scripts, serving and tests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from debias_pipeline.data.features import encode_item_features, encode_user_features
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.processing import (
    binarize_ratings,
    build_normalized_adjacency,
    build_train_matrix,
    index_interactions,
    ingest_ratings,
)
from debias_pipeline.data.registry import dataset_spec
from debias_pipeline.data.simulation import GroundTruth
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.evaluation.protocols import EvaluationConfig, evaluation_setup
from debias_pipeline.evaluation.splits import ColdStartConfig, SplitConfig, split_for_protocol
from debias_pipeline.models.contract import LabelledPairs, Recommender, TrainData


def split_interactions(
    interactions: pd.DataFrame,
    split: SplitConfig,
    evaluation: EvaluationConfig,
    dataset: str,
    seed: int,
    cold_start: ColdStartConfig = ColdStartConfig(),  # noqa: B008 (frozen, so one default instance is safe)
) -> pd.DataFrame:
    """The split of the evaluation protocol (``protocols.split_for_protocol``;
    ``cold_start`` is read by that protocol only).

    Returns:
        Every row with ``split`` (train | validation | test) and ``role`` (input: seen
        by the model; target: evaluated), plus the sampled candidates of
        ``leave_one_out`` (label 0). Seeded by ``seed``.
    """
    setup = evaluation_setup(evaluation, dataset)
    return split_for_protocol(interactions, setup, split, dataset_spec(dataset), seed, cold_start)

def build_train_data(
    train_matrix: sp.csr_matrix,
    normalized_adjacency: sp.csr_matrix,
    user_features: pd.DataFrame,
    item_metadata: pd.DataFrame,
    social_edges: pd.DataFrame,
) -> TrainData:
    """What every model trains on: Y, Â, the encoded user and item features (None when
    the dataset has none) and the social graph (None without ties)."""
    n_users = train_matrix.shape[0]
    social = None
    if len(social_edges):
        u, f = social_edges["user"].to_numpy(), social_edges["friend"].to_numpy()
        ones = np.ones(2 * u.size, dtype=np.float32)
        social = sp.csr_matrix((ones, (np.r_[u, f], np.r_[f, u])), shape=(n_users, n_users))
    return TrainData(
        interactions=train_matrix,
        adjacency=normalized_adjacency,
        user_features=encode_user_features(user_features),
        item_features=encode_item_features(item_metadata),
        social=social,
    )

# The stream of the seeded draw of the treatment users, apart from the seed's other uses.
TREATMENT_STREAM = 0xCA05E


def treatment_split(model: Recommender, evaluators: Evaluators) -> tuple[LabelledPairs | None, Evaluators]:
    """The treatment set of a model that fits on an unbiased labelled sample
    (``needs_treatment``: CausE) and the evaluators it is early-stopped and judged by.

    The validation split is the run's only unbiased sample that is not test, and it must
    also serve early stopping and selection; so its users are shuffled with the model's
    seed and split in two halves: the rows of the first half (floor of half the users)
    are the treatment set, the validation evaluator keeps the rows of the other half.
    Whole users, not rows, so that each kept user is still ranked over all of that
    user's validation rows. Test is untouched. Any other model: ``None`` and
    ``evaluators`` as they are.

    Raises:
        ValueError: When the protocol is not ``thesis`` (only its validation rows are a
            random, labelled sample), or when the kept half has no positive row.
    """
    if not model.needs_treatment:  # an instance may set it from its config (the dual model)
        return None, evaluators
    protocol = evaluators.setup.protocol.name
    if protocol != "thesis":
        raise ValueError(
            f"{model.name} fits on an unbiased labelled sample cut from the validation split, which only the "
            f"'thesis' protocol has (items shown at random and rated); got evaluation.protocol {protocol!r}"
        )
    validation = evaluators.validation
    users = np.unique(validation.users)
    rng = np.random.default_rng([TREATMENT_STREAM, model.seed])
    treated = np.isin(validation.users, rng.permutation(users)[: users.size // 2])  # (n_rows,)
    sample = LabelledPairs(
        users=validation.users[treated],
        items=validation.items[treated],
        labels=(validation.labels[treated] > 0).astype(np.float32),
    )
    kept = ~treated
    if not np.any(validation.labels[kept] > 0):
        raise ValueError(
            f"{model.name}: the validation users left for early stopping have no positive row "
            f"({int(kept.sum())} rows) once half of them became the treatment set; raise split.validation_fraction"
        )
    stopping = dataclasses.replace(
        validation, users=validation.users[kept], items=validation.items[kept], labels=validation.labels[kept], _last={}
    )
    return sample, dataclasses.replace(evaluators, validation=stopping)


def treatment_inputs(model: Recommender, data: TrainData, evaluators: Evaluators) -> tuple[TrainData, Evaluators]:
    """What ``model`` fits on and the evaluators it is judged by: ``data`` with the
    treatment set of ``treatment_split`` (for a model that ``needs_treatment``), and
    those evaluators; ``data`` and ``evaluators`` as they are for any other model."""
    sample, evaluators = treatment_split(model, evaluators)
    return (data if sample is None else dataclasses.replace(data, treatment=sample)), evaluators


def build_evaluators(
    interaction_split: pd.DataFrame,
    train_matrix: sp.csr_matrix,
    evaluation: EvaluationConfig,
    dataset: str,
    dataset_summary: dict[str, Any],
    user_features: pd.DataFrame | None = None,
) -> Evaluators:
    """The validation and test evaluators of the run's protocol (see ``protocols``);
    ``cold_start`` falls back to the users with the same ``user_features``."""
    features = None if user_features is None else encode_user_features(user_features)
    return Evaluators.build(interaction_split, train_matrix, evaluation_setup(evaluation, dataset), dataset_summary, features)

@dataclass(frozen=True)
class ProcessedData:
    """What the data-processing pipeline makes of one dataset, held in memory."""

    ratings: pd.DataFrame
    ground_truth: GroundTruth | dict[str, np.ndarray]
    interactions: pd.DataFrame
    id_maps: pd.DataFrame
    item_metadata: pd.DataFrame
    user_features: pd.DataFrame
    social_edges: pd.DataFrame
    dataset_summary: dict[str, Any]
    interaction_split: pd.DataFrame
    train_matrix: sp.csr_matrix
    train_data: TrainData
    evaluators: Evaluators

def process_dataset(
    raw_data: RawData,
    dataset: str,
    *,
    seed: int = 0,
    synthetic: dict[str, Any] | None = None,
    binarization: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    cold_start: dict[str, Any] | None = None,
) -> ProcessedData:
    """The data-processing nodes in a row, in memory (for the sweeps of
    ``study_hypotheses`` and for tests); every block defaults to its defaults."""
    ratings, truth = ingest_ratings(raw_data, dataset, synthetic or {}, seed)
    labeled = binarize_ratings(ratings, binarization or {}, dataset)
    interactions, id_maps, items, users, social, summary = index_interactions(
        labeled, raw_data, truth, preprocessing or {}, dataset
    )
    interaction_split = split_interactions(interactions, split or {}, evaluation or {}, dataset, seed, cold_start or {})
    train_matrix = build_train_matrix(interaction_split, id_maps)
    train_data = build_train_data(train_matrix, build_normalized_adjacency(train_matrix), users, items, social)
    evaluators = build_evaluators(interaction_split, train_matrix, evaluation or {}, dataset, summary, users)
    return ProcessedData(
        ratings, truth, interactions, id_maps, items, users, social, summary, interaction_split, train_matrix, train_data, evaluators
    )

def process_synthetic(
    synthetic: dict[str, Any],
    binarization: dict[str, Any],
    split: dict[str, Any],
    evaluation: dict[str, Any],
    seed: int,
) -> tuple[pd.DataFrame, TrainData, Evaluators, GroundTruth]:
    """One simulated world through ``process_dataset``: its ratings, train data,
    evaluators and truth."""
    raw = RawData(name="synthetic", interactions=pd.DataFrame(), files={})
    data = process_dataset(
        raw, "synthetic", seed=seed, synthetic=synthetic, binarization=binarization, split=split, evaluation=evaluation
    )
    return data.ratings, data.train_data, data.evaluators, data.ground_truth
