"""The protocols' splits: every interaction labelled with its ``split`` (train,
validation, test) and ``role`` (input, target), from the ``split`` and ``cold_start``
parameter blocks (see ``protocols`` for what each protocol holds out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from debias_pipeline.config.params import Params, build_config, require
from debias_pipeline.data.registry import DatasetSpec
from debias_pipeline.evaluation.protocols import TRAINING_PARTS, EvaluationSetup

# Bound on one chunk's random table of leave_one_out's candidate sampling (32 MB).
CANDIDATE_CHUNK_ELEMENTS = 1 << 22

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

def _ips_split(interactions: pd.DataFrame, config: SplitConfig, spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """The biased log only: each user's rated rows (clicked or not) held out at random as the
    test log (``test_fraction``), or a given test part; validation carved out of the train
    positives as in ``full_ranking``. An unbiased set is left out: its figure is the
    ``thesis`` protocol's, against which the off-policy estimates can be judged."""
    log = interactions[interactions["source"] != "unbiased"].reset_index(drop=True)
    fraction = 0.1 if config.validation_fraction is None else config.validation_fraction
    rng = _rng(seed, 5)
    split = np.full(len(log), "train", dtype=object)
    users = log["user"].to_numpy()
    if spec.parts == "train_test":
        split[log["source"].to_numpy() == "test"] = "test"
    else:
        split[_per_user_holdout(users, config.test_fraction, rng)] = "test"
    carve = np.flatnonzero((log["label"].to_numpy() == 1) & (split == "train"))
    split[carve[_per_user_holdout(users[carve], fraction, rng)]] = "validation"
    role = np.where(split == "train", "input", "target").astype(object)
    return _labelled(log, split, role)


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
    if name == "ips":
        return _ips_split(interactions, config, spec, seed)
    if name == "cold_start":
        return _cold_start_split(interactions, build_config(ColdStartConfig, cold_start, "cold_start"), seed)
    return _strong_generalization_split(interactions, config, seed)
