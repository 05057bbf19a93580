"""MF-BPR against ``implicit``'s BPR: time per epoch, and validation quality per second.

    python benchmarks/mf_bpr.py --dataset gowalla --repeats 3
    python benchmarks/mf_bpr.py --dataset lastfm --curve 40 --root /work/shared/data

Contenders on the same train split (the dataset's ``full_ranking`` protocol, seed 0), d
64: the project's MF-BPR (batch 2048, one uniform negative per positive, lr 1e-3, λ 1e-4:
the dataset defaults) with dense Adam (``optimizer: adam``) and with lazy Adam over the
batch's rows (``optimizer: sparse_adam``); the project's MF with ``optimizer: sgd``
(LearnBPR's per-triple step a batch of 2048 at a time) and with ``solver: implicit_bpr``
(``implicit``'s compiled SGD on the project's tables, under its early stopping; one
thread, the reproducible setting, and ``--threads``), both with ``implicit``'s defaults
(step 0.01, regularization 0.01 = 2λ, so λ 0.005); and ``implicit`` 0.7's BPR itself
(Hogwild SGD, one triple at a time, lr 0.01, regularization 0.01, 64 factors + an item
bias). ``implicit`` and ``solver: implicit_bpr`` draw negatives in proportion to
popularity (an item of a random positive), the others uniformly. Every contender runs
on the same threads (``--threads``, default all cores). Epoch timing interleaves the
contenders, one epoch each per repeat, the order rotated each repeat, and reports
medians and the ratio to ``implicit``. ``--curve N`` trains each for N epochs and
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
from debias_pipeline.models.implicit_bpr import ImplicitBprEpochs
from debias_pipeline.models.minibatch import MiniBatchEpochs
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import process_dataset

PROJECT = Path(__file__).resolve().parents[1]
BLOCK = {"name": "mf", "loss": "bpr", "embedding_dim": 64, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 2048}
# implicit's defaults, learning rate 0.01 and regularization 0.01 = 2λ.
SGD = {**BLOCK, "lr": 0.01, "weight_decay": 0.005}


class Ours:
    """One of the project's MF-BPR contenders, one epoch per call."""

    def __init__(self, data: Any, optimizer: str) -> None:
        self.name = f"project MF-BPR ({optimizer})"
        block = {**(SGD if optimizer == "sgd" else BLOCK), "optimizer": optimizer}
        self.model = build_model(block, "mf.model", seed=0, device="cpu")
        self.model.module = self.model.build_module(data, torch.Generator().manual_seed(0))
        if optimizer != "adam":  # as the model's fit sets it up
            self.epoch = MiniBatchEpochs(self.model, data, None, self.model.row_stepper())
        else:
            adam = torch.optim.Adam(self.model.module.parameters(), lr=BLOCK["lr"], fused=True)
            self.epoch = MiniBatchEpochs(self.model, data, adam)

    def __call__(self) -> None:
        self.epoch()

    def scorer(self) -> Any:
        self.model._cache_embeddings()
        return self.model


class OursImplicit(Ours):
    """The project's MF with ``solver: implicit_bpr`` (64 factors + the bias column, as
    ``implicit``), one epoch per call, as its fit runs them."""

    def __init__(self, data: Any, threads: int) -> None:
        self.name = f"project MF (solver: implicit_bpr, {threads} thread{'s' if threads > 1 else ''})"
        block = {**SGD, "embedding_dim": 65, "solver": "implicit_bpr", "negative_sampling": "popularity", "num_threads": threads}
        self.model = build_model(block, "mf.model", seed=0, device="cpu")
        self.model.module = self.model.build_module(data, torch.Generator().manual_seed(0))
        self.epoch = ImplicitBprEpochs(self.model.module, data.interactions, SGD["lr"], SGD["weight_decay"], threads, seed=0)


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


def quality_curves(contenders: list[Any], validation: Any, epochs: int) -> dict[str, list[tuple[float, float]]]:
    """(cumulative training seconds, validation NDCG@20) after each of ``epochs`` epochs
    of every contender, printed as they come; ``implicit`` (the last) as one fit of
    ``epochs`` iterations: a fit per epoch would draw the same triples each time (its seed)."""
    curves: dict[str, list[tuple[float, float]]] = {c.name: [] for c in contenders}

    def record(contender: Any, epoch: int, seconds: float) -> None:
        values, _ = validation.report(contender.scorer())
        curves[contender.name].append((seconds, values["validation_ndcg_at_20"]))
        print(f"{contender.name} | epoch {epoch} | {seconds:.1f} s | validation NDCG@20 {curves[contender.name][-1][1]:.4f}", flush=True)

    implicit, seconds = contenders[-1], [0.0]
    implicit.model.iterations = epochs

    def report(iteration: int, elapsed: float, *_: Any) -> None:
        seconds[0] += elapsed  # the iteration's own time, the evaluation not counted
        record(implicit, iteration + 1, seconds[0])

    implicit.model.fit(implicit.user_items, show_progress=False, callback=report)
    for contender in contenders[:-1]:
        total = 0.0
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            contender()
            total += time.perf_counter() - started
            record(contender, epoch, total)
    return curves


PROJECT_CONTENDERS = ("adam", "sparse_adam", "sgd", "implicit_bpr")


def contenders_of(data: Any, threads: int, chosen: tuple[str, ...] = PROJECT_CONTENDERS) -> list[Any]:
    """The ``chosen`` project contenders and ``implicit``'s, last (the ratios' base)."""
    found: list[Any] = [Ours(data, optimizer) for optimizer in ("adam", "sparse_adam", "sgd") if optimizer in chosen]
    if "implicit_bpr" in chosen:
        found += [OursImplicit(data, count) for count in sorted({1, threads})]
    return [*found, Implicit(data, threads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--curve", type=int, default=0, help="epochs of the quality-per-second curve (0: timing only)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--root", default=str(PROJECT / "data" / "01_raw"), help="the folder of the raw datasets")
    parser.add_argument("--contenders", nargs="+", choices=PROJECT_CONTENDERS, default=PROJECT_CONTENDERS, help="the project's (implicit always runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = RawDataset(dataset=args.dataset, root=args.root).load()
    processed = process_dataset(raw, args.dataset, seed=0, evaluation={"protocol": "full_ranking"})
    data, validation = processed.train_data, processed.evaluators.validation
    print(f"{args.dataset}: {data.n_users:,} users, {data.n_items:,} items, {data.interactions.nnz:,} train positives; {args.threads} threads")
    contenders = contenders_of(data, args.threads, tuple(args.contenders))
    if args.curve:
        curves = quality_curves(contenders, validation, args.curve)
        goal = 0.9 * max(ndcg for _, ndcg in curves[contenders[-1].name])
        print(f"| contender | best validation NDCG@20 | at s | s to 90 % of implicit's best ({goal:.4f}) |")
        print("|---|---|---|---|")
        for name, points in curves.items():
            best_s, best = max(points, key=lambda point: point[1])
            reached = next((f"{s:.1f}" for s, ndcg in points if ndcg >= goal), "not reached")
            print(f"| {name} | {best:.4f} | {best_s:.1f} | {reached} |")
        return
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for repeat in range(args.repeats):
        shift = repeat % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:  # interleaved, the order rotated
            started = time.perf_counter()
            contender()
            times[contender.name].append(time.perf_counter() - started)
    reference = statistics.median(times[contenders[-1].name])
    print(f"({args.repeats} repeats)")
    print("| contender | s per epoch (median) | ratio to implicit |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / reference:.1f}x |")


if __name__ == "__main__":
    main()
