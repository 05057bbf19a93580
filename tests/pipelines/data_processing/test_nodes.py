"""Data-processing nodes (PROTOCOL.md §2), called directly with hand-made inputs."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from debias_pipeline.datasets.raw_ratings import RawRatings
from debias_pipeline.pipelines.data_processing.nodes import (
    binarize_ratings,
    build_normalized_adjacency,
    build_train_matrix,
    ingest_ratings,
    split_unbiased_ratings,
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


def _table(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    """A raw table as RawRatingsDataset returns it: user, item, rating (float), line."""
    users, items, ratings, lines = zip(*rows) if rows else ((), (), (), ())
    return pd.DataFrame(
        {
            "user": np.array(users, dtype=np.int64),
            "item": np.array(items, dtype=np.int64),
            "rating": np.array(ratings, dtype=np.float64),
            "line": np.array(lines, dtype=np.int64),
        }
    )


def _triples(biased_rows, unbiased_rows) -> RawRatings:
    return RawRatings(
        name="yahoo_r3",
        tables={"biased": _table(biased_rows), "unbiased": _table(unbiased_rows)},
        files={"biased": "raw/train.txt", "unbiased": "raw/test.txt"},
        shape=None,
    )


def _interactions() -> pd.DataFrame:
    # 3 users x 4 items; item 3 is never rated.
    return pd.DataFrame(
        {
            "user": np.array([0, 0, 1, 2, 2, 0, 1, 2], dtype=np.int64),
            "item": np.array([0, 1, 2, 0, 2, 2, 0, 1], dtype=np.int64),
            "rating": np.array([5, 2, 4, 4, 3, 5, 1, 4], dtype=np.int64),
            "source": ["biased"] * 5 + ["unbiased"] * 3,
            "label": np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=np.int8),
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
    result = binarize_ratings(ratings, {"threshold": threshold})
    assert result["label"].tolist() == expected
    pd.testing.assert_frame_equal(result.drop(columns="label"), before)
    pd.testing.assert_frame_equal(ratings, before)  # input not mutated
    assert "label" not in ratings.columns


def test_binarize_ratings_default_threshold_is_4():
    ratings = pd.DataFrame({"rating": [3, 4]})
    assert binarize_ratings(ratings, {})["label"].tolist() == [0, 1]


def test_binarize_ratings_non_integer_threshold_names_parameter():
    ratings = pd.DataFrame({"rating": [1, 5]})
    with pytest.raises(ValueError, match=r"binarization\.threshold"):
        binarize_ratings(ratings, {"threshold": 4.5})


@pytest.mark.parametrize("threshold", [0, 6])
def test_binarize_ratings_out_of_range_threshold_names_parameter(threshold):
    # Range errors from __post_init__ name the dotted parameter, like type errors do.
    ratings = pd.DataFrame({"rating": [1, 5]})
    with pytest.raises(ValueError, match=r"binarization\.threshold"):
        binarize_ratings(ratings, {"threshold": threshold})


@pytest.mark.parametrize("threshold", [0, 6])
def test_binarize_ratings_out_of_range_threshold_raises(threshold):
    ratings = pd.DataFrame({"rating": [1, 5]})
    with pytest.raises(ValueError, match=r"binarization.*threshold.*1\.\.5"):
        binarize_ratings(ratings, {"threshold": threshold})


def test_binarize_ratings_unknown_key_raises():
    with pytest.raises(ValueError, match=r"binarization\.cutoff"):
        binarize_ratings(pd.DataFrame({"rating": [1]}), {"cutoff": 4})


# ---------------------------------------------------------------------- train matrix


def test_build_train_matrix_only_biased_positives():
    interactions = _interactions()
    before = interactions.copy()
    matrix = build_train_matrix(interactions, _id_maps(3, 4))
    # biased positives: (0,0), (1,2), (2,0); biased negatives (0,1), (2,2) and every
    # unbiased row, positive or not, stay 0. Item 3 is never rated but still a column.
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
    pd.testing.assert_frame_equal(interactions, before)


def test_build_train_matrix_shape_from_id_maps_with_unrated_entities():
    # 5 users x 6 items in the id maps, ratings only touch users 0..2 and items 0..2.
    matrix = build_train_matrix(_interactions(), _id_maps(5, 6))
    assert matrix.shape == (5, 6)
    assert matrix[3:].nnz == 0 and matrix[:, 3:].nnz == 0
    assert matrix.sum() == 3.0


# ---------------------------------------------------------------------------- split


def _unbiased_interactions(n_unbiased: int, n_biased: int = 4) -> pd.DataFrame:
    # unbiased rows: user u = row // 5, item i = row % 5 (all pairs distinct)
    rows = np.arange(n_unbiased)
    unbiased = pd.DataFrame(
        {
            "user": rows // 5,
            "item": rows % 5,
            "rating": (rows % 5) + 1,
            "source": "unbiased",
            "label": ((rows % 5) + 1 >= 4).astype(np.int8),
        }
    )
    biased = pd.DataFrame(
        {
            "user": np.arange(n_biased),
            "item": np.full(n_biased, 99),
            "rating": np.full(n_biased, 5),
            "source": "biased",
            "label": np.ones(n_biased, dtype=np.int8),
        }
    )
    # biased rows interleaved in front and behind, as the real table may hold them
    return pd.concat([biased.iloc[:2], unbiased, biased.iloc[2:]], ignore_index=True)


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
    table = split_unbiased_ratings(_unbiased_interactions(n_rows), {"validation_fraction": 0.2}, seed=0)
    assert len(table) == n_rows
    assert (table["split"] == "validation").sum() == n_validation
    assert (table["split"] == "test").sum() == n_rows - n_validation


def test_split_fraction_parameter_is_used():
    # 0.5 * 10 = 5 validation rows
    table = split_unbiased_ratings(_unbiased_interactions(10), {"validation_fraction": 0.5}, seed=0)
    assert (table["split"] == "validation").sum() == 5


def test_split_only_unbiased_rows_partitioned():
    interactions = _unbiased_interactions(20)
    table = split_unbiased_ratings(interactions, {"validation_fraction": 0.2}, seed=3)
    assert set(table.columns) == {"user", "item", "rating", "label", "split"}
    assert set(table["split"]) == {"validation", "test"}
    assert (table["item"] != 99).all()  # no biased row leaks in
    unbiased = interactions[interactions["source"] == "unbiased"]
    got = sorted(zip(table["user"], table["item"], table["rating"], table["label"]))
    want = sorted(zip(unbiased["user"], unbiased["item"], unbiased["rating"], unbiased["label"]))
    assert got == want  # every unbiased row exactly once, values unchanged
    # validation rows come first
    first_test = int(np.flatnonzero(table["split"].to_numpy() == "test")[0])
    assert (table["split"].iloc[:first_test] == "validation").all()
    assert first_test == 4  # round(0.2 * 20)


def _validation_pairs(table: pd.DataFrame) -> set[tuple[int, int]]:
    rows = table[table["split"] == "validation"]
    return set(zip(rows["user"], rows["item"]))


def test_split_same_seed_same_split_different_seed_different_split():
    interactions = _unbiased_interactions(50)
    first = split_unbiased_ratings(interactions, {"validation_fraction": 0.2}, seed=7)
    second = split_unbiased_ratings(interactions, {"validation_fraction": 0.2}, seed=7)
    other = split_unbiased_ratings(interactions, {"validation_fraction": 0.2}, seed=8)
    pd.testing.assert_frame_equal(first, second)
    # 10 of 50 rows: two seeds picking the same set has probability 1 / C(50, 10) ≈ 1e-10
    assert _validation_pairs(first) != _validation_pairs(other)


def test_split_does_not_mutate_input():
    interactions = _unbiased_interactions(15)
    before = interactions.copy()
    split_unbiased_ratings(interactions, {"validation_fraction": 0.2}, seed=0)
    pd.testing.assert_frame_equal(interactions, before)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_invalid_fraction_raises(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        split_unbiased_ratings(_unbiased_interactions(10), {"validation_fraction": fraction}, seed=0)


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


def test_ingest_triples_contiguous_ids_and_id_maps():
    ratings, id_maps, truth = ingest_ratings(_triples(BIASED, UNBIASED), "yahoo_r3", {}, seed=0)
    expected = pd.DataFrame(
        {
            "user": np.array([1, 0, 2, 0, 2, 1], dtype=np.int64),
            "item": np.array([1, 3, 0, 0, 1, 2], dtype=np.int64),
            "rating": np.array([5, 2, 4, 1, 4, 5], dtype=np.int64),
            "source": ["biased"] * 3 + ["unbiased"] * 3,
        }
    )
    pd.testing.assert_frame_equal(
        ratings[["user", "item", "rating", "source"]].reset_index(drop=True), expected, check_dtype=False
    )
    assert ratings["user"].dtype.kind == "i" and ratings["item"].dtype.kind == "i"
    users = id_maps[id_maps["entity"] == "user"].sort_values("index")
    items = id_maps[id_maps["entity"] == "item"].sort_values("index")
    assert users["index"].tolist() == [0, 1, 2]
    assert users["original_id"].tolist() == [5, 9, 12]
    assert items["index"].tolist() == [0, 1, 2, 3]
    assert items["original_id"].tolist() == [3, 7, 42, 100]
    assert truth["preference"].shape == (0, 0) and truth["exposure"].shape == (0, 0)


def test_ingest_matrix_format_keeps_positions():
    # A coat-style 3 x 4 matrix: user 2 and item 3 are never rated but keep their slots.
    raw = RawRatings(
        name="coat",
        tables={"biased": _table([(0, 1, 5.0, 1), (1, 0, 3.0, 2)]), "unbiased": _table([(0, 2, 4.0, 1)])},
        files={"biased": "coat/train.ascii", "unbiased": "coat/test.ascii"},
        shape=(3, 4),
    )
    ratings, id_maps, _ = ingest_ratings(raw, "coat", {}, seed=0)
    assert ratings["user"].tolist() == [0, 1, 0]
    assert ratings["item"].tolist() == [1, 0, 2]
    assert ratings["source"].tolist() == ["biased", "biased", "unbiased"]
    assert (id_maps["entity"] == "user").sum() == 3
    assert (id_maps["entity"] == "item").sum() == 4
    items = id_maps[id_maps["entity"] == "item"].sort_values("index")
    assert items["original_id"].tolist() == [0, 1, 2, 3]


def test_ingest_same_pair_in_both_sets_is_allowed():
    raw = _triples([(1, 1, 4.0, 1)], [(1, 1, 2.0, 1)])
    ratings, _, _ = ingest_ratings(raw, "yahoo_r3", {}, seed=0)
    assert len(ratings) == 2


@pytest.mark.parametrize("bad_rating", [6.0, 0.0, 3.5])
def test_ingest_rating_out_of_range_names_file_and_row(bad_rating):
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


def test_ingest_duplicated_pair_names_file_and_both_rows():
    raw = _triples([(9, 7, 5.0, 1), (5, 100, 2.0, 2), (9, 7, 3.0, 3)], UNBIASED)
    with pytest.raises(ValueError, match=r"raw/train\.txt rows 1 and 3\b"):
        ingest_ratings(raw, "yahoo_r3", {}, seed=0)


def test_ingest_duplicated_pair_message_prints_integer_rows():
    # Same regression as above: the message once read "rows 1.0 and 3.0" and
    # "(user 9.0, item 7.0)".
    raw = _triples([(9, 7, 5.0, 1), (5, 100, 2.0, 2), (9, 7, 3.0, 3)], UNBIASED)
    with pytest.raises(ValueError) as error:
        ingest_ratings(raw, "yahoo_r3", {}, seed=0)
    assert "raw/train.txt rows 1 and 3:" in str(error.value)
    assert "(user 9, item 7)" in str(error.value)


@pytest.mark.parametrize(("empty_source", "path"), [("biased", "raw/train.txt"), ("unbiased", "raw/test.txt")])
def test_ingest_empty_set_names_file(empty_source, path):
    rows = {"biased": BIASED, "unbiased": UNBIASED}
    rows[empty_source] = []
    raw = _triples(rows["biased"], rows["unbiased"])
    with pytest.raises(ValueError, match=re.escape(path) + ".*empty"):
        ingest_ratings(raw, "yahoo_r3", {}, seed=0)


def test_ingest_dataset_parameter_mismatch_raises():
    with pytest.raises(ValueError, match=r"'dataset' is 'coat'.*'yahoo_r3'"):
        ingest_ratings(_triples(BIASED, UNBIASED), "coat", {}, seed=0)


def test_ingest_unknown_dataset_raises_listing_valid_ones():
    with pytest.raises(ValueError, match=r"'movielens'.*coat, yahoo_r3, synthetic"):
        ingest_ratings(_triples(BIASED, UNBIASED), "movielens", {}, seed=0)


def test_ingest_synthetic():
    ratings, id_maps, truth = ingest_ratings(RawRatings(name="synthetic"), "synthetic", SMALL_SYNTHETIC, seed=0)
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
    assert (id_maps["entity"] == "user").sum() == 20
    assert (id_maps["entity"] == "item").sum() == 15


def test_ingest_synthetic_seeded():
    first, _, truth_first = ingest_ratings(RawRatings(name="synthetic"), "synthetic", SMALL_SYNTHETIC, seed=1)
    second, _, truth_second = ingest_ratings(RawRatings(name="synthetic"), "synthetic", SMALL_SYNTHETIC, seed=1)
    other, _, _ = ingest_ratings(RawRatings(name="synthetic"), "synthetic", SMALL_SYNTHETIC, seed=2)
    pd.testing.assert_frame_equal(first, second)
    np.testing.assert_array_equal(truth_first["preference"], truth_second["preference"])
    assert not (len(first) == len(other) and first.equals(other))


def test_ingest_synthetic_bad_parameter_names_it():
    params = {**SMALL_SYNTHETIC, "n_users": "twenty"}
    with pytest.raises(ValueError, match=r"synthetic\.n_users"):
        ingest_ratings(RawRatings(name="synthetic"), "synthetic", params, seed=0)
