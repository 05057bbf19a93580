"""Evaluation protocols: how the interactions are split, what is ranked, what is
masked and which metrics are reported (``evaluation.protocol``).

| protocol | split | ranked | default cut-offs |
|---|---|---|---|
| ``thesis`` | biased train; the unbiased rows split at random, ``validation_fraction`` (0.2) validation, the rest test | each user's rows of the split (PROTOCOL.md §3) | 5 |
| ``full_ranking`` | a given train / test split, or a seeded per-user split of the positives (``test_fraction`` 0.2); validation carved out of train per user (``validation_fraction`` 0.1); on a dataset with an unbiased set, that set as in ``thesis`` | every item, the user's train items masked (and, for test, the validation items) | 20 |
| ``leave_one_out`` | each user's latest positive (timestamps) is the test item, the one before it the validation item | that item among ``num_negatives`` (100) items the user never interacted with, sampled once per seed | 10 |
| ``strong_generalization`` | users split into train, validation and test users; a held-out user's positives split per user, ``target_fraction`` (0.2) targets, the rest fold-in input | every item, scored from the fold-in input alone (the input masked) | 20, 50, 100 |
| ``ips`` | the biased log alone (a dataset's unbiased set is left out): ``test_fraction`` (0.2) of each user's rated rows held out as the test log, clicked or not; validation carved out of the train positives per user (``validation_fraction`` 0.1); on a dataset with a given train / test split, that split | every item, the user's train (and, for test, validation) positives masked; test metrics estimated off-policy as if every item had been exposed (``evaluation.off_policy``: naive, IPS, SNIPS, DR, each with a bootstrap interval and its effective sample size) | 5, 20 |
| ``cold_start`` | ``cold_start.validation_users`` and ``cold_start.users`` (0.1 each) withheld from training entirely; each brings their first ``cold_start.known_interactions`` (3) positives (by time), the rest are targets | every item, the known ones masked; scored by the model's way with a new user (``cold_start.py``) | 20 |

Every protocol reports Recall@K (hits / min(K, P)), NDCG@K, Precision@K (hits / K)
and HR@K (a hit in the top K) at each cut-off; the protocols that rank labelled rows
(``thesis``, ``leave_one_out``) also the pooled AUC and the mean log-likelihood of the
scores over all rows. Early stopping and every selection use one signal of the
validation split (``evaluation.selection``, see ``SELECTIONS``), never the test split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from debias_pipeline.config.params import Params, build_config, require
from debias_pipeline.data.registry import DatasetSpec, dataset_spec
from debias_pipeline.evaluation.metrics import (
    mean_log_likelihood,
    pooled_auc,
)

Kind = Literal["candidates", "full", "fold_in", "cold"]

METRICS = ("recall", "ndcg", "precision", "hr")

TRAINING_PARTS = ("biased", "train", "all")

SPLITS = ("validation", "test")

# The validation signals early stopping and selection can follow (``evaluation.selection``):
# ``ranking``, the ranking metric ``selection_metric`` (NDCG@K) over the users with a
# positive; ``auc``, the pooled AUC of the scores over every validation row (users
# without a positive included); ``log_likelihood``, the mean log-likelihood of the labels
# under σ(score), for models whose score is a click logit. The last two need labelled
# rows (the ``candidates`` protocols).
ROW_SIGNALS = {"auc": pooled_auc, "log_likelihood": mean_log_likelihood}  # (labels, scores) -> value

SELECTIONS = ("ranking", *ROW_SIGNALS)

@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol of the registry (see the module docstring)."""

    name: str
    kind: Kind
    default_cutoffs: tuple[int, ...]
    selection_cutoff: int
    description: str
    selection_window: int = 1

PROTOCOLS: dict[str, ProtocolSpec] = {
    spec.name: spec
    for spec in (
        ProtocolSpec("thesis", "candidates", (5,), 5, "each user's unbiased rows ranked (PROTOCOL.md §3)", 5),
        ProtocolSpec("full_ranking", "full", (20,), 20, "all items ranked, train items masked (the LightGCN papers')"),
        ProtocolSpec("leave_one_out", "candidates", (10,), 10, "latest item among 100 sampled non-interacted items (NCF)"),
        ProtocolSpec(
            "strong_generalization", "fold_in", (20, 50, 100), 100, "held-out users folded in from 80 % of their clicks (Mult-VAE)"
        ),
        ProtocolSpec("cold_start", "cold", (20,), 20, "withheld users ranked from their first few interactions (the survey)"),
        ProtocolSpec("ips", "full", (5, 20), 20, "all items ranked on a held-out biased log, metrics estimated off-policy"),
    )
}

class OffPolicyConfig(Params):
    """The ``evaluation.off_policy`` block: how protocol ``ips`` estimates the test metrics
    as if every item had been exposed (``evaluation.off_policy_report``).

    Attributes:
        estimators: of ``naive``, ``ips``, ``snips`` and ``dr`` (``offpolicy``); ``snips``
            and ``dr`` need rated pairs that were not clicked (dropped on a log of clicks).
        metrics: of ``recall``, ``ndcg`` and ``dcg``.
        n_boot: bootstrap resamples over users for the interval (0: none).
        alpha: the interval covers 1 − alpha.
        clip: the floor of every propensity.
        eta: the popularity exponent of the propensity; ``None`` fits it against the
            rated train pairs where there are unclicked ones, else Rel-MF's 0.5.
        project: project each user's Recall / NDCG estimate onto [0, 1] before the mean
            (``offpolicy.estimate``); off by default: on the simulator the projected mean
            lands far below the truth (docs/debiasing.md).
    """

    estimators: tuple[Literal["naive", "ips", "snips", "dr"], ...] = ("naive", "ips", "snips", "dr")
    metrics: tuple[Literal["recall", "ndcg", "dcg"], ...] = ("recall", "ndcg", "dcg")
    n_boot: int = 1000
    alpha: float = 0.05
    clip: float = 1e-3
    eta: float | None = None
    project: bool = False

    def check(self) -> None:
        require(len(self.estimators) > 0, "estimators must name at least one estimator")
        require(len(self.metrics) > 0, "metrics must name at least one metric")
        require(self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot}")
        require(0 < self.alpha < 1, f"alpha must be in (0, 1), got {self.alpha}")
        require(0 < self.clip <= 1, f"clip must be in (0, 1], got {self.clip}")
        require(self.eta is None or 0 <= self.eta <= 4, f"eta must be in [0, 4] or null, got {self.eta}")


class EvaluationConfig(Params):
    """The ``evaluation`` parameter block.

    Attributes:
        protocol: a name of ``PROTOCOLS``; ``None`` takes the dataset's default.
        k: the cut-off(s) K, one number or a list; ``None`` takes the protocol's.
        selection_metric: the ranking metric of ``selection: ranking``,
            ``<metric>_at_<k>`` with k among the cut-offs; ``None`` is NDCG at the
            protocol's selection cut-off (5, 20, 10, 100).
        selection: the validation signal of early stopping and selection (one of
            ``SELECTIONS``); ``None`` is ``ranking``.
        selection_window: early stopping follows the mean of the last this many
            validation evaluations (1: the raw signal) and restores the weights of the
            evaluation that ends the best window; ``None`` is the protocol's
            (``thesis`` 5, the others 1). docs/protocols.md, "Selection", has the measurements.
        off_policy: protocol ``ips``: the off-policy estimates (``OffPolicyConfig``).
    """

    protocol: str | None = None
    k: int | tuple[int, ...] | None = None
    selection_metric: str | None = None
    selection: str | None = None
    selection_window: int | None = None
    off_policy: OffPolicyConfig = OffPolicyConfig()

    def check(self) -> None:
        require(
            self.protocol is None or self.protocol in PROTOCOLS,
            f"protocol must be one of {list(PROTOCOLS)} (or null for the dataset's default), got {self.protocol!r}",
        )
        cutoffs = (self.k,) if isinstance(self.k, int) else self.k
        require(cutoffs is None or (len(cutoffs) > 0 and all(k >= 1 for k in cutoffs)), f"k must be >= 1, got {self.k}")
        require(
            self.selection is None or self.selection in SELECTIONS,
            f"selection must be one of {list(SELECTIONS)} (or null for the protocol's default), got {self.selection!r}",
        )
        require(
            self.selection_window is None or self.selection_window >= 1,
            f"selection_window must be >= 1, got {self.selection_window}",
        )

@dataclass(frozen=True)
class EvaluationSetup:
    """The evaluation block resolved against the dataset: protocol, cut-offs and the
    selection metric."""

    protocol: ProtocolSpec
    cutoffs: tuple[int, ...]
    selection_metric: str
    selection: str = "ranking"
    selection_window: int = 1
    off_policy: OffPolicyConfig = OffPolicyConfig()

    @property
    def selection_key(self) -> str:
        """The name of the selection signal among a split's metrics (``ndcg_at_5``, ``auc``)."""
        return self.selection_metric if self.selection == "ranking" else self.selection

    @property
    def k(self) -> int:
        """The first cut-off (the headline K)."""
        return self.cutoffs[0]

    @property
    def depth(self) -> int:
        return max(self.cutoffs)

def evaluation_config(evaluation: dict[str, Any] | None) -> EvaluationConfig:
    """The ``evaluation`` parameter block as a checked config."""
    return build_config(EvaluationConfig, evaluation, "evaluation")

def evaluation_setup(evaluation: dict[str, Any] | None, dataset: str) -> EvaluationSetup:
    """Resolve the evaluation block for ``dataset`` and check that the two fit.

    Raises:
        ValueError: Naming the parameter, for a protocol the dataset cannot be
            evaluated with (``thesis`` needs an unbiased set, ``leave_one_out``
            timestamps) or a selection metric that is not reported.
    """
    config = evaluation_config(evaluation)
    spec = dataset_spec(dataset)
    protocol = PROTOCOLS[config.protocol or spec.default_protocol]
    if protocol.name == "thesis" and spec.parts != "biased_unbiased":
        with_unbiased = [name for name, d in _datasets().items() if d.parts == "biased_unbiased"]
        raise ValueError(
            f"parameter 'evaluation.protocol' is 'thesis', which needs an unbiased test set "
            f"({', '.join(with_unbiased)}); dataset {dataset!r} has none: use full_ranking, "
            "leave_one_out or strong_generalization"
        )
    if protocol.name == "leave_one_out" and not spec.has_timestamps:
        raise ValueError(
            f"parameter 'evaluation.protocol' is 'leave_one_out', which holds out each user's latest "
            f"interaction by timestamp; dataset {dataset!r} has no timestamps: use full_ranking"
        )
    cutoffs = protocol.default_cutoffs if config.k is None else ((config.k,) if isinstance(config.k, int) else config.k)
    cutoffs = tuple(sorted(set(int(k) for k in cutoffs)))
    if config.selection_metric is None:
        selection_k = protocol.selection_cutoff if protocol.selection_cutoff in cutoffs else cutoffs[0]
        selection = f"ndcg_at_{selection_k}"
    else:
        selection = config.selection_metric
        match = re.fullmatch(r"(recall|ndcg|precision|hr)_at_(\d+)", selection)
        require(
            match is not None and int(match.group(2)) in cutoffs,
            f"parameter 'evaluation.selection_metric' must be <{'|'.join(METRICS)}>_at_<k> with k in "
            f"{list(cutoffs)}, got {selection!r}",
        )
    signal = config.selection or "ranking"
    if signal in ROW_SIGNALS and protocol.kind != "candidates":
        raise ValueError(
            f"parameter 'evaluation.selection' is {signal!r}, which needs labelled validation rows; protocol "
            f"{protocol.name!r} ranks every item: use ranking"
        )
    return EvaluationSetup(
        protocol=protocol,
        cutoffs=cutoffs,
        selection_metric=selection,
        selection=signal,
        selection_window=config.selection_window or protocol.selection_window,
        off_policy=config.off_policy,
    )

def _datasets() -> dict[str, DatasetSpec]:
    from debias_pipeline.data.registry import DATASETS

    return DATASETS
