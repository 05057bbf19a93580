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

With ``--epoch-scaling`` it times instead one mini-batch LightGCN epoch per
propagation mode (``TrainingConfig.propagation``) on synthetic graphs of growing size,
the users and items scaled with the interactions from the 1M graph above, in this
process (no Kedro run):

    python benchmarks/scale_run.py --epoch-scaling --sizes 0.25 0.5 1 2 4
    python benchmarks/scale_run.py --epoch-scaling --sizes 0.05 0.1 --exact-batches 2   # quick

Modes: ``exact`` (every batch propagates the graph and back, dense Adam, the default
mode), ``stale`` (one exact step and one propagation per epoch, ``refresh_every`` above
the epoch's batches, ``optimizer: sparse_adam``) and ``stale_adam`` (the same with
dense Adam). ``exact`` runs only ``--exact-batches`` batches per size and scales their
time to the epoch's batches (its batches all cost the same); the stale modes run whole
epochs unless ``--stale-batches`` is given. Prints per size and mode the epoch's wall
and CPU seconds, the CPU microseconds per interaction, and per mode the exponent b of
``time ∝ n^b`` fitted by least squares on log-log.
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
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's package, installed or not

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


MODES = ("exact", "stale", "stale_adam")


def epoch_seconds(
    mode: str, n_interactions: int, max_batches: int | None, threads: int, seed: int = 0
) -> tuple[float, float, int, int]:
    """Wall and CPU seconds of one mini-batch epoch of LightGCN (d 64, 3 layers, batch
    2048, the papers' settings) in ``mode`` on a synthetic graph of ``n_interactions``;
    with ``max_batches``, those batches' seconds scaled to the epoch. Also the epoch's
    batches and the batches timed. On a shared machine the CPU seconds (of this process)
    are the closer to what the epoch takes on a quiet one."""
    import warnings

    import torch

    from debias_pipeline.data.processing import build_normalized_adjacency
    from debias_pipeline.models.contract import TrainData
    from debias_pipeline.models.minibatch import MiniBatchEpochs
    from debias_pipeline.models.registry import build_model

    warnings.filterwarnings("ignore", message="Sparse", category=UserWarning)  # torch's beta notices
    torch.set_num_threads(threads)
    scale = n_interactions / SCALE[2]
    n_users, n_items = round(SCALE[0] * scale), round(SCALE[1] * scale)
    train = power_law_interactions(n_users, n_items, n_interactions, seed=seed)
    data = TrainData(train, build_normalized_adjacency(train))
    batches = -(-n_interactions // 2048)
    params = {
        "name": "lightgcn",
        "embedding_dim": 64,
        "num_layers": 3,
        "loss": "bpr",
        "batch_size": 2048,
        "lr": 0.001,
        "weight_decay": 1e-4,
    }
    if mode != "exact":
        params.update(propagation="stale", refresh_every=batches + 1)
    if mode == "stale":
        params["optimizer"] = "sparse_adam"
    model = build_model(params, "scale", seed=seed, device="cpu")
    model.module = model.build_module(data, torch.Generator().manual_seed(seed))
    if mode == "stale":
        run_epoch = MiniBatchEpochs(model, data, None, model.row_stepper())
    else:
        run_epoch = MiniBatchEpochs(model, data, torch.optim.Adam(model.module.parameters(), lr=0.001, fused=True))
    timed = batches if max_batches is None else min(batches, max_batches)
    started, cpu_started = time.perf_counter(), time.process_time()
    run_epoch(max_batches=timed)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return wall * batches / timed, cpu * batches / timed, batches, timed


def epoch_scaling(args: argparse.Namespace) -> int:
    """The ``--epoch-scaling`` table: epoch seconds per size and mode, and the fitted
    exponents."""
    sizes = [round(float(m) * 1e6) for m in args.sizes]
    seconds: dict[str, dict[str, list[float]]] = {mode: {"wall": [], "cpu": []} for mode in args.modes}
    print(f"threads {args.threads}; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    header = f"{'interactions':>13} {'mode':>10} {'wall s':>9} {'cpu s':>9} {'cpu µs / interaction':>21} {'timed / batches':>16}"
    print(header, flush=True)
    for n in sizes:
        for mode in args.modes:
            limit = args.exact_batches if mode == "exact" else args.stale_batches
            wall, cpu, batches, timed = epoch_seconds(mode, n, limit, args.threads)
            seconds[mode]["wall"].append(wall)
            seconds[mode]["cpu"].append(cpu)
            row = f"{n:>13,} {mode:>10} {wall:>9.1f} {cpu:>9.1f} {cpu / n * 1e6:>21.2f} {timed:>8}/{batches:<7}"
            print(row, flush=True)
    if len(sizes) >= 2:
        for mode, values in seconds.items():
            fits = [np.polyfit(np.log(sizes), np.log(values[kind]), 1)[0] for kind in ("wall", "cpu")]
            print(f"{mode}: epoch time ∝ n^{fits[0]:.2f} wall, n^{fits[1]:.2f} cpu (log-log least squares, {len(sizes)} sizes)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": sizes, "threads": args.threads, "seconds": seconds}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=SCALE[0])
    parser.add_argument("--items", type=int, default=SCALE[1])
    parser.add_argument("--interactions", type=int, default=SCALE[2])
    parser.add_argument("--test-items", type=int, default=10, help="unbiased items per user")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--params", default="", help="more --params for kedro run, comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    scaling = parser.add_argument_group("--epoch-scaling")
    scaling.add_argument("--epoch-scaling", action="store_true", help="time one epoch per mode and size instead")
    scaling.add_argument("--sizes", nargs="+", default=["0.25", "0.5", "1", "2", "4"], help="millions of interactions")
    scaling.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:2]))
    scaling.add_argument("--exact-batches", type=int, default=8, help="batches timed in exact mode")
    scaling.add_argument("--stale-batches", type=int, default=None, help="batches timed in the stale modes (all)")
    scaling.add_argument("--threads", type=int, default=1, help="torch threads")
    scaling.add_argument("--json", help="write the seconds here")
    args = parser.parse_args(argv)
    if args.epoch_scaling:
        return epoch_scaling(args)

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
