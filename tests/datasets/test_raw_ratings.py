"""RawRatingsDataset on small coat- and yahoo_r3-format files written into tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from debias_pipeline.datasets.raw_ratings import RAW_FILES, RawRatings, RawRatingsDataset

COAT_TRAIN = "0 5 0 1\n2 0 0 0\n0 0 4 3\n"
COAT_TEST = "3 0 0 0\n0 0 1 0\n0 2 0 5\n"
YAHOO_TRAIN = "1\t2\t5\n3\t1\t4\n2\t10\t1\n"
YAHOO_TEST = "1\t1\t3\n2\t2\t2\n"


def _write(root: Path, dataset: str, source: str, text: str) -> Path:
    path = root / RAW_FILES[dataset][source]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _coat(root: Path, train: str = COAT_TRAIN, test: str = COAT_TEST) -> dict[str, Path]:
    return {"biased": _write(root, "coat", "biased", train), "unbiased": _write(root, "coat", "unbiased", test)}


def _yahoo(root: Path, train: str = YAHOO_TRAIN, test: str = YAHOO_TEST) -> dict[str, Path]:
    return {
        "biased": _write(root, "yahoo_r3", "biased", train),
        "unbiased": _write(root, "yahoo_r3", "unbiased", test),
    }


def _raises_naming(*parts: str):
    """pytest.raises(DatasetError) whose message holds every part, in order."""
    return pytest.raises(DatasetError, match=".*".join(re.escape(p) for p in parts))


# --------------------------------------------------------------------------- coat


def test_coat_files_are_named_as_the_protocol_says():
    assert RAW_FILES["coat"] == {"biased": "coat/train.ascii", "unbiased": "coat/test.ascii"}
    assert RAW_FILES["yahoo_r3"] == {
        "biased": "yahoo_r3/ydata-ymusic-rating-study-v1_0-train.txt",
        "unbiased": "yahoo_r3/ydata-ymusic-rating-study-v1_0-test.txt",
    }


def test_coat_parsing(tmp_path):
    paths = _coat(tmp_path)
    raw = RawRatingsDataset("coat", root=str(tmp_path)).load()
    assert isinstance(raw, RawRatings)
    assert raw.name == "coat"
    assert raw.shape == (3, 4)
    assert raw.files == {"biased": str(paths["biased"]), "unbiased": str(paths["unbiased"])}
    # train nonzeros in row-major order: (0,1)=5, (0,3)=1, (1,0)=2, (2,2)=4, (2,3)=3;
    # 0-based matrix positions, 1-based line = row + 1
    expected_train = pd.DataFrame(
        {"user": [0, 0, 1, 2, 2], "item": [1, 3, 0, 2, 3], "rating": [5.0, 1.0, 2.0, 4.0, 3.0], "line": [1, 1, 2, 3, 3]}
    )
    pd.testing.assert_frame_equal(raw.tables["biased"].reset_index(drop=True), expected_train, check_dtype=False)
    # test nonzeros: (0,0)=3, (1,2)=1, (2,1)=2, (2,3)=5
    expected_test = pd.DataFrame(
        {"user": [0, 1, 2, 2], "item": [0, 2, 1, 3], "rating": [3.0, 1.0, 2.0, 5.0], "line": [1, 2, 3, 3]}
    )
    pd.testing.assert_frame_equal(raw.tables["unbiased"].reset_index(drop=True), expected_test, check_dtype=False)


def test_coat_keeps_unrated_columns_in_shape(tmp_path):
    # item 3 (last column) is never rated in either file: the shape still says 4 items
    _coat(tmp_path, train="1 0 0 0\n0 5 0 0\n", test="0 0 4 0\n2 0 0 0\n")
    raw = RawRatingsDataset("coat", root=str(tmp_path)).load()
    assert raw.shape == (2, 4)
    assert len(raw.tables["biased"]) == 2


def test_coat_extra_whitespace_is_fine(tmp_path):
    _coat(tmp_path, train="  0   5\t0 \n2 0  0\n", test="0 0 1\n0 3 0\n")
    raw = RawRatingsDataset("coat", root=str(tmp_path)).load()
    assert raw.shape == (2, 3)
    assert raw.tables["biased"]["rating"].tolist() == [5.0, 2.0]


def test_coat_ragged_row_names_file_and_row(tmp_path):
    paths = _coat(tmp_path, train="0 5 0\n2 0\n0 0 4\n", test="1 0 0\n0 0 0\n0 2 0\n")
    with _raises_naming(str(paths["biased"]), "row 2"):
        RawRatingsDataset("coat", root=str(tmp_path)).load()


def test_coat_non_numeric_value_names_file(tmp_path):
    paths = _coat(tmp_path, train="0 5 0\n2 0 0\n", test="1 x 0\n0 0 3\n")
    with _raises_naming(str(paths["unbiased"])):
        RawRatingsDataset("coat", root=str(tmp_path)).load()


def test_coat_shape_mismatch_names_both_files(tmp_path):
    paths = _coat(tmp_path, train=COAT_TRAIN, test="3 0 0\n0 0 1\n0 2 0\n")  # 3x4 vs 3x3
    with _raises_naming(str(paths["unbiased"]), "(3, 3)", str(paths["biased"]), "(3, 4)"):
        RawRatingsDataset("coat", root=str(tmp_path)).load()


@pytest.mark.parametrize("source", ["biased", "unbiased"])
def test_coat_empty_file_names_it(tmp_path, source):
    texts = {"biased": COAT_TRAIN, "unbiased": COAT_TEST}
    texts[source] = ""
    paths = _coat(tmp_path, train=texts["biased"], test=texts["unbiased"])
    with pytest.warns(UserWarning), _raises_naming(str(paths[source]), "empty"):
        RawRatingsDataset("coat", root=str(tmp_path)).load()


@pytest.mark.parametrize("missing", ["biased", "unbiased"])
def test_coat_missing_file_names_it(tmp_path, missing):
    paths = _coat(tmp_path)
    paths[missing].unlink()
    dataset = RawRatingsDataset("coat", root=str(tmp_path))
    assert not dataset.exists()
    with _raises_naming("missing", str(paths[missing])):
        dataset.load()


def test_missing_directory_names_both_files(tmp_path):
    with _raises_naming(str(tmp_path / "coat" / "train.ascii"), str(tmp_path / "coat" / "test.ascii")):
        RawRatingsDataset("coat", root=str(tmp_path)).load()


# ---------------------------------------------------------------------- yahoo_r3


def test_yahoo_parsing(tmp_path):
    paths = _yahoo(tmp_path)
    dataset = RawRatingsDataset("yahoo_r3", root=str(tmp_path))
    assert dataset.exists()
    raw = dataset.load()
    assert raw.name == "yahoo_r3"
    assert raw.shape is None
    assert raw.files == {"biased": str(paths["biased"]), "unbiased": str(paths["unbiased"])}
    # ids stay as the file writes them (1-indexed); line = 1-based line number
    expected_train = pd.DataFrame(
        {
            "user": np.array([1, 3, 2], dtype=np.int64),
            "item": np.array([2, 1, 10], dtype=np.int64),
            "rating": np.array([5.0, 4.0, 1.0]),
            "line": np.array([1, 2, 3], dtype=np.int64),
        }
    )
    pd.testing.assert_frame_equal(raw.tables["biased"].reset_index(drop=True), expected_train)
    expected_test = pd.DataFrame(
        {
            "user": np.array([1, 2], dtype=np.int64),
            "item": np.array([1, 2], dtype=np.int64),
            "rating": np.array([3.0, 2.0]),
            "line": np.array([1, 2], dtype=np.int64),
        }
    )
    pd.testing.assert_frame_equal(raw.tables["unbiased"].reset_index(drop=True), expected_test)


def test_yahoo_file_without_trailing_newline(tmp_path):
    _yahoo(tmp_path, train="1\t2\t5\n3\t1\t4", test="1\t1\t3")
    raw = RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()
    assert raw.tables["biased"]["line"].tolist() == [1, 2]
    assert raw.tables["unbiased"]["rating"].tolist() == [3.0]


def test_yahoo_non_numeric_field_names_file_and_row(tmp_path):
    paths = _yahoo(tmp_path, train="1\t2\t5\n3\tabc\t4\n2\t1\t1\n")
    with _raises_naming(str(paths["biased"]), "row 2", "abc"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("-1\t2\t5", "user"),
        ("1\t-4\t5", "item"),
        ("1.5\t2\t5", "user"),  # not an integer id
    ],
)
def test_yahoo_bad_id_names_file_row_and_column(tmp_path, line, column):
    paths = _yahoo(tmp_path, test=f"1\t1\t3\n{line}\n")
    with _raises_naming(str(paths["unbiased"]), "row 2", f"{column} id"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


def test_yahoo_missing_field_names_file_and_row(tmp_path):
    paths = _yahoo(tmp_path, train="1\t2\t5\n3\t1\n2\t1\t1\n")
    with _raises_naming(str(paths["biased"]), "row 2", "3 fields"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


def test_yahoo_two_fields_everywhere_names_file(tmp_path):
    paths = _yahoo(tmp_path, test="1\t2\n3\t1\n")
    with _raises_naming(str(paths["unbiased"]), "row 1", "3 fields"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


def test_yahoo_extra_field_names_file_and_line(tmp_path):
    paths = _yahoo(tmp_path, train="1\t2\t5\n3\t1\t4\t9\n")
    with _raises_naming(str(paths["biased"]), "row 2", "got 4"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


def test_yahoo_blank_lines_are_skipped_and_rows_keep_their_file_line(tmp_path):
    # Lines: 1 "1 2 5", 2 blank, 3 "3 1 4", 4 blank (a trailing blank line is common).
    _yahoo(tmp_path, train="1\t2\t5\n\n3\t1\t4\n\n")
    table = RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load().tables["biased"]
    assert table["line"].tolist() == [1, 3]
    assert table["user"].tolist() == [1, 3]


def test_yahoo_bad_value_after_blank_line_names_its_file_line(tmp_path):
    paths = _yahoo(tmp_path, train="1\t2\t5\n\n3\tx\t4\n")
    with _raises_naming(str(paths["biased"]), "row 3", "non-numeric"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


@pytest.mark.parametrize("text", ["", "\n"])
@pytest.mark.parametrize("source", ["biased", "unbiased"])
def test_yahoo_empty_file_raises_naming_it(tmp_path, source, text):
    texts = {"biased": YAHOO_TRAIN, "unbiased": YAHOO_TEST}
    texts[source] = text
    paths = _yahoo(tmp_path, train=texts["biased"], test=texts["unbiased"])
    with _raises_naming(str(paths[source])):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


@pytest.mark.parametrize("source", ["biased", "unbiased"])
def test_yahoo_empty_file_says_it_is_empty(tmp_path, source):
    # An empty (or blank) file is reported as empty, not as a malformed first row.
    texts = {"biased": YAHOO_TRAIN, "unbiased": YAHOO_TEST}
    texts[source] = ""
    paths = _yahoo(tmp_path, train=texts["biased"], test=texts["unbiased"])
    with _raises_naming(str(paths[source]), "empty"):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


def test_yahoo_missing_file_names_it(tmp_path):
    paths = _yahoo(tmp_path)
    paths["unbiased"].unlink()
    with _raises_naming("missing", "yahoo_r3", str(paths["unbiased"])):
        RawRatingsDataset("yahoo_r3", root=str(tmp_path)).load()


# ----------------------------------------------------------------- other behaviour


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(DatasetError, match=r"'movielens'.*coat, yahoo_r3, synthetic"):
        RawRatingsDataset("movielens", root="unused")


def test_synthetic_needs_no_files(tmp_path):
    dataset = RawRatingsDataset("synthetic", root=str(tmp_path / "nowhere"))
    raw = dataset.load()
    assert raw == RawRatings(name="synthetic")
    assert dataset.exists()


def test_save_is_refused(tmp_path):
    dataset = RawRatingsDataset("coat", root=str(tmp_path))
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(RawRatings(name="coat"))
    with pytest.raises(DatasetError):  # Kedro itself refuses to save None
        dataset.save(None)
    assert not (tmp_path / "coat").exists()


def test_describe_names_dataset_and_root(tmp_path):
    text = str(RawRatingsDataset("yahoo_r3", root=str(tmp_path)))
    assert "yahoo_r3" in text and str(tmp_path) in text
