"""Big files are parsed chunk by chunk into typed columns: the result does not depend
on the chunk size, and the memory a load takes is bounded by its result (plus one
chunk), not by the text of the file. ``benchmarks/ingest_memory.py`` measures the
same at 10 MB to 1 GB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pytest

from debias_pipeline.data.loaders import LOADERS, parsing
from debias_pipeline.data.loaders.interactions import Interactions, line_bound
from debias_pipeline.data.loaders.parsing import REQUIRED_FILES, RawData, RawDataError

SRC = Path(__file__).resolve().parents[2] / "src"
YAHOO_TRAIN, YAHOO_TEST = REQUIRED_FILES["yahoo_r3"]


def load(name: str, directory: Path, options: dict | None = None) -> RawData:
    return LOADERS[name](directory, options)


def assert_same(a: RawData, b: RawData) -> None:
    for table in ("interactions", "items", "users", "social"):
        left, right = getattr(a, table), getattr(b, table)
        if left is None or right is None:
            assert left is right is None, table
        else:
            pd.testing.assert_frame_equal(left, right, obj=table)


# --------------------------------------------------------------------------- chunk size


def _custom_files(directory: Path, later_user: str) -> dict:
    # Users: canonical integers in the first chunks, then `later_user`; items: text.
    (directory / "log.csv").write_text(
        "user,item,rating,timestamp\n"
        "1,a,5,10\n2,b,4,20\n\n3,a,3,30\n"  # a blank line: lines stay the file's own
        f"{later_user},c,2,40\n10,b,1,50\n"
    )
    (directory / "users.tsv").write_text("user\tage\n1\t30\n2\t40\n")
    (directory / "friends.csv").write_text("user,friend\n1,2\n2,10\n3,1\n")
    (directory / "items.csv").write_text("item,title,genres\na,A,x\nb,B,y|z\n")
    return {
        "interactions": "log.csv",
        "users": "users.tsv",
        "social": "friends.csv",
        "items": "items.csv",
        "columns": {"rating": "rating", "timestamp": "timestamp"},
    }


@pytest.mark.parametrize(
    ("later_user", "users"),
    [
        ("007", [1, 2, 3, 7, 10]),  # every id an integer: int64 ("007" is 7)
        ("u1", ["1", "2", "3", "u1", "10"]),  # one is not: text for all, the integers as written
        ("+4", [1, 2, 3, 4, 10]),
    ],
)
def test_custom_ids_are_typed_over_the_whole_file_whatever_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, later_user: str, users: list
) -> None:
    options = _custom_files(tmp_path, later_user)
    whole = load("custom", tmp_path, options)
    assert whole.interactions["user"].tolist() == users
    assert whole.interactions["line"].tolist() == [2, 3, 5, 6, 7]
    monkeypatch.setattr(parsing, "CHUNK_ROWS", 2)  # the typed pieces of 2 rows each
    assert_same(load("custom", tmp_path, options), whole)
    if isinstance(users[0], str):  # the social and users tables follow the interactions' type
        assert load("custom", tmp_path, options).social["user"].tolist() == ["1", "2", "3"]


def test_custom_parquet_in_slices_equals_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame(
        {
            "user": np.array([5, 6, 7, 8, 9]),
            "item": ["x", "y", "x", "z", "y"],
            "t": pd.to_datetime([1, 2, 3, 4, 5], unit="D"),
        }
    )
    frame.to_parquet(tmp_path / "log.parquet")
    options = {"interactions": "log.parquet", "columns": {"timestamp": "t"}}
    whole = load("custom", tmp_path, options)
    monkeypatch.setattr("debias_pipeline.data.loaders.custom.CHUNK_ROWS", 2)
    assert_same(load("custom", tmp_path, options), whole)
    assert whole.interactions["timestamp"].tolist() == [86400.0 * d for d in range(1, 6)]


def test_timestamps_of_two_kinds_in_one_column_fail_across_chunks_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "log.csv").write_text("user,item,t\n1,a,10\n2,b,20\n3,c,2020-01-01\n")
    options = {"interactions": "log.csv", "columns": {"timestamp": "t"}}
    monkeypatch.setattr(parsing, "CHUNK_ROWS", 2)
    with pytest.raises(RawDataError, match=r"log.csv line 4: timestamp '2020-01-01' is date/time text but every"):
        load("custom", tmp_path, options)
    # Dates first: a later chunk of digits only is parsed as dates too, as in one piece.
    (tmp_path / "log.csv").write_text("user,item,t\n1,a,2020-01-01\n2,b,2020-01-02\n3,c,20200103\n")
    chunked = load("custom", tmp_path, options).interactions["timestamp"]
    monkeypatch.setattr(parsing, "CHUNK_ROWS", 1_000_000)
    pd.testing.assert_series_equal(chunked, load("custom", tmp_path, options).interactions["timestamp"])
    assert chunked.iloc[2] == pd.Timestamp("2020-01-03", tz="UTC").timestamp()


def test_fixed_formats_are_the_same_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / YAHOO_TRAIN).write_text("1\t2\t5\n3\t1\t4\n\n2\t10\t1\n")
    (tmp_path / YAHOO_TEST).write_text("1\t1\t3\n2\t2\t2\n")
    whole = load("yahoo_r3", tmp_path)
    monkeypatch.setattr(parsing, "CHUNK_ROWS", 1)
    assert_same(load("yahoo_r3", tmp_path), whole)
    assert whole.interactions["line"].tolist() == [1, 2, 4, 1, 2]
    assert whole.interactions["part"].tolist() == ["biased"] * 3 + ["unbiased"] * 2


def test_lines_ended_by_a_lone_carriage_return_outgrow_the_bound_and_still_parse(tmp_path: Path) -> None:
    (tmp_path / YAHOO_TRAIN).write_bytes(b"1\t2\t5\r3\t1\t4\r2\t10\t1\r")  # no "\n": the line bound is 1 per file
    (tmp_path / YAHOO_TEST).write_bytes(b"1\t1\t3\r2\t2\t2\r")
    assert line_bound([tmp_path / YAHOO_TRAIN, tmp_path / YAHOO_TEST]) == 2
    table = load("yahoo_r3", tmp_path).interactions
    assert table["user"].tolist() == [1, 3, 2, 1, 2] and table["rating"].tolist() == [5, 4, 1, 3, 2]


@pytest.mark.parametrize("capacity", [0, 3, 5, 100])
def test_interactions_are_the_same_whatever_the_bound(capacity: int) -> None:
    log = Interactions(capacity)
    log.add(np.array([1, 2]), np.array([3, 4]), "train", np.array([1, 2]), rating=np.array([1.0, 2.0]))
    log.add(np.array([5, 6, 7]), np.array([8, 9, 10]), "test", np.array([1, 2, 3]))
    table = log.frame()
    assert table["user"].tolist() == [1, 2, 5, 6, 7] and table["item"].tolist() == [3, 4, 8, 9, 10]
    assert table["rating"].tolist()[:2] == [1.0, 2.0] and table["rating"].isna().tolist()[2:] == [True] * 3
    assert table["part"].tolist() == ["train"] * 2 + ["test"] * 3 and table["line"].tolist() == [1, 2, 1, 2, 3]
    assert [str(table[c].dtype) for c in table] == ["int64", "int64", "float64", "float64", "str", "int64"]


# --------------------------------------------------------------------------- memory

# The child loads a tiny file first (so that lazy imports are not counted), then resets
# its peak resident memory (VmHWM; writing 5 to clear_refs), loads the big file and prints
# how far that raised the peak, and the result's size. Not ru_maxrss: Linux carries the
# parent's peak across fork and exec into it, and pytest's own peak would be measured.
CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from debias_pipeline.data.loaders import LOADERS, parsing
    parsing.CHUNK_ROWS = 20_000  # a small chunk, so that the growth is the result's
    def status(field):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))
    name, options = sys.argv[1], json.loads(sys.argv[4])
    LOADERS[name](Path(sys.argv[2]), options)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    raw = LOADERS[name](Path(sys.argv[3]), options)
    print(status("VmHWM") - before, int(raw.interactions.memory_usage(deep=True).sum()))
    """
)


def _growth(name: str, tiny: Path, big: Path, options: dict | None) -> float:
    """How far loading ``big`` raises the peak resident memory, over the result's size."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(tiny), str(big), json.dumps(options)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    growth, result = map(int, done.stdout.split())
    return growth / result


def _rows(count: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "user": pc.binary_join_element_wise("u", pa.array(rng.integers(1, 50_000, count)).cast(pa.string()), ""),
            "item": pa.array(rng.integers(1, 5_000, count)),
            "rating": pa.array(rng.integers(1, 6, count)),
            "timestamp": pa.array(rng.integers(10**9, 2 * 10**9, count)),
        }
    )


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads the peak memory from /proc (Linux)")
def test_a_custom_csv_load_takes_memory_bounded_by_its_result(tmp_path: Path) -> None:
    # Before chunked typing the peak rose by 3.5 times the result (the whole file held as
    # text, then copies of it); now by about 1.6 times: the result, the Arrow pieces of
    # the text ids and one chunk.
    tiny, big = tmp_path / "tiny", tmp_path / "big"
    tiny.mkdir()
    big.mkdir()
    write = pv.WriteOptions(quoting_style="none")
    pv.write_csv(_rows(1_000_000), big / "log.csv", write)  # about 25 MB, a 57 MB result
    pv.write_csv(_rows(10), tiny / "log.csv", write)
    options = {"interactions": "log.csv", "columns": {"rating": "rating", "timestamp": "timestamp"}}
    assert _growth("custom", tiny, big, options) < 2.5
