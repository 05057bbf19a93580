"""Data-processing nodes (PROTOCOL.md §2), called directly with hand-made inputs."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.processing import (
    binarize_ratings,
    build_normalized_adjacency,
    build_train_matrix,
    index_interactions,
    ingest_ratings,
)
from debias_pipeline.data.simulation import GroundTruth
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.models.contract import TrainData
from debias_pipeline.training.inputs import (
    build_evaluators,
    build_train_data,
    process_synthetic,
    split_interactions,
)

SMALL_SYNTHETIC = {
    "n_users": 20,
    "n_items": 15,
    "rank": 3,
    "preference_rate": 0.3,
    "popularity_skew": 1.0,
    "train_ratings_per_user": 4.0,
    "test_items_per_user": 5,
    "rate_if_liked": 0.9,
    "rate_if_disliked": 0.3,
}


def _part(rows: list[tuple[int, int, float, int]], part: str) -> pd.DataFrame:
    """One part's rows as the loaders give them: user, item, rating (float), timestamp, part, line."""
    users, items, ratings, lines = zip(*rows) if rows else ((), (), (), ())
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": np.array(ratings, dtype=np.float64),
            "timestamp": np.full(len(rows), np.nan),
            "part": part,
            "line": np.array(lines, dtype=np.int64),
        }
    )


def _triples(biased_rows, unbiased_rows, *, name: str = "yahoo_r3", shape=None, files=None) -> RawData:
    return RawData(
        name=name,
        interactions=pd.concat([_part(biased_rows, "biased"), _part(unbiased_rows, "unbiased")], ignore_index=True),
        files=files or {"biased": "raw/train.txt", "unbiased": "raw/test.txt"},
        shape=shape,
    )


def _synthetic_raw() -> RawData:
    """What the catalog's raw_data gives for dataset=synthetic (no files)."""
    return RawDataset("synthetic", root="unused").load()


def _indexed(raw: RawData, dataset: str, preprocessing: dict | None = None):
    """ingest -> binarize (the dataset's default threshold) -> index, as the pipeline chains them."""
    ratings, truth = ingest_ratings(raw, dataset, {}, seed=0)
    labeled = binarize_ratings(ratings, {}, dataset)
    return index_interactions(labeled, raw, truth, preprocessing or {}, dataset)


def _interaction_split() -> pd.DataFrame:
    # 3 users x 4 items; item 3 is never rated. The biased rows are the thesis train split.
    return pd.DataFrame(
        {
            "user": np.array([0, 0, 1, 2, 2, 0, 1, 2], dtype=np.int64),
            "item": np.array([0, 1, 2, 0, 2, 2, 0, 1], dtype=np.int64),
            "rating": np.array([5, 2, 4, 4, 3, 5, 1, 4], dtype=np.float64),
            "timestamp": np.full(8, np.nan),
            "source": ["biased"] * 5 + ["unbiased"] * 3,
            "label": np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=np.int8),
            "split": ["train"] * 5 + ["validation", "test", "test"],
            "role": ["input"] * 5 + ["target"] * 3,
        }
    )


def _id_maps(n_users: int, n_items: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity": ["user"] * n_users + ["item"] * n_items,
            "index": np.r_[np.arange(n_users), np.arange(n_items)],
            "original_id": np.r_[np.arange(n_users), np.arange(n_items)],
        }
    )


# --------------------------------------------------------------------------- binarize


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (4, [0, 0, 0, 1, 1]),  # 4 and 5 are positives
        (3, [0, 0, 1, 1, 1]),  # 3, 4 and 5 are positives
    ],
)
def test_binarize_ratings(threshold, expected):
    ratings = pd.DataFrame({"user": [0, 0, 1, 1, 2], "item": [0, 1, 0, 1, 0], "rating": [1, 2, 3, 4, 5]})
    before = ratings.copy()
    result = binarize_ratings(ratings, {"threshold": threshold}, "coat")
    assert result["label"].tolist() == expected
    pd.testing.assert_frame_equal(result.drop(columns="label"), before)
    pd.testing.assert_frame_equal(ratings, before)  # input not mutated
    assert "label" not in ratings.columns


@pytest.mark.parametrize("dataset", ["coat", "yahoo_r3", "synthetic"])
@pytest.mark.parametrize("binarization", [{}, {"threshold": None}])
def test_binarize_ratings_default_threshold_is_4(dataset, binarization):
    # A null threshold takes the dataset's default: 4 on the 1..5 rating datasets.
    ratings = pd.DataFrame({"rating": [3, 4]})
    assert binarize_ratings(ratings, binarization, dataset)["label"].tolist() == [0, 1]


def test_binarize_ratings_implicit_data_every_row_is_a_positive():
    # Gowalla's check-ins carry no rating: with no threshold every row is a positive.
    ratings = pd.DataFrame({"rating": [np.nan, np.nan, np.nan]})
    assert binarize_ratings(ratings, {}, "gowalla")["label"].tolist() == [1, 1, 1]


def test_binarize_ratings_threshold_on_data_without_ratings_names_parameter():
    with pytest.raises(ValueError, match=r"binarization\.threshold.*'gowalla' has no ratings"):
        binarize_ratings(pd.DataFrame({"rating": [np.nan]}), {"threshold": 4}, "gowalla")


def test_binarize_ratings_fractional_threshold():
    # Thresholds are numbers now (not only integers): 4.5 keeps the 5s only.
    ratings = pd.DataFrame({"rating": [4, 5]})
    assert binarize_ratings(ratings, {"threshold": 4.5}, "coat")["label"].tolist() == [0, 1]


def test_binarize_ratings_non_numeric_threshold_names_parameter():
    ratings = pd.DataFrame({"rating": [1, 5]})
    with pytest.raises(ValueError, match=r"binarization\.threshold"):
        binarize_ratings(ratings, {"threshold": "4"}, "coat")


@pytest.mark.parametrize("threshold", [0, 6])
def test_binarize_ratings_out_of_range_threshold_names_parameter(threshold):
    # Range errors name the dotted parameter, like type errors do.
    ratings = pd.DataFrame({"rating": [1, 5]})
    with pytest.raises(ValueError, match=r"binarization\.threshold"):
        binarize_ratings(ratings, {"threshold": threshold}, "coat")


@pytest.mark.parametrize("threshold", [0, 6])
def test_binarize_ratings_out_of_range_threshold_raises(threshold):
    ratings = pd.DataFrame({"rating": [1, 5]})
    with pytest.raises(ValueError, match=r"binarization.*threshold.*1\.\.5"):
        binarize_ratings(ratings, {"threshold": threshold}, "coat")


def test_binarize_ratings_unknown_key_raises():
    with pytest.raises(ValueError, match=r"binarization\.cutoff"):
        binarize_ratings(pd.DataFrame({"rating": [1]}), {"cutoff": 4}, "coat")


# ---------------------------------------------------------------------- train matrix


def test_build_train_matrix_only_train_positives():
    interaction_split = _interaction_split()
    before = interaction_split.copy()
    matrix = build_train_matrix(interaction_split, _id_maps(3, 4))
    # train (biased) positives: (0,0), (1,2), (2,0); train negatives (0,1), (2,2) and every
    # validation or test row, positive or not, stay 0. Item 3 is never rated but still a column.
    expected = np.array(
        [
            [1, 0, 0, 0],
            [0, 0, 1, 0],
            [1, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    assert sp.issparse(matrix)
    assert matrix.shape == (3, 4)
    np.testing.assert_array_equal(matrix.toarray(), expected)
    assert matrix.nnz == 3
    pd.testing.assert_frame_equal(interaction_split, before)


def test_build_train_matrix_shape_from_id_maps_with_unrated_entities():
    # 5 users x 6 items in the id maps, ratings only touch users 0..2 and items 0..2.
    matrix = build_train_matrix(_interaction_split(), _id_maps(5, 6))
    assert matrix.shape == (5, 6)
    assert matrix[3:].nnz == 0 and matrix[:, 3:].nnz == 0
    assert matrix.sum() == 3.0


def test_build_train_matrix_a_repeated_train_pair_is_one_click():
    table = _interaction_split()
    repeated = pd.concat([table, table.iloc[[0]]], ignore_index=True)  # (0, 0) twice in train
    matrix = build_train_matrix(repeated, _id_maps(3, 4))
    assert matrix.nnz == 3 and matrix[0, 0] == 1.0


# ---------------------------------------------------------------------------- split


def _unbiased_interactions(n_unbiased: int, n_biased: int = 4) -> pd.DataFrame:
    # unbiased rows: user u = row // 5, item i = row % 5 (all pairs distinct)
    rows = np.arange(n_unbiased)
    unbiased = pd.DataFrame(
        {
            "user": rows // 5,
            "item": rows % 5,
            "rating": ((rows % 5) + 1).astype(np.float64),
            "timestamp": np.nan,
            "source": "unbiased",
            "label": ((rows % 5) + 1 >= 4).astype(np.int8),
        }
    )
    biased = pd.DataFrame(
        {
            "user": np.arange(n_biased),
            "item": np.full(n_biased, 99),
            "rating": np.full(n_biased, 5.0),
            "timestamp": np.nan,
            "source": "biased",
            "label": np.ones(n_biased, dtype=np.int8),
        }
    )
    # biased rows interleaved in front and behind, as the real table may hold them
    return pd.concat([biased.iloc[:2], unbiased, biased.iloc[2:]], ignore_index=True)


def _split(interactions: pd.DataFrame, split: dict, seed: int, dataset: str = "yahoo_r3") -> pd.DataFrame:
    """The thesis protocol's split (the default protocol of the biased/unbiased datasets)."""
    return split_interactions(interactions, split, {}, dataset, seed)


def _evaluated(table: pd.DataFrame) -> pd.DataFrame:
    """The unbiased rows, split into validation and test."""
    return table[table["split"] != "train"]


@pytest.mark.parametrize(
    ("n_rows", "n_validation"),
    [
        (10, 2),  # 0.2 * 10 = 2
        (13, 3),  # 0.2 * 13 = 2.6 -> 3
        (12, 2),  # 0.2 * 12 = 2.4 -> 2
        (50, 10),
    ],
)
def test_split_sizes(n_rows, n_validation):
    table = _evaluated(_split(_unbiased_interactions(n_rows), {"validation_fraction": 0.2}, seed=0))
    assert len(table) == n_rows
    assert (table["split"] == "validation").sum() == n_validation
    assert (table["split"] == "test").sum() == n_rows - n_validation


def test_split_fraction_parameter_is_used():
    # 0.5 * 10 = 5 validation rows
    table = _split(_unbiased_interactions(10), {"validation_fraction": 0.5}, seed=0)
    assert (table["split"] == "validation").sum() == 5


@pytest.mark.parametrize("split", [{}, {"validation_fraction": None}])
def test_split_default_fraction_is_0_2(split):
    table = _split(_unbiased_interactions(20), split, seed=0)
    assert (table["split"] == "validation").sum() == 4


def test_split_only_unbiased_rows_partitioned():
    interactions = _unbiased_interactions(20)
    table = _split(interactions, {"validation_fraction": 0.2}, seed=3)
    assert set(table.columns) == {"user", "item", "rating", "timestamp", "source", "label", "split", "role"}
    evaluated = _evaluated(table)
    assert set(evaluated["split"]) == {"validation", "test"}
    assert (evaluated["role"] == "target").all()
    assert (evaluated["item"] != 99).all()  # no biased row leaks in
    unbiased = interactions[interactions["source"] == "unbiased"]
    got = sorted(zip(evaluated["user"], evaluated["item"], evaluated["rating"], evaluated["label"]))
    want = sorted(zip(unbiased["user"], unbiased["item"], unbiased["rating"], unbiased["label"]))
    assert got == want  # every unbiased row exactly once, values unchanged
    # validation rows come first, then the test rows, then the biased rows as train inputs
    first_test = int(np.flatnonzero(table["split"].to_numpy() == "test")[0])
    assert (table["split"].iloc[:first_test] == "validation").all()
    assert first_test == 4  # round(0.2 * 20)
    assert table["split"].iloc[first_test:20].eq("test").all()
    train = table.iloc[20:]
    assert (train["split"] == "train").all() and (train["role"] == "input").all()
    biased = interactions[interactions["source"] == "biased"]
    pd.testing.assert_frame_equal(
        train.drop(columns=["split", "role"]).reset_index(drop=True), biased.reset_index(drop=True)
    )


def test_split_is_the_thesis_split_of_before():
    # The permutation of the unbiased rows is the one split_unbiased_ratings drew (seeded
    # by `seed` alone), so the thesis numbers do not move: these are its validation rows
    # for seed 3, each split sorted by user, then item.
    table = _evaluated(_split(_unbiased_interactions(20), {"validation_fraction": 0.2}, seed=3))
    validation = table[table["split"] == "validation"]
    assert list(zip(validation["user"], validation["item"])) == [(1, 3), (2, 2), (3, 1), (3, 3)]
    test = table[table["split"] == "test"]
    assert list(zip(test["user"], test["item"])) == sorted(set(zip(table["user"], table["item"])) - {(1, 3), (2, 2), (3, 1), (3, 3)})


@pytest.mark.parametrize("dataset", ["coat", "synthetic"])
def test_split_thesis_is_the_default_of_the_study_datasets(dataset):
    default = _split(_unbiased_interactions(20), {"validation_fraction": 0.2}, seed=3, dataset=dataset)
    explicit = split_interactions(
        _unbiased_interactions(20), {"validation_fraction": 0.2}, {"protocol": "thesis"}, "yahoo_r3", 3
    )
    pd.testing.assert_frame_equal(default, explicit)


def _validation_pairs(table: pd.DataFrame) -> set[tuple[int, int]]:
    rows = table[table["split"] == "validation"]
    return set(zip(rows["user"], rows["item"]))


def test_split_same_seed_same_split_different_seed_different_split():
    interactions = _unbiased_interactions(50)
    first = _split(interactions, {"validation_fraction": 0.2}, seed=7)
    second = _split(interactions, {"validation_fraction": 0.2}, seed=7)
    other = _split(interactions, {"validation_fraction": 0.2}, seed=8)
    pd.testing.assert_frame_equal(first, second)
    # 10 of 50 rows: two seeds picking the same set has probability 1 / C(50, 10) ≈ 1e-10
    assert _validation_pairs(first) != _validation_pairs(other)


def test_split_does_not_mutate_input():
    interactions = _unbiased_interactions(15)
    before = interactions.copy()
    _split(interactions, {"validation_fraction": 0.2}, seed=0)
    pd.testing.assert_frame_equal(interactions, before)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_invalid_fraction_raises(fraction):
    with pytest.raises(ValueError, match=r"split\.validation_fraction"):
        _split(_unbiased_interactions(10), {"validation_fraction": fraction}, seed=0)


def test_split_unknown_key_raises():
    with pytest.raises(ValueError, match=r"split\.validation_share"):
        _split(_unbiased_interactions(10), {"validation_share": 0.2}, seed=0)


# ------------------------------------------------------------------------ adjacency

S = 1.0 / math.sqrt(2.0)


def test_build_normalized_adjacency_by_hand():
    # R (2 users x 3 items) = [[1, 1, 0], [1, 0, 0]]; item 2 has degree 0.
    # Nodes: u0 (deg 2), u1 (deg 1), i0 (deg 2), i1 (deg 1), i2 (deg 0).
    # Â[u, i] = 1 / sqrt(deg u · deg i):
    #   u0-i0: 1/sqrt(2·2) = 1/2;  u0-i1: 1/sqrt(2·1) = 1/√2;  u1-i0: 1/sqrt(1·2) = 1/√2
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32))
    expected = np.array(
        [
            [0, 0, 0.5, S, 0],
            [0, 0, S, 0, 0],
            [0.5, S, 0, 0, 0],
            [S, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],  # zero-degree item: zero row
        ]
    )
    adjacency = build_normalized_adjacency(train)
    assert sp.issparse(adjacency)
    assert adjacency.shape == (5, 5)
    assert adjacency.dtype == np.float32
    dense = adjacency.toarray()
    np.testing.assert_allclose(dense, expected, rtol=1e-6, atol=0)
    assert np.isfinite(dense).all()
    np.testing.assert_array_equal(dense, dense.T)  # symmetric
    np.testing.assert_array_equal(np.diag(dense), 0.0)  # no self loops
    assert np.all(dense[4] == 0) and np.all(dense[:, 4] == 0)


def test_build_normalized_adjacency_zero_degree_user():
    # R (2 x 2) = [[0, 0], [1, 1]]: user 0 has degree 0; u1 deg 2, i0 deg 1, i1 deg 1
    # Â[u1, i0] = Â[u1, i1] = 1/sqrt(2·1) = 1/√2
    train = sp.csr_matrix(np.array([[0, 0], [1, 1]], dtype=np.float32))
    dense = build_normalized_adjacency(train).toarray()
    expected = np.array(
        [
            [0, 0, 0, 0],
            [0, 0, S, S],
            [0, S, 0, 0],
            [0, S, 0, 0],
        ]
    )
    np.testing.assert_allclose(dense, expected, rtol=1e-6, atol=0)


def test_build_normalized_adjacency_does_not_mutate_input():
    # STYLE.md: nodes never mutate their inputs. A float64 CSR input holding a value
    # other than 1 must come back unchanged.
    # A float64 CSR input shares its data array with sp.csr_matrix(x, dtype=float64):
    # the node must build a new matrix, never write into the caller's.
    train = sp.csr_matrix(np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    before = train.toarray().copy()
    adjacency = build_normalized_adjacency(train)
    np.testing.assert_array_equal(train.toarray(), before)
    # and the weights are still treated as edges (value 1), as in the hand example
    assert adjacency.toarray()[0, 2] == pytest.approx(0.5)


# ------------------------------------------------------------------------- ingestion

# Files' ids: users 5, 9, 12 -> 0, 1, 2; items 3, 7, 42, 100 -> 0, 1, 2, 3.
# Item 42 appears only in the unbiased set and must still get an index.
BIASED = [(9, 7, 5.0, 1), (5, 100, 2.0, 2), (12, 3, 4.0, 3)]
UNBIASED = [(5, 3, 1.0, 1), (12, 7, 4.0, 2), (9, 42, 5.0, 3)]


def test_ingest_keeps_the_files_ids_and_rows():
    # Ingestion only validates: ids stay the files' own, rows in file order.
    ratings, truth = ingest_ratings(_triples(BIASED, UNBIASED), "yahoo_r3", {}, seed=0)
    expected = pd.DataFrame(
        {
            "user": np.array([9, 5, 12, 5, 12, 9], dtype=np.int64),
            "item": np.array([7, 100, 3, 3, 7, 42], dtype=np.int64),
            "rating": np.array([5, 2, 4, 1, 4, 5], dtype=np.float64),
            "source": ["biased"] * 3 + ["unbiased"] * 3,
            "line": np.array([1, 2, 3, 1, 2, 3], dtype=np.int64),
        }
    )
    pd.testing.assert_frame_equal(
        ratings[["user", "item", "rating", "source", "line"]].reset_index(drop=True), expected, check_dtype=False
    )
    assert ratings["rating"].dtype == np.float64
    assert ratings["timestamp"].isna().all()
    assert truth["preference"].shape == (0, 0) and truth["exposure"].shape == (0, 0)


def test_index_contiguous_ids_and_id_maps():
    interactions, id_maps, items, users, social, summary = _indexed(_triples(BIASED, UNBIASED), "yahoo_r3")
    expected = pd.DataFrame(
        {
            "user": np.array([1, 0, 2, 0, 2, 1], dtype=np.int64),
            "item": np.array([1, 3, 0, 0, 1, 2], dtype=np.int64),
            "rating": np.array([5, 2, 4, 1, 4, 5], dtype=np.float64),
            "source": ["biased"] * 3 + ["unbiased"] * 3,
            "label": np.array([1, 0, 1, 0, 1, 1], dtype=np.int8),
        }
    )
    pd.testing.assert_frame_equal(
        interactions[["user", "item", "rating", "source", "label"]].reset_index(drop=True),
        expected,
        check_dtype=False,
    )
    assert interactions["user"].dtype.kind == "i" and interactions["item"].dtype.kind == "i"
    id_users = id_maps[id_maps["entity"] == "user"].sort_values("index")
    id_items = id_maps[id_maps["entity"] == "item"].sort_values("index")
    assert id_users["index"].tolist() == [0, 1, 2]
    assert id_users["original_id"].tolist() == [5, 9, 12]
    assert id_items["index"].tolist() == [0, 1, 2, 3]
    assert id_items["original_id"].tolist() == [3, 7, 42, 100]
    # No side data in Yahoo! R3: one empty row per id, no ties.
    assert items["index"].tolist() == [0, 1, 2, 3] and items["original_id"].tolist() == [3, 7, 42, 100]
    assert (items["title"] == "").all() and (items["genres"] == "").all()
    assert users["original_id"].tolist() == [5, 9, 12]
    assert social.empty and list(social.columns) == ["user", "friend"]
    assert summary["dataset"] == "yahoo_r3"
    assert (summary["n_users"], summary["n_items"], summary["social_edges"]) == (3, 4, 0)
    assert summary["rows"] == {"biased": 3, "unbiased": 3}
    assert summary["positives"] == {"biased": 2, "unbiased": 2}
    assert summary["dropped"] == {}


def test_index_matrix_format_keeps_positions():
    # A coat-style 3 x 4 matrix: user 2 and item 3 are never rated but keep their slots.
    raw = _triples(
        [(0, 1, 5.0, 1), (1, 0, 3.0, 2)],
        [(0, 2, 4.0, 1)],
        name="coat",
        shape=(3, 4),
        files={"biased": "coat/train.ascii", "unbiased": "coat/test.ascii"},
    )
    interactions, id_maps, *_ = _indexed(raw, "coat")
    assert interactions["user"].tolist() == [0, 1, 0]
    assert interactions["item"].tolist() == [1, 0, 2]
    assert interactions["source"].tolist() == ["biased", "biased", "unbiased"]
    assert (id_maps["entity"] == "user").sum() == 3
    assert (id_maps["entity"] == "item").sum() == 4
    items = id_maps[id_maps["entity"] == "item"].sort_values("index")
    assert items["original_id"].tolist() == [0, 1, 2, 3]


def test_index_same_pair_in_both_sets_is_allowed():
    raw = _triples([(1, 1, 4.0, 1)], [(1, 1, 2.0, 1)])
    interactions, *_ = _indexed(raw, "yahoo_r3")
    assert len(interactions) == 2


@pytest.mark.parametrize("bad_rating", [6.0, 0.0, 3.5, np.nan])
def test_ingest_rating_out_of_range_names_file_and_row(bad_rating):
    # A missing rating is refused too: Yahoo! R3 is explicit feedback.
    raw = _triples(BIASED, [(5, 3, 1.0, 1), (12, 7, bad_rating, 2), (9, 42, 5.0, 3)])
    with pytest.raises(ValueError, match=r"raw/test\.txt row 2\b"):
        ingest_ratings(raw, "yahoo_r3", {}, seed=0)


def test_ingest_rating_error_prints_integer_row_and_ids():
    # Regression: `table.iloc[i]` of a frame with a float `rating` column upcasts the
    # whole row to float, and the message once read
    # "raw/test.txt row 2.0: rating 6 (user 12.0, item 7.0)". Row numbers and ids are
    # integers and must print as such.
    raw = _triples(BIASED, [(5, 3, 1.0, 1), (12, 7, 6.0, 2), (9, 42, 5.0, 3)])
    with pytest.raises(ValueError) as error:
        ingest_ratings(raw, "yahoo_r3", {}, seed=0)
    assert "raw/test.txt row 2:" in str(error.value)
    assert "user 12," in str(error.value) and "item 7)" in str(error.value)


def test_index_duplicated_pair_names_file_and_both_rows():
    # Duplicates are found when indexing (preprocessing.duplicates; the study's datasets: error).
    raw = _triples([(9, 7, 5.0, 1), (5, 100, 2.0, 2), (9, 7, 3.0, 3)], UNBIASED)
    with pytest.raises(ValueError, match=r"raw/train\.txt rows 1 and 3\b"):
        _indexed(raw, "yahoo_r3")


def test_index_duplicated_pair_message_prints_integer_rows():
    # Same regression as above: the message once read "rows 1.0 and 3.0" and
    # "(user 9.0, item 7.0)".
    raw = _triples([(9, 7, 5.0, 1), (5, 100, 2.0, 2), (9, 7, 3.0, 3)], UNBIASED)
    with pytest.raises(ValueError) as error:
        _indexed(raw, "yahoo_r3")
    assert "raw/train.txt rows 1 and 3:" in str(error.value)
    assert "(user 9, item 7)" in str(error.value)
    assert "preprocessing.duplicates" in str(error.value)


@pytest.mark.parametrize(("policy", "kept_rating"), [("first", 5.0), ("last", 3.0)])
def test_index_duplicated_pair_kept_once_on_request(policy, kept_rating):
    # Without timestamps "first" and "last" follow the file's order. (User 12's 4 keeps a
    # train positive whichever copy of the pair is kept.)
    raw = _triples([(9, 7, 5.0, 1), (5, 100, 2.0, 2), (9, 7, 3.0, 3), (12, 3, 4.0, 4)], UNBIASED)
    interactions, *_, summary = _indexed(raw, "yahoo_r3", {"duplicates": policy})
    biased = interactions[interactions["source"] == "biased"]
    assert len(biased) == 3
    assert biased.loc[(biased["user"] == 1) & (biased["item"] == 1), "rating"].tolist() == [kept_rating]
    assert summary["dropped"] == {"duplicated (user, item) pairs": 1}


@pytest.mark.parametrize(("empty_source", "path"), [("biased", "raw/train.txt"), ("unbiased", "raw/test.txt")])
def test_ingest_empty_set_names_file(empty_source, path):
    rows = {"biased": BIASED, "unbiased": UNBIASED}
    rows[empty_source] = []
    raw = _triples(rows["biased"], rows["unbiased"])
    with pytest.raises(ValueError, match=re.escape(path) + ".*empty"):
        ingest_ratings(raw, "yahoo_r3", {}, seed=0)


def test_ingest_dataset_parameter_mismatch_raises():
    with pytest.raises(ValueError, match=r"'dataset' is 'coat'.*raw_data reads 'yahoo_r3'"):
        ingest_ratings(_triples(BIASED, UNBIASED), "coat", {}, seed=0)


def test_ingest_unknown_dataset_raises_listing_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"'movielens'.*valid datasets: synthetic, coat, yahoo_r3, gowalla, lastfm, movielens_100k, "
        r"movielens_1m, anime, custom",
    ):
        ingest_ratings(_triples(BIASED, UNBIASED), "movielens", {}, seed=0)


def test_ingest_synthetic():
    ratings, truth = ingest_ratings(_synthetic_raw(), "synthetic", SMALL_SYNTHETIC, seed=0)
    assert isinstance(truth, GroundTruth)
    assert set(ratings["source"]) == {"biased", "unbiased"}
    assert truth["preference"].shape == (20, 15)
    assert truth["exposure"].shape == (20, 15)
    assert ((truth["preference"] > 0) & (truth["preference"] < 1)).all()
    assert ratings["user"].between(0, 19).all() and ratings["item"].between(0, 14).all()
    assert ratings["rating"].between(1, 5).all()
    unbiased = ratings[ratings["source"] == "unbiased"]
    per_user = unbiased.groupby("user").size()
    assert per_user.index.tolist() == list(range(20))
    assert (per_user == 5).all()
    assert not unbiased.duplicated(["user", "item"]).any()
    labeled = binarize_ratings(ratings, {}, "synthetic")
    interactions, id_maps, *_ = index_interactions(labeled, _synthetic_raw(), truth, {}, "synthetic")
    # The simulator's ids are already 0..n-1 and keep their positions (every user and item).
    assert (id_maps["entity"] == "user").sum() == 20
    assert (id_maps["entity"] == "item").sum() == 15
    np.testing.assert_array_equal(interactions["user"], ratings["user"])
    np.testing.assert_array_equal(interactions["item"], ratings["item"])


def test_ingest_synthetic_seeded():
    first, truth_first = ingest_ratings(_synthetic_raw(), "synthetic", SMALL_SYNTHETIC, seed=1)
    second, truth_second = ingest_ratings(_synthetic_raw(), "synthetic", SMALL_SYNTHETIC, seed=1)
    other, _ = ingest_ratings(_synthetic_raw(), "synthetic", SMALL_SYNTHETIC, seed=2)
    pd.testing.assert_frame_equal(first, second)
    np.testing.assert_array_equal(truth_first["preference"], truth_second["preference"])
    assert not (len(first) == len(other) and first.equals(other))


def test_ingest_synthetic_bad_parameter_names_it():
    params = {**SMALL_SYNTHETIC, "n_users": "twenty"}
    with pytest.raises(ValueError, match=r"synthetic\.n_users"):
        ingest_ratings(_synthetic_raw(), "synthetic", params, seed=0)


# ------------------------------------------------------------- train data, evaluators


def test_build_train_data_without_side_data():
    # Yahoo! R3 has no item, user or social data: the models get Y and Â only.
    interactions, id_maps, items, users, social, _ = _indexed(_triples(BIASED, UNBIASED), "yahoo_r3")
    matrix = build_train_matrix(_split(interactions, {}, seed=0), id_maps)
    adjacency = build_normalized_adjacency(matrix)
    data = build_train_data(matrix, adjacency, users, items, social)
    assert isinstance(data, TrainData)
    assert data.interactions is matrix and data.adjacency is adjacency
    assert data.social is None
    assert data.user_features is None
    assert data.item_features is None  # "None when the dataset has none"


def test_build_train_data_social_graph_is_symmetric():
    matrix = sp.csr_matrix((3, 2), dtype=np.float32)
    social = pd.DataFrame({"user": [0, 1], "friend": [2, 2]})
    data = build_train_data(matrix, None, pd.DataFrame({"index": [0, 1, 2]}), pd.DataFrame({"index": [0, 1]}), social)
    np.testing.assert_array_equal(data.social.toarray(), [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


def test_build_evaluators_of_the_thesis_split():
    interaction_split = _split(_unbiased_interactions(20), {"validation_fraction": 0.2}, seed=3)
    matrix = build_train_matrix(interaction_split, _id_maps(4, 100))
    evaluators = build_evaluators(interaction_split, matrix, {}, "yahoo_r3", {})
    assert evaluators.setup.protocol.name == "thesis"
    assert evaluators.setup.cutoffs == (5,) and evaluators.setup.selection_metric == "ndcg_at_5"
    validation = interaction_split[interaction_split["split"] == "validation"]
    np.testing.assert_array_equal(evaluators.validation.users, validation["user"])
    np.testing.assert_array_equal(evaluators.validation.items, validation["item"])
    np.testing.assert_array_equal(evaluators.validation.labels, validation["label"])
    assert evaluators.test.users.size == 16
    assert evaluators.validation.metric == "ndcg_at_5"


def test_process_synthetic_chains_the_nodes():
    # The in-memory chain of study_hypotheses gives what the pipeline's nodes give.
    binarization, split, evaluation = {}, {"validation_fraction": 0.25}, {}
    ratings, train, evaluators, truth = process_synthetic(SMALL_SYNTHETIC, binarization, split, evaluation, 3)
    raw = _synthetic_raw()
    expected_ratings, expected_truth = ingest_ratings(raw, "synthetic", SMALL_SYNTHETIC, 3)
    pd.testing.assert_frame_equal(ratings, expected_ratings)
    np.testing.assert_array_equal(truth["preference"], expected_truth["preference"])
    labeled = binarize_ratings(expected_ratings, binarization, "synthetic")
    interactions, id_maps, *_ = index_interactions(labeled, raw, expected_truth, {}, "synthetic")
    interaction_split = split_interactions(interactions, split, evaluation, "synthetic", 3)
    matrix = build_train_matrix(interaction_split, id_maps)
    assert (train.interactions != matrix).nnz == 0
    assert (train.adjacency != build_normalized_adjacency(matrix)).nnz == 0
    validation = interaction_split[interaction_split["split"] == "validation"]
    np.testing.assert_array_equal(evaluators.validation.users, validation["user"])
    np.testing.assert_array_equal(evaluators.validation.items, validation["item"])
    assert evaluators.setup.protocol.name == "thesis"
