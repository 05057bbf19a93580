"""Evaluation protocols: how the interactions are split, what is ranked, what is
masked and which metrics are reported (``evaluation.protocol``).

| protocol | split | ranked | default cut-offs |
|---|---|---|---|
| ``thesis`` | biased train; the unbiased rows split at random, ``validation_fraction`` (0.2) validation, the rest test | each user's rows of the split (PROTOCOL.md §3) | 5 |
| ``full_ranking`` | a given train / test split, or a seeded per-user split of the positives (``test_fraction`` 0.2); validation carved out of train per user (``validation_fraction`` 0.1); on a dataset with an unbiased set, that set as in ``thesis`` | every item, the user's train items masked (and, for test, the validation items) | 20 |
| ``leave_one_out`` | each user's latest positive (timestamps) is the test item, the one before it the validation item | that item among ``num_negatives`` (100) items the user never interacted with, sampled once per seed | 10 |
| ``strong_generalization`` | users split into train, validation and test users; a held-out user's positives split per user, ``target_fraction`` (0.2) targets, the rest fold-in input | every item, scored from the fold-in input alone (the input masked) | 20, 50, 100 |
| ``cold_start`` | ``cold_start.validation_users`` and ``cold_start.users`` (0.1 each) withheld from training entirely; each brings their first ``cold_start.known_interactions`` (3) positives (by time), the rest are targets | every item, the known ones masked; scored by the model's way with a new user (``cold_start.py``) | 20 |

Every protocol reports Recall@K (hits / min(K, P)), NDCG@K, Precision@K (hits / K)
and HR@K (a hit in the top K) at each cut-off; the protocols that rank labelled rows
(``thesis``, ``leave_one_out``) also the pooled AUC and the mean log-likelihood of the
scores over all rows. Early stopping and every selection use one signal of the
validation split (``evaluation.selection``, see ``SELECTIONS``), never the test split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from debias_pipeline.cold_start import SOURCES, ColdStartScorer
from debias_pipeline.config import Params, build_config, require
from debias_pipeline.datasets.registry import DatasetSpec, dataset_spec
from debias_pipeline.metrics import (
    ScoreUsers,
    candidate_relevance,
    full_ranking_relevance,
    mean_log_likelihood,
    metrics_from_relevance,
    pooled_auc,
    train_positives,
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
# Bound on one chunk's random table of leave_one_out's candidate sampling (32 MB).
CANDIDATE_CHUNK_ELEMENTS = 1 << 22


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
    )
}


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
            (``thesis`` 5, the others 1). README, "Selection", has the measurements.
    """

    protocol: str | None = None
    k: int | tuple[int, ...] | None = None
    selection_metric: str | None = None
    selection: str | None = None
    selection_window: int | None = None

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
    )


def _datasets() -> dict[str, DatasetSpec]:
    from debias_pipeline.datasets.registry import DATASETS

    return DATASETS


# ---- Splits ------------------------------------------------------------------------------


class SplitConfig(Params):
    """The ``split`` parameter block (each key used by the protocols named).

    Attributes:
        validation_fraction: ``thesis`` (and ``full_ranking`` on an unbiased set):
            share of the unbiased rows for validation (default 0.2); ``full_ranking``:
            share of each user's train positives carved out for validation (default
            0.1); ``None`` takes these defaults.
        test_fraction: ``full_ranking`` on a single log: share of each user's
            positives held out for test.
        num_negatives: ``leave_one_out``: sampled items each held-out item is ranked
            among.
        validation_users, test_users: ``strong_generalization``: held-out users, a
            count (>= 1) or a share of the users with a positive (< 1).
        target_fraction: ``strong_generalization``: share of a held-out user's
            positives that are targets (the rest is the fold-in input).
    """

    validation_fraction: float | None = None
    test_fraction: float = 0.2
    num_negatives: int = 100
    validation_users: float = 0.1
    test_users: float = 0.1
    target_fraction: float = 0.2

    def check(self) -> None:
        require(
            self.validation_fraction is None or 0 < self.validation_fraction < 1,
            f"validation_fraction must be in (0, 1), got {self.validation_fraction}",
        )
        require(0 < self.test_fraction < 1, f"test_fraction must be in (0, 1), got {self.test_fraction}")
        require(self.num_negatives >= 1, f"num_negatives must be >= 1, got {self.num_negatives}")
        for name in ("validation_users", "test_users"):
            value = getattr(self, name)
            require(value > 0 and (value < 1 or value == int(value)), f"{name} must be a share in (0, 1) or a count >= 1, got {value}")
        require(0 < self.target_fraction < 1, f"target_fraction must be in (0, 1), got {self.target_fraction}")


class ColdStartConfig(Params):
    """The ``cold_start`` parameter block (``evaluation.protocol: cold_start``).

    Attributes:
        users: withheld test users, a share of the users with a positive (< 1) or a count.
        validation_users: withheld validation users (early stopping), the same way.
        known_interactions: positives a withheld user brings, their first by time (file
            order where there are no timestamps); 0: their features only.
    """

    users: float = 0.1
    validation_users: float = 0.1
    known_interactions: int = 3

    def check(self) -> None:
        for name in ("users", "validation_users"):
            value = getattr(self, name)
            require(value > 0 and (value < 1 or value == int(value)), f"{name} must be a share in (0, 1) or a count >= 1, got {value}")
        require(self.known_interactions >= 0, f"known_interactions must be >= 0, got {self.known_interactions}")


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generators per use of the seed (split, candidates, ...)."""
    return np.random.default_rng([seed, stream])


def _rank_within_users(users: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """0-based rank of each row among its user's rows, ascending by ``keys`` (the first
    the primary one)."""
    order = np.lexsort((*reversed(keys), users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, users.size])
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = np.arange(users.size) - np.repeat(starts, sizes)
    return rank


def _per_user_holdout(users: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """True for a random ``round(fraction * n)`` of each user's n rows (at most n - 1, so
    that every user keeps a row)."""
    if users.size == 0:
        return np.zeros(0, dtype=bool)
    counts = np.bincount(users)
    held = np.minimum(np.floor(fraction * counts + 0.5), np.maximum(counts - 1, 0)).astype(np.int64)
    return _rank_within_users(users, rng.random(users.size)) < held[users]


def _labelled(table: pd.DataFrame, split: np.ndarray | str, role: np.ndarray | str) -> pd.DataFrame:
    return table.assign(split=split, role=role)


def _thesis_split(interactions: pd.DataFrame, config: SplitConfig, seed: int) -> pd.DataFrame:
    """Biased rows train; the unbiased rows split at random by rows (PROTOCOL.md §2.3)."""
    fraction = 0.2 if config.validation_fraction is None else config.validation_fraction
    train = interactions[interactions["source"] == "biased"]
    unbiased = interactions[interactions["source"] == "unbiased"].reset_index(drop=True)
    n_rows = len(unbiased)
    n_validation = int(round(fraction * n_rows))
    permutation = np.random.default_rng(seed).permutation(n_rows)
    labels = np.full(n_rows, "test", dtype=object)
    labels[permutation[:n_validation]] = "validation"
    evaluated = _labelled(unbiased, labels, "target").sort_values(
        ["split", "user", "item"], ascending=[False, True, True], ignore_index=True
    )
    return pd.concat([evaluated, _labelled(train, "train", "input")], ignore_index=True)


def _full_ranking_split(interactions: pd.DataFrame, config: SplitConfig, spec: DatasetSpec, seed: int) -> pd.DataFrame:
    if spec.parts == "biased_unbiased":
        return _thesis_split(interactions, config, seed)
    fraction = 0.1 if config.validation_fraction is None else config.validation_fraction
    rng = _rng(seed, 1)
    split = np.full(len(interactions), "train", dtype=object)
    positive = interactions["label"].to_numpy() == 1
    users = interactions["user"].to_numpy()
    if spec.parts == "train_test":
        split[interactions["source"].to_numpy() == "test"] = "test"
    else:
        rows = np.flatnonzero(positive)
        split[rows[_per_user_holdout(users[rows], config.test_fraction, rng)]] = "test"
    carve = np.flatnonzero(positive & (split == "train"))
    split[carve[_per_user_holdout(users[carve], fraction, rng)]] = "validation"
    role = np.where(split == "train", "input", "target").astype(object)
    return _labelled(interactions, split, role)


def _leave_one_out_split(interactions: pd.DataFrame, config: SplitConfig, seed: int) -> pd.DataFrame:
    if interactions["timestamp"].isna().any():
        at = int(np.flatnonzero(interactions["timestamp"].isna().to_numpy())[0])
        raise ValueError(
            f"evaluation.protocol 'leave_one_out' needs a timestamp on every row; row {at} "
            f"(user {interactions['user'].iat[at]}, item {interactions['item'].iat[at]}) has none"
        )
    n_items = int(interactions["item"].max()) + 1
    split = np.full(len(interactions), "train", dtype=object)
    rows = np.flatnonzero(interactions["label"].to_numpy() == 1)
    users = interactions["user"].to_numpy()[rows]
    # Latest first; among equal timestamps the later row of the file counts as later.
    recency = _rank_within_users(users, -interactions["timestamp"].to_numpy()[rows], -rows)
    counts = np.bincount(users)
    split[rows[(recency == 0) & (counts[users] >= 2)]] = "test"
    split[rows[(recency == 1) & (counts[users] >= 3)]] = "validation"
    table = _labelled(interactions, split, np.where(split == "train", "input", "target").astype(object))
    held = table[table["split"] != "train"]
    interacted = np.unique(interactions["user"].to_numpy() * n_items + interactions["item"].to_numpy())
    candidate_users, candidate_items, candidate_split = _sample_candidates(
        held["user"].to_numpy(), held["split"].to_numpy(), interacted, n_items, config.num_negatives, _rng(seed, 2)
    )
    candidates = pd.DataFrame(
        {
            "user": candidate_users,
            "item": candidate_items,
            "rating": np.nan,
            "timestamp": np.nan,
            "source": "candidate",
            "label": np.zeros(candidate_users.size, dtype=np.int8),
            "split": candidate_split,
            "role": "target",
        }
    )
    return pd.concat([table, candidates], ignore_index=True)


def _sample_candidates(
    users: np.ndarray,
    splits: np.ndarray,
    interacted: np.ndarray,
    n_items: int,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each held-out row, ``count`` distinct items its user never interacted with
    (all of them when fewer remain), uniformly without replacement.

    Each chunk of rows draws a uniform random key per (row, item), sets the keys of the
    user's interacted items to infinity and keeps the ``count`` smallest: an exact
    uniform sample of the remaining items.

    Args:
        users: (n,) user of each held-out row.
        splits: (n,) its split.
        interacted: sorted keys ``user * n_items + item`` of every row of the data.
        n_items: number of items.
        count: candidates per row.
        rng: the generator.

    Returns:
        (users, items, splits) of the candidates, row after row.
    """
    take = min(count, n_items)
    chunk = max(1, CANDIDATE_CHUNK_ELEMENTS // n_items)
    out_users, out_items, out_splits = [], [], []
    for start in range(0, users.size, chunk):
        block_users = users[start : start + chunk]
        keys = rng.random((block_users.size, n_items))
        lo = np.searchsorted(interacted, block_users * n_items)
        hi = np.searchsorted(interacted, (block_users + 1) * n_items)
        lengths = hi - lo
        rows = np.repeat(np.arange(block_users.size), lengths)
        positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(lo, lengths)
        keys[rows, interacted[positions] - block_users[rows] * n_items] = np.inf
        chosen = np.argpartition(keys, take - 1, axis=1)[:, :take] if take < n_items else np.tile(np.arange(n_items), (block_users.size, 1))
        valid = np.isfinite(np.take_along_axis(keys, chosen, axis=1))
        chosen = np.sort(np.where(valid, chosen, n_items), axis=1)  # a fixed order; invalid last
        valid = chosen < n_items
        out_users.append(np.repeat(block_users, valid.sum(axis=1)))
        out_items.append(chosen[valid])
        out_splits.append(np.repeat(splits[start : start + chunk], valid.sum(axis=1)))
    if not out_users:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    return np.concatenate(out_users), np.concatenate(out_items).astype(np.int64), np.concatenate(out_splits)


def _user_count(value: float, n_users: int) -> int:
    return int(value) if value >= 1 else int(np.floor(value * n_users + 0.5))


def _held_out_users(
    interactions: pd.DataFrame, validation_users: float, test_users: float, names: tuple[str, str], rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """The positive rows (train parts and test) and each one's user split: a random
    ``validation_users`` and ``test_users`` of the users with a positive are held out
    (validation, test), the rest are ``train``. ``names``: the two parameters, for errors."""
    positive = (interactions["label"].to_numpy() == 1) & interactions["source"].isin(TRAINING_PARTS + ("test",)).to_numpy()
    users_with_positive = np.unique(interactions["user"].to_numpy()[positive])
    n_validation = _user_count(validation_users, users_with_positive.size)
    n_test = _user_count(test_users, users_with_positive.size)
    if n_validation < 1 or n_test < 1 or n_validation + n_test >= users_with_positive.size:
        raise ValueError(
            f"parameters '{names[0]}' ({validation_users}) and '{names[1]}' ({test_users}) must leave at least "
            f"one held-out user each and one train user, among {users_with_positive.size} users with a positive"
        )
    shuffled = rng.permutation(users_with_positive)
    user_split = pd.Series("train", index=users_with_positive, dtype=object)
    user_split[shuffled[:n_validation]] = "validation"
    user_split[shuffled[n_validation : n_validation + n_test]] = "test"
    table = interactions[positive].reset_index(drop=True)
    return table, user_split.reindex(table["user"].to_numpy()).to_numpy()


def _strong_generalization_split(interactions: pd.DataFrame, config: SplitConfig, seed: int) -> pd.DataFrame:
    rng = _rng(seed, 3)
    table, split = _held_out_users(
        interactions, config.validation_users, config.test_users, ("split.validation_users", "split.test_users"), rng
    )
    role = np.full(len(table), "input", dtype=object)
    held = np.flatnonzero(split != "train")
    role[held[_per_user_holdout(table["user"].to_numpy()[held], config.target_fraction, rng)]] = "target"
    return _labelled(table, split, role)


def _cold_start_split(interactions: pd.DataFrame, config: ColdStartConfig, seed: int) -> pd.DataFrame:
    """Withheld users' first ``known_interactions`` positives by time (then file order)
    are their input, the rest targets; nothing of theirs is a train row."""
    table, split = _held_out_users(
        interactions, config.validation_users, config.users, ("cold_start.validation_users", "cold_start.users"), _rng(seed, 4)
    )
    held = np.flatnonzero(split != "train")
    time = table["timestamp"].to_numpy()[held]
    order = _rank_within_users(table["user"].to_numpy()[held], np.nan_to_num(time, nan=0.0), held)
    role = np.full(len(table), "input", dtype=object)
    role[held[order >= config.known_interactions]] = "target"
    return _labelled(table, split, role)


def split_for_protocol(
    interactions: pd.DataFrame,
    setup: EvaluationSetup,
    split: dict[str, Any] | None,
    spec: DatasetSpec,
    seed: int,
    cold_start: dict[str, Any] | ColdStartConfig | None = None,
) -> pd.DataFrame:
    """Every row with its ``split`` (train | validation | test) and ``role`` (input:
    seen by the model, at training or as fold-in input; target: evaluated).

    Args:
        interactions: (user, item, rating, timestamp, source, label), 0-based ids.
        setup: the resolved evaluation block.
        split: the ``split`` parameter block.
        spec: the dataset's registry entry.
        seed: the split's seed.
        cold_start: the ``cold_start`` parameter block (``cold_start`` only).
    """
    config = build_config(SplitConfig, split, "split")
    name = setup.protocol.name
    if name == "thesis":
        return _thesis_split(interactions, config, seed)
    if name == "full_ranking":
        return _full_ranking_split(interactions, config, spec, seed)
    if name == "leave_one_out":
        return _leave_one_out_split(interactions, config, seed)
    if name == "cold_start":
        return _cold_start_split(interactions, build_config(ColdStartConfig, cold_start, "cold_start"), seed)
    return _strong_generalization_split(interactions, config, seed)


# ---- Evaluation --------------------------------------------------------------------------


def user_scorer(model: Any) -> tuple[ScoreUsers, torch.device]:
    """Scores of a chunk of users against every item, on the model's device when the
    model has preference embeddings, else from ``score`` on the CPU."""
    from debias_pipeline.models.base import FullBatchRecommender

    if isinstance(model, FullBatchRecommender) and model.module is not None:
        with torch.no_grad():
            user_emb, item_emb = model.preference_embeddings()  # (n_users, d), (n_items, d)
        return (lambda users: user_emb[users] @ item_emb.T), model.device

    def score(users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(model.score(users.cpu().numpy()), dtype=np.float32))

    return score, torch.device("cpu")


def _fold_in_scorer(model: Any, history: sp.csr_matrix) -> ScoreUsers:
    def score(users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(model.fold_in(history[users.cpu().numpy()]), dtype=np.float32))

    return score


def _pair_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(users.size, dtype=np.float32), (users, items)), shape=shape)
    matrix.sum_duplicates()
    return matrix


@dataclass
class SplitEvaluator:
    """Metrics of a model on one split (validation or test) under one protocol.

    Attributes:
        setup: protocol, cut-offs and the selection metric.
        split: ``validation`` or ``test``.
        users, items, labels: (n,) the split's target rows.
        mask: (n_users, n_items) items never ranked for ``full`` and ``fold_in``.
        history: (n_users, n_items) the fold-in input of ``fold_in``.
        rows_dropped_unseen: target rows left out because their item has no train
            positive (``strong_generalization``).
    """

    setup: EvaluationSetup
    split: str
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    mask: sp.csr_matrix | None = None
    history: sp.csr_matrix | None = None
    rows_dropped_unseen: int = 0
    user_features: np.ndarray | None = None  # ``cold``: the fallback to same-feature users
    train: sp.csr_matrix | None = None  # ``cold``: the train positives (popularity, train users)
    _last: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def metric(self) -> str:
        """The selection signal's name (``ndcg_at_20``, ``auc``)."""
        return self.setup.selection_key

    @property
    def window(self) -> int:
        """Validation evaluations early stopping averages (``selection_window``)."""
        return self.setup.selection_window

    def _relevance(self, model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, pd.DataFrame]:
        kind, depth = self.setup.protocol.kind, self.setup.depth
        if kind == "candidates":
            scores = model.score_pairs(self.users, self.items)
            user_ids, relevance, n_relevant, skipped = candidate_relevance(
                self.users, self.items, self.labels, scores, depth
            )
            predictions = pd.DataFrame(
                {"user": self.users, "item": self.items, "split": self.split, "label": self.labels, "score": scores.astype(np.float64)}
            )
            return user_ids, relevance, n_relevant, skipped, predictions
        cold = None
        if kind == "full":
            score_users, device = user_scorer(model)
        elif kind == "cold":
            cold = ColdStartScorer(model, self.history, self.user_features, self.train)
            score_users, device = cold, torch.device("cpu")
        else:
            score_users, device = _fold_in_scorer(model, self.history), torch.device("cpu")
        user_ids, relevance, n_relevant, skipped, ranked = _full_relevance_and_ranking(
            score_users, self.mask, self.users, self.items, self.labels, depth, device
        )
        self._last["sources"] = None if cold is None else cold.sources[user_ids]
        predictions = pd.DataFrame(
            {
                "user": np.repeat(user_ids, ranked.shape[1]),
                "rank": np.tile(np.arange(1, ranked.shape[1] + 1), user_ids.size),
                "item": ranked.ravel(),
                "split": self.split,
                "relevant": relevance.ravel().astype(np.int8),
            }
        )
        return user_ids, relevance, n_relevant, skipped, predictions

    def report(self, model: Any, row_signals: bool = True) -> tuple[dict[str, float | int | None], pd.DataFrame]:
        """``<split>_<metric>_at_<k>`` for every metric and cut-off, the user counts,
        and the predictions from which they recompute: the scored rows (``candidates``)
        or each user's top items (``full``, ``fold_in``); with ``row_signals``, also
        ``<split>_auc`` and ``<split>_log_likelihood`` over every labelled row
        (``candidates``)."""
        user_ids, relevance, n_relevant, skipped, predictions = self._relevance(model)
        values: dict[str, float | int | None] = {}
        if row_signals and self.setup.protocol.kind == "candidates":
            scores = predictions["score"].to_numpy()
            for name, signal in ROW_SIGNALS.items():
                values[f"{self.split}_{name}"] = signal(self.labels, scores)
        for k in self.setup.cutoffs:
            per_user = metrics_from_relevance(relevance, n_relevant, k)
            for name in METRICS:
                values[f"{self.split}_{name}_at_{k}"] = float(per_user[name].mean()) if user_ids.size else None
        values[f"{self.split}_users_evaluated"] = int(user_ids.size)
        values[f"{self.split}_users_skipped"] = int(skipped)
        sources = self._last.get("sources")
        if sources is not None:  # cold_start: how many users each way scored, and their NDCG
            k = self.setup.k
            per_user = metrics_from_relevance(relevance, n_relevant, k)["ndcg"]
            for source in SOURCES:
                chosen = sources == source
                values[f"{self.split}_users_{source}"] = int(chosen.sum())
                values[f"{self.split}_ndcg_at_{k}_{source}"] = float(per_user[chosen].mean()) if chosen.any() else None
        if self.rows_dropped_unseen:
            values[f"{self.split}_rows_dropped_unseen"] = self.rows_dropped_unseen
        return values, predictions

    def score(self, model: Any) -> float:
        """The selection signal of ``model`` on this split (higher is better)."""
        if self.setup.selection in ROW_SIGNALS:  # no ranking needed
            value = ROW_SIGNALS[self.setup.selection](self.labels, model.score_pairs(self.users, self.items))
            if value is None:
                raise ValueError(f"the {self.split} split has no positive or no negative row: {self.metric} is undefined")
            return value
        values, _ = self.report(model, row_signals=False)  # every validation of early stopping
        value = values[f"{self.split}_{self.metric}"]
        if value is None:
            raise ValueError(f"the {self.split} split has no user with a relevant item: {self.metric} is undefined")
        return float(value)


def _full_relevance_and_ranking(
    score_users: ScoreUsers,
    mask: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    depth: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    ranked_items: list[torch.Tensor] = []
    user_ids, relevance, n_relevant, skipped = full_ranking_relevance(
        score_users, mask, users, items, labels, depth, device=device, ranked=ranked_items
    )
    ranked = torch.cat(ranked_items).cpu().numpy() if ranked_items else np.zeros((0, relevance.shape[1]), dtype=np.int64)
    return user_ids, relevance, n_relevant, skipped, ranked


@dataclass
class Evaluators:
    """The validation and test evaluators of a run, built once from its split."""

    setup: EvaluationSetup
    validation: SplitEvaluator
    test: SplitEvaluator
    test_rows_dropped_unseen: int = 0

    @classmethod
    def build(
        cls,
        interaction_split: pd.DataFrame,
        train_matrix: sp.csr_matrix,
        setup: EvaluationSetup,
        dataset_summary: dict[str, Any] | None = None,
        user_features: np.ndarray | None = None,
    ) -> Evaluators:
        """Evaluators of ``setup``'s protocol over the split table.

        ``full``: validation masks the train items, test the train and validation
        items. ``fold_in``: each held-out user's input rows are the fold-in history and
        are masked; rows whose item has no train positive are dropped and counted.
        ``cold``: the same, each user scored by ``cold_start.ColdStartScorer`` (which
        falls back to ``user_features``' peers or popularity).
        """
        shape = train_matrix.shape
        if setup.depth > shape[1]:
            raise ValueError(
                f"parameter 'evaluation.k' ({list(setup.cutoffs)}) must not exceed the {shape[1]} items a user "
                "can be recommended"
            )
        kind = setup.protocol.kind
        train_items = np.asarray((train_matrix > 0).sum(axis=0)).ravel() > 0
        evaluators = {}
        validation_targets = None
        for split in SPLITS:
            rows = interaction_split[interaction_split["split"] == split]
            dropped = 0
            if kind in ("fold_in", "cold"):
                seen = train_items[rows["item"].to_numpy()]
                dropped = int((~seen & (rows["role"] == "target").to_numpy()).sum())
                rows = rows[seen]
            targets = rows[rows["role"] == "target"]
            users, items = targets["user"].to_numpy(np.int64), targets["item"].to_numpy(np.int64)
            labels = targets["label"].to_numpy(np.float64)
            mask = history = None
            if kind == "full":
                mask = train_positives(train_matrix)
                if split == "test" and validation_targets is not None:
                    mask = train_positives(mask + validation_targets)
            elif kind in ("fold_in", "cold"):
                inputs = rows[(rows["role"] == "input") & (rows["label"] == 1)]
                history = _pair_matrix(inputs["user"].to_numpy(np.int64), inputs["item"].to_numpy(np.int64), shape)
                mask = history
            positive = labels > 0
            if split == "validation":
                validation_targets = _pair_matrix(users[positive], items[positive], shape)
            cold = {"user_features": user_features, "train": train_positives(train_matrix)} if kind == "cold" else {}
            evaluators[split] = SplitEvaluator(setup, split, users, items, labels, mask, history, dropped, **cold)
        if not (evaluators["validation"].labels > 0).any():
            raise ValueError(
                f"the validation split has no positive row ({evaluators['validation'].labels.size} rows): "
                f"{setup.selection_metric} is undefined and early stopping impossible; raise split.validation_fraction "
                "(or split.validation_users)"
            )
        dropped_unseen = int((dataset_summary or {}).get("test_rows_dropped_unseen", 0))
        return cls(setup, evaluators["validation"], evaluators["test"], dropped_unseen)

    def check_model(self, model: Any) -> None:
        """Refuse, before training, a model the protocol cannot evaluate."""
        check_model_fits_protocol(type(model), self.setup.protocol.name)


def check_model_fits_protocol(model_class: type, protocol: str, where: str = "model") -> None:
    """``strong_generalization`` scores users the model never trained on: only models
    that fold in a new user's clicks (``supports_fold_in``) can be evaluated by it.

    Raises:
        ValueError: Naming the model and the protocol.
    """
    if PROTOCOLS[protocol].kind == "fold_in" and not getattr(model_class, "supports_fold_in", False):
        able = [name for name, cls in _models().items() if getattr(cls, "supports_fold_in", False)]
        raise ValueError(
            f"model {model_class.name!r} ({where}) cannot score a user it was not trained on, which "
            f"evaluation.protocol {protocol!r} needs; models that fold in new users: {', '.join(able)}"
        )


def _models() -> dict[str, type]:
    from debias_pipeline.models.registry import MODELS

    return MODELS

