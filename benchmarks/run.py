"""Benchmarks of the fast paths against the reference paths (``benchmarks/reference.py``).

    python benchmarks/run.py                 # every benchmark, 5 repeats
    python benchmarks/run.py --quick         # 1 repeat, smaller slices: a smoke test
    python benchmarks/run.py --only 2 --full-epoch --repeats 1

Prints one table: for each benchmark the median time of our path and of the reference
path over the repeats (the two interleaved, in the same process, so that a noisy
machine slows both alike), their ratio, and the peak memory of each. On CUDA the peak
memory is ``torch.cuda.max_memory_allocated`` above what was allocated before; on the
CPU it is the peak resident set size above the resident size before (the kernel's
high-water mark, reset through /proc/self/clear_refs, free heap returned with
malloc_trim first), which counts every allocator, torch's included.

Benchmark 2 times a slice of the epoch (``--epoch-batches`` batches, all batches cost
the same) and scales it to the epoch's batch count, plus, for the reference, the
Python sampling of the whole epoch's triples, timed in full; ``--full-epoch`` times
whole epochs instead.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.graphs import GOWALLA, SCALE, YAHOO_LIKE, power_law_interactions  # noqa: E402
from benchmarks.reference import (  # noqa: E402
    coo_adjacency,
    reference_bpr_steps,
    reference_dual_loss,
    reference_full_ranking,
    reference_propagate,
    reference_sample_triples,
    reference_thesis_metrics,
)
from debias_pipeline.data.processing import build_normalized_adjacency  # noqa: E402
from debias_pipeline.evaluation.metrics import full_ranking_metrics, ranking_metrics  # noqa: E402
from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.minibatch import MiniBatchEpochs  # noqa: E402
from debias_pipeline.models.registry import build_model  # noqa: E402
from debias_pipeline.models.towers import propagate  # noqa: E402
from debias_pipeline.training.device import resolve_device  # noqa: E402

MB = 1e6
EMBEDDING_DIM = 64  # the LightGCN papers' size, for benchmarks 1 and 2
BATCH_SIZE = 2048
LAYERS = 3


# ---- measuring -------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of a block above the memory in use when it starts (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._libc = ctypes.CDLL(None) if platform.system() == "Linux" else None
        self.method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else self._cpu_method()

    @staticmethod
    def _cpu_method() -> str:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return "peak RSS (VmHWM reset via /proc/self/clear_refs)"
        except OSError:
            return "peak RSS growth (ru_maxrss; under-counts after a larger earlier peak)"

    @staticmethod
    def _status(key: str) -> int:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        return int(match.group(1)) * 1024

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        if self._libc is not None and hasattr(self._libc, "malloc_trim"):
            self._libc.malloc_trim(0)
        if self.method.startswith("peak RSS (VmHWM"):
            Path("/proc/self/clear_refs").write_text("5")
            self._base = self._status("VmRSS")
        else:
            import resource

            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._base
        if self.method.startswith("peak RSS (VmHWM"):
            return max(0, self._status("VmHWM") - self._base)
        import resource

        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._base)


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def peak_mb(self) -> float:
        return statistics.median(self.peak_bytes) / MB


def timed(fn: Callable[[], object], memory: PeakMemory, samples: Samples) -> None:
    memory.start()
    start = time.perf_counter()
    fn()
    if memory.device.type == "cuda":
        torch.cuda.synchronize(memory.device)
    samples.seconds.append(time.perf_counter() - start)
    samples.peak_bytes.append(memory.stop())


def interleaved(
    ours: Callable[[], object], reference: Callable[[], object], repeats: int, memory: PeakMemory, warmup: bool = True
) -> tuple[Samples, Samples]:
    """Medians over ``repeats`` runs of each, alternating which goes first."""
    if warmup:
        ours()
        reference()
    fast, slow = Samples(), Samples()
    for repeat in range(repeats):
        pair = [(ours, fast), (reference, slow)]
        for fn, samples in pair if repeat % 2 == 0 else pair[::-1]:
            timed(fn, memory, samples)
    return fast, slow


@dataclass
class Row:
    benchmark: str
    ours_ms: float
    reference_ms: float
    ours_mb: float
    reference_mb: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.reference_ms / self.ours_ms


# ---- the machine -------------------------------------------------------------------------------


def machine(device: torch.device) -> str:
    cpu = "unknown CPU"
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else platform.processor() or cpu
    except OSError:
        pass
    parts = [f"CPU: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"]
    if device.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    parts.append(f"device: {device}")
    return "; ".join(parts)


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large tensor copy (read + write), median of 7."""
    source = torch.empty(64 * 2**20, device=device)  # 256 MiB
    target = torch.empty_like(source)
    seconds = []
    for _ in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 2 * source.numel() * 4 / statistics.median(seconds[1:])


# ---- the benchmarks ------------------------------------------------------------------------------


@dataclass
class Context:
    device: torch.device
    repeats: int
    quick: bool
    epoch_batches: int
    full_epoch: bool
    memory: PeakMemory
    notes: list[str] = field(default_factory=list)
    _gowalla: TrainData | None = None

    def gowalla(self) -> TrainData:
        if self._gowalla is None:
            train = power_law_interactions(*GOWALLA, seed=0)
            self._gowalla = TrainData(train, build_normalized_adjacency(train))
        return self._gowalla


def layer_bytes(n_nodes: int, nnz: int, dim: int) -> int:
    """Memory-traffic floor of one SpMM Â E: every value and column index read once
    (float32 + int32), E read once and ÂE written once (float32)."""
    return nnz * (4 + 4) + 2 * n_nodes * dim * 4


def bench_propagation(ctx: Context) -> Row:
    data = ctx.gowalla()
    n_nodes, nnz = data.adjacency.shape[0], data.adjacency.nnz
    csr = lightgcn(ctx).build_module(data, torch.Generator().manual_seed(0)).adjacency  # as the model builds it
    coo = coo_adjacency(data.adjacency, ctx.device)
    generator = torch.Generator(device=ctx.device).manual_seed(0)
    start = torch.randn(n_nodes, EMBEDDING_DIM, generator=generator, device=ctx.device).requires_grad_()
    grad = torch.randn(n_nodes, EMBEDDING_DIM, generator=generator, device=ctx.device)

    def ours() -> None:
        propagate(csr, start, 1).backward(grad)
        start.grad = None

    def reference() -> None:
        reference_propagate(coo, start, 1).backward(grad)
        start.grad = None

    fast, slow = interleaved(ours, reference, ctx.repeats, ctx.memory)
    floor_bytes = 2 * layer_bytes(n_nodes, nnz, EMBEDDING_DIM)
    bandwidth = copy_bandwidth(ctx.device)
    floor_ms = floor_bytes / bandwidth * 1e3
    ctx.notes.append(
        f"[1] floor: {floor_bytes / MB:.1f} MB per layer forward + backward ({floor_bytes / 2 / MB:.1f} MB each way) "
        f"at {bandwidth / 1e9:.1f} GB/s measured copy bandwidth = {floor_ms:.2f} ms; ours is "
        f"{fast.ms / floor_ms:.1f}x the floor, the reference {slow.ms / floor_ms:.1f}x."
    )
    return Row(
        f"1. LightGCN layer fwd+bwd ({n_nodes:,} nodes, {nnz:,} nnz, d={EMBEDDING_DIM})",
        fast.ms,
        slow.ms,
        fast.peak_mb,
        slow.peak_mb,
    )


def lightgcn(ctx: Context) -> Recommender:
    """LightGCN in the papers' mini-batch setting, unfitted."""
    params = {
        "name": "lightgcn",
        "embedding_dim": EMBEDDING_DIM,
        "num_layers": LAYERS,
        "loss": "bpr",
        "batch_size": BATCH_SIZE,
        "lr": 0.001,
        "weight_decay": 1e-4,
    }
    return build_model(params, "benchmark", seed=0, device=ctx.device)


def bench_bpr_epoch(ctx: Context) -> Row:
    data = ctx.gowalla()
    n_positives = data.interactions.nnz
    n_batches = math.ceil(n_positives / BATCH_SIZE)
    model = lightgcn(ctx)
    model.module = model.build_module(data, torch.Generator().manual_seed(0)).to(ctx.device)
    epochs = MiniBatchEpochs(model, data, torch.optim.Adam(model.module.parameters(), lr=0.001, fused=True))

    user_table = torch.nn.Parameter(model.module.user_embedding.detach().clone())
    item_table = torch.nn.Parameter(model.module.item_embedding.detach().clone())
    reference_optimizer = torch.optim.Adam([user_table, item_table], lr=0.001)
    coo = coo_adjacency(data.adjacency, ctx.device)
    rng = np.random.default_rng(0)
    triples = reference_sample_triples(data.interactions, rng)

    def reference_steps(max_batches: int | None) -> None:
        reference_bpr_steps(
            user_table, item_table, reference_optimizer, coo, LAYERS, triples, BATCH_SIZE, 1e-4, max_batches
        )

    if ctx.full_epoch:

        def reference_epoch() -> None:
            fresh = reference_sample_triples(data.interactions, rng)
            rng.shuffle(fresh)
            reference_bpr_steps(user_table, item_table, reference_optimizer, coo, LAYERS, fresh, BATCH_SIZE, 1e-4)

        fast, slow = interleaved(epochs, reference_epoch, ctx.repeats, ctx.memory, warmup=False)
        ours_ms, reference_ms, note = fast.ms, slow.ms, "whole epochs"
    else:
        blocks = ctx.epoch_batches
        fast, slow = interleaved(lambda: epochs(blocks), lambda: reference_steps(blocks), ctx.repeats, ctx.memory)
        sampling = Samples()
        for _ in range(max(1, min(ctx.repeats, 3))):
            timed(lambda: reference_sample_triples(data.interactions, rng), ctx.memory, sampling)
        ours_ms = fast.ms * n_batches / blocks
        reference_ms = slow.ms * n_batches / blocks + sampling.ms
        note = f"{n_batches} x median of {blocks}-batch slices" + f"; reference + {sampling.ms / 1e3:.1f} s sampling"
        ctx.notes.append(
            f"[2] per batch: ours {fast.ms / blocks:.1f} ms, reference {slow.ms / blocks:.1f} ms; the reference's "
            f"Python sampling of one epoch's {n_positives:,} triples takes {sampling.ms / 1e3:.1f} s."
        )
    return Row(
        f"2. BPR epoch, LightGCN {LAYERS} layers, batch {BATCH_SIZE} ({n_positives:,} positives)",
        ours_ms,
        reference_ms,
        fast.peak_mb,
        slow.peak_mb,
        note,
    )


def bench_dual_epoch(ctx: Context, num_layers: int) -> Row:
    n_users, n_items = YAHOO_LIKE
    train = power_law_interactions(n_users, n_items, 125_000, seed=1)
    data = TrainData(train, build_normalized_adjacency(train))
    tower = {"embedding_dim": 200, "num_layers": num_layers}
    params = {"name": "dual", "preference": tower, "exposure": tower, "lr": 0.04, "weight_decay": 1e-6}
    ours_model = build_model(params, "benchmark", seed=0, device=ctx.device)
    reference_model = build_model(params, "benchmark", seed=0, device=ctx.device)
    targets = torch.as_tensor(train.toarray(), device=ctx.device)  # (n_users, n_items), as in full-batch fit
    steps = []
    for model, loss in (
        (ours_model, lambda m: m.loss(targets)),
        (reference_model, lambda m: reference_dual_loss(m.module.preference, m.module.exposure, targets, 1e-6)),
    ):
        model.module = model.build_module(data, torch.Generator().manual_seed(0)).to(ctx.device)
        optimizer = torch.optim.Adam(model.module.parameters(), lr=0.04)

        def step(model=model, loss=loss, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss(model).backward()
            optimizer.step()

        steps.append(step)
    fast, slow = interleaved(steps[0], steps[1], ctx.repeats, ctx.memory)
    kind = "MF x MF" if num_layers == 0 else f"LightGCN x LightGCN ({num_layers} layers)"
    return Row(f"3. dual full-batch epoch, {kind}, d=200, {n_users:,} x {n_items:,}", fast.ms, slow.ms,
               fast.peak_mb, slow.peak_mb)


def bench_thesis_metrics(ctx: Context) -> Row:
    rng = np.random.default_rng(2)
    n_users, per_user = 5_400, 10  # Yahoo! R3's unbiased test set: 54,000 rows
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(1_000, per_user, replace=False) for _ in range(n_users)])
    labels = (rng.random(users.size) < 0.2).astype(float)
    scores = rng.normal(size=users.size)
    fast, slow = interleaved(
        lambda: ranking_metrics(users, items, labels, scores, 5),
        lambda: reference_thesis_metrics(users, items, labels, scores, 5),
        ctx.repeats,
        ctx.memory,
    )
    return Row(f"4a. thesis protocol, {users.size:,} rows, K=5", fast.ms, slow.ms, fast.peak_mb, slow.peak_mb)


def bench_full_ranking(ctx: Context) -> Row:
    n_users, n_items, n_interactions = SCALE
    train = power_law_interactions(n_users, n_items, n_interactions, seed=3)
    rng = np.random.default_rng(3)
    evaluated = 3_000 if ctx.quick else n_users
    users = np.repeat(np.arange(evaluated), 10)
    items = rng.integers(0, n_items, users.size)
    labels = (rng.random(users.size) < 0.3).astype(float)
    generator = torch.Generator(device=ctx.device).manual_seed(3)
    user_emb = torch.randn(n_users, EMBEDDING_DIM, generator=generator, device=ctx.device)
    item_emb = torch.randn(n_items, EMBEDDING_DIM, generator=generator, device=ctx.device)
    fast, slow = interleaved(
        lambda: full_ranking_metrics(
            lambda ids: user_emb[ids] @ item_emb.T, train, users, items, labels, 20, device=ctx.device
        ),
        lambda: reference_full_ranking(user_emb, item_emb, train, users, items, labels, 20),
        ctx.repeats,
        ctx.memory,
        warmup=False,
    )
    return Row(
        f"4b. full ranking, {evaluated:,} users x {n_items:,} items, top-20", fast.ms, slow.ms,
        fast.peak_mb, slow.peak_mb,
    )


def gpu_projection(ctx: Context, bandwidth: float) -> list[str]:
    """Projected CUDA time of one BPR epoch (benchmark 2) from the bytes it moves."""
    data = ctx.gowalla()
    n_nodes, nnz = data.adjacency.shape[0], data.adjacency.nnz
    n_batches = math.ceil(data.interactions.nnz / BATCH_SIZE)
    table = n_nodes * EMBEDDING_DIM * 4
    # On a GPU every layer is propagated in full (2K products per batch). E (18 MB) fits in
    # an H100's 50 MB L2, so a product reads Â once (float32 values, int32 indices), E
    # once, and writes once: the 53 MB floor.
    product = layer_bytes(n_nodes, nnz, EMBEDDING_DIM) + (n_nodes + 1) * 4
    # Besides: the user and item tables concatenated (read + write), the L2 term's
    # gradient tables zero-filled, the two gradients added (2 reads, 1 write), fused Adam
    # (reads parameter, gradient, two moments; writes three).
    per_batch = 2 * LAYERS * product + (2 + 1 + 3 + 7) * table
    epoch_bytes = n_batches * per_batch
    launches = n_batches * 60  # kernel launches per batch, at about 5 µs each
    seconds = epoch_bytes / bandwidth + launches * 5e-6
    return [
        f"GPU projection (a projection from bytes moved, not a measurement): one epoch of benchmark 2 moves about "
        f"{epoch_bytes / 1e9:.0f} GB ({per_batch / MB:.0f} MB per batch x {n_batches} batches); at "
        f"{bandwidth / 1e12:.1f} TB/s of achieved HBM bandwidth plus {launches:,} kernel launches at 5 us it would take "
        f"about {seconds:.2f} s on one GPU.",
    ]


BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "1": lambda ctx: [bench_propagation(ctx)],
    "2": lambda ctx: [bench_bpr_epoch(ctx)],
    "3": lambda ctx: [bench_dual_epoch(ctx, 0), bench_dual_epoch(ctx, 2)],
    "4": lambda ctx: [bench_thesis_metrics(ctx), bench_full_ranking(ctx)],
}


def format_table(rows: list[Row]) -> str:
    header = ["benchmark", "ours (ms)", "reference (ms)", "ratio", "ours peak (MB)", "reference peak (MB)", "how"]
    body = [
        [
            row.benchmark,
            f"{row.ours_ms:,.1f}",
            f"{row.reference_ms:,.1f}",
            f"{row.ratio:.1f}x",
            f"{row.ours_mb:,.0f}",
            f"{row.reference_mb:,.0f}",
            row.note or "median",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    lines += ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |" for line in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, small slices: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each path (default 5, quick 1)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--epoch-batches", type=int, default=None, help="batches per timed slice of benchmark 2")
    parser.add_argument("--full-epoch", action="store_true", help="benchmark 2: time whole epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--gpu-bandwidth", type=float, default=2.0e12, help="achieved GPU memory bandwidth for the projection (B/s)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    repeats = args.repeats or (1 if args.quick else 5)
    epoch_batches = args.epoch_batches or (3 if args.quick else 20)
    ctx = Context(device, repeats, args.quick, epoch_batches, args.full_epoch, PeakMemory(device))
    rows: list[Row] = []
    for key in args.only or sorted(BENCHMARKS):
        print(f"running benchmark {key} ...", file=sys.stderr, flush=True)
        rows += BENCHMARKS[key](ctx)
    print(f"Machine: {machine(device)}")
    print(f"Repeats: {repeats} per path, interleaved; times are medians. Peak memory: {ctx.memory.method}.")
    print()
    print(format_table(rows))
    print()
    for note in ctx.notes:
        print(note)
    if device.type != "cuda" and (args.only is None or "2" in args.only):
        for line in gpu_projection(ctx, args.gpu_bandwidth):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
