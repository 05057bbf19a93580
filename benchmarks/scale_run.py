"""The scale check: ``kedro run --pipelines=train_lightgcn`` in mini-batch mode with the
full-ranking protocol on a 30,000 users x 40,000 items x 1,000,000 interactions graph.

    python benchmarks/scale_run.py                 # 3 epochs, the LightGCN papers' settings
    python benchmarks/scale_run.py --epochs 1 --keep

The graph is synthetic (``benchmarks/graphs.py``), written as a Yahoo! R3 pair of files
(tab-separated ``user item rating``, 1-indexed) into ``data/01_raw/yahoo_r3/`` of a
temporary copy of the project (its conf, pyproject and ``src/``, so the run uses this
checkout's code and can package it with the logged model), which is removed afterwards
unless ``--keep``. Every train interaction is a
positive rating (4 or 5); the unbiased file gives every user ``--test-items`` random
items with random ratings. The run is timed with ``/usr/bin/time -v``; the script prints
the wall time, the epochs, the peak resident memory and the metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.graphs import SCALE, power_law_interactions  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
TRAIN_FILE = "ydata-ymusic-rating-study-v1_0-train.txt"
TEST_FILE = "ydata-ymusic-rating-study-v1_0-test.txt"


def write_yahoo_files(directory: Path, n_users: int, n_items: int, n_interactions: int, test_items: int) -> None:
    """The train (biased) and test (unbiased) files of a synthetic Yahoo! R3-format dataset."""
    rng = np.random.default_rng(0)
    train = power_law_interactions(n_users, n_items, n_interactions, seed=0).tocoo()
    ratings = rng.integers(4, 6, train.nnz)
    directory.mkdir(parents=True, exist_ok=True)
    np.savetxt(directory / TRAIN_FILE, np.c_[train.row + 1, train.col + 1, ratings], fmt="%d", delimiter="\t")
    users = np.repeat(np.arange(n_users), test_items)
    items = np.concatenate([rng.choice(n_items, test_items, replace=False) for _ in range(n_users)])
    test_ratings = np.where(rng.random(users.size) < 0.3, rng.integers(4, 6, users.size), rng.integers(1, 4, users.size))
    np.savetxt(directory / TEST_FILE, np.c_[users + 1, items + 1, test_ratings], fmt="%d", delimiter="\t")


def project_copy(root: Path) -> None:
    """A runnable Kedro project in ``root``: the conf, the pyproject and the package's
    source. Kedro puts the project's ``src/`` first on the path, and the catalog logs the
    model with ``code_paths: [src/debias_pipeline]`` relative to the project, so an empty
    ``src/`` fails the run when it logs the model."""
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=SCALE[0])
    parser.add_argument("--items", type=int, default=SCALE[1])
    parser.add_argument("--interactions", type=int, default=SCALE[2])
    parser.add_argument("--test-items", type=int, default=10, help="unbiased items per user")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--params", default="", help="more --params for kedro run, comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="debias_scale_"))
    try:
        project_copy(root)
        write_yahoo_files(root / "data" / "01_raw" / "yahoo_r3", args.users, args.items, args.interactions, args.test_items)
        params = ",".join(
            filter(
                None,
                [
                    "dataset=yahoo_r3",
                    "lightgcn.model.loss=bpr",
                    "lightgcn.model.embedding_dim=64",
                    "lightgcn.model.num_layers=3",
                    "lightgcn.model.batch_size=2048",
                    "lightgcn.model.lr=0.001",
                    "lightgcn.model.weight_decay=0.0001",
                    f"lightgcn.model.epochs={args.epochs}",
                    "evaluation.protocol=full_ranking",
                    args.params,
                ],
            )
        )
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "kedro", "run", "--pipelines=train_lightgcn"]
        command.append(f"--params={params}")
        print("$", " ".join(command), f"(in {root})", flush=True)
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout[-4000:], result.stderr[-8000:], sep="\n")
            return result.returncode
        report = result.stderr
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", report).group(1)
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
        history = sorted((root / "data" / "06_models" / "lightgcn" / "training_history.csv").glob("*/*.csv"))[-1]
        epochs = len(history.read_text().strip().splitlines()) - 1
        metrics_file = sorted((root / "data" / "08_reporting" / "lightgcn" / "metrics.json").glob("*/*.json"))[-1]
        metrics = json.loads(metrics_file.read_text())
        print(f"graph: {args.users:,} users x {args.items:,} items x {args.interactions:,} interactions")
        print(f"wall time {wall}, {epochs} epochs, peak RSS {peak_kb / 1024:,.0f} MiB")
        print("training history:\n" + history.read_text())
        print(json.dumps(metrics, indent=2))
        return 0
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
