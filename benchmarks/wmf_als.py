"""WMF against ``implicit``'s ALS on a real split: seconds per sweep and peak memory.

    python benchmarks/wmf_als.py --dataset gowalla --repeats 3 --sweeps 3

Contenders on the same train positives (the dataset's ``full_ranking`` train part,
seed 0), d 64, α 1, interleaved, medians of ``--repeats`` fits of ``--sweeps`` sweeps
each (a sweep: every user row, then every item row): the project's ``wmf`` with
``solver: exact`` and ``solver: cg`` (``implicit``'s solvers in float64 on the project's
confidence 1 + αy and ridge Nλ, plus the objective after every sweep, which ``wmf``
reports as its training loss and ``implicit`` does not compute), and ``implicit``'s own
``AlternatingLeastSquares`` (float32, its defaults otherwise). Y stays sparse throughout.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import process_dataset

PROJECT = Path(__file__).resolve().parents[1]


def contenders(data: TrainData, sweeps: int, threads: int) -> list[tuple[str, Callable[[], None]]]:
    """(name, fit) of each contender: ``sweeps`` sweeps from a fresh start per call;
    ``implicit``'s two only where it is installed."""

    def ours(solver: str) -> tuple[str, Callable[[], None]]:
        def fit() -> None:
            block = {"name": "wmf", "embedding_dim": 64, "alpha": 1.0, "weight_decay": 1e-4, "solver": solver, "epochs": sweeps}
            build_model(block, "wmf.model", seed=0, device="cpu").fit(data)

        return f"project wmf (solver: {solver}, float64)", fit

    found = [ours("exact"), ours("cg")]
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return found
    user_items = data.interactions.tocsr().astype(np.float32)

    def theirs(use_cg: bool) -> tuple[str, Callable[[], None]]:
        def fit() -> None:
            model = AlternatingLeastSquares(factors=64, iterations=sweeps, use_cg=use_cg, num_threads=threads, random_state=0)
            model.fit(user_items, show_progress=False)

        return f"implicit 0.7 ALS ({'cg' if use_cg else 'exact'}, float32)", fit

    return [*found, theirs(False), theirs(True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = RawDataset(dataset=args.dataset, root=str(PROJECT / "data" / "01_raw")).load()
    data = process_dataset(raw, args.dataset, seed=0, evaluation={"protocol": "full_ranking"}).train_data
    print(f"{args.dataset}: {data.n_users:,} users, {data.n_items:,} items, {data.interactions.nnz:,} train positives; {args.threads} threads")

    found = contenders(data, args.sweeps, args.threads)
    times: dict[str, list[float]] = {name: [] for name, _ in found}
    for _ in range(args.repeats):
        for name, fit in found:
            started = time.perf_counter()
            fit()
            times[name].append((time.perf_counter() - started) / args.sweeps)
    if len(found) < 3:
        raise SystemExit("implicit is not installed: nothing to compare with")
    reference = statistics.median(times[found[2][0]])
    print("| contender | s per sweep (median) | ratio to implicit exact |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / reference:.2f}x |")
    print(f"peak resident memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
