"""Time and memory of the simulator on its largest preset (targets: < 60 s, < 8 GB).

    python benchmarks/bench_simulator.py                      # gowalla, 3 repeats
    python benchmarks/bench_simulator.py --preset yahoo_like --repeats 5

Each repeat runs ``generate_synthetic`` in a fresh process (seeds 0, 1, ...), so every
repeat starts from the same state and its peak memory is its own: the peak resident set
size (the kernel's high-water mark, VmHWM, which counts every allocator) and that peak
minus the resident size just before generating (what the generation itself added).
Prints the machine, then one line per repeat and the median.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TIME_TARGET_S = 60.0
MEMORY_TARGET_GB = 8.0


def _status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _one_repeat(preset: str, seed: int, results: multiprocessing.Queue) -> None:
    import numpy  # noqa: F401  (imported before the baseline is taken)

    from debias_pipeline.data.simulation import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(preset=preset)
    before_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    data = generate_synthetic(config, seed)
    seconds = time.perf_counter() - started
    counts = data.ratings["source"].value_counts()
    results.put(
        {
            "seed": seed,
            "seconds": seconds,
            "peak_gb": _status_kb("VmHWM") / 2**20,
            "added_gb": (_status_kb("VmHWM") - before_kb) / 2**20,
            "biased": int(counts.get("biased", 0)),
            "unbiased": int(counts.get("unbiased", 0)),
            "shape": (config.n_users, config.n_items),
        }
    )


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f"{total_kb / 2**20:.1f} GB"
    import numpy

    return (
        f"{platform.node()}: {model}, {os.cpu_count()} logical cores, {memory} RAM; "
        f"Python {platform.python_version()}, numpy {numpy.__version__}; load average {os.getloadavg()[0]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gowalla")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(_machine())
    context = multiprocessing.get_context("spawn")
    rows = []
    for seed in range(args.repeats):
        results = context.Queue()
        process = context.Process(target=_one_repeat, args=(args.preset, seed, results))
        process.start()
        row = results.get()
        process.join()
        rows.append(row)
    users, items = rows[0]["shape"]
    print(f"\npreset {args.preset}: {users:,} users x {items:,} items")
    print(f"{'seed':>6} {'seconds':>9} {'peak RSS GB':>12} {'added GB':>9} {'biased':>10} {'unbiased':>9}")
    for row in rows:
        print(
            f"{row['seed']:>6} {row['seconds']:>9.2f} {row['peak_gb']:>12.2f} {row['added_gb']:>9.2f} "
            f"{row['biased']:>10,} {row['unbiased']:>9,}"
        )
    median_s = statistics.median(row["seconds"] for row in rows)
    peak_gb = max(row["peak_gb"] for row in rows)
    print(
        f"{'median':>6} {median_s:>9.2f} {peak_gb:>12.2f}  (max over repeats)   "
        f"targets: < {TIME_TARGET_S:.0f} s, < {MEMORY_TARGET_GB:.0f} GB -> "
        f"{'met' if median_s < TIME_TARGET_S and peak_gb < MEMORY_TARGET_GB else 'MISSED'}"
    )
    return 0 if median_s < TIME_TARGET_S and peak_gb < MEMORY_TARGET_GB else 1


if __name__ == "__main__":
    sys.exit(main())
