"""Propensity estimation as a step of every run: P(o_ui = 1), the probability that user u
was exposed to item i, for each train positive, by the estimator of the ``propensity``
block, with a report of what it estimated (and, on the simulator, how close it is to the
true exposure).

The estimators are those of ``evaluation.propensity``:

- ``popularity``: θ_i = c · (pop_i / max pop)^η. η is fitted by maximum likelihood
  against the rated pairs when the data has them (Coat and Yahoo! R3 rate items a user
  did not like: every rated pair was exposed, only the liked ones are clicks); on a log
  of clicks alone η is not identified and ``eta`` (default Rel-MF's 0.5, c = 1) is used.
- ``naive_bayes`` (Schnabel et al., ICML 2016): P(O = 1 | Y = y) = P(Y = y | O = 1) ·
  P(O = 1) / P(Y = y), with P(Y = y) from the unbiased validation sample (a dataset with
  an unbiased set only), on the rating values.
- ``logistic``: σ(b + a_u + c_i (+ user and item features)) fitted on the rated pairs
  against sampled unrated ones.
- ``dual_exposure``: σ(ô_ui) of a dual model (the block ``propensity.exposure_model``,
  the study's dual model by default) fitted on the run's train data, early-stopped on
  its validation split.
- ``none``: no estimate; each inverse-propensity method says what it falls back to.

Every estimate is clipped from below at ``clip`` (a click weighs at most 1 / clip).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from debias_pipeline.config.params import Params, build_config, require
from debias_pipeline.data.processing import pair_matrix
from debias_pipeline.data.simulation import GroundTruth
from debias_pipeline.evaluation import propensity as estimators
from debias_pipeline.evaluation.evaluators import Evaluators
from debias_pipeline.evaluation.offpolicy import kish_ess
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model, model_block

logger = logging.getLogger(__name__)

Estimator = Literal["popularity", "naive_bayes", "logistic", "dual_exposure", "none"]
COLUMNS = ["user", "item", "propensity"]
ITEM_LEVEL = -1  # the user of a row that holds an item's propensity for every user
# Pairs on which an estimate is scored against the simulator's true exposure: every pair
# of a world up to this size, else a seeded sample of this many.
TRUTH_PAIRS = 1 << 20


class PropensityConfig(Params):
    """The ``propensity`` parameter block.

    Attributes:
        estimator: ``popularity`` | ``naive_bayes`` | ``logistic`` | ``dual_exposure`` |
            ``none`` (see the module docstring).
        eta: the popularity exponent η; ``None`` fits it where the data has rated pairs
            that were not clicked, else Rel-MF's 0.5.
        clip: the floor of every propensity, in (0, 1].
        smoothing: ``naive_bayes``: add-``smoothing`` counts of each rating value.
        l2: ``logistic``: the L2 penalty of its weights.
        negative_ratio: ``logistic``: sampled unrated pairs per rated pair.
        exposure_model: ``dual_exposure``: the model block of the dual model whose
            exposure tower gives the estimate (a block like ``dual.model``; its own, so
            that the model trained by a pipeline is not checked against this use).
    """

    estimator: Estimator = "popularity"
    eta: float | None = None
    clip: float = estimators.DEFAULT_CLIP
    smoothing: float = 1.0
    l2: float = 1.0
    negative_ratio: float = 4.0
    exposure_model: dict[str, Any] = {"name": "dual"}

    def check(self) -> None:
        require(self.eta is None or 0 <= self.eta <= 4, f"eta must be in [0, 4] or null, got {self.eta}")
        require(0 < self.clip <= 1, f"clip must be in (0, 1], got {self.clip}")
        require(self.smoothing >= 0, f"smoothing must be >= 0, got {self.smoothing}")
        require(self.l2 >= 0, f"l2 must be >= 0, got {self.l2}")
        require(self.negative_ratio > 0, f"negative_ratio must be > 0, got {self.negative_ratio}")
        block = model_block(self.exposure_model, "propensity.exposure_model")
        require(block.name == "dual", f"exposure_model must be a dual model block, got name {block.name!r}")


def _train_rows(interaction_split: pd.DataFrame) -> pd.DataFrame:
    """The rows a model may learn from: every rated pair of the train split (negatives too)."""
    return interaction_split[interaction_split["split"] == "train"]


def _dual_exposure(
    train_data: TrainData, evaluators: Evaluators, block: dict[str, Any], seed: int, device: torch.device
) -> np.ndarray:
    """σ(ô) of the dual model of ``block`` fitted on ``train_data``, (n_users, n_items)."""
    model = build_model(block, "propensity.exposure_model", seed=seed, device=device)
    model.fit(train_data, validation=evaluators.validation)
    return torch.sigmoid(model.exposure_scores()).cpu().numpy().astype(np.float64)


def _truth_pairs(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_users, n_items = shape
    if n_users * n_items <= TRUTH_PAIRS:
        users, items = np.divmod(np.arange(n_users * n_items, dtype=np.int64), n_items)
        return users, items
    rng = np.random.default_rng([seed, 7])
    return rng.integers(0, n_users, TRUTH_PAIRS), rng.integers(0, n_items, TRUTH_PAIRS)


def estimate_propensities(
    interaction_split: pd.DataFrame,
    train_data: TrainData,
    evaluators: Evaluators,
    ground_truth: GroundTruth | dict[str, Any],
    propensity: PropensityConfig,
    seed: int,
    compute_device: torch.device,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The propensity of every train positive, and a report of the estimate.

    Args:
        interaction_split: the protocol's split (the rated train pairs and, for
            ``naive_bayes``, the unbiased validation sample).
        train_data: Y and the side features (``logistic``), the graph (``dual_exposure``).
        evaluators: the validation split ``dual_exposure`` early-stops on.
        ground_truth: the simulator's truth (true exposure probabilities), or ``{}``.
        propensity: the ``propensity`` block.
        seed: the seed of sampling and of the dual model's initialization.
        compute_device: where ``dual_exposure`` trains.

    Returns:
        ``propensities`` (user, item, propensity): one row per item with user
        ``ITEM_LEVEL`` for ``popularity``, else one per train positive (empty for
        ``none``); and the report: the estimator, η where fitted, the clip, how many
        positives, the mean / min / max estimate, the Kish effective sample size of the
        weights 1 / θ, and, on the simulator, the estimate against the true exposure
        (``truth_*``: expected AUC and log-loss with their oracle bounds, Spearman).

    Raises:
        ValueError: Naming ``propensity.estimator`` where the data cannot support it.
    """
    config = build_config(PropensityConfig, propensity, "propensity")
    clicks = train_data.interactions.tocoo()
    users, items = clicks.row.astype(np.int64), clicks.col.astype(np.int64)
    shape = train_data.interactions.shape
    report: dict[str, Any] = {"estimator": config.estimator, "clip": config.clip, "n_positives": int(users.size)}
    if config.estimator == "none":
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in zip(COLUMNS, ("int64", "int64", "float64"))}), report
    rated = pair_matrix(_train_rows(interaction_split), shape, np.float64)
    has_unclicked = rated.nnz > train_data.interactions.nnz
    on_pairs = None  # the estimate as a function of (users, items), where it has one
    if config.estimator == "popularity":
        fitted = estimators.popularity(
            train_data.interactions,
            exposed=rated if has_unclicked else None,
            eta=config.eta if (config.eta is not None or has_unclicked) else estimators.RELMF_ETA,
            clip=config.clip,
        )
        report.update(eta=fitted.eta, scale=fitted.scale, eta_fitted=config.eta is None and has_unclicked)
        on_pairs = fitted
    elif config.estimator == "naive_bayes":
        unbiased = interaction_split[interaction_split["split"] == "validation"]
        if "source" not in unbiased or not (unbiased["source"] == "unbiased").any():
            raise ValueError(
                "parameter 'propensity.estimator' is naive_bayes, which needs the rating distribution of an unbiased "
                "sample (the validation split of a dataset with an unbiased set: coat, yahoo_r3, synthetic under the "
                "thesis protocol); use popularity or logistic"
            )
        outcome = "rating" if interaction_split["rating"].notna().all() else "label"
        fitted = estimators.naive_bayes(
            _train_rows(interaction_split)[outcome].to_numpy(np.float64),
            unbiased[outcome].to_numpy(np.float64),
            shape[0] * shape[1],
            smoothing=config.smoothing,
            clip=config.clip,
        )
        positives = _train_rows(interaction_split)
        positives = positives[positives["label"] == 1].drop_duplicates(["user", "item"]).set_index(["user", "item"])
        outcomes = positives.loc[list(zip(users, items, strict=True)), outcome].to_numpy(np.float64)
        report.update(p_observed=fitted.p_observed, outcome=outcome)
        values = fitted(outcomes)
    elif config.estimator == "logistic":
        fitted = estimators.logistic(
            rated,
            user_features=train_data.user_features,
            item_features=train_data.item_features,
            negative_ratio=config.negative_ratio,
            l2=config.l2,
            clip=config.clip,
            seed=seed,
        )
        on_pairs = fitted
    else:  # dual_exposure
        exposure = _dual_exposure(train_data, evaluators, config.exposure_model, seed, compute_device)
        on_pairs = estimators.exposure_tower(exposure, clip=config.clip)
    if on_pairs is not None:
        values = np.asarray(on_pairs(users, items), dtype=np.float64)
    values = estimators.clip_propensities(values, config.clip)
    report.update(
        mean=float(values.mean()) if values.size else math.nan,
        min=float(values.min()) if values.size else math.nan,
        max=float(values.max()) if values.size else math.nan,
        ess=float(kish_ess(1.0 / values)) if values.size else 0.0,
    )
    if isinstance(ground_truth, GroundTruth):
        if on_pairs is not None:  # every pair (or a sample): the estimate where it is used and where not
            pair_users, pair_items = _truth_pairs(shape, seed)
            estimated = np.asarray(on_pairs(pair_users, pair_items), dtype=np.float64)
        else:  # naive Bayes has an estimate only for rated pairs
            pair_users, pair_items, estimated = users, items, values
        truth = ground_truth.pair_probabilities("exposure", pair_users, pair_items)
        report.update({f"truth_{key}": value for key, value in estimators.score_propensities(estimated, truth).items()})
    logger.info(
        "propensity (%s): mean %.4f over %d train positives, effective sample size %.0f",
        config.estimator, report["mean"], users.size, report["ess"],
    )
    if config.estimator == "popularity":  # one θ per item, for every pair (user -1: any user)
        theta = on_pairs.item_propensity
        return pd.DataFrame({"user": np.full(theta.size, ITEM_LEVEL), "item": np.arange(theta.size), "propensity": theta}), report
    return pd.DataFrame({"user": users, "item": items, "propensity": values}), report


def attach_propensities(train_data: TrainData, propensities: pd.DataFrame) -> TrainData:
    """``train_data`` with ``propensity`` set: θ per item (n_items,) where the estimate is
    one per item (rows of user ``ITEM_LEVEL``: ``popularity``), else a CSR matrix of Y's
    shape holding θ for each train positive (``None`` when no estimate was made)."""
    if propensities.empty:
        return dataclasses.replace(train_data, propensity=None)
    if (propensities["user"] == ITEM_LEVEL).all():
        theta = np.zeros(train_data.n_items)
        theta[propensities["item"].to_numpy(np.int64)] = propensities["propensity"].to_numpy(np.float64)
        return dataclasses.replace(train_data, propensity=theta)
    matrix = sp.csr_matrix(
        (
            propensities["propensity"].to_numpy(np.float64),
            (propensities["user"].to_numpy(np.int64), propensities["item"].to_numpy(np.int64)),
        ),
        shape=train_data.interactions.shape,
    )
    matrix.sort_indices()
    return dataclasses.replace(train_data, propensity=matrix)


def propensity_mlflow_metrics(report: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    """The report's numbers as MLflow metrics (``propensity.<key>``)."""
    return {
        key: {"value": float(value), "step": 0}
        for key, value in report.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    }
