"""The test report of protocol ``ips``: each ranking metric of the held-out biased log
estimated as if every item had been exposed (``offpolicy.estimate``).

What the estimators are given, from the run's own split (nothing from the test log but its
exposures and clicks):

- the **propensity** θ_i of a test pair, a popularity power law (``propensity.popularity``)
  fitted on the train part of the log: c and η by maximum likelihood against the rated
  train pairs where some were not clicked, else Rel-MF's c = 1, η = 0.5
  (``evaluation.off_policy.eta`` fixes η). A rated pair lands in the test log with the
  share of rated rows held out, so θ_test = θ_train · (test rows / train rows), at most 1;
  Recall and NDCG divide by an estimate of the user's relevant items and do not depend on
  that scale, DCG does;
- the **exposed** pairs of SNIPS and DR: the rated test rows, clicked or not (a log of
  clicks alone has none, and only ``naive`` and ``ips`` run);
- DR's **imputed** relevance r̂_ui: the item's click rate among its rated train pairs (the
  same for every user; 0 for an item never rated in train).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from debias_pipeline.data.processing import pair_matrix
from debias_pipeline.evaluation import offpolicy
from debias_pipeline.evaluation.propensity import RELMF_ETA, popularity
from debias_pipeline.evaluation.protocols import OffPolicyConfig


@dataclass(frozen=True)
class OffPolicyLog:
    """The held-out biased log and what its estimators need (module docstring).

    Attributes:
        clicks: (n_users, n_items) the test log's clicks.
        exposed: (n_users, n_items) its rated pairs, clicks included; ``None`` on a log
            of clicks alone.
        propensity: (n_items,) θ_i of a pair of the test log.
        imputed: (n_items,) DR's r̂ (``None`` without exposed pairs).
        eta, scale: the fitted power law θ_train = scale · (pop / max pop)^eta.
    """

    clicks: sp.csr_matrix
    exposed: sp.csr_matrix | None
    propensity: np.ndarray
    imputed: np.ndarray | None
    eta: float
    scale: float

    @classmethod
    def build(cls, interaction_split: pd.DataFrame, shape: tuple[int, int], config: OffPolicyConfig) -> OffPolicyLog:
        train = interaction_split[interaction_split["split"] == "train"]
        test = interaction_split[interaction_split["split"] == "test"]
        train_clicks = pair_matrix(train[train["label"] == 1], shape, np.float64)
        train_rated = pair_matrix(train, shape, np.float64)
        rated = train_rated.nnz > train_clicks.nnz  # the log rates pairs it does not click
        fitted = popularity(
            train_clicks,
            exposed=train_rated if rated else None,
            eta=config.eta if (config.eta is not None or rated) else RELMF_ETA,
            clip=config.clip,
        )
        share = len(test) / max(len(train), 1)
        theta = np.minimum(fitted.item_propensity * share, 1.0)
        exposed = pair_matrix(test, shape, np.float64) if rated else None
        imputed = None
        if rated:
            rated_count = np.asarray(train_rated.sum(axis=0)).ravel()
            click_count = np.asarray(train_clicks.sum(axis=0)).ravel()
            imputed = np.divide(click_count, rated_count, out=np.zeros(shape[1]), where=rated_count > 0)
        return cls(pair_matrix(test[test["label"] == 1], shape, np.float64), exposed, theta, imputed, fitted.eta, fitted.scale)

    def report(
        self, ranked: np.ndarray, users: np.ndarray, mask: sp.csr_matrix, cutoffs: tuple[int, ...], config: OffPolicyConfig, seed: int
    ) -> dict[str, float | int]:
        """``test_<estimator>_<metric>_at_<k>`` with ``_ci_low``, ``_ci_high``, ``_ess`` and
        the user counts, for every estimator the log supports; ``test_off_policy_eta``.

        Args:
            ranked: (n_users_evaluated, depth) each user's ranked items, best first.
            users: (n_users_evaluated,) their ids.
            mask: (n_users, n_items) the pairs never ranked (train and validation positives).
            cutoffs: the cut-offs K.
            config: the ``evaluation.off_policy`` block.
            seed: the bootstrap's seed.
        """
        values: dict[str, float | int] = {"test_off_policy_eta": self.eta, "test_off_policy_scale": self.scale}
        n_items = self.clicks.shape[1]

        def imputed_rows(rows: np.ndarray) -> np.ndarray:
            return np.broadcast_to(self.imputed, (len(rows), n_items))

        for estimator in config.estimators:
            if estimator in ("snips", "dr") and self.exposed is None:
                continue  # a log of clicks alone: no exposed pair to normalize or correct with
            for metric in config.metrics:
                for k in cutoffs:
                    found = offpolicy.estimate(
                        ranked,
                        self.clicks,
                        self.propensity,
                        k,
                        metric,
                        estimator,
                        exposed=self.exposed,
                        imputed=imputed_rows if estimator == "dr" else None,
                        users=users,
                        mask=mask,
                        clip=config.clip,
                        n_boot=config.n_boot,
                        alpha=config.alpha,
                        seed=seed,
                        project=config.project,
                    )
                    values.update(found.as_dict(f"test_{estimator}_{metric}_at_{k}"))
        return values


ERROR_KEYS = ["bias_strength", "metric", "estimator", "model"]
ALL_MODELS = "all"  # the model of the lines pooled over every model


def estimator_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Each estimator against the true metric: its bias, spread and RMSE.

    Args:
        runs: one row per (bias_strength, seed, model, estimator, metric) with the
            ``estimate``, the ``truth`` (``offpolicy.true_value`` of the same lists) and
            the ``ess`` of the weights.

    Returns:
        One line per (bias_strength, metric, estimator, model), and per (bias_strength,
        metric, estimator) under model ``all`` pooled over the models: the mean truth and
        estimate, ``bias`` = mean(e), ``variance`` and ``sd`` the sample variance and
        standard deviation of e (over worlds, and models when pooled),
        ``rmse`` = √mean(e²) (= √(bias² + (n − 1)/n · variance)), the median ESS and
        ``n``, with e = estimate − truth.
    """
    errors = runs.assign(error=runs["estimate"] - runs["truth"], squared=(runs["estimate"] - runs["truth"]) ** 2)
    pooled = errors.assign(model=ALL_MODELS)
    table = pd.concat([errors, pooled], ignore_index=True)
    summary = table.groupby(ERROR_KEYS, sort=False).agg(
        truth=("truth", "mean"),
        estimate=("estimate", "mean"),
        bias=("error", "mean"),
        variance=("error", "var"),
        mse=("squared", "mean"),
        ess=("ess", "median"),
        n=("error", "size"),
    )
    summary["sd"] = np.sqrt(summary["variance"])
    summary["rmse"] = np.sqrt(summary.pop("mse"))
    columns = ["truth", "estimate", "bias", "variance", "sd", "rmse", "ess", "n"]
    return summary.reset_index()[[*ERROR_KEYS, *columns]]


def ranking_agreement(runs: pd.DataFrame) -> pd.DataFrame:
    """How well each estimator orders the models like the truth: per (bias_strength,
    seed, metric, estimator), Spearman's ρ between the models' estimates and their true
    values (NaN for fewer than three models or a constant side), then the mean and the
    number of worlds where it is defined, per (bias_strength, metric, estimator)."""

    def rho(group: pd.DataFrame) -> float:
        if len(group) < 3 or group["estimate"].nunique() < 2 or group["truth"].nunique() < 2:
            return float("nan")
        return float(group["estimate"].rank().corr(group["truth"].rank()))  # Pearson of ranks

    keys = ["bias_strength", "metric", "estimator"]
    if runs.empty:  # the off-policy sweep was not run (sweeps.only)
        return pd.DataFrame(columns=[*keys, "spearman", "worlds"])
    per_world = runs.groupby([*keys, "seed"], sort=False)[["estimate", "truth"]].apply(rho).rename("spearman")
    summary = per_world.groupby(level=keys, sort=False).agg(["mean", "count"]).reset_index()
    return summary.rename(columns={"mean": "spearman", "count": "worlds"})
