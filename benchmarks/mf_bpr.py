"""MF-BPR against ``implicit``'s BPR: time per epoch, and validation quality per second.

    python benchmarks/mf_bpr.py --dataset gowalla --repeats 3
    python benchmarks/mf_bpr.py --dataset lastfm --curve 40

Contenders on the same train split (the dataset's ``full_ranking`` protocol, seed 0), d
64: the project's MF-BPR (batch 2048, one uniform negative per positive, lr 1e-3, λ 1e-4:
the dataset defaults) with dense Adam (``optimizer: adam``) and with lazy Adam over the
batch's rows (``optimizer: sparse_adam``), and ``implicit`` 0.7's BPR (Hogwild SGD, one
triple at a time, its defaults lr 0.01 and regularization 0.01; another optimizer over
the same positives). Every contender runs on the same threads (``--threads``, default
all cores). Epoch timing interleaves the contenders, one epoch each per repeat, and
reports medians and the ratio to ``implicit``. ``--curve N`` trains each for N epochs and
prints validation NDCG@20 after each against the cumulative training seconds
(evaluation not counted), so the comparison is about reaching a quality.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.models.minibatch import MiniBatchEpochs
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import process_dataset

PROJECT = Path(__file__).resolve().parents[1]
BLOCK = {"name": "mf", "loss": "bpr", "embedding_dim": 64, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 2048}


class Ours:
    """One of the project's MF-BPR contenders, one epoch per call."""

    def __init__(self, data: Any, optimizer: str) -> None:
        self.name = f"project MF-BPR ({optimizer})"
        self.model = build_model({**BLOCK, "optimizer": optimizer}, "mf.model", seed=0, device="cpu")
        self.model.module = self.model.build_module(data, torch.Generator().manual_seed(0))
        if optimizer == "sparse_adam":  # as the model's fit sets it up
            self.epoch = MiniBatchEpochs(self.model, data, None, self.model.row_stepper())
        else:
            adam = torch.optim.Adam(self.model.module.parameters(), lr=BLOCK["lr"], fused=True)
            self.epoch = MiniBatchEpochs(self.model, data, adam)

    def __call__(self) -> None:
        self.epoch()

    def scorer(self) -> Any:
        self.model._cache_embeddings()
        return self.model


class Implicit:
    """``implicit``'s BPR, one iteration (epoch) per call, continuing from the last."""

    def __init__(self, data: Any, threads: int) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.name = "implicit 0.7 BPR"
        self.model = BayesianPersonalizedRanking(factors=64, iterations=1, num_threads=threads, random_state=0)
        self.user_items = data.interactions.tocsr().astype(np.float32)

    def __call__(self) -> None:
        self.model.fit(self.user_items, show_progress=False)

    def scorer(self) -> Any:
        users, items = self.model.user_factors, self.model.item_factors

        class Scores:
            name = "implicit"

            def score(self, ids: np.ndarray | None = None) -> np.ndarray:
                rows = users if ids is None else users[ids]
                return rows @ items.T

        return Scores()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--curve", type=int, default=0, help="epochs of the quality-per-second curve (0: timing only)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = RawDataset(dataset=args.dataset, root=str(PROJECT / "data" / "01_raw")).load()
    processed = process_dataset(raw, args.dataset, seed=0, evaluation={"protocol": "full_ranking"})
    data, validation = processed.train_data, processed.evaluators.validation
    print(f"{args.dataset}: {data.n_users:,} users, {data.n_items:,} items, {data.interactions.nnz:,} train positives; {args.threads} threads")
    contenders = [Ours(data, "adam"), Ours(data, "sparse_adam"), Implicit(data, args.threads)]
    if args.curve:
        implicit = contenders.pop()
        # One fit of N iterations: a fit per epoch would draw the same triples each time (its seed).
        implicit.model.iterations, seconds = args.curve, [0.0]

        def report(iteration: int, elapsed: float, *_: Any) -> None:
            seconds[0] += elapsed  # the iteration's own time, the evaluation not counted
            values, _ = validation.report(implicit.scorer())
            print(f"{implicit.name} | epoch {iteration + 1} | {seconds[0]:.1f} s | validation NDCG@20 {values['validation_ndcg_at_20']:.4f}", flush=True)

        implicit.model.fit(implicit.user_items, show_progress=False, callback=report)
        for contender in contenders:
            seconds = 0.0
            for epoch in range(1, args.curve + 1):
                started = time.perf_counter()
                contender()
                seconds += time.perf_counter() - started
                values, _ = validation.report(contender.scorer())
                print(f"{contender.name} | epoch {epoch} | {seconds:.1f} s | validation NDCG@20 {values['validation_ndcg_at_20']:.4f}", flush=True)
        return
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(args.repeats):
        for contender in contenders:  # interleaved: each repeat one epoch of every contender
            started = time.perf_counter()
            contender()
            times[contender.name].append(time.perf_counter() - started)
    reference = statistics.median(times[contenders[-1].name])
    print("| contender | s per epoch (median) | ratio to implicit |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / reference:.1f}x |")


if __name__ == "__main__":
    main()
