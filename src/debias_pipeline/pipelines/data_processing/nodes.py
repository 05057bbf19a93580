"""Nodes from raw rating files to the train matrix, the unbiased split and the graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from debias_pipeline.config import build_config, require
from debias_pipeline.datasets.raw_ratings import DATASETS, SOURCES, RawRatings
from debias_pipeline.simulation import GroundTruth, SyntheticConfig, generate_synthetic

RATING_MIN, RATING_MAX = 1, 5


@dataclass(frozen=True)
class BinarizationConfig:
    """A rating >= ``threshold`` is a positive (PROTOCOL.md §2.1)."""

    threshold: int = 4

    def __post_init__(self) -> None:
        require(
            RATING_MIN <= self.threshold <= RATING_MAX,
            f"threshold must be in {RATING_MIN}..{RATING_MAX}, got {self.threshold}",
        )


@dataclass(frozen=True)
class SplitConfig:
    """Random split of the unbiased rows: a validation share, the rest is test."""

    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        require(
            0 < self.validation_fraction < 1,
            f"validation_fraction must be in (0, 1), got {self.validation_fraction}",
        )


def _check_table(table: pd.DataFrame, path: str) -> None:
    if table.empty:
        raise ValueError(f"{path}: the rating set is empty")
    ratings = table["rating"].to_numpy()
    bad = (ratings < RATING_MIN) | (ratings > RATING_MAX) | (ratings != np.floor(ratings))
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path} row {table['line'].iat[at]}: rating {ratings[at]:g} "
            f"(user {table['user'].iat[at]}, item {table['item'].iat[at]}) is outside {RATING_MIN}..{RATING_MAX}"
        )
    duplicated = table.duplicated(["user", "item"], keep=False).to_numpy()
    if duplicated.any():
        rows = table.loc[duplicated].sort_values(["user", "item", "line"]).head(2)
        first, second = rows["line"].tolist()
        raise ValueError(
            f"{path} rows {first} and {second}: (user {rows['user'].iat[0]}, item {rows['item'].iat[0]}) "
            "is rated twice in one set"
        )


def _contiguous_ids(raw: RawRatings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map the files' ids onto 0..n-1; a matrix format keeps its row/column positions."""
    tables = [raw.tables[source].assign(source=source) for source in SOURCES]
    combined = pd.concat(tables, ignore_index=True)
    if raw.shape is not None:
        users, items = np.arange(raw.shape[0]), np.arange(raw.shape[1])
    else:
        users, items = np.unique(combined["user"]), np.unique(combined["item"])
    ratings = pd.DataFrame(
        {
            "user": np.searchsorted(users, combined["user"].to_numpy()).astype(np.int64),
            "item": np.searchsorted(items, combined["item"].to_numpy()).astype(np.int64),
            "rating": combined["rating"].to_numpy().astype(np.int64),
            "source": combined["source"].to_numpy(),
        }
    )
    id_maps = pd.concat(
        [
            pd.DataFrame({"entity": "user", "index": np.arange(users.size), "original_id": users}),
            pd.DataFrame({"entity": "item", "index": np.arange(items.size), "original_id": items}),
        ],
        ignore_index=True,
    )
    return ratings, id_maps


def ingest_ratings(
    raw: RawRatings, dataset: str, synthetic: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, GroundTruth | dict[str, np.ndarray]]:
    """Validate the raw files (or run the simulator) into one tidy ratings table.

    Args:
        raw: Parsed raw files of the chosen dataset.
        dataset: The ``dataset`` parameter; must name the same dataset as ``raw``.
        synthetic: Simulator parameters (used when ``dataset`` is ``synthetic``).
        seed: The run's seed (the simulator's draws).

    Returns:
        ``ratings`` (user, item, rating, source = biased | unbiased) with 0-based
        contiguous ids; ``id_maps`` (entity, index, original_id); ``ground_truth``:
        for synthetic data the simulator's ``GroundTruth`` (factors of the true
        preference and exposure logits; ``truth["preference"]`` is the dense matrix
        when small), for real data (0, 0) ``preference`` and ``exposure`` arrays,
        since nobody knows their truth.

    Raises:
        ValueError: Naming the file and row of a bad rating, a duplicated pair or
            an empty set, or the parameter at fault.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (parameter 'dataset'); valid datasets: {', '.join(DATASETS)}")
    if raw.name != dataset:
        raise ValueError(
            f"parameter 'dataset' is {dataset!r} but the catalog's raw_ratings reads {raw.name!r}; "
            "choose the dataset with `--params=dataset=...` (or in conf/base/globals.yml)"
        )
    if dataset == "synthetic":
        data = generate_synthetic(build_config(SyntheticConfig, synthetic, "synthetic"), seed)
        n_users, n_items = data.truth.n_users, data.truth.n_items
        id_maps = pd.concat(
            [
                pd.DataFrame({"entity": "user", "index": np.arange(n_users), "original_id": np.arange(n_users)}),
                pd.DataFrame({"entity": "item", "index": np.arange(n_items), "original_id": np.arange(n_items)}),
            ],
            ignore_index=True,
        )
        return data.ratings, id_maps, data.truth

    for source in SOURCES:
        _check_table(raw.tables[source], raw.files[source])
    ratings, id_maps = _contiguous_ids(raw)
    return ratings, id_maps, {"preference": np.zeros((0, 0)), "exposure": np.zeros((0, 0))}


def binarize_ratings(ratings: pd.DataFrame, binarization: dict[str, Any]) -> pd.DataFrame:
    """Add ``label`` = 1 for ``rating >= threshold``, else 0 (a new table)."""
    config = build_config(BinarizationConfig, binarization, "binarization")
    return ratings.assign(label=(ratings["rating"] >= config.threshold).astype(np.int8))


def count_entities(id_maps: pd.DataFrame) -> tuple[int, int]:
    """(n_users, n_items) from the id maps."""
    counts = id_maps["entity"].value_counts()
    return int(counts.get("user", 0)), int(counts.get("item", 0))


def build_train_matrix(interactions: pd.DataFrame, id_maps: pd.DataFrame) -> sp.csr_matrix:
    """Y (n_users, n_items): 1 for a positive biased rating, 0 everywhere else."""
    positives = interactions[(interactions["source"] == "biased") & (interactions["label"] == 1)]
    shape = count_entities(id_maps)
    data = np.ones(len(positives), dtype=np.float32)
    return sp.csr_matrix((data, (positives["user"].to_numpy(), positives["item"].to_numpy())), shape=shape)


def split_unbiased_ratings(interactions: pd.DataFrame, split: dict[str, Any], seed: int) -> pd.DataFrame:
    """Split the unbiased rows at random: ``validation_fraction`` validation, rest test.

    Returns:
        The unbiased rows (user, item, rating, label, split = validation | test),
        validation rows first; the number of validation rows is
        ``round(validation_fraction * n)``. Seeded by ``seed``.
    """
    config = build_config(SplitConfig, split, "split")
    unbiased = interactions[interactions["source"] == "unbiased"].reset_index(drop=True)
    n_rows = len(unbiased)
    n_validation = int(round(config.validation_fraction * n_rows))
    permutation = np.random.default_rng(seed).permutation(n_rows)
    labels = np.full(n_rows, "test", dtype=object)
    labels[permutation[:n_validation]] = "validation"
    table = unbiased[["user", "item", "rating", "label"]].assign(split=labels)
    return table.sort_values(["split", "user", "item"], ascending=[False, True, True], ignore_index=True)


def build_normalized_adjacency(train_matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Â = D^-1/2 A D^-1/2 with A = [[0, R], [Rᵀ, 0]] (PROTOCOL.md §2.4).

    No self-loops; a node of degree 0 gets an all-zero row and column.

    Returns:
        (n_users + n_items, n_users + n_items) symmetric CSR matrix, float32.
    """
    r = (sp.csr_matrix(train_matrix) != 0).astype(np.float64)  # a new matrix: the input is not touched
    adjacency = sp.bmat([[None, r], [r.T, None]], format="csr")  # (n_nodes, n_nodes)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    nonzero = degree > 0
    inv_sqrt[nonzero] = degree[nonzero] ** -0.5
    scaling = sp.diags(inv_sqrt)
    normalized = (scaling @ adjacency @ scaling).tocsr()
    normalized.sort_indices()
    return normalized.astype(np.float32)
