"""From the parsed raw files to the interactions, their side data, the train matrix and
the graph: ingestion (validate the parsed files, or run the simulator) ->
binarization (the ``label``) -> indexing (duplicates, unseen test ids, k-core, 0-based
ids, side data aligned with them) -> the train matrix Y -> the normalized adjacency.
The protocol's split between indexing and Y is ``evaluation.splits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from debias_pipeline.config.params import Params, build_config, require
from debias_pipeline.data.loaders.parsing import RawData, printable
from debias_pipeline.data.registry import DatasetSpec, dataset_spec
from debias_pipeline.data.simulation import GroundTruth, SyntheticConfig, generate_synthetic

RATING_COLUMNS = ["user", "item", "rating", "timestamp", "source"]

TRAINING_PARTS = ("biased", "train", "all")  # the parts models may learn from

PARTS = {"biased_unbiased": ("biased", "unbiased"), "train_test": ("train", "test"), "log": ("all",)}

class BinarizationConfig(Params):
    """Which rows are positives (PROTOCOL.md §2.1).

    Attributes:
        threshold: a rating >= ``threshold`` is a positive; ``None`` takes the
            dataset's default (4 for the 1..5 rating datasets; every row a positive for
            implicit data: LastFM's play counts, Gowalla's check-ins, anime watches, a
            custom click log). Must lie in the dataset's rating range.
        unrated: what a row marked "watched, not rated" (the anime database's -1)
            becomes when a threshold applies: ``positive``, ``negative`` or ``drop``.
    """

    threshold: float | None = None
    unrated: Literal["positive", "negative", "drop"] = "positive"

    def check(self) -> None:
        require(
            self.threshold is None or np.isfinite(self.threshold),
            f"threshold must be a finite number or null, got {self.threshold}",
        )

class PreprocessingConfig(Params):
    """Cleaning between parsing and splitting.

    Attributes:
        duplicates: a (user, item) pair twice in one part: ``error`` (the study's
            datasets), or keep the ``first`` / ``last`` (by timestamp when there is one,
            else by file order); ``None`` takes the dataset's default.
        min_user_interactions, min_item_interactions: k-core filter: users, and items,
            with fewer train positives than these are removed, iterated until both hold
            (0 = no filter).
    """

    duplicates: Literal["error", "first", "last"] | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0

    def check(self) -> None:
        require(self.min_user_interactions >= 0, f"min_user_interactions must be >= 0, got {self.min_user_interactions}")
        require(self.min_item_interactions >= 0, f"min_item_interactions must be >= 0, got {self.min_item_interactions}")

def _rating_errors(table: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """True for every row whose rating is invalid for ``spec``."""
    ratings = table["rating"].to_numpy(np.float64)
    present = ~np.isnan(ratings)
    if spec.rating_range is not None:
        low, high = spec.rating_range
        valid = (ratings >= low) & (ratings <= high) & (ratings == np.floor(ratings))
        if spec.name == "anime":
            valid |= ratings == -1  # watched, not rated
        if spec.feedback == "explicit":
            return ~valid  # a missing rating is an error too
        return present & ~valid
    return present & ~(np.isfinite(ratings) & (ratings >= 0))

def _check_ratings(raw: RawData, spec: DatasetSpec) -> None:
    table = raw.interactions
    for part in PARTS[spec.parts]:
        if not (table["part"] == part).any():
            raise ValueError(f"{raw.files.get(part, part)}: the rating set is empty")
    bad = _rating_errors(table, spec)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        row = table.iloc[at]
        problem = (
            "is not a non-negative number"
            if spec.rating_range is None
            else f"is outside {spec.rating_range[0]:g}..{spec.rating_range[1]:g}"
        )
        raise ValueError(
            f"{raw.files.get(row['part'], row['part'])} row {row['line']}: rating {float(row['rating']):g} "
            f"(user {printable(row['user'])}, item {printable(row['item'])}) {problem}"
        )

def ingest_ratings(
    raw_data: RawData, dataset: str, synthetic: SyntheticConfig, seed: int
) -> tuple[pd.DataFrame, GroundTruth | dict[str, np.ndarray]]:
    """Validate the parsed files (or run the simulator) into one tidy ratings table.

    Args:
        raw_data: Parsed raw files of the chosen dataset.
        dataset: The ``dataset`` parameter; must name the same dataset as ``raw_data``.
        synthetic: Simulator parameters (used when ``dataset`` is ``synthetic``).
        seed: The run's seed (the simulator's draws).

    Returns:
        ``ratings`` (user, item, rating, timestamp, source) in the files' own ids, rows
        in file order, ``source`` the part: biased / unbiased, train / test or all;
        ``ground_truth``: the simulator's ``GroundTruth`` for synthetic data, (0, 0)
        ``preference`` and ``exposure`` arrays for real data (nobody knows their truth).

    Raises:
        ValueError: Naming the file and row of a bad rating or an empty set, or the
            parameter at fault.
    """
    spec = dataset_spec(dataset)
    if raw_data.name != dataset:
        raise ValueError(
            f"parameter 'dataset' is {dataset!r} but the catalog's raw_data reads {raw_data.name!r}; "
            "choose the dataset with `--params=dataset=...` (or in conf/base/globals.yml)"
        )
    if spec.simulated:
        data = generate_synthetic(build_config(SyntheticConfig, synthetic, "synthetic"), seed)
        ratings = data.ratings.assign(rating=data.ratings["rating"].astype(np.float64), timestamp=np.nan)
        return ratings[RATING_COLUMNS], data.truth
    _check_ratings(raw_data, spec)
    table = raw_data.interactions.reset_index(drop=True)
    # The parsed columns themselves, not copies (copy-on-write keeps raw_data as it is
    # should either be written to); text stays Arrow text: an object array would make
    # one Python string per row, several times the table's size on a big log.
    ratings = pd.DataFrame(
        {
            "user": table["user"],
            "item": table["item"],
            "rating": table["rating"].astype(np.float64),
            "timestamp": table["timestamp"].astype(np.float64),
            "source": table["part"],
            "line": table["line"].astype(np.int64),
        },
        copy=False,
    )
    return ratings, {"preference": np.zeros((0, 0)), "exposure": np.zeros((0, 0))}

def resolve_threshold(binarization: BinarizationConfig | Mapping[str, Any] | None, dataset: str) -> float | None:
    """The threshold of the run: the parameter, or the dataset's default (``None``:
    every row is a positive).

    Raises:
        ValueError: For a threshold outside the dataset's rating scale.
    """
    config = build_config(BinarizationConfig, binarization, "binarization")
    spec = dataset_spec(dataset)
    threshold = spec.default_threshold if config.threshold is None else config.threshold
    if threshold is not None and spec.rating_range is not None:
        low, high = spec.rating_range
        require(
            low <= threshold <= high,
            f"parameter 'binarization.threshold' must be in {low:g}..{high:g} for dataset {dataset!r}, got {threshold:g}",
        )
    return threshold

def binarize_ratings(ratings: pd.DataFrame, binarization: BinarizationConfig, dataset: str) -> pd.DataFrame:
    """Add ``label``: 1 for a positive row, 0 otherwise (a new table).

    Explicit ratings are positive at ``rating >= threshold``; with no threshold (the
    default of implicit datasets) every row is a positive.
    """
    config = build_config(BinarizationConfig, binarization, "binarization")
    threshold = resolve_threshold(binarization, dataset)
    if threshold is None:
        return ratings.assign(label=np.ones(len(ratings), dtype=np.int8))
    if dataset_spec(dataset).rating_range is None and ratings["rating"].isna().all():
        raise ValueError(
            f"parameter 'binarization.threshold' is {threshold:g} but dataset {dataset!r} has no ratings to "
            "binarize; leave it null (every row is a positive)"
        )
    rating = ratings["rating"].to_numpy(np.float64)
    label = (rating >= threshold).astype(np.int8)
    unrated = rating == -1
    if unrated.any():
        label[unrated] = 1 if config.unrated == "positive" else 0
        if config.unrated == "drop":
            return ratings.assign(label=label)[~unrated].reset_index(drop=True)
    return ratings.assign(label=label)

def _pair_keys(table: pd.DataFrame) -> np.ndarray:
    """One int64 per row, equal exactly for rows of equal (source, user, item).

    Built from each column's codes (``pd.factorize``: Arrow's dictionary encoding for
    text) rather than by hashing the rows, which turns text ids into one Python string
    per row; re-factorized after each column so the codes stay below the row count and
    their products cannot overflow.
    """
    keys = np.zeros(len(table), dtype=np.int64)
    for column in ("source", "user", "item"):
        codes, uniques = pd.factorize(table[column])
        keys = pd.factorize(keys * len(uniques) + codes)[0].astype(np.int64)
    return keys

def _deduplicate(table: pd.DataFrame, policy: str, files: dict[str, str]) -> tuple[pd.DataFrame, int]:
    keys = _pair_keys(table)
    duplicated = pd.Series(keys).duplicated(keep=False).to_numpy()
    if not duplicated.any():
        return table, 0
    if policy == "error":
        rows = table.loc[duplicated].sort_values(["source", "user", "item", "line"]).head(2)
        first, second = rows["line"].tolist()
        source = rows["source"].iat[0]
        raise ValueError(
            f"{files.get(source, source)} rows {first} and {second}: (user {printable(rows['user'].iat[0])}, "
            f"item {printable(rows['item'].iat[0])}) is rated twice in one set; set preprocessing.duplicates to "
            "'first' or 'last' to keep one of them"
        )
    # The row positions in time order (by timestamp when every row has one, then by
    # file order), the first or last of each pair kept, back in table order.
    line = table["line"].to_numpy()
    timestamp = table["timestamp"].to_numpy(np.float64)
    order = np.lexsort((line, timestamp)) if not np.isnan(timestamp).any() else np.argsort(line, kind="stable")
    kept = order[~pd.Series(keys[order]).duplicated(keep=policy).to_numpy()]
    return table.iloc[np.sort(kept)], int(len(table) - len(kept))

def _k_core(table: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Rows of the users and items that keep >= the thresholds of train positives."""
    if min_user <= 0 and min_item <= 0:
        return table
    keep = np.ones(len(table), dtype=bool)
    counted = (table["label"].to_numpy() == 1) & table["source"].isin(TRAINING_PARTS).to_numpy()
    users, items = table["user"], table["item"]
    while True:
        active = counted & keep
        user_counts = users[active].value_counts()
        item_counts = items[active].value_counts()
        good_users = user_counts.index[user_counts >= min_user]
        good_items = item_counts.index[item_counts >= min_item]
        new_keep = keep & users.isin(good_users).to_numpy() & items.isin(good_items).to_numpy()
        if (new_keep == keep).all():
            break
        keep = new_keep
    if not (keep & counted).any():
        raise ValueError(
            "nothing is left after the k-core filter (preprocessing.min_user_interactions="
            f"{min_user}, preprocessing.min_item_interactions={min_item}); lower the thresholds"
        )
    return table[keep]

def _sorted_ids(values: pd.Series) -> np.ndarray:
    ids = values.unique()  # of the column's own type: no Python string per row
    if ids.dtype.kind in "iu":
        return np.sort(ids)
    return np.array(sorted(ids, key=str), dtype=object)

def _id_kinds(ids: np.ndarray) -> np.ndarray:
    """``"int"`` or ``"str"`` for each id."""
    if ids.dtype.kind in "iu":
        return np.full(ids.size, "int", dtype=object)
    is_int = np.fromiter((isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids), bool, ids.size)
    return np.where(is_int, "int", "str").astype(object)

def build_id_maps(users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """The id maps: ``entity`` (user / item), ``index`` (0-based), ``original_id`` and
    ``kind`` (``int`` or ``str``: the original id's own type).

    ``original_id`` is int64 when every user and item id is an integer, else text for
    all of them (an integer as its decimal digits). One column holds one type, which is
    what Parquet stores: a custom log with numeric users and text items (or the reverse)
    would otherwise give a column of ints and strings that the catalog cannot save.
    ``kind`` gives each id its type back (:func:`entity_ids`).
    """
    kinds = np.concatenate([_id_kinds(users), _id_kinds(items)])
    if users.dtype.kind in "iu" and items.dtype.kind in "iu":
        original = np.concatenate([users.astype(np.int64), items.astype(np.int64)])
    else:
        original = pd.array([str(i) for ids in (users, items) for i in ids.tolist()], dtype=str)
    return pd.DataFrame(
        {
            "entity": np.repeat(np.array(["user", "item"], dtype=object), [users.size, items.size]),
            "index": np.concatenate([np.arange(users.size), np.arange(items.size)]).astype(np.int64),
            "original_id": original,
            "kind": kinds,
        }
    )

def entity_ids(id_maps: pd.DataFrame, entity: str) -> np.ndarray:
    """The original ids of ``entity`` (``user`` or ``item``) by 0-based index, each of its
    own type: int64 when all are integers, else objects (str, and int where ``kind`` says).

    Reads id maps as saved and loaded by the catalog (text ``original_id`` when the two
    entities' kinds differ) as well as those without a ``kind`` column.
    """
    rows = id_maps[id_maps["entity"] == entity].sort_values("index")
    if "kind" not in rows:
        return rows["original_id"].to_numpy()
    integer = (rows["kind"] == "int").to_numpy(bool)
    if integer.all():
        return rows["original_id"].astype(np.int64).to_numpy()
    values = rows["original_id"].astype(str).to_numpy(dtype=object)
    values[integer] = [int(value) for value in values[integer]]
    return values

def _position(ids: np.ndarray, values: pd.Series) -> np.ndarray:
    """Index of each value in ``ids`` (every value is present).

    Looked up once per distinct value (``pd.factorize``), not once per row: the rows of
    a text column would each become a Python string.
    """
    codes, uniques = pd.factorize(values)
    return pd.Index(ids).get_indexer(uniques).astype(np.int64)[codes]

def index_interactions(
    labeled_ratings: pd.DataFrame,
    raw_data: RawData,
    ground_truth: GroundTruth | dict[str, np.ndarray],
    preprocessing: PreprocessingConfig,
    dataset: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Clean the labelled ratings and map every id onto 0..n-1, side data along.

    Duplicated pairs follow ``preprocessing.duplicates``; rows of a given test set
    whose user or item never occurs in the train file are dropped and counted (ids
    "never seen in train"); the k-core filter runs on the train positives. Users and
    items are numbered in sorted order of their ids; a matrix format (Coat) and the
    simulator keep their row and column positions.

    Returns:
        ``interactions`` (user, item, rating, timestamp, source, label; 0-based ids),
        ``id_maps`` (entity, index, original_id, kind: :func:`build_id_maps`), ``item_metadata`` (index,
        original_id, title, genres, what else the dataset has), ``user_features``
        (index, original_id, features), ``social_edges`` (user, friend; 0-based, each
        tie once with user < friend) and ``dataset_summary`` (counts, and the rows
        dropped with the reason).
    """
    config = build_config(PreprocessingConfig, preprocessing, "preprocessing")
    spec = dataset_spec(dataset)
    files = raw_data.files
    summary: dict[str, Any] = {"dataset": dataset, "dropped": dict(raw_data.dropped)}
    table = labeled_ratings
    if "line" not in table:
        table = table.assign(line=np.arange(1, len(table) + 1))
    table, n_duplicates = _deduplicate(table, config.duplicates or spec.duplicates, files)
    if n_duplicates:
        summary["dropped"]["duplicated (user, item) pairs"] = n_duplicates
    if spec.parts == "train_test":
        train = table["source"] == "train"
        seen = table["user"].isin(table.loc[train, "user"]) & table["item"].isin(table.loc[train, "item"])
        summary["test_rows_dropped_unseen"] = int((~seen).sum())
        table = table[seen]
    before = len(table)
    table = _k_core(table, config.min_user_interactions, config.min_item_interactions)
    if len(table) < before:
        summary["dropped"]["k-core filter"] = int(before - len(table))

    shape = (ground_truth.n_users, ground_truth.n_items) if isinstance(ground_truth, GroundTruth) else raw_data.shape
    if shape is not None and "k-core filter" not in summary["dropped"]:
        users, items = np.arange(shape[0]), np.arange(shape[1])
    else:
        users, items = _sorted_ids(table["user"]), _sorted_ids(table["item"])
    interactions = pd.DataFrame(
        {
            "user": _position(users, table["user"]),
            "item": _position(items, table["item"]),
            "rating": table["rating"].to_numpy(np.float64),
            "timestamp": table["timestamp"].to_numpy(np.float64),
            "source": table["source"].array,
            "label": table["label"].to_numpy(np.int8),
        }
    )
    trainable = interactions["source"].isin(TRAINING_PARTS).to_numpy()
    if not (interactions["label"].to_numpy()[trainable] == 1).any():
        present = set(interactions["source"])
        parts = ", ".join(files.get(part, part) for part in TRAINING_PARTS if part in present)
        raise ValueError(
            f"the train set of dataset {dataset!r} ({parts}) has no positive row (binarization.threshold, "
            "preprocessing): a model cannot learn from it"
        )
    id_maps = build_id_maps(users, items)
    item_metadata = _aligned_side_table(raw_data.items, "item", items)
    if "title" not in item_metadata:
        item_metadata = item_metadata.assign(title="", genres="")
    user_features = _aligned_side_table(raw_data.users, "user", users)
    social_edges = _social_edges(raw_data.social, users, summary)
    summary.update(
        n_users=int(users.size),
        n_items=int(items.size),
        rows=interactions.groupby("source").size().astype(int).to_dict(),
        positives=interactions[interactions["label"] == 1].groupby("source").size().astype(int).to_dict(),
        social_edges=int(len(social_edges)),
    )
    return interactions, id_maps, item_metadata, user_features, social_edges, summary

def _aligned_side_table(table: pd.DataFrame | None, key: str, ids: np.ndarray) -> pd.DataFrame:
    """One row per indexed id (index, original_id, then the table's columns); ids the
    table does not describe get empty values."""
    frame = pd.DataFrame({"index": np.arange(ids.size, dtype=np.int64), "original_id": ids})
    if table is None or table.empty:
        return frame
    described = table.drop_duplicates(key, keep="first").set_index(key)
    described.index = described.index.astype(ids.dtype) if ids.dtype != object else described.index.astype(str)
    lookup = ids if ids.dtype != object else ids.astype(str)
    columns = described.reindex(lookup).reset_index(drop=True)
    for column in columns:
        if columns[column].dtype == object:
            columns[column] = columns[column].fillna("")
    return pd.concat([frame, columns], axis=1)

def _social_edges(social: pd.DataFrame | None, users: np.ndarray, summary: dict[str, Any]) -> pd.DataFrame:
    if social is None or social.empty:
        return pd.DataFrame({"user": pd.Series(dtype=np.int64), "friend": pd.Series(dtype=np.int64)})
    index = pd.Index(users)
    a = index.get_indexer(social["user"].to_numpy())
    b = index.get_indexer(social["friend"].to_numpy())
    known = (a >= 0) & (b >= 0) & (a != b)
    low, high = np.minimum(a[known], b[known]), np.maximum(a[known], b[known])
    edges = pd.DataFrame({"user": low, "friend": high}).drop_duplicates().sort_values(["user", "friend"])
    dropped = len(social) - len(edges)
    if dropped:
        summary["dropped"]["social ties to unknown users, self-ties or repeated ties"] = int(dropped)
    return edges.reset_index(drop=True)

def count_entities(id_maps: pd.DataFrame) -> tuple[int, int]:
    """(n_users, n_items) from the id maps."""
    counts = id_maps["entity"].value_counts()
    return int(counts.get("user", 0)), int(counts.get("item", 0))

def build_train_matrix(interaction_split: pd.DataFrame, id_maps: pd.DataFrame) -> sp.csr_matrix:
    """Y (n_users, n_items): 1 for a positive train row, 0 everywhere else."""
    return train_positive_matrix(interaction_split, count_entities(id_maps))

def pair_matrix(rows: pd.DataFrame, shape: tuple[int, int], dtype: type = np.float32) -> sp.csr_matrix:
    """The (user, item) pairs of ``rows`` as a (n_users, n_items) 0/1 CSR matrix (a pair
    listed twice counts once)."""
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=dtype), (rows["user"].to_numpy(np.int64), rows["item"].to_numpy(np.int64))), shape=shape
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def train_positive_matrix(interaction_split: pd.DataFrame, shape: tuple[int, int]) -> sp.csr_matrix:
    """The positive train rows of a split as a (n_users, n_items) 0/1 CSR matrix."""
    return pair_matrix(interaction_split[(interaction_split["split"] == "train") & (interaction_split["label"] == 1)], shape)

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
