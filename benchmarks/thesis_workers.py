"""``reproduce_thesis`` with 1 and with 2 Dask workers: wall time, peak memory, their
ratio, and the time projected on N machines from the per-fit times.

    python benchmarks/thesis_workers.py --dataset coat --seeds 0-4 --repeats 1

Each run is a separate process (``kedro run --pipelines=reproduce_thesis`` with
``reproduce_thesis.workers=<w>``), so its peak memory (``ru_maxrss`` of the process and
of its children, the Dask workers, together) is its own; runs with 1 and 2 workers
alternate, and the medians over ``--repeats`` are reported. The projection: the fits are
independent, so N machines of ``w`` workers each need about (sum of the fits' seconds) /
(N · w) plus the run's fixed part (data processing, selection, plots), both read off the
1-worker run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
project = Path(sys.argv[1]); runtime = json.loads(sys.argv[2])
bootstrap_project(project)
started = time.perf_counter()
with KedroSession.create(project_path=project, runtime_params=runtime) as session:
    session.run(pipeline_names=["reproduce_thesis"])
    version = session.session_id
seconds = time.perf_counter() - started
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "version": version}))
"""


def run(dataset: str, seeds: str, workers: int) -> dict:
    runtime = {"dataset": dataset, "reproduce_thesis": {"seeds": seeds, "workers": workers}}
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(PROJECT), json.dumps(runtime)], capture_output=True, text=True, env=env, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    runs = PROJECT / "data/07_model_output/reproduce_thesis/runs.csv" / result["version"] / "runs.csv"
    import pandas as pd

    table = pd.read_csv(runs)
    # A fit shared by several rows appears in each with the same seconds: counted once.
    result["fit_seconds"] = float(table.drop_duplicates(["seed", "seconds"])["seconds"].sum())
    result["fits"] = int(len(table))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="coat")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    results: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):  # alternated
            started = time.perf_counter()
            results[workers].append(run(args.dataset, args.seeds, workers))
            print(f"workers {workers}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    median = {w: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_mb", "fit_seconds")} for w, rs in results.items()}
    one, two = median[1], median[2]
    print(f"reproduce_thesis on {args.dataset}, seeds {args.seeds}, median of {args.repeats}:")
    print("| workers | wall s | peak MB (process + workers) | sum of fit s |")
    print("|---|---|---|---|")
    for w in (1, 2):
        print(f"| {w} | {median[w]['seconds']:.0f} | {median[w]['peak_mb']:.0f} | {median[w]['fit_seconds']:.0f} |")
    print(f"speed-up with 2 workers: {one['seconds'] / two['seconds']:.2f}x; memory ratio {two['peak_mb'] / one['peak_mb']:.2f}")
    fixed = max(one["seconds"] - one["fit_seconds"], 0.0)
    print("projection (2 workers per machine): " + ", ".join(
        f"{n} machine{'s' if n > 1 else ''} ~{fixed + one['fit_seconds'] / (2 * n):.0f} s" for n in args.machines
    ))


if __name__ == "__main__":
    main()
