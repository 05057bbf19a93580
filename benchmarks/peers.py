"""The project against the libraries a user would pick instead, side by side in one run.

    python benchmarks/peers.py                       # synthetic Gowalla-sized graph, quiet
    python benchmarks/peers.py --graph gowalla       # the real Gowalla split
    python benchmarks/peers.py --load                # and again with one busy process per core
    python benchmarks/peers.py --quick               # small slices, one repeat: a smoke test

Four pieces of work, each done by every contender installed here (``pip install -e
'.[bench]'`` then ``pip install --no-deps recbole==1.2.1``, as ``make bench`` does, adds
the optional ones; those that do not import are listed as skipped), in the same process,
on the same train positives, d 64, batch 2048, one negative per positive, λ 1e-4, Adam lr
1e-3 (fused for the project, as its training runs it; plain ``torch.optim.Adam`` for the
official path and PyG; RecBole's trainer's own):

1. one LightGCN BPR epoch, 3 layers: the project's ``lightgcn`` (``loss: bpr``); the
   official LightGCN code's path (``benchmarks/reference.py``: triples drawn in a Python
   loop, COO ``torch.sparse.mm`` with stock autograd; its sampling timed in full and
   added); PyTorch Geometric's ``LightGCN`` with its default edge-index propagation, which
   normalizes the graph on every call, and with the normalized adjacency given as a CSR
   tensor (``normalize=False``), both with its example's unchecked uniform negatives;
   RecBole's ``LightGCN`` with its own data loader and sampler
   (``benchmarks/recbole_peer.py``). Timed on slices of ``--batches`` batches scaled to
   the epoch (every batch costs the same).
2. one MF-BPR epoch: the project's MF with dense Adam, with lazy Adam over the
   batch's rows, with ``optimizer: sgd`` and with ``solver: implicit_bpr`` (one thread),
   and ``implicit``'s BPR (Hogwild SGD, one triple at a time: another optimizer over the
   same positives).
3. one WMF sweep: the project's ``wmf`` (``implicit``'s solvers in float64, plus its
   objective every sweep) against ``implicit``'s ALS in float32, exact and CG.
4. full ranking, top 20 of every item for every user, train items masked: the project's
   ``full_ranking_metrics`` (which also computes Recall and NDCG), ``implicit``'s
   ``recommend`` and a plain chunked ``torch.topk``.

The contenders of a piece of work run round-robin, the order rotated every repeat, and
the table gives medians, the ratio of each contender's time to the project's and the
peak resident memory above the start (``benchmarks/run.py``'s ``PeakMemory``).
``--load`` starts one busy process per core and runs the table again beside the quiet
one: on a shared machine that is the condition that decides which tool is faster.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import debias_pipeline  # noqa: E402, F401  (before torch: its OpenMP settings)
from benchmarks import mf_bpr, wmf_als  # noqa: E402
from benchmarks.graphs import GOWALLA, power_law_interactions  # noqa: E402
from benchmarks.reference import coo_adjacency, reference_bpr_steps, reference_sample_triples  # noqa: E402
from benchmarks.run import PeakMemory, machine  # noqa: E402
from debias_pipeline.data.processing import build_normalized_adjacency  # noqa: E402
from debias_pipeline.evaluation.metrics import full_ranking_metrics  # noqa: E402
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.minibatch import MiniBatchEpochs, positive_pairs  # noqa: E402
from debias_pipeline.models.registry import build_model  # noqa: E402
from debias_pipeline.models.trainers import sparse_to_torch  # noqa: E402
from debias_pipeline.training.device import resolve_device  # noqa: E402

DIM, LAYERS, BATCH, LR, WEIGHT_DECAY = 64, 3, 2048, 1e-3, 1e-4
PROJECT = Path(__file__).resolve().parents[1]


@dataclass
class Contender:
    """One way of doing a piece of work: ``run`` does it once (or a slice of it, which
    ``scale`` turns into the whole); ``extra_s`` is added once (work done outside the
    slices, such as the official code's sampling of the epoch)."""

    name: str
    run: Callable[[], object]
    scale: float = 1.0
    extra_s: float = 0.0
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds) * self.scale + self.extra_s


def contest(contenders: list[Contender], repeats: int, memory: PeakMemory) -> None:
    """Round-robin over the contenders, one warm-up call each, the order rotated every repeat."""
    for contender in contenders:
        contender.run()
    for repeat in range(repeats):
        shift = repeat % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            memory.start()
            started = time.perf_counter()
            contender.run()
            contender.seconds.append(time.perf_counter() - started)
            contender.peak_mb.append(memory.stop() / 1e6)


# ---- the data ----------------------------------------------------------------------------


SYNTHETIC = {"synthetic": ("Gowalla-sized", GOWALLA), "small": ("small, for a smoke test", (2_000, 3_000, 40_000))}


def load_graph(name: str) -> tuple[str, TrainData]:
    """A synthetic graph (Gowalla-sized, or small), or a real split's ``full_ranking`` train part."""
    if name in SYNTHETIC:
        label, shape = SYNTHETIC[name]
        train = power_law_interactions(*shape, seed=0)
        return f"synthetic, {label}", TrainData(train, build_normalized_adjacency(train))
    from debias_pipeline.datasets.raw import RawDataset
    from debias_pipeline.training.inputs import process_dataset

    raw = RawDataset(dataset=name, root=str(PROJECT / "data" / "01_raw")).load()
    data = process_dataset(raw, name, seed=0, evaluation={"protocol": "full_ranking"}).train_data
    return f"{name} (full_ranking train part)", data


# ---- 1. LightGCN -------------------------------------------------------------------------


def project_lightgcn(data: TrainData, batches: int) -> Contender:
    block = {"name": "lightgcn", "embedding_dim": DIM, "num_layers": LAYERS, "loss": "bpr", "batch_size": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY}
    model = build_model(block, "lightgcn.model", seed=0, device="cpu")
    model.module = model.build_module(data, torch.Generator().manual_seed(0))
    epochs = MiniBatchEpochs(model, data, torch.optim.Adam(model.module.parameters(), lr=LR, fused=True))
    return Contender("project lightgcn", lambda: epochs(batches), scale=n_batches(data) / batches)


def official_lightgcn(data: TrainData, batches: int) -> Contender:
    generator = torch.Generator().manual_seed(0)
    users = torch.nn.Parameter(torch.randn(data.n_users, DIM, generator=generator) * 0.01)
    items = torch.nn.Parameter(torch.randn(data.n_items, DIM, generator=generator) * 0.01)
    optimizer = torch.optim.Adam([users, items], lr=LR)
    coo = coo_adjacency(data.adjacency)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    triples = reference_sample_triples(data.interactions, rng)
    sampling_s = time.perf_counter() - started

    def steps() -> None:
        reference_bpr_steps(users, items, optimizer, coo, LAYERS, triples, BATCH, WEIGHT_DECAY, batches)

    return Contender(
        "official LightGCN code's path", steps, scale=n_batches(data) / batches, extra_s=sampling_s,
        note=f"+ {sampling_s:.1f} s Python sampling",
    )


def pyg_lightgcn(data: TrainData, batches: int, csr: bool) -> Contender | None:
    try:
        from torch_geometric.nn.models import LightGCN
    except ImportError:
        print("skipped: PyG LightGCN (torch_geometric does not import)", file=sys.stderr)
        return None
    n_users, n_nodes = data.n_users, data.n_users + data.n_items
    positive_users, positive_items = positive_pairs(data.interactions, torch.device("cpu"))
    positive_items = positive_items + n_users  # node ids
    if csr:
        edges = sparse_to_torch(data.adjacency, torch.device("cpu"))
        model = LightGCN(n_nodes, DIM, LAYERS, normalize=False)
    else:
        edges = torch.stack([torch.cat([positive_users, positive_items]), torch.cat([positive_items, positive_users])])
        model = LightGCN(n_nodes, DIM, LAYERS)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(0)

    def steps() -> None:
        order = torch.randperm(positive_users.numel(), generator=generator)
        for start in range(0, batches * BATCH, BATCH):
            batch = order[start : start + BATCH]
            users, positives = positive_users[batch], positive_items[batch]
            negatives = torch.randint(n_users, n_nodes, (batch.numel(),), generator=generator)
            label_index = torch.stack([torch.cat([users, users]), torch.cat([positives, negatives])])
            positive_rank, negative_rank = model(edges, label_index).chunk(2)
            loss = model.recommendation_loss(positive_rank, negative_rank, node_id=label_index.unique(), lambda_reg=WEIGHT_DECAY)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    how = "given the normalized CSR adjacency" if csr else "default edge-index propagation"
    return Contender(f"PyG LightGCN ({how})", steps, scale=n_batches(data) / batches, note="unchecked uniform negatives")


def recbole_lightgcn(data: TrainData, batches: int) -> Contender | None:
    try:
        from benchmarks import recbole_peer
    except ImportError:
        recbole_peer = None
    if recbole_peer is None or not recbole_peer.available():
        print("skipped: RecBole LightGCN (recbole does not import; `make bench` installs it)", file=sys.stderr)
        return None
    step = recbole_peer.recbole_lightgcn_epoch(data.interactions, DIM, LAYERS, BATCH, batches)
    return Contender("RecBole LightGCN", lambda: step(batches), scale=n_batches(data) / batches, note="its own loader and sampler")


def n_batches(data: TrainData) -> int:
    return math.ceil(data.interactions.nnz / BATCH)


# ---- 2. MF-BPR, 3. WMF, 4. full ranking -------------------------------------------------------


def mf_contenders(data: TrainData, threads: int) -> list[Contender]:
    found = [mf_bpr.Ours(data, "adam"), mf_bpr.Ours(data, "sparse_adam"), mf_bpr.Ours(data, "sgd")]
    try:
        found += [mf_bpr.OursImplicit(data, 1), mf_bpr.Implicit(data, threads)]
    except ImportError:
        pass
    return [Contender(c.name, c) for c in found]


def wmf_contenders(data: TrainData, threads: int) -> list[Contender]:
    found = wmf_als.contenders(data, sweeps=2, threads=threads)  # per sweep: the set-up shared by two
    return [Contender(name, fit, scale=0.5) for name, fit in found]


def ranking_contenders(data: TrainData, threads: int) -> list[Contender]:
    train = data.interactions.tocsr().astype(np.float32)
    generator = torch.Generator().manual_seed(3)
    user_factors = torch.randn(data.n_users, DIM, generator=generator)
    item_factors = torch.randn(data.n_items, DIM, generator=generator)
    users = np.repeat(np.arange(data.n_users), 2)
    items = np.random.default_rng(3).integers(0, data.n_items, users.size)
    labels = np.ones(users.size)

    def ours() -> None:
        full_ranking_metrics(lambda ids: user_factors[ids] @ item_factors.T, train, users, items, labels, 20)

    def plain_topk() -> None:
        indptr, indices = torch.from_numpy(train.indptr.astype(np.int64)), torch.from_numpy(train.indices.astype(np.int64))
        for start in range(0, data.n_users, 2048):
            stop = min(start + 2048, data.n_users)
            scores = user_factors[start:stop] @ item_factors.T
            rows = torch.repeat_interleave(torch.arange(stop - start), indptr[start + 1 : stop + 1] - indptr[start:stop])
            scores[rows, indices[indptr[start] : indptr[stop]]] = -torch.inf
            scores.topk(20, dim=1)

    found = [Contender("project full_ranking_metrics (+ Recall, NDCG)", ours), Contender("chunked torch.topk", plain_topk)]
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return found

    model = AlternatingLeastSquares(factors=DIM, num_threads=threads)  # its recommend, on these factors
    model.user_factors, model.item_factors = user_factors.numpy(), item_factors.numpy()
    every_user = np.arange(data.n_users)
    found.append(Contender("implicit recommend", lambda: model.recommend(every_user, train, N=20, filter_already_liked_items=True)))
    return found


# ---- the table ---------------------------------------------------------------------------


def busy() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def lightgcn_contenders(data: TrainData, batches: int) -> list[Contender]:
    found = [project_lightgcn(data, batches), official_lightgcn(data, batches)]
    peers = (pyg_lightgcn(data, batches, csr=False), pyg_lightgcn(data, batches, csr=True), recbole_lightgcn(data, batches))
    return found + [c for c in peers if c is not None]


def run_table(data: TrainData, args: argparse.Namespace, memory: PeakMemory) -> list[tuple[str, list[Contender]]]:
    batches = 2 if args.quick else args.batches
    works = [
        (f"1. LightGCN BPR epoch, {LAYERS} layers (s)", lambda: lightgcn_contenders(data, batches)),
        ("2. MF-BPR epoch (s)", lambda: mf_contenders(data, args.threads)),
        ("3. WMF sweep (s)", lambda: wmf_contenders(data, args.threads)),
        ("4. full ranking, top 20 of all items for every user (s)", lambda: ranking_contenders(data, args.threads)),
    ]
    done = []
    for index, (title, build) in enumerate(works, 1):
        if args.only and index not in args.only:
            continue
        print(f"running {title} ...", file=sys.stderr, flush=True)
        contenders = build()
        contest(contenders, 1 if args.quick else args.repeats, memory)
        done.append((title, contenders))
    return done


def format_tables(quiet: list[tuple[str, list[Contender]]], loaded: list[tuple[str, list[Contender]]] | None) -> str:
    header = "| work | contender | s | ratio to the project | peak MB |"
    if loaded:
        header += " s under load | ratio under load | slowdown under load |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for index, (title, contenders) in enumerate(quiet):
        ours = contenders[0].median_s
        other = loaded[index][1] if loaded else None
        for position, contender in enumerate(contenders):
            cells = [title if position == 0 else "", f"{contender.name}" + (f" ({contender.note})" if contender.note else ""),
                     f"{contender.median_s:.3f}", f"{contender.median_s / ours:.2f}x", f"{statistics.median(contender.peak_mb):,.0f}"]
            if other:
                busy_s = other[position].median_s
                cells += [f"{busy_s:.3f}", f"{busy_s / other[0].median_s:.2f}x", f"{busy_s / contender.median_s:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="synthetic", help="synthetic (Gowalla-sized), small, or a dataset name, e.g. gowalla")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=10, help="LightGCN batches per timed slice")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--load", action="store_true", help="run the table again with one busy process per core")
    parser.add_argument("--only", type=int, nargs="*", help="only these pieces of work (1-4)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device("cpu")
    memory = PeakMemory(device)
    label, data = load_graph(args.graph)
    print(f"Graph: {label}: {data.n_users:,} users, {data.n_items:,} items, {data.interactions.nnz:,} train positives; d {DIM}, batch {BATCH}")
    print(f"Machine: {machine(device)}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}")
    quiet = run_table(data, args, memory)
    loaded = None
    if args.load:
        workers = [multiprocessing.Process(target=busy, daemon=True) for _ in range(len(os.sched_getaffinity(0)))]
        for worker in workers:
            worker.start()
        try:
            loaded = run_table(data, args, memory)
        finally:
            for worker in workers:
                worker.terminate()
        print(f"Under load: {len(workers)} busy processes (one per core) started by the benchmark.")
    print(f"Repeats: {1 if args.quick else args.repeats}, round-robin; medians; ratios to the first (project) row of each work.\n")
    print(format_tables(quiet, loaded))
    return 0


if __name__ == "__main__":
    sys.exit(main())
