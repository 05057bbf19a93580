"""Peak memory of the raw-data loaders against the size of the file they read.

    python benchmarks/ingest_memory.py                       # 10, 50, 200 MB; custom CSV and Yahoo! R3
    python benchmarks/ingest_memory.py --sizes 10 50 200 1000 --formats custom_csv
    python benchmarks/ingest_memory.py --stage index   # through the nodes up to id_maps

For each format and size a synthetic file of about that many megabytes is written
under ``--directory`` (default: a temporary folder, removed afterwards unless
``--keep``; the files are regenerated from a seed, never stored):

- ``custom_csv``: ``user,item,rating,timestamp`` with integer users, text items
  (``i123``), ratings 1..5 and Unix timestamps, read by ``load_custom``;
- ``custom_tsv``: the same columns tab-separated (``.tsv``);
- ``yahoo_r3``: the biased file at that size (``user<TAB>item<TAB>rating``) and a
  small unbiased one, read by ``load_yahoo_r3``.

With ``--stage index`` the child then runs ``ingest_ratings``, ``binarize_ratings`` and
``index_interactions`` (``duplicates: last``: random pairs repeat) on what it loaded,
the nodes a ``kedro run`` takes up to ``id_maps``, with the raw data still held.

Each load runs in a fresh interpreter, so the import of pandas and pyarrow is part of
every figure (about 100-150 MB; MB are 10^6 bytes throughout). The peak resident set
size is the child's own ``VmHWM`` (``/proc/self/status``), which it prints as it ends.
Not ``ru_maxrss`` (``resource.getrusage(RUSAGE_CHILDREN)``, or ``os.wait4`` for the one
child): Linux carries a process's peak across fork and exec into the child's, so that
figure is at least this script's own peak (some hundred MB after writing the files),
which can hide the small loads; both are printed. The table gives the peak, the peak
over the file size, the wall and CPU seconds, and the least-squares slope of peak
against size over all the sizes of a format: the memory each further megabyte of file
costs, with the interpreter's fixed cost taken out by the intercept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

SRC = Path(__file__).resolve().parents[1] / "src"
MB = 1_000_000
ROWS_PER_WRITE = 1_000_000
YAHOO_TRAIN, YAHOO_TEST = "ydata-ymusic-rating-study-v1_0-train.txt", "ydata-ymusic-rating-study-v1_0-test.txt"
FORMATS = ("custom_csv", "custom_tsv", "yahoo_r3")

# The child: load one dataset (and with "index", run the data-processing nodes up to
# id_maps on it), print the rows it got and its own peak (VmHWM, kB).
CHILD = """
import json, sys
from pathlib import Path
from debias_pipeline.data.loaders import LOADERS
name, directory, options, stage = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
raw = LOADERS[name](directory, options or None)
rows = len(raw.interactions)
if stage == "index":
    from debias_pipeline.data.processing import binarize_ratings, index_interactions, ingest_ratings
    ratings, truth = ingest_ratings(raw, name, {}, 0)
    labeled = binarize_ratings(ratings, {}, name)
    del ratings
    index_interactions(labeled, raw, truth, {"duplicates": "last"}, name)  # random pairs repeat
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(rows, peak)
"""


def _rows(rng: np.random.Generator, count: int, text_items: bool) -> pa.Table:
    """``count`` interactions: 1M users, 100k items, ratings 1..5, timestamps of 2000-2020."""
    users = rng.integers(1, 1_000_000, count)
    items = rng.integers(1, 100_000, count)
    columns = {
        "user": pa.array(users),
        "item": pc.binary_join_element_wise("i", pa.array(items).cast(pa.string()), "")
        if text_items
        else pa.array(items),
        "rating": pa.array(rng.integers(1, 6, count)),
    }
    if text_items:
        columns["timestamp"] = pa.array(rng.integers(946_684_800, 1_577_836_800, count))
    return pa.table(columns)


def write_file(path: Path, megabytes: float, delimiter: str, header: bool, text_items: bool, seed: int) -> int:
    """Write about ``megabytes`` MB of interactions to ``path``; return the rows written."""
    rng = np.random.default_rng(seed)
    target = int(megabytes * MB)
    options = pv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
    rows = 0
    with path.open("wb") as handle:
        if header:
            handle.write(delimiter.join(_rows(rng, 1, text_items).column_names).encode() + b"\n")
        while handle.tell() < target:
            sink = pa.BufferOutputStream()
            pv.write_csv(_rows(rng, 1000, text_items), sink, options)
            per_row = sink.getvalue().size / 1000
            count = max(1, min(ROWS_PER_WRITE, int((target - handle.tell()) / per_row)))
            sink = pa.BufferOutputStream()
            pv.write_csv(_rows(rng, count, text_items), sink, options)
            handle.write(sink.getvalue().to_pybytes())
            rows += count
    return rows


def prepare(fmt: str, directory: Path, megabytes: float, seed: int) -> tuple[str, dict, Path]:
    """Write the files of one measurement; return (loader name, options, the big file)."""
    directory.mkdir(parents=True, exist_ok=True)
    if fmt in ("custom_csv", "custom_tsv"):
        name = "ratings.csv" if fmt == "custom_csv" else "ratings.tsv"
        path = directory / name
        write_file(path, megabytes, "," if fmt == "custom_csv" else "\t", True, True, seed)
        options = {"interactions": name, "columns": {"rating": "rating", "timestamp": "timestamp"}}
        return "custom", options, path
    path = directory / YAHOO_TRAIN
    write_file(path, megabytes, "\t", False, False, seed)
    write_file(directory / YAHOO_TEST, 0.01, "\t", False, False, seed + 1)
    return "yahoo_r3", {}, path


def measure(loader: str, directory: Path, options: dict, stage: str) -> tuple[float, float, float, float, int]:
    """(peak RSS in MB, ru_maxrss in MB, wall seconds, CPU seconds, rows) of one load in a
    fresh interpreter. CPU seconds (user + system) are the figure to compare on a busy machine."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, loader, str(directory), json.dumps(options), stage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out = child.stdout.read()  # type: ignore[union-attr]
    err = child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        raise RuntimeError(f"{loader} failed: {tail[0]}")
    cpu = usage.ru_utime + usage.ru_stime
    rows, peak = map(int, out.split()[-2:])
    return peak * 1024 / MB, usage.ru_maxrss * 1024 / MB, seconds, cpu, rows  # both in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[10, 50, 200], help="file sizes in MB")
    parser.add_argument("--formats", nargs="+", default=["custom_csv", "yahoo_r3"], choices=FORMATS)
    parser.add_argument("--directory", type=Path, default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stage",
        choices=["load", "index"],
        default="load",
        help="load: the loader alone (the raw_data dataset); index: then ingest_ratings, "
        "binarize_ratings and index_interactions, as `kedro run` does up to id_maps",
    )
    args = parser.parse_args()

    root = args.directory or Path(tempfile.mkdtemp(prefix="ingest_memory_"))
    print(
        f"{'format':<11} {'file MB':>8} {'rows':>11} {'peak MB':>8} {'peak/file':>9} {'maxrss MB':>9} "
        f"{'wall s':>7} {'CPU s':>7}"
    )
    try:
        for fmt in args.formats:
            sizes, peaks = [], []
            for megabytes in sorted(args.sizes):
                directory = root / f"{fmt}_{megabytes:g}"
                loader, options, path = prepare(fmt, directory, megabytes, args.seed)
                size = path.stat().st_size / MB
                peak, maxrss, seconds, cpu, rows = measure(loader, directory, options, args.stage)
                sizes.append(size)
                peaks.append(peak)
                print(
                    f"{fmt:<11} {size:>8.1f} {rows:>11,} {peak:>8.0f} {peak / size:>9.2f} {maxrss:>9.0f} "
                    f"{seconds:>7.1f} {cpu:>7.1f}",
                    flush=True,
                )
                if not args.keep:
                    shutil.rmtree(directory)
            if len(sizes) > 1:
                slope, intercept = np.polyfit(sizes, peaks, 1)
                print(f"{fmt:<11} fitted: peak = {intercept:.0f} MB + {slope:.2f} x file size")
    finally:
        if not args.keep and args.directory is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
